"""Lossy coding with the hyperprior model: z by fixed tables, y by tables that z selects.

The file holds, per image, the hyper-latent z (each channel under its own fixed table) and
then the latent y, each element under a zero-mean table picked by the width that ``h_s(z)``
predicts, around the mean that ``h_s(z)`` predicts.  The tables are Gaussian, or, for a model
exported with fitted tables (:mod:`vlaecodec.table_fit`), the symbols' own histograms, with
y's table index shifted per trained beta and channel and z's tables per trained beta.  One
range-coder stream holds everything.

Bit-exactness of the entropy decoding: the decoder must pick the same table for every
element as the encoder did.  So every number that picks a table comes from integers:

* the tables themselves are integer frequencies, computed once when the model is exported
  and stored in its weights file (``LossyTables``);
* ``h_s`` runs on integers (fixed-point weights and activations held in float64, bounded so
  that no sum exceeds 2^53, hence exact in any summation order), and a width is turned into a
  table index by comparing the integer pre-activation with integer thresholds.

The picture itself, ``g_s(y_hat)``, runs in float32 (numpy, :mod:`vlaecodec.lossy_transforms`:
coding never imports torch): on another CPU or BLAS it may differ in
the last bits, so a decoded pixel may differ by one level between machines (never more
than rounding of a float32 sum can move it); the same machine and build always give the
same pixels.  New files then correct the picture with a loop filter fitted to it by the
encoder (:mod:`vlaecodec.loop_filter`, the header's *filtered* flag; its coefficients close
each image's part of the stream); the filter is integer arithmetic on the picture.

>>> import torch
>>> from vlaecodec.lossy_model import LossyConfig, LossyModel
>>> torch.manual_seed(0) and None
>>> m = LossyModel(LossyConfig(n=8, m=8)).eval()
>>> coder = LossyCoder(m, LossyTables.from_model(m), model_id="00" * 8)
>>> img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
>>> data = coder.encode([img], beta=100.0)
>>> out = coder.decode(data)
>>> out[0].shape, out[0].dtype
((20, 30, 3), dtype('uint8'))
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import constriction
import numpy as np
from threadpoolctl import threadpool_limits

from . import loop_filter
from .alpha import join, split_opaque
from .errors import VlaeError
from .fileformat import MODE_LATENT, Header, ImageInfo, pack, unpack
from .images import check_image
from .lossy_config import SCALE_MIN, LossyConfig, beta_row, black_squares  # noqa: F401 - black_squares: also named here
from .lossy_transforms import LossyTransforms
from .zoo import DEFAULT_LOSSY_MODEL, is_lossy_model  # noqa: F401 - also named here, as before

if TYPE_CHECKING:
    import torch

    from .lossy_model import LossyModel
    from .lossy_refine import LatentRefiner

ACT_BITS = 8            # fixed-point fraction bits of h_s's activations
WEIGHT_BITS = 14        # ... and of its weights
ACT_LIMIT = 2.0 ** 22   # activations are clamped to +-2^22 / 2^ACT_BITS = +-16384
FREQ_BITS = 16          # table entries are integer frequencies summing to about 2^16
Z_RADIUS = 48           # z symbols in [-48, 48] (clamped by the encoder)
SCALES = 64             # Gaussian widths of y, log-spaced from SCALE_MIN to SCALE_MAX
SCALE_MAX = 48.0
Y_RADIUS_MAX = 383      # y symbols within +-min(383, 8 * width + 2) of their mean
CONV_BLOCK = 4096        # latent positions per block of the integer convolutions
PAD = 64                # images are padded to a multiple of 64 (the transforms' stride)
LOSSY_EFFORTS = {1: 0, 2: 20}   # effort -> the refiner's Adam steps per window (1: the analysis's latents)
TILE = 64               # the transforms run on tiles of 64 latent units (1024 pixels) a side,
                        # so memory is bounded on large photos (tiles.py); smaller images whole


def _freqs(p: np.ndarray) -> np.ndarray:
    """Probabilities -> integer frequencies, every symbol at least 1."""
    return np.maximum(1, np.round(p / p.sum() * (1 << FREQ_BITS))).astype(np.int64)


def scale_table() -> np.ndarray:
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALES))


@dataclass
class LossyTables:
    """The integer side of a lossy model; saved with its weights, never recomputed there."""
    hs_weights: list[np.ndarray]     # per h_s conv: int [Cout, Cin, 3, 3] at 2^WEIGHT_BITS
    hs_biases: list[np.ndarray]      # per h_s conv: int [Cout] at 2^(WEIGHT_BITS + ACT_BITS)
    thresholds: np.ndarray           # int [SCALES - 1]: raw width above t_k -> table k + 1
    y_freqs: np.ndarray              # int [SCALES, 2 * Y_RADIUS_MAX + 1]
    y_radius: np.ndarray             # int [SCALES]
    z_freqs: np.ndarray              # int [n, 2 * Z_RADIUS + 1], or per trained beta [betas, n, ...] (fitted)
    ctx_weights: list[np.ndarray] = field(default_factory=list)   # the context network's convs,
    ctx_biases: list[np.ndarray] = field(default_factory=list)    # as h_s's (none: no context)
    # int [trained betas, m]: added to each channel's table index at the trained beta nearest
    # the file's (fitted at export, table_fit.py); empty: no shifts (models before 0.16)
    y_shift: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    @classmethod
    def from_model(cls, model: LossyModel) -> "LossyTables":
        """Quantize h_s and tabulate the densities (run once, at export)."""
        import torch
        ws, bs = _integer_convs(model.h_s)
        cws, cbs = _integer_convs(model.ctx) if model.cfg.context else ([], [])
        if cws:   # taps at an even offset read only white squares (zero) from a white square:
            k = cws[0].shape[2]     # dropped, they change only the black squares' outputs,
            even = (np.arange(k)[:, None] + np.arange(k)[None, :]) % 2 == 0   # never used
            cws[0][:, :, even] = 0
        s = scale_table()
        mids = np.sqrt(s[:-1] * s[1:])
        raw = np.log(np.expm1(mids))            # softplus^-1: the raw output at each midpoint
        thresholds = np.ceil(raw * 2 ** ACT_BITS).astype(np.int64)
        radius = np.minimum(Y_RADIUS_MAX, np.ceil(8 * s) + 2).astype(np.int64)
        k = np.arange(-Y_RADIUS_MAX, Y_RADIUS_MAX + 1, dtype=np.float64)
        y_freqs = np.zeros((SCALES, len(k)), np.int64)
        for i, sc in enumerate(s):
            c = 1.0 / (sc * math.sqrt(2.0))
            v = np.abs(k)
            p = 0.5 * (np.vectorize(math.erfc)((v - 0.5) * c) - np.vectorize(math.erfc)((v + 0.5) * c))
            inside = np.abs(k) <= radius[i]
            y_freqs[i, inside] = _freqs(p[inside])
        with torch.no_grad():
            zk = torch.arange(-Z_RADIUS, Z_RADIUS + 1, dtype=torch.float32)
            n = model.cfg.n
            pz = model.z_density.likelihood(zk[None, None, None, :].expand(1, n, 1, -1)).double().numpy()[0, :, 0]
        z_freqs = np.stack([_freqs(row) for row in pz])
        return cls(ws, bs, thresholds, y_freqs, radius, z_freqs, cws, cbs)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        import torch
        out = {"tables.thresholds": self.thresholds, "tables.y_freqs": self.y_freqs,
               "tables.y_radius": self.y_radius, "tables.z_freqs": self.z_freqs}
        for i, (w, b) in enumerate(zip(self.hs_weights, self.hs_biases)):
            out[f"tables.hs{i}.weight"], out[f"tables.hs{i}.bias"] = w, b
        for i, (w, b) in enumerate(zip(self.ctx_weights, self.ctx_biases)):
            out[f"tables.ctx{i}.weight"], out[f"tables.ctx{i}.bias"] = w, b
        if self.y_shift.size:
            out["tables.y_shift"] = self.y_shift
        return {k: torch.from_numpy(np.ascontiguousarray(_narrowest(v))) for k, v in out.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "LossyTables":
        g = lambda k: np.asarray(t[k]).astype(np.int64)  # noqa: E731 - numpy or torch arrays

        def convs(name):
            n = sum(1 for k in t if k.startswith(f"tables.{name}") and k.endswith(".weight"))
            return [g(f"tables.{name}{i}.weight") for i in range(n)], [g(f"tables.{name}{i}.bias") for i in range(n)]
        shift = g("tables.y_shift") if "tables.y_shift" in t else np.zeros((0, 0), np.int64)
        return cls(*convs("hs"), g("tables.thresholds"), g("tables.y_freqs"), g("tables.y_radius"),
                   g("tables.z_freqs"), *convs("ctx"), y_shift=shift)


def _narrowest(a: np.ndarray) -> np.ndarray:
    """Integers in the narrowest of int16, int32, int64 that holds them: the weight tables fit
    in 16 bits, and at int64 a context model's file would be 7 MB larger (they are read back
    as int64, so the dtype changes nothing else).

    >>> _narrowest(np.array([-32768, 32767])).dtype, _narrowest(np.array([1 << 20])).dtype
    (dtype('int16'), dtype('int32'))
    """
    a = np.asarray(a)
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if a.size == 0 or (a.min() >= info.min and a.max() <= info.max):
            return a.astype(dtype)
    return a.astype(np.int64)


def _integer_convs(net: torch.nn.Module) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The convolutions of ``net`` as integers: weights at 2^WEIGHT_BITS, biases at
    2^(WEIGHT_BITS + ACT_BITS), checked against the bound that keeps every float64 sum exact
    (inputs are clamped to +-ACT_LIMIT)."""
    import torch
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    ws = [np.round(c.weight.detach().double().numpy() * 2 ** WEIGHT_BITS).astype(np.int64) for c in convs]
    bs = [np.round(c.bias.detach().double().numpy() * 2 ** (WEIGHT_BITS + ACT_BITS)).astype(np.int64)
          for c in convs]
    for w in ws:
        assert w[0].size * np.abs(w).max() * ACT_LIMIT < 2 ** 52, "weights too large for exact sums"
    return ws, bs


