"""Lossless coding of images with bits-back ANS over the exact VLAE (see docs/FORMAT.md).

One image, as the decoder sees it (the encoder does the inverse, in reverse order)::

    z     = pop(uniform over 2**z_bits equal-prior-mass bins)    # prior p(z)
    x     = pop(local PixelCNN tables given z), wave by wave     # p(x|z)
    push(z, posterior tables q(z|x))                             # give back the borrowed bits

Each image is cut into bands of rows, each with its own z (the pixel window still reaches
across band borders).  Bands and images are chained on one ANS stack: the bits that a band
borrows when the encoder pops its z are the compressed bits of everything decoded after it.
The very last band has nothing to borrow from, so its z is the posterior's mode bin, sent at
the prior's cost; it is kept small (``tail`` rows).

>>> import numpy as np
>>> from vlaecodec.model import VLAE, VLAEConfig
>>> codec = Codec(VLAE(VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1)), "0" * 64)
>>> img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
>>> data = codec.encode(img)
>>> bool((codec.decode(data) == img).all())
True
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import constriction
import numpy as np
import torch
import torch.nn.functional as F

from .errors import VlaeError
from .exact import ExactVLAE
from .fileformat import MODEL_ID_BYTES, Header, ImageInfo, max_pixels, pack, unpack
from .latents import Latents
from .model import VLAE

DEFAULT_Z_BITS = 8
DEFAULT_GROWTH = 8  # each band at most this many times the rows below it (see band_rows)
DEFAULT_TAIL = 8    # rows of the last band, the only one with nothing to borrow from
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


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


def band_rows(height: int, tail: int, growth: int = 8) -> list[tuple[int, int]]:
    """Row ranges of the bands of an image, top to bottom.

    Each band has its own z and borrows the bits for it from the bands below, which must hold
    enough compressed data; the bottom band (decoded last) has nothing below and pays for its
    z in full, so it is only ``tail`` rows.  Going up, each band is at most ``growth`` times
    the rows below it: few bands (the decoder's waves span a whole band) and always enough
    bits to borrow.  ``tail = 0``: one band (an archive's images borrow from the next image).

    >>> band_rows(32, 8), band_rows(512, 8), band_rows(3000, 8), band_rows(32, 0)
    ([(0, 24), (24, 32)], [(0, 440), (440, 504), (504, 512)], [(0, 2352), (2352, 2928), (2928, 2992), (2992, 3000)], [(0, 32)])
    """
    if tail <= 0 or height <= tail + 4:
        return [(0, height)]
    cuts, below = [height, height - tail], tail
    while cuts[-1] > 0:
        size = max(4, (growth * below) // 4 * 4)
        nxt = max(0, cuts[-1] - size)
        if nxt < 4 * growth:          # do not leave a sliver on top
            nxt = 0
        cuts.append(nxt)
        below = height - nxt
    cuts = sorted(set(cuts))
    return list(zip(cuts[:-1], cuts[1:]))


def _to_chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.int64)).permute(2, 0, 1)


def _pad4(x: torch.Tensor) -> torch.Tensor:
    """Edge-pad [C,H,W] to multiples of 4 (the latent grid)."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % 4, (-W) % 4
    if ph or pw:
        x = F.pad(x[None].double(), (0, pw, 0, ph), mode="replicate")[0].long()
    return x


@dataclass
class CodingStats:
    bits_pixels: float = 0.0
    bits_prior: float = 0.0
    bits_back: float = 0.0


class Codec:
    """Encoder/decoder for one model.  ``model_id`` is written to and checked in every file."""

    def __init__(self, model: VLAE, model_id: str, z_bits: int = DEFAULT_Z_BITS,
                 active_channels: list[int] | None = None, growth: int = DEFAULT_GROWTH,
                 tail: int = DEFAULT_TAIL):
        self.net = ExactVLAE(model)
        self.cfg = model.cfg
        self.model_id = model_id
        self.latents = Latents(z_bits)
        zc = self.cfg.z_channels
        self.active = list(range(zc)) if active_channels is None else sorted(active_channels)
        self.lag = (self.net.right + 1) if self.net.local else None
        self.growth, self.tail = growth, tail

    # --- pieces shared by encoder and decoder ---------------------------------------------
    def _rgb(self, x: torch.Tensor) -> torch.Tensor:
        """Grey images go through an RGB model as R = G = B."""
        return x.expand(self.cfg.channels, -1, -1) if x.shape[0] < self.cfg.channels else x

    def _z_from_bins(self, bins: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
        z = torch.zeros(1, self.cfg.z_channels, *grid, dtype=torch.float64)
        vals = self.latents.values(bins).reshape(len(self.active), *grid)
        z[0, self.active] = vals
        return z

    def _posterior_rows(self, x: torch.Tensor):
        """(mean, logscale) rows of the coded latents, in (channel, y, x) order."""
        mean, logscale = self.net.posterior(_pad4(x)[None])
        return mean[0, self.active].reshape(-1), logscale[0, self.active].reshape(-1)

    def _schedule(self, H: int, W: int):
        if self.lag is None:  # factorized: every pixel at once
            ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
            return [(ys.reshape(-1), xs.reshape(-1))]
        return wavefront(H, W, self.lag)

    # --- pixels -------------------------------------------------------------------------
    def _push_pixels(self, coder, x: np.ndarray, u_pad: np.ndarray, zhalf: np.ndarray,
                     rows: tuple[int, int], chunk: int = 8192) -> None:
        """Push the pixels of rows [r0, r1) of x [C,H,W] so that :meth:`_pop_pixels` pops them
        wave by wave.  Features are gathered exactly as the decoder gathers them, in chunks of
        waves, so memory stays bounded on any image size."""
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
        for group in self._progress(list(reversed(groups)), (r1 - r0) * W, "encode"):
            ys = np.concatenate([g[0] for g in group])
            xs = np.concatenate([g[1] for g in group])
            n = len(ys)
            zrows = np.ascontiguousarray(zhalf[:, ys >> 1, xs >> 1].T, dtype=np.float64)
            t = self.net.trunk_rows(self.net.context_rows(u_pad, ys + r0, xs, zrows))
            prev = np.ascontiguousarray(x[:, ys + r0, xs].T)
            probs = np.concatenate([self.net.probabilities(c, t, prev) for c in range(C)])
            symbols = prev.T.reshape(-1).astype(np.int32)
            # decoder order: wave by wave, and inside a wave channel by channel
            order, start = [], 0
            for g in group:
                m = len(g[0])
                for c in range(C):
                    order.append(np.arange(c * n + start, c * n + start + m))
                start += m
            order = np.concatenate(order)
            coder.encode_reverse(symbols[order], CATEGORICAL, probs[order])

    def _pop_pixels(self, coder, x: np.ndarray, u_pad: np.ndarray, zfeat: np.ndarray,
                    rows: tuple[int, int]) -> None:
        """Pop rows [r0, r1) into x [C,H,W] (and its padded network input u_pad)."""
        net = self.net
        C, _, W = x.shape
        r0, r1 = rows
        offset = 1 - self.cfg.levels
        for ys, xs in self._progress(self._schedule(r1 - r0, W), (r1 - r0) * W, "decode"):
            zrows = np.ascontiguousarray(zfeat[:, ys >> 1, xs >> 1].T, dtype=np.float64)
            ctx = net.context_rows(u_pad, ys + r0, xs, zrows)
            t = net.trunk_rows(ctx)
            prev = np.zeros((len(ys), C), dtype=np.int64)
            for c in range(C):
                sym = coder.decode(CATEGORICAL, net.probabilities(c, t, prev))
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

    # --- one band of one image: the unit of bits-back ----------------------------------
    def _encode_band(self, coder, x, u_pad, rows, borrow: bool, stats: CodingStats) -> None:
        band = x[:, rows[0]:rows[1]]
        grid = (-(-band.shape[1] // 4), -(-band.shape[2] // 4))
        mean, logscale = self._posterior_rows(band)
        if borrow:  # bits-back: z is a sample from q(z|x) read off the stack
            before = coder.num_bits()
            bins = coder.decode(CATEGORICAL, self.latents.posterior_probabilities(mean, logscale)).astype(np.int32)
            stats.bits_back += before - coder.num_bits()
        else:  # nothing below to borrow from: the posterior's mode bin, at the prior's cost
            bins = self.latents.mode_bins(mean)
        zhalf = self.net.z_features_half(self._z_from_bins(bins, grid))
        before = coder.num_bits()
        self._push_pixels(coder, x.numpy(), u_pad, zhalf, rows)
        stats.bits_pixels += coder.num_bits() - before
        before = coder.num_bits()
        coder.encode_reverse(bins, constriction.stream.model.Uniform(self.latents.K))
        stats.bits_prior += coder.num_bits() - before

    def _decode_band(self, coder, x, u_pad, rows, borrow: bool) -> None:
        r0, r1 = rows
        W = x.shape[2]
        grid = (-(-(r1 - r0) // 4), -(-W // 4))
        n_lat = len(self.active) * grid[0] * grid[1]
        bins = coder.decode(constriction.stream.model.Uniform(self.latents.K), n_lat).astype(np.int32)
        zhalf = self.net.z_features_half(self._z_from_bins(bins, grid))
        self._pop_pixels(coder, x, u_pad, zhalf, rows)
        if borrow:
            mean, logscale = self._posterior_rows(torch.from_numpy(x[:, r0:r1]))
            coder.encode_reverse(bins, CATEGORICAL, self.latents.posterior_probabilities(mean, logscale))

    def _encode_one(self, coder, img: np.ndarray, last: bool, stats: CodingStats) -> None:
        x = self._rgb(_to_chw(img))
        u_pad = self._padded_input(x.numpy())
        bands = band_rows(x.shape[1], self.tail if last else 0, self.growth)
        for i in reversed(range(len(bands))):
            self._encode_band(coder, x, u_pad, bands[i], not (last and i == len(bands) - 1), stats)

    def _decode_one(self, coder, info: ImageInfo, last: bool) -> np.ndarray:
        H, W, C = info.height, info.width, self.cfg.channels
        x = np.zeros((C, H, W), dtype=np.int64)
        u_pad = self._padded_input(x, known=False)
        bands = band_rows(H, self.tail if last else 0, self.growth)
        for i, rows in enumerate(bands):
            self._decode_band(coder, x, u_pad, rows, not (last and i == len(bands) - 1))
        img = np.ascontiguousarray(x.transpose(1, 2, 0)).astype(np.uint8)
        if info.channels < img.shape[2]:
            if not ((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()):
                raise VlaeError("corrupt file: a grey image decoded to colour")
            img = img[..., :1]
        return img

    # --- public API ---------------------------------------------------------------------
    def encode_many(self, images: list[np.ndarray], stats: CodingStats | None = None) -> bytes:
        """Code several [H,W,C] uint8 images (C = 1 or 3) on one chained ANS stack."""
        stats = stats if stats is not None else CodingStats()
        infos = []
        for img in images:
            check_image(img, self.cfg.channels)
            infos.append(ImageInfo(img.shape[1], img.shape[0], img.shape[2]))
        coder = constriction.stream.stack.AnsCoder()
        with torch.no_grad():
            for i in reversed(range(len(images))):
                self._encode_one(coder, images[i], last=i == len(images) - 1, stats=stats)
        header = Header(model_id=self.model_id[:2 * MODEL_ID_BYTES], z_bits=self.latents.bits,
                        active=self.active, images=infos, growth=self.growth, tail=self.tail,
                        digest=pixel_digest(images))
        return pack(header, coder.get_compressed())

    def encode(self, image: np.ndarray, stats: CodingStats | None = None) -> bytes:
        return self.encode_many([image], stats)

    def decode_many(self, data: bytes) -> list[np.ndarray]:
        header, words = unpack(data)
        if header.model_id != self.model_id[:2 * MODEL_ID_BYTES]:
            raise VlaeError(f"file was made with model {header.model_id}, not this model "
                            f"({self.model_id[:2 * MODEL_ID_BYTES]}); decode it with that model")
        if header.z_bits != self.latents.bits or any(c >= self.cfg.z_channels for c in header.active):
            raise VlaeError("corrupt file: latent layout does not match the model")
        # the file's layout (coded channels, bands) applies to this decode only
        saved = self.active, self.growth, self.tail
        self.active, self.growth, self.tail = header.active, header.growth, header.tail
        try:
            out = self._decode_payload(header, words)
        finally:
            self.active, self.growth, self.tail = saved
        if pixel_digest(out) != header.digest:
            raise VlaeError("decoded pixels fail their checksum (corrupt file); nothing written")
        return out

    def _decode_payload(self, header: Header, words: np.ndarray) -> list[np.ndarray]:
        coder = constriction.stream.stack.AnsCoder(words)
        out = []
        try:
            with torch.no_grad():
                for i, info in enumerate(header.images):
                    out.append(self._decode_one(coder, info, last=i == len(header.images) - 1))
        except VlaeError:
            raise
        except (ValueError, RuntimeError, AssertionError, IndexError) as e:
            # a payload that passes its CRC but is not ours (or a coder error): never a traceback
            raise VlaeError(f"corrupt file: payload does not decode ({type(e).__name__})") from None
        return out

    def decode(self, data: bytes) -> np.ndarray:
        images = self.decode_many(data)
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
