"""A per-image loop filter for lossy pictures: small linear filters fitted by the encoder
to the picture the decoder will see, sent in the file, applied in exact integer arithmetic.

The synthesis transform is the same for every image; each decoded picture is off in its own
way (a little blur, a colour cast, ringing at one kind of edge).  As the adaptive loop
filter of video codecs does, the encoder fits, by least squares, a correction of each
decoded subpixel from its neighbourhood and sends the coefficients:

    out[p, c] = clip(pic[p, c] + round(sum_j F[p, j] * q[class(p), j, c] / 2**SHIFT), 0, 255)

F holds, for every channel i of the picture and each of six directions d (a 5x5 diamond),
the neighbours' differences from the pixel, clipped, summed over the two sides:
clip(pic[p + d, i] - pic[p, i]) + clip(pic[p - d, i] - pic[p, i]) (point-symmetric, so the
filter moves no edge; clipped, as in VVC's adaptive loop filter, so that an edge's far side
does not smear into it), then the centred value pic[p, i] - 128, and a constant 128.  A
filter of kind 0 clips at +-8; one of kind 1 has each difference clipped at four levels, a
feature for each (:data:`CLIPS`): more coefficients, a closer fit.
Pixels fall into classes by their local activity and their brightness (ranks in the
picture, so the classes hold about the same number of pixels).  Everything the decoder
computes is an integer function of the decoded picture and the sent integers q, so it is
exact on every machine.

The encoder tries both kinds and the class layouts of :data:`CLASS_CHOICES` (none, or up to
8 activity groups times 2 brightness groups) and keeps the filter that lowers the model's
own objective, MSE / beta + bits per pixel, the most, the coefficients' bits counted (kind
1's 228 coefficients a class pay on a Kodak photo, not on a 128x128 crop).  What it buys on
Kodak is measured by ``python -m bench.rd --unfiltered`` (README, CHANGELOG).

>>> rng = np.random.default_rng(0)
>>> target = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
>>> pic = np.clip(target.astype(int) + 6, 0, 255).astype(np.uint8)   # a cast of +6
>>> q = fit(pic, target, (1, 1))
>>> bool(np.abs(apply(pic, q, (1, 1)).astype(int) - target).mean() < np.abs(pic.astype(int) - target).mean())
True
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from threadpoolctl import threadpool_limits

from .workers import workers

SHIFT = 8                       # coefficients are integers at 2**-8
LIMIT = 2047                    # ... within +-2047 (the encoder clamps)
RADIUS = 2 * LIMIT + 1          # the symbols (differences of coefficients) within +-RADIUS
BAND_PIXELS = 1 << 14           # pixels per band of work (not a format constant)
# the classes a file may use, by index: (activity groups, brightness groups); (0, 0): no filter
CLASS_CHOICES = ((0, 0), (1, 1), (2, 1), (4, 1), (8, 1), (2, 2), (4, 2), (8, 2))
DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))   # a 5x5 diamond
# Each kind of filter (each picture's filter names its kind: docs/FORMAT.md) has its clip
# levels, how far a neighbour may count from the centre, each level a feature of its own:
# kind 0 (vlaecodec 0.9 on) one level; kind 1 (0.14 on) four, so that a filter weighs small
# differences (texture, noise) apart from large ones (edges), and reads the large ones almost
# whole (what it buys on Kodak: CHANGELOG 0.14, ``python -m bench.rd``).
CLIPS = ((8,), (1, 4, 16, 64))
KINDS = (0, 1)                  # the kinds a new file's filters may be of, each picture's its own
REACH = max(max(abs(dy), abs(dx)) for dy, dx in DIRECTIONS)   # rows and columns of padding


def n_features(channels: int, kind: int = 0) -> int:
    return (len(DIRECTIONS) * len(CLIPS[kind]) + 1) * channels + 1


def features(pic: np.ndarray, rows: tuple[int, int] | None = None, kind: int = 0) -> np.ndarray:
    """F [pixels, n_features] of a uint8 picture [H, W, C] (or of its rows [y0, y1)) for a
    filter of ``kind``; edges repeat: per direction, per clip level, per channel, then the
    centred values and the constant.  Integers (|F| <= 128) held in float64, for BLAS."""
    return feature_planes(pic, rows, kind).T.astype(np.float64)


def feature_planes(pic: np.ndarray, rows: tuple[int, int] | None = None, kind: int = 0,
                   dtype=np.int16) -> np.ndarray:
    """:func:`features` transposed, [n_features, pixels], as ``dtype`` (small integers,
    exact in any of int16, float32, float64): each feature a plane of its own, written whole
    (a feature at a time across the pixels, not a pixel's features side by side, which would
    write every cache line once per feature)."""
    H, W, C = pic.shape
    clips = CLIPS[kind]
    y0, y1 = rows or (0, H)
    r = REACH
    lo, hi = max(y0 - r, 0), min(y1 + r, H)
    p = np.pad(pic[lo:hi], ((r - (y0 - lo), r - (hi - y1)), (r, r), (0, 0)), mode="edge")
    p = np.ascontiguousarray(p.transpose(2, 0, 1), np.int16)
    h = y1 - y0
    centre = p[:, r:r + h, r:r + W]
    nd, nl = len(DIRECTIONS), len(clips)
    # every direction's two differences side by side [direction, side, C, h, W], so that each
    # clip level is one call over all of them
    diff = np.empty((nd, 2, C, h, W), np.int16)
    for j, (dy, dx) in enumerate(DIRECTIONS):
        np.subtract(p[:, r + dy:r + dy + h, r + dx:r + dx + W], centre, out=diff[j, 0])
        np.subtract(p[:, r - dy:r - dy + h, r - dx:r - dx + W], centre, out=diff[j, 1])
    G = np.empty((n_features(C, kind), h, W), dtype)
    clipped = np.empty_like(diff)
    for i, clip in enumerate(clips):
        np.clip(diff, -clip, clip, out=clipped)
        np.add(clipped[:, 0], clipped[:, 1], out=G[:nd * nl * C].reshape(nd, nl, C, h, W)[:, i])
    G[nd * nl * C:-1] = centre - 128
    G[-1] = 128
    return G.reshape(len(G), h * W)


def feature_bounds(channels: int, kind: int = 0) -> np.ndarray:
    """The largest magnitude each feature can take: 2 clip for a direction's (two clipped
    differences), 128 for the centred values and the constant."""
    clips = np.repeat(np.array(CLIPS[kind]), channels)
    return np.concatenate([np.tile(2 * clips, len(DIRECTIONS)), np.full(channels + 1, 128)])


def _exact_dtype(q: np.ndarray, channels: int, kind: int):
    """float32 where no sum F q can reach 2**24 (every product and partial sum an integer
    that float32 holds exactly, in any order: the same integers as float64, at half the
    memory traffic and twice BLAS's speed); float64 otherwise (|q| < 2**15 keeps every sum
    below 2**53)."""
    reach = (feature_bounds(channels, kind)[None, :, None] * np.abs(q)).sum(axis=1)
    return np.float32 if q.size == 0 or reach.max() < 2 ** 24 else np.float64


def _bands(H: int, W: int):
    """Rows [y0, y1) of about BAND_PIXELS pixels each: the features of one band stay in cache."""
    step = max(1, BAND_PIXELS // max(W, 1))
    return [(y, min(H, y + step)) for y in range(0, H, step)]


def _ranks(values: np.ndarray, k: int) -> np.ndarray:
    """Each value's group 0..k-1 among k groups of about equal size: the number of bounds at
    or below it, the bounds being the values at ranks n*j/k (integers: exact everywhere).
    For k dividing K, the groups are those of K divided by K/k (the bounds are a subset)."""
    if k <= 1:
        return np.zeros(values.size, np.int32)
    ranks = [values.size * j // k for j in range(1, k)]
    bounds = np.partition(values, ranks)[ranks]
    return np.searchsorted(bounds, values, side="right").astype(np.int32)


def classes(pic: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Each pixel's class [H*W] for ``shape`` = (activity groups, brightness groups):
    activity * brightness groups + brightness, where a pixel's activity is the absolute
    horizontal plus vertical second difference of its channels' sum, and its brightness that
    sum (the synthesis errs differently on edges and flat areas, in shadows and highlights)."""
    g = pic.sum(axis=2, dtype=np.int32)     # small integers: int32 keeps a large photo's memory down
    p = np.pad(g, 1, mode="edge")
    act = np.abs(2 * g - p[1:-1, :-2] - p[1:-1, 2:]) + np.abs(2 * g - p[:-2, 1:-1] - p[2:, 1:-1])
    return _ranks(act.ravel(), shape[0]) * shape[1] + _ranks(g.ravel(), shape[1])


