"""The .vlae container (docs/FORMAT.md): parse and write headers without the model.

>>> h = Header(model_id="ab" * 8, z_bits=8, active=[0, 3], images=[ImageInfo(3, 2, 1)] * 5)
>>> data = pack(h, np.array([1, 2], dtype=np.uint32))
>>> h2, words = unpack(data)
>>> len(h2.images), h2.images[0].width, h2.active, words.tolist(), h.size
(5, 3, [0, 3], [1, 2], 53)
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
MODEL_ID_BYTES = 8                            # prefix of the SHA-256 of the weights file
_FIXED = struct.Struct("<4sBBB8sIHBH")       # magic, version, mode, z_bits, model, active mask, growth, tail, runs
_RUN = struct.Struct("<IHHB")                 # images in the run, width, height, channels
_TAIL = struct.Struct("<II8s")                # payload bytes, payload crc32, pixel digest
MAX_IMAGES = 1 << 20
MAX_SIDE = 65535


@dataclass
class ImageInfo:
    width: int
    height: int
    channels: int


@dataclass
class Header:
    model_id: str
    z_bits: int
    active: list[int]
    images: list[ImageInfo] = field(default_factory=list)
    mode: int = MODE_LOSSLESS
    version: int = VERSION
    growth: int = 8
    tail: int = 8
    digest: bytes = bytes(8)   # SHA-256 prefix of all decoded pixels, image after image

    def runs(self) -> list[tuple[int, ImageInfo]]:
        """Consecutive images of one shape, stored once: (count, shape)."""
        out: list[tuple[int, ImageInfo]] = []
        for im in self.images:
            if out and out[-1][1] == im:
                out[-1] = (out[-1][0] + 1, im)
            else:
                out.append((1, im))
        return out

    @property
    def size(self) -> int:
        return _FIXED.size + _RUN.size * len(self.runs()) + _TAIL.size + 4


def pack(header: Header, words: np.ndarray) -> bytes:
    payload = np.ascontiguousarray(words, dtype="<u4").tobytes()
    mask = sum(1 << c for c in header.active)
    runs = header.runs()
    out = bytearray(_FIXED.pack(MAGIC, header.version, header.mode, header.z_bits,
                                bytes.fromhex(header.model_id)[:MODEL_ID_BYTES], mask,
                                header.growth, header.tail, len(runs)))
    for count, im in runs:
        out += _RUN.pack(count, im.width, im.height, im.channels)
    out += _TAIL.pack(len(payload), zlib.crc32(payload), header.digest)
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out) + payload


def max_pixels() -> int:
    """Cap on declared pixels per image, checked before any allocation."""
    return int(os.environ.get("VLAECODEC_MAX_PIXELS", 1 << 28))


def unpack_header(data: bytes) -> tuple[Header, int]:
    """(header, payload offset); validates every field before anything is allocated."""
    if len(data) < _FIXED.size:
        raise VlaeError("not a .vlae file (too short)")
    magic, version, mode, z_bits, model, mask, growth, tail, n_runs = _FIXED.unpack_from(data, 0)
    if magic != MAGIC:
        raise VlaeError("not a .vlae file (bad magic)")
    if version != VERSION:
        raise VlaeError(f"unsupported .vlae format version {version} (this build reads {VERSION})")
    if mode not in MODE_NAMES:
        raise VlaeError(f"unsupported coding mode {mode}")
    if not 1 <= n_runs <= MAX_IMAGES or not 1 <= z_bits <= 16 or not 2 <= growth <= 1024:
        raise VlaeError("corrupt header")
    end = _FIXED.size + _RUN.size * n_runs + _TAIL.size + 4
    if len(data) < end:
        raise VlaeError("truncated file (header)")
    crc_stored, = struct.unpack_from("<I", data, end - 4)
    if zlib.crc32(data[:end - 4]) != crc_stored:
        raise VlaeError("corrupt header (checksum mismatch)")
    images: list[ImageInfo] = []
    total = 0
    for i in range(n_runs):
        count, w, h, c = _RUN.unpack_from(data, _FIXED.size + i * _RUN.size)
        if count < 1 or w < 1 or h < 1 or c not in (1, 3) or len(images) + count > MAX_IMAGES:
            raise VlaeError("corrupt header (image shape)")
        if w * h > max_pixels():
            raise VlaeError(f"image of {w}x{h} exceeds the pixel limit {max_pixels()} (VLAECODEC_MAX_PIXELS)")
        images.extend([ImageInfo(w, h, c)] * count)
        total += count * w * h
        if total > max_pixels():  # an archive's images count together
            raise VlaeError(f"file declares {total}+ pixels, over the limit {max_pixels()} (VLAECODEC_MAX_PIXELS)")
    _, _, digest = _TAIL.unpack_from(data, end - 4 - _TAIL.size)
    active = [c for c in range(32) if mask >> c & 1]
    header = Header(model.hex(), z_bits, active, images, mode, version, growth, tail, digest)
    return header, end


def unpack(data: bytes) -> tuple[Header, np.ndarray]:
    header, off = unpack_header(data)
    length, crc, _ = _TAIL.unpack_from(data, off - _TAIL.size - 4)
    payload = data[off:]
    if len(payload) < length:
        raise VlaeError("truncated file (payload)")
    if len(payload) > length or length % 4:
        raise VlaeError("corrupt file (payload length)")
    if zlib.crc32(payload) != crc:
        raise VlaeError("corrupt file (payload checksum mismatch)")
    return header, np.frombuffer(payload, dtype="<u4").astype(np.uint32)
