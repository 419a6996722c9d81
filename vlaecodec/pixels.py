"""The pixel coder of version 2 and 3 files and of z-only decodes: p(x|z) over a band of
rows, pixel wave by pixel wave, through probability tables (version 4 files code from the
network's integer CDF instead, :mod:`vlaecodec.wave_coder`).

Given the z features of a band, the local PixelCNN gives every subpixel a table that depends
only on the pixels of its window.  Pixels on one anti-diagonal ``x + lag*y = t`` (a *wave*)
do not see each other, so the decoder computes a wave's tables at once (:func:`wavefront`),
split between threads when it is wide, and pops its values in order.  The encoder pushes
every pixel in reverse order, its tables computed in chunks of waves, several chunks at a
time on a thread pool.  Exact integer networks (:mod:`vlaecodec.exact`) make the tables the
same on both sides whatever the thread count; both sides compute them with the compiled
kernels of :mod:`vlaecodec.wave_kernel` (the same integers as the numpy rows of
:class:`~vlaecodec.exact.ExactVLAE`, without the GIL, so split waves run in parallel).

Lossless and near-lossless files code each subpixel's bin (:class:`Bins`); lossy files and
previews pick each subpixel from its table without bits (:func:`reconstruct`).

>>> [(ys.tolist(), xs.tolist()) for ys, xs in wavefront(2, 3, 2)]
[([0], [0]), ([0], [1]), ([0, 1], [2, 0]), ([1], [1]), ([1], [2])]
"""
from __future__ import annotations

import functools

import constriction
import numpy as np
from threadpoolctl import threadpool_limits

from .errors import VlaeError
from .exact import ExactVLAE
from .fileformat import ImageInfo
from .wave_kernel import WaveKernel
from .workers import pool_map, workers

CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
MIN_ROWS_PER_THREAD = 48   # narrower waves stay in one thread: the hand-off costs more


