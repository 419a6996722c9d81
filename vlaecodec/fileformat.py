"""The .vlae container (docs/FORMAT.md): parse and write headers without the model.

>>> h = Header(model_id="ab" * 8, z_bits=8, active=[0, 3], images=[ImageInfo(3, 2, 1)] * 5)
>>> data = pack(h, np.array([1, 2], dtype=np.uint32))
>>> h2, words = unpack(data)
>>> len(h2.images), h2.images[0].width, h2.active, words.tolist(), h.size, h2.version
(5, 3, [0, 3], [1, 2], 39, 3)
>>> old = Header(model_id="ab" * 8, z_bits=8, active=[0, 3], images=[ImageInfo(3, 2, 1)] * 5, version=2)
>>> unpack(pack(old, np.array([1, 2], dtype=np.uint32)))[0].version, old.size
(2, 52)
>>> lossy = Header(model_id="ab" * 8, z_bits=8, active=[0, 3], images=[ImageInfo(3, 2, 1)],
...                mode=MODE_LOSSY, channel_bits=[2, 1])
>>> unpack(pack(lossy, np.array([7], dtype=np.uint32)))[0].channel_bits
[2, 1]
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import VlaeError

MAGIC = b"VLAE"
VERSION = 3                                   # what new lossy files are written as
RANS_VERSION = 4                              # new lossless and near-lossless files: rANS payload
STRIPES_VERSION = 5                           # ... of large images: version 4 files of stripes (stripes.py)
VERSIONS = (2, 3, 4, 5)                       # what this build reads
MODE_LOSSLESS = 0
MODE_NEAR_LOSSLESS = 1
MODE_LOSSY = 2                                # z only, from a VLAE model (0.3)
MODE_LATENT = 3                               # lossy from the hyperprior model (0.4)
MODE_NAMES = {MODE_LOSSLESS: "lossless", MODE_NEAR_LOSSLESS: "near-lossless", MODE_LOSSY: "lossy",
              MODE_LATENT: "lossy"}
RECON_NAMES = ["mean", "mode", "sample"]      # how lossy and preview decodes pick each subpixel
MAX_ERROR = 64
MODEL_ID_BYTES = 8                            # prefix of the SHA-256 of the weights file
_FIXED = struct.Struct("<4sBBB8sIHH")        # magic, version, mode, z_bits, model, active mask, bands, runs
_BAND = struct.Struct("<H")                   # rows of one band of the last image
_RUN = struct.Struct("<IHHB")                 # images in the run, width, height, channels
_TAIL = struct.Struct("<II8s")                # payload bytes, payload crc32, pixel digest
_NEAR = struct.Struct("<B")                   # near-lossless: max error
_LOSSY = struct.Struct("<BI")                 # lossy: reconstruction rule, seed; then bits per active channel
_LATENT = struct.Struct("<f")                 # lossy (hyperprior): beta
FLAG_INTERLEAVED = 1                          # v3: each band's z just before its pixels (no z layer in front)
FLAG_METADATA = 2                             # v3/v4: the header holds metadata (ICC profile, EXIF, XMP)
FLAG_RESIDUALS = 4                            # v4: pixels also mixed with adaptive residual histograms
FLAG_FILTER_KINDS = 4                         # v3 mode 3, the same bit: each loop filter names its kind
FLAG_FILTERED = 8                             # v3 mode 3: each picture followed by its loop filter
# Metadata an image carries beside its pixels, by its four-byte tag in the file; each entry is
# stored zlib-compressed (an ICC profile shrinks by about half).
METADATA_TAGS = {b"ICCP": "icc_profile", b"EXIF": "exif", b"XMP ": "xmp"}
MAX_METADATA = 1 << 24                        # bytes of one entry, uncompressed
_MODE_MASK = 0x0F                             # v3: the mode byte holds the mode and, above it, flags
MAX_IMAGES = 1 << 20
MAX_SIDE = 65535
# An image's alpha channel (versions 3 and 4: the high half of its channels byte).  A plane
# is coded after the colour image as a grey image of its own; an opaque one (every value
# 255, as in most screenshots) is not coded at all.
ALPHA_NONE, ALPHA_PLANE, ALPHA_OPAQUE = 0, 1, 2
ALPHA_NAMES = {ALPHA_PLANE: "coded", ALPHA_OPAQUE: "opaque"}


@dataclass
class ImageInfo:
    width: int
    height: int
    channels: int               # colour channels: 1 (grey) or 3 (RGB)
    alpha: int = ALPHA_NONE

    @property
    def shown_channels(self) -> int:
        """Channels of the decoded array: the colour ones, plus one for alpha."""
        return self.channels + (self.alpha != ALPHA_NONE)


@dataclass
class Header:
    model_id: str
    z_bits: int
    active: list[int]
    images: list[ImageInfo] = field(default_factory=list)
    mode: int = MODE_LOSSLESS
    version: int = VERSION
    bands: list[int] = field(default_factory=list)  # rows of the last image's bands, top to bottom (version 5: of its stripes)
    digest: bytes = bytes(8)   # SHA-256 prefix of all decoded pixels, image after image
    max_error: int = 0         # near-lossless: every subpixel within this of the original
    recon: int = 0             # lossy: index into RECON_NAMES
    seed: int = 0              # lossy: seed of the "sample" reconstruction
    channel_bits: list[int] = field(default_factory=list)  # lossy: bits per active latent channel
    beta: float = 0.0          # lossy (hyperprior): the rate weight the file was made at
    interleaved: bool = False  # v3 lossless/near-lossless: z band by band, not all in front
    residuals: bool = False    # v4: the pixel intervals' second adaptation layer (residuals.py)
    filtered: bool = False     # v3 mode 3: every picture has a loop filter (loop_filter.py)
    filter_kinds: int = 1      # v3 mode 3, filtered: the kinds of loop filter a picture may have (loop_filter.CLIPS): 1 or 2
    payload_words: int = 0     # v3, as read: the payload's length in 32-bit words
    payload_crc: int = 0       # v3, as read: its CRC-32
    metadata: dict[int, dict[str, bytes]] = field(default_factory=dict)  # v3/v4: image index -> its metadata

    @property
    def has_digest(self) -> bool:
        return self.version == 2 or self.mode in (MODE_LOSSLESS, MODE_NEAR_LOSSLESS)

    def runs(self) -> list[tuple[int, ImageInfo]]:
        """Consecutive images of one shape, stored once: (count, shape)."""
        out: list[tuple[int, ImageInfo]] = []
        for im in self.images:
            if out and out[-1][1] == im:
                out[-1] = (out[-1][0] + 1, im)
            else:
                out.append((1, im))
        return out

    def extension(self) -> bytes:
        """The mode's own fields, between the shape runs and the payload fields."""
        if self.mode == MODE_NEAR_LOSSLESS:
            return _NEAR.pack(self.max_error)
        if self.mode == MODE_LOSSY:
            return _LOSSY.pack(self.recon, self.seed) + bytes(self.channel_bits)
        if self.mode == MODE_LATENT:
            return _LATENT.pack(self.beta)
        return b""

    @property
    def size(self) -> int:
        if self.version >= 3:  # the payload's length (as read; a varint) and two CRCs
            return len(_pack3(self)) + len(_varint(self.payload_words)) + 8
        return (_FIXED.size + _RUN.size * len(self.runs()) + _BAND.size * len(self.bands)
                + len(self.extension()) + _TAIL.size + 4)


