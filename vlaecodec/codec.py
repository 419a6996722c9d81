"""The codec of one VLAE model: checks images and files, and hands them to its coders.

* :class:`~vlaecodec.bands.BandChain`: lossless and near-lossless files, bits-back over bands
  (version 4 payloads: :mod:`vlaecodec.rans` and :mod:`vlaecodec.wave_coder`; versions 2
  and 3: constriction, :mod:`vlaecodec.payloads`);
* :class:`~vlaecodec.zonly.ZOnlyCoder`: lossy files (z only), previews and renders;
* both over one :class:`~vlaecodec.pixels.PixelCoder` (p(x|z), wave by wave) and one
  :class:`~vlaecodec.posterior.Posterior` (q(z|x)), which run on the exact network.

Settings (``threads``, ``progress``) are given once, to the constructor.  A codec runs on
an :class:`~vlaecodec.exact.ExactVLAE` (numpy only; :func:`vlaecodec.api.load_codec` builds
one from a zoo file); a torch :class:`~vlaecodec.model.VLAE` is accepted too (tests, training).

>>> import numpy as np
>>> from vlaecodec.model import VLAE, VLAEConfig
>>> codec = Codec(VLAE(VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1)), "0" * 64)
>>> img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
>>> data = codec.encode(img)
>>> bool((codec.decode(data) == img).all())
True
"""
from __future__ import annotations

import numpy as np

from .alpha import join, split, split_opaque
from .bands import DEFAULT_TAIL, BandChain, CodingStats, pixel_digest
from .errors import VlaeError
from .exact import ExactVLAE
from .fileformat import (MAX_ERROR, MODE_LOSSY, MODE_NEAR_LOSSLESS, MODEL_ID_BYTES, RANS_VERSION, RECON_NAMES,
                         STRIPES_VERSION, Header, ImageInfo, pack, unpack)
from .images import check_image
from .latents import Latents
from .pixels import Bins, PixelCoder, one_blas_thread
from .posterior import Posterior
from .stripes import STRIPE_PIXELS, join_stripes, split_stripes, stripe_heights
from .workers import pool_map, workers
from .zonly import ZOnlyCoder

DEFAULT_Z_BITS = 8


