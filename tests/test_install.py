"""What a user installs works on its own: the wheel carries the model zoo, its console script
encodes and decodes, and the version it reports is the project's.

The wheel is built from a copy of the working tree and installed into a fresh venv in a
temporary folder, then run from there.  That venv borrows this venv's dependencies (torch
is far too big to install per test) through a .pth *path* line: Python adds the folder to
sys.path but does not run the .pth files inside it, so the editable install of this
checkout stays invisible, and nothing of the repository can be imported.  A wheel without
its models therefore fails here ("no model 'default'"), as it would for a user.
"""
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

import vlaecodec

PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_version_comes_from_the_package_metadata():
    # a stale install (pip install -e . not rerun after a bump) shows up here too
    assert vlaecodec.__version__ == importlib.metadata.version("vlaecodec") == PROJECT_VERSION


def _working_tree(dst: Path) -> None:
    """Copy what a clean clone plus the uncommitted work would hold (no venv, runs, caches)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("the wheel is built from a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a file deleted but not yet committed is listed too
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _clean_env() -> dict:
    """No PYTHONPATH (it could reach the checkout) and no VLAECODEC_MODELS (the shipped zoo
    is under test)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VLAECODEC_MODELS")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, venv folder, a folder outside the repository to run in)."""
    tmp = tmp_path_factory.mktemp("install")
    src, dist, venv, work = tmp / "src", tmp / "dist", tmp / "venv", tmp / "work"
    work.mkdir()
    _working_tree(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(dist), str(src)], check=True, cwd=tmp)
    wheel, = dist.glob("vlaecodec-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site, = venv.glob("lib/python*/site-packages")
    here = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (site / "_borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    # pip runs inside the new venv, so it installs there and writes its console script there;
    # --ignore-installed: never touch the editable install it can see through the .pth
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                    "--ignore-installed", "-q", str(wheel)], check=True, cwd=work, env=_clean_env())
    return wheel, venv, work


def test_wheel_ships_the_zoo_and_nothing_else_from_models(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.split("/", 2)[2] for n in names if n.startswith("vlaecodec/models/")}
    for weights in (ROOT / "models").glob("*.safetensors"):
        assert {weights.name, weights.with_suffix(".json").name} <= shipped
    assert not [n for n in shipped if not n.endswith((".safetensors", ".json")) or "/" in n]
    assert "vlaecodec/tables.npz" in names         # the fixed tables (vlaecodec/shipped_tables.py)


def run_installed(installed, *args):
    _, venv, work = installed
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=work, env=_clean_env(),
                          capture_output=True, text=True, timeout=300)


def test_installed_package_is_the_wheel_and_finds_its_models(installed):
    _, venv, _ = installed
    r = run_installed(installed, "python", "-c",
                      "import vlaecodec, vlaecodec.zoo as z; print(vlaecodec.__file__); "
                      "print(z.resolve('default')); print(vlaecodec.__version__)")
    assert r.returncode == 0, r.stderr
    module, default, version = r.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(default).is_relative_to(venv)
    assert Path(default).parent == Path(module).parent / "models"
    assert version == PROJECT_VERSION


def test_installed_console_script_round_trip(installed):
    _, _, work = installed
    img = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(img).save(work / "r.png")
    r = run_installed(installed, "vlaecodec", "--version")
    assert r.returncode == 0 and PROJECT_VERSION in r.stdout, r.stdout + r.stderr
    r = run_installed(installed, "vlaecodec", "encode", "r.png", "-o", "r.vlae", "--no-elbo")
    assert r.returncode == 0, r.stderr
    r = run_installed(installed, "vlaecodec", "decode", "r.vlae", "-o", "back.png")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(work / "back.png")), img)


def test_models_env_folder_comes_first_and_receives_exports(tmp_path, monkeypatch):
    from conftest import tiny_model

    from vlaecodec import zoo
    shipped = zoo.resolve("default")
    own = tmp_path / "own"
    zoo.save_model(tiny_model(), own / "mine.safetensors", {"beta": 1.0})
    zoo.save_model(tiny_model(seed=1), own / "default.safetensors", {"beta": 1.0})
    (own / "notes.json").write_text("{}")  # a card without weights is not a model
    monkeypatch.setenv(zoo.MODELS_ENV, str(own))
    assert zoo.models_dir() == zoo.MODELS_DIR == own  # where `vlaecodec export` writes
    assert zoo.resolve("mine") == own / "mine.safetensors"
    assert zoo.resolve("default") == own / "default.safetensors"  # the user's copy hides the shipped one
    names = [c["name"] for c in zoo.list_models()]
    assert "mine" in names and "cifar-local" in names and "notes" not in names
    assert len(names) == len(set(names))
    monkeypatch.delenv(zoo.MODELS_ENV)
    assert zoo.resolve("default") == shipped
    with pytest.raises(FileNotFoundError, match="VLAECODEC_MODELS"):
        zoo.resolve("mine")