def _varint(n: int) -> bytes:
    """LEB128: 7 bits a byte, low first."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """(value, next offset); at most 5 bytes (32 bits)."""
    n = 0
    for k in range(5):
        if at >= len(data):
            raise VlaeError("truncated file (header)")
        b = data[at]
        at += 1
        n |= (b & 0x7F) << (7 * k)
        if not b & 0x80:
            return n, at
    raise VlaeError("corrupt header (number too long)")


def _read_varints(data: bytes, at: int, n: int) -> tuple[list[int], int]:
    out = []
    for _ in range(n):
        value, at = _read_varint(data, at)
        out.append(value)
    return out, at


def _extension_size(mode: int, n_active: int) -> int:
    return {MODE_NEAR_LOSSLESS: _NEAR.size, MODE_LOSSY: _LOSSY.size + n_active,
            MODE_LATENT: _LATENT.size}.get(mode, 0)


def _read_extension(header: Header, data: bytes, at: int) -> None:
    """The mode's own fields, at ``at`` (checked for length by the caller)."""
    if header.mode == MODE_NEAR_LOSSLESS:
        header.max_error, = _NEAR.unpack_from(data, at)
    elif header.mode == MODE_LOSSY:
        header.recon, header.seed = _LOSSY.unpack_from(data, at)
        header.channel_bits = list(data[at + _LOSSY.size:at + _LOSSY.size + len(header.active)])
    elif header.mode == MODE_LATENT:
        header.beta, = _LATENT.unpack_from(data, at)


