"""``python -m bench.speed`` (or ``python -m bench --speed``): lossless speed as a user sees it.

Each Kodak image is encoded and decoded by whole ``vlaecodec`` processes (start-up, model
loading and file I/O included), with 1 and 2 threads, and checked to round-trip exactly.
JPEG-XL (e7, e9) and WebP lossless run in the same loop on the same pixels, in this process
through imagecodecs (their library calls, no start-up: the ratios are, if anything,
unfavourable to vlaecodec).  Peak memory is each vlaecodec process's own max RSS.

Writes bench/results/speed.{json,csv,md} (``--out`` elsewhere).  Ratios to JPEG-XL e9 hold
across machines better than seconds do; both are reported.

``--lossy-beta B`` adds lossy coding at that beta the same way (whole processes, with the
lossy model), beside WebP and JPEG-XL lossy library calls, in a table of its own: lossy
speed is what a user waits for too, start-up (torch) included.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from vlaecodec import data as D
from vlaecodec.quality import psnr

from .classical import CODECS, timed_roundtrip

CLASSICAL = ["jpegxl-e7", "jpegxl-e9", "webp-lossless-m6"]


def vlaecodec_command() -> list[str]:
    """The installed console script, else the module (a source checkout)."""
    exe = shutil.which("vlaecodec", path=str(Path(sys.executable).parent)) or shutil.which("vlaecodec")
    return [exe] if exe else [sys.executable, "-m", "cli.main"]


def user_environment() -> dict[str, str]:
    """This environment without PYTHONDONTWRITEBYTECODE: an installed package runs from
    compiled bytecode (pip compiles it at install; a checkout's first run writes it), and
    with the variable set every process would compile vlaecodec's modules anew (about 0.1 s
    of a lossy decode on the 2-core machine)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed_process(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process, which must succeed."""
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=user_environment())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {err.strip()}")
    return wall, usage.ru_maxrss / 1024


def bench_image(img: np.ndarray, name: str, work: Path, models: list[str], threads: list[int]) -> list[dict]:
    src, vl, back = work / f"{name}.png", work / f"{name}.vlae", work / f"{name}.out.png"
    Image.fromarray(img).save(src)
    rows = []
    for model, t in ((m, t) for m in models for t in threads):
        for p in (vl, back):
            p.unlink(missing_ok=True)
        cmd = vlaecodec_command()
        enc, enc_rss = timed_process(cmd + ["encode", str(src), "-o", str(vl), "--model", model,
                                            "--threads", str(t), "--no-elbo"])
        dec, dec_rss = timed_process(cmd + ["decode", str(vl), "-o", str(back), "--model", model, "--threads", str(t)])
        exact = bool(np.array_equal(np.asarray(Image.open(back)), img))
        rows.append({"image": name, "codec": f"vlaecodec:{model}", "threads": t,
                     "bits_per_dim": vl.stat().st_size * 8 / img.size, "encode_s": enc, "decode_s": dec,
                     "peak_rss_mb": max(enc_rss, dec_rss), "exact": exact})
    for codec in CLASSICAL:
        enc_fn, dec_fn = CODECS[codec]
        data, exact, enc, dec = timed_roundtrip(enc_fn, dec_fn, img)
        rows.append({"image": name, "codec": codec, "threads": 1, "bits_per_dim": len(data) * 8 / img.size,
                     "encode_s": enc, "decode_s": dec, "peak_rss_mb": None, "exact": exact})
    return rows


LOSSY_CLASSICAL = {   # usual settings of each, for their speed (their rates and PSNRs are in the table)
    "webp-q80-m6": (lambda a: imagecodecs.webp_encode(a, level=80, lossless=False, method=6), imagecodecs.webp_decode),
    "jpegxl-d1-e7": (lambda a: imagecodecs.jpegxl_encode(a, distance=1.0, effort=7), imagecodecs.jpegxl_decode),
}


def bench_lossy(img: np.ndarray, name: str, work: Path, beta: float, threads: list[int]) -> list[dict]:
    """Lossy rows of one image: vlaecodec as whole processes, the others as library calls."""
    src, vl, back = work / f"{name}.png", work / f"{name}.lossy.vlae", work / f"{name}.lossy.png"
    Image.fromarray(img).save(src)
    rows, pixels = [], img.shape[0] * img.shape[1]
    for t in threads:
        for p in (vl, back):
            p.unlink(missing_ok=True)
        cmd = vlaecodec_command()
        enc, enc_rss = timed_process(cmd + ["encode", str(src), "-o", str(vl), "--lossy", "--beta", str(beta),
                                            "--threads", str(t)])
        dec, dec_rss = timed_process(cmd + ["decode", str(vl), "-o", str(back), "--threads", str(t)])
        rows.append({"image": name, "codec": f"vlaecodec:lossy@{beta:g}", "threads": t,
                     "bpp": vl.stat().st_size * 8 / pixels, "psnr": psnr(img, np.asarray(Image.open(back))),
                     "encode_s": enc, "decode_s": dec, "peak_rss_mb": max(enc_rss, dec_rss)})
    for codec, (enc_fn, dec_fn) in LOSSY_CLASSICAL.items():
        t0 = time.perf_counter()
        data = enc_fn(img)
        t1 = time.perf_counter()
        out = dec_fn(data)
        t2 = time.perf_counter()
        rows.append({"image": name, "codec": codec, "threads": 1, "bpp": len(data) * 8 / pixels,
                     "psnr": psnr(img, out), "encode_s": t1 - t0, "decode_s": t2 - t1, "peak_rss_mb": None})
    return rows


def summarize_lossy(rows: list[dict], lossless: list[dict] | None = None) -> list[dict]:
    """Per (codec, threads): mean seconds, bits per pixel and PSNR over the images; for
    vlaecodec, also how many times longer each lossless model's decode of the same images
    took at the same thread count (the ratio of the means, ``lossless_decode_x``)."""
    keys = sorted({(r["codec"], r["threads"]) for r in rows}, key=lambda k: (not k[0].startswith("vl"), k))
    out = []
    for codec, t in keys:
        rs = [r for r in rows if r["codec"] == codec and r["threads"] == t]
        rss = [r["peak_rss_mb"] for r in rs if r["peak_rss_mb"] is not None]
        row = {"codec": codec, "threads": t, "images": len(rs),
               **{k: float(np.mean([r[k] for r in rs])) for k in ("bpp", "psnr", "encode_s", "decode_s")},
               "peak_rss_mb": max(rss) if rss else None}
        if codec.startswith("vlaecodec"):
            names = {r["image"] for r in rs}
            same = [r for r in lossless or [] if r["threads"] == t and r["image"] in names
                    and r["codec"].startswith("vlaecodec")]
            row["lossless_decode_x"] = {
                m.split(":", 1)[1]: float(np.mean([r["decode_s"] for r in same if r["codec"] == m])) / row["decode_s"]
                for m in sorted({r["codec"] for r in same})}
        out.append(row)
    return out


def summarize(rows: list[dict]) -> list[dict]:
    """Per (codec, threads): mean seconds, bits/dim over all pixels, peak memory, and the
    ratios of the mean times to JPEG-XL e9's (measured on the same images in the same run)."""
    keys = sorted({(r["codec"], r["threads"]) for r in rows}, key=lambda k: (not k[0].startswith("vl"), k))
    ref = [r for r in rows if r["codec"] == "jpegxl-e9"]
    ref_enc, ref_dec = (float(np.mean([r[k] for r in ref])) for k in ("encode_s", "decode_s"))
    out = []
    for codec, t in keys:
        rs = [r for r in rows if r["codec"] == codec and r["threads"] == t]
        enc, dec = float(np.mean([r["encode_s"] for r in rs])), float(np.mean([r["decode_s"] for r in rs]))
        rss = [r["peak_rss_mb"] for r in rs if r["peak_rss_mb"] is not None]
        out.append({"codec": codec, "threads": t, "images": len(rs),
                    "bits_per_dim": float(np.mean([r["bits_per_dim"] for r in rs])),
                    "encode_s": enc, "decode_s": dec,
                    "encode_x_jxl_e9": enc / ref_enc, "decode_x_jxl_e9": dec / ref_dec,
                    "peak_rss_mb": max(rss) if rss else None, "all_exact": all(r["exact"] for r in rs)})
    return out


def markdown(summary: list[dict], meta: dict) -> str:
    lines = [f"Lossless speed on {meta['images']} Kodak images ({meta['machine']}; `{meta['command']}`).",
             "vlaecodec: whole processes; the others: library calls in the bench's process.", "",
             "| codec | threads | bits/dim | encode s | decode s | encode / JPEG-XL e9 | decode / JPEG-XL e9 | peak RSS MB | exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        rss = "" if s["peak_rss_mb"] is None else f"{s['peak_rss_mb']:.0f}"
        lines.append(f"| {s['codec']} | {s['threads']} | {s['bits_per_dim']:.4f} | {s['encode_s']:.3f} | "
                     f"{s['decode_s']:.3f} | {s['encode_x_jxl_e9']:.2f} | {s['decode_x_jxl_e9']:.1f} | {rss} | "
                     f"{'yes' if s['all_exact'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def markdown_lossy(summary: list[dict]) -> str:
    lines = ["", "Lossy on the same images: vlaecodec as whole processes (start-up and model loading "
             "included), the others as library calls in the bench's process.", "",
             "| codec | threads | bits/pixel | PSNR dB | encode s | decode s | lossless decode / this | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        rss = "" if s["peak_rss_mb"] is None else f"{s['peak_rss_mb']:.0f}"
        times = ", ".join(f"{m} {x:.1f}" for m, x in s.get("lossless_decode_x", {}).items())
        lines.append(f"| {s['codec']} | {s['threads']} | {s['bpp']:.3f} | {s['psnr']:.2f} | {s['encode_s']:.3f} | "
                     f"{s['decode_s']:.3f} | {times} | {rss} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["default"])
    ap.add_argument("--images", type=int, default=24, help="The first N Kodak images.")
    ap.add_argument("--threads", default="1,2", help="Thread counts for vlaecodec, comma-separated.")
    ap.add_argument("--out", default="bench/results", help="Folder for speed.{json,csv,md}.")
    ap.add_argument("--name", default="speed", help="Base name of the result files.")
    ap.add_argument("--crop", type=int, default=0, help="Centre crops of this side (0: whole images; for tests).")
    ap.add_argument("--lossy-beta", type=float, default=None,
                    help="Also time lossy coding at this beta (whole processes), beside WebP and JPEG-XL lossy.")
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    images = D.load_kodak(a.images)
    if a.crop:
        images = [D.centre_crop(i, a.crop) for i in images]
    rows, lossy = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, img in enumerate(images):
            name = f"kodim{i + 1:02d}"
            rows += bench_image(img, name, Path(tmp), a.models, threads)
            if a.lossy_beta is not None:
                lossy += bench_lossy(img, name, Path(tmp), a.lossy_beta, threads)
            last = [r for r in rows + lossy if r["image"] == name]
            print(" ".join(f"{r['codec']}/{r['threads']}: {r['encode_s']:.2f}+{r['decode_s']:.2f}s" for r in last),
                  file=sys.stderr)
    summary = summarize(rows)
    meta = {"images": len(images), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": "python -m bench.speed " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"meta": meta, "summary": summary, "rows": rows}
    if lossy:
        record.update(lossy_summary=summarize_lossy(lossy, rows), lossy_rows=lossy)
    (out / f"{a.name}.json").write_text(json.dumps(record, indent=1))
    with (out / f"{a.name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = markdown(summary, meta) + (markdown_lossy(record["lossy_summary"]) if lossy else "")
    (out / f"{a.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
