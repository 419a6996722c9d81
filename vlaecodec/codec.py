"""Coding images with bits-back ANS over the exact VLAE (see docs/FORMAT.md).

A file, as the decoder sees it (the encoder does the inverse, in reverse order)::

    for every band of every image:  z_b = pop(uniform over 2**z_bits bins)     # prior p(z)
    for every band b, in order:
        x_b = pop(local PixelCNN tables given z_b), wave by wave                 # p(x|z)
        push(z_b, posterior tables q(z_b|x_b))                                   # bits back

The last image is cut into bands of rows, each with its own z (the pixel window still reaches
across band borders).  Bands and images are chained on one ANS stack: the bits that a band
borrows when the encoder pops its z are the compressed bits of the bands decoded after it.
The very last band has nothing to borrow from, so its z is the posterior's mode bin, sent at
the prior's cost; it is kept small (``tail`` rows).  Going up, each band is as tall as the
bits already on the stack can pay for (:meth:`Codec._band_above`), and the file lists the
band heights.  All z come first, so the z layer decodes
alone into a preview (:meth:`Codec.preview`).

Near-lossless (``max_error = d``) codes each subpixel's bin of 2d+1 values with the model's
mass over that bin, the same way; lossy files hold z only (:meth:`Codec.encode_lossy`).

>>> import numpy as np
>>> from vlaecodec.model import VLAE, VLAEConfig
>>> codec = Codec(VLAE(VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1)), "0" * 64)
>>> img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
>>> data = codec.encode(img)
>>> bool((codec.decode(data) == img).all())
True
"""
from __future__ import annotations

import functools
import hashlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from .errors import VlaeError
from .exact import ExactVLAE
from .fileformat import (
    MAX_ERROR,
    MODE_LOSSY,
    MODE_NEAR_LOSSLESS,
    MODEL_ID_BYTES,
    RECON_NAMES,
    Header,
    ImageInfo,
    max_pixels,
    pack,
    unpack,
)
from .latents import Latents
from .model import VLAE

DEFAULT_Z_BITS = 8
DEFAULT_TAIL = 8    # rows of the last band, the only one with nothing to borrow from
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def one_blas_thread(fn):
    """Run ``fn`` with numpy's BLAS on one thread.  The coder's matrices are one wave of
    pixels by ~100 features: threads only add waiting, and on a busy machine OpenBLAS's
    spinning threads made decoding 20x slower (bench/, 2-core machine under load).  Only the
    whole-image convolutions may use more (``Codec.threads``)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper


def pixel_digest(images: list[np.ndarray]) -> bytes:
    """SHA-256 prefix of all pixels, image after image: checked after every decode."""
    h = hashlib.sha256()
    for img in images:
        h.update(np.ascontiguousarray(img, dtype=np.uint8).tobytes())
    return h.digest()[:8]


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


MIN_ROWS_PER_THREAD = 48   # narrower waves stay in one thread: the hand-off costs more


@contextmanager
def _workers(threads: int):
    """A thread pool for ``threads`` > 1, else None (everything then runs in this thread)."""
    if threads <= 1:
        yield None
        return
    with ThreadPoolExecutor(threads) as pool:
        yield pool


def _map(pool, fn, items: list) -> list:
    """[fn(item) for item in items], in the pool when there is one and more than one item."""
    return list(pool.map(fn, items)) if pool and len(items) > 1 else [fn(i) for i in items]


def _split(n: int, parts: int) -> list[slice]:
    """[0, n) in at most ``parts`` contiguous pieces of at least MIN_ROWS_PER_THREAD rows."""
    parts = max(1, min(parts, n // MIN_ROWS_PER_THREAD))
    cuts = [n * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(cuts, cuts[1:])]


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _to_chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.int64)).permute(2, 0, 1)


def _pad4(x: torch.Tensor) -> torch.Tensor:
    """Edge-pad [C,H,W] to multiples of 4 (the latent grid)."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % 4, (-W) % 4
    if ph or pw:
        x = F.pad(x[None].double(), (0, pw, 0, ph), mode="replicate")[0].long()
    return x


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