def one_blas_thread(fn):
    """Run ``fn`` with numpy's BLAS on one thread.  The coder's matrices are one wave of
    pixels by ~100 features: threads only add waiting, and on a busy machine OpenBLAS's
    spinning threads made decoding 20x slower (bench/, 2-core machine under load).  Only the
    whole-image convolutions may use more (the coders' ``threads``)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper


def wavefront(height: int, width: int, lag: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pixel sets that can be decoded together: (y, x) with x + lag*y = t, for t = 0, 1, ...

    With a window reaching ``lag - 1`` pixels to the right in the rows above, every pixel of
    step t depends only on pixels of earlier steps."""
    steps = []
    for t in range(width + lag * (height - 1)):
        y0 = max(0, -(-(t - width + 1) // lag))
        ys = np.arange(y0, min(height - 1, t // lag) + 1)
        if len(ys):  # narrow images have empty waves
            steps.append((ys, t - lag * ys))
    return steps


def _split(n: int, parts: int) -> list[slice]:
    """[0, n) in at most ``parts`` contiguous pieces of at least MIN_ROWS_PER_THREAD rows."""
    parts = max(1, min(parts, n // MIN_ROWS_PER_THREAD))
    cuts = [n * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(cuts, cuts[1:])]


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


class Bins:
    """Near-lossless alphabet: bins of 2d+1 consecutive values, each decoded to a value within
    d of all its members (d = 0: the values themselves).

    >>> b = Bins(2, 256)
    >>> b.index(np.array([0, 4, 5, 255])).tolist(), b.value(b.index(np.array([0, 4, 5, 255]))).tolist()
    ([0, 0, 1, 51], [2, 2, 7, 255])
    """

    def __init__(self, max_error: int, levels: int):
        self.d, self.levels = max_error, levels
        self.width = 2 * max_error + 1
        lo = np.arange(0, levels, self.width)
        self.last = np.minimum(lo + self.width, levels) - 1             # last value of each bin
        self.centers = np.minimum(lo + max_error, levels - 1)           # within d of lo .. last

    def index(self, x: np.ndarray) -> np.ndarray:
        return x // self.width

    def value(self, q: np.ndarray) -> np.ndarray:
        return self.centers[q]

    def masses(self, probs: np.ndarray) -> np.ndarray:
        """Probability of each bin from value probabilities [n, levels].  A running sum
        (sequential, so the same on every machine) read at each bin's last value."""
        if self.d == 0:
            return probs
        cum = np.cumsum(probs, axis=1)[:, self.last]
        # C order: constriction reads the rows straight from memory (the gather above gives F order)
        return np.ascontiguousarray(np.diff(cum, axis=1, prepend=0.0))


def reconstruct(probs: np.ndarray, rule: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """One value per row of probabilities, for decodes without pixel bits (lossy, preview):
    ``mean`` (rounded), ``mode``, or a ``sample``.  Sequential sums only, so every machine
    gets the same values from the same (exact) tables.

    >>> p = np.array([[0.1, 0.2, 0.7], [0.6, 0.0, 0.4]])
    >>> reconstruct(p, "mean").tolist(), reconstruct(p, "mode").tolist()
    ([2, 1], [2, 0])
    """
    if rule == "mode":
        return probs.argmax(axis=1)
    cum = np.cumsum(probs, axis=1)
    if rule == "mean":
        mean = np.cumsum(probs * np.arange(probs.shape[1]), axis=1)[:, -1]
        return np.floor(mean / cum[:, -1] + 0.5).astype(np.int64)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


class PixelCoder:
    """p(x|z) of one exact network, wave by wave.  ``threads``: BLAS threads for the z
    features and the pool that shares the pixel work (the results do not depend on it);
    ``progress``: a progress bar for large images."""

    PROGRESS_MIN_PIXELS = 1 << 18

    def __init__(self, net: ExactVLAE, threads: int = 1, progress: bool = False):
        self.net = net
        self.kernel = WaveKernel(net)
        self.cfg = net.cfg
        self.threads = max(1, threads)
        self.progress = progress
        self.lag = (net.right + 1) if net.local else None

    def features(self, values: np.ndarray, channels: list[int], grid: tuple[int, int]) -> np.ndarray:
        """Half-resolution z features from integer z values of the given latent channels."""
        if not np.any(values):    # z = 0: a local model's, or a bottom band's
            return self.net.zero_features_half(grid)
        z = np.zeros((1, self.cfg.z_channels, *grid), dtype=np.float64)
        z[0, channels] = values.reshape(len(channels), *grid)
        with threadpool_limits(limits=self.threads, user_api="blas"):
            return self.net.z_features_half(z)

    def schedule(self, H: int, W: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.lag is None:  # factorized: every pixel at once
            ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
            return [(ys.reshape(-1), xs.reshape(-1))]
        return wavefront(H, W, self.lag)

    def push(self, coder, x: np.ndarray, u_pad: np.ndarray, zhalf: np.ndarray,
             rows: tuple[int, int], bins: Bins, chunk: int = 1024) -> None:
        """Push the pixels of rows [r0, r1) of x [C,H,W] (already on the bins' values) so that
        :meth:`pop` pops them wave by wave.  Features are gathered exactly as the decoder
        gathers them, in chunks of waves, so memory stays bounded on any image size."""
        C, _, W = x.shape
        r0, r1 = rows
        groups, cur, size = [], [], 0
        for st in self.schedule(r1 - r0, W):  # group waves into chunks of about `chunk` pixels
            cur.append(st)
            size += len(st[0])
            if size >= chunk:
                groups.append(cur)
                cur, size = [], 0
        if cur:
            groups.append(cur)

        def tables(group):  # symbols and tables of a chunk, in the decoder's order
            ys = np.concatenate([g[0] for g in group])
            xs = np.concatenate([g[1] for g in group])
            n = len(ys)
            prev = np.ascontiguousarray(x[:, ys + r0, xs].T)
            rows = self.kernel.tables(u_pad, zhalf, ys, xs, r0, prev)
            probs = np.concatenate([bins.masses(rows[c]) for c in range(C)])
            symbols = bins.index(prev.T.reshape(-1)).astype(np.int32)
            # decoder order: wave by wave, and inside a wave channel by channel
            order, start = [], 0
            for g in group:
                m = len(g[0])
                for c in range(C):
                    order.append(np.arange(c * n + start, c * n + start + m))
                start += m
            order = np.concatenate(order)
            return symbols[order], probs[order]

        # chunks are independent (every pixel is known): with threads, several are computed
        # at once, and pushed one after the other, last chunk first
        todo = list(reversed(groups))
        with workers(self.threads) as pool:
            step = self.threads if pool else 1
            for k in self._progress(range(0, len(todo), step), (r1 - r0) * W, "encode"):
                for symbols, probs in pool_map(pool, tables, todo[k:k + step]):
                    coder.encode_reverse(symbols, CATEGORICAL, probs)

    def pop(self, pick, x: np.ndarray, u_pad: np.ndarray, zfeat: np.ndarray,
            rows: tuple[int, int]) -> None:
        """Fill rows [r0, r1) of x [C,H,W] (and its padded network input u_pad), wave by wave;
        ``pick(probabilities, c, prev) -> values`` pops them from the coder or reconstructs them.
        With ``threads`` > 1, each wide wave's pixels are split between threads (every row of
        the network is computed on its own, so the split cannot change a bit); the pops stay
        in one thread, in order."""
        net, kernel = self.net, self.kernel
        C, _, W = x.shape
        r0, r1 = rows
        offset = 1 - self.cfg.levels

        def first(ys, xs, part):  # context, trunk and channel 0's tables of some of the wave
            return kernel.first(u_pad, zfeat, ys[part], xs[part], r0)

        with workers(self.threads) as pool:
            for ys, xs in self._progress(self.schedule(r1 - r0, W), (r1 - r0) * W, "decode"):
                parts = _split(len(ys), self.threads if pool else 1)
                done = pool_map(pool, lambda p: first(ys, xs, p), parts)
                trunks = [d[0] for d in done]
                probs = _join([d[1] for d in done])
                prev = np.zeros((len(ys), C), dtype=np.int64)
                for c in range(C):
                    if c:
                        jobs = [(c, t, prev[p]) for t, p in zip(trunks, parts)]
                        probs = _join(pool_map(pool, lambda j: kernel.probabilities(*j), jobs))
                    sym = pick(probs, c, prev)
                    prev[:, c] = sym
                    x[c, ys + r0, xs] = sym
                    if net.local:
                        u_pad[c, ys + r0 + net.up, xs + net.left] = 2 * sym + offset

    def _progress(self, items, pixels: int, what: str):
        if not self.progress or pixels < self.PROGRESS_MIN_PIXELS:
            return items
        from tqdm import tqdm
        return tqdm(items, desc=f"{what} {pixels} px", unit="wave", leave=False, mininterval=1)

    def padded_input(self, x: np.ndarray, known: bool = True) -> np.ndarray:
        """The network input u = 2x - (levels-1) with the window's zero margin (zeros where unknown)."""
        net = self.net
        C, H, W = x.shape
        pad = (net.up, net.left + net.right) if net.local else (0, 0)
        u_pad = np.zeros((C, H + pad[0], W + pad[1]), dtype=np.float64)
        if known and net.local:
            u_pad[:, net.up:, net.left:net.left + W] = 2 * x - (self.cfg.levels - 1)
        return u_pad

    def blank(self, info: ImageInfo) -> tuple[np.ndarray, np.ndarray]:
        """An unknown image of the model's channels and its padded input, to be popped."""
        x = np.zeros((self.cfg.channels, info.height, info.width), dtype=np.int64)
        return x, self.padded_input(x, known=False)

    def finish(self, x: np.ndarray, info: ImageInfo) -> np.ndarray:
        """The decoded x [C,H,W] as the file's uint8 image [H,W,channels]."""
        img = np.ascontiguousarray(x.transpose(1, 2, 0)).astype(np.uint8)
        if info.channels < img.shape[2]:
            if not ((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()):
                raise VlaeError("corrupt file: a grey image decoded to colour")
            img = img[..., :1]
        return img