class Codec:
    """Encoder/decoder for one model (its exact network, or a torch VLAE to make it from).
    ``model_id`` is written to and checked in every file;
    ``active_channels``: the latent channels that lossless files code (default: all);
    ``threads``: BLAS threads for the whole-image convolutions and threads for the pixel
    work (the bytes do not depend on it); ``progress``: progress bars for large images;
    ``residuals``: new version 4 files with the residual histograms (:mod:`vlaecodec.residuals`;
    without, the files of vlaecodec 0.6 and 0.7); ``stripe_pixels``: the least pixels of a
    stripe of a version 5 file (:mod:`vlaecodec.stripes`)."""

    def __init__(self, model, model_id: str, z_bits: int = DEFAULT_Z_BITS,
                 active_channels: list[int] | None = None, tail: int = DEFAULT_TAIL,
                 threads: int = 1, progress: bool = False, residuals: bool = True,
                 stripe_pixels: int = STRIPE_PIXELS):
        net = model if isinstance(model, ExactVLAE) else ExactVLAE.from_module(model)
        self.cfg = net.cfg
        self.model_id = model_id
        self.z_bits = z_bits
        self.pixels = PixelCoder(net, threads, progress)
        self.posterior = Posterior(net, threads)
        active = list(range(self.cfg.z_channels)) if active_channels is None else sorted(active_channels)
        self.bands = BandChain(self.pixels, self.posterior, Latents(z_bits), model_id, active, tail, residuals)
        self.zonly = ZOnlyCoder(self.pixels, self.posterior, model_id, z_bits)
        self.stripe_pixels = stripe_pixels
        # the stripes' coder: one thread each, as many stripes at once as there are threads
        self._striped = (Codec(net, model_id, z_bits, active, tail, 1, progress, residuals)
                         if threads > 1 else self)

    @property
    def threads(self) -> int:
        return self.pixels.threads

    @property
    def progress(self) -> bool:
        return self.pixels.progress

    @property
    def tail(self) -> int:
        return self.bands.tail

    def _planes(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[ImageInfo]]:
        """Checked images as (planes to code, file entries): :func:`vlaecodec.alpha.split`."""
        for img in images:
            check_image(img, self.cfg.channels)
        return split(images)

    # --- encode -------------------------------------------------------------------------------
    def encode(self, image: np.ndarray, stats: CodingStats | None = None, max_error: int = 0,
               version: int = STRIPES_VERSION) -> bytes:
        return self.encode_many([image], stats, max_error, version)

    @one_blas_thread
    def encode_many(self, images: list[np.ndarray], stats: CodingStats | None = None,
                    max_error: int = 0, version: int = STRIPES_VERSION) -> bytes:
        """Code several [H,W,C] uint8 images (C = 1 grey, 3 RGB; 2 and 4 with alpha) on one
        chained ANS stack; with
        ``max_error = d > 0`` every decoded subpixel is within d of the original.
        ``version``: the file format, 5 (new: a large image alone, without an alpha plane, in
        stripes; otherwise version 4), 4 (never in stripes) or 3 (read by vlaecodec 0.4 and
        0.5 too)."""
        stats = stats if stats is not None else CodingStats()
        if not 0 <= max_error <= MAX_ERROR:
            raise VlaeError(f"max error must be 0 .. {MAX_ERROR}, not {max_error}")
        if max_error and 2 * max_error + 1 >= self.cfg.levels:  # a binary model: one bin for all
            raise VlaeError(f"near-lossless needs more than one bin of {2 * max_error + 1} values: "
                            f"this model's pixels have {self.cfg.levels} levels; code it losslessly")
        if version not in (3, RANS_VERSION, STRIPES_VERSION):
            raise VlaeError(f"lossless files are written as format version 3, 4 or 5, not {version}")
        planes, infos = self._planes(images)
        if version == STRIPES_VERSION and len(planes) == 1:
            heights = stripe_heights(infos[0].height, infos[0].width, self.stripe_pixels)
            if len(heights) > 1:
                return self._encode_stripes(planes[0], infos[0], heights, stats, max_error)
        return self.bands.encode(planes, infos, stats, max_error, min(version, RANS_VERSION))

    def _encode_stripes(self, plane: np.ndarray, info: ImageInfo, heights: list[int],
                        stats: CodingStats, max_error: int) -> bytes:
        """A version 5 file: each stripe a version 4 file, ``threads`` of them at once."""
        cuts = np.cumsum(heights)[:-1]
        parts = [(stripe, CodingStats()) for stripe in np.split(plane, cuts, axis=0)]
        with workers(self.threads) as pool:
            files = pool_map(pool, lambda p: self._striped.encode_many([p[0]], p[1], max_error, RANS_VERSION),
                             parts)
        for _, part in parts:
            stats.add(part)
        bins = Bins(max_error, self.cfg.levels)
        target = bins.value(bins.index(plane)).astype(np.uint8)   # what the decoder will see
        header = Header(model_id=self.model_id[:2 * MODEL_ID_BYTES], z_bits=self.z_bits,
                        active=self.bands.active, images=[info], bands=heights,
                        digest=pixel_digest(join([target], [info])), max_error=max_error,
                        mode=MODE_NEAR_LOSSLESS if max_error else 0, version=STRIPES_VERSION)
        return pack(header, join_stripes(files))

    @one_blas_thread
    def encode_lossy(self, images: list[np.ndarray], recon: str = "mean", seed: int = 0,
                     extra_bits: int = 0) -> bytes:
        """A file holding z only (:mod:`vlaecodec.zonly`), decoded with the ``recon`` rule."""
        if not self.cfg.latent:
            raise VlaeError("this model has no latent, so it has no z-only lossy files: it codes "
                            "lossless and near-lossless (for lossy, use a lossy model such as 'lossy')")
        if recon not in RECON_NAMES:
            raise VlaeError(f"reconstruction must be one of {RECON_NAMES}")
        for img in images:
            check_image(img, self.cfg.channels)
        return self.zonly.encode(*split_opaque(images, "a z-only lossy file"), recon, seed, extra_bits)

    # --- decode -------------------------------------------------------------------------------
    @one_blas_thread
    def decode_many(self, data: bytes, preview: bool = False, rule: str = "mean") -> list[np.ndarray]:
        """All images of a file.  ``preview``: only the z layer of a lossless or near-lossless
        file, reconstructed with ``rule`` (a lossy file always decodes this way); an
        interleaved file has no z layer in front, nor has a file without z (a model with no
        latent), so their preview is the full decode."""
        header, words = unpack(data)
        if header.model_id != self.model_id[:2 * MODEL_ID_BYTES]:
            raise VlaeError(f"file was made with model {header.model_id}, not this model "
                            f"({self.model_id[:2 * MODEL_ID_BYTES]}); decode it with that model")
        if header.z_bits > self.z_bits or any(c >= self.cfg.z_channels for c in header.active) \
                or (header.mode != MODE_LOSSY and header.z_bits != self.z_bits):
            raise VlaeError("corrupt file: latent layout does not match the model")
        if header.mode == MODE_LOSSY:
            return join(_guard(self.zonly.decode, header, words), header.images)
        if header.version == STRIPES_VERSION:
            return self._decode_stripes(header, words, preview, rule)
        if preview and not header.interleaved and header.active:
            return _guard(lambda: self.zonly.preview(header, self.bands.z_layer(header, words), rule))
        out = _guard(self.bands.decode, header, words)
        if pixel_digest(out) != header.digest:
            raise VlaeError("decoded pixels fail their checksum (corrupt file); nothing written")
        return out

    def _decode_stripes(self, header: Header, words: np.ndarray, preview: bool, rule: str) -> list[np.ndarray]:
        """A version 5 file's image: its stripes decoded ``threads`` at once, top to bottom."""
        files = split_stripes(header, words.tobytes())
        with workers(self.threads) as pool:
            parts = pool_map(pool, lambda f: self._striped.decode_many(f, preview, rule)[0], files)
        out = join([np.concatenate(parts, axis=0)], header.images)
        if not preview and pixel_digest(out) != header.digest:
            raise VlaeError("decoded pixels fail their checksum (corrupt file); nothing written")
        return out

    def decode(self, data: bytes, preview: bool = False) -> np.ndarray:
        images = self.decode_many(data, preview)
        if len(images) != 1:
            raise VlaeError(f"file holds {len(images)} images; use decode_many")
        return images[0]


def _guard(fn, *args):
    try:
        return fn(*args)
    except VlaeError:
        raise
    except (ValueError, RuntimeError, AssertionError, IndexError) as e:
        # a payload that passes its CRC but is not ours (or a coder error): never a traceback
        raise VlaeError(f"corrupt file: payload does not decode ({type(e).__name__})") from None