@dataclass
class Unit:
    """One band of one image: it has its own z and is the unit of bits-back."""
    image: int
    rows: tuple[int, int]
    borrow: bool       # False: nothing is decoded after it, so z is the mode bin at full price
    grid: tuple[int, int]

    @property
    def latents_per_channel(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class CodingStats:
    bits_pixels: float = 0.0
    bits_prior: float = 0.0
    bits_back: float = 0.0


class Codec:
    """Encoder/decoder for one model.  ``model_id`` is written to and checked in every file."""

    def __init__(self, model: VLAE, model_id: str, z_bits: int = DEFAULT_Z_BITS,
                 active_channels: list[int] | None = None, tail: int = DEFAULT_TAIL):
        self.net = ExactVLAE(model)
        self.cfg = model.cfg
        self.model_id = model_id
        self.latents = Latents(z_bits)
        zc = self.cfg.z_channels
        self.active = list(range(zc)) if active_channels is None else sorted(active_channels)
        self.lag = (self.net.right + 1) if self.net.local else None
        self.tail = tail

    # --- pieces shared by encoder and decoder ---------------------------------------------
    def _rgb(self, x: torch.Tensor) -> torch.Tensor:
        """Grey images go through an RGB model as R = G = B."""
        return x.expand(self.cfg.channels, -1, -1) if x.shape[0] < self.cfg.channels else x

    def _units(self, infos: list[ImageInfo], last_bands: list[int]) -> list[Unit]:
        """The bands of all images, in decoding order: one band per image, except the last
        image's ``last_bands`` (rows, top to bottom).  Only the very last band has nothing
        decoded after it to borrow from."""
        units = []
        for i, info in enumerate(infos):
            heights = last_bands if (i == len(infos) - 1 and last_bands) else [info.height]
            r0 = 0
            for h in heights:
                units.append(Unit(i, (r0, r0 + h), True, (-(-h // 4), -(-info.width // 4))))
                r0 += h
        units[-1].borrow = False
        return units

    def _band_above(self, coder, top: int, width: int) -> int:
        """Rows of the next band up, ending at row ``top`` of the last image: as many as the
        bits on the stack can pay for when the encoder pops the band's z.  Popping from a
        posterior close to the prior takes up to z_bits per latent; with fewer bits below,
        the pops would read past the data and cost more than the KL (measured: +3% on Kodak
        with bands 8 times the rows below them)."""
        per_latent_row = -(-width // 4) * len(self.active) * self.latents.bits
        if per_latent_row == 0:
            return top
        rows = 4 * max(1, coder.num_bits() // per_latent_row)
        return top if top - rows < 4 else rows  # no sliver of a band on top

    threads: int = 1   # BLAS threads for the convolutions (the pixel waves always use one)

    def _z_features(self, values: torch.Tensor, channels: list[int], grid: tuple[int, int]) -> np.ndarray:
        """Half-resolution z features from integer z values of the given latent channels."""
        z = torch.zeros(1, self.cfg.z_channels, *grid, dtype=torch.float64)
        z[0, channels] = values.reshape(len(channels), *grid)
        with threadpool_limits(limits=self.threads, user_api="blas"):
            return self.net.z_features_half(z)

    def _posterior_rows(self, x: torch.Tensor, channels: list[int] | None = None):
        """(mean, logscale) rows of the coded latents, in (channel, y, x) order."""
        channels = self.active if channels is None else channels
        with threadpool_limits(limits=self.threads, user_api="blas"):
            mean, logscale = self.net.posterior(_pad4(x)[None])
        return mean[0, channels].reshape(-1), logscale[0, channels].reshape(-1)

    def _schedule(self, H: int, W: int):
        if self.lag is None:  # factorized: every pixel at once
            ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
            return [(ys.reshape(-1), xs.reshape(-1))]
        return wavefront(H, W, self.lag)

    # --- pixels -------------------------------------------------------------------------
    def _push_pixels(self, coder, x: np.ndarray, u_pad: np.ndarray, zhalf: np.ndarray,
                     rows: tuple[int, int], bins: Bins, chunk: int = 1024) -> None:
        """Push the pixels of rows [r0, r1) of x [C,H,W] (already on the bins' values) so that
        :meth:`_pop_pixels` pops them wave by wave.  Features are gathered exactly as the
        decoder gathers them, in chunks of waves, so memory stays bounded on any image size."""
        C, _, W = x.shape
        r0, r1 = rows
        groups, cur, size = [], [], 0
        for st in self._schedule(r1 - r0, W):  # group waves into chunks of about `chunk` pixels
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
            zrows = np.ascontiguousarray(zhalf[:, ys >> 1, xs >> 1].T, dtype=np.float64)
            t = self.net.trunk_rows(self.net.context_rows(u_pad, ys + r0, xs, zrows))
            prev = np.ascontiguousarray(x[:, ys + r0, xs].T)
            probs = np.concatenate([bins.masses(self.net.probabilities(c, t, prev)) for c in range(C)])
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
        with _workers(self.threads) as pool:
            step = self.threads if pool else 1
            for k in self._progress(range(0, len(todo), step), (r1 - r0) * W, "encode"):
                for symbols, probs in _map(pool, tables, todo[k:k + step]):
                    coder.encode_reverse(symbols, CATEGORICAL, probs)

    def _pop_pixels(self, pick, x: np.ndarray, u_pad: np.ndarray, zfeat: np.ndarray,
                    rows: tuple[int, int]) -> None:
        """Fill rows [r0, r1) of x [C,H,W] (and its padded network input u_pad), wave by wave;
        ``pick(probabilities, c, prev) -> values`` pops them from the coder or reconstructs them.
        With ``threads`` > 1, each wide wave's pixels are split between threads (every row of
        the network is computed on its own, so the split cannot change a bit); the pops stay
        in one thread, in order."""
        net = self.net
        C, _, W = x.shape
        r0, r1 = rows
        offset = 1 - self.cfg.levels

        def first(ys, xs, part):  # context, trunk and channel 0's tables of some of the wave
            zrows = np.ascontiguousarray(zfeat[:, ys[part] >> 1, xs[part] >> 1].T, dtype=np.float64)
            t = net.trunk_rows(net.context_rows(u_pad, ys[part] + r0, xs[part], zrows))
            return t, net.probabilities(0, t, None)

        with _workers(self.threads) as pool:
            for ys, xs in self._progress(self._schedule(r1 - r0, W), (r1 - r0) * W, "decode"):
                parts = _split(len(ys), self.threads if pool else 1)
                done = _map(pool, lambda p: first(ys, xs, p), parts)
                trunks = [d[0] for d in done]
                probs = _join([d[1] for d in done])
                prev = np.zeros((len(ys), C), dtype=np.int64)
                for c in range(C):
                    if c:
                        jobs = [(c, t, prev[p]) for t, p in zip(trunks, parts)]
                        probs = _join(_map(pool, lambda j: net.probabilities(*j), jobs))
                    sym = pick(probs, c, prev)
                    prev[:, c] = sym
                    x[c, ys + r0, xs] = sym
                    if net.local:
                        u_pad[c, ys + r0 + net.up, xs + net.left] = 2 * sym + offset

    progress: bool = False        # a progress bar for large images (the CLI sets it on a terminal)
    PROGRESS_MIN_PIXELS = 1 << 18

    def _progress(self, items, pixels: int, what: str):
        if not self.progress or pixels < self.PROGRESS_MIN_PIXELS:
            return items
        from tqdm import tqdm
        return tqdm(items, desc=f"{what} {pixels} px", unit="wave", leave=False, mininterval=1)

    def _padded_input(self, x: np.ndarray, known: bool = True) -> np.ndarray:
        """The network input u = 2x - (levels-1) with the window's zero margin (zeros where unknown)."""
        net = self.net
        C, H, W = x.shape
        pad = (net.up, net.left + net.right) if net.local else (0, 0)
        u_pad = np.zeros((C, H + pad[0], W + pad[1]), dtype=np.float64)
        if known and net.local:
            u_pad[:, net.up:, net.left:net.left + W] = 2 * x - (self.cfg.levels - 1)
        return u_pad

    def _blank(self, info: ImageInfo) -> tuple[np.ndarray, np.ndarray]:
        x = np.zeros((self.cfg.channels, info.height, info.width), dtype=np.int64)
        return x, self._padded_input(x, known=False)

    def _finish(self, x: np.ndarray, info: ImageInfo) -> np.ndarray:
        img = np.ascontiguousarray(x.transpose(1, 2, 0)).astype(np.uint8)
        if info.channels < img.shape[2]:
            if not ((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()):
                raise VlaeError("corrupt file: a grey image decoded to colour")
            img = img[..., :1]
        return img

    # --- lossless and near-lossless: bits-back over bands --------------------------------
    @one_blas_thread
    def encode_many(self, images: list[np.ndarray], stats: CodingStats | None = None,
                    max_error: int = 0) -> bytes:
        """Code several [H,W,C] uint8 images (C = 1 or 3) on one chained ANS stack; with
        ``max_error = d > 0`` every decoded subpixel is within d of the original."""
        stats = stats if stats is not None else CodingStats()
        if not 0 <= max_error <= MAX_ERROR:
            raise VlaeError(f"max error must be 0 .. {MAX_ERROR}, not {max_error}")
        infos = []
        for img in images:
            check_image(img, self.cfg.channels)
            infos.append(ImageInfo(img.shape[1], img.shape[0], img.shape[2]))
        bins = Bins(max_error, self.cfg.levels)
        # what the decoder will see: each subpixel on its bin's value (the image itself if d = 0)
        targets = [bins.value(bins.index(img)).astype(np.uint8) for img in images]
        coder = constriction.stream.stack.AnsCoder()
        z_layer: list[np.ndarray] = []      # z of every band, in decoding order
        last_bands: list[int] = []
        with torch.no_grad():
            for i in reversed(range(len(images))):
                x = self._rgb(_to_chw(targets[i]))
                u_pad = self._padded_input(x.numpy())
                H, W = x.shape[1:]
                last = i == len(images) - 1
                top = H
                while top > 0:
                    if not last:
                        rows = H
                    elif top == H:  # the bottom band: nothing to borrow from, keep it small
                        rows = H if H <= self.tail + 4 else self.tail
                    else:
                        rows = self._band_above(coder, top, W)
                    unit = Unit(i, (top - rows, top), not (last and top == H), (-(-rows // 4), -(-W // 4)))
                    z_layer.insert(0, self._encode_band(coder, x, u_pad, unit, bins, stats))
                    if last:
                        last_bands.insert(0, rows)
                    top -= rows
        before = coder.num_bits()  # every z first in the file: the decoder pops them before any pixel
        coder.encode_reverse(np.concatenate(z_layer), constriction.stream.model.Uniform(self.latents.K))
        stats.bits_prior += coder.num_bits() - before
        header = Header(model_id=self.model_id[:2 * MODEL_ID_BYTES], z_bits=self.latents.bits,
                        active=self.active, images=infos, bands=last_bands if len(last_bands) > 1 else [],
                        digest=pixel_digest(targets), max_error=max_error,
                        mode=MODE_NEAR_LOSSLESS if max_error else 0)
        return pack(header, coder.get_compressed())

    def _encode_band(self, coder, x, u_pad, unit: Unit, bins: Bins, stats: CodingStats) -> np.ndarray:
        r0, r1 = unit.rows
        mean, logscale = self._posterior_rows(x[:, r0:r1])
        if unit.borrow:  # bits-back: z is a sample from q(z|x) read off the stack
            before = coder.num_bits()
            z = self._pop_posterior(coder, mean, logscale)
            stats.bits_back += before - coder.num_bits()
        else:  # nothing below to borrow from: the posterior's mode bin, at the prior's cost
            z = self.latents.mode_bins(mean)
        zhalf = self._z_features(self.latents.values(z), self.active, unit.grid)
        before = coder.num_bits()
        self._push_pixels(coder, x.numpy(), u_pad, zhalf, unit.rows, bins)
        stats.bits_pixels += coder.num_bits() - before
        return z

    # Posterior tables are 2**z_bits floats per latent (2 KB): a large band's would not fit in
    # memory at once, so they are made and coded a chunk at a time.  Chunks pushed last-first
    # are the same symbol-by-symbol pushes as one call, so the bits do not change.
    LATENT_CHUNK = 1 << 14

    def _pop_posterior(self, coder, mean: torch.Tensor, logscale: torch.Tensor) -> np.ndarray:
        """z ~ q(z|x) read off the stack (the encoder's bits-back pop)."""
        n = self.LATENT_CHUNK
        return np.concatenate([
            coder.decode(CATEGORICAL, self.latents.posterior_probabilities(mean[a:a + n], logscale[a:a + n]))
            for a in range(0, len(mean), n)]).astype(np.int32)

    def _push_posterior(self, coder, z: np.ndarray, mean: torch.Tensor, logscale: torch.Tensor) -> None:
        """The inverse of :meth:`_pop_posterior` (the decoder gives the bits back)."""
        n = self.LATENT_CHUNK
        for a in reversed(range(0, len(mean), n)):
            coder.encode_reverse(z[a:a + n], CATEGORICAL,
                                 self.latents.posterior_probabilities(mean[a:a + n], logscale[a:a + n]))

    def _pop_z_layer(self, coder, units: list[Unit]) -> list[np.ndarray]:
        sizes = [len(self.active) * u.latents_per_channel for u in units]
        flat = coder.decode(constriction.stream.model.Uniform(self.latents.K), sum(sizes)).astype(np.int32)
        return np.split(flat, np.cumsum(sizes)[:-1])

    def _decode_payload(self, header: Header, words: np.ndarray) -> list[np.ndarray]:
        coder = constriction.stream.stack.AnsCoder(words)
        units = self._units(header.images, header.bands)
        z_bins = self._pop_z_layer(coder, units)
        bins = Bins(header.max_error, self.cfg.levels)

        def pop(probs, c, prev):
            return bins.value(coder.decode(CATEGORICAL, bins.masses(probs)))

        out, x = [], None
        for k, u in enumerate(units):
            info = header.images[u.image]
            if x is None:
                x, u_pad = self._blank(info)
            zhalf = self._z_features(self.latents.values(z_bins[k]), self.active, u.grid)
            self._pop_pixels(pop, x, u_pad, zhalf, u.rows)
            if u.borrow:
                mean, logscale = self._posterior_rows(torch.from_numpy(x[:, u.rows[0]:u.rows[1]]))
                self._push_posterior(coder, z_bins[k], mean, logscale)
            if k + 1 == len(units) or units[k + 1].image != u.image:
                out.append(self._finish(x, info))
                x = None
        return out

    # --- lossy: z only ------------------------------------------------------------------
    @one_blas_thread
    def encode_lossy(self, images: list[np.ndarray], recon: str = "mean", seed: int = 0,
                     extra_bits: int = 0) -> bytes:
        """A file holding z only.  Each coded latent channel is sent as its posterior mean's
        bin among 2**b equal-prior-mass bins, b set by the channel's typical posterior width
        (log2 of 1.25/sigma, plus ``extra_bits``): channels whose posterior is the prior cost
        nothing.  Decoding reconstructs the pixels with the local PixelCNN (``recon`` rule)."""
        if recon not in RECON_NAMES:
            raise VlaeError(f"reconstruction must be one of {RECON_NAMES}")
        infos, stats = [], []
        for img in images:
            check_image(img, self.cfg.channels)
            infos.append(ImageInfo(img.shape[1], img.shape[0], img.shape[2]))
        channels = list(range(self.cfg.z_channels))
        with torch.no_grad():
            for img in images:
                mean, logscale = self._posterior_rows(self._rgb(_to_chw(img)), channels)
                stats.append((mean.reshape(len(channels), -1), logscale.reshape(len(channels), -1)))
        # one bit depth per channel for the whole file, from the median posterior width
        ls = torch.cat([s[1] for s in stats], dim=1).double() / (1 << 12)
        bits = torch.round(torch.log2(1.25 / ls.exp()).median(dim=1).values) + extra_bits
        bits = bits.clamp(0, self.latents.bits).long().tolist()
        active = [c for c in channels if bits[c] > 0]
        coder = constriction.stream.stack.AnsCoder()
        for mean, _ in reversed(stats):
            for c in reversed(active):
                grid = Latents(bits[c])
                coder.encode_reverse(grid.mode_bins(mean[c]), constriction.stream.model.Uniform(grid.K))
        header = Header(model_id=self.model_id[:2 * MODEL_ID_BYTES],
                        z_bits=max([bits[c] for c in active], default=1), active=active, images=infos,
                        mode=MODE_LOSSY, recon=RECON_NAMES.index(recon),
                        seed=seed, channel_bits=[bits[c] for c in active])
        return pack(header, coder.get_compressed())

    def _decode_lossy(self, header: Header, words: np.ndarray) -> list[np.ndarray]:
        coder = constriction.stream.stack.AnsCoder(words)
        rng = np.random.Generator(np.random.PCG64(header.seed))
        out = []
        for info in header.images:
            grid = (-(-info.height // 4), -(-info.width // 4))
            values = []
            for b in header.channel_bits:
                lat = Latents(b)
                values.append(lat.values(coder.decode(constriction.stream.model.Uniform(lat.K),
                                                      grid[0] * grid[1]).astype(np.int32)))
            zhalf = self._z_features(torch.cat(values) if values else torch.zeros(0, dtype=torch.float64),
                                     header.active, grid)
            out.append(self._reconstruct(info, [((0, info.height), zhalf)], RECON_NAMES[header.recon], rng))
        return out

    def _reconstruct(self, info: ImageInfo, bands, rule: str, rng) -> np.ndarray:
        x, u_pad = self._blank(info)
        grey = info.channels < self.cfg.channels

        def pick(probs, c, prev):  # grey images: G = B = R, as they are coded
            return prev[:, 0] if grey and c else reconstruct(probs, rule, rng)

        for rows, zhalf in bands:
            self._pop_pixels(pick, x, u_pad, zhalf, rows)
        return self._finish(x, info)

    def _preview(self, header: Header, words: np.ndarray, rule: str) -> list[np.ndarray]:
        """The lossy picture in a lossless or near-lossless file: its z layer, no pixel bits."""
        coder = constriction.stream.stack.AnsCoder(words)
        units = self._units(header.images, header.bands)
        z_bins = self._pop_z_layer(coder, units)
        rng = np.random.Generator(np.random.PCG64(0))
        out = []
        for i, info in enumerate(header.images):
            bands = [(u.rows, self._z_features(self.latents.values(z), self.active, u.grid))
                     for u, z in zip(units, z_bins) if u.image == i]
            out.append(self._reconstruct(info, bands, rule, rng))
        return out

    # --- latents as pictures (figures; the same exact network as the codec) ---------------
    def latent_mean(self, image: np.ndarray) -> torch.Tensor:
        """The posterior mean of z [z_channels, H/4, W/4] for a uint8 image [H,W,C]."""
        with torch.no_grad():
            mean, _ = self.net.posterior(_pad4(self._rgb(_to_chw(image)))[None])
        return mean[0] / (1 << 12)

    @one_blas_thread
    def render(self, z: torch.Tensor, height: int, width: int, rule: str = "sample", seed: int = 0) -> np.ndarray:
        """The PixelCNN's picture of a latent grid z [z_channels, ceil(H/4), ceil(W/4)]:
        a sample (``seed``), the mean or the mode at every subpixel, in decoding order."""
        z_int = torch.round(z.double() * (1 << 12)).clamp(-(1 << 15), 1 << 15)
        with torch.no_grad():
            zhalf = self.net.z_features_half(z_int[None])
            info = ImageInfo(width, height, self.cfg.channels)
            return self._reconstruct(info, [((0, height), zhalf)], rule, np.random.Generator(np.random.PCG64(seed)))

    # --- public API ---------------------------------------------------------------------
    def encode(self, image: np.ndarray, stats: CodingStats | None = None, max_error: int = 0) -> bytes:
        return self.encode_many([image], stats, max_error)

    @one_blas_thread
    def decode_many(self, data: bytes, preview: bool = False, rule: str = "mean") -> list[np.ndarray]:
        """All images of a file.  ``preview``: only the z layer of a lossless or near-lossless
        file, reconstructed with ``rule`` (a lossy file always decodes this way)."""
        header, words = unpack(data)
        if header.model_id != self.model_id[:2 * MODEL_ID_BYTES]:
            raise VlaeError(f"file was made with model {header.model_id}, not this model "
                            f"({self.model_id[:2 * MODEL_ID_BYTES]}); decode it with that model")
        if header.z_bits > self.latents.bits or any(c >= self.cfg.z_channels for c in header.active) \
                or (header.mode != MODE_LOSSY and header.z_bits != self.latents.bits):
            raise VlaeError("corrupt file: latent layout does not match the model")
        # the file's coded channels apply to this decode only
        saved = self.active
        self.active = header.active
        try:
            with torch.no_grad():
                if header.mode == MODE_LOSSY:
                    return self._guard(self._decode_lossy, header, words)
                if preview:
                    return self._guard(self._preview, header, words, rule)
                out = self._guard(self._decode_payload, header, words)
        finally:
            self.active = saved
        if pixel_digest(out) != header.digest:
            raise VlaeError("decoded pixels fail their checksum (corrupt file); nothing written")
        return out

    @staticmethod
    def _guard(fn, *args):
        try:
            return fn(*args)
        except VlaeError:
            raise
        except (ValueError, RuntimeError, AssertionError, IndexError) as e:
            # a payload that passes its CRC but is not ours (or a coder error): never a traceback
            raise VlaeError(f"corrupt file: payload does not decode ({type(e).__name__})") from None

    def decode(self, data: bytes, preview: bool = False) -> np.ndarray:
        images = self.decode_many(data, preview)
        if len(images) != 1:
            raise VlaeError(f"file holds {len(images)} images; use decode_many")
        return images[0]


def check_image(img: np.ndarray, model_channels: int) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (1, 3):
        raise VlaeError("image must be a uint8 array [H, W, 1] (grey) or [H, W, 3] (RGB)")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise VlaeError("image is empty (0 pixels)")
    if img.shape[0] * img.shape[1] > max_pixels():
        raise VlaeError(f"image has {img.shape[0] * img.shape[1]} pixels, over the limit {max_pixels()}")
    if img.shape[2] > model_channels:
        raise VlaeError("this model codes grey images only")
