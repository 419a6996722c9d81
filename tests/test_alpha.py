"""Images with alpha (grey + alpha, RGBA): exact round trips in every lossless mode, an opaque
alpha that costs nothing, the header's entries, and PNG files in and out of the CLI."""
import io

import numpy as np
import pytest
from conftest import run_cli, tiny_model
from PIL import Image

import vlaecodec.pillow_plugin  # noqa: F401 - registers .vlae with Pillow
from vlaecodec.api import info
from vlaecodec.codec import Codec
from vlaecodec.errors import VlaeError
from vlaecodec.fileformat import ALPHA_OPAQUE, ALPHA_PLANE, unpack_header


@pytest.fixture(scope="module")
def codec():
    return Codec(tiny_model(likelihood="logistic"), "cd" * 32, z_bits=6)


def _with_alpha(colour, alpha):
    return np.ascontiguousarray(np.dstack([colour, alpha]).astype(np.uint8))


@pytest.fixture
def rgba(rng):
    colour = rng.integers(0, 256, (13, 21, 3))
    yy, xx = np.mgrid[0:13, 0:21]
    return _with_alpha(colour, np.where(xx > yy, 255, xx * 12))   # a soft edge, like a shadow


@pytest.mark.parametrize("max_error", [0, 2])
def test_rgba_and_grey_alpha_round_trip(codec, rgba, max_error):
    la = np.ascontiguousarray(rgba[..., 2:])
    for img in (rgba, la):
        data = codec.encode(img, max_error=max_error)
        out = codec.decode(data)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert int(np.abs(out.astype(int) - img).max()) <= max_error
        assert unpack_header(data)[0].images[0].alpha == ALPHA_PLANE


def test_opaque_alpha_is_a_flag_and_costs_nothing(codec, rgba):
    opaque = rgba.copy()
    opaque[..., 3] = 255
    data = codec.encode(opaque)
    assert np.array_equal(codec.decode(data), opaque)
    header = unpack_header(data)[0]
    assert header.images[0].alpha == ALPHA_OPAQUE
    # the same payload as the colour image alone; only the header's channels byte differs
    plain = codec.encode(np.ascontiguousarray(opaque[..., :3]))
    assert len(data) == len(plain) and data[-40:] == plain[-40:]


def test_archive_mixes_images_with_and_without_alpha(codec, rgba, rng):
    images = [rgba, rng.integers(0, 256, (9, 6, 3), dtype=np.uint8), np.ascontiguousarray(rgba[..., 2:]),
              rng.integers(0, 256, (4, 4, 1), dtype=np.uint8)]
    out = codec.decode_many(codec.encode_many(images))
    assert [o.shape for o in out] == [i.shape for i in images]
    assert all(np.array_equal(a, b) for a, b in zip(out, images))


def test_preview_and_info_show_the_alpha(codec, rgba):
    data = codec.encode(rgba)
    assert codec.decode_many(data, preview=True)[0].shape == rgba.shape
    rec = info(data)
    assert rec["channels"] == 4 and rec["alpha"] == "coded"
    assert rec["bpd"] == pytest.approx(len(data) * 8 / rgba.size)


def test_a_bad_alpha_entry_is_a_corrupt_header(codec, rgba):
    data = bytearray(codec.encode(rgba))
    at = data.index(bytes([3 | ALPHA_PLANE << 4]), 16)   # the run's channels byte
    data[at] = 3 | 3 << 4
    with pytest.raises(VlaeError, match="corrupt header"):
        codec.decode(bytes(data))


def test_z_only_lossy_keeps_an_opaque_alpha_and_refuses_any_other(codec, rgba):
    opaque = rgba.copy()
    opaque[..., 3] = 255
    out = codec.decode(codec.encode_lossy([opaque]))
    assert out.shape == opaque.shape and (out[..., 3] == 255).all()
    with pytest.raises(VlaeError, match="alpha"):
        codec.encode_lossy([rgba])


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_cli_png_with_alpha_comes_back_the_same(tmp_path, model_path, rgba, mode):
    src, vlae, back = tmp_path / "a.png", tmp_path / "a.vlae", tmp_path / "b.png"
    if mode == "P":   # a palette with one transparent entry: decoded as RGBA
        im = Image.fromarray(np.ascontiguousarray(rgba[..., :3])).quantize(8)
        im.save(src, transparency=0)
        with Image.open(src) as saved:
            expect = np.asarray(saved.convert("RGBA"))
    else:
        expect = rgba if mode == "RGBA" else np.ascontiguousarray(rgba[..., 2:])
        Image.fromarray(expect, mode).save(src)
    assert run_cli("encode", str(src), "-o", str(vlae), "--model", model_path).returncode == 0
    r = run_cli("decode", str(vlae), "-o", str(back), "--model", model_path)
    assert r.returncode == 0, r.stderr
    with Image.open(back) as im:
        assert im.mode == ("LA" if mode == "LA" else "RGBA")
        assert np.array_equal(np.asarray(im), expect)


def test_pillow_saves_and_opens_rgba(tmp_path, rgba):
    buf = io.BytesIO()
    opaque = rgba.copy()
    opaque[..., 3] = 255
    Image.fromarray(opaque, "RGBA").save(buf, format="VLAE")
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.asarray(im), opaque)
