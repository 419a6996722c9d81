"""Growing a trained lossy model's latent: more channels of y, the trained ones kept.

Why: a latent of ``m`` channels at 1/16 of the resolution holds ``m`` numbers for every
16x16x3 = 768 pixel values, and that ratio, not beta, bounds the picture's quality at high
rates.  The best linear map of Kodak's 16x16x3 blocks onto 96 numbers and back (their
principal components, unquantized) reconstructs them at 30.8 dB; onto 192, 36.9 dB; onto
256, 41.4 dB (``python -m bench.latent_ceiling``).  A 96-channel model stalled near 31 dB
however high its rate.  Widening an
already trained model buys the capacity without throwing its training away.

The new channels start silent for the picture: the synthesis reads them through zero
weights, so the widened model draws exactly what the old one drew.  The analysis writes them
with weights of the trained rows' size, so they round to non-zero values and the synthesis's
new weights get gradients from the first step.  Their predicted means start at zero and
their widths at about their spread.

>>> import torch
>>> small = LossyModel(LossyConfig(n=8, m=8)).eval()
>>> big = widened(small, 12).eval()
>>> x = torch.rand(1, 3, 64, 64) * 255
>>> y, _ = small.analysis(x, 2)
>>> y_big, _ = big.analysis(x, 2)
>>> bool(torch.equal(y_big[:, :8], y))
True
>>> y_hat = torch.cat([y.round(), y_big[:, 8:].round()], 1)
>>> bool(torch.allclose(big.synthesis(y_hat, 2), small.synthesis(y.round(), 2), atol=1e-4))
True
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from .lossy_model import LossyConfig, LossyModel


def gains_at(log_gains: torch.Tensor, betas: list[float], new_betas: list[float]) -> torch.Tensor:
    """Per-beta log-gains [k, ch] at other betas: linear in log beta between the two nearest
    trained betas, and beyond the ends along the end segments (each channel on its own).

    >>> g = torch.tensor([[0.0], [1.0]])
    >>> gains_at(g, [100.0, 10.0], [1000.0, 100.0, 10.0 ** 1.5, 1.0]).flatten().tolist()
    [-1.0, 0.0, 0.5, 2.0]
    """
    logs = [math.log(b) for b in betas]      # falling, as betas are listed
    rows = []
    for b in new_betas:
        lb = math.log(b)
        i = 0                                 # the segment: between, or the end one beyond
        while i < len(logs) - 2 and lb < logs[i + 1]:
            i += 1
        t = (logs[i] - lb) / (logs[i] - logs[i + 1])
        rows.append((1 - t) * log_gains[i] + t * log_gains[i + 1])
    return torch.stack(rows)


def widened(model: LossyModel, m: int, seed: int = 0, betas: list[float] | None = None) -> LossyModel:
    """A new model with ``m`` channels of y (``m`` >= the model's), its trained weights kept;
    with ``betas``, trained at those betas instead, each starting from the gains that
    :func:`gains_at` gives it."""
    old_m = model.cfg.m
    if m < old_m:
        raise ValueError(f"cannot narrow a latent of {old_m} channels to {m}")
    torch.manual_seed(seed)
    betas = list(betas or model.cfg.betas)
    # the hyper-synthesis keeps its width: its last layer, at 1/16 of the resolution, is
    # the integer part of decoding, and 3m/2 inside would make it (m/old_m)^2 as costly
    big = LossyModel(replace(model.cfg, m=m, hs_mid=model.cfg.hs_width, betas=betas))
    old = dict(model.state_dict())
    for key in ("log_gain_y", "log_gain_y_inv", "log_gain_z"):
        old[key] = gains_at(old[key], model.cfg.betas, betas)
    new = big.state_dict()
    out = {}
    for key, fresh in new.items():
        was = old[key]
        if was.shape == fresh.shape:
            out[key] = was.clone()
            continue
        t = torch.zeros_like(fresh)
        if key == "g_a.6.weight":            # new output rows at the trained rows' spread
            t[:old_m] = was
            t[old_m:] = fresh[old_m:] * (was.std() / fresh[old_m:].std())
        elif key == "g_a.6.bias":
            t[:old_m] = was
        elif key == "g_s.0.weight":          # new input rows zero: the picture is unchanged
            t[:old_m] = was
        elif key == "h_a.0.weight":          # the hyper-analysis starts blind to them
            t[:, :old_m] = was
        elif key == "h_s.4.weight":          # [mean | width] halves, each widened
            t[:old_m] = was[:old_m]
            t[m:m + old_m] = was[old_m:]
        elif key == "h_s.4.bias":
            t[:old_m] = was[:old_m]
            t[m:m + old_m] = was[old_m:]
            t[m + old_m:] = math.log(math.expm1(1.0))   # softplus -> a width of 1
        elif key in ("log_gain_y", "log_gain_y_inv"):  # each beta's gain: the mean of its row
            t[:, :old_m] = was
            t[:, old_m:] = was.mean(1, keepdim=True)
        else:
            raise AssertionError(f"no rule to widen {key} {tuple(was.shape)} -> {tuple(fresh.shape)}")
        out[key] = t
    big.load_state_dict(out)
    return big
