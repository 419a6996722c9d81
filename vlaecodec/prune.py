"""A narrower VLAE cut out of a wider one: the start of a fast model.

Training a narrow model from scratch on a CPU takes days to reach the wide model's bits;
a narrow model that starts as a *part* of the wide one starts close to it and recovers the
rest with a short fine-tune (``vlaecodec train --init PRUNED --teacher default``).

Every layer keeps the channels that carry the most signal on real images: for each group
of channels that the layers share (a residual stream, the hidden units of one layer), the
ones with the largest root-mean-square activation on a batch of training crops.  A layer's
weights keep the rows of its kept outputs and the columns of its kept inputs.

>>> import torch
>>> from vlaecodec.model import VLAE, VLAEConfig
>>> wide = VLAE(VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1, likelihood="logistic"))
>>> x = torch.randint(0, 256, (2, 3, 8, 8))
>>> narrow = prune(wide, x, hidden=4, pixel_hidden=6)
>>> narrow.cfg.hidden, narrow.cfg.pixel_hidden, narrow.heads.out[2].weight.shape[1]
(4, 6, 6)
>>> thin = prune(wide, x, inner=3, pixel_inner=5)
>>> thin.heads.trunk[0][1].weight.shape[:2], thin.encoder.down2.weight.shape[:2]
(torch.Size([5, 8]), torch.Size([8, 3]))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import VLAE, VLAEConfig


def _rms(a: torch.Tensor) -> torch.Tensor:
    """Root-mean-square of each channel of [B, C, H, W]."""
    return a.float().pow(2).mean(dim=(0, 2, 3)).sqrt()


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(score, k).indices).values


@torch.no_grad()
def activation_scores(model: VLAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """RMS activation of every channel group on images x [B, C, H, W] (integers), by name."""
    from .model import normalize
    cfg, enc, zd, heads = model.cfg, model.encoder, model.zdecoder, model.heads
    s = {}
    h = F.relu(enc.inp(normalize(x, cfg.levels)))
    s["enc.inp"] = _rms(h)
    h = F.relu(enc.down1(h))
    s["enc.down1"] = _rms(h)
    h = enc.down2(h)
    for i, b in enumerate(enc.blocks):
        s[f"enc.blocks.{i}"] = _rms(F.relu(b.conv1(F.relu(h))))
        h = b(h)
    s["enc.stream"] = _rms(h)
    mean, _ = model.posterior(x)
    g = zd.inp(mean)
    for i, b in enumerate(zd.blocks):
        s[f"zd.blocks.{i}"] = _rms(F.relu(b.conv1(F.relu(g))))
        g = b(g)
    s["zd.stream"] = _rms(g)
    g = F.interpolate(F.relu(g), scale_factor=2, mode="nearest")
    s["zd.up1"] = _rms(F.relu(zd.up1(g)))
    t = model.pixel_context(x, mean)
    for i, block in enumerate(heads.trunk):
        s[f"trunk.{i}"] = _rms(F.relu(block[1](F.relu(t))))
        t = t + block(t)
    s["pixel.stream"] = _rms(t)
    for c in range(cfg.channels):
        u = t
        for p in range(c):
            u = u + heads.embed[heads.embed_index(c, p)](x[:, p]).permute(0, 3, 1, 2)
        s[f"hidden.{c}"] = _rms(F.relu(heads.hidden[c](F.relu(u))))
    return s


def _cut(dst: torch.nn.Module, src: torch.nn.Module, out_idx=None, in_idx=None) -> None:
    """dst.weight/bias = src's, keeping the rows out_idx and the columns in_idx (None: all)."""
    w = src.weight
    w = w if out_idx is None else w[out_idx]
    w = w if in_idx is None else w[:, in_idx]
    dst.weight.copy_(w)
    if getattr(src, "bias", None) is not None:
        dst.bias.copy_(src.bias if out_idx is None else src.bias[out_idx])


def _group_width(group: str, cfg: VLAEConfig) -> int:
    """The width of the pruned config that a channel group (named as in
    :func:`activation_scores`) takes: the streams keep theirs, the inner layers are cut."""
    if group in ("enc.stream", "zd.stream"):
        return cfg.hidden
    if group == "pixel.stream":
        return cfg.pixel_hidden
    if group.startswith(("trunk.", "hidden.")):
        return cfg.pixel_inner_width
    return cfg.inner_width


