"""Classical lossless codecs, each round-trip checked: name -> (encode, decode)."""
from __future__ import annotations

import io
import time

import imagecodecs
import numpy as np
from PIL import Image


def _squeeze(img: np.ndarray) -> np.ndarray:
    return img[..., 0] if img.shape[2] == 1 else img


def _png_encode(img):
    buf = io.BytesIO()
    Image.fromarray(_squeeze(img)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _png_decode(data):
    return np.asarray(Image.open(io.BytesIO(data)))


CODECS = {
    "png": (_png_encode, _png_decode),
    "webp-lossless-m6": (lambda a: imagecodecs.webp_encode(_squeeze(a), lossless=True, method=6),
                         imagecodecs.webp_decode),
    "jpegxl-e7": (lambda a: imagecodecs.jpegxl_encode(_squeeze(a), lossless=True, effort=7), imagecodecs.jpegxl_decode),
    "jpegxl-e9": (lambda a: imagecodecs.jpegxl_encode(_squeeze(a), lossless=True, effort=9), imagecodecs.jpegxl_decode),
    "jpegls": (lambda a: imagecodecs.jpegls_encode(_squeeze(a)), imagecodecs.jpegls_decode),
    "jpeg2000": (lambda a: imagecodecs.jpeg2k_encode(_squeeze(a), level=0, reversible=True), imagecodecs.jpeg2k_decode),
}


def timed_roundtrip(encode, decode, img: np.ndarray) -> tuple[bytes, bool, float, float]:
    """(file, exact, encode seconds, decode seconds) of one image."""
    t = time.perf_counter()
    data = encode(img)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    out = np.asarray(decode(data))
    dec = time.perf_counter() - t
    return data, out.size == img.size and bool(np.array_equal(out.reshape(img.shape), img)), enc, dec
