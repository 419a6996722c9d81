"""Lossy coding as a user runs it: the shipped lossy model through the CLI and the API."""
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlaecodec import api
from vlaecodec.quality import psnr

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23_crop.png"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def img():
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


def test_the_picture_resembles_the_image(img):
    """A decoder that returned zeros, a flat colour or noise would score far below these
    floors (the crop's own mean colour scores 14 dB); the shipped model scores well above."""
    low, high = (api.decode(api.encode_lossy([img], beta=b)) for b in (800.0, 10.0))
    assert psnr(img, low) > 25
    assert psnr(img, high) > 29
    assert psnr(img, high) > psnr(img, low) + 1


def test_beta_trades_size_for_fidelity(img):
    sizes = [len(api.encode_lossy([img], beta=b)) for b in (800.0, 200.0, 50.0, 10.0)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] / 2


def test_cli_round_trip_reports_what_a_user_needs(tmp_path, img):
    out, png = tmp_path / "a.vlae", tmp_path / "a.png"
    res = run_cli("encode", str(SAMPLE), "-o", str(out), "--lossy", "--beta", "100", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["mode"] == "lossy" and rec["beta"] == 100.0 and rec["bytes"] == out.stat().st_size
    assert rec["bpp"] == pytest.approx(out.stat().st_size * 8 / (128 * 128))
    assert run_cli("decode", str(out), "-o", str(png)).returncode == 0      # no flag needed
    decoded = np.asarray(Image.open(png))
    assert rec["psnr"] == pytest.approx(psnr(img, decoded))
    assert np.array_equal(decoded, api.decode(out.read_bytes()))          # another process, same pixels
    info = json.loads(run_cli("info", str(out), "--json").stdout)
    assert info["mode"] == "lossy" and info["beta"] == 100.0 and info["loop_filter"] is True


def test_lossy_pictures_are_written_with_run_length_deflate_and_exact_images_without(img):
    """A lossy picture's PNG (zlib's run-length strategy, fast) holds the same pixels and
    metadata; an exact image keeps the default strategy, whose distant matches find a
    pattern that repeats every 7 pixels, as graphics and screenshots do, which runs cannot."""
    from cli.commands import png_bytes
    meta = {"icc_profile": b"p" * 300, "exif": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"}
    for lossy in (False, True):
        back = Image.open(io.BytesIO(png_bytes(img, meta, lossy)))
        assert np.array_equal(np.asarray(back), img) and back.info["icc_profile"] == meta["icc_profile"]
    tile = np.random.default_rng(0).integers(0, 256, (1, 7, 3), dtype=np.uint8)
    pattern = np.tile(tile, (64, 40, 1))
    assert len(png_bytes(pattern)) * 2 < len(png_bytes(pattern, lossy=True))


def test_the_encoders_picture_is_the_decoded_one_loop_filter_and_all(img):
    from vlaecodec.lossy_coder import load_lossy_coder
    data, (picture,) = api.encode_lossy([img], beta=5.0, return_pictures=True)
    assert np.array_equal(picture, api.decode(data))
    unfiltered = load_lossy_coder("lossy", loop_filter=False).encode_and_draw([img], 5.0)[1][0]
    assert not np.array_equal(picture, unfiltered)    # the filter was chosen and is in the picture
    data, (picture,) = api.encode_lossy([img], target_bpp=0.5, return_pictures=True)
    assert np.array_equal(picture, api.decode(data))


def test_decoding_with_two_threads_gives_the_same_pixels(tmp_path, img):
    data = api.encode_lossy([img], beta=64.0)
    (tmp_path / "a.vlae").write_bytes(data)
    assert run_cli("decode", str(tmp_path / "a.vlae"), "-o", str(tmp_path / "a.png"), "--threads", "2").returncode == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), api.decode(data))


@pytest.mark.parametrize("target", [0.25, 0.6])  # inside what the model spans on this crop
def test_target_rate_lands_within_ten_percent(tmp_path, target):
    out = tmp_path / "t.vlae"
    res = run_cli("encode", str(SAMPLE), "-o", str(out), "--lossy", "--target-bpp", str(target), "--json")
    assert res.returncode == 0, res.stderr
    assert abs(json.loads(res.stdout)["bpp"] - target) <= 0.1 * target


@pytest.mark.parametrize("args", [
    ["--lossy", "--beta", "-1"], ["--lossy", "--beta", "0"], ["--lossy", "--beta", "1e9"],
    ["--lossy", "--beta", "nan"], ["--lossy", "--target-bpp", "0"], ["--lossy", "--target-bpp", "-3"],
    ["--lossy", "--max-error", "2"], ["--target-bpp", "1"], ["--lossy", "--beta", "64", "--target-bpp", "1"],
])
def test_bad_arguments_fail_cleanly_and_write_nothing(tmp_path, args):
    out = tmp_path / "x.vlae"
    res = run_cli("encode", str(SAMPLE), "-o", str(out), *args)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and res.stderr.strip()
    assert not out.exists()


def test_models_lists_the_lossy_model_and_its_betas():
    rows = {r["name"]: r for r in json.loads(run_cli("models", "--json").stdout)}
    lossy = rows["lossy"]
    assert lossy["serves"] == ["lossy"] and min(lossy["lossy_betas"]) <= 10 and max(lossy["lossy_betas"]) >= 800
    assert "lossless" in rows["default"]["serves"]
