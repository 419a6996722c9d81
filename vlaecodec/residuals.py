"""The second adaptation layer: every subpixel's interval mixed with an adaptive histogram of
how far the image strays from a plain predictor, learned as the image is coded.

The network is the same for every image; an image has its own statistics.  Smooth
gradients, dithered renders and clean photos are far more predictable than the photos the
network learned from, and JPEG-XL wins on them by fitting its contexts to each image.  So,
in files with the *residuals* flag (docs/FORMAT.md), each subpixel is coded with

    Q(b) = floor(((2**12 - w) * Q_rep(b) + w * Q_hist(b)) / 2**12)

where Q_rep is the interval of :mod:`vlaecodec.wave_coder` (the network mixed with a repeated
neighbour, :mod:`vlaecodec.adaptive`) and Q_hist the same kind of 24-bit CDF from a histogram
of residuals: symbol bin minus the MED prediction from the left, upper and upper-left bins
(LOCO-I's median edge detector), one histogram per (channel, local activity, sign of the
previous channel's residual at the same pixel: colour channels stray together).  Both rise by
at least one slot per bin, so Q does too.  The weight w is, per context, the one of
:data:`WEIGHTS` whose code length on the subpixels seen so far is the smallest, as in the
first layer.  Counts start at 1 and grow by :data:`STEP` per symbol, halved when a histogram
holds more than :data:`HALVE_ABOVE`; they live in Fenwick trees, so a cumulative count costs
a few additions.  Encoder and decoder update the same integers in the same order.

With the default model it took the graphics crops from 1.5813 to 1.4409 bits per subpixel,
photos-wall from 2.2184 to 2.1262 and Kodak from 3.0237 to 3.0065 (``python -m bench
--datasets graphics-crops photos-wall kodak --sizes kodak=24 photos-wall=18
graphics-crops=16 --no-archive --models default``, against 0.7's results), at no time the
speed bench can see.

>>> state = Residuals(3, 256)
>>> pred, ctx = predict(np.zeros((3, 2, 2), np.int64), 0, 1, 1, 1)
>>> lo, hsum = span(state.tree, ctx, pred, 256)
>>> hist_slot(state.tree, ctx, 0, pred, 256, lo, hsum), hist_slot(state.tree, ctx, 256, pred, 256, lo, hsum)
(0, 16777216)
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .adaptive import HALVE_AT, HEAD_START, _neg_log2
from .rans import PRECISION

WEIGHTS = np.array([0, 256, 512, 1024, 2048, 3072, 3584, 3968], np.int64)   # of 2**12
ACTIVITY = 8            # activity classes: |l - ul| + |u - ul| + |ur - u| <= 0, 1, 3, 7, ..., above
SIGNS = 3               # the previous channel's residual: 0 (or none: channel 0), above, below
STEP = 16               # what a symbol adds to its residual's count (each starts at 1)
HALVE_ABOVE = 1 << 16   # a histogram's total count above this: every count halved (at least 1)


class Residuals:
    """The state of one band's histograms: counts and their Fenwick trees per context
    (channel x activity), over residuals -(bins - 1) .. bins - 1, and the code lengths of
    each weight per context."""

    def __init__(self, channels: int, bins: int):
        n = 2 * bins - 1
        contexts = channels * ACTIVITY * SIGNS
        self.counts = np.ones((contexts, n), np.int64)
        self.tree = np.zeros((contexts, n + 1), np.int64)
        for k in range(contexts):
            _rebuild(self.counts[k], self.tree[k])
        self.totals = np.full(contexts, n, np.int64)
        self.lengths = np.full((contexts, len(WEIGHTS)), HEAD_START, np.int64)
        self.lengths[:, 0] = 0
        self.seen = np.zeros(contexts, np.int64)


@njit(cache=True, nogil=True)
def _rebuild(counts, tree):
    """The Fenwick tree of ``counts`` (tree[i] sums counts[i - lowbit(i) .. i - 1])."""
    n = counts.shape[0]
    tree[0] = 0
    for i in range(1, n + 1):
        tree[i] = counts[i - 1]
    for i in range(1, n + 1):
        j = i + (i & -i)
        if j <= n:
            tree[j] += tree[i]


@njit(cache=True, nogil=True, inline="always")
def _prefix(tree, ctx, i):
    """Sum of the first i counts of context ctx."""
    s = 0
    while i > 0:
        s += tree[ctx, i]
        i -= i & -i
    return s


@njit(cache=True, nogil=True, inline="always")
def _med(x, c, y, xx, width):
    """(MED prediction in bins, activity class) of subpixel (c, y, xx) of x [C, H, W] (values
    on their bins' values, ``width`` values a bin), from its neighbours in the same channel; a
    missing one is the left (or the upper) one, 0 at the top-left corner."""
    W = x.shape[2]
    left = x[c, y, xx - 1] // width if xx > 0 else (x[c, y - 1, xx] // width if y > 0 else 0)
    up = x[c, y - 1, xx] // width if y > 0 else left
    up_left = x[c, y - 1, xx - 1] // width if (y > 0 and xx > 0) else up
    up_right = x[c, y - 1, xx + 1] // width if (y > 0 and xx + 1 < W) else up
    lo, hi = min(left, up), max(left, up)
    pred = min(max(left + up - up_left, lo), hi)
    activity = abs(left - up_left) + abs(up - up_left) + abs(up_right - up)
    a = 0
    while a < ACTIVITY - 1 and activity > (1 << a) - 1:
        a += 1
    return pred, a


@njit(cache=True, nogil=True, inline="always")
def predict(x, c, y, xx, width):
    """(MED prediction in bins, context) of subpixel (c, y, xx), whose channels below c are
    decoded: the context is (channel, activity class, sign of channel c - 1's residual)."""
    pred, a = _med(x, c, y, xx, width)
    sign = 0
    if c > 0:
        prev_pred, _ = _med(x, c - 1, y, xx, width)
        r = x[c - 1, y, xx] // width - prev_pred
        sign = 0 if r == 0 else (1 if r > 0 else 2)
    return pred, (c * ACTIVITY + a) * SIGNS + sign


@njit(cache=True, nogil=True, inline="always")
def span(tree, ctx, pred, bins):
    """(count below the first bin, count over all bins) of context ctx's histogram, shifted
    to a prediction: the residuals that a bin 0 .. bins - 1 can have."""
    lo = _prefix(tree, ctx, bins - 1 - pred)
    return lo, _prefix(tree, ctx, 2 * bins - 1 - pred) - lo


@njit(cache=True, nogil=True, inline="always")
def hist_slot(tree, ctx, b, pred, bins, lo, hsum):
    """Q_hist(b): floor(H(b) * (2**24 - bins) / H(bins)) + b, H the histogram's cumulative
    count below bin b."""
    return ((_prefix(tree, ctx, b - pred + bins - 1) - lo) * ((1 << PRECISION) - bins)) // hsum + b


@njit(cache=True, nogil=True, inline="always")
def mix(q_rep, q_hist, w):
    return ((4096 - w) * q_rep + w * q_hist) >> 12


@njit(cache=True, nogil=True, inline="always")
def choose_weight(lengths, ctx):
    """The weight with the shortest code length so far (the first of equals)."""
    best = 0
    for j in range(1, lengths.shape[1]):
        if lengths[ctx, j] < lengths[ctx, best]:
            best = j
    return WEIGHTS[best]


@njit(cache=True, nogil=True, inline="always")
def learn(counts, tree, totals, lengths, seen, log2, ctx, b, pred, bins, rep_width, hist_width):
    """After a symbol: charge every weight what it would have cost (its two layers' widths of
    2**24), then count the residual."""
    for j in range(WEIGHTS.shape[0]):
        w = WEIGHTS[j]
        lengths[ctx, j] += _neg_log2((4096 - w) * rep_width + w * hist_width, log2)
    seen[ctx] += 1
    if seen[ctx] >= HALVE_AT:
        seen[ctx] = HALVE_AT // 2
        for j in range(WEIGHTS.shape[0]):
            lengths[ctx, j] >>= 1
    r = b - pred + bins - 1
    counts[ctx, r] += STEP
    totals[ctx] += STEP
    i = r + 1
    n = counts.shape[1]
    while i <= n:
        tree[ctx, i] += STEP
        i += i & -i
    if totals[ctx] > HALVE_ABOVE:
        total = 0
        for k in range(n):
            counts[ctx, k] = (counts[ctx, k] + 1) >> 1
            total += counts[ctx, k]
        totals[ctx] = total
        _rebuild(counts[ctx], tree[ctx])
