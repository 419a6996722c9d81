"""``python -m bench [--quick] [--suite lossless] [--datasets ...] [--models ...]``

Writes bench/results/lossless.csv, lossless.json and lossless.md (with --out DIR elsewhere).
Every vlaecodec number comes from real files: encode, decode, compare the pixels, count bytes.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vlaecodec import data as D
from vlaecodec.api import elbo_bpd, load_codec
from vlaecodec.codec import CodingStats

from .classical import CODECS, timed_roundtrip

QUICK = {"cifar10-test": 100, "kodak": 2}
FULL = {"cifar10-test": 10000, "kodak": 24}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def images_of(name: str, n: int) -> list[np.ndarray]:
    imgs = D.load_dataset(name, n)
    return list(imgs)


def image_elbos(model: str, images: list[np.ndarray]) -> list[float]:
    """The model's -ELBO of each image, bits per subpixel."""
    return [elbo_bpd(i, model) for i in images]


def bench_vlaecodec(model: str, dataset: str, images: list[np.ndarray], archive: bool,
                    elbos: list[float] | None = None, threads: int = 1) -> dict:
    codec = load_codec(model, threads)
    dims = sum(i.size for i in images)
    elbos = image_elbos(model, images) if elbos is None else elbos
    elbo = sum(e * i.size for e, i in zip(elbos, images)) / dims
    gaps = []
    enc_t = dec_t = 0.0
    total = 0
    exact = True
    stats = CodingStats()
    if archive:
        t = time.perf_counter()
        data = codec.encode_many(images, stats)
        enc_t = time.perf_counter() - t
        t = time.perf_counter()
        out = codec.decode_many(data)
        dec_t = time.perf_counter() - t
        exact = all(np.array_equal(a, b) for a, b in zip(out, images))
        total = len(data)
    else:
        for img in tqdm(images, desc=f"{model} {dataset}", leave=False, mininterval=5):
            data, ok, enc_s, dec_s = timed_roundtrip(lambda i: codec.encode(i, stats), codec.decode, img)
            enc_t, dec_t, exact, total = enc_t + enc_s, dec_t + dec_s, exact and ok, total + len(data)
            gaps.append(100 * (len(data) * 8 / img.size - elbos[len(gaps)]) / elbos[len(gaps)])
    bpd = total * 8 / dims
    n = len(images)
    return {"dataset": dataset, "codec": f"vlaecodec:{model}" + (":archive" if archive else ""),
            "n": n, "bpd": bpd, "elbo_bpd": elbo, "gap_pct": 100 * (bpd - elbo) / elbo,
            "exact": exact, "enc_s_per_image": enc_t / n, "dec_s_per_image": dec_t / n,
            "pixels_per_s_decode": sum(i.shape[0] * i.shape[1] for i in images) / max(dec_t, 1e-9),
            "z_bits_sent": stats.bits_prior, "z_bits_back": stats.bits_back,
            "max_file_gap_pct": max(gaps) if gaps else None, "peak_rss_mb": peak_rss_mb(), "threads": threads}


def bench_effort(model: str, effort: int, dataset: str, images: list[np.ndarray]) -> dict:
    """vlaecodec at an --effort (api.encode: every model of the effort, the smallest file kept),
    one file per image; which model won how many images."""
    from vlaecodec import api
    total, enc_t, dec_t, exact, won = 0, 0.0, 0.0, True, {}
    for img in tqdm(images, desc=f"effort {effort} {dataset}", leave=False, mininterval=5):
        data, ok, enc_s, dec_s = timed_roundtrip(lambda i: api.encode(i, model, effort=effort), api.decode, img)
        enc_t, dec_t, exact, total = enc_t + enc_s, dec_t + dec_s, exact and ok, total + len(data)
        name = api.info(data).get("model_name", "?")
        won[name] = won.get(name, 0) + 1
    n, dims = len(images), sum(i.size for i in images)
    return {"dataset": dataset, "codec": f"vlaecodec:{model}:effort{effort}", "n": n, "bpd": total * 8 / dims,
            "exact": exact, "enc_s_per_image": enc_t / n, "dec_s_per_image": dec_t / n, "models_chosen": won,
            "peak_rss_mb": peak_rss_mb()}


