"""Lossless and near-lossless: the bits-back chain of bands (see docs/FORMAT.md).

A file, as the decoder sees it (the encoder does the inverse, in reverse order)::

    for every band of every image:  z_b = pop(uniform over 2**z_bits bins)     # prior p(z)
    for every band b, in order:
        x_b = pop(local PixelCNN tables given z_b), wave by wave                 # p(x|z)
        push(z_b, posterior tables q(z_b|x_b))                                   # bits back

Images with alpha are coded as planes (:mod:`vlaecodec.alpha`): the colour image, then the
alpha as a grey image; "image" below means a plane.  The last image is cut into bands of rows, each with its own z (the pixel window still reaches
across band borders).  Bands and images are chained on one ANS stack: the bits that a band
borrows when the encoder pops its z are the compressed bits of the bands decoded after it.
The very last band has nothing to borrow from: version 3 files code it with z = 0 (the prior's
median) and send no z for it; version 2 files sent the posterior's mode bin at the prior's full
price.  It is kept small (``tail`` rows).  Going up, each band is as tall as the
bits already on the stack can pay for (:meth:`BandChain.band_above`), and the file lists the
band heights.  All z come first, so the z layer decodes alone into a preview
(:meth:`BandChain.z_layer`, drawn by :mod:`vlaecodec.zonly`).

That front layer can only borrow from pixel bits: where a band's z would pop more bits than
the stack holds (binary images, whose z prior costs more than their pixels; nearly flat
images), the pops read past the data, the z are no posterior samples and bits-back fails.
Such files are made *interleaved* instead (a header flag, version 3): the decoder pops each
band's z just before its pixels, so a band borrows the z bits of the bands after it too, as
in plain bits-back ANS; the price is that the file has no z layer in front for a preview.

Near-lossless (``max_error = d``) codes each subpixel's bin of 2d+1 values with the model's
mass over that bin, the same way.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .alpha import join, planes_of
from .fileformat import MODE_NEAR_LOSSLESS, MODEL_ID_BYTES, RANS_VERSION, Header, ImageInfo, pack
from .latents import Latents
from .payloads import ConstrictionPayload, RansPayload
from .pixels import Bins, PixelCoder
from .posterior import Posterior
from .wave_coder import WaveCoder

DEFAULT_TAIL = 8    # rows of the last band, the only one with nothing to borrow from


def pixel_digest(images: list[np.ndarray]) -> bytes:
    """SHA-256 prefix of all pixels, image after image: checked after every decode."""
    h = hashlib.sha256()
    for img in images:
        h.update(np.ascontiguousarray(img, dtype=np.uint8).tobytes())
    return h.digest()[:8]


@dataclass
class Unit:
    """One band of one image: it has its own z and is the unit of bits-back."""
    image: int
    rows: tuple[int, int]
    borrow: bool       # False: nothing is decoded after it (v3: z = 0, not coded; v2: the mode bin)
    grid: tuple[int, int]

    @property
    def latents_per_channel(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class CodingStats:
    bits_pixels: float = 0.0
    bits_prior: float = 0.0
    bits_back: float = 0.0
    starved: bool = False   # a band popped its z from a stack holding fewer bits than z_bits per latent

    def add(self, other: CodingStats) -> None:
        self.bits_pixels += other.bits_pixels
        self.bits_prior += other.bits_prior
        self.bits_back += other.bits_back
        self.starved |= other.starved


def units(infos: list[ImageInfo], last_bands: list[int]) -> list[Unit]:
    """The bands of all images, in decoding order: one band per image, except the last
    image's ``last_bands`` (rows, top to bottom).  Only the very last band has nothing
    decoded after it to borrow from.

    >>> [(u.image, u.rows, u.borrow) for u in units([ImageInfo(8, 5, 3), ImageInfo(8, 20, 3)], [12, 8])]
    [(0, (0, 5), True), (1, (0, 12), True), (1, (12, 20), False)]
    """
    out = []
    for i, info in enumerate(infos):
        heights = last_bands if (i == len(infos) - 1 and last_bands) else [info.height]
        r0 = 0
        for h in heights:
            out.append(Unit(i, (r0, r0 + h), True, (-(-h // 4), -(-info.width // 4))))
            r0 += h
    out[-1].borrow = False
    return out


class BandChain:
    """Bits-back over bands for one model: ``active`` are the latent channels it codes (a
    decode uses the file's own), ``tail`` the rows of the last band."""

    SMALL = 32 * 32    # pixels of a last image small enough to also try coding whole with z = 0
    MAX_BAND_PIXELS = 1 << 20   # a Kodak image (393,216 pixels) is never cut by it

    def __init__(self, pixels: PixelCoder, posterior: Posterior, latents: Latents, model_id: str,
                 active: list[int], tail: int = DEFAULT_TAIL, residuals: bool = True):
        self.pixels, self.posterior, self.latents = pixels, posterior, latents
        self.residuals = residuals   # what new version 4 files are made with
        self.model_id = model_id
        self.active = list(active)
        self.tail = tail
        self.levels = pixels.cfg.levels
        net = pixels.net
        self.waves = WaveCoder(pixels.kernel, pixels.lag, net.up if net.local else 0,
                               net.left if net.local else 0, pixels.threads, pixels.progress)

    def payload(self, version: int, words: np.ndarray | None = None, residuals: bool = False):
        """The stack of a file version (:mod:`vlaecodec.payloads`): ``words`` to decode;
        ``residuals``: version 4's residual layer (new files have it)."""
        if version >= RANS_VERSION:
            return RansPayload(self.waves, self.latents, words, residuals)
        return ConstrictionPayload(self.pixels, self.latents, words)

    def band_above(self, coder, top: int, width: int) -> int:
        """Rows of the next band up, ending at row ``top`` of the last image: as many as the
        bits on the stack can pay for when the encoder pops the band's z.  Popping from a
        posterior close to the prior takes up to z_bits per latent; with fewer bits below,
        the pops would read past the data and cost more than the KL (measured: +3% on Kodak
        with bands 8 times the rows below them)."""
        per_latent_row = -(-width // 4) * len(self.active) * self.latents.bits
        rows = top if per_latent_row == 0 else 4 * max(1, coder.num_bits() // per_latent_row)
        # at most MAX_BAND_PIXELS: a band's features and intervals are held whole while it
        # is coded, and the stack's bits would soon pay for the rest of a large image
        rows = min(rows, max(4, self.MAX_BAND_PIXELS // width // 4 * 4))
        return top if top - rows < 4 else rows  # no sliver of a band on top

    # --- encoder ----------------------------------------------------------------------------
    def encode(self, images: list[np.ndarray], infos: list[ImageInfo], stats: CodingStats,
               max_error: int = 0, version: int = RANS_VERSION) -> bytes:
        """The planes of checked images (:func:`vlaecodec.alpha.split`: ``images``, and the
        images' file entries ``infos``) on one chained ANS stack; with
        ``max_error = d > 0`` every decoded subpixel is within d of the original.  The z layer
        goes in front, unless the chain starves for bits: then the file is also made
        interleaved.  A small last image is also tried as one bottom band (z = 0, nothing to
        borrow: a single 28x28 binary digit costs 59 bytes so, against 72 in bands).  The
        smallest file is kept.  ``version``: 4 (the rANS payload) or 3 (constriction's, for
        readers of vlaecodec 0.4 and 0.5)."""
        first = CodingStats()
        data = self._encode(images, infos, first, max_error, False, self.tail, version)
        tries = [(True, self.tail)] if first.starved else []
        last = planes_of(infos)[-1]
        if last.width * last.height <= self.SMALL:
            tries.append((first.starved, last.height))
        for interleaved, tail in tries:
            other = CodingStats()
            alt = self._encode(images, infos, other, max_error, interleaved, tail, version)
            if len(alt) < len(data):
                data, first = alt, other
        stats.add(first)
        return data

    def _encode(self, images: list[np.ndarray], infos: list[ImageInfo], stats: CodingStats,
                max_error: int, interleaved: bool, tail: int, version: int) -> bytes:
        bins = Bins(max_error, self.levels)
        # what the decoder will see: each subpixel on its bin's value (the image itself if d = 0)
        targets = [bins.value(bins.index(img)).astype(np.uint8) for img in images]
        residuals = version >= RANS_VERSION and self.residuals
        coder = self.payload(version, residuals=residuals)
        z_layer: list[np.ndarray] = []      # z of every band, in decoding order
        last_bands: list[int] = []
        for i in reversed(range(len(images))):
            x = self.posterior.image(targets[i])
            u_pad = self.pixels.padded_input(x)
            H, W = x.shape[1:]
            last = i == len(images) - 1
            top = H
            while top > 0:
                if not last:
                    rows = H
                elif top == H:  # the bottom band: nothing to borrow from, keep it small
                    rows = H if H <= tail + 4 else tail
                else:
                    rows = self.band_above(coder, top, W)
                unit = Unit(i, (top - rows, top), not (last and top == H), (-(-rows // 4), -(-W // 4)))
                z = self._encode_band(coder, x, u_pad, unit, bins, stats)
                if interleaved:  # the decoder pops this z right before the band's pixels
                    before = coder.num_bits()
                    coder.push_prior(z)
                    stats.bits_prior += coder.num_bits() - before
                else:
                    z_layer.insert(0, z)
                if last:
                    last_bands.insert(0, rows)
                top -= rows
        if z_layer:  # every z first in the file: the decoder pops them before any pixel
            before = coder.num_bits()
            coder.push_prior(np.concatenate(z_layer))
            stats.bits_prior += coder.num_bits() - before
        header = Header(model_id=self.model_id[:2 * MODEL_ID_BYTES], z_bits=self.latents.bits,
                        active=self.active, images=infos, bands=last_bands if len(last_bands) > 1 else [],
                        digest=pixel_digest(join(targets, infos)), max_error=max_error,
                        mode=MODE_NEAR_LOSSLESS if max_error else 0, interleaved=interleaved,
                        version=version, residuals=residuals)
        return pack(header, coder.compressed())

    def _encode_band(self, coder, x, u_pad, unit: Unit, bins: Bins, stats: CodingStats) -> np.ndarray:
        """Pop the band's z (if it borrows) and push its pixels; returns its coded z bins
        (none for the bottom band, which is coded with z = 0)."""
        r0, r1 = unit.rows
        n = len(self.active) * unit.latents_per_channel
        if unit.borrow and self.active:  # bits-back: z is a sample from q(z|x) read off the stack
            mean, logscale = self.posterior.rows(x[:, r0:r1], self.active)
            before = coder.num_bits()
            stats.starved |= before < n * self.latents.bits
            z = coder.pop_posterior(mean, logscale)
            stats.bits_back += before - coder.num_bits()
            values = self.latents.values(z)
        else:  # nothing below to borrow from, or no latent (latent=False): z = 0, not coded
            z = np.zeros(0, np.int32)
            values = np.zeros(n)
        zhalf = self.pixels.features(values, self.active, unit.grid)
        before = coder.num_bits()
        coder.push_pixels(x, u_pad, zhalf, unit.rows, bins)
        stats.bits_pixels += coder.num_bits() - before
        return z

    # --- decoder ----------------------------------------------------------------------------
    def _coded(self, header: Header, u: Unit) -> int:
        """How many z a band of this file codes: none for a version 3 file's bottom band."""
        return len(header.active) * u.latents_per_channel if u.borrow or header.version == 2 else 0

    def _values(self, header: Header, u: Unit, z: np.ndarray) -> np.ndarray:
        if self._coded(header, u):
            return self.latents.values(z)
        return np.zeros(len(header.active) * u.latents_per_channel)

    def _pop_z_layer(self, coder, header: Header) -> tuple[list[Unit], list[np.ndarray]]:
        bands = units(planes_of(header.images), header.bands)
        sizes = [self._coded(header, u) for u in bands]
        flat = coder.pop_prior(sum(sizes))
        return bands, np.split(flat, np.cumsum(sizes)[:-1])

    def z_layer(self, header: Header, words: np.ndarray) -> list[tuple[Unit, np.ndarray]]:
        """Every band (of the file's planes, :func:`vlaecodec.alpha.planes_of`) with its z
        values (the file's coded channels), without a pixel bit (a file with its z layer in
        front: not interleaved)."""
        bands, z_bins = self._pop_z_layer(self.payload(header.version, words, header.residuals), header)
        return [(u, self._values(header, u, z)) for u, z in zip(bands, z_bins)]

    def decode(self, header: Header, words: np.ndarray) -> list[np.ndarray]:
        """The images of a lossless or near-lossless file (its pixel digest not yet checked)."""
        coder = self.payload(header.version, words, header.residuals)
        planes = planes_of(header.images)
        if header.interleaved:
            bands = units(planes, header.bands)
        else:
            bands, z_bins = self._pop_z_layer(coder, header)
        bins = Bins(header.max_error, self.levels)
        pixels, active = self.pixels, header.active

        out, x = [], None
        for k, u in enumerate(bands):
            info = planes[u.image]
            if x is None:
                x, u_pad = pixels.blank(info)
            if header.interleaved:
                z = coder.pop_prior(self._coded(header, u))
            else:
                z = z_bins[k]
            zhalf = pixels.features(self._values(header, u, z), active, u.grid)
            coder.pop_pixels(x, u_pad, zhalf, u.rows, bins)
            if u.borrow and active:   # (no z coded: nothing to push back)
                mean, logscale = self.posterior.rows(x[:, u.rows[0]:u.rows[1]], active)
                coder.push_posterior(z, mean, logscale)
            if k + 1 == len(bands) or bands[k + 1].image != u.image:
                out.append(pixels.finish(x, info))
                x = None
        return join(out, header.images)
