"""Training resumes exactly after a stop, and runs data-parallel under torchrun (gloo, CPU)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

TINY = ["--hidden", "8", "--pixel-hidden", "8", "--z-channels", "2", "--res-blocks", "1",
        "--pixel-blocks", "1", "--batch-size", "4", "--val-every", "1000", "--threads", "1",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def train(args, env=None, module=True):
    cmd = [sys.executable, "-m", "cli.main", "train", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.parametrize("likelihood", ["logistic", "categorical"])
def test_resume_continues_exactly(tmp_path, folder, likelihood):
    common = ["--data", str(folder), "--steps", "6", "--likelihood", likelihood, *TINY]
    train(["--out", str(tmp_path / "straight"), *common])
    train(["--out", str(tmp_path / "split"), "--stop-after", "3", *common])
    first = load_file(str(tmp_path / "split" / "checkpoint.safetensors"))
    train(["--out", str(tmp_path / "split"), "--resume", *common])
    a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint.safetensors"))
    assert not torch.equal(first["model.heads.out.0.weight"], b["model.heads.out.0.weight"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_card_records_every_segment(tmp_path, folder):
    common = ["--data", str(folder), "--steps", "4", *TINY]
    train(["--out", str(tmp_path / "r"), "--stop-after", "2", *common])
    train(["--out", str(tmp_path / "r"), "--resume", *common])
    card = json.loads((tmp_path / "r" / "model.json").read_text())
    assert card["steps"] == 4 and len(card["training_segments"]) == 2
    assert all("hardware" in s and "command" in s for s in card["training_segments"])


def test_torchrun_two_processes_gloo(tmp_path, folder):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.fail("torchrun not found next to the interpreter")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "cli.main", "train",
           "--data", str(folder), "--steps", "3", "--minutes", "5", "--out", str(tmp_path / "ddp"), *TINY]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert card["training_segments"][0]["world_size"] == 2


def test_prefetching_threads_train_the_same_model(tmp_path, folder):
    common = ["--data", str(folder), "--steps", "5", *TINY]
    train(["--out", str(tmp_path / "one"), *common])
    train(["--out", str(tmp_path / "three"), "--loader-threads", "3", *common])
    a = load_file(str(tmp_path / "one" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "three" / "checkpoint.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


class FakeClock:
    """Stands in for the ``time`` module of the training loop: every training step takes
    ``pace(step)`` seconds, whatever the machine, so the fit is checked, not the machine."""

    def __init__(self, pace):
        self.now, self.steps, self.pace = 1000.0, 0, pace

    def time(self) -> float:
        return self.now

    def batches(self, real):
        def prefetched(*args, **kwargs):
            for batch in real(*args, **kwargs):  # one batch per step: the step's time passes
                self.now += self.pace(self.steps)
                self.steps += 1
                yield batch
        return prefetched


def fit_run(monkeypatch, tmp_path, folder, pace, minutes=0.3):
    """A tiny run with --fit-minutes on the fake clock; returns its card."""
    import vlaecodec.train as T
    from conftest import tiny_config
    clock = FakeClock(pace)
    monkeypatch.setattr(T, "time", clock)
    monkeypatch.setattr(T, "prefetched", clock.batches(T.prefetched))
    settings = T.TrainSettings(data=str(folder), crop=8, batch_size=4, val_every=1000,
                               steps=100000, fit_minutes=minutes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the command line's --threads 1: fast beside other jobs
    try:
        T.train(tiny_config(), settings, tmp_path / "fit", device="cpu")
    finally:
        torch.set_num_threads(threads)
    return json.loads((tmp_path / "fit" / "model.json").read_text())


def test_fit_minutes_fits_the_schedule_to_the_budget(monkeypatch, tmp_path, folder):
    """At a steady pace (0.125 s a step, 18 s of budget: 144 steps) the schedule is fitted to
    end inside the budget, close to it, and the run ends with its schedule."""
    card = fit_run(monkeypatch, tmp_path, folder, pace=lambda step: 0.125)
    budget_steps = 0.3 * 60 / 0.125
    assert 0.9 * budget_steps <= card["settings"]["steps"] <= budget_steps
    assert card["steps"] == card["settings"]["steps"]  # the schedule ended the run, not the budget
    assert 0.9 * 18 <= card["train_seconds"] <= 18


def test_fit_minutes_budget_stops_a_run_that_slows_down(monkeypatch, tmp_path, folder):
    """The pace halves after the fit (step 100): the time budget stops the run at 18 s,
    before the fitted schedule ends."""
    card = fit_run(monkeypatch, tmp_path, folder, pace=lambda step: 0.125 if step < 100 else 0.25)
    assert card["steps"] < card["settings"]["steps"] < 100000
    assert card["steps"] == 100 + (18 - 100 * 0.125) // 0.25 + 1  # the first step past 18 s
    assert 18 < card["train_seconds"] <= 18 + 0.25


def test_resumed_fitted_run_keeps_its_schedule(tmp_path, folder):
    run = tmp_path / "fit"
    train(["--out", str(run), "--data", str(folder), "--steps", "100000", "--fit-minutes", "0.3",
           "--stop-after", "60", *TINY])
    fitted = json.loads((run / "model.json").read_text())["settings"]["steps"]
    assert fitted < 100000
    train(["--out", str(run), "--resume", "--stop-after", "10", *TINY])
    card = json.loads((run / "model.json").read_text())
    assert card["settings"]["steps"] == fitted and card["steps"] == 70


def test_posterior_match_is_zero_only_for_the_teachers_own_posterior():
    from vlaecodec.model import VLAE, VLAEConfig
    from vlaecodec.train import posterior_match
    torch.manual_seed(0)
    cfg = VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1, pixel_blocks=1)
    teacher, student = VLAE(cfg), VLAE(cfg)
    x = torch.randint(0, 256, (2, 3, 8, 8))
    assert float(posterior_match(teacher, teacher(x), x)) == pytest.approx(0.0, abs=1e-6)
    loss = posterior_match(teacher, student(x), x)
    assert float(loss) > 1e-4
    loss.backward()                       # the gradient reaches the student, not the teacher
    assert student.encoder.out.weight.grad is not None and teacher.encoder.out.weight.grad is None


def test_broad_batches_mix_the_three_kinds_of_picture():
    from vlaecodec.train import BatchSource, TrainSettings
    src = BatchSource(TrainSettings(data="broad", crop=16), channels=3)
    assert [len(g) > 0 for g in src.groups] == [True, True, True]
    x = src.batch(0, 0, 12)
    assert x.shape == (12, 16, 16, 3) and x.dtype == np.uint8
    assert np.array_equal(x, src.batch(0, 0, 12))      # a pure function of the step
    # its own validation: crops of held-out photos and graphics, none of them trained on
    from vlaecodec import data as D
    assert {k: v.shape for k, v in src.heldout.items()} == {"photos": (128, 16, 16, 3), "graphics": (128, 16, 16, 3)}
    held = [im for g in D.heldout_sets() for im in g]
    assert [len(g) for g in D.heldout_sets()] == [D.HOLDOUT, D.HOLDOUT]
    assert not any(t.shape == h.shape and np.array_equal(t, h) for g in src.groups for t in g for h in held)


def test_feature_match_compares_the_pixel_features_of_a_pruned_model():
    from vlaecodec.model import VLAE, VLAEConfig
    from vlaecodec.prune import prune
    from vlaecodec.train import feature_match
    torch.manual_seed(0)
    cfg = VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1, pixel_blocks=1)
    teacher = VLAE(cfg).eval()
    x = torch.randint(0, 256, (2, 3, 8, 8))
    assert float(feature_match(teacher, teacher(x), x)) == pytest.approx(0.0, abs=1e-6)
    student = prune(teacher, x, pixel_inner=4).train()
    loss = feature_match(teacher, student(x), x)
    assert float(loss) > 1e-6
    loss.backward()
    assert student.heads.trunk[0][1].weight.grad is not None


def test_no_latent_trains_a_local_model(tmp_path, folder):
    """--no-latent: the run's model has latent=False, no rate, and its encoder is never
    trained (its weights stay as they started); z = 0 in every forward pass."""
    from conftest import tiny_model
    model = tiny_model(latent=False)
    x = torch.randint(0, 256, (2, 3, 16, 16))
    out = model(x)
    assert float(out["rate"].abs().sum()) == 0 and float(out["z"].abs().sum()) == 0
    want = model.pixel_nll(x, torch.zeros_like(out["z"])).sum(dim=(1, 2, 3))
    assert torch.allclose(out["distortion"], want)
    train(["--data", str(folder), *TINY, "--out", str(tmp_path / "run"), "--steps", "3", "--no-latent",
           "--likelihood", "logistic"])
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["config"]["latent"] is False
    w = load_file(str(tmp_path / "run" / "model.safetensors"))
    fresh = tiny_model(latent=False, likelihood="logistic").state_dict()   # the same seed's start
    encoder = [k for k in w if k.startswith("encoder.")]
    assert encoder and all(torch.equal(w[k], fresh[k]) for k in encoder if k in fresh)