def bench_classical(name: str, dataset: str, images: list[np.ndarray]) -> dict:
    """A classical codec through its library (imagecodecs, Pillow) in this process."""
    enc_fn, dec_fn = CODECS[name]
    total, exact, enc_t, dec_t = 0, True, 0.0, 0.0
    for img in images:
        data, ok, enc_s, dec_s = timed_roundtrip(enc_fn, dec_fn, img)
        total, enc_t, dec_t, exact = total + len(data), enc_t + enc_s, dec_t + dec_s, exact and ok
    n, dims = len(images), sum(i.size for i in images)
    return {"dataset": dataset, "codec": name, "n": n, "bpd": total * 8 / dims, "elbo_bpd": None,
            "gap_pct": None, "exact": exact, "enc_s_per_image": enc_t / n, "dec_s_per_image": dec_t / n,
            "peak_rss_mb": peak_rss_mb()}


def merged(previous: dict, rows: list[dict], key=lambda r: (r["dataset"], r["codec"])) -> list[dict]:
    """The rows of an earlier results file, with those that ``rows`` remake (same ``key``: data
    set and codec) replaced; each kept row keeps the command that made it (tests/test_bench.py)."""
    fresh = {key(r) for r in rows}
    kept = [r for r in previous["rows"] if key(r) not in fresh]
    for r in kept:
        r.setdefault("command", previous["meta"]["command"])
    return kept + rows


def write(rows: list[dict], out: Path, name: str, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("dataset", "codec", "bpd", "elbo_bpd"), k))
    with (out / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    commands = list(dict.fromkeys(r.get("command", meta["command"]) for r in rows))
    lines = ["Made by " + " and ".join(f"`{c}`" for c in commands) + f" ({meta['machine']}, {meta['date']})", "",
             "| dataset | codec | n | bits/dim (files) | -ELBO bits/dim | gap % | largest file gap % | exact | enc s/img | dec s/img |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f="{:.4f}": "" if v is None else f.format(v)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['codec']} | {r['n']} | {fmt(r['bpd'])} | {fmt(r.get('elbo_bpd'))} | "
                     f"{fmt(r.get('gap_pct'), '{:.2f}')} | {fmt(r.get('max_file_gap_pct'), '{:.2f}')} | {r['exact']} | {fmt(r.get('enc_s_per_image'), '{:.3f}')} | "
                     f"{fmt(r.get('dec_s_per_image'), '{:.3f}')} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--speed" in argv:   # the speed bench has its own options
        from .speed import main as speed_main
        return speed_main([a for a in argv if a != "--speed"])
    ap = argparse.ArgumentParser(prog="python -m bench", epilog="--speed [options]: the speed bench (bench/speed.py)")
    ap.add_argument("--quick", action="store_true", help="small slices: minutes, for development")
    ap.add_argument("--datasets", nargs="*", default=None, help="default: cifar10-test kodak")
    ap.add_argument("--limit", type=int, help="images per dataset (overrides --quick/full sizes)")
    ap.add_argument("--sizes", nargs="*", default=[], help="per data set, e.g. kodak=6 cifar10-test=300")
    ap.add_argument("--models", nargs="*", default=["default"])
    ap.add_argument("--classical", nargs="*", default=list(CODECS))
    ap.add_argument("--no-archive", action="store_true")
    ap.add_argument("--efforts", nargs="*", type=int, default=[],
                    help="also these --effort levels (above 1) of the first model, one file per image")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, and the codec's convolution threads")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--name", default="lossless", help="results file stem: OUT/NAME.csv, .json, .md")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows already in OUT/NAME.json except those this run remakes (same data set and codec)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = dict(QUICK if args.quick else FULL)
    sizes.update({k: int(v) for k, v in (item.split("=") for item in args.sizes)})
    datasets = args.datasets or list(sizes)
    rows = []
    for ds in datasets:
        images = images_of(ds, args.limit or sizes.get(ds, 100))
        for name in args.classical:
            rows.append(bench_classical(name, ds, images))
            print(json.dumps(rows[-1]), file=sys.stderr)
        for m in args.models:
            elbos = image_elbos(m, images)
            rows.append(bench_vlaecodec(m, ds, images, archive=False, elbos=elbos, threads=args.threads))
            print(json.dumps(rows[-1]), file=sys.stderr)
            if not args.no_archive and len(images) > 1:
                rows.append(bench_vlaecodec(m, ds, images, archive=True, elbos=elbos, threads=args.threads))
                print(json.dumps(rows[-1]), file=sys.stderr)
        for effort in args.efforts:
            rows.append(bench_effort(args.models[0], effort, ds, images))
            print(json.dumps(rows[-1]), file=sys.stderr)
    meta = {"command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()} {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}",
            "date": time.strftime("%Y-%m-%d")}
    for r in rows:
        r["command"] = meta["command"]
    old = Path(args.out) / f"{args.name}.json"
    if args.merge and old.exists():
        rows = merged(json.loads(old.read_text()), rows)
    write(rows, Path(args.out), args.name, meta)


if __name__ == "__main__":
    main()