def _pack3(header: Header) -> bytes:
    """A version 3 or 4 header without its CRC (docs/FORMAT.md): varints, no zero fields."""
    flags = ((FLAG_INTERLEAVED if header.interleaved else 0) | (FLAG_METADATA if _any_metadata(header) else 0)
             | (FLAG_RESIDUALS if header.residuals else 0) | (FLAG_FILTERED if header.filtered else 0)
             | (FLAG_FILTER_KINDS if header.filtered and header.filter_kinds == 2 else 0))
    out = bytearray(MAGIC + bytes([header.version, header.mode | flags << 4, header.z_bits]))
    out += bytes.fromhex(header.model_id)[:MODEL_ID_BYTES]
    out += _varint(sum(1 << c for c in header.active))
    runs = header.runs()
    out += _varint(len(runs))
    for count, im in runs:
        out += _varint(count) + _varint(im.width) + _varint(im.height) + bytes([im.channels | im.alpha << 4])
    out += _varint(len(header.bands))
    for rows in header.bands:
        out += _varint(rows)
    out += header.extension()
    if _any_metadata(header):
        out += _pack_metadata(header)
    if header.has_digest:
        out += header.digest
    return bytes(out)


def _any_metadata(header: Header) -> bool:
    return any(header.metadata.values())


def _pack_metadata(header: Header) -> bytes:
    """Entries: image index, tag, raw length, stored length (varints but the tag), zlib bytes."""
    names = {v: k for k, v in METADATA_TAGS.items()}
    entries = [(i, names[key], value) for i, meta in sorted(header.metadata.items())
               for key, value in sorted(meta.items())]
    out = bytearray(_varint(len(entries)))
    for i, tag, value in entries:
        if len(value) > MAX_METADATA:
            raise VlaeError(f"{METADATA_TAGS[tag]} of {len(value)} bytes is over the limit of {MAX_METADATA}")
        packed = zlib.compress(value, 9)
        out += _varint(i) + tag + _varint(len(value)) + _varint(len(packed)) + packed
    return bytes(out)


def _read_metadata(data: bytes, at: int, n_images: int) -> tuple[dict[int, dict[str, bytes]], int]:
    """The metadata section at ``at``: ({image index: its metadata}, next offset); every
    length checked before anything is inflated, and an entry inflates to its declared length
    or is an error."""
    count, at = _read_varint(data, at)
    if count > len(METADATA_TAGS) * n_images:
        raise VlaeError("corrupt header (metadata)")
    meta: dict[int, dict[str, bytes]] = {}
    for _ in range(count):
        i, at = _read_varint(data, at)
        tag = bytes(data[at:at + 4])
        raw, at = _read_varint(data, at + 4)
        stored, at = _read_varint(data, at)
        if i >= n_images or tag not in METADATA_TAGS or METADATA_TAGS[tag] in meta.get(i, {}) \
                or raw > MAX_METADATA or len(data) < at + stored:
            raise VlaeError("corrupt header (metadata)")
        inflate = zlib.decompressobj()
        try:
            value = inflate.decompress(bytes(data[at:at + stored]), raw)
        except zlib.error:
            raise VlaeError("corrupt header (metadata)") from None
        if len(value) != raw or not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
            raise VlaeError("corrupt header (metadata)")
        meta.setdefault(i, {})[METADATA_TAGS[tag]] = value
        at += stored
    return meta, at


def with_metadata(data: bytes, metadata: list[dict[str, bytes]]) -> bytes:
    """A version 3 or 4 file with its images' metadata replaced, one dict per image (``{}``:
    none; keys: the values of :data:`METADATA_TAGS`); the payload is untouched.

    >>> h = Header(model_id="ab" * 8, z_bits=8, active=[0], images=[ImageInfo(3, 2, 1)])
    >>> data = with_metadata(pack(h, np.array([1, 2], dtype=np.uint32)), [{"icc_profile": b"x" * 500}])
    >>> header, words = unpack(data)
    >>> len(header.metadata[0]["icc_profile"]), words.tolist(), len(data) < 100
    (500, [1, 2], True)
    """
    header, end = unpack_header(data)
    if header.version < 3:
        raise VlaeError("version 2 files hold no metadata")
    if len(metadata) != len(header.images):
        raise VlaeError(f"metadata for {len(metadata)} images, the file holds {len(header.images)}")
    for meta in metadata:
        unknown = set(meta) - set(METADATA_TAGS.values())
        if unknown:
            raise VlaeError(f"unknown metadata {sorted(unknown)}: {', '.join(METADATA_TAGS.values())} only")
    header.metadata = {i: dict(m) for i, m in enumerate(metadata) if m}
    payload = data[end:]
    out = _pack3(header) + _tail3(payload)
    return out + struct.pack("<I", zlib.crc32(out)) + payload


