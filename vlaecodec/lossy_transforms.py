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

from contextlib import contextmanager

import numpy as np
from threadpoolctl import threadpool_limits

from .lossy_config import LossyConfig, beta_level
from .tiles import on_tiles
from .workers import pool_map, workers

TILE_HALO = 3        # latent units around a tile: more than g_a's and g_s's reach


def one_thread():
    """Each of the transforms' float products runs on one BLAS thread: OpenBLAS (0.3.31,
    numpy 2.4) splits a float32 product between threads so that the sums come out different
    in their last bits, which moves a decoded pixel by a level.  The coder's threads share
    the products instead (chunks of rows fixed by the shapes, :func:`_chunks`), so with
    numpy's OpenBLAS a file decodes to the same pixels with any --threads on one machine."""
    return threadpool_limits(1, user_api="blas")


CHUNK_BYTES = 1 << 22   # the gathered taps of one product: a few MB, so they stay in cache


def _chunks(rows: int, row_bytes: int) -> range:
    """First rows of the chunks that a layer's output is computed in.  They depend on the
    shapes alone, never on the thread count, so every product (and its float32 rounding) is
    the same however many threads share the chunks."""
    return range(0, rows, max(1, CHUNK_BYTES // max(row_bytes, 1)))


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pool=None, post=None) -> np.ndarray:
    """Convolution of x [C, H, W] with w [O, C, k, k] (zero padding k // 2), as torch's
    Conv2d: chunks of output rows, each one product of the weights [O, k k C] with the
    chunk's gathered taps (on ``pool``'s threads when there is one).  ``post``: a pixelwise
    function (GDN) applied to each chunk while it is in cache."""
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    p = k // 2
    ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    wm = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(o, k * k * c))   # [o, (dy, dx, c)]
    post = post or (lambda a: a)
    out = np.empty((o, ho, wo), np.float32)
    starts = _chunks(ho, k * k * c * wo * 4)

    def chunk(r0):
        r1 = min(ho, r0 + starts.step)
        cols = np.concatenate([
            xp[:, stride * r0 + dy:stride * (r1 - 1) + dy + 1:stride,
               dx:dx + stride * (wo - 1) + 1:stride].reshape(c, -1)
            for dy in range(k) for dx in range(k)])
        out[:, r0:r1] = post((wm @ cols).reshape(o, r1 - r0, wo) + b[:, None, None])
    pool_map(pool, chunk, starts)
    return out


