"""Training of the lossy model: resumable, checkpointed, keeping the best weights.

Batches are a pure function of (seed, step): random crops of the training photos, each
sample at a random trained beta.  ``checkpoint.safetensors`` holds the model and Adam state
(tensors) and the step (metadata); ``best.safetensors`` holds the weights with the lowest
held-out loss so far, ready to export.  A run killed at any point resumes from its last
checkpoint; resuming from weights alone with a fresh optimiser (``--init``) is fine too, and
``--init`` from a model with fewer latent channels than ``--m`` widens it (:mod:`.lossy_widen`).

Held out (never trained on): the last 4 images of ``photos-wall/`` and of ``graphics/``.
"""
from __future__ import annotations

import json
import math
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import data as D
from .lossy_model import LossyConfig, LossyModel, gaussian_likelihood
from .lossy_widen import widened

HOLDOUT = D.HOLDOUT


@dataclass
class LossyTrainSettings:
    out: str = "runs/lossy"
    n: int = 96
    m: int = 128
    crop: int = 128
    batch_size: int = 8
    lr: float = 2e-4
    lr_final: float = 0.0           # > 0 with --minutes: lr falls to this by the invocation's end (cosine)
    steps: int = 0                  # stop at this step (0: no limit)
    minutes: float = 0.0            # stop this invocation after this many minutes (0: none)
    ckpt_minutes: float = 5.0
    val_minutes: float = 10.0
    seed: int = 0
    threads: int = 1
    init: str = ""                  # start from these weights (a .safetensors, fresh optimiser) or a run's checkpoint.safetensors (its Adam state too)
    graphics_frac: float = 0.1      # share of crops taken from the graphics images
    gain_lr: float = 10.0           # the gains' learning rate, as a multiple of lr
    betas: str = ""                 # trained betas, comma-separated (empty: the model's default)
    context: int = 0                # width of a checkerboard context network (0: none)
    ctx_lr: float = 10.0            # the context network's learning rate, as a multiple of lr
    warmup: int = 0                 # rates ramp up from 0 over this invocation's first steps (for a fresh Adam)


def training_images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(photos, graphics) for training: the photos, photos-wall and graphics minus held-out."""
    photos, wall, graphics = D.training_sets()
    return photos + wall, graphics


def holdout_images(size: int = 256) -> list[np.ndarray]:
    """Centre crops of the held-out photos-wall and graphics images."""
    root = D.data_root()
    out = []
    for folder in ("photos-wall", "graphics"):
        for im in D.load_folder(root / folder)[-HOLDOUT:]:
            h, w = im.shape[:2]
            s = min(size, h, w) // 64 * 64
            y, x = (h - s) // 2, (w - s) // 2
            crop = im[y:y + s, x:x + s]
            out.append(np.repeat(crop, 3, axis=2) if crop.shape[2] == 1 else crop)
    return out


class Batches:
    def __init__(self, s: LossyTrainSettings, levels: int):
        self.s, self.levels = s, levels
        self.photos, self.graphics = training_images()

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixels [B,3,crop,crop] as floats 0..255, trained-beta index per sample)."""
        rng = np.random.default_rng([self.s.seed, step])
        n_g = int(rng.binomial(self.s.batch_size, self.s.graphics_frac))
        crops = D.random_crops(self.photos, self.s.batch_size - n_g, self.s.crop, rng)
        if n_g:
            crops = np.concatenate([crops, D.random_crops(self.graphics, n_g, self.s.crop, rng)])
        flip = rng.random(len(crops)) < 0.5
        crops[flip] = crops[flip, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
        return x, torch.from_numpy(rng.integers(0, self.levels, len(x)))


@torch.no_grad()
def validate(model: LossyModel, images: list[np.ndarray]) -> list[dict]:
    """Per trained beta: bits/pixel (rounded latents) and PSNR on the held-out crops."""
    model.eval()
    rows = []
    for lev, beta in enumerate(model.cfg.betas):
        bits = sq = pixels = 0.0
        for im in images:
            x = torch.from_numpy(im).permute(2, 0, 1)[None].float()
            y, z = model.analysis(x, lev)
            z_hat = torch.round(z)
            y_hat, mean, scale = model.quantized(y, z_hat)
            bits += float(-torch.log2(gaussian_likelihood(y_hat, mean, scale)).sum())
            bits += float(-torch.log2(model.z_density.likelihood(z_hat)).sum())
            x_hat = model.synthesis(y_hat, lev).clamp(0, 255).round()
            sq += float(((x_hat - x) ** 2).sum())
            pixels += x.shape[2] * x.shape[3]
        mse = sq / (pixels * 3)
        rows.append({"beta": beta, "bpp": bits / pixels, "psnr": 10 * math.log10(255 ** 2 / mse),
                     "loss": mse / beta + bits / pixels})
    model.train()
    return rows


def _save(path: Path, tensors: dict, meta: dict) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"json": json.dumps(meta)})
    tmp.replace(path)


