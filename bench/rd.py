"""Rate-distortion on Kodak: ``python -m bench.rd [--images N] [--crop S] [--betas ...]``.

vlaecodec lossy (the hyperprior model, one point per beta) beside JPEG, WebP, JPEG-XL and
AVIF on the same images in the same run, with BD-rates against each; optionally
near-lossless (``--max-errors``, beside JPEG-LS with NEAR = d) and the 0.3 z-only lossy
files (``--z-only``).  Bits per pixel from real files, header included; every vlaecodec file
is decoded and measured.  Writes bench/results/NAME.{csv,json,md} and NAME.png (``--name``,
default ``rd``).
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
    "jpeg": ([5, 10, 20, 30, 50, 70, 85, 95], lambda a, q: imagecodecs.jpeg8_encode(a, level=q), imagecodecs.jpeg8_decode),
    "webp": ([0, 5, 20, 40, 60, 80, 95], lambda a, q: imagecodecs.webp_encode(a, level=q, lossless=False, method=6), imagecodecs.webp_decode),
    "jpegxl": ([12.0, 8.0, 5.0, 3.0, 2.0, 1.0, 0.5], lambda a, q: imagecodecs.jpegxl_encode(a, distance=q, effort=7),
               imagecodecs.jpegxl_decode),
    "avif": ([5, 15, 30, 45, 60, 75, 90], lambda a, q: imagecodecs.avif_encode(a, level=q, speed=6), imagecodecs.avif_decode),
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


def variant(model: str, loop_filter: bool = True, effort: int = 1) -> str:
    """The label of a model's files made another way than the default's.

    >>> variant("lossy"), variant("lossy", effort=2), variant("lossy", loop_filter=False)
    ('vlaecodec:lossy', 'vlaecodec:lossy effort 2', 'vlaecodec:lossy unfiltered')
    """
    return label(model) + ("" if loop_filter else " unfiltered") + (f" effort {effort}" if effort > 1 else "")


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


def hyperprior_rows(images, model: str, betas, threads: int, loop_filter: bool = True, effort: int = 1) -> list[dict]:
    """One row per beta: the lossy (hyperprior) model's real files, decoded and measured
    (``loop_filter=False``: files without the per-image loop filter, labelled so; ``effort``
    2: files whose latents the encoder searched, labelled so)."""
    from vlaecodec.lossy_coder import load_lossy_coder
    coder, rows = load_lossy_coder(model, threads=threads, loop_filter=loop_filter, effort=effort), []
    for beta in betas:
        pairs, enc_t, dec_t = [], 0.0, 0.0
        for a in images:
            t = time.perf_counter()
            data = coder.encode([a], beta)
            enc_t += time.perf_counter() - t
            t = time.perf_counter()
            pairs.append((a, len(data), coder.decode(data)[0]))
            dec_t += time.perf_counter() - t
        rows.append(measure(variant(model, loop_filter, effort), f"beta={beta:g}", "lossy", pairs, beta=beta,
                            enc_s_per_image=enc_t / len(images), dec_s_per_image=dec_t / len(images)))
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def target_rows(images, model: str, targets, threads: int) -> list[dict]:
    """One row per target rate: ``--target-bpp``'s search on every image, its files decoded and
    measured, with how far each file's rate landed from the target."""
    from vlaecodec.lossy_coder import load_lossy_coder
    coder, rows = load_lossy_coder(model, threads=threads), []
    for target in targets:
        pairs, misses, t = [], [], time.perf_counter()
        for a in images:
            data, _ = coder.encode_to_rate([a], target)
            misses.append(len(data) * 8 / (a.shape[0] * a.shape[1]) / target - 1)
            pairs.append((a, len(data), coder.decode(data)[0]))
        rows.append(measure(label(model), f"target={target:g}", "target", pairs, target_bpp=target,
                            max_miss=float(np.max(np.abs(misses))), mean_miss=float(np.mean(np.abs(misses))),
                            search_s_per_image=(time.perf_counter() - t) / len(images)))
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def _curve(rows, codec, metric):
    sub = sorted((r for r in rows if r["codec"] == codec and r["family"] == "lossy"), key=lambda r: r["bpp"])
    value = (lambda r: -10 * np.log10(1 - r["ms_ssim"])) if metric == "ms_ssim" else (lambda r: r["psnr"])
    return np.array([r["bpp"] for r in sub]), np.array([value(r) for r in sub])


