"""How many latent numbers a picture needs: ``python -m bench.latent_ceiling [--ks 96 256]``.

A lossy model with m latent channels at 1/16 of the resolution keeps m numbers for every
16x16x3 = 768 pixel values.  The best *linear* map onto k numbers and back (the blocks'
principal components, unquantized) bounds what such a latent can carry; this prints its PSNR
on Kodak's 16x16x3 blocks for each k (a trained nonlinear transform may do better;
quantization only takes away).
"""
from __future__ import annotations

import argparse

import numpy as np

from vlaecodec import data as D


def blocks(images: list[np.ndarray], side: int = 16) -> np.ndarray:
    """Every whole side x side x 3 block of the images, as rows of floats."""
    out = []
    for im in images:
        h, w = im.shape[0] // side * side, im.shape[1] // side * side
        b = im[:h, :w].astype(np.float64).reshape(h // side, side, w // side, side, 3)
        out.append(b.transpose(0, 2, 1, 3, 4).reshape(-1, side * side * 3))
    return np.concatenate(out)


def ceiling_psnr(x: np.ndarray, ks: list[int]) -> dict[int, float]:
    """PSNR of the rank-k principal-component reconstruction of the rows of x, per k."""
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc[::3], full_matrices=False)   # a third of the blocks fit the basis
    out = {}
    for k in ks:
        p = vt[:k]
        mse = float(((xc - (xc @ p.T) @ p) ** 2).mean())
        out[k] = 10 * np.log10(255 ** 2 / mse)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.latent_ceiling")
    ap.add_argument("--ks", type=int, nargs="*", default=[48, 96, 128, 192, 256, 320])
    args = ap.parse_args(argv)
    for k, v in ceiling_psnr(blocks(list(D.load_dataset("kodak", 24))), args.ks).items():
        print(f"{k:4d} numbers per 16x16x3 block: {v:.2f} dB")


if __name__ == "__main__":
    main()
