"""Training: deterministic batches, checkpoints that resume exactly, torchrun-ready.

Batches are a pure function of (seed, step, rank), so a run killed at any point and resumed
from its last checkpoint continues exactly as if it had never stopped.  The checkpoint
(``checkpoint.safetensors``) holds the model, the Adam state and the RNG state as tensors
and everything else as JSON metadata (safetensors only).  Multi-GPU / multi-node goes through
``torchrun`` and ``DistributedDataParallel``; nothing here is specific to it beyond
reading the rank.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import data as D
from .model import LOG2, VLAE, VLAEConfig, count_parameters
from .zoo import save_model, torch_device


@dataclass
class TrainSettings:
    data: str = "cifar10"          # cifar10 | cifar10+photos | cifar10+broad | broad | photos | bmnist | mnist | omniglot | folder path
    photo_frac: float = 0.5        # share of photo crops in a batch for cifar10+photos
    grey_frac: float = 0.0         # share of images turned grey (R=G=B) so one model codes both
    crop: int = 32
    beta: float = 1.0
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    steps: int = 10000             # length of the cosine schedule
    seed: int = 0
    ckpt_minutes: float = 5.0
    minutes: float = 0.0           # stop this invocation after this many minutes (0: no limit)
    fit_minutes: float = 0.0       # fit the schedule's length (steps) to this many minutes (0: off)
    loader_threads: int = 1        # threads that build upcoming batches while the model trains
    stop_after: int = 0            # stop this invocation after this many steps (0: no limit)
    bf16: bool = False
    limit: int = 0                 # use only the first N training images (0: all)
    val_every: int = 500
    cifar_parts: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    teacher: str = ""              # a zoo model whose posterior q(z|x) the model learns to match
    distill: float = 1.0           # weight of KL(q_teacher || q) per dimension in the loss
    distill_features: float = 0.0  # weight of the teacher's pixel features (same width only) in the loss


# What each data set's images are: (levels, channels) where they differ from the config's.
DATA_FORMATS = {"bmnist": {"levels": 2, "channels": 1}, "omniglot": {"levels": 2, "channels": 1},
                "mnist": {"channels": 1}}


def checkpoint_settings(run_dir: Path) -> dict | None:
    """The settings and config a run's checkpoint was trained with (None without one): a
    resumed run goes on with them unless told otherwise."""
    ckpt = Path(run_dir) / "checkpoint.safetensors"
    if not ckpt.exists():
        return None
    from safetensors import safe_open
    with safe_open(str(ckpt), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    return {**meta["settings"], **meta["config"]}


def run_config(settings: dict, init: str | None = None,
               overrides: dict | None = None) -> tuple[VLAEConfig, TrainSettings]:
    """The model config and training settings of a run from one dict of both.  The data set
    decides the image format (:data:`DATA_FORMATS`); with ``init`` (weights to start from),
    the architecture is that model's, with only ``overrides``' config fields changed.

    >>> cfg, s = run_config({"data": "bmnist", "hidden": 16, "lr": 0.001})
    >>> (cfg.levels, cfg.channels, cfg.hidden, s.lr)
    (2, 1, 16, 0.001)
    """
    cfg = VLAEConfig.from_dict(settings)
    s = TrainSettings(**{k: v for k, v in settings.items() if k in TrainSettings.__dataclass_fields__})
    for k, v in DATA_FORMATS.get(s.data, {}).items():
        setattr(cfg, k, v)
    if init:
        from .zoo import read_card, resolve
        arch = read_card(resolve(init)).get("config", {})
        cfg = VLAEConfig.from_dict({**arch, **{k: v for k, v in (overrides or {}).items()
                                               if v is not None and k in VLAEConfig.__dataclass_fields__}})
    return cfg, s


class BatchSource:
    """Training images; ``batch(step, rank)`` is deterministic."""

    def __init__(self, s: TrainSettings, channels: int):
        self.s, self.channels = s, channels
        self.binary = s.data in ("bmnist", "omniglot")
        self.fixed, self.photos = None, None
        name = s.data
        if name.startswith("cifar10"):
            self.fixed = D.load_cifar10("train", s.limit or None, parts=s.cifar_parts)
        elif name in ("mnist", "bmnist"):
            self.fixed = D.load_mnist("train", s.limit or None)
        elif name == "omniglot":
            self.fixed = D.load_omniglot("background_small", s.limit or None)
        self.groups = None
        if name.endswith("broad"):
            # three kinds of picture, each a fixed share of the crops whatever their count
            self.groups = D.training_sets()
            self.photos = self.groups[0]
        elif name.endswith("photos"):
            self.photos = D.load_photos()
        elif Path(name).is_dir():
            self.photos = D.load_folder(name)
        if self.fixed is None and self.photos is None:
            raise ValueError(f"unknown training data {name!r}")
        # hold out a few training images to watch the validation bpd (never the test set)
        if self.fixed is not None:  # a fixed random slice (the data are grouped by class)
            perm = np.random.default_rng(12345).permutation(len(self.fixed))
            self.val = self.fixed[perm[:256]]
            self.fixed = self.fixed[np.sort(perm[256:])]
        else:
            self.val = D.random_crops(self.photos, 256, s.crop, np.random.default_rng(12345))
        # the broad data's own held-out images, never trained on: the validation that says
        # whether the model learns modern photos and graphics, not only CIFAR-10
        # (the two kinds apart: a model can gain on graphics while it loses on photos)
        self.heldout = {}
        if self.groups:
            rng = np.random.default_rng(54321)
            self.heldout = {kind: D.random_crops(g, 128, s.crop, rng)
                            for kind, g in zip(("photos", "graphics"), D.heldout_sets())}

    # shares of photos, photos-wall and graphics among the crops of the "broad" data
    GROUP_SHARES = (0.4, 0.3, 0.3)

    def batch(self, step: int, rank: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.s.seed, step, rank])
        n_photo = 0 if self.photos is None else (size if self.fixed is None else int(round(size * self.s.photo_frac)))
        parts = []
        if size - n_photo:
            parts.append(self.fixed[rng.integers(0, len(self.fixed), size - n_photo)])
        if n_photo and self.groups:
            shares = rng.multinomial(n_photo, self.GROUP_SHARES)
            parts += [D.random_crops(g, k, self.s.crop, rng) for g, k in zip(self.groups, shares) if k]
        elif n_photo:
            parts.append(D.random_crops(self.photos, n_photo, self.s.crop, rng))
        x = np.concatenate(parts)
        if not self.binary and x.shape[-1] == 3:
            flip = rng.random(len(x)) < 0.5
            x[flip] = x[flip, :, ::-1]
            if self.s.grey_frac > 0:
                grey = rng.random(len(x)) < self.s.grey_frac
                y = (x[grey].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round()
                x[grey] = np.repeat(y.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        if self.binary:
            x = (rng.random(x.shape) < x / 255.0).astype(np.uint8)  # dynamic binarization
        return x

    def validation(self) -> np.ndarray:
        x = self.val
        return D.binarize_static(x) if self.binary else x


def prefetched(source: BatchSource, steps, rank: int, size: int, threads: int):
    """``source.batch(step)`` for each step, in order, built ``threads`` at a time ahead of use.

    The batches are the same as without prefetching (each is a pure function of its step);
    only the time to make them overlaps the training step.  numpy's indexing and copies
    release the GIL, so threads suffice.
    """
    if threads <= 1:
        yield from (source.batch(step, rank, size) for step in steps)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending = []
        for step in steps:
            pending.append(pool.submit(source.batch, step, rank, size))
            if len(pending) > 2 * threads:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def fitted_steps(step: int, steps_done: int, seconds: float, seconds_left: float) -> int:
    """The schedule length that ends the cosine when a time budget runs out.

    >>> fitted_steps(step=1000, steps_done=200, seconds=10.0, seconds_left=60.0)
    2200
    """
    return step + int(steps_done / seconds * seconds_left)


def agreed(value: int, distributed: bool) -> int:
    """Rank 0's ``value`` on every rank (each rank times itself; the schedule must be one)."""
    if not distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return int(t.item())


