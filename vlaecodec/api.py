"""Python API: ``encode(image) -> bytes`` and ``decode(bytes) -> numpy array``.

>>> import numpy as np, vlaecodec.api as api
>>> img = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
>>> data = api.encode(img)                        # the default model from models/
>>> bool((api.decode(data) == img).all())
True
>>> near = api.decode(api.encode(img, max_error=2))  # near-lossless: every subpixel within 2
>>> int(abs(near.astype(int) - img).max()) <= 2
True

Lossless, near-lossless and z-only coding run on the exact integer network, built from the
weights as numpy arrays; lossy coding runs the lossy model's transforms in numpy: coding never
imports torch.  Only what needs a float VLAE does (the ELBO).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .errors import VlaeError
from .fileformat import ALPHA_NAMES, MODE_LATENT, MODE_NAMES, STRIPES_VERSION, unpack_header, with_metadata
from .zoo import DEFAULT_LOSSY_MODEL, DEFAULT_MODEL, is_lossy_model, load_model, load_weights, resolve

if TYPE_CHECKING:
    from .codec import Codec, CodingStats
    from .exact import ExactVLAE
    from .lossy_coder import LossyCoder


DEFAULT_BETA = 64.0   # the lossy dial's default: a middle rate (see the model card for Kodak)


@lru_cache(maxsize=4)
def _loaded(name: str):
    """(float model, card), read from disk once per process for the ELBO (imports torch)."""
    return load_model(name)


@lru_cache(maxsize=4)
def _exact(name: str) -> tuple[ExactVLAE, dict]:
    """(exact network, card), made from the weights file once per process for the codecs."""
    from .exact import ExactVLAE   # numba's kernels: imported by the modes that need them only
    weights, cfg, card = load_weights(name)
    return ExactVLAE(weights, cfg), card


@lru_cache(maxsize=4)
def load_codec(name: str = DEFAULT_MODEL, threads: int = 1, progress: bool = False) -> Codec:
    """The codec of a zoo model (the model is cached per process); ``threads``: BLAS threads
    for its whole-image convolutions (the results do not depend on it); ``progress``: a bar
    on stderr for large images (the CLI asks for it on a terminal; a library stays quiet)."""
    from .codec import Codec
    net, card = _exact(name)
    return Codec(net, card["model_id"], active_channels=card.get("active_channels"),
                 threads=max(1, threads), progress=progress)


def _hwc(image):
    return image[..., None] if isinstance(image, np.ndarray) and image.ndim == 2 else image


# Effort 2 also codes with these zoo models and keeps the smallest file.  They were trained
# on different pictures (``default``: CIFAR-10 and photos; ``fast``: also clean modern photos
# and graphics), so each wins on some images; a file names the model that made it, so the
# decoder needs no flag.  Effort 1 codes with the one model asked for.
EFFORT_MODELS = ("default", "fast")
EFFORTS = (1, 2)


def effort_models(model: str, effort: int) -> list[str]:
    """The models an encode at this effort tries, ``model`` first; at effort 2, the others of
    :data:`EFFORT_MODELS` that code the same kind of image (8-bit, same channels).

    >>> effort_models("default", 1), effort_models("default", 2)
    (['default'], ['default', 'fast'])
    >>> effort_models("bmnist-local", 2)      # binary images: no other model codes them
    ['bmnist-local']
    """
    if effort not in EFFORTS:
        raise VlaeError(f"effort must be one of {', '.join(map(str, EFFORTS))} (got {effort!r})")
    if effort == 1:
        return [model]
    def kind(name):
        cfg = _exact(name)[0].cfg
        return cfg.levels, cfg.channels
    return [model] + [m for m in EFFORT_MODELS if resolve(m) != resolve(model) and kind(m) == kind(model)]


def _attach(data: bytes, metadata: list[dict[str, bytes]] | None) -> bytes:
    """The file with its images' metadata in the header, where any is given."""
    return with_metadata(data, metadata) if metadata and any(metadata) else data


def encode(image: np.ndarray, model: str = DEFAULT_MODEL, max_error: int = 0, effort: int = 1,
           metadata: dict[str, bytes] | None = None) -> bytes:
    """.vlae bytes of a uint8 image [H,W], [H,W,1] or [H,W,3], or with alpha last [H,W,2] or
    [H,W,4] (the alpha is coded the same way, or flagged where it is opaque): lossless, or with
    ``max_error = d`` near-lossless (every subpixel within d); ``effort`` 2 tries more
    models and keeps the smallest file (:func:`effort_models`); ``metadata``: kept beside the
    pixels, for :func:`metadata` to give back (``icc_profile``, ``exif``, ``xmp``: bytes).

    >>> img = np.zeros((4, 6, 3), dtype=np.uint8)
    >>> metadata(encode(img, metadata={"icc_profile": b"a profile"}))
    [{'icc_profile': b'a profile'}]
    """
    data = min((load_codec(m).encode(_hwc(image), max_error=max_error) for m in effort_models(model, effort)),
               key=len)
    return _attach(data, [metadata or {}])


