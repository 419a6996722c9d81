"""Lossless coding of images with bits-back ANS over the exact VLAE (see docs/FORMAT.md).

One image, as the decoder sees it (the encoder does the inverse, in reverse order)::

    z     = pop(uniform over 2**z_bits equal-prior-mass bins)    # prior p(z)
    x     = pop(local PixelCNN tables given z), wave by wave     # p(x|z)
    push(z, posterior tables q(z|x))                             # give back the borrowed bits

Images of an archive are chained on one ANS stack: the bits that image i borrows when the
encoder pops its z are the compressed bits of images i+1.. .  The last image has nothing to
borrow from, so its z is the posterior's mode bin, sent at the prior's cost.

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
from .exact import ExactVLAE, pixels_to_input
from .fileformat import Header, ImageInfo, max_pixels, pack, unpack
from .latents import Latents
from .model import VLAE

DEFAULT_Z_BITS = 8
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def pixel_digest(img: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(img, dtype=np.uint8).tobytes()).digest()[:8]


def wavefront(height: int, width: int, lag: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pixel sets that can be decoded together: (y, x) with x + lag*y = t, for t = 0, 1, ...

    With a window reaching ``lag - 1`` pixels to the right in the rows above, every pixel of
    step t depends only on pixels of earlier steps."""
    steps = []
    for t in range(width + lag * (height - 1)):
        y0 = max(0, -(-(t - width + 1) // lag))
        ys = torch.arange(y0, min(height - 1, t // lag) + 1)
        steps.append((ys, t - lag * ys))
    return steps


def _to_chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).long()


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
                 active_channels: list[int] | None = None):
        self.net = ExactVLAE(model)
        self.cfg = model.cfg
        self.model_id = model_id
        self.latents = Latents(z_bits)
        zc = self.cfg.z_channels
        self.active = list(range(zc)) if active_channels is None else sorted(active_channels)
        self.lag = (self.net.right + 1) if self.net.local else None

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
            ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
            return [(ys.reshape(-1), xs.reshape(-1))]
        return wavefront(H, W, self.lag)

    # --- pixels -------------------------------------------------------------------------
    def _push_pixels(self, coder, x: torch.Tensor, zfeat: torch.Tensor, chunk: int = 16384) -> None:
        """Push all pixels of x [C,H,W] so that :meth:`_pop_pixels` pops them wave by wave."""
        C, H, W = x.shape
        ctx = self.net.context(x[None], zfeat[None, :, :H, :W])[0]
        steps = self._schedule(H, W)
        groups, cur, size = [], [], 0
        for st in steps:  # group waves into chunks of about `chunk` pixels
            cur.append(st)
            size += len(st[0])
            if size >= chunk:
                groups.append(cur)
                cur, size = [], 0
        if cur:
            groups.append(cur)
        for group in reversed(groups):
            ys = torch.cat([g[0] for g in group])
            xs = torch.cat([g[1] for g in group])
            n = len(ys)
            t = self.net.trunk_rows(ctx[:, ys, xs].t().contiguous())
            prev = x[:, ys, xs].t().contiguous()
            probs = np.concatenate([self.net.probabilities(c, t, prev) for c in range(C)])
            symbols = np.concatenate([prev[:, c].numpy() for c in range(C)]).astype(np.int32)
            # decoder order: wave by wave, and inside a wave channel by channel
            order, start = [], 0
            for g in group:
                m = len(g[0])
                for c in range(C):
                    order.append(np.arange(c * n + start, c * n + start + m))
                start += m
            order = np.concatenate(order)
            coder.encode_reverse(symbols[order], CATEGORICAL, probs[order])

    def _pop_pixels(self, coder, zfeat: torch.Tensor, C: int, H: int, W: int) -> torch.Tensor:
        net = self.net
        x = torch.zeros(C, H, W, dtype=torch.long)
        pad = (net.up, net.left + net.right) if net.local else (0, 0)
        u_pad = torch.zeros(C, H + pad[0], W + pad[1], dtype=torch.float64)
        zf = zfeat[:, :H, :W]
        for ys, xs in self._schedule(H, W):
            ctx = net.context_rows(u_pad, ys, xs, zf[:, ys, xs].t())
            t = net.trunk_rows(ctx)
            prev = torch.zeros(len(ys), C, dtype=torch.long)
            for c in range(C):
                probs = net.probabilities(c, t, prev)
                sym = torch.from_numpy(coder.decode(CATEGORICAL, probs).astype(np.int64))
                prev[:, c] = sym
                x[c, ys, xs] = sym
                if net.local:
                    u_pad[c, ys + net.up, xs + net.left] = pixels_to_input(sym, self.cfg.levels)
        return x

    # --- one image ----------------------------------------------------------------------
    def _encode_one(self, coder, img: np.ndarray, borrow: bool, stats: CodingStats) -> None:
        x = self._rgb(_to_chw(img))
        H, W = x.shape[1:]
        grid = (-(-H // 4), -(-W // 4))
        mean, logscale = self._posterior_rows(x)
        uniform = constriction.stream.model.Uniform(self.latents.K)
        if borrow:  # bits-back: z is a sample from q(z|x) read off the stack
            q = self.latents.posterior_probabilities(mean, logscale)
            before = coder.num_bits()
            bins = coder.decode(CATEGORICAL, q).astype(np.int32)
            stats.bits_back += before - coder.num_bits()
        else:
            bins = self.latents.mode_bins(mean)
        zfeat = self.net.z_features(self._z_from_bins(bins, grid))[0]
        before = coder.num_bits()
        self._push_pixels(coder, x, zfeat)
        stats.bits_pixels += coder.num_bits() - before
        before = coder.num_bits()
        coder.encode_reverse(bins, uniform)
        stats.bits_prior += coder.num_bits() - before

    def _decode_one(self, coder, info: ImageInfo, borrow: bool) -> np.ndarray:
        H, W = info.height, info.width
        grid = (-(-H // 4), -(-W // 4))
        n_lat = len(self.active) * grid[0] * grid[1]
        uniform = constriction.stream.model.Uniform(self.latents.K)
        bins = coder.decode(uniform, n_lat).astype(np.int32)
        zfeat = self.net.z_features(self._z_from_bins(bins, grid))[0]
        x = self._pop_pixels(coder, zfeat, self.cfg.channels, H, W)
        if borrow:
            mean, logscale = self._posterior_rows(x)
            coder.encode_reverse(bins, CATEGORICAL, self.latents.posterior_probabilities(mean, logscale))
        img = x.permute(1, 2, 0).numpy().astype(np.uint8)
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
            infos.append(ImageInfo(img.shape[1], img.shape[0], img.shape[2], pixel_digest(img)))
        coder = constriction.stream.stack.AnsCoder()
        with torch.no_grad():
            for i in reversed(range(len(images))):
                self._encode_one(coder, images[i], borrow=i < len(images) - 1, stats=stats)
        header = Header(model_id=self.model_id, z_bits=self.latents.bits,
                        active=self.active, images=infos)
        return pack(header, coder.get_compressed())

    def encode(self, image: np.ndarray, stats: CodingStats | None = None) -> bytes:
        return self.encode_many([image], stats)

    def decode_many(self, data: bytes) -> list[np.ndarray]:
        header, words = unpack(data)
        if header.model_id != self.model_id:
            raise VlaeError(f"file was made with model {header.model_id[:16]}, not this model "
                            f"({self.model_id[:16]}); decode it with that model")
        if header.z_bits != self.latents.bits or any(c >= self.cfg.z_channels for c in header.active):
            raise VlaeError("corrupt file: latent layout does not match the model")
        self.active = header.active
        coder = constriction.stream.stack.AnsCoder(words)
        out = []
        with torch.no_grad():
            for i, info in enumerate(header.images):
                img = self._decode_one(coder, info, borrow=i < len(header.images) - 1)
                if pixel_digest(img) != info.digest:
                    raise VlaeError(f"decoded pixels of image {i} fail their checksum (corrupt file)")
                out.append(img)
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
