"""The .vlae container (docs/FORMAT.md): parse and write headers without the model.

>>> h = Header(model_id="ab" * 32, z_bits=8, active=[0, 3], images=[ImageInfo(3, 2, 1, bytes(8))])
>>> data = pack(h, np.array([1, 2], dtype=np.uint32))
>>> h2, words = unpack(data)
>>> h2.images[0].width, h2.active, words.tolist()
(3, [0, 3], [1, 2])
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import VlaeError

MAGIC = b"VLAE"
VERSION = 1
MODE_LOSSLESS = 0
MODE_NAMES = {MODE_LOSSLESS: "lossless"}
_FIXED = struct.Struct("<4sBBBB32sQI")      # magic, version, mode, z_bits, reserved, model, active, n
_IMAGE = struct.Struct("<IIB8s")             # width, height, channels, pixel digest
_TAIL = struct.Struct("<QI")                 # payload bytes, payload crc32
MAX_IMAGES = 1 << 20


@dataclass
class ImageInfo:
    width: int
    height: int
    channels: int
    digest: bytes = bytes(8)


@dataclass
class Header:
    model_id: str
    z_bits: int
    active: list[int]
    images: list[ImageInfo] = field(default_factory=list)
    mode: int = MODE_LOSSLESS
    version: int = VERSION

    @property
    def size(self) -> int:
        return _FIXED.size + _IMAGE.size * len(self.images) + _TAIL.size + 4


def pack(header: Header, words: np.ndarray) -> bytes:
    payload = np.ascontiguousarray(words, dtype="<u4").tobytes()
    mask = sum(1 << c for c in header.active)
    out = bytearray(_FIXED.pack(MAGIC, header.version, header.mode, header.z_bits, 0,
                                bytes.fromhex(header.model_id), mask, len(header.images)))
    for im in header.images:
        out += _IMAGE.pack(im.width, im.height, im.channels, im.digest)
    out += _TAIL.pack(len(payload), zlib.crc32(payload))
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out) + payload


def max_pixels() -> int:
    """Cap on declared pixels per image, checked before any allocation."""
    return int(os.environ.get("VLAECODEC_MAX_PIXELS", 1 << 28))


def unpack_header(data: bytes) -> tuple[Header, int]:
    """(header, payload offset); validates every field before anything is allocated."""
    if len(data) < _FIXED.size:
        raise VlaeError("not a .vlae file (too short)")
    magic, version, mode, z_bits, _, model, mask, n = _FIXED.unpack_from(data, 0)
    if magic != MAGIC:
        raise VlaeError("not a .vlae file (bad magic)")
    if version != VERSION:
        raise VlaeError(f"unsupported .vlae format version {version} (this build reads {VERSION})")
    if mode not in MODE_NAMES:
        raise VlaeError(f"unsupported coding mode {mode}")
    if not 1 <= n <= MAX_IMAGES or not 1 <= z_bits <= 16:
        raise VlaeError("corrupt header")
    end = _FIXED.size + _IMAGE.size * n + _TAIL.size + 4
    if len(data) < end:
        raise VlaeError("truncated file (header)")
    crc_stored, = struct.unpack_from("<I", data, end - 4)
    if zlib.crc32(data[:end - 4]) != crc_stored:
        raise VlaeError("corrupt header (checksum mismatch)")
    images = []
    for i in range(n):
        w, h, c, digest = _IMAGE.unpack_from(data, _FIXED.size + i * _IMAGE.size)
        if w < 1 or h < 1 or c not in (1, 3):
            raise VlaeError("corrupt header (image shape)")
        if w * h > max_pixels():
            raise VlaeError(f"image of {w}x{h} exceeds the pixel limit {max_pixels()} (VLAECODEC_MAX_PIXELS)")
        images.append(ImageInfo(w, h, c, digest))
    active = [c for c in range(64) if mask >> c & 1]
    header = Header(model.hex(), z_bits, active, images, mode, version)
    return header, end


def unpack(data: bytes) -> tuple[Header, np.ndarray]:
    header, off = unpack_header(data)
    length, crc = _TAIL.unpack_from(data, off - _TAIL.size - 4)
    payload = data[off:]
    if len(payload) < length:
        raise VlaeError("truncated file (payload)")
    if len(payload) > length or length % 4:
        raise VlaeError("corrupt file (payload length)")
    if zlib.crc32(payload) != crc:
        raise VlaeError("corrupt file (payload checksum mismatch)")
    return header, np.frombuffer(payload, dtype="<u4").astype(np.uint32)