def posterior_match(teacher: VLAE, out: dict, x: torch.Tensor) -> torch.Tensor:
    """KL(q_teacher(z|x) || q(z|x)) in nats per image dimension, averaged over the batch.

    A narrower model distilled from a wider one learns the teacher's latent first: its
    decoder then has an informative z from the start instead of learning to ignore it."""
    with torch.no_grad():
        tm, tl = teacher.posterior(x)
    m, ls = out["mean"].float(), out["logscale"].float()
    kl = ls - tl + (torch.exp(2 * tl) + (tm - m) ** 2) / (2 * torch.exp(2 * ls)) - 0.5
    return (kl.sum(dim=(1, 2, 3)) / out["dims"]).mean()


def feature_match(teacher: VLAE, out: dict, x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the model's pixel features (the trunk's output) and
    the teacher's for the same z, relative to the teacher's mean square.

    A model cut out of the teacher (:mod:`vlaecodec.prune`) keeps the teacher's residual
    stream, so its features can be compared channel by channel: a target at every pixel and
    channel, far richer than one sampled value per subpixel, so it recovers in fewer steps."""
    with torch.no_grad():
        target = teacher.heads.trunk_forward(teacher.pixel_context(x, out["z"].detach()))
    return ((out["trunk"].float() - target) ** 2).mean() / (target ** 2).mean().clamp_min(1e-6)


def to_tensor(x: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).long().to(device)


def lr_at(s: TrainSettings, step: int) -> float:
    warm = min(1.0, (step + 1) / max(1, s.warmup))
    progress = min(1.0, step / max(1, s.steps))
    return s.lr * warm * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress)))


# --- checkpoints: safetensors + JSON metadata ------------------------------------------
def save_checkpoint(path: Path, model: VLAE, opt: torch.optim.Optimizer, meta: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                tensors[f"opt.{i}.{key}"] = st[key].detach().cpu().contiguous()
        if "step" in st:
            tensors[f"opt.{i}.step"] = torch.as_tensor(st["step"]).float().reshape(1).cpu()
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
    tmp.replace(path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def load_checkpoint(path: Path, model: VLAE, opt: torch.optim.Optimizer) -> dict:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    tensors = load_file(str(path))
    dev = next(model.parameters()).device
    model.load_state_dict({k[6:]: v.to(dev) for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(model.parameters()):
        if f"opt.{i}.exp_avg" in tensors:
            opt.state[p] = {
                "step": tensors[f"opt.{i}.step"].reshape(()),
                "exp_avg": tensors[f"opt.{i}.exp_avg"].to(dev),
                "exp_avg_sq": tensors[f"opt.{i}.exp_avg_sq"].to(dev),
            }
    torch.set_rng_state(tensors["rng.torch"])
    return meta


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"CPU {platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} threads"


@torch.no_grad()
def validate(model: VLAE, x: np.ndarray, device, beta: float) -> dict:
    model.eval()
    out = {"bpd": 0.0, "d": 0.0, "r": 0.0}
    n = 0
    for i in range(0, len(x), 128):
        xb = to_tensor(x[i:i + 128], device)
        o = model(xb, beta, sample=True)
        dims = o["dims"] * LOG2
        out["bpd"] += o["bpd"].sum().item()
        out["d"] += (o["distortion"] / dims).sum().item()
        out["r"] += (o["rate"] / dims).sum().item()
        n += len(xb)
    model.train()
    return {k: v / n for k, v in out.items()}


def train(cfg: VLAEConfig, s: TrainSettings, run_dir: Path, resume: bool = False,
          model_card: dict | None = None, device: str | None = None, init: str | None = None) -> dict:
    """Train (or continue training) into ``run_dir``; returns the final metadata."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    dev = torch_device(device)
    if distributed:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
    else:
        rank, world = 0, 1
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.safetensors"
    torch.manual_seed(s.seed)
    model = VLAE(cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    meta = {"step": 0, "train_seconds": 0.0, "segments": []}
    if resume and ckpt.exists():
        meta = load_checkpoint(ckpt, model, opt)
        if rank == 0:
            print(f"resumed from {ckpt} at step {meta['step']}", file=sys.stderr)
    elif init:  # start from a model's weights (e.g. a zoo model), with a fresh optimizer
        from .zoo import resolve
        model.load_state_dict(load_file(str(resolve(init)), device=str(dev)))
        meta["init"] = str(init)
    teacher = None
    if s.teacher:
        from .zoo import load_model
        teacher = load_model(s.teacher, device=str(dev))[0].eval().requires_grad_(False)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    source = BatchSource(s, cfg.channels)
    per_rank = s.batch_size // world
    segment = {"command": shlex.join(sys.argv), "hardware": hardware(), "world_size": world,
               "start_step": meta["step"], "seconds": 0.0}
    meta["segments"].append(segment)
    meta.update(config=cfg.to_dict(), settings=s.__dict__)
    start = time.time()
    last_ckpt = start
    step = meta["step"]
    log = (run_dir / "log.jsonl").open("a") if rank == 0 else None

    def checkpoint():
        seg_time = time.time() - start
        segment["seconds"] = round(seg_time, 1)
        segment["end_step"] = step
        meta["step"] = step
        total = sum(sg["seconds"] for sg in meta["segments"])
        meta["train_seconds"] = round(total, 1)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(ckpt, model, opt, meta)
            card = dict(model_card or {})
            card.update(beta=s.beta, data=s.data, steps=step, train_seconds=meta["train_seconds"],
                        training_segments=meta["segments"], parameters=count_parameters(model),
                        latent_shape=f"{cfg.z_channels} x H/4 x W/4" if cfg.latent else "none (z = 0)",
                        window=cfg.window,
                        decoder=cfg.decoder, prior=cfg.prior, settings=s.__dict__)
            if meta.get("init"):  # a fine-tune: say where its weights started
                card["init"] = meta["init"]
            save_model(model, run_dir / "model.safetensors", card)

    model.train()
    bar = tqdm(total=s.steps, initial=step, disable=rank != 0, dynamic_ncols=True, mininterval=2)
    ema = None
    first_step = step
    # A run fits its schedule once, in the invocation that starts it; a resumed run keeps the
    # schedule it was fitted to (and its --minutes, if any), so it continues exactly.
    fitting = bool(s.fit_minutes) and first_step == 0
    limits = [m for m in (s.fit_minutes if fitting else 0, s.minutes) if m]
    budget = 60 * min(limits) if limits else 0
    pace_from = first_step + 20  # the pace is measured after the first (slow) steps
    batches = prefetched(source, range(step, 10 ** 9), rank, per_rank, s.loader_threads)
    while step < s.steps:
        # rank 0's clock decides, so all ranks stop at the same step (else they hang at the next sync)
        if budget and agreed(int(time.time() - start > budget), distributed):
            break
        if s.stop_after and step - first_step >= s.stop_after:
            break
        if step == pace_from:
            pace_start = time.time()
        paced = step - pace_from
        if fitting and (paced in (30, 500) or (paced > 0 and paced % 2000 == 0)):  # refit as the pace settles
            fit = fitted_steps(step, paced, time.time() - pace_start, 0.97 * budget - (time.time() - start))
            s.steps = max(step + 1, agreed(fit, distributed))
            bar.total = s.steps
        for g in opt.param_groups:
            g["lr"] = lr_at(s, step)
        x = to_tensor(next(batches), dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=s.bf16 or dev.type == "cuda"):
            out = net(x, s.beta)
        loss = out["loss"]
        if teacher is not None:
            loss = loss + s.distill * posterior_match(teacher, out, x)
            if s.distill_features:
                loss = loss + s.distill_features * feature_match(teacher, out, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % 20 == 0:  # reading a value back waits for the GPU: not every step
            bpd = out["bpd"].mean().item()
            ema = bpd if ema is None else 0.8 * ema + 0.2 * bpd
            bar.set_postfix(loss=f"{out['loss'].item():.3f}", bpd=f"{ema:.3f}",
                            rate=f"{(out['rate'] / out['dims']).mean().item() / LOG2:.3f}")
        if rank == 0 and (step % s.val_every == 0 or step == s.steps):
            v = validate(model, source.validation(), dev, s.beta)
            rec = {"step": step, "train_bpd": ema, "val_bpd": v["bpd"], "val_d": v["d"], "val_r": v["r"],
                   "lr": lr_at(s, step), "seconds": round(time.time() - start, 1)}
            for kind, crops in source.heldout.items():
                rec[f"heldout_{kind}_bpd"] = validate(model, crops, dev, s.beta)["bpd"]
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.write(json.dumps(rec))
        if time.time() - last_ckpt > s.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    batches.close()  # stops the loader threads now, not when garbage is collected
    checkpoint()
    bar.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return meta
