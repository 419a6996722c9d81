import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlaecodec.model import VLAE, VLAEConfig

ROOT = Path(__file__).parent.parent


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


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny logistic-mixture model saved as a zoo-style file, for the command line."""
    from vlaecodec.zoo import save_model
    p = tmp_path_factory.mktemp("zoo") / "tiny.safetensors"
    save_model(tiny_model(likelihood="logistic"), p, {"beta": 1.0})
    return str(p)


def run_cli(*args, stdin=None, env=None):
    """Run ``vlaecodec ARGS`` in a fresh process from the repository root (``env``: variables
    added to this process's environment)."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, cwd=ROOT,
                          input=stdin, env={**os.environ, **env} if env else None)