def _tail3(payload: bytes) -> bytes:
    return _varint(len(payload) // 4) + struct.pack("<I", zlib.crc32(payload))


def pack(header: Header, words: np.ndarray) -> bytes:
    payload = np.ascontiguousarray(words, dtype="<u4").tobytes()
    if header.version >= 3:
        out = _pack3(header) + _tail3(payload)
        return out + struct.pack("<I", zlib.crc32(out)) + payload
    if any(im.alpha for im in header.images):
        raise VlaeError("version 2 files hold no alpha channel")
    mask = sum(1 << c for c in header.active)
    runs = header.runs()
    out = bytearray(_FIXED.pack(MAGIC, header.version, header.mode, header.z_bits,
                                bytes.fromhex(header.model_id)[:MODEL_ID_BYTES], mask,
                                len(header.bands), len(runs)))
    for count, im in runs:
        out += _RUN.pack(count, im.width, im.height, im.channels)
    for rows in header.bands:
        out += _BAND.pack(rows)
    out += header.extension()
    out += _TAIL.pack(len(payload), zlib.crc32(payload), header.digest)
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out) + payload


def max_pixels() -> int:
    """Cap on declared pixels per image, checked before any allocation."""
    return int(os.environ.get("VLAECODEC_MAX_PIXELS", 1 << 28))


def header_end(mode: int, n_active: int, n_bands: int, n_runs: int) -> int:
    """Bytes of a header with these counts, its CRC included: where the payload starts."""
    return (_FIXED.size + _RUN.size * n_runs + _BAND.size * n_bands + _extension_size(mode, n_active)
            + _TAIL.size + 4)


def reseal(data: bytes, max_runs: int = MAX_IMAGES) -> bytes:
    """``data`` with its header and payload CRCs recomputed over what it holds now, so that a
    damaged file reaches the decoder proper (the fuzz's mutations).  Returned unchanged where
    the fixed fields are missing, the header they declare is longer than ``data``, or it
    declares more than ``max_runs`` shape runs.

    >>> h = Header(model_id="ab" * 8, z_bits=8, active=[0], images=[ImageInfo(3, 2, 1)])
    >>> bad = pack(h, np.array([1, 2], dtype=np.uint32))[:-1] + b"x"
    >>> unpack(reseal(bad))[1].tolist() == [1, 2 + (ord("x") << 24)]
    True
    """
    if len(data) > 4 and data[4] >= 3:
        try:
            _, _, tail_at, _, _, end = _parse3(data, max_runs)
        except VlaeError:
            return data
        payload = data[end:]
        out = data[:tail_at] + _tail3(payload)
        return out + struct.pack("<I", zlib.crc32(out)) + payload
    if len(data) < _FIXED.size:
        return data
    fields = _FIXED.unpack_from(data, 0)
    mode, mask, n_bands, n_runs = fields[2], fields[5], fields[-2], fields[-1]
    end = header_end(mode, bin(mask).count("1"), n_bands, n_runs)
    if n_runs > max_runs or len(data) < end:
        return data
    out = bytearray(data)
    tail_at = end - 4 - _TAIL.size
    payload = bytes(out[end:])
    _, _, digest = _TAIL.unpack_from(out, tail_at)
    out[tail_at:tail_at + _TAIL.size] = _TAIL.pack(len(payload), zlib.crc32(payload), digest)
    out[end - 4:end] = struct.pack("<I", zlib.crc32(bytes(out[:end - 4])))
    return bytes(out)


