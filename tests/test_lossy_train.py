"""Continuing a trained lossy model: a context network grown on it, the warmup that keeps a
fresh optimiser from undoing it, and the card's training curve carried on."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vlaecodec.lossy_model import LossyConfig, LossyModel
from vlaecodec.lossy_train import LossyTrainSettings, continued_curve, train


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(5)
    model = LossyModel(LossyConfig(n=8, m=8, betas=[800.0, 10.0]))
    path = tmp_path_factory.mktemp("init") / "start.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _largest_move(weights, out, **settings):
    train(LossyTrainSettings(out=str(out), n=8, m=8, crop=64, batch_size=2, steps=1, init=str(weights),
                             betas="800,10", val_minutes=1e6, lr=1e-3, **settings))
    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        after = {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
    before = load_file(str(weights))   # the transforms' weights (the gains train 10x faster)
    return after, max(float((after[k] - v).abs().max()) for k, v in before.items() if "gain" not in k)


def test_a_fresh_optimiser_moves_every_weight_by_its_rate_and_warmup_tames_it(weights, tmp_path):
    _, cold = _largest_move(weights, tmp_path / "cold")
    _, warm = _largest_move(weights, tmp_path / "warm", warmup=100)
    assert cold == pytest.approx(1e-3, rel=0.05)        # Adam's first step: lr * sign(gradient)
    assert 0 < warm <= 1e-3 / 100 * 1.05


def test_a_context_network_grown_on_a_model_starts_at_zero(weights, tmp_path):
    after, _ = _largest_move(weights, tmp_path / "ctx", context=4, warmup=10)
    last = [k for k in after if k.startswith("ctx.") and k.endswith("weight")][-1]
    assert after["ctx.0.weight"].shape[:2] == (4, 8)
    # one step from zero at lr / warmup * ctx_lr: still tiny, so the grown model codes almost as before
    assert 0 < float(after[last].abs().max()) <= 1e-3 / 10 * 10 * 1.05


def test_a_continued_curve_counts_steps_on_from_the_previous_models_best():
    previous = {"training_curve": {"what": "w", "segments": {"a": "first"}, "rows": [
        {"segment": "a", "lr": 1e-4, "step": 100, "val_loss": 1.5},
        {"segment": "a", "lr": 1e-4, "step": 200, "val_loss": 1.4},
        {"segment": "a", "lr": 1e-4, "step": 300, "val_loss": 1.45}]}}
    rows = [{"beta": b, "bpp": 0.5, "psnr": 30.0, "loss": 1.0} for b in (800.0, 10.0)]
    history = [{"step": 50, "seconds": 0.0, "val_loss": 1.41, "rows": rows},
               {"step": 90, "seconds": 600.0, "val_loss": 1.3, "rows": rows}]
    settings = {"lr": 3e-5, "lr_final": 3e-6, "minutes": 10.0}
    curve = continued_curve(previous, history, settings, "b", "second")
    new = curve["rows"][3:]
    assert [r["step"] for r in new] == [250, 290]
    assert [r["lr"] for r in new] == [3e-5, 3e-6]               # the cosine's two ends
    assert curve["segments"] == {"a": "first", "b": "second"}
    assert len(previous["training_curve"]["rows"]) == 3            # the previous card is untouched
    json.dumps(curve)


def test_a_run_resumed_from_the_previous_models_run_adds_only_its_own_validations():
    rows = [{"beta": b, "bpp": 0.5, "psnr": 30.0, "loss": 1.0} for b in (800.0, 10.0)]
    previous = {"training": {"steps": 200}, "training_curve": {"what": "w", "segments": {"a": "first"}, "rows": [
        {"segment": "a", "lr": 1e-4, "step": 1100, "val_loss": 1.5},
        {"segment": "a", "lr": 1e-4, "step": 1200, "val_loss": 1.4},     # the model: its run's step 200
        {"segment": "a", "lr": 1e-4, "step": 1300, "val_loss": 1.45}]}}
    first = "vlaecodec --lr 1e-4 --minutes 10"
    history = [{"step": s, "seconds": t, "val_loss": v, "rows": rows, "command": first}
               for s, t, v in ((100, 300.0, 1.5), (200, 450.0, 1.4), (300, 600.0, 1.45))]
    history += [{"step": 400, "seconds": 1200.0, "val_loss": 1.38, "rows": rows, "command": "vlaecodec --lr 2e-5 --lr-final 2e-6 --minutes 20"},
                {"step": 500, "seconds": 1500.0, "val_loss": 1.37, "rows": rows, "lr": 1.234e-5, "command": "x"}]
    curve = continued_curve(previous, history, {"lr": 9.0, "lr_final": 0.0, "minutes": 0.0}, "b", "second")
    new = curve["rows"][3:]
    assert [r["step"] for r in new] == [1400, 1500]      # the same origin; steps 100-300 are in already
    assert new[0]["lr"] == 1.1e-5                        # its own command's cosine, halfway through
    assert new[1]["lr"] == 1.2e-5                        # a recorded rate


def test_weights_with_a_context_network_are_not_loaded_without_it(weights, tmp_path):
    _largest_move(weights, tmp_path / "a", context=4)
    with safe_open(str(tmp_path / "a" / "checkpoint.safetensors"), "pt") as f:
        grown = {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
    save_file(grown, str(tmp_path / "grown.safetensors"))
    with pytest.raises(ValueError, match="unexpected"):
        _largest_move(tmp_path / "grown.safetensors", tmp_path / "b")


def test_the_command_line_grows_a_context_network_and_carries_the_curve_on(weights, tmp_path):
    from conftest import ROOT, run_cli

    def cli(*args):
        r = run_cli(*args, env={"VLAECODEC_MODELS": str(tmp_path / "zoo")})
        assert r.returncode == 0, r.stderr[-2000:]
        return r
    (tmp_path / "zoo").mkdir()
    cli("train-lossy", "--out", str(tmp_path / "run"), "--n", "8", "--m", "8", "--betas", "800,10",
        "--init", str(weights), "--context", "4", "--warmup", "10", "--lr-final", "1e-5", "--minutes", "5",
        "--steps", "2")
    cli("export-lossy", str(tmp_path / "run"), "grown", "--continues", "lossy-0.9", "--segment", "z",
        "--segment-note", "a test", "--fit-tables", "2")
    card = json.loads((tmp_path / "zoo" / "grown.json").read_text())
    with safe_open(str(tmp_path / "zoo" / "grown.safetensors"), "np") as f:
        assert f.get_tensor("tables.y_shift").shape == (2, 8)   # trained betas x channels
    assert sum(card["tables"]["shifts"].values()) == 2 * 8
    assert card["tables"]["bits_on_those_crops"]["fitted"] <= card["tables"]["bits_on_those_crops"]["gaussian"]
    previous = json.loads((ROOT / "models" / "lossy-0.9.json").read_text())["training_curve"]
    assert card["config"]["context"] == 4 and "context" in card["description"]
    assert card["training_curve"]["rows"][:-1] == previous["rows"]
    assert card["training_curve"]["rows"][-1]["segment"] == "z"