def _optimizer(model: LossyModel, s: LossyTrainSettings) -> torch.optim.Adam:
    """Adam, with the per-beta gains in a faster group: they start equal, and the betas only
    get their own rates once the gains have moved apart; a context network grown on a trained
    model gets its own faster group too."""
    gains = [model.log_gain_y, model.log_gain_y_inv, model.log_gain_z]
    ctx = list(model.ctx.parameters()) if model.cfg.context else []
    ids = {id(p) for p in gains + ctx}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": s.lr}, {"params": gains, "lr": s.lr * s.gain_lr}]
    if ctx:
        groups.append({"params": ctx, "lr": s.lr * s.ctx_lr})
    return torch.optim.Adam(groups)


def _load_growing(model: LossyModel, weights: dict, source) -> None:
    """``weights`` into ``model``, whose context network, if missing from them, starts at zero
    (so adds nothing); any other missing weight, or any unexpected one, is an error (weights
    with a context network loaded without ``--context`` would silently lose it)."""
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("ctx.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{source}: missing {missing}, unexpected {result.unexpected_keys} "
                         "(--context must match the weights, or grow a context network on weights without one)")


def _multipliers(s: LossyTrainSettings) -> tuple[float, float, float]:
    """Each optimiser group's learning rate as a multiple of lr (see :func:`_optimizer`)."""
    return 1.0, s.gain_lr, s.ctx_lr


def _restore(path: Path, s: LossyTrainSettings):
    """(config, model, optimiser, metadata) of a checkpoint.  ``--context`` grows a context
    network on a model without one: it starts at zero (the model codes as before) with an
    Adam state of its own, while every other weight keeps its Adam state (a fresh one moves
    every weight by about lr in its first steps: 3 steps at 5e-5 took a trained model's
    held-out loss from 1.302 to 1.406)."""
    from safetensors import safe_open
    t = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["json"])
    cfg = LossyConfig.from_dict(meta["config"])
    if s.context and not cfg.context:
        cfg = replace(cfg, context=s.context)
    model = LossyModel(cfg)
    _load_growing(model, {k[6:]: v for k, v in t.items() if k.startswith("model.")}, path)
    opt = _optimizer(model, s)
    opt_state = opt.state_dict()
    for i in (i for g in opt_state["param_groups"] for i in g["params"]):
        if f"opt.{i}.exp_avg" in t:
            opt_state["state"][i] = {"step": t[f"opt.{i}.step"], "exp_avg": t[f"opt.{i}.exp_avg"],
                                     "exp_avg_sq": t[f"opt.{i}.exp_avg_sq"]}
    opt.load_state_dict(opt_state)
    for group, mult in zip(opt.param_groups, _multipliers(s)):  # this invocation's rates
        group["lr"] = s.lr * mult
    return cfg, model, opt, meta