def quality_at(rows, codec, metric, bpp) -> float | None:
    """The codec's quality at this rate, interpolated in log rate (None outside its points)."""
    r, q = _curve(rows, codec, metric)
    if len(r) < 2 or not r[0] <= bpp <= r[-1]:
        return None
    return float(np.interp(np.log(bpp), np.log(r), q))


def bd_rates(rows, test: str, lo: float = 0.25, hi: float = 1.0) -> list[dict]:
    """BD-rate of ``test`` against each classical codec (bjontegaard, pchip), on PSNR and on
    MS-SSIM in dB, over the anchor's points within [lo, hi] bits per pixel (one point either
    side kept so the interpolation spans the range); and quality differences at lo, 0.5, hi."""
    import bjontegaard as bd
    out = []
    for anchor in CLASSICAL:
        row = {"test": test, "anchor": anchor, "range": f"{lo:g}-{hi:g} bpp"}
        for metric in ("psnr", "ms_ssim"):
            ra, qa = _curve(rows, anchor, metric)
            rt, qt = _curve(rows, test, metric)
            keep = [i for i in range(len(ra)) if (i + 1 < len(ra) and ra[i + 1] >= lo) and (i == 0 or ra[i - 1] <= hi)]
            try:
                v = float(bd.bd_rate(ra[keep], qa[keep], rt, qt, method="pchip", require_matching_points=False))
                row[f"bd_rate_{metric}"] = v if np.isfinite(v) else None
            except Exception as e:  # too little overlap: report, do not invent
                row[f"bd_rate_{metric}"] = None
                row["note"] = str(e)
            for b in (lo, 0.5, hi):
                a, t = quality_at(rows, anchor, metric, b), quality_at(rows, test, metric, b)
                row[f"delta_{metric}_at_{b:g}"] = None if a is None or t is None else t - a
        out.append(row)
    return out


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
            rows.append(measure("vlaecodec:z-only", f"{model},z+{eb}", "lossy", pairs, beta=beta,
                                z_extra_bits=eb, kl_bpp=kl_bpp, dec_s_per_image=dec_t / len(images)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


# published anchors, for the plot only (Balle et al. 2018, Kodak, PSNR RGB)
PUBLISHED = {"Balle 2018 hyperprior (published)": ([0.25, 0.5, 1.0], [30.0, 33.1, 37.1])}


def plot(rows: list[dict], path: Path, main: str | None = None) -> None:
    """PSNR and MS-SSIM against rate (and near-lossless rate against the bound); ``main``: the
    vlaecodec model the run is about, drawn in black (other vlaecodec models in grey)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    near = [r for r in rows if r["family"] == "near-lossless"]
    codecs = sorted({r["codec"] for r in rows if r["family"] == "lossy"}, key=lambda c: c.startswith("vlaecodec"))
    lossy_panels = 2 if codecs else 0    # a near-lossless run alone gets no empty lossy panels
    panels = lossy_panels + (1 if near else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.3 * panels + 0.4, 4.6), squeeze=False)
    axes = axes[0]
    for metric, ax in zip(["psnr", "ms_ssim"], axes[:lossy_panels]):
        for name in codecs:
            r, q = _curve(rows, name, metric)
            keep = r <= 3.0
            mine = name.startswith("vlaecodec")
            ours = mine and (main is None or name.split(" ")[0] == main)   # the main model, any variant
            ax.plot(r[keep], q[keep], ("s--" if " " in name else "s-") if mine else "o-", ms=3, label=name,
                    lw=2 if mine else 1, color=("black" if ours else "0.6") if mine else None)
        if metric == "psnr":
            for name, (r, q) in PUBLISHED.items():
                ax.plot(r, q, "k*", ms=8, label=name)
        ax.axvspan(0.25, 1.0, color="0.93", zorder=0)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("PSNR dB (RGB)" if metric == "psnr" else "MS-SSIM dB, -10 log10(1 - MS-SSIM)")
        ax.set_title(f"Kodak lossy: {'PSNR' if metric == 'psnr' else 'MS-SSIM'}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if near:
        ax = axes[lossy_panels]
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


def beta_strip(image: np.ndarray, model: str, betas, path: Path) -> None:
    """The crop, then its lossy file decoded at each beta, labelled with the file's bits/pixel."""
    from PIL import Image, ImageDraw
    from vlaecodec.lossy_coder import load_lossy_coder
    coder = load_lossy_coder(model)
    tiles = [(image, "original")]
    for beta in betas:
        data = coder.encode([image], beta)
        tiles.append((coder.decode(data)[0], f"beta {beta:g}: {len(data) * 8 / (image.shape[0] * image.shape[1]):.2f} bpp"))
    h, w = image.shape[:2]
    sheet = Image.new("RGB", (len(tiles) * (w + 4), h + 18), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, text) in enumerate(tiles):
        sheet.paste(Image.fromarray(tile), (i * (w + 4), 18))
        draw.text((i * (w + 4) + 2, 2), text, fill="black")
    sheet.save(path)


def write(rows: list[dict], out: Path, meta: dict, name: str = "rd", bd: list[dict] | None = None,
          main: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("codec", "family", "setting", "bpp"), k))
    with (out / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows, "bd": bd or []}, indent=1))
    lines = [f"Command: `{meta['command']}` ({meta['machine']}, {meta['date']}); {meta['images']}", ""]
    if bd:
        f = lambda v, fmt: "" if v is None else format(v, fmt)  # noqa: E731
        lines += ["BD-rate (negative: fewer bits for the same quality) and quality differences at equal rate, "
                  "vlaecodec against each codec:", "",
                  "| vlaecodec | against | range | BD-rate PSNR | BD-rate MS-SSIM | dPSNR @0.25 | @0.5 | @1 | "
                  "dMS-SSIM dB @0.25 | @0.5 | @1 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for b in bd:
            lines.append(f"| {b['test']} | {b['anchor']} | {b['range']} | {f(b['bd_rate_psnr'], '+.1f')}% | "
                         f"{f(b['bd_rate_ms_ssim'], '+.1f')}% | " + " | ".join(
                             f(b[f'delta_{m}_at_{x:g}'], '+.2f') for m in ('psnr', 'ms_ssim') for x in (0.25, 0.5, 1.0)) + " |")
        lines.append("")
    targets = [r for r in rows if r["family"] == "target"]
    if targets:
        lines += ["`--target-bpp` on every image: how far each file's rate lands from the target "
                  "(the search's encodes included in the time):", "",
                  "| target bpp | mean bpp | worst miss | mean miss | PSNR dB | search + decode s/img |",
                  "|---|---|---|---|---|---|"]
        for r in targets:
            lines.append(f"| {r['target_bpp']:g} | {r['bpp']:.4f} | {100 * r['max_miss']:.1f}% | "
                         f"{100 * r['mean_miss']:.1f}% | {r['psnr']:.2f} | {r['search_s_per_image']:.2f} |")
        lines.append("")
    lines += ["| family | codec | setting | bits/pixel | PSNR dB | MS-SSIM | max error | encode s/img | decode s/img |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["family"] == "target":
            continue
        t = lambda k: f"{r[k]:.3f}" if k in r else ""  # noqa: E731
        lines.append(f"| {r['family']} | {r['codec']} | {r['setting']} | {r['bpp']:.4f} | {r['psnr']:.2f} | "
                     f"{r['ms_ssim']:.4f} | {r['max_abs_error']} | {t('enc_s_per_image')} | {t('dec_s_per_image')} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / f"{name}.png", main)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.rd")
    ap.add_argument("--images", type=int, default=24, help="first N Kodak images")
    ap.add_argument("--crop", type=int, default=0, help="centre crop of this side (0: whole images)")
    ap.add_argument("--model", default="lossy", help="the lossy (hyperprior) model")
    ap.add_argument("--betas", type=float, nargs="*", default=None,
                    help="betas of the lossy model's rows (default: the betas it was trained at; "
                         "none given: no lossy rows)")
    ap.add_argument("--targets", type=float, nargs="*", default=[0.25, 0.5, 1.0],
                    help="--target-bpp rows: where the rate search lands on each image")
    ap.add_argument("--max-errors", type=int, nargs="*", default=[], help="near-lossless rows (slow at full size)")
    ap.add_argument("--near-model", default="default", help="model for near-lossless")
    ap.add_argument("--z-only", action="store_true", help="also the 0.3 z-only lossy files of the beta family")
    ap.add_argument("--no-classical", action="store_true")
    ap.add_argument("--unfiltered", action="store_true",
                    help="also the model's files without the loop filter (what the filter buys)")
    ap.add_argument("--effort-betas", type=float, nargs="*", default=[],
                    help="also the model's --effort 2 files at these betas (the encoder searches each "
                         "image's latents: about 30x effort 1's encode time)")
    ap.add_argument("--also", nargs="*", default=[], metavar="MODEL",
                    help="other lossy models measured in the same run, at the betas they were trained at "
                         "(the previous release's, say)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="rd", help="results file name")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = kodak(args.images, args.crop)
    rows = [] if args.no_classical else classical_rows(images)
    if args.max_errors:
        rows += near_lossless_rows(images, args.max_errors, args.near_model)
    if args.z_only:
        from vlaecodec.zoo import list_models
        betas = sorted({c["beta"] for c in list_models() if c.get("config", {}).get("levels", 256) == 256
                        and c.get("beta") is not None})
        rows += lossy_rows(images, {model_for_beta(b): b for b in betas}, [0])
    if args.betas is None:
        from vlaecodec.lossy_coder import load_lossy_coder
        args.betas = list(load_lossy_coder(args.model).model.cfg.betas)
    if args.betas:
        rows += hyperprior_rows(images, args.model, args.betas, args.threads)
        if args.unfiltered:
            rows += hyperprior_rows(images, args.model, args.betas, args.threads, loop_filter=False)
    if args.effort_betas:
        rows += hyperprior_rows(images, args.model, args.effort_betas, args.threads, effort=2)
    for other in args.also:
        from vlaecodec.lossy_coder import load_lossy_coder
        rows += hyperprior_rows(images, other, list(load_lossy_coder(other).model.cfg.betas), args.threads)
    if args.targets:
        rows += target_rows(images, args.model, args.targets, args.threads)
    bd = bd_rates(rows, label(args.model)) if args.betas and not args.no_classical else []
    if bd and args.unfiltered:
        bd += bd_rates(rows, variant(args.model, loop_filter=False))
    if bd and args.effort_betas:
        bd += bd_rates(rows, variant(args.model, effort=2))
    if bd:
        for other in args.also:
            bd += bd_rates(rows, label(other))
    meta = {"command": "python -m bench.rd " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()} {args.threads} threads",
            "date": time.strftime("%Y-%m-%d"),
            "images": f"Kodak, first {len(images)} images" + (f", centre {args.crop}x{args.crop} crops" if args.crop else ", full size")}
    write(rows, Path(args.out), meta, args.name, bd, label(args.model))
    if args.betas:
        crop = kodak(23, 0)[22][128:384, 192:576]  # kodim23, the parrots: colour, texture and a plain background
        lo, hi = np.log(min(args.betas)), np.log(max(args.betas))   # four across the range
        strip = [float(f"{b:.3g}") for b in np.exp(np.linspace(hi, lo, 4))]
        beta_strip(np.ascontiguousarray(crop), args.model, strip, Path(args.out) / f"{args.name}_betas.png")


if __name__ == "__main__":
    main()