def _gram(pic: np.ndarray, target: np.ndarray, cls: np.ndarray, k: int, threads: int = 1, kind: int = 0):
    """Per class: (F'F, F'err, err'err) [k, ...], float64 sums over the picture, band by band
    (``threads`` at once).  Every term is an integer and a pixel adds at most 2**16 to a sum
    (|F| <= 128, |err| <= 255), so with under 2**32 pixels every sum stays below 2**48: exact,
    in any order."""
    H, W, C = pic.shape
    nf = n_features(C, kind)

    def band(rows):
        y0, y1 = rows
        g, r, s = np.zeros((k, nf, nf)), np.zeros((k, nf, C)), np.zeros((k, C))
        e = (target[y0:y1].astype(np.float64) - pic[y0:y1]).reshape(-1, C)
        c = cls[y0 * W:y1 * W]
        order = np.argsort(c, kind="stable")
        ends = np.searchsorted(c[order], np.arange(k + 1))
        F, e = feature_planes(pic, (y0, y1), kind)[:, order].astype(np.float64), e[order]
        for j in range(k):
            f, ej = F[:, ends[j]:ends[j + 1]], e[ends[j]:ends[j + 1]]
            if len(ej):
                g[j] += f @ f.T
                r[j] += f @ ej
                s[j] += (ej * ej).sum(axis=0)
        return g, r, s
    G, R, E = np.zeros((k, nf, nf)), np.zeros((k, nf, C)), np.zeros((k, C))
    for g, r, e in _on_bands(band, H, W, threads):   # added up as they come: memory per band
        G += g
        R += r
        E += e
    return G, R, E