def train(s: LossyTrainSettings) -> None:
    torch.set_num_threads(s.threads)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.safetensors"
    cfg = LossyConfig(n=s.n, m=s.m, context=s.context)
    if s.betas:
        cfg.betas = [float(b) for b in s.betas.split(",")]
    model = LossyModel(cfg)
    opt = _optimizer(model, s)
    step, best, history, seconds = 0, math.inf, [], 0.0
    if ckpt.exists() or s.init.endswith("checkpoint.safetensors"):
        # a run's own checkpoint, or another run's (--init): weights and Adam state both
        cfg, model, opt, meta = _restore(ckpt if ckpt.exists() else Path(s.init), s)
        step, best, history = meta["step"], meta["best"], meta["history"]
        seconds = meta.get("seconds") or _seconds_from_history(history, s.val_minutes)
        print(f"resumed at step {step}", flush=True)
    elif s.init:
        # a zoo model's file also holds its integer tables: derived data, made anew at export
        weights = {k: v for k, v in load_file(s.init).items() if not k.startswith("tables.")}
        init_m, init_k = weights["g_a.6.weight"].shape[0], weights["log_gain_y"].shape[0]
        init_betas = _init_betas(s.init, init_k, cfg.betas)
        if init_m != cfg.m or init_betas != cfg.betas:
            # a narrower latent grows to --m, other betas start from interpolated gains:
            # the training is kept (lossy_widen.py)
            start_model = LossyModel(LossyConfig(n=cfg.n, m=init_m, betas=init_betas,
                                                 hs_mid=weights["h_s.4.weight"].shape[1]))
            start_model.load_state_dict(weights)
            model = widened(start_model, cfg.m, seed=s.seed, betas=cfg.betas)
            cfg = model.cfg
            opt = _optimizer(model, s)
        else:
            cfg = replace(cfg, hs_mid=weights["h_s.4.weight"].shape[1])
            model = LossyModel(cfg)
            opt = _optimizer(model, s)
            _load_growing(model, weights, s.init)
        print(f"initialised from {s.init} (m={init_m} -> {cfg.m}, {init_k} -> {len(cfg.betas)} betas)",
              flush=True)
    source, held = Batches(s, len(cfg.betas)), holdout_images()
    command = shlex.join(["vlaecodec"] + sys.argv[1:]) if sys.argv else ""

    def checkpoint():
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        for i, st in opt.state_dict()["state"].items():
            for k in ("step", "exp_avg", "exp_avg_sq"):
                tensors[f"opt.{i}.{k}"] = torch.as_tensor(st[k]).reshape(-1) if k == "step" else st[k]
        _save(ckpt, tensors, {"config": cfg.to_dict(), "step": step, "best": best, "history": history,
                              "settings": asdict(s), "seconds": seconds + time.time() - start})

    def validate_now():
        nonlocal best, losses, last_val
        rows = validate(model, held)
        score = sum(r["loss"] for r in rows) / len(rows)
        history.append({"step": step, "time": time.time(), "seconds": seconds + time.time() - start,
                        "lr": opt.param_groups[0]["lr"],
                        "train_loss": float(np.mean(losses)),
                        "val_loss": score, "rows": rows, "host": platform.machine(),
                        "threads": s.threads, "command": command})
        losses = []
        print(json.dumps({"step": step, "val": round(score, 4),
                          "rd": [(round(r["bpp"], 3), round(r["psnr"], 2)) for r in rows]}), flush=True)
        if score < best:
            best = score
            _save(out / "best.safetensors", dict(model.state_dict()),
                  {"config": cfg.to_dict(), "step": step, "val_loss": score, "rows": rows,
                   "history": history})
        last_val = time.time()

    start = last_ckpt = last_val = time.time()
    losses, first = [], step
    while (not s.steps or step < s.steps) and (not s.minutes or time.time() - start < s.minutes * 60):
        _set_rates(opt, s, (time.time() - start) / (s.minutes * 60) if s.minutes else 0.0, step - first)
        x, lev = source.batch(step)
        out_ = model(x, lev)
        loss = model.loss(out_, lev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        if time.time() - last_val > s.val_minutes * 60:
            validate_now()
        if time.time() - last_ckpt > s.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    if losses:  # the steps since the last validation are judged too, so a run ends on its best
        validate_now()
    checkpoint()


def _set_rates(opt, s: LossyTrainSettings, frac: float, done: int) -> None:
    """Every group's rate for this step, as a multiple of lr (:func:`_multipliers`).

    With lr_final (and --minutes), a cosine decay from lr to lr_final over the invocation's
    wall time: an annealed model validates far better than one held at a constant rate (a
    drop from 1e-4 to 3e-5 for 20 minutes took the held-out loss from 1.528 to 1.406).
    With --warmup N, a linear ramp from 0 over the invocation's first N steps: a fresh Adam's
    first steps move every weight by about lr whatever its gradient, which undoes a trained
    model (see :func:`_restore`) unless its second-moment estimates settle first."""
    lr = _cosine(s.lr, s.lr_final, s.minutes, frac)
    if s.warmup:
        lr *= min(1.0, (done + 1) / s.warmup)
    for group, mult in zip(opt.param_groups, _multipliers(s)):
        group["lr"] = lr * mult


def _init_betas(path: str, k: int, default: list[float]) -> list[float]:
    """The betas of an --init weights file: its metadata's config (zoo files and run
    outputs carry one), else the default list when it has as many levels."""
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    for text in (meta.get("config"), meta.get("json")):
        if text:
            d = json.loads(text)
            betas = (d.get("config") or d).get("betas")
            if betas:
                return [float(b) for b in betas]
    if k != len(default):
        raise ValueError(f"{path} has {k} betas and no config naming them")
    return list(default)


def _seconds_from_history(history: list[dict], val_minutes: float) -> float:
    """Training seconds of a checkpoint written before they were recorded: the span of its
    validations plus the first interval (an estimate, used only for such old runs)."""
    if not history:
        return 0.0
    return history[-1]["time"] - history[0]["time"] + val_minutes * 60


def _cosine(lr: float, lr_final: float, minutes: float, frac: float) -> float:
    """The main group's rate at ``frac`` of an invocation: lr, or with lr_final (and a length
    in minutes) a cosine from lr down to lr_final."""
    if lr_final > 0 and minutes:
        return lr_final + (lr - lr_final) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return lr


def _rate_at(settings: dict, seconds: float) -> float:
    """The learning rate of the run's main group after ``seconds`` of its invocation (the
    schedule of :func:`_set_rates`, warmup aside), to two significant figures."""
    minutes = settings.get("minutes", 0.0)
    frac = seconds / (minutes * 60) if minutes else 0.0
    return float(f"{_cosine(settings['lr'], settings.get('lr_final', 0.0), minutes, frac):.2g}")


def continued_curve(previous: dict, history: list[dict], settings: dict, segment: str, note: str) -> dict:
    """The ``training_curve`` of a card whose run started from ``previous``'s weights: the
    previous card's curve plus this run's validations as segment ``segment``, its steps counted
    on from where the previous model stood (its best validation in its own last segment).

    A run that resumed the previous model's own run (its checkpoint, Adam state and all) still
    holds that run's validations and counts its steps: those are in the curve already, so they
    are skipped, and the steps go on from the same origin."""
    curve = json.loads(json.dumps(previous["training_curve"]))
    last = [r for r in curve["rows"] if r["segment"] == curve["rows"][-1]["segment"]]
    best = min(last, key=lambda r: r["val_loss"])
    offset, rates = best["step"], _rates(history, settings)
    same = [h for h in history if h["step"] == previous.get("training", {}).get("steps")
            and round(h["val_loss"], 4) == best["val_loss"]]
    if same:
        offset = best["step"] - same[0]["step"]
        keep = [i for i, h in enumerate(history) if offset + h["step"] > last[-1]["step"]]
        history, rates = [history[i] for i in keep], [rates[i] for i in keep]

    def at(rows, beta):
        return next(r for r in rows if r["beta"] == beta)
    for h, lr in zip(history, rates):
        lo, hi = at(h["rows"], 800.0), at(h["rows"], 10.0)
        curve["rows"].append({"segment": segment, "lr": lr,
                              "step": offset + h["step"], "val_loss": round(h["val_loss"], 4),
                              "bpp_beta800": round(lo["bpp"], 3), "psnr_beta800": round(lo["psnr"], 2),
                              "bpp_beta10": round(hi["bpp"], 3), "psnr_beta10": round(hi["psnr"], 2)})
    curve["segments"][segment] = note
    return curve


def _rates(history: list[dict], settings: dict) -> list[float]:
    """The learning rate at each validation: its own record, else its invocation's schedule
    (:func:`_rate_at`, with the flags of the command it records), the invocation taken to start
    at the previous invocation's last validation (``seconds`` count over the whole run)."""
    out, start, command, seconds = [], 0.0, None, 0.0
    for i, h in enumerate(history):
        if i and h.get("command") != command:
            start = seconds
        command, seconds = h.get("command"), h["seconds"]
        out.append(float(f"{h['lr']:.2g}") if "lr" in h
                   else _rate_at(_command_settings(command, settings), seconds - start))
    return out


def _command_settings(command: str | None, settings: dict) -> dict:
    """``settings`` with the --lr, --lr-final and --minutes that ``command`` gave."""
    out = dict(settings)
    words = shlex.split(command or "")
    for flag, key in (("--lr", "lr"), ("--lr-final", "lr_final"), ("--minutes", "minutes")):
        if flag in words[:-1]:
            out[key] = float(words[words.index(flag) + 1])
    return out


def export(run: str | Path, weights: str | Path, name: str, notes: str = "",
           continues: dict | None = None, segment: str = "", segment_note: str = "",
           fit_crops: int = 0) -> dict:
    """A run's best weights -> a zoo model: float weights plus the integer tables
    (:class:`~vlaecodec.lossy_coder.LossyTables`), and a card with the training record.
    ``continues``: the card of the model the run started from; its ``training_curve`` goes on
    with this run's validations as ``segment`` (:func:`continued_curve`).  ``fit_crops``: fit
    y's tables and their shifts, and z's per-beta tables, to the symbols of that many
    training crops (:mod:`vlaecodec.table_fit`; 0: the model's own tables)."""
    from safetensors import safe_open
    from .lossy_coder import LossyTables
    from .zoo import file_sha256, write_card
    best = Path(run) / "best.safetensors"
    with safe_open(str(best), "pt") as f:
        meta = json.loads(f.metadata()["json"])
    cfg = LossyConfig.from_dict(meta["config"])
    model = LossyModel(cfg)
    model.load_state_dict(load_file(str(best)))
    model.eval()
    tensors = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    tables, fitted = LossyTables.from_model(model), None
    if fit_crops:
        tables, fitted = _fit_tables(model, tables, fit_crops)
    tensors.update(tables.to_tensors())
    weights = Path(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"config": json.dumps(cfg.to_dict()), "kind": "lossy"})
    tmp.replace(weights)
    history = meta.get("history", [])
    last = history[-1] if history else {}
    card = {
        "name": name, "kind": "lossy", "config": cfg.to_dict(), "betas": cfg.betas,
        "description": "Variable-rate mean-scale hyperprior autoencoder"
                       + (" with a checkerboard context model" if cfg.context else "")
                       + ": one model for every beta in its range (D + beta R; D = MSE on 0..255, "
                         "R = bits/pixel).",
        "data": "photos (177) + photos-wall[:-4] + graphics[:-4], random 128x128 crops, flips",
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"steps": meta["step"], "seconds": round(last.get("seconds", 0.0)),
                     "host": last.get("host"), "threads": last.get("threads"),
                     "command": last.get("command"), "batch": "8 x 128x128",
                     "validation": {"images": "photos-wall[-4:] + graphics[-4:], centre 256x256",
                                    "rows": meta.get("rows")}},
        "curve": [{"step": h["step"], "seconds": round(h.get("seconds", 0.0)), "val_loss": round(h["val_loss"], 4)}
                  for h in history],
        "notes": notes,
        "sha256": file_sha256(weights),
    }
    if fitted is not None:
        card["tables"] = fitted
    if continues is not None:
        with safe_open(str(Path(run) / "checkpoint.safetensors"), "pt") as f:
            run_meta = json.loads(f.metadata()["json"])   # every validation, not only the best's
        card["training_curve"] = continued_curve(continues, run_meta["history"], run_meta["settings"],
                                                 segment, segment_note)
    write_card(weights, card)
    return card


