"""Large images in stripes: streams that threads code and decode at once (version 5 files).

A version 4 file is one ANS stack, its bands chained by bits-back, so a decoder pops them one
after another and a second thread can only share each wave's network.  A version 5 file
cuts the image into horizontal stripes and codes each as a version 4 file of its own (its
own bands, bits-back chain, pixel digest and checksums); the payload holds them top to
bottom.  A decoder with T threads decodes T stripes at once, and the encoder encodes them
so too.  The files do not depend on the thread count.

What it costs: a stripe's pixel window does not reach into the stripe above (its first
row is coded as an image's first row is), and each stripe has a bottom band with nothing
to borrow from.  Two stripes made Kodak 1, 5 and 23 0.1-0.3% larger than one stream with
the `fast` model; two threads decoded the two halves in 0.54 times one thread's time
(CHANGELOG 0.17.0 has the whole-process figures).

>>> stripe_heights(512, 768), stripe_heights(768, 512), stripe_heights(500, 500)
([256, 256], [384, 384], [500])
>>> stripe_heights(4096, 4096)
[512, 512, 512, 512, 512, 512, 512, 512]
"""
from __future__ import annotations

import numpy as np

from .errors import VlaeError
from .fileformat import RANS_VERSION, Header, ImageInfo, unpack_header

STRIPE_PIXELS = 1 << 17   # pixels per stripe, at least: an image of fewer is one stream
MIN_STRIPE_ROWS = 128     # thinner stripes would code too many rows without the rows above
MAX_STRIPES = 8


def stripe_heights(height: int, width: int, stripe_pixels: int = STRIPE_PIXELS) -> list[int]:
    """Rows of each stripe, top to bottom: a power of two of them (so that 2 or 4 threads
    share them evenly), each of at least ``stripe_pixels`` pixels and MIN_STRIPE_ROWS rows,
    cut on multiples of 4 rows (the latents' grid)."""
    n = min(MAX_STRIPES, height * width // stripe_pixels, height // MIN_STRIPE_ROWS)
    s = 1
    while 2 * s <= n:
        s *= 2
    cuts = [4 * round(k * height / s / 4) for k in range(s)] + [height]
    return [b - a for a, b in zip(cuts, cuts[1:])]


def join_stripes(files: list[bytes]) -> np.ndarray:
    """The payload words of a version 5 file: its stripes' files one after another, padded
    with zero bytes to a whole word."""
    data = b"".join(files)
    return np.frombuffer(data + bytes(-len(data) % 4), dtype="<u4")


def split_stripes(header: Header, payload: bytes) -> list[bytes]:
    """The stripes' files of a version 5 file's payload, each checked to be a version 4
    file of its stripe (its shape, mode and model those of the file)."""
    image = header.images[0]
    out, at = [], 0
    for rows in header.bands:
        part, end = unpack_header(payload[at:])
        length = end + 4 * part.payload_words
        if part.version != RANS_VERSION or part.images != [ImageInfo(image.width, rows, image.channels)] \
                or part.mode != header.mode or part.max_error != header.max_error \
                or part.model_id != header.model_id or at + length > len(payload):
            raise VlaeError("corrupt file (a stripe does not match the file)")
        out.append(payload[at:at + length])
        at += length
    if len(payload) - at > 3 or any(payload[at:]):
        raise VlaeError("corrupt file (bytes after the last stripe)")
    return out
