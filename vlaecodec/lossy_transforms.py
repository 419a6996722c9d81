"""The lossy model's transforms for coding, in numpy float32: the analysis ``g_a`` and
``h_a`` (encoder) and the synthesis ``g_s`` (decoder), from the model file's weights.

Coding needs no autograd and no torch: a process that codes a lossy file starts in a
fraction of the time that importing torch takes (about a second), and the picture comes
from BLAS products, as torch's would.  The arithmetic is the float model's (``LossyModel``,
which trains them), layer for layer, to float32 rounding; large images run on tiles
(:mod:`vlaecodec.tiles`).

>>> import torch
>>> from vlaecodec.lossy_model import LossyModel
>>> torch.manual_seed(0) and None
>>> m = LossyModel(LossyConfig(n=8, m=8)).eval()
>>> t = LossyTransforms.from_module(m)
>>> x = np.random.default_rng(0).uniform(0, 255, (3, 64, 128)).astype(np.float32)
>>> y, z = t.analysis(x, 2.0)
>>> with torch.no_grad():
...     y_t, z_t = m.analysis(torch.from_numpy(x)[None], 2.0)
...     x_t = m.synthesis(y_t.round(), 2.0)
>>> bool(np.abs(y - y_t[0].numpy()).max() < 1e-4), bool(np.abs(z - z_t[0].numpy()).max() < 1e-4)
(True, True)
>>> bool(np.abs(t.synthesis(np.round(y), 2.0) - x_t[0].numpy()).max() < 1e-2)
True
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from .lossy_config import LossyConfig, beta_level
from .tiles import on_tiles

TILE_HALO = 3        # latent units around a tile: more than g_a's and g_s's reach


def one_thread():
    """The transforms' float products run on one BLAS thread whatever the coder's thread
    count: OpenBLAS (0.3.31, numpy 2.4) splits a float32 product between threads so that the
    sums come out different in their last bits, which moves a decoded pixel by a level.  So
    a file decodes to the same pixels with any --threads on one machine (the exact integer
    parts may use more threads)."""
    return threadpool_limits(1, user_api="blas")


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """Convolution of x [C, H, W] with w [O, C, k, k] (zero padding k // 2), as torch's
    Conv2d: one product per tap (little memory), or one for all taps where C k^2 is small."""
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    p = k // 2
    ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))

    def tap(dy, dx):
        return xp[:, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride].reshape(c, -1)
    wt = w.transpose(2, 0, 3, 1).reshape(k, o, k * c)     # [dy][o, (dx, c)]
    if c * k * k <= 128:     # all taps in one product
        cols = np.concatenate([tap(dy, dx) for dy in range(k) for dx in range(k)])
        out = wt.transpose(1, 0, 2).reshape(o, -1) @ cols
    else:                    # a row of taps at a time: products k times deeper than one tap's
        out = np.zeros((o, ho * wo), np.float32)
        for dy in range(k):
            out += wt[dy] @ np.concatenate([tap(dy, dx) for dx in range(k)])
    return (out + b[:, None]).reshape(o, ho, wo)


def deconv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Transposed convolution of x [C, H, W] with w [C, O, k, k], stride 2, padding k // 2,
    output padding 1 (torch's ConvTranspose2d): out [O, 2H, 2W].  Each tap's product is
    added at every other row and column of a padded output."""
    c, h, wd = x.shape
    _, o, k, _ = w.shape
    p = k // 2
    full = np.zeros((o, 2 * h + 2 * p, 2 * wd + 2 * p), np.float32)
    flat = x.reshape(c, -1)
    wt = w.transpose(2, 3, 1, 0).reshape(k, k * o, c)     # [dy][(dx, o), c]
    for dy in range(k):      # a row of taps in one product
        t = (wt[dy] @ flat).reshape(k, o, h, wd)
        for dx in range(k):
            full[:, dy:dy + 2 * h:2, dx:dx + 2 * wd:2] += t[dx]
    return full[:, p:p + 2 * h, p:p + 2 * wd] + b[:, None, None]


def gdn(x: np.ndarray, beta: np.ndarray, gamma: np.ndarray, inverse: bool) -> np.ndarray:
    """Generalized divisive normalization (lossy_model.GDN): x / sqrt(beta + gamma x^2)."""
    c = x.shape[0]
    norm = np.sqrt(np.abs(gamma) @ (x * x).reshape(c, -1) + (np.abs(beta) + np.float32(1e-6))[:, None])
    norm = norm.reshape(x.shape)
    return x * norm if inverse else x / norm


def leaky_relu(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, np.float32(0.01) * x)


class LossyTransforms:
    """g_a, h_a and g_s of a lossy model, from its float weights (numpy float32 arrays, named
    as in ``LossyModel.state_dict()``)."""

    def __init__(self, cfg: LossyConfig, weights: dict[str, np.ndarray]):
        self.cfg = cfg
        self.w = {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()
                  if k.split(".")[0] in ("g_a", "g_s", "h_a") or k.startswith("log_gain")}

    @classmethod
    def from_module(cls, model) -> "LossyTransforms":
        """From a torch ``LossyModel`` (tests, export)."""
        return cls(model.cfg, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})

    def level(self, beta: float) -> float:
        return beta_level(self.cfg.betas, beta)

    def gains(self, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-channel gains on y, on y_hat and on z at a fractional level (lossy_model)."""
        k = len(self.cfg.betas)
        lo = min(max(int(np.floor(level)), 0), k - 1)
        hi = min(lo + 1, k - 1)
        t = np.float32(level - lo)
        return tuple(np.exp((1 - t) * self.w[name][lo] + t * self.w[name][hi])
                     for name in ("log_gain_y", "log_gain_y_inv", "log_gain_z"))

    def _g_a(self, x: np.ndarray) -> np.ndarray:
        w = self.w
        for i in (0, 2, 4):
            x = gdn(conv(x, w[f"g_a.{i}.weight"], w[f"g_a.{i}.bias"], 2), w[f"g_a.{i + 1}.beta"],
                    w[f"g_a.{i + 1}.gamma"], False)
        return conv(x, w["g_a.6.weight"], w["g_a.6.bias"], 2)

    def _g_s(self, y: np.ndarray) -> np.ndarray:
        w = self.w
        for i in (0, 2, 4):
            y = gdn(deconv(y, w[f"g_s.{i}.weight"], w[f"g_s.{i}.bias"]), w[f"g_s.{i + 1}.beta"],
                    w[f"g_s.{i + 1}.gamma"], True)
        return deconv(y, w["g_s.6.weight"], w["g_s.6.bias"])

    def _h_a(self, y: np.ndarray) -> np.ndarray:
        w = self.w
        a = leaky_relu(conv(y, w["h_a.0.weight"], w["h_a.0.bias"], 1))
        a = leaky_relu(conv(a, w["h_a.2.weight"], w["h_a.2.bias"], 2))
        return conv(a, w["h_a.4.weight"], w["h_a.4.bias"], 2)

    def analysis(self, x: np.ndarray, level: float, tile: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Pixels 0..255 [3, H, W] float32 (H, W multiples of 64) -> (y, z) before
        quantization; ``tile``: g_a on tiles of that many latent units (tiles.py)."""
        return self.latents(self.features(x, tile), level)

    def features(self, x: np.ndarray, tile: int = 0) -> np.ndarray:
        """g_a's output for pixels x, before the gains: the part of the analysis that no beta
        changes (a search over beta computes it once)."""
        x = x / np.float32(127.5) - np.float32(1.0)
        with one_thread():
            return on_tiles(self._g_a, x, 16, 1, tile, TILE_HALO) if tile else self._g_a(x)

    def latents(self, features: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """(y, z) from :meth:`features` at a level."""
        gy, _, gz = self.gains(level)
        y = features * gy[:, None, None]
        with one_thread():
            return y, self._h_a(y) * gz[:, None, None]

    def synthesis(self, y_hat: np.ndarray, level: float, tile: int = 0) -> np.ndarray:
        """y_hat [m, h, w] -> pixels 0..255 [3, 16h, 16w] float32, not rounded."""
        _, gy_inv, _ = self.gains(level)
        y = (y_hat * gy_inv[:, None, None]).astype(np.float32)
        with one_thread():
            x = on_tiles(self._g_s, y, 1, 16, tile, TILE_HALO) if tile else self._g_s(y)
        return (x + np.float32(1.0)) * np.float32(127.5)
