"""The VLAE networks in exact integer arithmetic, for coding.

Why: the decoder must reproduce the encoder's probabilities bit for bit, but float32
results change with batch shape and instruction set.  Here every weight and activation is
an integer (fixed point, activations at scale 2**ACT_BITS), stored in float64.  Products
and sums of integers stay exact in float64 while their magnitude is below 2**53, and each
layer's weights are scaled so that the worst case cannot exceed it (activations are
clamped to +-2**ACT_CLAMP_BITS, sum |w| <= 2**WEIGHT_SUM_BITS).  Exact sums do not depend
on summation order, so the result is the same for any batch shape, thread count, BLAS or
CPU: the encoder evaluates the whole image at once, the decoder pixel-wave by pixel-wave.

Quantizing the float weights uses only exact operations (frexp, multiply by a power of
two, round); the number formats, the tables and the probability rows are in
:mod:`vlaecodec.fixedpoint`.

>>> from vlaecodec.model import VLAE, VLAEConfig
>>> net = ExactVLAE.from_module(VLAE(VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1)))
>>> x = np.random.default_rng(0).integers(0, 256, (1, 3, 8, 8))
>>> mean, logscale = net.posterior(x)
>>> bool((mean == mean.round()).all()), mean.shape
(True, (1, 2, 2, 2))

The network comes from its weights as numpy arrays (a zoo file, :func:`vlaecodec.zoo.load_weights`)
and its config: coding never imports torch.  :meth:`ExactVLAE.from_module` takes a torch
:class:`~vlaecodec.model.VLAE` instead (tests, training).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .config import LOGSCALE_MAX, LOGSCALE_MIN, VLAEConfig, embed_index, window_offsets
from .fixedpoint import (
    ACT_BITS,
    ACT_LIMIT,
    finish_rows,
    logistic_probabilities,
    logits_to_probabilities,
    weight_exponent,
)


def rows_of(a: np.ndarray, lo: int, hi: int, pad_cols: int) -> np.ndarray:
    """Rows lo .. hi-1 of a channels-last image [H, W, C], zero where they fall outside it,
    with ``pad_cols`` zero columns either side: the input of a band of a layer's output rows.

    >>> rows_of(np.ones((2, 1, 1)), -1, 3, 1)[..., 0].tolist()
    [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    H = a.shape[0]
    return np.pad(a[max(lo, 0):min(hi, H)], ((max(0, -lo), max(0, hi - H)), (pad_cols, pad_cols), (0, 0)))


def space_to_depth(a: np.ndarray) -> np.ndarray:
    """[H, W, C] (H, W even) as [H/2, W/2, 4C]: each 2x2 block's pixels side by side, in the
    order (row in block, column in block, channel)."""
    H, W, C = a.shape
    return np.ascontiguousarray(a.reshape(H // 2, 2, W // 2, 2, C).transpose(0, 2, 1, 3, 4)).reshape(H // 2, W // 2, 4 * C)


def space_to_depth_taps(taps: np.ndarray) -> np.ndarray:
    """Taps [kh, kw, C, N] of a stride-2 kernel (kh, kw even) as the taps [kh/2, kw/2, 4C, N]
    of the stride-1 kernel that reads :func:`space_to_depth`'s blocks: the same sums."""
    kh, kw, C, N = taps.shape
    t = taps.reshape(kh // 2, 2, kw // 2, 2, C, N).transpose(0, 2, 1, 3, 4, 5)
    return np.ascontiguousarray(t).reshape(kh // 2, kw // 2, 4 * C, N)


# Below this many input channels a tap row (kw taps) is gathered into one product, with kw
# times the depth; above it each tap is its own product over a view, with no copy at all.
GATHER_BELOW_CHANNELS = 64


def flat_conv(ap: np.ndarray, taps: np.ndarray, ho: int) -> np.ndarray:
    """Sums of a stride-1 convolution, [ho, Wp, N], of a padded input ap [ho + kh - 1, Wp, C]
    by taps [kh, kw, C, N]; output column x < Wp - kw + 1 is valid, the rest is not.

    Why: in the rows of ap laid end to end (one [rows*Wp, C] matrix), the input under tap
    (ky, kx) of every output position is one contiguous run, starting at ky*Wp + kx, if each
    output row is Wp wide (its last kw - 1 columns read across the row's end and are thrown
    away).  So every tap is a matrix product over a view: BLAS at full speed, no gathering.

    >>> rng = np.random.default_rng(0)
    >>> a, t = rng.integers(-9, 9, (6, 7, 2)).astype(float), rng.integers(-9, 9, (3, 3, 2, 4)).astype(float)
    >>> want = sum(a[ky:ky + 4, kx:kx + 5] @ t[ky, kx] for ky in range(3) for kx in range(3))
    >>> bool((flat_conv(a, t, 4)[:, :5] == want).all())
    True
    """
    kh, kw, C, N = taps.shape
    Wp = ap.shape[1]
    flat = np.ascontiguousarray(ap[:ho + kh - 1]).reshape(-1)
    n = ho * Wp - (kw - 1)          # output positions up to the last valid one
    acc = np.zeros((ho * Wp, N))
    part = np.empty((n, N))
    gather = C < GATHER_BELOW_CHANNELS and kw > 1
    windows = np.lib.stride_tricks.sliding_window_view(flat, kw * C)[::C] if gather else None
    rows = flat.reshape(-1, C)
    for ky in range(kh):
        if gather:
            terms = [(np.ascontiguousarray(windows[ky * Wp:ky * Wp + n]), taps[ky].reshape(kw * C, N))]
        else:
            terms = [(rows[ky * Wp + kx:ky * Wp + kx + n], taps[ky, kx]) for kx in range(kw)]
        for x, w in terms:
            np.matmul(x, w, out=part)
            acc[:n] += part
    return acc.reshape(ho, Wp, N)


class QLinear:
    """A convolution (or 1x1 layer) with integer weights: out = floor(W.x + b) at scale 2**out_bits.
    ``weight`` [out, in, kh, kw] and ``bias`` [out] are float arrays (any array-like)."""

    def __init__(self, weight, bias, in_bits: int, out_bits: int = ACT_BITS, in_scale: float = 1.0,
                 stride: int = 1, padding: int = 0):
        w = np.asarray(weight, dtype=np.float64) * in_scale
        self.w_bits = weight_exponent(w)
        self.shift = self.w_bits + in_bits - out_bits
        assert self.shift >= 0, "weights too large for the fixed-point format"
        self.weight = np.round(w * 2.0 ** self.w_bits)          # half to even, as torch.round did
        b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
        self.bias = np.round(b * 2.0 ** (self.w_bits + in_bits))
        self.stride, self.padding = stride, padding
        # the weights as one [fan_in, out] matrix, for the per-pixel rows
        self.matrix = np.ascontiguousarray(self.weight.reshape(self.weight.shape[0], -1).T)
        self.scale = 2.0 ** -self.shift
        # the kernel as [ky, kx, C_in, C_out] taps, and as one [ky*kx*C_in, C_out] matrix,
        # for the channels-last convolution
        self.kernel = tuple(self.weight.shape[-2:])
        self.taps = np.ascontiguousarray(self.weight.transpose(2, 3, 1, 0))
        self.tap_matrix = self.taps.reshape(-1, self.taps.shape[-1])
        # a stride-2 kernel of even size is a stride-1 kernel of half the size over 2x2 blocks
        even = stride == 2 and self.kernel[0] % 2 == 0 and self.kernel[1] % 2 == 0
        self.s2d_taps = space_to_depth_taps(self.taps) if even else None

    def conv(self, a: np.ndarray) -> np.ndarray:
        """The layer on a batch [B, C, H, W] (float64 holding integers)."""
        out = [self.conv_hwc(np.ascontiguousarray(img.transpose(1, 2, 0))) for img in np.asarray(a, np.float64)]
        return np.stack(out).transpose(0, 3, 1, 2)
    IM2COL_MAX_FAN_IN = 64   # below this, one matrix product over gathered patches

    # output values per matrix product: larger layers go in bands of output rows, so their
    # temporaries (padded input, gathered taps, sums) stay near 4 MB each, not the image's size
    # (a Kodak image decoded by two threads: 372-378 MB at peak, against 390 with 8 MB)
    CHUNK_OUTPUTS = 1 << 19

    def conv_hwc(self, a: np.ndarray, pad_rows: bool = True) -> np.ndarray:
        """The layer on one channels-last image [H, W, C] (numpy float64 holding integers).

        A sum of matrix products, one per kernel tap (or one over gathered patches when the
        input is thin): BLAS's speed, about 4x torch's float64 conv2d here, and still exact
        since every partial sum is an integer below 2**53 (so bands of rows, any split, give
        the same integers).  ``pad_rows=False``: the caller has put the padding rows (or the
        neighbouring rows) in ``a`` already."""
        H, W, C = a.shape
        (kh, kw), s, p = self.kernel, self.stride, self.padding
        py = p if pad_rows else 0
        ho, wo = (H + 2 * py - kh) // s + 1, (W + 2 * p - kw) // s + 1
        rows = max(1, self.CHUNK_OUTPUTS // (wo * self.taps.shape[-1]))
        if rows >= ho:
            return self._conv_rows(np.pad(a, ((py, py), (p, p), (0, 0))) if p else a, ho, wo)
        out = np.empty((ho, wo, self.taps.shape[-1]))
        for o0 in range(0, ho, rows):
            o1 = min(ho, o0 + rows)
            lo, hi = o0 * s - py, (o1 - 1) * s - py + kh        # the input rows they read
            band = rows_of(a, lo, hi, p)
            out[o0:o1] = self._conv_rows(band, o1 - o0, wo)
        return out

    def _conv_rows(self, ap: np.ndarray, ho: int, wo: int) -> np.ndarray:
        """The layer on a padded input holding (at least) the rows that ho output rows read."""
        C = ap.shape[2]
        (kh, kw), s = self.kernel, self.stride
        if kh * kw * C <= self.IM2COL_MAX_FAN_IN:
            # thin input: every tap of a position side by side, one product
            cols = np.concatenate([ap[ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s].reshape(ho * wo, C)
                                   for ky in range(kh) for kx in range(kw)], axis=1)
            return self._finish(cols @ self.tap_matrix).reshape(ho, wo, -1)
        ap = ap[:s * (ho - 1) + kh]
        if s == 1:
            return self._finish_flat(flat_conv(ap, self.taps, ho), wo)
        if self.s2d_taps is not None and ap.shape[0] % 2 == 0 and ap.shape[1] == s * (wo - 1) + kw:
            return self._finish_flat(flat_conv(space_to_depth(ap), self.s2d_taps, ho), wo)
        acc = 0     # any other stride: a product per tap over gathered (strided) positions
        for ky in range(kh):
            for kx in range(kw):
                acc = acc + ap[ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s].reshape(ho * wo, C) \
                    @ self.taps[ky, kx]
        return self._finish(acc).reshape(ho, wo, -1)

    def _finish_flat(self, acc: np.ndarray, wo: int) -> np.ndarray:
        """:meth:`_finish` of :func:`flat_conv`'s sums [ho, Wp, N], less the columns past wo."""
        ho, Wp, N = acc.shape
        return self._finish(acc.reshape(ho * Wp, N)).reshape(ho, Wp, N)[:, :wo]

    def _finish(self, acc: np.ndarray) -> np.ndarray:
        """Bias, shift (floor) and clip of the sums [n, out], in place and in one pass: the
        output integers."""
        return finish_rows(acc, self.bias, self.scale, ACT_LIMIT, False)

    # A 3x3 convolution (padding 1) of a nearest-upsampled image reads, for each output phase
    # (row parity, column parity), only 2x2 pixels of the small image: for an even output row
    # tap 0 falls on the row above and taps 1, 2 on the row itself; for an odd row taps 0, 1
    # on the row itself and tap 2 on the row below.  (offset, taps) per parity:
    _UP2_TAPS = {0: ((-1, (0,)), (0, (1, 2))), 1: ((0, (0, 1)), (1, (2,)))}

    def conv_up2_hwc(self, a: np.ndarray) -> np.ndarray:
        """``conv_hwc(a.repeat(2, 0).repeat(2, 1))`` for a 3x3 layer with padding 1, without
        the upsampled image: each output phase is a 2x2 convolution of ``a`` whose taps are the
        sums of the 3x3 taps that read the same pixel.  Integer sums in any grouping are the
        same integers, and sum |w| does not grow, so the result is identical, in 4/9 of the
        multiply-adds and a quarter of the memory."""
        H, W, _ = a.shape
        out = np.empty((2 * H, 2 * W, self.taps.shape[-1]))
        for r0, r1, rows in self.up2_bands(a):
            out[2 * r0:2 * r1] = rows
        return out

    def up2_bands(self, a: np.ndarray):
        """:meth:`conv_up2_hwc` in bands: (r0, r1, its output rows 2*r0 .. 2*r1), each band
        reading a's rows r0-1 .. r1 (zero beyond the image)."""
        assert self.kernel == (3, 3) and self.stride == 1 and self.padding == 1
        H, W, C = a.shape
        cout = self.taps.shape[-1]
        rows = max(1, self.CHUNK_OUTPUTS // (4 * W * cout))
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            lo, hi = r0 - 1, r1 + 1                       # one row of context either side
            band = rows_of(a, lo, hi, 1)
            n = r1 - r0
            out = np.empty((2 * n, 2 * W, cout))
            for py, taps_y in self._UP2_TAPS.items():
                for px, taps_x in self._UP2_TAPS.items():
                    acc = None
                    for dy, kys in taps_y:
                        for dx, kxs in taps_x:
                            w = sum(self.taps[ky, kx] for ky in kys for kx in kxs)
                            part = band[1 + dy:1 + dy + n, 1 + dx:1 + dx + W].reshape(n * W, C) @ w
                            acc = part if acc is None else np.add(acc, part, out=acc)
                    out[py::2, px::2] = self._finish(acc).reshape(n, W, -1)
            yield r0, r1, out

    def rows(self, a: np.ndarray, matrix: np.ndarray | None = None, relu: bool = False) -> np.ndarray:
        """The layer applied to rows of features [n, fan_in] (a 1x1 conv, or a gathered window
        with its own column order in ``matrix``), in numpy float64 holding integers;
        ``relu``: then max(., 0)."""
        acc = a @ (self.matrix if matrix is None else matrix)
        return finish_rows(acc, self.bias, self.scale, ACT_LIMIT, relu)   # bias, shift, clip: one pass


class _Weights:
    """A model's weights by state-dict name, as float arrays; remembers which were read, so
    that weights of another architecture than the config's are refused, not half used."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        self.weights, self.read = weights, set()

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise ValueError(f"the weights have no {name!r}: they do not fit the model's config")
        self.read.add(name)
        return self.weights[name]

    def layer(self, name: str, in_bits: int = ACT_BITS, stride: int = 1, padding: int = 0,
              **kw) -> QLinear:
        """The convolution ``name`` (its ``.weight`` and ``.bias``); stride and padding are the
        architecture's (vlaecodec/model.py), not stored in the weights."""
        return QLinear(self(f"{name}.weight"), self(f"{name}.bias"), in_bits, stride=stride,
                       padding=padding, **kw)

    def res_block(self, name: str) -> tuple[QLinear, QLinear]:
        return self.layer(f"{name}.conv1", padding=1), self.layer(f"{name}.conv2", padding=1)

    def check_all_read(self) -> None:
        unused = sorted(set(self.weights) - self.read)
        if unused:
            raise ValueError(f"weights {unused[:3]} do not fit the model's config")


def pixels_to_input(x, levels: int) -> np.ndarray:
    """Integer pixels -> the integer network input u = 2x - (levels-1) (0 means 'outside')."""
    return 2 * np.asarray(x, dtype=np.float64) - (levels - 1)


def window_mask(window: list[int]) -> np.ndarray:
    """The [B+1, A] mask of the window convolution (:class:`~vlaecodec.model.WindowConv`
    keeps it out of the state dict, so it is rebuilt here from the window's offsets)."""
    a, b = window
    mask = np.zeros((b + 1, a), np.float32)
    for dy, dx in window_offsets(window):
        mask[b + dy, (a - 1) // 2 + dx] = 1.0
    return mask


class ExactVLAE:
    """Integer-exact evaluation of a trained VLAE (normal prior, any decoder kind but
    ``full``) from its float ``weights`` (state-dict names -> arrays) and its ``cfg``.  Pixel
    tables come from :meth:`probabilities`, which works on any set of pixels whose window is
    known.  Every method takes and returns numpy arrays."""

    def __init__(self, weights: Mapping[str, np.ndarray], cfg: VLAEConfig):
        if cfg.decoder == "full" or cfg.prior != "normal":
            raise ValueError("exact coding supports local/factorized decoders with the normal prior")
        self.cfg = cfg
        W = _Weights(weights)
        in_scale = 1.0 / (cfg.levels - 1)  # normalize(x) = u / (levels-1)
        self.e_inp = W.layer("encoder.inp", in_bits=0, in_scale=in_scale, padding=1)
        self.e_down1 = W.layer("encoder.down1", stride=2, padding=1)
        self.e_down2 = W.layer("encoder.down2", stride=2, padding=1)
        self.e_blocks = [W.res_block(f"encoder.blocks.{i}") for i in range(cfg.res_blocks)]
        self.e_out = W.layer("encoder.out")
        self.z_inp = W.layer("zdecoder.inp", padding=1)
        self.z_blocks = [W.res_block(f"zdecoder.blocks.{i}") for i in range(cfg.res_blocks)]
        self.z_up1, self.z_up2 = W.layer("zdecoder.up1", padding=1), W.layer("zdecoder.up2")
        self.local = cfg.decoder == "local"
        if self.local:
            # the masked weights in float32, as WindowConv multiplies them (by 0 or 1: exact)
            w = W("context.conv.weight") * window_mask(cfg.window)
            self.window = QLinear(w, W("context.conv.bias"), 0, in_scale=in_scale)
            a, b = cfg.window
            self.left, self.right, self.up = (a - 1) // 2, a - 1 - (a - 1) // 2, b
            # the same weights as a matrix over gathered window pixels, ordered (offset, channel)
            offs = window_offsets(cfg.window)
            cols = [self.window.weight[:, :, self.up + dy, self.left + dx] for dy, dx in offs]
            self.window_matrix = np.ascontiguousarray(np.stack(cols, axis=1).reshape(w.shape[0], -1).T)
            self.offsets = offs
        # per-pixel blocks: nn.Sequential(ReLU, Conv, ReLU, Conv), so the convolutions are 1 and 3
        self.trunk = [(W.layer(f"heads.trunk.{i}.1"), W.layer(f"heads.trunk.{i}.3"))
                      for i in range(cfg.pixel_blocks)]
        n_embed = cfg.channels * (cfg.channels - 1) // 2 if cfg.decoder != "factorized" else 0
        self.embed = [np.round(np.asarray(W(f"heads.embed.{i}.weight"), dtype=np.float64) * 2 ** ACT_BITS)
                      for i in range(n_embed)]
        self.hidden = [W.layer(f"heads.hidden.{c}") for c in range(cfg.channels)]
        self.out = [W.layer(f"heads.out.{c}") for c in range(cfg.channels)]
        W.check_all_read()
        self.embed_index = embed_index
        self.logistic = cfg.likelihood == "logistic"

    @classmethod
    def from_module(cls, model) -> "ExactVLAE":
        """The exact copy of a torch :class:`~vlaecodec.model.VLAE` (its state dict as numpy)."""
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        return cls(state, model.cfg)

    # --- encoder and z-decoder (whole images, in strips) -------------------------------------
    # Large images go in horizontal strips of about this many latent positions, which bounds
    # memory (the activations at the latents' resolution: 96 channels, ~50 MB per strip; the
    # half-resolution ones are made a few rows at a time); each strip recomputes a halo of
    # rows, so strips should not be thin.
    STRIP_LATENT_POSITIONS = 1 << 16
    MIN_STRIP_ROWS = 16

    def posterior(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Integer (mean, logscale) [B, z_channels, H/4, W/4] at scale 2**ACT_BITS for integer
        images x [B,C,H,W], H,W % 4 == 0.

        Computed in horizontal strips with a halo wider than the receptive field: integer
        arithmetic makes the result identical to one pass over the whole image."""
        u = pixels_to_input(x, self.cfg.levels).transpose(0, 2, 3, 1)   # channels last
        halo = 2 * len(self.e_blocks) + 4
        out = np.stack([self._in_strips(self._posterior_hwc, img, 4, halo, 1) for img in u])
        mean, logscale = np.split(out.transpose(0, 3, 1, 2), 2, axis=1)
        return mean, logscale

    def _in_strips(self, fn, a: np.ndarray, down: int, halo: int, up: int) -> np.ndarray:
        """fn over [H, W, C] in strips of latent rows (fn's output has ``up`` rows per latent
        row, its input ``down``) with ``halo`` latent rows either side."""
        h, w = a.shape[0] // down, max(1, a.shape[1] // down)
        strip = max(self.MIN_STRIP_ROWS, self.STRIP_LATENT_POSITIONS // w)
        parts = []
        for lo_row in range(0, h, strip):
            hi_row = min(h, lo_row + strip)
            lo, hi = max(0, lo_row - halo), min(h, hi_row + halo)
            out = fn(a[down * lo:down * hi])
            parts.append(out[up * (lo_row - lo):up * (hi_row - lo)])
        return np.concatenate(parts)

    STEM_ROWS = 8    # output rows of the first down-sampling per step of :meth:`_stem_steps`
    DOWN2_ROWS = 8   # output rows of the second one per step of :meth:`_stem_down2`

    def _stem_steps(self, u: np.ndarray):
        """(first row, rows) of relu(down1(relu(inp(u)))), a few output rows at a time: the
        full-resolution activation between the two layers is never held whole (it would be
        the largest array of all).  Row r of down1 (4x4, stride 2, padding 1) reads inp's
        rows 2r-1 .. 2r+2, and those read u's rows 2r-2 .. 2r+3 (3x3, padding 1)."""
        H = u.shape[0]
        for r0 in range(0, H // 2, self.STEM_ROWS):
            r1 = min(H // 2, r0 + self.STEM_ROWS)
            lo, hi = 2 * r0 - 2, 2 * r1 + 2          # u's rows, zero beyond the image
            band = rows_of(u, lo, hi, 0)
            a = self.e_inp.conv_hwc(band)[1:-1]      # inp's rows 2r0-1 .. 2r1
            np.maximum(a, 0, out=a)
            for edge, row in ((r0 == 0, 0), (r1 == H // 2, -1)):
                if edge:
                    a[row] = 0    # outside the image: down1's zero padding, not inp's output
            rows = self.e_down1.conv_hwc(a, pad_rows=False)
            yield r0, np.maximum(rows, 0, out=rows)

    def _stem(self, u: np.ndarray) -> np.ndarray:
        """The stem's output whole (tests; coding uses :meth:`_stem_down2`)."""
        return np.concatenate([rows for _, rows in self._stem_steps(u)])

    def _stem_down2(self, u: np.ndarray) -> np.ndarray:
        """down2 of the stem's output, a few rows at a time, so that the stem's output (at
        half resolution, the widest activation left) is never held whole either.  Row q of
        down2 (4x4, stride 2, padding 1) reads the stem's rows 2q-1 .. 2q+2; rows -1 and
        H/2 are its zero padding.  ``buf`` holds the stem's rows from 2q0-1 on."""
        S = u.shape[0] // 2
        out, buf, q0 = None, None, 0
        for r0, rows in self._stem_steps(u):
            if buf is None:
                buf = np.zeros((1, *rows.shape[1:]))                 # row -1
            buf = np.concatenate([buf, rows])
            last = r0 + len(rows) - 1                                # the last row in buf
            if last == S - 1:
                buf, last = np.concatenate([buf, np.zeros((1, *rows.shape[1:]))]), S
            q1 = (last - 2) // 2 + 1                                 # rows q with 2q+2 <= last
            if q1 - q0 >= self.DOWN2_ROWS or last == S:
                part = self.e_down2.conv_hwc(buf[:2 * (q1 - q0) + 2], pad_rows=False)
                if out is None:
                    out = np.empty((S // 2, *part.shape[1:]))
                out[q0:q1] = part
                buf, q0 = buf[2 * (q1 - q0):], q1
        return out

    def _posterior_hwc(self, u: np.ndarray) -> np.ndarray:
        a = self._stem_down2(u)
        for c1, c2 in self.e_blocks:
            a = a + c2.conv_hwc(np.maximum(c1.conv_hwc(np.maximum(a, 0)), 0))
        out = self.e_out.conv_hwc(np.maximum(a, 0))
        zc = out.shape[-1] // 2
        np.clip(out[..., zc:], LOGSCALE_MIN * 2 ** ACT_BITS, LOGSCALE_MAX * 2 ** ACT_BITS, out=out[..., zc:])
        return out

    def z_features_half(self, z_int) -> np.ndarray:
        """Conditioning features at half resolution [ph, 2h, 2w] (float32, holding integers below
        2**23, hence exact) from integer latents [1, zc, h, w]; pixel (y, x) uses [:, y//2, x//2]."""
        z = np.ascontiguousarray(np.transpose(np.asarray(z_int, dtype=np.float64)[0], (1, 2, 0)))
        low = self._in_strips(self._z_low_hwc, z, 1, 2 * len(self.z_blocks) + 2, 1)
        # the two half-resolution layers in bands of rows, the last one (1x1, the widest)
        # straight into float32: no half-resolution float64 activation is held whole.
        # Stored channels last (the pixel kernels read a pixel's features in one run of
        # memory) and returned as a [ph, 2h, 2w] view of that one array.
        out = np.empty((2 * low.shape[0], 2 * low.shape[1], self.z_up2.taps.shape[-1]), np.float32)
        for r0, r1, rows in self.z_up1.up2_bands(np.maximum(low, 0)):
            out[2 * r0:2 * r1] = self.z_up2.conv_hwc(np.maximum(rows, 0, out=rows))
        return out.transpose(2, 0, 1)

    def zero_features_half(self, grid: tuple[int, int]) -> np.ndarray:
        """:meth:`z_features_half` of z = 0 on a grid of latents [h, w], the same integers,
        from a grid of at most (2R+1) x (2R+1) latents.

        Why: with every z zero, a feature depends only on how far its latent lies from each
        edge of the grid, and not at all beyond the decoder's reach R (zero padding is all
        that differs from the interior): every row farther than R from both edges is the
        small grid's middle row, and likewise for columns.  A local model (``latent=False``)
        and every model's bottom band (z = 0) get their features without the z-decoder's
        full-size convolutions."""
        h, w = grid
        reach = 2 * len(self.z_blocks) + 3        # z_inp and the blocks' 3x3 layers, and up1's
        side = 2 * reach + 1
        sh, sw = min(h, side), min(w, side)
        small = self.z_features_half(np.zeros((1, self.cfg.z_channels, sh, sw))).transpose(1, 2, 0)

        def index(n, ns):   # a half-resolution row (or column) of the grid -> one of the small's
            low = np.arange(n)
            low = np.where(low < reach, low, np.where(low >= n - reach, low - n + ns, reach)) if n > ns else low
            return (2 * low[:, None] + np.arange(2)).reshape(-1)
        return small[index(h, sh)][:, index(w, sw)].transpose(2, 0, 1)

    def _z_low_hwc(self, z: np.ndarray) -> np.ndarray:
        """The z-decoder's layers at the latents' resolution (before the upsampling)."""
        a = self.z_inp.conv_hwc(z)
        for c1, c2 in self.z_blocks:
            a = a + c2.conv_hwc(np.maximum(c1.conv_hwc(np.maximum(a, 0)), 0))
        return a

    def z_features(self, z_int) -> np.ndarray:
        """Full-resolution conditioning [1, ph, H, W] (for tests and small images), float64."""
        half = self.z_features_half(z_int).astype(np.float64)[None]
        return half.repeat(2, axis=2).repeat(2, axis=3)   # nearest-neighbour x2

    def window_features(self, x) -> np.ndarray:
        """Window features of every pixel of fully known images x [B,C,H,W]."""
        u = np.pad(pixels_to_input(x, self.cfg.levels), ((0, 0), (0, 0), (self.up, 0), (self.left, self.right)))
        return self.window.conv(u)

    def context(self, x, zfeat: np.ndarray) -> np.ndarray:
        """Window features plus z features for every pixel of a fully known image."""
        return self.window_features(x) + zfeat if self.local else zfeat

    def context_rows(self, u_pad: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                     zfeat_rows: np.ndarray) -> np.ndarray:
        """The same features for chosen pixels, gathering their windows from the padded input
        u_pad [C, H+up, W+left+right] (one image; numpy)."""
        if not self.local:
            return zfeat_rows
        C, _, Wp = u_pad.shape
        dy = np.array([o[0] for o in self.offsets]) + self.up
        dx = np.array([o[1] for o in self.offsets]) + self.left
        flat = (ys[:, None] + dy) * Wp + (xs[:, None] + dx)                 # n, offsets
        window = u_pad.reshape(C, -1)[:, flat].transpose(1, 2, 0).reshape(len(ys), -1)
        return self.window.rows(window, self.window_matrix) + zfeat_rows

    # --- per-pixel layers (numpy) ----------------------------------------------------------
    def trunk_rows(self, ctx: np.ndarray) -> np.ndarray:
        for c1, c2 in self.trunk:
            ctx = ctx + c2.rows(c1.rows(np.maximum(ctx, 0), relu=True))
        return ctx

    def head_rows(self, c: int, t: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """Integer head output [n, P] of channel c; prev [n, >=c] holds the pixel's earlier channels."""
        u = t
        if self.embed:
            for p in range(c):
                u = u + self.embed[self.embed_index(c, p)][prev[:, p]]
        return self.out[c].rows(self.hidden[c].rows(np.maximum(u, 0), relu=True))

    def probabilities(self, c: int, t: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """Probability rows [n, levels] of channel c, identical wherever computed."""
        params = self.head_rows(c, t, prev)
        if not self.logistic:
            return logits_to_probabilities(params)
        prev_u = None if prev is None or not self.embed else (2 * prev[:, :c] - (self.cfg.levels - 1))
        return logistic_probabilities(params, prev_u, c, self.cfg.mixtures, self.cfg.levels)
