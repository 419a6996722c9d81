"""Large images: ``python -m bench.large [--size 4096] [--grey] [--model default] [--threads 1]``.

The picture is a mosaic of Kodak photos (each used whole where it fits, cut at the right and
bottom edges), so the content is natural, not noise or a flat field.  It is encoded and decoded
with the lossless codec in this process (or, with ``--beta``, with a lossy model at that
beta); the row records bytes, bits per subpixel, seconds, whether the pixels came back
exactly (lossy: the PSNR), and the peak resident memory after each step.
Results go to bench/results/large.{json,md} (rows of earlier runs with other sizes are kept).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from vlaecodec import data as D
from vlaecodec.api import load_codec

from .__main__ import peak_rss_mb


def mosaic(photos: list[np.ndarray], size: int, grey: bool = False) -> np.ndarray:
    """A size x size picture tiled row by row with the landscape ``photos`` (all one shape).

    >>> tiles = [np.full((2, 3, 3), v, np.uint8) for v in (10, 20)]
    >>> mosaic(tiles, 4)[..., 0].tolist()
    [[10, 10, 10, 20], [10, 10, 10, 20], [10, 10, 10, 20], [10, 10, 10, 20]]
    """
    photos = [p for p in photos if p.shape[1] >= p.shape[0]]
    out = np.zeros((size, size, 3), np.uint8)
    k = 0
    for y in range(0, size, photos[0].shape[0]):
        for x in range(0, size, photos[0].shape[1]):
            tile = photos[k % len(photos)]
            k += 1   # the next row starts with the next photo too
            h, w = min(tile.shape[0], size - y), min(tile.shape[1], size - x)
            out[y:y + h, x:x + w] = tile[:h, :w]
    if grey:  # ITU-R 601 luma, as Pillow's "L"
        out = (out.astype(np.int64) @ np.array([299, 587, 114]) // 1000).astype(np.uint8)[..., None]
    return out


def measure(img: np.ndarray, name: str, model: str, beta: float | None = None, threads: int = 1) -> dict:
    if beta is not None:
        return measure_lossy(img, name, model, beta)
    codec = load_codec(model, threads=threads)
    t = time.perf_counter()
    data = codec.encode(img)
    enc = time.perf_counter() - t
    rss_enc = peak_rss_mb()
    t = time.perf_counter()
    out = codec.decode(data)
    dec = time.perf_counter() - t
    return {"image": name, "model": model if threads == 1 else f"{model}, {threads} threads",
            "bytes": len(data), "bpd": len(data) * 8 / img.size, "exact": bool(np.array_equal(out, img)),
            "enc_s": enc, "dec_s": dec, "peak_rss_mb_after_encode": rss_enc, "peak_rss_mb_after_decode": peak_rss_mb()}


def measure_lossy(img: np.ndarray, name: str, model: str, beta: float) -> dict:
    from vlaecodec.api import load_lossy
    from vlaecodec.quality import psnr
    coder = load_lossy(model)
    t = time.perf_counter()
    data = coder.encode([img], beta)
    enc = time.perf_counter() - t
    rss_enc = peak_rss_mb()
    t = time.perf_counter()
    out = coder.decode(data)[0]
    dec = time.perf_counter() - t
    return {"image": name, "model": f"{model}@{beta:g}", "bytes": len(data), "bpd": len(data) * 8 / img.size,
            "exact": False, "psnr": psnr(img, out), "enc_s": enc, "dec_s": dec,
            "peak_rss_mb_after_encode": rss_enc, "peak_rss_mb_after_decode": peak_rss_mb()}


def write(rows: list[dict], out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "large.json"
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    names = {(r["image"], r["model"]) for r in rows}
    rows = [r for r in old if (r["image"], r["model"]) not in names] + rows
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| image | model | bytes | bits/dim | exact | encode s | decode s | peak RSS MB (encode / both) | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        exact = f"lossy, {r['psnr']:.2f} dB" if "psnr" in r else r["exact"]
        lines.append(f"| {r['image']} | {r['model']} | {r['bytes']} | {r['bpd']:.4f} | {exact} | {r['enc_s']:.1f} | "
                     f"{r['dec_s']:.1f} | {r['peak_rss_mb_after_encode']:.0f} / {r['peak_rss_mb_after_decode']:.0f} | "
                     f"`{r['command']}` |")
    (out / "large.md").write_text(f"Machine: {meta['machine']}, {meta['date']}\n\n" + "\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.large")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--grey", action="store_true")
    ap.add_argument("--model", default="default")
    ap.add_argument("--beta", type=float, default=None, help="Lossy coding at this beta (a lossy model).")
    ap.add_argument("--threads", type=int, default=1, help="Threads of the lossless codec.")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    command = "python -m bench.large " + " ".join(argv if argv is not None else sys.argv[1:])
    img = mosaic(list(D.load_dataset("kodak", 24)), args.size, args.grey)
    name = f"kodak mosaic {args.size}x{args.size} {'grey' if args.grey else 'RGB'}"
    row = measure(img, name, args.model, args.beta, args.threads)
    row["command"] = command
    print(json.dumps(row))
    write([row], Path(args.out), {"machine": f"{platform.machine()} {platform.processor() or 'cpu'}",
                                  "date": time.strftime("%Y-%m-%d")})


if __name__ == "__main__":
    main()