def _phase_taps(k: int, p: int, parity: int) -> list[tuple[int, int]]:
    """(tap, input offset) of the taps that reach the output rows of a parity in a stride-2
    transposed convolution: output row 2r + parity = 2i + tap - p, so i = r + offset."""
    return [(d, (parity + p - d) // 2) for d in range(k) if (parity + p - d) % 2 == 0]


def deconv(x: np.ndarray, w: np.ndarray, b: np.ndarray, pool=None, post=None) -> np.ndarray:
    """Transposed convolution of x [C, H, W] with w [C, O, k, k], stride 2, padding k // 2,
    output padding 1 (torch's ConvTranspose2d): out [O, 2H, 2W], in chunks of rows shared by
    ``pool``'s threads.

    Each of the four phases of the output (even or odd row and column) is an ordinary
    convolution of x with a few of the taps: one product per chunk and phase, each output
    written once.  But where the output has fewer channels than a row of taps (the last
    layer's 3 colours, whose 3-row products would run far below BLAS's speed), one product
    of k O rows per row of taps is added at every other row and column of a padded output.
    ``post``: as :func:`conv`'s."""
    c, h, wd = x.shape
    _, o, k, _ = w.shape
    p = k // 2
    post = post or (lambda a: a)
    if o < k:
        full = np.zeros((o, 2 * h + 2 * p, 2 * wd + 2 * p), np.float32)
        wt = w.transpose(2, 3, 1, 0).reshape(k, k * o, c)     # [dy][(dx, o), c]
        starts = range(0, h, max(p, _chunks(h, k * k * o * wd * 4).step))

        def add(r0):   # input rows [r0, r1) add to rows 2 r0 .. 2 r1 + 2 p - 2 of full
            r1 = min(h, r0 + starts.step)
            flat = x[:, r0:r1].reshape(c, -1)
            for dy in range(k):
                t = (wt[dy] @ flat).reshape(k, o, r1 - r0, wd)
                for dx in range(k):
                    full[:, 2 * r0 + dy:2 * r1 + dy:2, dx:dx + 2 * wd:2] += t[dx]
        # a chunk's rows reach into the next chunk's only (chunks of p rows or more): the even
        # chunks at once, then the odd ones, so each output's terms are added in one order,
        # whatever the threads
        pool_map(pool, add, starts[0::2])
        pool_map(pool, add, starts[1::2])
        return post(full[:, p:p + 2 * h, p:p + 2 * wd] + b[:, None, None])
    pad = (p + 1) // 2       # the phases' input offsets lie within +-ceil(p / 2)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    planes = _plane_order(k, p)
    where = {plane: i for i, plane in enumerate(planes)}
    phases = []
    for a in (0, 1):
        for e in (0, 1):
            taps = sorted(((dy, oy, dx, ox) for dy, oy in _phase_taps(k, p, a) for dx, ox in _phase_taps(k, p, e)),
                          key=lambda t: where[t[1], t[3]])
            lo = where[taps[0][1], taps[0][3]]
            assert where[taps[-1][1], taps[-1][3]] == lo + len(taps) - 1, "a phase's planes must be adjacent"
            wp = np.ascontiguousarray(np.concatenate([w[:, :, dy, dx].T for dy, _, dx, _ in taps], axis=1))
            phases.append((a, e, lo * c, (lo + len(taps)) * c, wp))   # wp [o, (plane, c)]
    out = np.empty((o, 2 * h, 2 * wd), np.float32)
    starts = _chunks(h, len(planes) * c * wd * 4)

    def chunk(r0):
        r1 = min(h, r0 + starts.step)
        cols = np.concatenate([xp[:, pad + oy + r0:pad + oy + r1, pad + ox:pad + ox + wd].reshape(c, -1)
                               for oy, ox in planes])
        for a, e, lo, hi, wp in phases:
            out[:, 2 * r0 + a:2 * r1:2, e::2] = post((wp @ cols[lo:hi]).reshape(o, r1 - r0, wd) + b[:, None, None])
    pool_map(pool, chunk, starts)
    return out


def _plane_order(k: int, p: int) -> list[tuple[int, int]]:
    """The input offsets (row, column) that a stride-2 transposed convolution's four phases
    read, each once, ordered so that every phase's lie side by side: the planes are gathered
    once for all four phases (25 taps of a 5x5 kernel read 9 planes), and each phase's product
    reads a slice of them.  One parity's offsets S are the other's L less one offset x, so the
    order S x {x}, S x S, {x} x S, (x, x) does it (S x L is the first two blocks, L x S the
    middle two).

    >>> _plane_order(5, 2)
    [(0, -1), (1, -1), (0, 0), (0, 1), (1, 0), (1, 1), (-1, 0), (-1, 1), (-1, -1)]
    """
    even, odd = ([o for _, o in _phase_taps(k, p, parity)] for parity in (0, 1))
    small, large = sorted((even, odd), key=len)
    extra = [o for o in large if o not in small]
    assert len(extra) == 1 and set(small) < set(large)
    (x,), small = extra, sorted(small)
    return ([(s, x) for s in small] + [(s, t) for s in small for t in small] + [(x, s) for s in small] + [(x, x)])


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
    as in ``LossyModel.state_dict()``); ``threads``: how many threads share each layer's
    chunks (the results do not depend on it)."""

    def __init__(self, cfg: LossyConfig, weights: dict[str, np.ndarray], threads: int = 1):
        self.cfg = cfg
        self.threads = max(1, threads)
        self.w = {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()
                  if k.split(".")[0] in ("g_a", "g_s", "h_a") or k.startswith("log_gain")}

    @classmethod
    def from_module(cls, model, threads: int = 1) -> "LossyTransforms":
        """From a torch ``LossyModel`` (tests, export)."""
        return cls(model.cfg, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, threads)

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

    @contextmanager
    def _products(self):
        """The float products' setting: one BLAS thread each (:func:`one_thread`), and a pool
        of ``threads`` threads sharing the chunks (None for one)."""
        with one_thread(), workers(self.threads) as pool:
            yield pool

    def _gdn(self, name: str, inverse: bool):
        beta, gamma = self.w[f"{name}.beta"], self.w[f"{name}.gamma"]
        return lambda a: gdn(a, beta, gamma, inverse)

    def _g_a(self, x: np.ndarray, pool=None) -> np.ndarray:
        w = self.w
        for i in (0, 2, 4):
            x = conv(x, w[f"g_a.{i}.weight"], w[f"g_a.{i}.bias"], 2, pool, self._gdn(f"g_a.{i + 1}", False))
        return conv(x, w["g_a.6.weight"], w["g_a.6.bias"], 2, pool)

    def _g_s(self, y: np.ndarray, pool=None) -> np.ndarray:
        w = self.w
        for i in (0, 2, 4):
            y = deconv(y, w[f"g_s.{i}.weight"], w[f"g_s.{i}.bias"], pool, self._gdn(f"g_s.{i + 1}", True))
        return deconv(y, w["g_s.6.weight"], w["g_s.6.bias"], pool)

    def _h_a(self, y: np.ndarray, pool=None) -> np.ndarray:
        w = self.w
        a = leaky_relu(conv(y, w["h_a.0.weight"], w["h_a.0.bias"], 1, pool))
        a = leaky_relu(conv(a, w["h_a.2.weight"], w["h_a.2.bias"], 2, pool))
        return conv(a, w["h_a.4.weight"], w["h_a.4.bias"], 2, pool)

    def analysis(self, x: np.ndarray, level: float, tile: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Pixels 0..255 [3, H, W] float32 (H, W multiples of 64) -> (y, z) before
        quantization; ``tile``: g_a on tiles of that many latent units (tiles.py)."""
        return self.latents(self.features(x, tile), level)

    def features(self, x: np.ndarray, tile: int = 0) -> np.ndarray:
        """g_a's output for pixels x, before the gains: the part of the analysis that no beta
        changes (a search over beta computes it once)."""
        x = x / np.float32(127.5) - np.float32(1.0)
        with self._products() as pool:
            return on_tiles(lambda t: self._g_a(t, pool), x, 16, 1, tile, TILE_HALO) if tile else self._g_a(x, pool)

    def latents(self, features: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """(y, z) from :meth:`features` at a level."""
        gy, _, gz = self.gains(level)
        y = features * gy[:, None, None]
        with self._products() as pool:
            return y, self._h_a(y, pool) * gz[:, None, None]

    def synthesis(self, y_hat: np.ndarray, level: float, tile: int = 0) -> np.ndarray:
        """y_hat [m, h, w] -> pixels 0..255 [3, 16h, 16w] float32, not rounded."""
        _, gy_inv, _ = self.gains(level)
        y = (y_hat * gy_inv[:, None, None]).astype(np.float32)
        with self._products() as pool:
            x = on_tiles(lambda t: self._g_s(t, pool), y, 1, 16, tile, TILE_HALO) if tile else self._g_s(y, pool)
        return (x + np.float32(1.0)) * np.float32(127.5)
