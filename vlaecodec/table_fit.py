"""A lossy model's tables fitted to the symbols its coder sends (run once, at export).

A lossy model's tables start as zero-mean Gaussians, one per width (``LossyTables.from_model``):
the shape its training's rate assumed.  The symbols the coder sends are not quite Gaussian,
and some channels' widths run wide or narrow at some betas.  So at export the coder quantizes
training crops at every trained beta, and

1. table k becomes the histogram of the symbols coded with it, made symmetric and smoothed
   by ``prior`` pseudo-counts spread as the Gaussian;
2. each (trained beta, channel) takes the shift of its table indices, within +-``span``, that
   codes its symbols in the fewest bits under those tables;
3. the tables are fitted again on the shifted indices;
4. z gets one table per trained beta and channel: the histogram of its symbols at that beta,
   smoothed by ``z_prior`` pseudo-counts spread as the model's density (which serves every
   beta at once, so it fits none of them exactly).

All land in the model file as integers (``LossyTables.y_freqs``, ``.y_shift``, ``.z_freqs``):
the decoder reads them and never fits anything.

>>> import torch
>>> from vlaecodec.lossy_model import LossyConfig, LossyModel
>>> from vlaecodec.lossy_coder import LossyCoder, LossyTables
>>> torch.manual_seed(0) and None
>>> m = LossyModel(LossyConfig(n=8, m=8, betas=[400.0, 100.0])).eval()
>>> coder = LossyCoder(m, LossyTables.from_model(m), model_id="00" * 8)
>>> crops = list(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
>>> samples = collect(coder, crops)
>>> tables, report = fit(coder.tables, samples)
>>> tables.y_shift.shape, tables.y_freqs.shape == coder.tables.y_freqs.shape, tables.z_freqs.shape
((2, 8), True, (2, 8, 97))
>>> report["fitted_bits"] <= report["gaussian_bits"]
True
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .lossy_coder import Y_RADIUS_MAX, Z_RADIUS, LossyCoder, LossyTables, _freqs

OUT_OF_RANGE_BITS = 64.0   # a shift that would clamp a symbol (a visible error) is never taken


@dataclasses.dataclass
class Sample:
    """One crop at one trained beta: y's unshifted table indices and symbols [m, N], and z's
    symbols [n, M] (offset to 0..2 Z_RADIUS)."""
    row: int
    index: np.ndarray
    sym: np.ndarray
    z: np.ndarray


def collect(coder: LossyCoder, crops: list[np.ndarray]) -> list[Sample]:
    """The symbols and (unshifted) table indices of each uint8 [H, W, 3] crop at each of the
    coder's trained betas, as the encoder makes them at effort 1."""
    if coder.tables.y_shift.size:
        raise ValueError("collect the symbols with the model's unshifted tables")
    out = []
    for crop in crops:
        features = coder._features(crop)
        for row, beta in enumerate(coder.model.cfg.betas):
            y, z = coder.model.latents(features, coder.model.level(beta))
            z_hat = np.clip(np.round(z), -Z_RADIUS, Z_RADIUS).astype(np.int64)
            sym, _, index = coder.quantize(y, z_hat, row)
            m, n = len(sym), len(z_hat)
            out.append(Sample(row, index.reshape(m, -1).astype(np.int16), sym.reshape(m, -1).astype(np.int16),
                              (z_hat.reshape(n, -1) + Z_RADIUS).astype(np.int16)))
    return out