def _conv_exact(a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer k x k convolution (zero padding) of a [C, H, W] at 2^ACT_BITS, exact: the
    products and sums are integers below 2^53, held in float64, so BLAS's summation order
    cannot change them.  Returns floor(sum / 2^WEIGHT_BITS), again at 2^ACT_BITS.  One
    product per tap, a block of rows at a time, so the memory is the input and the output
    and a block's products, whatever k and the image's size."""
    c, h, wd = a.shape
    k = w.shape[2]
    p = np.pad(a.astype(np.float64), ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    out = np.empty((len(w), h, wd))
    taps = [(dy, dx, w[:, :, dy, dx].astype(np.float64)) for dy in range(k) for dx in range(k)]
    taps = [t for t in taps if t[2].any()]
    step = max(1, CONV_BLOCK // max(wd, 1))   # rows at a time: the sums are exact in any order
    for r in range(0, h, step):
        n = min(step, h - r)
        acc = np.repeat(b.astype(np.float64)[:, None], n * wd, axis=1)
        for dy, dx, tap in taps:
            acc += tap @ p[:, r + dy:r + dy + n, dx:dx + wd].reshape(c, n * wd)
        out[:, r:r + n] = np.floor(acc / 2 ** WEIGHT_BITS).reshape(len(w), n, wd)
    return out


def hyper_synthesis_raw(tables: LossyTables, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer z_hat [n, h, w] -> (mean, raw width) of y at 2^ACT_BITS, both [m, 4h, 4w]; the
    integer twin of ``LossyModel.h_s`` (upsample, conv, ReLU, upsample, conv, ReLU, conv)."""
    a = z_hat.astype(np.float64) * 2 ** ACT_BITS
    last = len(tables.hs_weights) - 1
    for i, (w, b) in enumerate(zip(tables.hs_weights, tables.hs_biases)):
        if i < last:
            a = a.repeat(2, axis=1).repeat(2, axis=2)
        a = _conv_exact(a, w, b)
        if i < last:
            a = np.clip(a, 0, ACT_LIMIT)
    mean, raw = np.split(np.clip(a, -ACT_LIMIT, ACT_LIMIT), 2)
    return mean, raw


def table_index(tables: LossyTables, raw: np.ndarray, row: int = 0) -> np.ndarray:
    """Integer raw widths [m, h, w] -> indices of y's tables: integer comparisons with the
    thresholds, then, for a model with table shifts, each channel's shift at trained beta
    ``row`` (:func:`~vlaecodec.lossy_config.beta_row`), clamped to the tables."""
    index = np.searchsorted(tables.thresholds, raw.astype(np.int64), side="left")
    if not tables.y_shift.size:
        return index
    return np.clip(index + tables.y_shift[row][:, None, None], 0, len(tables.y_freqs) - 1)


def hyper_synthesis_exact(tables: LossyTables, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer z_hat [n, h, w] -> (mean of y at 2^ACT_BITS, table index of y), both [m, 4h, 4w]."""
    mean, raw = hyper_synthesis_raw(tables, z_hat)
    return mean, table_index(tables, raw)


def context_exact(tables: LossyTables, mean: np.ndarray, raw: np.ndarray, black_hat: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The integer twin of the context network (``LossyModel.quantized``): h_s's (mean, raw)
    [m, h, w] at 2^ACT_BITS, corrected on the white squares by the network's reading of the
    decoded black squares ``black_hat`` (y_hat at 2^ACT_BITS, zero on the white squares).

    Only the white squares' outputs are needed and only the black squares' inputs are not
    zero, so the network runs on the white squares alone, packed two to a column pair
    (:func:`_from_black_squares`): a quarter of the products of the whole grid, the same
    integers."""
    w = mean.shape[2]
    a = np.clip(black_hat, -ACT_LIMIT, ACT_LIMIT)
    last = len(tables.ctx_weights) - 1
    for i, (wt, b) in enumerate(zip(tables.ctx_weights, tables.ctx_biases)):
        if i == 0:
            a = _from_black_squares(a, wt, b)
        else:   # packed squares have no neighbours left: only 1x1 layers may follow
            assert wt.shape[2:] == (1, 1), "the context network's later layers must be 1x1"
            a = _conv_exact(a, wt, b)
        a = np.clip(a, 0, ACT_LIMIT) if i < last else a
    d_mean, d_raw = np.split(a, 2)
    mean, raw = mean.copy(), raw.copy()
    for p in (0, 1):   # rows of parity p: white squares at columns 1 - p, 3 - p, ...
        cols = len(range(1 - p, w, 2))
        mean[:, p::2, 1 - p::2] += d_mean[:, p::2, :cols]
        raw[:, p::2, 1 - p::2] += d_raw[:, p::2, :cols]
    return np.clip(mean, -ACT_LIMIT, ACT_LIMIT), np.clip(raw, -ACT_LIMIT, ACT_LIMIT)


def _from_black_squares(a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`_conv_exact` of a [C, H, W] that is zero off the black squares, at the white
    squares only: [O, H, ceil(W / 2)], row i's k-th entry the output at column
    2k + 1 - i % 2 (the white squares of row i in order; the last may lie past the edge).

    A white output reads black inputs only through the taps with dy + dx odd.  Packed the same
    way (row i's k-th black square is column 2k + i % 2), the input a tap (dy, dx) reads from a
    white square of a row of parity p sits (1 - p + dx - q) / 2 packed columns over, q the
    parity of the row it reads: one shift for each tap and row parity."""
    c, h, wd = a.shape
    half, r = (wd + 1) // 2, w.shape[2] // 2
    black = np.zeros((c, h, half))
    black[:, 0::2, :len(range(0, wd, 2))] = a[:, 0::2, 0::2]
    black[:, 1::2, :len(range(1, wd, 2))] = a[:, 1::2, 1::2]
    reach = (r + 2) // 2
    padded = np.pad(black, ((0, 0), (r, r + 1), (reach, reach)))
    out = np.empty((len(w), h, half))
    step = max(1, CONV_BLOCK // max(half, 1))   # rows at a time, as in _conv_exact
    for p in (0, 1):
        rows = range(p, h, 2)
        taps = [(dy, (1 - p + dx - (p + dy) % 2) // 2, w[:, :, dy + r, dx + r].astype(np.float64))
                for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy + dx) % 2]
        taps = [t for t in taps if t[2].any()]
        for j in range(0, len(rows), step):
            top, n = rows[j], min(step, len(rows) - j)
            acc = np.repeat(b.astype(np.float64)[:, None], n * half, axis=1)
            for dy, shift, tap in taps:
                src = padded[:, top + dy + r:top + dy + r + 2 * n - 1:2, reach + shift:reach + shift + half]
                acc += tap @ src.reshape(c, n * half)
            out[:, top:top + 2 * n - 1:2] = np.floor(acc / 2 ** WEIGHT_BITS).reshape(len(w), n, half)
    return out


def _groups(index: np.ndarray):
    """(table, positions) for each table that ``index`` uses, tables ascending, each one's
    positions ascending: one stable sort of the indices (a radix sort, as they fit in 16
    bits) instead of a pass over all of them per table.

    >>> [(int(k), p.tolist()) for k, p in _groups(np.array([3, 1, 3, 0, 1]))]
    [(0, [3]), (1, [1, 4]), (3, [0, 2])]
    """
    order = np.argsort(index.astype(np.uint16), kind="stable")
    counts = np.bincount(index)
    ends = np.cumsum(counts)
    for k in np.flatnonzero(counts):
        yield k, order[ends[k] - counts[k]:ends[k]]


class _Models:
    """constriction's categorical models for every table, built once from the integers
    (float64 division of integers is correctly rounded: the same floats everywhere)."""

    def __init__(self, tables: LossyTables):
        def cat(f):
            return constriction.stream.model.Categorical(f / f.sum(), perfect=False)
        # z's tables: one set, or (fitted tables, table_fit.py) one per trained beta, made
        # when a file first needs it
        self._z = {} if tables.z_freqs.ndim == 3 else {None: [cat(f) for f in tables.z_freqs]}
        self._z_freqs, self._cat = tables.z_freqs, cat
        self.y = []
        for k, f in enumerate(tables.y_freqs):
            r = int(tables.y_radius[k])
            self.y.append(cat(f[Y_RADIUS_MAX - r:Y_RADIUS_MAX + r + 1]))
        self.radius = tables.y_radius
        # a picture's filter: its classes (files of 0.9-0.13), or its kind and classes
        self.filter_choice = {k: cat(np.ones(k * len(loop_filter.CLASS_CHOICES), np.int64))
                              for k in (1, len(loop_filter.CLIPS))}
        self.coefficient = cat(loop_filter.coefficient_frequencies())

    def z(self, row: int) -> list:
        """z's table for each channel at trained beta ``row``."""
        key = row if self._z_freqs.ndim == 3 else None
        if key not in self._z:
            self._z[key] = [self._cat(f) for f in self._z_freqs[row]]
        return self._z[key]


class LossyCoder:
    """Encode and decode images with one lossy model at any beta in its trained range."""

    def __init__(self, model: LossyTransforms | LossyModel, tables: LossyTables, model_id: str, threads: int = 1,
                 loop_filter: bool = True, refiner: LatentRefiner | None = None):
        # a torch LossyModel (tests, training) gives its transforms: coding runs on numpy
        self.model = model if isinstance(model, LossyTransforms) else LossyTransforms.from_module(model, threads)
        self.tables, self.model_id, self.threads = tables, model_id, threads
        self.loop_filter = loop_filter   # new files carry per-image filters (loop_filter.py)
        self.refiner = refiner           # effort 2: the encoder searches each image's latents
        self.models = _Models(tables)

    @property
    def beta_range(self) -> tuple[float, float]:
        return min(self.model.cfg.betas), max(self.model.cfg.betas)

    def check_beta(self, beta: float) -> float:
        lo, hi = self.beta_range
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and lo * (1 - 1e-6) <= beta <= hi * (1 + 1e-6)):
            raise VlaeError(f"beta must be between {lo:g} and {hi:g} for this model (got {beta!r})")
        return float(np.float32(beta))

    # -- one image ---------------------------------------------------------------------------
    def _features(self, img: np.ndarray) -> np.ndarray:
        """The analysis of one image that no beta changes (LossyTransforms.features)."""
        return self.model.features(_pixels(img), TILE)

    def _encode_image(self, enc, img: np.ndarray, beta: float, filtered: bool, draw: bool,
                      features: np.ndarray | None = None, refine: bool = True) -> np.ndarray | None:
        """Codes one image (``features``: its :meth:`_features`, if known; ``refine``: with
        the refiner, if there is one); with ``draw``, returns the picture the decoder will draw."""
        y, z = self.model.latents(self._features(img) if features is None else features, self.model.level(beta))
        if refine and self.refiner is not None:
            y, z = self.refiner.refine(_pixels(img), img.shape[0], img.shape[1], beta, y, z)
        z_hat = np.clip(np.round(z), -Z_RADIUS, Z_RADIUS).astype(np.int64)
        row = beta_row(self.model.cfg.betas, beta)
        for c, m in enumerate(self.models.z(row)):
            enc.encode((z_hat[c].ravel() + Z_RADIUS).astype(np.int32), m)
        sym, mean, index = self.quantize(y, z_hat, row)
        for part in self._parts(mean.shape[1:]):
            self._encode_symbols(enc, sym[:, part], index[:, part])
        if not (filtered or draw):
            return None
        pic = self._picture(sym, mean, beta, img.shape[0], img.shape[1], img.shape[2])
        if not filtered:
            return pic
        # the filter is fitted to the very picture the decoder will make
        kind, choice, q = loop_filter.choose(pic, img, beta, self.threads, loop_filter.KINDS)
        # its classes and (in files of several kinds) its kind, one symbol
        enc.encode(np.array([kind * len(loop_filter.CLASS_CHOICES) + choice], np.int32),
                   self.models.filter_choice[len(loop_filter.KINDS)])
        shape = loop_filter.CLASS_CHOICES[choice]
        symbols = loop_filter.to_symbols(q, shape)
        enc.encode((symbols + loop_filter.RADIUS).astype(np.int32), self.models.coefficient)
        if not draw:
            return None
        # the decoder's own steps: coefficients from their symbols, then the filter
        q = loop_filter.from_symbols(symbols, shape, img.shape[2], kind)
        return loop_filter.apply(pic, q, shape, self.threads, kind) if shape[0] else pic

    def quantize(self, y: np.ndarray, z_hat: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(symbols, means at 2^ACT_BITS, table indices) of y [m, h, w] given the integer
        z_hat, at trained beta ``row``: what the encoder codes, part by part (:meth:`_parts`),
        each part's means and tables read from the parts before it."""
        mean, raw = hyper_synthesis_raw(self.tables, z_hat)
        y0 = y.astype(np.float64)
        sym = np.zeros(mean.shape, np.int64)
        index = np.zeros(mean.shape, np.int64)
        for k, part in enumerate(self._parts(mean.shape[1:])):
            if k:   # the white squares' parameters read the black squares' y_hat
                mean, raw = self._white(mean, raw, sym)
            index = np.where(part, table_index(self.tables, raw, row), index)
            radius = self.models.radius[index]
            sym = np.where(part, np.clip(np.round(y0 - mean / 2 ** ACT_BITS).astype(np.int64), -radius, radius), sym)
        return sym, mean, index

    def _decode_image(self, dec, info: ImageInfo, beta: float, filtered: bool, kinds: int) -> np.ndarray:
        n = self.model.cfg.n
        row = beta_row(self.model.cfg.betas, beta)
        hp, wp = _padded(info.height), _padded(info.width)
        zh, zw = hp // 64, wp // 64
        z_hat = np.empty((n, zh * zw), np.int64)
        for c, m in enumerate(self.models.z(row)):
            z_hat[c] = dec.decode(m, zh * zw).astype(np.int64) - Z_RADIUS
        z_hat = z_hat.reshape(n, zh, zw)
        mean, raw = hyper_synthesis_raw(self.tables, z_hat)
        sym = np.zeros(mean.shape, np.int64)
        for k, part in enumerate(self._parts(mean.shape[1:])):
            if k:
                mean, raw = self._white(mean, raw, sym)
            sym[:, part] = self._decode_symbols(dec, table_index(self.tables, raw, row)[:, part])
        pic = self._picture(sym, mean, beta, info.height, info.width, info.channels)
        if not filtered:
            return pic
        kind, choice = divmod(int(dec.decode(self.models.filter_choice[kinds], 1)[0]), len(loop_filter.CLASS_CHOICES))
        ka, kb = loop_filter.CLASS_CHOICES[choice]
        count = ka * kb * loop_filter.n_features(info.channels, kind) * info.channels
        symbols = dec.decode(self.models.coefficient, count).astype(np.int64) - loop_filter.RADIUS
        q = loop_filter.from_symbols(symbols, (ka, kb), info.channels, kind)
        return loop_filter.apply(pic, q, (ka, kb), self.threads, kind) if ka else pic

    def _parts(self, shape: tuple[int, int]) -> list[np.ndarray]:
        """The parts of y's grid [h, w] in coding order: all of it, or, with a context
        network, the black squares and then the white ones."""
        if not self.tables.ctx_weights:
            return [np.ones(shape, bool)]
        black = black_squares(*shape)
        return [black, ~black]

    def _white(self, mean: np.ndarray, raw: np.ndarray, sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, raw) with the white squares' corrected from the black squares' symbols."""
        black = black_squares(*mean.shape[1:])
        return context_exact(self.tables, mean, raw, np.where(black, sym * 2 ** ACT_BITS + mean, 0))

    def _encode_symbols(self, enc, sym: np.ndarray, index: np.ndarray) -> None:
        """y's symbols, grouped by table (ascending), each group in the given order."""
        flat_s = sym.ravel()
        for k, sel in _groups(index.ravel()):
            enc.encode((flat_s[sel] + int(self.models.radius[k])).astype(np.int32), self.models.y[k])

    def _decode_symbols(self, dec, index: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`_encode_symbols`: symbols shaped as ``index``."""
        sym = np.empty(index.size, np.int64)
        for k, sel in _groups(index.ravel()):
            sym[sel] = dec.decode(self.models.y[k], len(sel)).astype(np.int64) - int(self.models.radius[k])
        return sym.reshape(index.shape)

    def _picture(self, sym: np.ndarray, mean: np.ndarray, beta: float, height: int, width: int,
                 channels: int) -> np.ndarray:
        """The decoded picture, uint8 [height, width, channels], of y's symbols and means."""
        y_hat = (sym + mean / 2 ** ACT_BITS).astype(np.float32)
        x_hat = self.model.synthesis(y_hat, self.model.level(beta), tile=TILE)[:, :height, :width]
        if channels == 1:   # coded as R = G = B
            x_hat = x_hat.mean(0, keepdims=True, dtype=np.float32)
        x_hat = np.round(np.clip(x_hat, 0, 255, out=x_hat), out=x_hat)
        return np.ascontiguousarray(x_hat.astype(np.uint8).transpose(1, 2, 0))

    # -- files -------------------------------------------------------------------------------
    def encode(self, images: list[np.ndarray], beta: float) -> bytes:
        """uint8 [H, W, C] images (C = 1 or 3; 2 or 4 with an opaque alpha) -> one .vlae file
        at this beta."""
        return self._encode(images, beta, self.loop_filter)[0]

    def encode_and_draw(self, images: list[np.ndarray], beta: float) -> tuple[bytes, list[np.ndarray]]:
        """(:meth:`encode`'s file, the pictures :meth:`decode` draws from it), without decoding
        the file: the encoder has made every step of the picture already but the last."""
        return self._encode(images, beta, self.loop_filter, draw=True)

    def _encode(self, images: list[np.ndarray], beta: float, filtered: bool, draw: bool = False,
                features: list[np.ndarray] | None = None, refine: bool = True) -> tuple[bytes, list[np.ndarray] | None]:
        beta = self.check_beta(beta)
        for img in images:
            check_image(img, 3)
        images, infos = split_opaque(images, "lossy coding")
        with threadpool_limits(self.threads, user_api="blas"):
            enc = constriction.stream.queue.RangeEncoder()
            pictures = [self._encode_image(enc, img, beta, filtered, draw, f, refine)
                        for img, f in zip(images, features or [None] * len(images))]
            words = enc.get_compressed()
        data = pack(Header(model_id=self.model_id, z_bits=1, active=[], images=infos, mode=MODE_LATENT,
                           beta=beta, filtered=filtered, filter_kinds=len(loop_filter.KINDS) if filtered else 1), words)
        return data, join(pictures, infos) if draw else None

    def encode_to_rate(self, images: list[np.ndarray], bpp: float, tolerance: float = 0.03) -> tuple[bytes, float]:
        """(file, beta) whose size is closest to ``bpp`` bits per pixel (whole file, header
        included): bisection on log beta, since the rate falls as beta grows.  Stops within
        ``tolerance`` of the target, or after 14 encodes; a target outside the model's range
        gets the nearest end.  The analysis up to the gains runs once; the search runs without
        the loop filter (half the time), then a few more bisection steps with it, within 35%
        of the beta found: the coefficients' bits depend on beta too.  A filtered file is kept
        if one lands within the tolerance."""
        if not (isinstance(bpp, (int, float)) and math.isfinite(bpp) and bpp > 0):
            raise VlaeError(f"target bits per pixel must be a positive number (got {bpp!r})")
        pixels = sum(im.shape[0] * im.shape[1] for im in images)
        for img in images:
            check_image(img, 3)
        with threadpool_limits(self.threads, user_api="blas"):   # once for every beta tried
            features = [self._features(p) for p in split_opaque(images, "lossy coding")[0]]

        def search(lo: float, hi: float, steps: int, filtered: bool) -> tuple[bytes, float, float]:
            """The (file, beta, rate) closest to the target of a bisection on [lo, hi] (log beta)."""
            best = None

            def consider(beta: float) -> float:
                nonlocal best
                data = self._encode(images, beta, filtered, features=features, refine=False)[0]
                rate = len(data) * 8 / pixels
                if best is None or abs(rate - bpp) < abs(best[2] - bpp):
                    best = (data, self.check_beta(beta), rate)
                return rate

            ends = [math.exp(lo), math.exp(hi)]
            for _ in range(steps):
                mid = (lo + hi) / 2
                rate = consider(math.exp(mid))
                if abs(rate - bpp) <= tolerance * bpp:
                    return best
                lo, hi = (mid, hi) if rate > bpp else (lo, mid)
            for beta in ends:   # the ends, where bisection only approaches them
                if abs(best[2] - bpp) > tolerance * bpp:
                    consider(beta)
            return best

        lo, hi = (math.log(b) for b in self.beta_range)
        plain = search(lo, hi, 14, False)
        found = plain
        if self.loop_filter:
            near = math.log(plain[1])
            filtered = search(max(lo, near - 0.3), min(hi, near + 0.3), 6, True)
            if abs(filtered[2] - bpp) <= max(tolerance * bpp, abs(plain[2] - bpp)):
                found = filtered
        if self.refiner is None:
            return found[0], found[1]
        return self._refined_to_rate(images, bpp, found[1], tolerance, pixels, (lo, hi))

    def _refined_to_rate(self, images, bpp, beta, tolerance, pixels, log_range) -> tuple[bytes, float]:
        """Effort 2's files at a target rate: the search's beta, then secant steps on
        (log beta, log rate) with the refiner, each a whole refined encode (at most 3)."""
        slope, best, prev = -0.6, None, None   # d log rate / d log beta: about -0.6 on Kodak
        for _ in range(3):
            data = self._encode(images, beta, self.loop_filter)[0]
            got = len(data) * 8 / pixels
            if best is None or abs(got - bpp) < abs(best[2] - bpp):
                best = (data, beta, got)
            if abs(got - bpp) <= tolerance * bpp:
                break
            if prev is not None and prev[0] != beta and prev[1] != got:
                slope = min((math.log(got) - math.log(prev[1])) / (math.log(beta) - math.log(prev[0])), -0.1)
            prev = (beta, got)
            step = (math.log(bpp) - math.log(got)) / slope
            beta = self.check_beta(math.exp(min(max(math.log(beta) + step, log_range[0]), log_range[1])))
            if beta == prev[0]:   # at an end of the dial
                break
        return best[0], best[1]

    def decode(self, data: bytes) -> list[np.ndarray]:
        header, words = unpack(data)
        if header.mode != MODE_LATENT:
            raise VlaeError("not a lossy (hyperprior) file")
        if header.model_id != self.model_id[:len(header.model_id)]:
            raise VlaeError(f"file was made with model {header.model_id}, not this model ({self.model_id}); "
                            "decode it with that model")
        try:
            with threadpool_limits(self.threads, user_api="blas"):
                dec = constriction.stream.queue.RangeDecoder(words)
                colour = [self._decode_image(dec, info, header.beta, header.filtered, header.filter_kinds)
                          for info in header.images]
        except (ValueError, RuntimeError, AssertionError) as e:   # constriction on a corrupt stream
            raise VlaeError(f"corrupt lossy payload ({e})") from None
        return join(colour, header.images)   # an opaque alpha comes back as 255


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def _padded(n: int) -> int:
    return -(-n // PAD) * PAD


def _pixels(img: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] -> float32 [3, H, W] padded to a multiple of 64: what the transforms read."""
    return _pad(np.ascontiguousarray(_rgb(img).transpose(2, 0, 1), dtype=np.float32))


def _pad(x: np.ndarray) -> np.ndarray:
    """Replicate the edges of x [C, H, W] up to a multiple of 64 (cheaper to code than zeros)."""
    h, w = x.shape[1:]
    return np.pad(x, ((0, 0), (0, _padded(h) - h), (0, _padded(w) - w)), mode="edge")


def _config(weights) -> LossyConfig:
    from safetensors import safe_open
    with safe_open(str(weights), "np") as f:
        return LossyConfig.from_dict(json.loads(f.metadata()["config"]))


def load_lossy_coder(name_or_path: str = DEFAULT_LOSSY_MODEL, threads: int = 1,
                     loop_filter: bool = True, effort: int = 1) -> LossyCoder:
    """A zoo name (``lossy``) or a weights path -> its coder; the file id is the weights'
    hash.  numpy only at effort 1: decoding never imports torch.  At effort 2 the encoder
    searches each image's latents (:mod:`vlaecodec.lossy_refine`) with the float model, in
    torch."""
    from safetensors.numpy import load_file

    from .zoo import file_sha256, resolve
    if effort not in LOSSY_EFFORTS:   # before the weights are read
        raise VlaeError(f"effort must be one of {', '.join(map(str, LOSSY_EFFORTS))} (got {effort!r})")
    weights = resolve(name_or_path)
    t = load_file(str(weights))
    floats = {k: v for k, v in t.items() if not k.startswith("tables.")}
    transforms = LossyTransforms(_config(weights), floats, threads)
    tables = LossyTables.from_tensors({k: v for k, v in t.items() if k.startswith("tables.")})
    refiner = None
    if effort > 1:
        import torch

        from .lossy_model import LossyModel
        from .lossy_refine import LatentRefiner
        model = LossyModel(transforms.cfg)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in floats.items()})
        # its rate is the Gaussian's, the fitted tables' shifts aside: weighing them measured
        # the same files (Kodak 5 and 23 at betas 800, 229, 35: D + beta R 0.004% apart)
        refiner = LatentRefiner(model, steps=LOSSY_EFFORTS[effort], threads=threads)
    return LossyCoder(transforms, tables, model_id=file_sha256(weights)[:16], threads=threads, loop_filter=loop_filter,
                      refiner=refiner)
