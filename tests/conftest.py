import numpy as np
import pytest
import torch

from vlaecodec.model import VLAE, VLAEConfig


def tiny_config(**kw) -> VLAEConfig:
    base = dict(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1, pixel_blocks=1)
    base.update(kw)
    return VLAEConfig(**base)


def tiny_model(seed: int = 0, **kw) -> VLAE:
    torch.manual_seed(seed)
    model = VLAE(tiny_config(**kw)).eval()
    with torch.no_grad():  # sharper distributions than at init, like a trained model
        for out in model.heads.out:
            out.weight.mul_(4)
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(0)
