"""The lossy model's configuration and the constants its coder shares with it, without torch
(coding runs on numpy: :mod:`vlaecodec.lossy_transforms`).

>>> beta_level([800.0, 100.0, 10.0], 100.0), beta_level([800.0, 100.0, 10.0], 1e9)
(1.0, 0.0)
>>> black_squares(2, 3).astype(int).tolist()
[[1, 0, 1], [0, 1, 0]]
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

# Betas the network is trained at (D + beta*R; D = MSE on 0..255, R = bits/pixel), spaced
# evenly in log from 800 to 10.  A beta is 1 / lambda of the usual lambda * 255^2 * MSE + R
# (MSE on 0..1): the span of the published hyperprior families (lambda 0.0018 to 0.0932, about
# 0.1 to 2 bits per pixel on Kodak), widened a little at both ends.
BETAS = [800.0, 428.0, 229.0, 122.0, 65.4, 35.0, 18.7, 10.0]
SCALE_MIN = 0.11                      # smallest Gaussian width of y (CompressAI's bound)


@dataclass
class LossyConfig:
    n: int = 96                        # width of the transforms
    m: int = 128                       # channels of y
    betas: list[float] = field(default_factory=lambda: list(BETAS))
    hs_mid: int = 0                    # width inside the hyper-synthesis (0: 3m/2)
    context: int = 0                   # width of the checkerboard context network (0: none)

    @property
    def hs_width(self) -> int:
        return self.hs_mid or self.m * 3 // 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LossyConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def beta_level(betas: list[float], beta: float) -> float:
    """A beta as a fractional index into ``betas`` (falling; log-linear between them)."""
    lb = math.log(beta)
    logs = [math.log(b) for b in betas]
    if lb >= logs[0]:
        return 0.0
    if lb <= logs[-1]:
        return float(len(betas) - 1)
    for i in range(len(betas) - 1):
        if logs[i] >= lb >= logs[i + 1]:
            return i + (logs[i] - lb) / (logs[i] - logs[i + 1])
    raise AssertionError


def beta_row(betas: list[float], beta: float) -> int:
    """The trained beta nearest to ``beta`` in log scale, as an index into ``betas`` (falling):
    beta is compared with the geometric midpoints of neighbouring betas, each computed by one
    IEEE multiplication and square root, so encoder and decoder agree on every machine (a
    midpoint itself goes to the smaller beta).  Picks per-beta integer data, such as a
    model's table shifts (``LossyTables.y_shift``).

    >>> [beta_row([800.0, 200.0, 50.0], b) for b in (1000.0, 400.1, 400.0, 100.1, 100.0, 1.0)]
    [0, 0, 1, 1, 2, 2]
    """
    return sum(1 for hi, lo in zip(betas, betas[1:]) if beta <= math.sqrt(hi * lo))


def black_squares(h: int, w: int) -> np.ndarray:
    """[h, w] bool: the checkerboard's black squares ((row + column) even), the half of y
    coded first where the model has a context network."""
    return (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0
