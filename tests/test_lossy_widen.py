"""Widening a trained lossy model's latent keeps what it learned and trains on from there."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vlaecodec.lossy_coder import LossyCoder, LossyTables
from vlaecodec.lossy_model import LossyConfig, LossyModel
from vlaecodec.lossy_train import LossyTrainSettings, train
from vlaecodec.lossy_widen import widened


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(3)
    model = LossyModel(LossyConfig(n=8, m=8)).eval()
    with torch.no_grad():
        model.log_gain_y.copy_(torch.linspace(-1.5, 1.5, 8)[:, None].expand(8, 8))
        model.log_gain_y_inv.copy_(-model.log_gain_y)
    return model


def _image(h=64, w=64):
    yy, xx = np.mgrid[0:h, 0:w]
    img = (np.sin(xx / 7.0) + np.cos(yy / 5.0))[..., None] * 60 + 128 + np.arange(3) * 10
    return np.clip(img, 0, 255).astype(np.uint8)


def test_the_widened_model_codes_the_old_channels_as_before(small):
    big = widened(small, 20).eval()
    assert big.cfg.m == 20 and big.cfg.hs_width == small.cfg.hs_width
    x = torch.from_numpy(_image()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        y, z = small.analysis(x, 3)
        y_big, z_big = big.analysis(x, 3)
        assert torch.equal(y_big[:, :8], y) and torch.equal(z_big, z)
        mean, scale = small.hyper_synthesis(torch.round(z))
        mean_big, scale_big = big.hyper_synthesis(torch.round(z))
        assert torch.equal(mean_big[:, :8], mean) and torch.equal(scale_big[:, :8], scale)
        assert mean_big[:, 8:].abs().max() < 1e-6           # new channels: predicted mean 0
        new, old = float(y_big[:, 8:].abs().mean()), float(y.abs().mean())
        assert old / 3 < new < old * 3                       # ... and values of the old ones' size


def test_a_widened_model_round_trips_through_the_integer_coder(small):
    big = widened(small, 16).eval()
    coder = LossyCoder(big, LossyTables.from_model(big), model_id="00" * 8)
    img = _image()
    out = coder.decode(coder.encode([img], 40.0))[0]
    assert out.shape == img.shape and out.dtype == np.uint8


def test_narrowing_is_refused(small):
    with pytest.raises(ValueError, match="narrow"):
        widened(small, 4)


def test_training_from_a_narrower_model_widens_it(small, tmp_path):
    init = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(init))
    out = tmp_path / "run"
    train(LossyTrainSettings(out=str(out), n=8, m=12, crop=64, batch_size=2, steps=2, init=str(init),
                             val_minutes=1e6))
    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["json"])
        assert f.get_tensor("model.g_a.6.weight").shape[0] == 12
    assert meta["step"] == 2 and meta["config"]["m"] == 12 and meta["config"]["hs_mid"] == small.cfg.hs_width


def test_new_betas_keep_the_trained_ones_and_extend_the_dial(small):
    betas = [3200.0, 1600.0] + small.cfg.betas + [5.0]
    big = widened(small, 8, betas=betas).eval()
    x = torch.from_numpy(_image()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        for beta in (800.0, 65.4, 10.0):     # a trained beta codes as before
            y, _ = small.analysis(x, small.level(beta))
            y_big, _ = big.analysis(x, big.level(beta))
            assert torch.allclose(y_big, y, atol=1e-5)
        gains = [float(big.gains(big.level(b))[0].log().mean()) for b in betas]
    assert gains == sorted(gains)            # a lower beta, a larger gain: the dial still runs