def _parse3(data: bytes, max_runs: int = MAX_IMAGES):
    """A version 3 or 4 header's fields, unchecked (but never reading past ``data`` or more than
    ``max_runs`` runs): (header without images, runs, offset of the payload words field,
    payload words, payload CRC, payload offset)."""
    if len(data) < 7 + MODEL_ID_BYTES:
        raise VlaeError("truncated file (header)")
    mode, flags, z_bits = data[5] & _MODE_MASK, data[5] >> 4, data[6]
    at = 7 + MODEL_ID_BYTES
    model = data[7:at]
    mask, at = _read_varint(data, at)
    n_runs, at = _read_varint(data, at)
    if n_runs > max_runs:
        raise VlaeError("corrupt header")
    runs = []
    for _ in range(n_runs):  # images, width, height (varints), channels (a byte)
        shape, at = _read_varints(data, at, 3)
        if at >= len(data):
            raise VlaeError("truncated file (header)")
        runs.append((*shape, data[at]))
        at += 1
    n_bands, at = _read_varint(data, at)
    if n_bands > MAX_SIDE:
        raise VlaeError("corrupt header (bands)")
    bands, at = _read_varints(data, at, n_bands)
    active = [c for c in range(32) if mask >> c & 1]
    lossy = mode == MODE_LATENT   # bit 6: the residuals flag of lossless files, the filter kinds' here
    header = Header(model.hex(), z_bits, active, [], mode, data[4], bands,
                    interleaved=bool(flags & FLAG_INTERLEAVED),
                    residuals=bool(flags & FLAG_RESIDUALS) and not lossy,
                    filtered=bool(flags & FLAG_FILTERED),
                    filter_kinds=2 if flags & FLAG_FILTER_KINDS and lossy else 1)
    ext = _extension_size(mode, len(active))
    if len(data) < at + ext:
        raise VlaeError("truncated file (header)")
    _read_extension(header, data, at)
    at += ext
    if flags & FLAG_METADATA:
        header.metadata, at = _read_metadata(data, at, min(MAX_IMAGES, sum(r[0] for r in runs)))
    if header.has_digest:
        if len(data) < at + 8:
            raise VlaeError("truncated file (header)")
        header.digest = bytes(data[at:at + 8])
        at += 8
    tail_at = at
    words, at = _read_varint(data, at)
    if len(data) < at + 8:
        raise VlaeError("truncated file (header)")
    crc, = struct.unpack_from("<I", data, at)
    return header, runs, tail_at, words, crc, at + 8


def _unpack3(data: bytes) -> tuple[Header, int]:
    header, runs, _, words, crc, end = _parse3(data)
    crc_stored, = struct.unpack_from("<I", data, end - 4)
    if zlib.crc32(data[:end - 4]) != crc_stored:
        raise VlaeError("corrupt header (checksum mismatch)")
    if header.mode not in MODE_NAMES:
        raise VlaeError(f"unsupported coding mode {header.mode}")
    if data[5] >> 4 & ~(FLAG_INTERLEAVED | FLAG_METADATA | FLAG_RESIDUALS | FLAG_FILTERED) \
            or header.interleaved and header.mode not in (MODE_LOSSLESS, MODE_NEAR_LOSSLESS) \
            or header.filtered and header.mode != MODE_LATENT \
            or header.filter_kinds > 1 and not header.filtered \
            or header.residuals and header.version != RANS_VERSION:
        raise VlaeError("corrupt header (flags)")
    if header.version >= RANS_VERSION and header.mode not in (MODE_LOSSLESS, MODE_NEAR_LOSSLESS):
        raise VlaeError(f"corrupt header (version {header.version} holds lossless and near-lossless files only)")
    if header.version == STRIPES_VERSION and (header.interleaved or len(runs) != 1 or runs[0][0] != 1
                                              or runs[0][3] >> 4 == ALPHA_PLANE or len(header.bands) < 2):
        raise VlaeError("corrupt header (version 5: one image without a coded alpha, in two or more stripes)")
    if not 1 <= len(runs) <= MAX_IMAGES or not 1 <= header.z_bits <= 16:
        raise VlaeError("corrupt header")
    header.images = _images(runs)
    _check_fields(header)
    header.payload_words, header.payload_crc = words, crc
    return header, end


