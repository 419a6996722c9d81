"""Python API: ``encode(image) -> bytes`` and ``decode(bytes) -> numpy array``.

>>> import numpy as np, vlaecodec.api as api
>>> img = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
>>> data = api.encode(img)                        # the default model from models/
>>> bool((api.decode(data) == img).all())
True
>>> near = api.decode(api.encode(img, max_error=2))  # near-lossless: every subpixel within 2
>>> int(abs(near.astype(int) - img).max()) <= 2
True
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .codec import Codec, CodingStats
from .evaluate import pad_to_multiple
from .fileformat import unpack_header
from .model import LOG2
from .zoo import DEFAULT_MODEL, load_model


@lru_cache(maxsize=4)
def _loaded(name: str):
    """(float model, card), read from disk once per process for the codec and the ELBO."""
    return load_model(name)


@lru_cache(maxsize=4)
def load_codec(name: str = DEFAULT_MODEL, threads: int = 1) -> Codec:
    """The codec of a zoo model (the model is cached per process); ``threads``: BLAS threads
    for its whole-image convolutions (the results do not depend on it)."""
    import sys
    model, card = _loaded(name)
    codec = Codec(model, card["model_id"], active_channels=card.get("active_channels"))
    codec.progress = sys.stderr.isatty()
    codec.threads = max(1, threads)
    return codec


def _hwc(image):
    return image[..., None] if isinstance(image, np.ndarray) and image.ndim == 2 else image


def encode(image: np.ndarray, model: str = DEFAULT_MODEL, max_error: int = 0) -> bytes:
    """.vlae bytes of a uint8 image [H,W], [H,W,1] or [H,W,3]: lossless, or with
    ``max_error = d`` near-lossless (every subpixel within d)."""
    return load_codec(model).encode(_hwc(image), max_error=max_error)


def encode_many(images: list[np.ndarray], model: str = DEFAULT_MODEL,
                stats: CodingStats | None = None, max_error: int = 0) -> bytes:
    """One archive holding several images, chained on one ANS stack."""
    return load_codec(model).encode_many([_hwc(i) for i in images], stats, max_error)


def encode_lossy(images: list[np.ndarray], model: str = DEFAULT_MODEL, recon: str = "mean",
                 seed: int = 0, extra_bits: int = 0) -> bytes:
    """A lossy file holding z only (see :meth:`Codec.encode_lossy`); a higher-beta model
    gives a smaller file that keeps only the global structure."""
    return load_codec(model).encode_lossy([_hwc(i) for i in images], recon, seed, extra_bits)


def _codec_for(data: bytes, model: str | None) -> Codec:
    if model is not None:
        return load_codec(model)
    header, _ = unpack_header(data)
    from .zoo import list_models
    for card in list_models():
        if card.get("sha256", "").startswith(header.model_id):
            return load_codec(card["name"])
    from .errors import VlaeError
    raise VlaeError(f"this file needs model {header.model_id}, which is not in the zoo")


def decode(data: bytes, model: str | None = None, preview: bool = False) -> np.ndarray:
    """Pixels [H,W,C] of a single-image .vlae file (the model is found from the file's id);
    ``preview``: the lossy picture from the file's z layer alone."""
    return _codec_for(data, model).decode(data, preview)


def decode_many(data: bytes, model: str | None = None, preview: bool = False,
                rule: str = "mean") -> list[np.ndarray]:
    return _codec_for(data, model).decode_many(data, preview, rule)


@torch.no_grad()
def elbo_parts(image: np.ndarray, model: str = DEFAULT_MODEL, samples: int = 4, seed: int = 0) -> tuple[float, float]:
    """The model's distortion and rate (KL) for one image, bits per subpixel (float network,
    averaged over z samples): their sum is the -ELBO."""
    net = _loaded(model)[0]
    x = torch.from_numpy(np.array(image, dtype=np.int64)).permute(2, 0, 1)[None]
    if x.shape[1] < net.cfg.channels:
        x = x.expand(-1, net.cfg.channels, -1, -1)
    x, valid = pad_to_multiple(x)
    torch.manual_seed(seed)
    d = r = 0.0
    for _ in range(samples):
        out = net(x, valid=valid)
        d += float(out["distortion"].sum())
        r += float(out["rate"].sum())
    scale = samples * LOG2 * image.size
    return d / scale, r / scale


def elbo_bpd(image: np.ndarray, model: str = DEFAULT_MODEL, samples: int = 4, seed: int = 0) -> float:
    """The model's -ELBO for one image in bits per subpixel."""
    return sum(elbo_parts(image, model, samples, seed))
