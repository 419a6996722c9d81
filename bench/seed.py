"""The seed's comparison: ``python -m bench.seed [--n N] [--iw-n N] [--iw K]``.

VAE with a factorized decoder, VAE + full PixelCNN and VLAE (local window) on binarized
MNIST (nats/image, our static binarization, IW bound) and CIFAR-10 (bits/dim): -ELBO, KL,
active units.  Figures, all from the coder's exact network: KL per latent channel; for each
model, samples from the prior, one z decoded several times, and an interpolation between two
test images' z.  Writes bench/results/seed.{csv,json,md} and seed_*.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlaecodec import data as D
from vlaecodec.evaluate import evaluate
from vlaecodec.zoo import list_models, load_model, record_result

# (row label, zoo model, test set): the seed's rows, ours where the zoo has them
ROWS = [
    ("VAE (factorized)", "bmnist-factorized", "bmnist-test"),
    ("VAE + PixelCNN (full)", "bmnist-full", "bmnist-test"),
    ("VLAE (4x2 window)", "bmnist-local", "bmnist-test"),
    ("VAE (factorized)", "cifar-factorized", "cifar10-test"),
    ("VAE + PixelCNN (full)", "cifar-full", "cifar10-test"),
    ("VLAE (7x4 window)", "cifar-local", "cifar10-test"),
    ("VLAE default (7x4, bigger)", "default", "cifar10-test"),
]
PUBLISHED = "Chen et al. 2017, VLAE: 79.03 nats static MNIST (78.53 dynamic), 89.83 Omniglot, 2.95 bits/dim CIFAR-10"


def seed_rows(n: int, iw_n: int, iw_k: int, command: str | None = None,
              only: list[str] | None = None) -> list[dict]:
    zoo = {c["name"]: c for c in list_models()}
    rows = []
    for label, name, dataset in ROWS:
        if only and name not in only:
            continue
        if name not in zoo:
            print(f"skip {name}: not in the zoo", file=sys.stderr)
            continue
        model, card = load_model(name)
        images = D.load_dataset(dataset, n)
        res = evaluate(model, images, batch_size=100)
        if command:
            record_result(name, dataset + (f"[:{n}]" if n < 10000 else ""), res, command)
        row = {"row": label, "model": name, "data": dataset, "n": res["n"], "bpd": res["bpd"],
               "distortion_bpd": res["distortion_bpd"], "rate_bpd": res["rate_bpd"],
               "nats_per_image": res["nats_per_image"], "kl_nats_per_image": res["kl_nats_per_image"],
               "active_units": res["active_units"], "latent_channels": res["latent_channels"],
               "kl_bits_per_latent_channel": res["kl_bits_per_latent_channel"],
               "decoder": card.get("decoder"), "window": card.get("window"),
               "train_seconds": card.get("train_seconds"),
               "hardware": sorted({s["hardware"] for s in card.get("training_segments", [])}),
               "model_sha256": card["model_id"], "command": command, "date": time.strftime("%Y-%m-%d")}
        if iw_k and D.is_binary_dataset(dataset):
            iw = evaluate(model, D.load_dataset(dataset, iw_n), batch_size=50, iw_samples=iw_k)
            row.update(iw_n=iw["n"], iw_k=iw_k, iw_nll_nats_per_image=iw["iw_nll_nats_per_image"])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "kl_bits_per_latent_channel"}), file=sys.stderr)
    return rows


# --- figures -----------------------------------------------------------------------------
def _tile(images: list[np.ndarray], scale: int) -> Image.Image:
    """One row of images, scaled up with nearest neighbours, 2-pixel white gaps."""
    ims = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    ims = [(im * 255).astype(np.uint8) if im.max() <= 1 else im for im in ims]
    h, w = ims[0].shape[:2]
    out = Image.new("RGB", (len(ims) * (w + 2) - 2, h), "white")
    for i, im in enumerate(ims):
        out.paste(Image.fromarray(im), (i * (w + 2), 0))
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST)


def _stack(rows: list[tuple[str, Image.Image]], margin: int = 230) -> Image.Image:
    """Rows of pictures under each other, each with its label on the left."""
    from PIL import ImageDraw
    out = Image.new("RGB", (margin + max(r.width for _, r in rows), sum(r.height + 6 for _, r in rows)), "white")
    draw, y = ImageDraw.Draw(out), 0
    for label, r in rows:
        out.paste(r, (margin, y))
        draw.text((4, y + r.height // 2 - 6), label, fill="black")
        y += r.height + 6
    return out


def pictures(name: str, images: np.ndarray, k: int = 6) -> list[tuple[str, Image.Image]]:
    """Three rows for one model: samples from the prior; one z (a test image's posterior mean)
    decoded k times; an interpolation between two test images' posterior means, one sample
    each.  Local and factorized decoders run on the coder's exact network in wavefront order;
    the full PixelCNN, which the coder does not support, on the float network in raster order."""
    H, W, C = images.shape[1:]
    try:
        draw, mean = _exact_drawer(name, images)
    except ValueError:
        draw, mean = _float_drawer(name, images)
    g = torch.Generator().manual_seed(0)
    prior = draw(torch.randn(k, *mean.shape[1:], generator=g, dtype=torch.float64))
    same_z = draw(mean[:1].expand(k, -1, -1, -1))
    t = torch.linspace(0, 1, k, dtype=torch.float64).view(-1, 1, 1, 1)
    interp = draw((1 - t) * mean[1:2] + t * mean[2:3])
    return [(f"{name}: prior samples", _tile(prior, 3)),
            (f"{name}: test image, its z x{k}", _tile([images[0]] + same_z, 3)),
            (f"{name}: interpolation of z", _tile([images[1]] + interp + [images[2]], 3))]


def _exact_drawer(name: str, images: np.ndarray):
    from vlaecodec.api import load_codec
    codec = load_codec(name)
    H, W = images.shape[1:3]
    mean = torch.stack([codec.posterior.mean(im) for im in images[:3]])
    return (lambda zs: [codec.zonly.render(z, H, W, "sample", seed) for seed, z in enumerate(zs)]), mean


def _float_drawer(name: str, images: np.ndarray):
    model, _ = load_model(name)
    H, W, C = images.shape[1:]
    with torch.no_grad():
        mean, _ = model.posterior(torch.from_numpy(np.array(images[:3], dtype=np.int64)).permute(0, 3, 1, 2))
    g = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def draw(zs):
        out = model.sample_pixels(zs.float(), (len(zs), C, H, W), generator=g)
        return list(out.permute(0, 2, 3, 1).numpy().astype(np.uint8))
    return draw, mean.double()


def kl_figure(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, binary in zip(axes, [True, False]):
        sub = [r for r in rows if D.is_binary_dataset(r["data"]) == binary]
        width = 0.8 / max(1, len(sub))
        for i, r in enumerate(sub):
            kl = r["kl_bits_per_latent_channel"]
            ax.bar(np.arange(len(kl)) + i * width, kl, width, label=f"{r['row']} [{r['model']}]")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("latent channel")
        ax.set_ylabel("KL, bits per latent")
        ax.set_title("binarized MNIST" if binary else "CIFAR-10")
        if sub:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def merged(previous: dict, new: list[dict]) -> list[dict]:
    """``previous``'s rows with those of the models in ``new`` replaced, in the order of ROWS.

    >>> old = {"meta": {"command": "a"}, "rows": [{"model": "default"}, {"model": "cifar-local"}]}
    >>> merged(old, [{"model": "default", "command": "b"}])
    [{'model': 'cifar-local', 'command': 'a'}, {'model': 'default', 'command': 'b'}]
    """
    from .__main__ import merged as merged_rows
    order = {name: i for i, (_, name, _) in enumerate(ROWS)}
    rows = merged_rows(previous, new, key=lambda r: r["model"])
    return sorted(rows, key=lambda r: order.get(r["model"], len(order)))


def write(rows: list[dict], out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    flat = [{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows]
    keys = list(dict.fromkeys(k for r in flat for k in r))
    with (out / "seed.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
    (out / "seed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    commands = list(dict.fromkeys(r.get("command") or meta["command"] for r in rows))
    lines = [f"Command{'s' if len(commands) > 1 else ''}: " + ", then ".join(f"`{c}`" for c in commands)
             + f" ({meta['machine']}, {meta['date']}). "
             "Binarized MNIST: our fixed-seed static binarization of the test set, not the published one. "
             f"Published for comparison: {PUBLISHED}.", "",
             "| row | model | test set | n | -ELBO | KL | active units | IW bound | training |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        binary = D.is_binary_dataset(r["data"])
        elbo = f"{r['nats_per_image']:.2f} nats" if binary else f"{r['bpd']:.4f} bits/dim"
        kl = f"{r['kl_nats_per_image']:.3f} nats" if binary else f"{r['rate_bpd']:.4f} bits/dim"
        iw = f"{r['iw_nll_nats_per_image']:.2f} (k={r['iw_k']}, n={r['iw_n']})" if "iw_k" in r else ""
        train = f"{r['train_seconds']:.0f} s on {', '.join(r['hardware'])}" if r.get("train_seconds") else ""
        lines.append(f"| {r['row']} | {r['model']} | {r['data']} | {r['n']} | {elbo} | {kl} | "
                     f"{r['active_units']}/{r['latent_channels']} | {iw} | {train} |")
    (out / "seed.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.seed")
    ap.add_argument("--n", type=int, default=10000, help="test images per data set")
    ap.add_argument("--iw-n", type=int, default=1000, help="test images for the IW bound")
    ap.add_argument("--iw", type=int, default=16, help="IW samples k (0: none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--figures-only", action="store_true",
                    help="draw the figures from the rows in OUT/seed.json (no evaluation)")
    ap.add_argument("--only", choices=["bmnist", "cifar"], help="draw only this data set's pictures")
    ap.add_argument("--models", nargs="+", choices=sorted({name for _, name, _ in ROWS}), help="measure only these rows' models and merge them into OUT/seed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    command = "python -m bench.seed " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.figures_only:
        rows = json.loads((out / "seed.json").read_text())["rows"]
    else:
        rows = seed_rows(args.n, args.iw_n, args.iw, command, args.models)
        if args.models:  # each kept row keeps the command that measured it
            rows = merged(json.loads((out / "seed.json").read_text()), rows)
        meta = {"command": command,
                "machine": f"{platform.machine()} {torch.get_num_threads()} torch threads",
                "date": time.strftime("%Y-%m-%d")}
        write(rows, out, meta)
    kl_figure(rows, out / "seed_kl.png")
    for binary, tag in [(True, "bmnist"), (False, "cifar")]:
        if args.only and args.only != tag:
            continue
        sub = [r for r in rows if D.is_binary_dataset(r["data"]) == binary]
        if sub:
            images = np.asarray(D.load_dataset(sub[0]["data"], 3))
            _stack([p for r in sub for p in pictures(r["model"], images)]).save(out / f"seed_{tag}.png")


if __name__ == "__main__":
    main()