def _on_bands(fn, H: int, W: int, threads: int):
    """fn(rows) for every band of :func:`_bands`, in order, ``threads`` bands at once (each
    band's products on one BLAS thread, so that the threads do not oversubscribe the cores)."""
    with threadpool_limits(1, user_api="blas") if threads > 1 else nullcontext(), workers(threads) as pool:
        yield from (pool.map if pool else map)(fn, _bands(H, W))


def _solve(G: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Coefficients q [n_features, C] (rounded, clamped) of one class's normal equations."""
    try:
        a = np.linalg.solve(G + 1e-6 * np.eye(len(G)) * max(np.trace(G), 1.0), r)
    except np.linalg.LinAlgError:
        return np.zeros(r.shape, np.int64)
    return np.clip(np.round(a * 2 ** SHIFT), -LIMIT, LIMIT).astype(np.int64)


def fit(pic: np.ndarray, target: np.ndarray, shape: tuple[int, int], kind: int = 0) -> np.ndarray:
    """Integer coefficients q [classes, n_features, C] of a filter of ``kind`` that bring
    ``pic`` closest to ``target`` (both uint8 [H, W, C]) in the mean square, per class of
    ``shape`` (least squares, rounded)."""
    k = shape[0] * shape[1]
    G, R, _ = _gram(pic, target, classes(pic, shape), k, kind=kind)
    return np.stack([_solve(G[j], R[j]) for j in range(k)])


def apply(pic: np.ndarray, q: np.ndarray, shape: tuple[int, int], threads: int = 1, kind: int = 0) -> np.ndarray:
    """The filtered picture (uint8, the shape of ``pic``) for coefficients q [classes,
    n_features, C] of a filter of ``kind`` and classes ``shape``: band by band (``threads`` bands at once), class by
    class, exact (no compiled kernel, so a lossy process never starts numba).

    >>> pic = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    >>> q = np.zeros((1, n_features(3), 3), np.int64); q[0, -1] = 2 ** SHIFT // 128   # +1 everywhere
    >>> bool((apply(pic, q, (1, 1)) == pic + 1).all())
    True
    """
    H, W, C = pic.shape
    k = len(q)
    cls = classes(pic, shape)
    # integers in floats, for BLAS, exact in any order (_exact_dtype)
    dtype = _exact_dtype(np.asarray(q), C, kind)
    # every class's filter at every pixel, in one product, then each pixel's own: more
    # products than grouping the pixels by class, but no copy of the features
    q = np.ascontiguousarray(np.asarray(q, dtype).transpose(1, 0, 2).reshape(-1, k * C))
    out = np.empty((H, W, C), np.uint8)

    def band(rows):
        y0, y1 = rows
        acc = (feature_planes(pic, (y0, y1), kind, dtype).T @ q).reshape(-1, k, C)
        acc = acc[:, 0] if k == 1 else acc[np.arange(len(acc)), cls[y0 * W:y1 * W]]
        v = pic[y0:y1].reshape(-1, C) + ((acc.astype(np.int64) + (1 << (SHIFT - 1))) >> SHIFT)
        out[y0:y1] = np.clip(v, 0, 255).reshape(y1 - y0, W, C)
    for _ in _on_bands(band, H, W, threads):     # bands write their own rows, in integers
        pass
    return out


def to_symbols(q: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The coefficients as they are coded: each class's minus those of the class one activity
    group below with the same brightness group (filters of neighbouring activities are
    alike: about 17% fewer bits), flat in the order [class, feature, channel]."""
    a = q.reshape(shape[0], shape[1], *q.shape[1:]).copy()
    a[1:] -= q.reshape(a.shape)[:-1]
    return a.ravel()


def from_symbols(symbols: np.ndarray, shape: tuple[int, int], channels: int, kind: int = 0) -> np.ndarray:
    """q [classes, n_features, C] from :func:`to_symbols`'s output."""
    nf = n_features(channels, kind)
    a = np.cumsum(symbols.reshape(shape[0], shape[1], nf, channels), axis=0)
    return a.reshape(shape[0] * shape[1], nf, channels)


def coefficient_frequencies() -> np.ndarray:
    """The fixed table of a coded symbol over -RADIUS..RADIUS: integer frequencies falling as
    1 / ((|v| + 1)(|v| + 2)) (about 2 log2|v| bits for a symbol v), at least 1."""
    v = np.abs(np.arange(-RADIUS, RADIUS + 1, dtype=np.int64))
    return np.maximum((1 << 30) // ((v + 1) * (v + 2)), 1)


def choose(pic: np.ndarray, target: np.ndarray, beta: float, threads: int = 1, kinds: tuple[int, ...] = (0,)
           ) -> tuple[int, int, np.ndarray]:
    """(kind, index into :data:`CLASS_CHOICES`, coefficients q [classes, n_features, C]) of
    the filter among ``kinds`` that minimises MSE / beta plus the coefficients' bits per
    pixel (no filter: index 0).  The MSE of each choice comes from the normal equations (plus
    1/12 for rounding the correction), not by filtering: the sums over the finest classes,
    added up, serve every choice of classes."""
    H, W, C = pic.shape
    n = H * W * C
    freqs = coefficient_frequencies()
    bits = -np.log2(freqs / freqs.sum())
    fa, fb = max(a for a, _ in CLASS_CHOICES), max(b for _, b in CLASS_CHOICES)
    fine_classes = classes(pic, (fa, fb))
    best = None
    for kind in kinds:
        nf = n_features(C, kind)
        fine = _gram(pic, target, fine_classes, fa * fb, threads, kind)
        if best is None:
            best = (fine[2].sum() / n / beta, kind, 0, np.zeros((0, nf, C), np.int64))
        for index, (ka, kb) in enumerate(CLASS_CHOICES):
            if not ka:
                continue
            members = [[] for _ in range(ka * kb)]
            for i in range(fa * fb):   # fine class i = a * fb + b lies in class (a // (fa/ka)) * kb + b // (fb/kb)
                members[(i // fb) // (fa // ka) * kb + (i % fb) // (fb // kb)].append(i)
            q = np.zeros((ka * kb, nf, C), np.int64)
            sq = 0.0
            for j, group in enumerate(members):
                G, r, e = (fine[t][group].sum(axis=0) for t in range(3))
                q[j] = _solve(G, r)
                a = q[j] / 2 ** SHIFT
                sq += e.sum() - 2 * (a * r).sum() + np.einsum("fc,fg,gc->", a, G, a)
            cost = (sq / n + 1 / 12) / beta + bits[to_symbols(q, (ka, kb)) + RADIUS].sum() / (H * W)
            if cost < best[0]:
                best = (cost, kind, index, q)
    return best[1:]