def encode_many(images: list[np.ndarray], model: str = DEFAULT_MODEL,
                stats: CodingStats | None = None, max_error: int = 0, threads: int = 1,
                progress: bool = False, effort: int = 1,
                metadata: list[dict[str, bytes]] | None = None) -> bytes:
    """One archive holding several images, chained on one ANS stack (``threads``,
    ``progress``: see :func:`load_codec`; ``effort``: see :func:`encode`, one model for the
    whole archive; ``metadata``: one dict per image, as for :func:`encode`).  ``stats`` are
    those of the model asked for."""
    images = [_hwc(i) for i in images]
    best = None
    for k, m in enumerate(effort_models(model, effort)):
        data = load_codec(m, threads, progress).encode_many(images, stats if k == 0 else None, max_error)
        best = data if best is None or len(data) < len(best) else best
    return _attach(best, metadata)


@lru_cache(maxsize=4)
def load_lossy(name: str = DEFAULT_LOSSY_MODEL, threads: int = 1, effort: int = 1) -> LossyCoder:
    """The coder of a lossy (hyperprior) zoo model (numpy only; at effort 2 its encoder
    searches each image's latents, in torch); ``threads``: threads that share its layers and
    its loop filter (the files and pixels do not depend on it; effort 2's search, in torch,
    may)."""
    from .lossy_coder import load_lossy_coder
    return load_lossy_coder(name, threads, effort=effort)


def is_lossy(model: str) -> bool:
    """Whether a zoo name or weights path is a lossy (hyperprior) model."""
    return is_lossy_model(resolve(model))


def encode_lossy(images: list[np.ndarray], model: str = DEFAULT_LOSSY_MODEL, recon: str = "mean",
                 seed: int = 0, extra_bits: int = 0, beta: float | None = None,
                 target_bpp: float | None = None, threads: int = 1, progress: bool = False,
                 metadata: list[dict[str, bytes]] | None = None,
                 return_pictures: bool = False, effort: int = 1) -> bytes | tuple[bytes, list[np.ndarray]]:
    """A lossy file.  With a lossy model (the default, ``lossy``): the picture's latent at
    rate weight ``beta`` (higher: smaller file; default :data:`DEFAULT_BETA`), or at the beta
    whose file is closest to ``target_bpp`` bits per pixel.  With a VLAE model (``default``,
    ``beta-0.5``, ...): the 0.3 file holding z only (``recon``, ``seed``, ``extra_bits``).
    ``metadata``: one dict per image, as for :func:`encode`.  ``return_pictures``: also the
    pictures the file decodes to, as :func:`decode_many` gives them (at a given beta, drawn
    by the encoder on its way, which saves decoding the file).  ``effort`` 2 (lossy models
    only): the encoder searches each image's latents for a smaller D + beta R
    (:mod:`vlaecodec.lossy_refine`); slower to encode, decoded as fast as effort 1.

    >>> img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    >>> out = decode(encode_lossy([img], beta=100.0))
    >>> out.shape
    (16, 16, 3)
    >>> data, pictures = encode_lossy([img], beta=100.0, return_pictures=True)
    >>> np.array_equal(pictures[0], out)
    True
    """
    images = [_hwc(i) for i in images]
    pictures = None
    if not is_lossy(model):
        if beta is not None or target_bpp is not None:
            raise VlaeError(f"model {model!r} holds z only: it has no beta dial (use a lossy model)")
        if effort != 1:
            raise VlaeError(f"model {model!r} holds z only: effort is for lossy models (use a lossy model)")
        data = load_codec(model, threads, progress).encode_lossy(images, recon, seed, extra_bits)
    elif beta is not None and target_bpp is not None:
        raise VlaeError("give a beta or a target rate, not both")
    elif target_bpp is not None:
        data = load_lossy(model, threads, effort).encode_to_rate(images, target_bpp)[0]
    elif return_pictures:
        data, pictures = load_lossy(model, threads, effort).encode_and_draw(images, DEFAULT_BETA if beta is None else beta)
    else:
        data = load_lossy(model, threads, effort).encode(images, DEFAULT_BETA if beta is None else beta)
    if not return_pictures:
        return _attach(data, metadata)
    if pictures is None:   # a searched rate or a z-only file: the file is decoded
        pictures = decode_many(data, model, threads=threads)
    return _attach(data, metadata), pictures


def _card_for(header) -> dict:
    from .zoo import list_models
    for card in list_models():
        if card.get("sha256", "").startswith(header.model_id):
            return card
    raise VlaeError(f"this file needs model {header.model_id}, which is not in the zoo")


def _codec_for(data: bytes, model: str | None, threads: int = 1, progress: bool = False) -> Codec:
    if model is not None:
        return load_codec(model, threads, progress)
    header, _ = unpack_header(data)
    return load_codec(_card_for(header)["name"], threads, progress)


def _lossy_for(data: bytes, model: str | None, threads: int = 1) -> LossyCoder | None:
    """The lossy coder a hyperprior file needs, or None for the other modes."""
    header, _ = unpack_header(data)
    if header.mode != MODE_LATENT:
        return None
    return load_lossy(model if model is not None else _card_for(header)["name"], threads)


