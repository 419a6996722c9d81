"""Pictures from z alone: lossy files (z only), previews of lossless files, renders of a
latent grid.  No pixel bits: the local PixelCNN picks each subpixel from its table
(``mean``, ``mode`` or a ``sample``) in decoding order.

A lossy file sends each coded latent channel as its posterior mean's bin among ``2**b``
equal-prior-mass bins, with one ``b`` per channel for the whole file, set by the channel's
typical posterior width (log2 of 1.25/sigma, plus ``extra_bits``): channels whose posterior
is the prior cost nothing.
"""
from __future__ import annotations

import constriction
import numpy as np

from .alpha import join, planes_of
from .fileformat import MODE_LOSSY, MODEL_ID_BYTES, RECON_NAMES, Header, ImageInfo, pack
from .latents import Latents
from .pixels import PixelCoder, one_blas_thread, reconstruct
from .posterior import Posterior


class ZOnlyCoder:
    """The z-only coder of one model (``z_bits``: the most bits a lossy file spends on a latent)."""

    def __init__(self, pixels: PixelCoder, posterior: Posterior, model_id: str, z_bits: int):
        self.pixels, self.posterior = pixels, posterior
        self.model_id = model_id
        self.z_bits = z_bits
        self.cfg = pixels.cfg

    # --- lossy files ------------------------------------------------------------------------
    def encode(self, images: list[np.ndarray], infos: list[ImageInfo], recon: str = "mean",
               seed: int = 0, extra_bits: int = 0) -> bytes:
        """A file holding the z of checked images (their ``infos``) only; the decoder
        reconstructs the pixels with the ``recon`` rule (``seed``: of its samples)."""
        stats = []
        channels = list(range(self.cfg.z_channels))
        for img in images:
            mean, logscale = self.posterior.rows(self.posterior.image(img), channels)
            stats.append((mean.reshape(len(channels), -1), logscale.reshape(len(channels), -1)))
        # one bit depth per channel for the whole file, from the median posterior width
        ls = np.concatenate([s[1] for s in stats], axis=1) / (1 << 12)
        bits = np.round(_lower_median(np.log2(1.25 / np.exp(ls)))) + extra_bits
        bits = np.clip(bits, 0, self.z_bits).astype(np.int64).tolist()
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

    def decode(self, header: Header, words: np.ndarray) -> list[np.ndarray]:
        """The pictures of a lossy file."""
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
            zhalf = self.pixels.features(np.concatenate(values) if values else np.zeros(0), header.active, grid)
            out.append(self.picture(info, [((0, info.height), zhalf)], RECON_NAMES[header.recon], rng))
        return out

    # --- previews and renders -----------------------------------------------------------------
    def preview(self, header: Header, layer: list, rule: str) -> list[np.ndarray]:
        """The pictures of a lossless or near-lossless file from its z layer alone:
        ``layer`` is :meth:`vlaecodec.bands.BandChain.z_layer`'s (band, z values)."""
        rng = np.random.Generator(np.random.PCG64(0))
        out = []
        for i, info in enumerate(planes_of(header.images)):
            bands = [(u.rows, self.pixels.features(values, header.active, u.grid))
                     for u, values in layer if u.image == i]
            out.append(self.picture(info, bands, rule, rng))
        return join(out, header.images)

    def picture(self, info: ImageInfo, bands, rule: str, rng) -> np.ndarray:
        """The image ``info`` drawn from its bands' z features [(rows, zhalf)] by ``rule``."""
        pixels = self.pixels
        x, u_pad = pixels.blank(info)
        grey = info.channels < self.cfg.channels

        def pick(probs, c, prev):  # grey images: G = B = R, as they are coded
            return prev[:, 0] if grey and c else reconstruct(probs, rule, rng)

        for rows, zhalf in bands:
            pixels.pop(pick, x, u_pad, zhalf, rows)
        return pixels.finish(x, info)

    @one_blas_thread
    def render(self, z, height: int, width: int, rule: str = "sample", seed: int = 0) -> np.ndarray:
        """The PixelCNN's picture of a latent grid z [z_channels, ceil(H/4), ceil(W/4)] (floats,
        any array-like, as :meth:`vlaecodec.posterior.Posterior.mean` gives): a sample
        (``seed``), the mean or the mode at every subpixel, in decoding order."""
        z_int = np.clip(np.round(np.asarray(z, dtype=np.float64) * (1 << 12)), -(1 << 15), 1 << 15)
        zhalf = self.pixels.net.z_features_half(z_int[None])
        info = ImageInfo(width, height, self.cfg.channels)
        return self.picture(info, [((0, height), zhalf)], rule, np.random.Generator(np.random.PCG64(seed)))


def _lower_median(a: np.ndarray) -> np.ndarray:
    """Each row's median; of an even count, the lower of the two middle values (as torch's
    median, which made the files this must keep reproducing), not their mean."""
    return np.sort(a, axis=1)[:, (a.shape[1] - 1) // 2]

