"""Images with an alpha channel ([H, W, 2]: grey and alpha; [H, W, 4]: RGBA).

The coders see planes: an image's colour channels, then, unless its alpha is opaque, its
alpha as a grey image of its own, coded by the same model on the same chained stack.  The
file lists the images as given (:class:`~vlaecodec.fileformat.ImageInfo` ``alpha``), so a
decoder finds the same planes and puts each image back together.  An opaque alpha (every
value 255: most screenshots) costs nothing: it is a flag, and the decoder writes 255.

>>> img = np.dstack([np.zeros((2, 3, 3), np.uint8), np.full((2, 3), 255, np.uint8)])
>>> planes, infos = split([img])
>>> [p.shape for p in planes], infos[0].alpha == ALPHA_OPAQUE
([(2, 3, 3)], True)
>>> bool((join(planes, infos)[0] == img).all())
True
>>> img[0, 0, 3] = 7                  # one translucent pixel: the alpha is coded
>>> planes, infos = split([img])
>>> [p.shape for p in planes], [(i.channels, i.alpha) for i in planes_of(infos)]
([(2, 3, 3), (2, 3, 1)], [(3, 0), (1, 0)])
"""
from __future__ import annotations

import numpy as np

from .errors import VlaeError
from .fileformat import ALPHA_NONE, ALPHA_OPAQUE, ALPHA_PLANE, ImageInfo

OPAQUE = 255


def info_of(img: np.ndarray) -> ImageInfo:
    """The file's entry for a uint8 [H, W, C] image, C = 1 to 4 (2 and 4: the last is alpha)."""
    h, w, c = img.shape
    if c in (1, 3):
        return ImageInfo(w, h, c)
    return ImageInfo(w, h, c - 1, ALPHA_OPAQUE if (img[..., -1] == OPAQUE).all() else ALPHA_PLANE)


def planes_of(infos: list[ImageInfo]) -> list[ImageInfo]:
    """The coded planes of these images, in coding order: each colour image, then its alpha
    plane where it has one."""
    out = []
    for info in infos:
        out.append(ImageInfo(info.width, info.height, info.channels))
        if info.alpha == ALPHA_PLANE:
            out.append(ImageInfo(info.width, info.height, 1))
    return out


def split(images: list[np.ndarray]) -> tuple[list[np.ndarray], list[ImageInfo]]:
    """(planes to code, the images' file entries)."""
    planes, infos = [], []
    for img in images:
        info = info_of(img)
        infos.append(info)
        planes.append(img[..., :info.channels])
        if info.alpha == ALPHA_PLANE:
            planes.append(img[..., info.channels:])
    return planes, infos


def join(planes: list[np.ndarray], infos: list[ImageInfo]) -> list[np.ndarray]:
    """The images back from their decoded planes (the inverse of :func:`split`)."""
    if len(planes) != len(planes_of(infos)):
        raise VlaeError("corrupt file: planes do not match the images")
    out, k = [], 0
    for info in infos:
        colour = planes[k]
        k += 1
        if info.alpha == ALPHA_NONE:
            out.append(colour)
            continue
        if info.alpha == ALPHA_PLANE:
            alpha = planes[k]
            k += 1
        else:
            alpha = np.full((*colour.shape[:2], 1), OPAQUE, np.uint8)
        out.append(np.ascontiguousarray(np.concatenate([colour, alpha], axis=2)))
    return out


def split_opaque(images: list[np.ndarray], what: str) -> tuple[list[np.ndarray], list[ImageInfo]]:
    """:func:`split` for a coder that codes colour only (lossy): an opaque alpha is kept
    (a flag), any other is refused."""
    planes, infos = split(images)
    if any(info.alpha == ALPHA_PLANE for info in infos):
        raise VlaeError(f"{what} keeps an alpha channel only where it is opaque (every value 255); "
                        "code this image losslessly, or flatten it first")
    return planes, infos