def fit(tables: LossyTables, samples: list[Sample], prior: float = 100.0, span: int = 16,
        rounds: int = 1, z_prior: float = 20.0) -> tuple[LossyTables, dict]:
    """(``tables`` with fitted y tables and shifts and z tables, a report of the samples' bits
    under the model's tables and under the fitted ones): y's tables, then ``rounds`` times
    shifts and tables again; z's tables."""
    rows = 1 + max(s.row for s in samples)
    m = len(samples[0].sym)
    gauss = _probabilities(tables.y_freqs)
    shift = np.zeros((rows, m), np.int64)
    probs = _fitted(samples, shift, gauss, tables.y_radius, prior)
    for _ in range(rounds):
        shift = _best_shifts(samples, probs, tables.y_radius, rows, m, span)
        probs = _fitted(samples, shift, gauss, tables.y_radius, prior)
    freqs = np.zeros_like(tables.y_freqs)
    for k, r in enumerate(tables.y_radius):
        inside = slice(Y_RADIUS_MAX - r, Y_RADIUS_MAX + r + 1)
        freqs[k, inside] = _freqs(probs[k, inside])
    z_freqs = _z_fitted(samples, tables.z_freqs, rows, z_prior)
    fitted = dataclasses.replace(tables, y_freqs=freqs, y_shift=shift, z_freqs=z_freqs)
    report = {"gaussian_bits": _bits(samples, np.zeros_like(shift), _probabilities(tables.y_freqs), tables.y_radius),
              "fitted_bits": _bits(samples, shift, _probabilities(freqs), tables.y_radius),
              "z_bits": _z_bits(samples, np.repeat(tables.z_freqs[None], rows, 0)),
              "z_fitted_bits": _z_bits(samples, z_freqs),
              "shifts": {str(v): int(c) for v, c in zip(*np.unique(shift, return_counts=True))}}
    return fitted, report


def _z_fitted(samples: list[Sample], density: np.ndarray, rows: int, prior: float) -> np.ndarray:
    """z's integer tables [rows, n, symbols]: each channel's histogram at each trained beta
    plus ``prior`` pseudo-counts of the model's density."""
    counts = np.zeros((rows,) + density.shape)
    for s in samples:
        for c, v in enumerate(s.z):
            counts[s.row, c] += np.bincount(v, minlength=density.shape[1])
    f = counts + prior * _probabilities(density)[None]
    return np.stack([[_freqs(p) for p in row] for row in f / f.sum(2, keepdims=True)])


def _z_bits(samples: list[Sample], freqs: np.ndarray) -> float:
    probs = freqs / freqs.sum(2, keepdims=True)
    return float(sum(-np.log2(probs[s.row, np.arange(len(s.z))[:, None], s.z]).sum() for s in samples))


def _probabilities(freqs: np.ndarray) -> np.ndarray:
    return freqs / freqs.sum(1, keepdims=True)


def _shifted(s: Sample, shift: np.ndarray, tables: int) -> tuple[np.ndarray, np.ndarray]:
    """(table index, symbol offset into a table row) of a sample under ``shift``."""
    k = np.clip(s.index + shift[s.row][:, None], 0, tables - 1)
    return k, s.sym.astype(np.int64) + Y_RADIUS_MAX


def _fitted(samples: list[Sample], shift: np.ndarray, gauss: np.ndarray, radius: np.ndarray,
            prior: float) -> np.ndarray:
    """Each table's symmetric histogram of the symbols coded with it, plus ``prior``
    pseudo-counts of its Gaussian, normalised over its range."""
    counts = np.zeros(gauss.shape)
    for s in samples:
        k, v = _shifted(s, shift, len(gauss))
        v = np.clip(v, Y_RADIUS_MAX - radius[k], Y_RADIUS_MAX + radius[k])   # as the encoder clamps
        np.add.at(counts, (k.ravel(), v.ravel()), 1)
    f = counts + counts[:, ::-1] + 2 * prior * gauss
    return f / f.sum(1, keepdims=True)


def _cost(probs: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Bits of each (table, symbol); :data:`OUT_OF_RANGE_BITS` outside the table's range."""
    with np.errstate(divide="ignore"):
        bits = -np.log2(probs)
    sym = np.arange(probs.shape[1]) - Y_RADIUS_MAX
    return np.where(np.abs(sym)[None, :] <= radius[:, None], bits, OUT_OF_RANGE_BITS)


def _best_shifts(samples, probs, radius, rows, m, span) -> np.ndarray:
    cost = _cost(probs, radius)
    shifts = np.arange(-span, span + 1)
    total = np.zeros((rows, m, len(shifts)))
    for s in samples:
        v = s.sym.astype(np.int64) + Y_RADIUS_MAX
        for j, d in enumerate(shifts):
            k = np.clip(s.index + d, 0, len(probs) - 1)
            total[s.row, :, j] += cost[k, v].sum(1)
    return shifts[total.argmin(2)]   # ties: the most negative, i.e. the narrowest table


def _bits(samples, shift, probs, radius) -> float:
    cost = _cost(probs, radius)
    return float(sum(cost[_shifted(s, shift, len(probs))].sum() for s in samples))
