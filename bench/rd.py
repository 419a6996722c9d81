"""Rate-distortion on Kodak: ``python -m bench.rd [--images N] [--crop S] [--betas ...]``.

vlaecodec lossy (z only, one point per beta-family model and latent precision) and
near-lossless (max error d), beside JPEG, WebP, JPEG-XL, AVIF and JPEG-LS (NEAR = d) on the
same images in the same run.  Bits per pixel from real files; every vlaecodec file is
decoded and measured.  Writes bench/results/rd.{csv,json,md} and rd.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import imagecodecs
import numpy as np
import torch

from vlaecodec import data as D
from vlaecodec.api import elbo_parts, load_codec
from vlaecodec.zoo import model_for_beta

from .quality import ms_ssim, psnr

# quality settings of the classical codecs: enough points to span 0.1 .. 3 bits per pixel
CLASSICAL = {
    "jpeg": ([10, 20, 30, 50, 70, 85, 95], lambda a, q: imagecodecs.jpeg8_encode(a, level=q), imagecodecs.jpeg8_decode),
    "webp": ([5, 20, 40, 60, 80, 95], lambda a, q: imagecodecs.webp_encode(a, level=q, lossless=False, method=6), imagecodecs.webp_decode),
    "jpegxl": ([8.0, 5.0, 3.0, 2.0, 1.0, 0.5], lambda a, q: imagecodecs.jpegxl_encode(a, distance=q, effort=7),
               imagecodecs.jpegxl_decode),
    "avif": ([15, 30, 45, 60, 75, 90], lambda a, q: imagecodecs.avif_encode(a, level=q, speed=6), imagecodecs.avif_decode),
}
JPEGLS = (lambda a, d: imagecodecs.jpegls_encode(a, level=d), imagecodecs.jpegls_decode)


def kodak(n: int, crop: int) -> list[np.ndarray]:
    images = list(D.load_dataset("kodak", n))
    if crop:
        images = [im[(im.shape[0] - crop) // 2:(im.shape[0] + crop) // 2,
                     (im.shape[1] - crop) // 2:(im.shape[1] + crop) // 2] for im in images]
    return [np.ascontiguousarray(im) for im in images]


def label(model: str) -> str:
    """``vlaecodec:NAME`` for a zoo name or a weights path (zoo names may contain dots)."""
    return "vlaecodec:" + (Path(model).stem if model.endswith(".safetensors") else model)


def measure(codec: str, setting, family: str, pairs: list[tuple[np.ndarray, int, np.ndarray]], **extra) -> dict:
    """pairs: (original, file bytes, decoded)."""
    pixels = sum(a.shape[0] * a.shape[1] for a, _, _ in pairs)
    return {"codec": codec, "family": family, "setting": setting, "n": len(pairs),
            "bpp": sum(b for _, b, _ in pairs) * 8 / pixels,
            "psnr": float(np.mean([psnr(a, r) for a, _, r in pairs])),
            "ms_ssim": float(np.mean([ms_ssim(a, r) for a, _, r in pairs])),
            "max_abs_error": int(max(np.abs(a.astype(int) - r.astype(int)).max() for a, _, r in pairs)),
            **extra}


def classical_rows(images) -> list[dict]:
    rows = []
    for name, (settings, enc, dec) in CLASSICAL.items():
        for q in settings:
            pairs = []
            for a in images:
                data = enc(a, q)
                pairs.append((a, len(data), np.asarray(dec(data)).reshape(a.shape)))
            rows.append(measure(name, q, "lossy", pairs))
    return rows


def near_lossless_rows(images, max_errors, model: str) -> list[dict]:
    rows, codec = [], load_codec(model)
    for d in max_errors:
        pairs = []
        for a in images:
            data = JPEGLS[0](a, d)
            pairs.append((a, len(data), np.asarray(JPEGLS[1](data)).reshape(a.shape)))
        rows.append(measure("jpegls", d, "near-lossless", pairs))
        pairs, enc_t, dec_t = [], 0.0, 0.0
        for a in images:
            t = time.perf_counter()
            data = codec.encode(a, max_error=d)
            enc_t += time.perf_counter() - t
            t = time.perf_counter()
            pairs.append((a, len(data), codec.decode(data)))
            dec_t += time.perf_counter() - t
        rows.append(measure(label(model), d, "near-lossless", pairs,
                            enc_s_per_image=enc_t / len(images), dec_s_per_image=dec_t / len(images)))
        print(json.dumps(rows[-2:]), file=sys.stderr)
    return rows


def lossy_rows(images, models: dict[str, float], extra_bits) -> list[dict]:
    """models: name -> beta."""
    rows = []
    for model, beta in models.items():
        codec = load_codec(model)
        kl_bpp = 3 * float(np.mean([elbo_parts(a, model)[1] for a in images]))
        for eb in extra_bits:
            pairs, dec_t = [], 0.0
            for a in images:
                data = codec.encode_lossy([a], extra_bits=eb)
                t = time.perf_counter()
                pairs.append((a, len(data), codec.decode(data)))
                dec_t += time.perf_counter() - t
            rows.append(measure(label(model), f"beta={beta:g},z+{eb}", "lossy", pairs, beta=beta,
                                z_extra_bits=eb, kl_bpp=kl_bpp, dec_s_per_image=dec_t / len(images)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def beta_figure(image: np.ndarray, models: dict[str, float], path: Path, samples: int = 5) -> None:
    """Row 1: the crop, then its lossy file decoded (mean rule) from each beta's model.
    Row 2: the crop, then several samples of the PixelCNN from the one z of the lowest beta."""
    from .seed import _stack, _tile
    ordered = sorted(models.items(), key=lambda kv: kv[1])
    decoded = [load_codec(m).decode(load_codec(m).encode_lossy([image])) for m, _ in ordered]
    low = load_codec(ordered[0][0])
    z = low.latent_mean(image)
    draws = [low.render(z, *image.shape[:2], rule="sample", seed=s) for s in range(samples)]
    betas = ", ".join(f"{b:g}" for _, b in ordered)
    _stack([(f"original | beta {betas}", _tile([image] + decoded, 2)),
            (f"original | {samples} samples, one z (beta {ordered[0][1]:g})", _tile([image] + draws, 2))],
           margin=260).save(path)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    lossy = [r for r in rows if r["family"] == "lossy"]
    for metric, ax in zip(["psnr", "ms_ssim"], axes[:2]):
        for name in sorted({r["codec"] for r in lossy if not r["codec"].startswith("vlaecodec")}):
            sub = sorted((r for r in lossy if r["codec"] == name), key=lambda r: r["bpp"])
            ax.plot([r["bpp"] for r in sub], [r[metric] for r in sub], "o-", label=name, ms=3)
        for eb in sorted({r.get("z_extra_bits") for r in lossy if r["codec"].startswith("vlaecodec")}):
            sub = sorted((r for r in lossy if r["codec"].startswith("vlaecodec") and r.get("z_extra_bits") == eb),
                         key=lambda r: r["bpp"])
            ax.plot([r["bpp"] for r in sub], [r[metric] for r in sub], "s-", color="tab:red",
                    alpha=1.0 if eb == 0 else 0.5, label=f"vlaecodec lossy (betas, z+{eb})")
            for r in sub:
                ax.annotate(f"β{r['beta']:g}", (r["bpp"], r[metric]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(metric.upper().replace("_", "-"))
        ax.set_title(f"Kodak lossy: {metric}")
        ax.legend(fontsize=7)
    ax = axes[2]
    near = [r for r in rows if r["family"] == "near-lossless"]
    for name in sorted({r["codec"] for r in near}):
        sub = sorted((r for r in near if r["codec"] == name), key=lambda r: r["setting"])
        ax.plot([r["setting"] for r in sub], [r["bpp"] for r in sub], "o-", label=name)
    ax.set_xlabel("max error d")
    ax.set_ylabel("bits per pixel")
    ax.set_xscale("log", base=2)
    ax.set_title("Kodak near-lossless")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write(rows: list[dict], out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("codec", "family", "setting", "bpp"), k))
    with (out / "rd.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "rd.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"Command: `{meta['command']}` ({meta['machine']}, {meta['date']}); {meta['images']}", "",
             "| family | codec | setting | bits/pixel | PSNR dB | MS-SSIM | max error |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['codec']} | {r['setting']} | {r['bpp']:.4f} | {r['psnr']:.2f} | "
                     f"{r['ms_ssim']:.4f} | {r['max_abs_error']} |")
    (out / "rd.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "rd.png")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.rd")
    ap.add_argument("--images", type=int, default=24, help="first N Kodak images")
    ap.add_argument("--crop", type=int, default=256, help="centre crop of this side (0: whole images)")
    ap.add_argument("--betas", type=float, nargs="*", default=None, help="default: every beta in the zoo")
    ap.add_argument("--z-extra-bits", type=int, nargs="*", default=[0, 2])
    ap.add_argument("--max-errors", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--model", default="default", help="model for near-lossless")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = kodak(args.images, args.crop)
    if args.betas is None:
        from vlaecodec.zoo import list_models
        args.betas = sorted({c["beta"] for c in list_models() if c.get("config", {}).get("levels", 256) == 256})
    rows = classical_rows(images)
    rows += near_lossless_rows(images, args.max_errors, args.model)
    family = {model_for_beta(b): b for b in args.betas}
    rows += lossy_rows(images, family, args.z_extra_bits)
    meta = {"command": "python -m bench.rd " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()} {torch.get_num_threads()} torch threads",
            "date": time.strftime("%Y-%m-%d"),
            "images": f"Kodak, first {len(images)} images" + (f", centre {args.crop}x{args.crop} crops" if args.crop else "")}
    write(rows, Path(args.out), meta)
    crop = kodak(23, 128)[22]  # kodim23, the parrots: colour, texture and a plain background
    beta_figure(crop, family, Path(args.out) / "lossy_betas.png")


if __name__ == "__main__":
    main()
