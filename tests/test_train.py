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


def test_fit_minutes_fits_the_schedule_to_the_budget(tmp_path, folder):
    train(["--out", str(tmp_path / "fit"), "--data", str(folder), "--steps", "100000",
           "--fit-minutes", "0.3", *TINY])
    card = json.loads((tmp_path / "fit" / "model.json").read_text())
    # the schedule now ends about where this run ended, not at 100000 (a busy machine can
    # slow down after the last refit: then the budget ends the run a little before the schedule)
    assert card["steps"] > 50
    assert card["steps"] <= card["settings"]["steps"] < 100000
    assert card["settings"]["steps"] - card["steps"] <= 0.25 * card["steps"]
    # and the run used most of its budget (a fit far too short would end it early)
    assert 0.7 * 18 <= card["train_seconds"] <= 18 + 10


def test_resumed_fitted_run_keeps_its_schedule(tmp_path, folder):
    run = tmp_path / "fit"
    train(["--out", str(run), "--data", str(folder), "--steps", "100000", "--fit-minutes", "0.3",
           "--stop-after", "60", *TINY])
    fitted = json.loads((run / "model.json").read_text())["settings"]["steps"]
    assert fitted < 100000
    train(["--out", str(run), "--resume", "--stop-after", "10", *TINY])
    card = json.loads((run / "model.json").read_text())
    assert card["settings"]["steps"] == fitted and card["steps"] == 70
