"""Adaptation inside the coder: the network's distribution mixed with a guess that the
subpixel repeats a neighbour, weighted by what has worked so far in the image.

Flat areas, gradients of exact steps and repeated patterns (graphics, screenshots, clean
renders) are full of subpixels equal to a neighbour; the network, trained mostly on photos,
spreads its mass over a few values there.  Version 4 files code each subpixel with

    p(v) = (1 - a) * p_net(v) + a * [v == candidate]

where the candidate is the left or the upper neighbour and ``a`` one of :data:`WEIGHTS` (in
2**-12): for each context (channel, which neighbours are equal, whether the previous channel
repeated), the (neighbour, weight) option whose code length on the subpixels seen so far in
that context is the smallest.  Encoder and decoder keep the same integer code lengths in the
same order, so they choose the same option; on a photo the choice settles on a = 0 (the
network alone) and costs little, on a flat graphic it settles near 1.

Measured before it was built, on 256x256 corners of the held-out graphics (bits per subpixel
of the default network's intervals, alone -> mixed): 2.55 -> 1.20, 0.90 -> 0.38, 1.82 -> 0.79,
2.93 -> 1.49 (a single fixed neighbour rule instead of the choice of two: 1.20, 0.38, 0.81,
1.74); on the held-out photos 1-6%.

>>> int(WEIGHTS[0]), int(WEIGHTS[-1]), len(WEIGHTS) == N_WEIGHTS
(0, 4095, True)
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros   # LLVM's ctlz

from .fixedpoint import checked_round

WEIGHT_BITS = 12
WEIGHTS = np.array([0, 64, 256, 512, 1024, 2048, 3072, 3584, 3840, 3968, 4032, 4080, 4092, 4095],
                   np.int64)           # a * 2**12: from the network alone to a near-certain repeat
N_WEIGHTS = len(WEIGHTS)
CONTEXTS = 3 * 9 * 2                   # channel x neighbour pattern (8, or 9: at an edge) x repeat
OPTIONS = 2 * N_WEIGHTS                # the left or the upper neighbour, at each weight
LOG_BITS = 16                          # code lengths in 2**-16 bits
_MANTISSA_BITS = 10
# the network alone starts 12 bits ahead, so that a switch needs evidence: on 100 CIFAR-10
# test images (32x32, little to learn from) 0, 4, 12 and 24 bits gave 3.9272, 3.9057, 3.9009
# and 3.9030 bits/dim (constriction's version 3 files: 3.9063)
HEAD_START = 12 << LOG_BITS
HALVE_AT = 4096                        # a context's lengths are halved every 2048 subpixels past
                                       # this, so the choice follows the image as it changes


@lru_cache(maxsize=1)
def log2_table() -> np.ndarray:
    """round(2**16 * log2(1 + i/1024)), i = 0 .. 1023 (each checked to be far from a
    rounding boundary, so every libm gives the same table)."""
    n = 1 << _MANTISSA_BITS
    return np.array([checked_round(math.log2(1 + i / n) * (1 << LOG_BITS)) for i in range(n)], np.int64)


class Adaptation:
    """The state of one band's adaptation: code lengths per (context, option) and counts.
    Option k is (neighbour k // N_WEIGHTS: 0 left, 1 up; weight WEIGHTS[k % N_WEIGHTS])."""

    def __init__(self):
        self.lengths = np.full((CONTEXTS, OPTIONS), HEAD_START, np.int64)
        self.lengths[:, 0] = 0
        self.counts = np.zeros(CONTEXTS, np.int64)
        self.log2 = log2_table()


@njit(cache=True, nogil=True, inline="always")
def candidate(x, c, y, xx):
    """(the rule's candidate value or -1, neighbour pattern 0..8) of subpixel (c, y, xx) of
    the image x [C,H,W], from its decoded neighbours left, up and up-left."""
    if y == 0 and xx == 0:
        return -1, 8
    if y == 0:
        return x[c, y, xx - 1], 8
    if xx == 0:
        return x[c, y - 1, xx], 8
    left, up, up_left = x[c, y, xx - 1], x[c, y - 1, xx], x[c, y - 1, xx - 1]
    pattern = 4 * (left == up) + 2 * (up == up_left) + (left == up_left)
    return (left if up == up_left else up), pattern


@njit(cache=True, nogil=True, inline="always")
def context(x, c, y, xx):
    """(left value, up value, context) of subpixel (c, y, xx): a missing neighbour is the
    other one (both -1 at the top-left corner)."""
    cand, pattern = candidate(x, c, y, xx)
    repeat = 0
    if c > 0:
        prev, _ = candidate(x, c - 1, y, xx)
        repeat = 1 if prev == x[c - 1, y, xx] else 0
    left = x[c, y, xx - 1] if xx > 0 else cand
    up = x[c, y - 1, xx] if y > 0 else cand
    return left, up, (c * 9 + pattern) * 2 + repeat


@njit(cache=True, nogil=True, inline="always")
def choose(lengths, ctx, cand):
    """The option with the shortest code length so far (the first of equals); 0 (the
    network alone) without a candidate."""
    if cand < 0:
        return 0
    best = 0
    for j in range(1, lengths.shape[1]):
        if lengths[ctx, j] < lengths[ctx, best]:
            best = j
    return best


@njit(cache=True, nogil=True, inline="always")
def _neg_log2(g, log2):
    """-log2(g) + 64 in 2**-16 bits, for an integer 0 <= g < 2**63 (0 counts as 1): the
    exponent from the position of g's top bit (one instruction), the fraction from the table
    by g's next 10 bits."""
    if g < 1:
        g = 1
    e = 63 - leading_zeros(np.uint64(g))       # floor(log2(g))
    if e >= 10:
        m = (g >> (e - 10)) & 1023
    else:
        m = (g << (10 - e)) & 1023
    return ((64 - e) << 16) - log2[m]


@njit(cache=True, nogil=True, inline="always")
def update(lengths, counts, log2, weights, ctx, hit_left, hit_up, has, f_net, total):
    """Charge every option of the context what it would have cost to code this subpixel:
    -log2((2**12 - a) * f_net + a * hit * total) (plus a constant), where f_net / total is
    the network's probability of the symbol and hit whether it repeats the option's
    neighbour.  No candidate (``has`` false): nothing to learn."""
    if not has:
        return
    n = weights.shape[0]
    if hit_left == hit_up:       # both neighbours alike (most subpixels): one length for both
        for j in range(n):
            a = weights[j]
            g = _neg_log2(((1 << 12) - a) * f_net + a * hit_left * total, log2)
            lengths[ctx, j] += g
            lengths[ctx, n + j] += g
    else:
        for j in range(n):
            a = weights[j]
            rest = ((1 << 12) - a) * f_net
            lengths[ctx, j] += _neg_log2(rest + a * hit_left * total, log2)
            lengths[ctx, n + j] += _neg_log2(rest + a * hit_up * total, log2)
    counts[ctx] += 1
    if counts[ctx] >= HALVE_AT:
        counts[ctx] = HALVE_AT // 2
        for j in range(2 * n):
            lengths[ctx, j] >>= 1
