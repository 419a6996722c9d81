"""The model zoo: safetensors weights beside a JSON card, loaded from safetensors only.

A model ``NAME`` is ``models/NAME.safetensors`` plus ``models/NAME.json``.  The card holds
the config (so the weights alone never decide the architecture), the training record and
the measured results.  ``model_id`` is the SHA-256 of the weights file: coded files carry it
so that a file is never decoded with another model.

Where the zoo lives (:func:`model_dirs`):

* ``$VLAECODEC_MODELS``, when set: a folder of the user's own models, searched first (a
  name there hides a shipped model of the same name) and the folder ``export`` writes to;
* the shipped zoo: ``vlaecodec/models/`` inside an installed wheel (the repository's
  ``models/`` folder is packaged there, see pyproject.toml), or, in a source checkout or
  an editable install, the repository's ``models/`` itself, so ``export`` adds to the repo.

A model is found by file name only (``NAME.safetensors`` beside ``NAME.json``): whatever
kind of model a card describes, nothing else in the folder (recipes, scripts) is a model.

Coding needs the weights as numpy arrays only (:func:`load_weights`), so this module imports
torch only where a float model is made or saved (:func:`load_model`, :func:`save_model`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from typing import TYPE_CHECKING

from .config import VLAEConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .model import VLAE

DEFAULT_MODEL = "default"
DEFAULT_LOSSY_MODEL = "lossy"      # the lossy (hyperprior) model of ``encode --lossy``
MODELS_ENV = "VLAECODEC_MODELS"
_PACKAGE = Path(__file__).resolve().parent
# wheels install unzipped, so the shipped zoo is a real folder: safetensors maps files by name
_SHIPPED = _PACKAGE / "models"
_CHECKOUT = _PACKAGE.parent / "models"


def shipped_dir() -> Path:
    """The zoo that came with this copy of vlaecodec: the wheel's package data, else the
    checkout's ``models/``.  The checkout counts only beside our own pyproject.toml, so an
    install that lost its models fails loudly instead of picking up some other ``models/``
    folder that happens to sit in site-packages."""
    if _SHIPPED.is_dir():
        return _SHIPPED
    if (_PACKAGE.parent / "pyproject.toml").is_file():
        return _CHECKOUT
    return _SHIPPED  # absent: resolve() names it in its error


def model_dirs() -> list[Path]:
    """The folders searched for a zoo name, first match wins: ``$VLAECODEC_MODELS`` (read at
    each call, so setting it after import counts), then the shipped zoo."""
    user = os.environ.get(MODELS_ENV)
    return ([Path(user).expanduser()] if user else []) + [shipped_dir()]


def models_dir() -> Path:
    """The folder new models are written to (``vlaecodec export``): the first searched."""
    return model_dirs()[0]


def __getattr__(name: str):
    # MODELS_DIR stays importable for older callers; it is computed on use, not frozen at import
    if name == "MODELS_DIR":
        return models_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve(name_or_path: str) -> Path:
    """A zoo name (``default``) or a path to ``.safetensors`` -> the weights path."""
    p = Path(name_or_path)
    if p.suffix == ".safetensors" and p.exists():
        return p
    if p.suffix == ".json" and p.exists():
        return p.with_suffix(".safetensors")
    dirs = model_dirs()
    for folder in dirs:
        candidate = folder / f"{name_or_path}.safetensors"
        if candidate.exists():
            return candidate
    where = " or ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"no model {name_or_path!r} (not a zoo name in {where} "
                            f"nor a .safetensors file; {MODELS_ENV} adds a folder of models)")


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
    from safetensors.torch import save_file
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


def weights_metadata(weights: Path) -> dict:
    """The metadata of a ``.safetensors`` file (read without loading a tensor, nor torch)."""
    from safetensors import safe_open
    with safe_open(str(weights), "numpy") as f:
        return f.metadata() or {}


def is_lossy_model(weights: Path) -> bool:
    """Whether a weights file holds a lossy (hyperprior) model, from its metadata alone."""
    return weights_metadata(weights).get("kind") == "lossy"


def _config_and_card(name_or_path: str) -> tuple[Path, VLAEConfig, dict]:
    """(weights path, config, card) of a VLAE: the config stored in the weights file wins
    over the card's; the card gets the model's name, path and id (the file's hash)."""
    weights = resolve(name_or_path)
    card = read_card(weights) if card_path(weights).exists() else {}
    config = json.loads(weights_metadata(weights).get("config") or json.dumps(card["config"]))
    config = VLAEConfig.from_dict(config)
    card.setdefault("name", weights.stem)
    card["path"] = str(weights)
    card["model_id"] = file_sha256(weights)
    return weights, config, card


def load_weights(name_or_path: str = DEFAULT_MODEL) -> tuple[dict[str, np.ndarray], VLAEConfig, dict]:
    """(weights by state-dict name as numpy arrays, config, card) for a zoo name or a weights
    path: all that the exact network (:class:`vlaecodec.exact.ExactVLAE`) needs, without torch."""
    from safetensors.numpy import load_file
    weights, config, card = _config_and_card(name_or_path)
    return load_file(str(weights)), config, card


def load_model(name_or_path: str = DEFAULT_MODEL, device: str = "cpu") -> tuple[VLAE, dict]:
    """(float model in eval mode, card) for a zoo name or a weights path (imports torch)."""
    from safetensors.torch import load_file

    from .model import VLAE
    weights, config, card = _config_and_card(name_or_path)
    model = VLAE(config)
    model.load_state_dict(load_file(str(weights), device=device))
    model.eval()
    return model.to(device), card


def list_models() -> list[dict]:
    """The cards of every model in the zoo, by name; a name in ``$VLAECODEC_MODELS`` hides
    the shipped model of that name, as in :func:`resolve`."""
    found: dict[str, Path] = {}
    for folder in model_dirs():
        for w in folder.glob("*.safetensors"):
            found.setdefault(w.stem, w)
    out = []
    for name in sorted(found):
        w = found[name]
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
    import torch
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def export(run_dir: str | Path, name: str, active_threshold: float = 0.01, force: bool = False) -> dict:
    """Copy a run's model into the zoo (:func:`models_dir`) as ``NAME``, with its card and its
    active latent channels: those with at least ``active_threshold`` bits of KL per latent on
    the first 1000 training images (binarized MNIST for a binary model, else CIFAR-10).
    Returns the name, the active channels and every channel's KL."""
    import shutil

    from . import data as D
    from .errors import VlaeError
    from .evaluate import evaluate
    src = Path(run_dir) / "model.safetensors"
    dst = models_dir() / f"{name}.safetensors"
    if dst.exists() and not force:
        raise VlaeError(f"{dst} exists (use --force)")
    model, _ = load_model(str(src))
    binary = model.cfg.levels == 2
    train_name = "bmnist-test" if binary else "cifar10-train"
    images = D.binarize_static(D.load_mnist("train", 1000)) if binary else D.load_cifar10("train", 1000)
    kl = evaluate(model, images)["kl_bits_per_latent_channel"]
    card = read_card(src)
    card["name"] = name
    card["active_channels"] = [c for c, v in enumerate(kl) if v >= active_threshold]
    card["active_channels_rule"] = (f"KL >= {active_threshold} bits per latent on the first 1000 "
                                    f"{train_name.split('-')[0]} training images")
    shutil.copyfile(src, dst)
    card["sha256"] = file_sha256(dst)  # the id that files name: never trust a copied card's
    write_card(dst, card)
    return {"model": name, "active_channels": card["active_channels"], "kl_bits": kl}
