"""The Pillow plugin: .vlae files open and save through PIL.Image like any other format, with
the codec's guarantees (lossless exact, near-lossless within its bound) and one-line errors."""
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import vlaecodec  # noqa: F401 - registers the plugin
from vlaecodec.errors import VlaeError
from vlaecodec.fileformat import pack, unpack
from vlaecodec.pillow_plugin import VlaeImageError


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (10, 13, 3), dtype=np.uint8)


def saved(path, arr, **params):
    Image.fromarray(arr).save(path, **params)
    return path


def test_import_registers_without_loading_the_codec():
    code = ("import sys, vlaecodec; from PIL import Image; "
            "assert Image.registered_extensions()['.vlae'] == 'VLAE'; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_lossless_round_trip_is_exact(tmp_path, rgb):
    path = saved(tmp_path / "a.vlae", rgb)
    with Image.open(path) as im:
        assert (im.format, im.size, im.mode) == ("VLAE", (13, 10), "RGB")
        assert im.info["vlae_mode"] == "lossless" and im.n_frames == 1 and not im.is_animated
        assert np.array_equal(np.asarray(im), rgb)
    grey = rgb[..., 0]
    with Image.open(saved(tmp_path / "g.vlae", grey)) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), grey)


def test_near_lossless_respects_its_bound(tmp_path, rgb):
    with Image.open(saved(tmp_path / "n.vlae", rgb, max_error=2)) as im:
        assert im.info["vlae_mode"] == "near-lossless" and im.info["max_error"] == 2
        assert np.abs(np.asarray(im).astype(int) - rgb).max() <= 2


def test_lossy_files_of_both_kinds_decode_to_the_image_shape(tmp_path, rgb):
    # the lossy (hyperprior) model by default, its rate dial as beta, named back in info
    with Image.open(saved(tmp_path / "l.vlae", rgb, lossy=True, beta=200.0)) as im:
        assert im.info["vlae_mode"] == "lossy" and im.info["beta"] == 200.0
        assert (im.size, im.mode) == ((13, 10), "RGB") and np.asarray(im).shape == rgb.shape
    # a VLAE model keeps z only: smaller than the lossless file of the same image
    zonly = saved(tmp_path / "z.vlae", rgb, lossy=True, model="default", recon="mode")
    with Image.open(zonly) as im:
        assert im.info["vlae_mode"] == "lossy" and np.asarray(im).shape == rgb.shape
    assert zonly.stat().st_size < saved(tmp_path / "a.vlae", rgb).stat().st_size


def test_file_objects_and_palette_images(rgb):
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    buf = io.BytesIO()
    pal.save(buf, format="VLAE")  # widened to RGB, no pixel changes
    buf.seek(0)
    with Image.open(buf) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), np.asarray(pal.convert("RGB")))


def test_archive_opens_as_frames(tmp_path, rgb):
    grey, small = rgb[..., 1], rgb[:4, :5]
    path = tmp_path / "set.vlae"
    Image.fromarray(rgb).save(path, save_all=True, append_images=[Image.fromarray(grey), Image.fromarray(small)])
    with Image.open(path) as im:
        assert im.n_frames == 3 and im.is_animated
        for k, want in [(2, small), (0, rgb), (1, grey)]:  # any order: decoded once, then kept
            im.seek(k)
            assert im.tell() == k and im.size == (want.shape[1], want.shape[0])
            assert np.array_equal(np.asarray(im), want)
        with pytest.raises(EOFError):
            im.seek(3)


def test_other_files_are_not_claimed(tmp_path, rgb):
    png = saved(tmp_path / "really-a-png.vlae", rgb, format="PNG")
    with Image.open(png) as im:
        assert im.format == "PNG"
    (tmp_path / "junk.vlae").write_bytes(b"this is no image at all")
    with pytest.raises(UnidentifiedImageError) as e:
        Image.open(tmp_path / "junk.vlae")
    assert not isinstance(e.value, VlaeError)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, rgb):
    return saved(tmp_path_factory.mktemp("pil") / "ok.vlae", rgb).read_bytes()


def _unknown_model(data):
    header, words = unpack(data)
    header.model_id = "00" * 8
    return pack(header, words)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:30], "truncated file"),
    (lambda d: d[:-4], "truncated file"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
    (lambda d: d[:9] + bytes([d[9] ^ 1]) + d[10:], "corrupt header"),
    (_unknown_model, "not in the zoo"),
], ids=["header-cut", "payload-cut", "payload-bit", "header-bit", "unknown-model"])
def test_bad_files_fail_with_one_clean_error(good_file, damage, message):
    # at open when the header is bad, at load when only the payload is; always an OSError too
    with pytest.raises(VlaeImageError, match=message) as e:
        with Image.open(io.BytesIO(damage(good_file))) as im:
            im.load()
    assert isinstance(e.value, OSError) and isinstance(e.value, VlaeError)


def test_save_refuses_what_it_cannot_code_and_leaves_no_file(tmp_path, rgb):
    with pytest.raises(VlaeImageError, match="mode I;16"):
        saved(tmp_path / "x.vlae", np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="exclude"):
        saved(tmp_path / "x.vlae", rgb, lossy=True, max_error=1)
    with pytest.raises(ValueError, match="lossy"):
        saved(tmp_path / "x.vlae", rgb, target_bpp=1.0)
    with pytest.raises(VlaeImageError, match="no model 'nope'"):
        saved(tmp_path / "x.vlae", rgb, model="nope")
    with pytest.raises(ValueError, match="effort"):
        saved(tmp_path / "x.vlae", rgb, effort=5)
    assert not (tmp_path / "x.vlae").exists()


def test_effort_2_saves_as_the_api_does(tmp_path, rgb):
    from vlaecodec import api
    path = saved(tmp_path / "e.vlae", rgb, effort=2)
    assert path.read_bytes() == api.encode(rgb, effort=2)
    lossy = saved(tmp_path / "l.vlae", rgb, lossy=True, beta=100.0, effort=2)
    assert lossy.read_bytes() == api.encode_lossy([rgb], beta=100.0, effort=2)
    with Image.open(lossy) as im:
        assert np.asarray(im).shape == rgb.shape
