"""Each decoder sees exactly what it claims: the gradient of one pixel's head output with
respect to the (normalized) image is nonzero only inside its causal window."""
import pytest
import torch
from conftest import tiny_model

from vlaecodec.model import window_offsets

H = W = 12
Y, X = 7, 5  # the probed pixel


def dependence(model) -> set[tuple[int, int]]:
    """Positions (dy, dx) whose input values change pixel (Y, X)'s per-pixel features."""
    x = torch.zeros(1, model.cfg.channels, H, W, requires_grad=True)
    z = torch.randn(1, model.cfg.z_channels, H // 4, W // 4)
    ctx = model.zdecoder(z)
    if model.cfg.decoder != "factorized":
        ctx = ctx + model.context(x)
    t = model.heads.trunk_forward(ctx)
    xi = torch.zeros(1, model.cfg.channels, H, W, dtype=torch.long)
    out = sum(model.heads.head(c, t, xi)[0, :, Y, X].sum() for c in range(model.cfg.channels))
    out.backward()
    if x.grad is None:  # the output does not depend on the image at all
        return set()
    g = x.grad[0].abs().sum(0)
    return {(int(i) - Y, int(j) - X) for i, j in zip(*torch.nonzero(g, as_tuple=True))}


@pytest.mark.parametrize("window", [[7, 4], [4, 2], [3, 1], [5, 3]])
def test_local_window_is_exact(window):
    model = tiny_model(decoder="local", window=window)
    assert dependence(model) == set(window_offsets(window))


def test_full_pixelcnn_sees_every_earlier_pixel_and_nothing_later():
    model = tiny_model(decoder="full", full_layers=6)
    deps = dependence(model)
    earlier = {(i - Y, j - X) for i in range(H) for j in range(W) if (i, j) < (Y, X)}
    assert deps == earlier


def test_factorized_decoder_sees_no_pixels():
    assert dependence(tiny_model(decoder="factorized")) == set()


def test_window_offsets_shape():
    offs = window_offsets([7, 4])
    assert len(offs) == 7 * 4 + 3
    assert all(dy < 0 or (dy == 0 and dx < 0) for dy, dx in offs)
