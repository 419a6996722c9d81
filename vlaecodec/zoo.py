"""The model zoo: safetensors weights beside a JSON card, loaded from safetensors only.

A model ``NAME`` is ``models/NAME.safetensors`` plus ``models/NAME.json``.  The card holds
the config (so the weights alone never decide the architecture), the training record and
the measured results.  ``model_id`` is the SHA-256 of the weights file: coded files carry it
so that a file is never decoded with another model.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .model import VLAE, VLAEConfig

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "default"


def resolve(name_or_path: str) -> Path:
    """A zoo name (``default``) or a path to ``.safetensors`` -> the weights path."""
    p = Path(name_or_path)
    if p.suffix == ".safetensors" and p.exists():
        return p
    if p.suffix == ".json" and p.exists():
        return p.with_suffix(".safetensors")
    candidate = MODELS_DIR / f"{name_or_path}.safetensors"
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f"no model {name_or_path!r} (not a zoo name in {MODELS_DIR} nor a .safetensors file)")


def card_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def read_card(weights: Path) -> dict:
    return json.loads(card_path(weights).read_text())


def write_card(weights: Path, card: dict) -> None:
    path = card_path(weights)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_model(model: VLAE, weights: Path, card: dict) -> None:
    """Weights to safetensors (config copied into its metadata) and the card beside them."""
    weights = Path(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = weights.with_suffix(".safetensors.tmp")
    save_file(state, str(tmp), metadata={"config": json.dumps(model.cfg.to_dict())})
    tmp.replace(weights)
    card = dict(card)
    card["config"] = model.cfg.to_dict()
    card["sha256"] = file_sha256(weights)
    write_card(weights, card)


def load_model(name_or_path: str = DEFAULT_MODEL, device: str = "cpu") -> tuple[VLAE, dict]:
    """(model in eval mode, card) for a zoo name or a weights path."""
    weights = resolve(name_or_path)
    card = read_card(weights) if card_path(weights).exists() else {}
    from safetensors import safe_open
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata() or {}
    cfg = VLAEConfig.from_dict(json.loads(meta.get("config") or json.dumps(card["config"])))
    model = VLAE(cfg)
    model.load_state_dict(load_file(str(weights), device=device))
    model.eval()
    card.setdefault("name", weights.stem)
    card["path"] = str(weights)
    card["model_id"] = file_sha256(weights)
    return model.to(device), card


def list_models() -> list[dict]:
    """The cards of every model in the zoo."""
    out = []
    for w in sorted(MODELS_DIR.glob("*.safetensors")):
        card = read_card(w) if card_path(w).exists() else {}
        card.setdefault("name", w.stem)
        out.append(card)
    return out


def record_result(name_or_path: str, key: str, res: dict, command: str) -> None:
    """Store a measurement (``evaluate``'s result) in the model's card under ``key``."""
    weights = resolve(name_or_path)
    card = read_card(weights)
    card.setdefault("results", {})[key] = {
        **{k: res[k] for k in ("n", "bpd", "distortion_bpd", "rate_bpd", "active_units")}, "command": command}
    write_card(weights, card)


def model_for_beta(beta: float) -> str:
    """The zoo name of the 8-bit image model trained at this beta (the beta family)."""
    family = [c for c in list_models() if c.get("config", {}).get("levels", 256) == 256
              and c.get("beta") is not None]
    for c in sorted(family, key=lambda c: c["name"] != DEFAULT_MODEL):  # the default wins a tie
        if abs(c["beta"] - beta) < 1e-9:
            return c["name"]
    betas = sorted({c["beta"] for c in family})
    raise FileNotFoundError(f"no model trained at beta {beta:g} in the zoo (betas: {', '.join(f'{b:g}' for b in betas)})")


def torch_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
