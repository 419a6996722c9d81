"""The command line: round trips, JSON contracts, and one-line errors that never leave output."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli, tiny_model
from PIL import Image

from vlaecodec.zoo import save_model

run = run_cli


def save(path, arr, **kw):
    Image.fromarray(arr).save(path, **kw)
    return str(path)


def test_encode_decode_info_round_trip(tmp_path, model_path):
    img = np.random.default_rng(0).integers(0, 256, (13, 21, 3), dtype=np.uint8)
    src = save(tmp_path / "a.png", img)
    # encode with 2 threads and decode in another process with 1: the integer network makes
    # the tables identical whatever the thread count
    r = run("encode", src, "-o", str(tmp_path / "a.vlae"), "--model", model_path, "--json", "--threads", "2", "--elbo")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["bytes"] == (tmp_path / "a.vlae").stat().st_size
    assert abs(rec["bpd"] - rec["bytes"] * 8 / img.size) < 1e-9 and rec["elbo_bpd"] > 0
    r = run("decode", str(tmp_path / "a.vlae"), "-o", str(tmp_path / "b.png"), "--model", model_path, "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), img)
    info = json.loads(run("info", str(tmp_path / "a.vlae"), "--json").stdout)
    assert (info["width"], info["height"], info["channels"], info["mode"]) == (21, 13, 3, "lossless")
    assert info["bytes"] == rec["bytes"] and len(info["model"]) == 16


def test_grey_and_archive(tmp_path, model_path):
    rng = np.random.default_rng(1)
    grey = save(tmp_path / "g.png", rng.integers(0, 256, (9, 7), dtype=np.uint8))
    rgb = save(tmp_path / "c.png", rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
    r = run("encode", grey, rgb, "--archive", "-o", str(tmp_path / "set.vlae"), "--model", model_path)
    assert r.returncode == 0, r.stderr
    r = run("decode", str(tmp_path / "set.vlae"), "-o", str(tmp_path / "set"), "--model", model_path)
    assert r.returncode == 0, r.stderr
    outs = sorted((tmp_path / "set").glob("*.png"))
    assert [np.asarray(Image.open(p)).tolist() for p in outs] == \
        [np.asarray(Image.open(grey)).tolist(), np.asarray(Image.open(rgb)).tolist()]


def test_stdin_stdout(tmp_path, model_path):
    img = np.random.default_rng(2).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    src = Path(save(tmp_path / "s.png", img)).read_bytes()
    enc = run("encode", "-", "-o", "-", "--model", model_path, "--no-elbo", stdin=src)
    assert enc.returncode == 0, enc.stderr
    dec = run("decode", "-", "-o", "-", "--model", model_path, stdin=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    (tmp_path / "o.png").write_bytes(dec.stdout)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), img)


def one_line_error(r):
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "Traceback" not in err
    assert err.strip() and all(line.startswith("vlaecodec: error") for line in err.strip().splitlines())


def test_refuses_to_overwrite_without_force(tmp_path, model_path):
    src = save(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    out = tmp_path / "a.vlae"
    out.write_bytes(b"precious")
    r = run("encode", src, "-o", str(out), "--model", model_path)
    one_line_error(r)
    assert out.read_bytes() == b"precious"
    assert run("encode", src, "-o", str(out), "--model", model_path, "--force").returncode == 0
    assert out.read_bytes()[:4] == b"VLAE"


@pytest.mark.parametrize("case", ["missing", "text", "directory", "sixteen_bit", "float", "cmyk",
                                  "truncated_png"])
def test_bad_inputs_fail_cleanly(tmp_path, model_path, case):
    p = tmp_path / "in.png"
    if case == "text":
        p.write_text("hello")
    elif case == "directory":
        p.mkdir()
    elif case == "sixteen_bit":
        Image.fromarray(np.zeros((4, 4), np.uint16)).save(p)
    elif case == "float":
        p = tmp_path / "in.tif"
        Image.new("F", (4, 4)).save(p)
    elif case == "cmyk":
        p = tmp_path / "in.jpg"
        Image.new("CMYK", (4, 4)).save(p)
    elif case == "truncated_png":
        save(p, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        p.write_bytes(p.read_bytes()[:200])
    r = run("encode", str(p), "-o", str(tmp_path / "out.vlae"), "--model", model_path)
    one_line_error(r)
    assert not (tmp_path / "out.vlae").exists()
    assert not list(tmp_path.glob(".out.vlae*"))


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "flip_header", "garbage", "empty"])
def test_corrupt_files_fail_cleanly(tmp_path, model_path, damage):
    src = save(tmp_path / "a.png", np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert run("encode", src, "-o", str(tmp_path / "a.vlae"), "--model", model_path).returncode == 0
    data = bytearray((tmp_path / "a.vlae").read_bytes())
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip_payload":
        data[-3] ^= 0x10
    elif damage == "flip_header":
        data[10] ^= 0x01
    elif damage == "garbage":
        data = bytearray(b"VLAE" + bytes(100))
    else:
        data = bytearray()
    (tmp_path / "bad.vlae").write_bytes(bytes(data))
    r = run("decode", str(tmp_path / "bad.vlae"), "-o", str(tmp_path / "out.png"), "--model", model_path)
    one_line_error(r)
    assert not (tmp_path / "out.png").exists()


def test_wrong_model_names_the_needed_model(tmp_path, model_path):
    other = tmp_path / "other.safetensors"
    save_model(tiny_model(seed=5), other, {})
    src = save(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert run("encode", src, "-o", str(tmp_path / "a.vlae"), "--model", model_path).returncode == 0
    r = run("decode", str(tmp_path / "a.vlae"), "-o", str(tmp_path / "o.png"), "--model", str(other))
    one_line_error(r)
    assert "model" in r.stderr.decode()


def test_decode_on_another_instruction_set(tmp_path, model_path):
    """Encode with the machine's fastest kernels (AVX2/FMA here), decode with BLAS and torch
    forced onto SSE-era code paths: float results would differ in the last bits, the integer
    network's do not."""
    import os
    img = np.random.default_rng(7).integers(0, 256, (19, 23, 3), dtype=np.uint8)
    src = save(tmp_path / "a.png", img)
    assert run("encode", src, "-o", str(tmp_path / "a.vlae"), "--model", model_path, "--no-elbo").returncode == 0
    env = dict(os.environ, OPENBLAS_CORETYPE="Prescott", ATEN_CPU_CAPABILITY="default",
               MKL_ENABLE_INSTRUCTIONS="SSE4_2", NUMBA_CPU_NAME="generic")
    r = subprocess.run([sys.executable, "-m", "cli.main", "decode", str(tmp_path / "a.vlae"), "-o",
                        str(tmp_path / "b.png"), "--model", model_path], capture_output=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), img)