@torch.no_grad()
def prune(model: VLAE, images: torch.Tensor, **widths) -> VLAE:
    """A copy of ``model`` with some of its widths (``hidden``, ``inner``, ``pixel_hidden``,
    ``pixel_inner``: see :class:`~vlaecodec.config.VLAEConfig`) made smaller, made of the
    channels most active on ``images``.  Cutting only the inner widths keeps the residual
    streams whole, and the model's output changes least."""
    cfg = model.cfg
    if cfg.decoder != "local" or cfg.prior != "normal":
        raise ValueError("pruning supports the local decoder with the normal prior")
    small_cfg = VLAEConfig.from_dict({**cfg.to_dict(), **widths})
    for name in ("hidden", "inner_width", "pixel_hidden", "pixel_inner_width"):
        if getattr(small_cfg, name) > getattr(cfg, name):
            raise ValueError("a pruned model cannot be wider than its source")
    small = VLAE(small_cfg)
    s = activation_scores(model.eval(), images)
    keep = {k: _top(v, _group_width(k, small_cfg)) for k, v in s.items()}
    e, se = model.encoder, small.encoder
    _cut(se.inp, e.inp, keep["enc.inp"])
    _cut(se.down1, e.down1, keep["enc.down1"], keep["enc.inp"])
    _cut(se.down2, e.down2, keep["enc.stream"], keep["enc.down1"])
    for i, (b, sb) in enumerate(zip(e.blocks, se.blocks)):
        _cut(sb.conv1, b.conv1, keep[f"enc.blocks.{i}"], keep["enc.stream"])
        _cut(sb.conv2, b.conv2, keep["enc.stream"], keep[f"enc.blocks.{i}"])
    _cut(se.out, e.out, None, keep["enc.stream"])
    z, sz = model.zdecoder, small.zdecoder
    _cut(sz.inp, z.inp, keep["zd.stream"])
    for i, (b, sb) in enumerate(zip(z.blocks, sz.blocks)):
        _cut(sb.conv1, b.conv1, keep[f"zd.blocks.{i}"], keep["zd.stream"])
        _cut(sb.conv2, b.conv2, keep["zd.stream"], keep[f"zd.blocks.{i}"])
    _cut(sz.up1, z.up1, keep["zd.up1"], keep["zd.stream"])
    p = keep["pixel.stream"]
    _cut(sz.up2, z.up2, p, keep["zd.up1"])
    _cut(small.context.conv, model.context.conv, p)
    h, sh = model.heads, small.heads
    for i, (b, sb) in enumerate(zip(h.trunk, sh.trunk)):
        _cut(sb[1], b[1], keep[f"trunk.{i}"], p)
        _cut(sb[3], b[3], p, keep[f"trunk.{i}"])
    for emb, s_emb in zip(h.embed, sh.embed):
        s_emb.weight.copy_(emb.weight[:, p])
    for c in range(cfg.channels):
        _cut(sh.hidden[c], h.hidden[c], keep[f"hidden.{c}"], p)
        _cut(sh.out[c], h.out[c], None, keep[f"hidden.{c}"])
    return small


def main(argv: list[str] | None = None) -> None:
    import argparse

    import numpy as np

    from . import data as D
    from .zoo import load_model, save_model
    ap = argparse.ArgumentParser(prog="python -m vlaecodec.prune", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    for width in ("hidden", "inner", "pixel-hidden", "pixel-inner"):
        ap.add_argument(f"--{width}", type=int, help="The pruned model's width (default: the source's).")
    ap.add_argument("--out", required=True, help="Weights file to write (.safetensors; a card beside it).")
    ap.add_argument("--crops", type=int, default=96, help="Training crops (32x32) that rank the channels.")
    a = ap.parse_args(argv)
    model, card = load_model(a.model)
    rng = np.random.default_rng(0)
    photos, wall, graphics = D.training_sets()
    parts = [D.load_cifar10("train", 2000)[rng.integers(0, 2000, a.crops // 4)]]
    parts += [D.random_crops(g, a.crops // 4, 32, rng) for g in (photos, wall, graphics)]
    x = torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).long()
    widths = {k: v for k, v in vars(a).items() if k in ("hidden", "inner", "pixel_hidden", "pixel_inner") and v}
    small = prune(model, x, **widths)
    save_model(small, a.out, {"name": "pruned", "pruned_from": a.model, "source_sha256": card.get("sha256"),
                              "config": small.cfg.to_dict()})
    print(f"{a.out}: {widths}, cut from {a.model}")


if __name__ == "__main__":
    main()