def decode(data: bytes, model: str | None = None, preview: bool = False, threads: int = 1) -> np.ndarray:
    """Pixels [H,W,C] of a single-image .vlae file (the model is found from the file's id);
    ``preview``: the lossy picture from the file's z layer alone (a lossy file's picture is
    its preview); ``threads``: see :func:`load_codec` and :func:`load_lossy` (the pixels do
    not depend on it)."""
    lossy = _lossy_for(data, model, threads)
    if lossy is None:
        return _codec_for(data, model, threads).decode(data, preview)
    images = lossy.decode(data)
    if len(images) != 1:
        raise VlaeError(f"file holds {len(images)} images; use decode_many")
    return images[0]


def decode_many(data: bytes, model: str | None = None, preview: bool = False,
                rule: str = "mean", threads: int = 1, progress: bool = False) -> list[np.ndarray]:
    """Every image of a .vlae file, an archive's in order; ``preview`` and ``rule``: as for
    :func:`decode`, and how a z-only picture picks each subpixel; ``threads``: see
    :func:`load_codec`."""
    lossy = _lossy_for(data, model, threads)
    if lossy is not None:
        return lossy.decode(data)
    return _codec_for(data, model, threads, progress).decode_many(data, preview, rule)


def info(data: bytes) -> dict:
    """What a .vlae file's header says (no model needed, the payload is not read): the first
    image's shape, the number of images, the mode, the model id, the sizes, bits per subpixel,
    the format version.

    >>> img = np.zeros((4, 6, 3), dtype=np.uint8)
    >>> rec = info(encode(img, max_error=1))
    >>> rec["width"], rec["height"], rec["images"], rec["mode"], rec["max_error"], rec["format_version"]
    (6, 4, 1, 'near-lossless', 1, 4)
    """
    header, _ = unpack_header(data)
    dims = sum(i.width * i.height * i.shown_channels for i in header.images)
    first = header.images[0]
    rec = {"width": first.width, "height": first.height, "channels": first.shown_channels,
           "images": len(header.images), "mode": MODE_NAMES[header.mode],
           "model": header.model_id, "z_bits": header.z_bits, "bytes": len(data),
           "header_bytes": header.size, "bpd": len(data) * 8 / dims, "format_version": header.version}
    try:   # the zoo's name for the model, where the zoo has it
        rec["model_name"] = _card_for(header)["name"]
    except VlaeError:
        pass
    if first.alpha:   # the alpha channel is the last one: coded as a plane, or opaque (not coded)
        rec["alpha"] = ALPHA_NAMES[first.alpha]
    if header.metadata.get(0):   # what the first image carries beside its pixels, in bytes
        rec["metadata"] = {k: len(v) for k, v in sorted(header.metadata[0].items())}
    if header.version == STRIPES_VERSION:   # coded as independent stripes, decoded threads at once
        rec["stripes"] = len(header.bands)
    if header.max_error:
        rec["max_error"] = header.max_error
    if header.channel_bits:
        rec["latent_bits"] = dict(zip(header.active, header.channel_bits))
    if header.mode == MODE_LATENT:
        rec["beta"] = round(float(header.beta), 6)
        rec["bpp"] = len(data) * 8 / sum(i.width * i.height for i in header.images)
        rec["loop_filter"] = header.filtered   # a per-image loop filter follows each picture
        if header.filtered:
            rec["loop_filter_kinds"] = header.filter_kinds   # of loop_filter.CLIPS, each picture's its own
    return rec


def metadata(data: bytes) -> list[dict[str, bytes]]:
    """Each image's metadata as the file keeps it (``icc_profile``, ``exif``, ``xmp``: bytes;
    ``{}`` where it has none), from the header alone."""
    header, _ = unpack_header(data)
    return [header.metadata.get(i, {}) for i in range(len(header.images))]


def elbo_parts(image: np.ndarray, model: str = DEFAULT_MODEL, samples: int = 4, seed: int = 0) -> tuple[float, float]:
    """The model's distortion and rate (KL) for one image's colour channels, bits per
    subpixel (float network, averaged over z samples): their sum is the -ELBO.  Imports torch."""
    import torch

    from .evaluate import pad_to_multiple
    from .model import LOG2
    net = _loaded(model)[0]
    image = image[..., :3 if image.shape[2] >= 3 else 1]    # the colour channels
    x = torch.from_numpy(np.array(image, dtype=np.int64)).permute(2, 0, 1)[None]
    if x.shape[1] < net.cfg.channels:
        x = x.expand(-1, net.cfg.channels, -1, -1)
    x, valid = pad_to_multiple(x)
    torch.manual_seed(seed)
    d = r = 0.0
    with torch.no_grad():
        for _ in range(samples):
            out = net(x, valid=valid)
            d += float(out["distortion"].sum())
            r += float(out["rate"].sum())
    scale = samples * LOG2 * image.size
    return d / scale, r / scale


def elbo_bpd(image: np.ndarray, model: str = DEFAULT_MODEL, samples: int = 4, seed: int = 0) -> float:
    """The model's -ELBO for one image in bits per subpixel."""
    return sum(elbo_parts(image, model, samples, seed))