def test_threads_default_to_the_cores_shared_by_the_jobs(monkeypatch):
    """No --threads: the cores this process may use, divided among the --jobs processes
    (at least one each); a given --threads is kept."""
    import os

    from cli.commands import threads_for
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert [threads_for(None, jobs) for jobs in (1, 2, 3, 8)] == [4, 2, 1, 1]
    assert threads_for(3, 8) == 3


def test_coding_commands_leave_quickly_with_their_output_whole(tmp_path, model_path):
    """encode, decode and info end with os._exit (no finalization): what they print through a
    pipe is complete, the exit status is theirs, and the outputs are in place."""
    img = np.random.default_rng(1).integers(0, 256, (9, 10, 3), dtype=np.uint8)
    src = save(tmp_path / "a.png", img)
    names = [f"a{i}.vlae" for i in range(3)]
    for name in names:
        r = run("encode", src, "-o", str(tmp_path / name), "--model", model_path, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["bytes"] > 0, r.stderr
    r = run("info", *(str(tmp_path / n) for n in names), "--json")
    assert r.returncode == 0 and [json.loads(line)["width"] for line in r.stdout.splitlines()] == [10] * 3
    r = run("decode", str(tmp_path / "missing.vlae"), "-o", str(tmp_path / "b.png"))
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1
    r = run("decode", str(tmp_path / names[0]), "-o", str(tmp_path / "b.png"), "--model", model_path)
    assert r.returncode == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), img)