def _images(runs) -> list[ImageInfo]:
    images: list[ImageInfo] = []
    total = 0
    for count, w, h, c in runs:
        c, alpha = c & 0x0F, c >> 4
        if count < 1 or not 1 <= w <= MAX_SIDE or not 1 <= h <= MAX_SIDE or c not in (1, 3) \
                or alpha not in (ALPHA_NONE, ALPHA_PLANE, ALPHA_OPAQUE) or len(images) + count > MAX_IMAGES:
            raise VlaeError("corrupt header (image shape)")
        if w * h > max_pixels():
            raise VlaeError(f"image of {w}x{h} exceeds the pixel limit {max_pixels()} (VLAECODEC_MAX_PIXELS)")
        images.extend([ImageInfo(w, h, c, alpha)] * count)
        total += count * w * h
        if total > max_pixels():  # an archive's images count together
            raise VlaeError(f"file declares {total}+ pixels, over the limit {max_pixels()} (VLAECODEC_MAX_PIXELS)")
    return images


def _check_fields(header: Header) -> None:
    bands, mode = header.bands, header.mode
    if bands and (sum(bands) != header.images[-1].height or min(bands) < 1 or mode in (MODE_LOSSY, MODE_LATENT)):
        raise VlaeError("corrupt header (bands)")
    if mode == MODE_NEAR_LOSSLESS and not 1 <= header.max_error <= MAX_ERROR:
        raise VlaeError("corrupt header (max error)")
    if mode == MODE_LOSSY and (header.recon >= len(RECON_NAMES)
                               or not all(1 <= b <= header.z_bits for b in header.channel_bits)):
        raise VlaeError("corrupt header (lossy fields)")
    if mode == MODE_LATENT and not (np.isfinite(header.beta) and header.beta > 0):
        raise VlaeError("corrupt header (beta)")
    if mode in (MODE_LOSSY, MODE_LATENT) and any(im.alpha == ALPHA_PLANE for im in header.images):
        raise VlaeError("corrupt header (a lossy file codes no alpha plane)")


def unpack_header(data: bytes) -> tuple[Header, int]:
    """(header, payload offset); validates every field before anything is allocated."""
    if len(data) < 5:
        raise VlaeError("not a .vlae file (too short)")
    if data[:4] != MAGIC:
        raise VlaeError("not a .vlae file (bad magic)")
    if data[4] not in VERSIONS:
        raise VlaeError(f"unsupported .vlae format version {data[4]} (this build reads {', '.join(map(str, VERSIONS))})")
    if data[4] >= 3:
        return _unpack3(data)
    if len(data) < _FIXED.size:
        raise VlaeError("truncated file (header)")
    magic, version, mode, z_bits, model, mask, n_bands, n_runs = _FIXED.unpack_from(data, 0)
    if mode not in MODE_NAMES:
        raise VlaeError(f"unsupported coding mode {mode}")
    if not 1 <= n_runs <= MAX_IMAGES or not 1 <= z_bits <= 16:
        raise VlaeError("corrupt header")
    active = [c for c in range(32) if mask >> c & 1]
    end = header_end(mode, len(active), n_bands, n_runs)
    if len(data) < end:
        raise VlaeError("truncated file (header)")
    crc_stored, = struct.unpack_from("<I", data, end - 4)
    if zlib.crc32(data[:end - 4]) != crc_stored:
        raise VlaeError("corrupt header (checksum mismatch)")
    runs = [_RUN.unpack_from(data, _FIXED.size + i * _RUN.size) for i in range(n_runs)]
    images = _images(runs)
    _, _, digest = _TAIL.unpack_from(data, end - 4 - _TAIL.size)
    at = _FIXED.size + _RUN.size * n_runs
    bands = [_BAND.unpack_from(data, at + i * _BAND.size)[0] for i in range(n_bands)]
    header = Header(model.hex(), z_bits, active, images, mode, version, bands, digest)
    _read_extension(header, data, at + _BAND.size * n_bands)
    _check_fields(header)
    return header, end


def unpack(data: bytes) -> tuple[Header, np.ndarray]:
    header, off = unpack_header(data)
    if header.version >= 3:
        length, crc = 4 * header.payload_words, header.payload_crc
    else:
        length, crc, _ = _TAIL.unpack_from(data, off - _TAIL.size - 4)
    payload = data[off:]
    if len(payload) < length:
        raise VlaeError("truncated file (payload)")
    if len(payload) > length or length % 4:
        raise VlaeError("corrupt file (payload length)")
    if zlib.crc32(payload) != crc:
        raise VlaeError("corrupt file (payload checksum mismatch)")
    return header, np.frombuffer(payload, dtype="<u4").astype(np.uint32)
