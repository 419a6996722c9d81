"""Data sets read from the local data folder; nothing is ever downloaded.

The folder comes from ``VLAECODEC_DATA`` (default ``../shared/data``).  Every
loader returns uint8 numpy arrays shaped ``[N, H, W, C]`` (C = 1 or 3) or, for
sets of differently sized images, a list of ``[H, W, C]`` arrays.

>>> import numpy as np
>>> crops = random_crops([np.zeros((40, 50, 3), np.uint8)], 4, 32, np.random.default_rng(0))
>>> crops.shape
(4, 32, 32, 3)
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
STATIC_BINARIZATION_SEED = 20170101


def data_root() -> Path:
    """The data folder: ``$VLAECODEC_DATA`` or ``../shared/data``."""
    return Path(os.environ.get("VLAECODEC_DATA", "../shared/data")).expanduser()


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path} (set VLAECODEC_DATA to the data folder)")
    return path


def _mosaic_to_images(path: Path) -> np.ndarray:
    """A 100x100 grid of 32x32 RGB thumbnails (the CIFAR-10 WebP mosaics) as [10000,32,32,3]."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    return grid.reshape(100, 32, 100, 32, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 32, 32, 3)


def load_cifar10(split: str = "test", limit: int | None = None, parts: list[int] | None = None) -> np.ndarray:
    """CIFAR-10 as uint8 [N,32,32,3]; ``parts`` picks train mosaics 0..4."""
    folder = data_root() / "cifar10"
    if split == "test":
        files = [folder / "test.webp"]
    else:
        files = [folder / f"train_{i}.webp" for i in (parts if parts is not None else range(5))]
    chunks, total = [], 0
    for f in files:
        if not f.exists():
            continue  # a partial copy of the data (e.g. on a lent machine) still trains
        chunks.append(_mosaic_to_images(f))
        total += len(chunks[-1])
        if limit is not None and total >= limit:
            break
    if not chunks:
        _need(files[0])
    images = np.concatenate(chunks)
    return images[:limit] if limit is not None else images


def load_mnist(split: str = "test", limit: int | None = None) -> np.ndarray:
    """MNIST as uint8 [N,28,28,1], values 0..255."""
    x = np.load(_need(data_root() / "mnist" / f"{split}.npz"))["x"]
    x = x[:limit] if limit is not None else x
    return x[..., None]


def binarize_static(images: np.ndarray, seed: int = STATIC_BINARIZATION_SEED) -> np.ndarray:
    """One fixed-seed Bernoulli sample (p = pixel/255): the static test binarization."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape) < images / 255.0).astype(np.uint8)


def load_omniglot(subset: str = "background_small", limit: int | None = None) -> np.ndarray:
    """Omniglot subset as uint8 [N,105,105,1] with ink = 255 (inverted from the files)."""
    x = np.load(_need(data_root() / "omniglot" / f"{subset}.npz"))["x"]
    x = x[:limit] if limit is not None else x
    return (255 - x)[..., None]


def load_image(path: str | Path) -> np.ndarray:
    """One image file as uint8 [H,W,C], C = 1 (grey) or 3 (RGB)."""
    with Image.open(path) as im:
        im = im.convert("L") if im.mode in ("L", "1", "P") and _is_grey(im) else im.convert("RGB")
        arr = np.asarray(im)
    return arr[..., None] if arr.ndim == 2 else arr


def _is_grey(im: Image.Image) -> bool:
    if im.mode in ("L", "1"):
        return True
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def load_folder(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """All images in a folder (sorted by name) as a list of [H,W,C] uint8 arrays."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[:limit] if limit is not None else files
    return [load_image(f) for f in files]


def load_kodak(limit: int | None = None) -> list[np.ndarray]:
    return load_folder(_need(data_root() / "kodak"), limit)


def load_photos(limit: int | None = None, start: int = 0) -> list[np.ndarray]:
    """The training photos (never a test set)."""
    files = sorted(_need(data_root() / "photos").glob("*.webp"))[start:]
    files = files[:limit] if limit is not None else files
    return [load_image(f) for f in files]


HOLDOUT = 4   # the last images of photos-wall/ and graphics/ are never trained on


def training_sets() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(photos, photos-wall, graphics) for training, RGB only, without the held-out images."""
    root = data_root()
    rgb = lambda ims: [im for im in ims if im.shape[2] == 3]  # noqa: E731
    return (rgb(load_folder(_need(root / "photos"))), rgb(load_folder(_need(root / "photos-wall"))[:-HOLDOUT]),
            rgb(load_folder(_need(root / "graphics"))[:-HOLDOUT]))


def heldout_sets() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(photos-wall, graphics) images that :func:`training_sets` leaves out, RGB only."""
    root = data_root()
    return tuple([im for im in load_folder(_need(root / name))[-HOLDOUT:] if im.shape[2] == 3]
                 for name in ("photos-wall", "graphics"))


def random_crops(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random ``size`` x ``size`` crops from a list of images (edge-padded if smaller)."""
    out = []
    for i in rng.integers(0, len(images), n):
        img = images[i]
        h, w = img.shape[:2]
        if h < size or w < size:
            img = np.pad(img, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="edge")
            h, w = img.shape[:2]
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out.append(img[y:y + size, x:x + size])
    return np.stack(out)


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` of an image (the whole of a smaller side)."""
    h, w = img.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(img[y:y + size, x:x + size])


def load_dataset(name: str, limit: int | None = None) -> list[np.ndarray] | np.ndarray:
    """A named evaluation set: ``cifar10-test``, ``cifar10-train``, ``mnist-test`` (8-bit),
    ``bmnist-test`` (static binarization), ``omniglot-test`` (binarized one-shot runs),
    ``omniglot-train``, ``kodak``, ``photos``, ``photos-wall`` (18 clean modern photos),
    ``graphics-crops`` (centre 512x512 crops of the 16 artwork and gradient images), their
    held-out parts ``photos-wall-heldout`` and ``graphics-heldout-crops`` (the last
    :data:`HOLDOUT` images of each, never trained on), or a folder path."""
    if name == "cifar10-test":
        return load_cifar10("test", limit)
    if name == "cifar10-train":
        return load_cifar10("train", limit)
    if name == "mnist-test":
        return load_mnist("test", limit)
    if name == "bmnist-test":
        return binarize_static(load_mnist("test", limit))
    if name in ("omniglot-test", "omniglot-train"):
        subset = "oneshot_runs" if name == "omniglot-test" else "background_small"
        return binarize_static(load_omniglot(subset, limit))
    if name == "kodak":
        return load_kodak(limit)
    if name == "photos":
        return load_photos(limit)
    if name == "photos-wall":
        return load_folder(_need(data_root() / "photos-wall"), limit)
    if name == "graphics-crops":
        return [centre_crop(im, 512) for im in load_folder(_need(data_root() / "graphics"), limit)]
    if name == "photos-wall-heldout":
        return load_folder(_need(data_root() / "photos-wall"))[-HOLDOUT:][:limit]
    if name == "graphics-heldout-crops":
        return [centre_crop(im, 512) for im in load_folder(_need(data_root() / "graphics"))[-HOLDOUT:][:limit]]
    if Path(name).is_dir():
        return load_folder(name, limit)
    raise ValueError(f"unknown data set {name!r}")


def is_binary_dataset(name: str) -> bool:
    return name.startswith("bmnist") or name.startswith("omniglot")
