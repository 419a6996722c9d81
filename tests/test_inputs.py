"""Every kind of bad or unusual input image: a one-line error or a documented conversion,
a non-zero exit where it failed, never a partial or overwritten output."""
import errno
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli
from PIL import Image

from cli import commands
from vlaecodec.errors import VlaeError

run = run_cli


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (the pixel data is not there)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def assert_refused(path, tmp_path, model_path, words=""):
    out = tmp_path / "out.vlae"
    r = run("encode", str(path), "-o", str(out), "--model", model_path)
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("vlaecodec: error")
    assert words.lower() in err.lower()
    assert not out.exists()


def test_zero_by_zero(tmp_path, model_path):
    p = tmp_path / "zero.png"
    p.write_bytes(png_with_size(0, 0))
    assert_refused(p, tmp_path, model_path)


def test_huge_declared_dimensions_are_refused_before_decoding(tmp_path, model_path):
    p = tmp_path / "huge.png"
    p.write_bytes(png_with_size(60000, 60000))
    assert_refused(p, tmp_path, model_path, "limit")


def test_truncated_jpeg(tmp_path, model_path):
    p = tmp_path / "t.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p, quality=90)
    p.write_bytes(p.read_bytes()[:300])
    assert_refused(p, tmp_path, model_path)


def test_animated_gif_is_refused(tmp_path, model_path):
    p = tmp_path / "a.gif"
    rng = np.random.default_rng(4)
    frames = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).quantize(8) for _ in range(2)]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert_refused(p, tmp_path, model_path, "animated")


def test_missing_file_and_directory(tmp_path, model_path):
    assert_refused(tmp_path / "nope.png", tmp_path, model_path, "no such file")
    (tmp_path / "d.png").mkdir()
    assert_refused(tmp_path / "d.png", tmp_path, model_path, "directory")


def test_palette_image_is_coded_as_its_pixels(tmp_path, model_path):
    rgb = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    p = tmp_path / "pal.png"
    Image.fromarray(rgb).quantize(16).save(p)
    want = np.asarray(Image.open(p).convert("RGB"))
    assert run("encode", str(p), "-o", str(tmp_path / "p.vlae"), "--model", model_path).returncode == 0
    assert run("decode", str(tmp_path / "p.vlae"), "-o", str(tmp_path / "p.png"), "--model", model_path).returncode == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p.png")), want)


def test_exif_orientation_is_not_applied(tmp_path, model_path):
    img = np.random.default_rng(2).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=95)
    stored = np.asarray(Image.open(p))
    assert stored.shape[:2] == (6, 9)
    assert commands.read_image(str(p)).shape[:2] == (6, 9)


def test_unwritable_output_leaves_nothing(tmp_path, model_path):
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(src)
    r = run("encode", str(src), "-o", str(tmp_path / "no" / "such" / "dir" / "a.vlae"), "--model", model_path)
    assert r.returncode != 0 and b"Traceback" not in r.stderr and b"no such folder" in r.stderr
    # a folder nobody can create files in, root included
    r = run("encode", str(src), "-o", "/proc/vlaecodec-test.vlae", "--model", model_path, "--no-elbo")
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not Path("/proc/vlaecodec-test.vlae").exists()


def test_full_disk_leaves_no_partial_output(tmp_path, monkeypatch):
    target = tmp_path / "out.vlae"
    target.write_bytes(b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(commands.os, "fsync", no_space)
    with pytest.raises(OSError):
        commands.write_atomic(str(target), b"new data")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.vlae"]
    from vlaecodec.errors import describe
    assert describe(OSError(errno.ENOSPC, "x")) == "no space left on device"


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_get_the_mode_open_would_give(tmp_path, umask_022):
    """Not the temporary file's 0o600: under umask 022 a new output is 0o644 (others can read
    it, as with any file a program writes); an overwritten one keeps its mode, as with open()."""
    new = tmp_path / "new.vlae"
    commands.write_atomic(str(new), b"data")
    assert stat.S_IMODE(new.stat().st_mode) == 0o644
    os.umask(0o077)
    private = tmp_path / "private.vlae"
    commands.write_atomic(str(private), b"data")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    os.umask(0o022)
    kept = tmp_path / "kept.vlae"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    commands.write_atomic(str(kept), b"new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_bytes() == b"new"


def test_command_line_outputs_follow_the_umask(tmp_path, model_path, umask_022):
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(src)
    assert run("encode", str(src), "-o", str(tmp_path / "a.vlae"), "--model", model_path, "--no-elbo").returncode == 0
    assert run("decode", str(tmp_path / "a.vlae"), "-o", str(tmp_path / "b.png"), "--model", model_path).returncode == 0
    for name in ("a.vlae", "b.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_same_bytes_whatever_the_jobs_and_threads(tmp_path, model_path):
    rng = np.random.default_rng(3)
    srcs = []
    for i in range(3):
        srcs.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (7 + i, 9, 3), dtype=np.uint8)).save(srcs[-1])
    outs = {}
    for label, flags in {"serial": ["--jobs", "1", "--threads", "1"], "parallel": ["--jobs", "2", "--threads", "2"]}.items():
        d = tmp_path / label
        d.mkdir()
        r = run("encode", *map(str, srcs), "-o", str(d), "--model", model_path, "--no-elbo", *flags)
        assert r.returncode == 0, r.stderr
        outs[label] = [(d / f"{i}.vlae").read_bytes() for i in range(3)]
    assert outs["serial"] == outs["parallel"]


def test_read_image_rejects_sixteen_bit_in_process(tmp_path):
    p = tmp_path / "s.png"
    Image.fromarray(np.zeros((3, 3), np.uint16)).save(p)
    with pytest.raises(VlaeError, match="16-bit"):
        commands.read_image(str(p))


def test_nothing_loads_a_pickle():
    """Models and checkpoints are safetensors; no code path deserializes pickles."""
    import re
    pattern = re.compile(r"\bpickle\.loads?\(|torch\.load\(|allow_pickle\s*=\s*True|np\.load\([^)]*allow_pickle")
    for folder in ("vlaecodec", "cli", "bench"):
        for f in (ROOT / folder).rglob("*.py"):
            assert not pattern.search(f.read_text()), f