def _fit_tables(model: LossyModel, tables, count: int, size: int = 256, seed: int = 0):
    """(tables fitted to ``count`` random size x size training crops, photos and graphics in
    training's shares, the card's record of it)."""
    from . import table_fit
    from .lossy_coder import LossyCoder
    photos, graphics = training_images()
    rng = np.random.default_rng(seed)
    n_g = round(count * LossyTrainSettings.graphics_frac)
    crops = list(D.random_crops(photos, count - n_g, size, rng))
    crops += list(D.random_crops(graphics, n_g, size, rng)) if n_g else []
    coder = LossyCoder(model, tables, model_id="00" * 8)
    fitted, report = table_fit.fit(tables, table_fit.collect(coder, [np.ascontiguousarray(c) for c in crops]))
    record = {"fitted_to": f"{count - n_g} photo and {n_g} graphics crops of {size}x{size} from the training "
                           f"images (seed {seed}), at every trained beta (vlaecodec.table_fit)",
              "bits_on_those_crops": {"gaussian": round(report["gaussian_bits"]), "fitted": round(report["fitted_bits"]),
                                      "z_density": round(report["z_bits"]), "z_fitted": round(report["z_fitted_bits"])},
              "shifts": report["shifts"]}
    return fitted, record


def main(argv: list[str] | None = None) -> None:
    import argparse
    p = argparse.ArgumentParser(prog="python -m vlaecodec.lossy_train", description=__doc__.split("\n")[0])
    for f, v in asdict(LossyTrainSettings()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    train(LossyTrainSettings(**vars(p.parse_args(argv))))


if __name__ == "__main__":
    main()
