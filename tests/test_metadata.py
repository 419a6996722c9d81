"""ICC profiles, EXIF and XMP: kept in the header beside the pixels, given back on decode, in
every mode; damaged metadata is a clean error; --strip leaves them out."""
import io

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

import vlaecodec.pillow_plugin  # noqa: F401 - registers .vlae with Pillow
from vlaecodec.errors import VlaeError
from vlaecodec.fileformat import Header, ImageInfo, pack, reseal, unpack, unpack_header, with_metadata

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif():
    exif = Image.Exif()
    exif[0x010F] = "A camera maker"
    exif[0x0132] = "2026:11:30 10:00:00"
    return exif


@pytest.fixture
def photo_png(tmp_path, rng):
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>rated 5</x:xmpmeta>")
    p = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)).save(
        p, icc_profile=ICC, exif=_exif(), pnginfo=info)
    return p


def _file(images=1):
    h = Header(model_id="ab" * 8, z_bits=8, active=[0], images=[ImageInfo(3, 2, 1)] * images)
    return pack(h, np.array([1, 2], dtype=np.uint32))


def test_metadata_round_trips_through_the_header_and_leaves_the_payload():
    plain = _file(3)
    data = with_metadata(plain, [{"icc_profile": ICC}, {}, {"exif": b"E" * 40, "xmp": b"<x/>"}])
    header, words = unpack(data)
    assert header.metadata == {0: {"icc_profile": ICC}, 2: {"exif": b"E" * 40, "xmp": b"<x/>"}}
    assert words.tolist() == [1, 2] and data.endswith(plain[-8:])
    assert len(data) < len(plain) + len(ICC)          # stored compressed
    assert with_metadata(data, [{}, {}, {}]) == plain  # and taken out again


@pytest.mark.parametrize("bad", [[{}], [{"thumbnail": b"x"}]], ids=["count", "key"])
def test_bad_metadata_arguments_are_refused(bad):
    with pytest.raises(VlaeError):
        with_metadata(_file(2), bad)


def test_damaged_metadata_is_a_corrupt_header():
    data = bytearray(with_metadata(_file(), [{"icc_profile": ICC}]))
    at = data.index(b"ICCP")
    for damage in (lambda d: d.__setitem__(at, ord("Z")),            # an unknown tag
                   lambda d: d.__setitem__(at + 4, d[at + 4] ^ 1),   # the wrong inflated length
                   lambda d: d.__setitem__(at + 12, d[at + 12] ^ 0xFF)):   # a broken zlib stream
        bad = bytearray(data)
        damage(bad)
        with pytest.raises(VlaeError, match="corrupt header"):
            unpack_header(reseal(bytes(bad)))


def test_cli_keeps_icc_exif_and_xmp_unless_stripped(tmp_path, model_path, photo_png):
    vlae, back = tmp_path / "p.vlae", tmp_path / "back.png"
    assert run_cli("encode", str(photo_png), "-o", str(vlae), "--model", model_path).returncode == 0
    r = run_cli("decode", str(vlae), "-o", str(back), "--model", model_path)
    assert r.returncode == 0, r.stderr
    with Image.open(photo_png) as a, Image.open(back) as b:
        assert b.info["icc_profile"] == ICC
        assert dict(b.getexif()) == dict(a.getexif()) == dict(_exif())
        assert b.info["XML:com.adobe.xmp"] == "<x:xmpmeta>rated 5</x:xmpmeta>"
        assert np.array_equal(np.asarray(a), np.asarray(b))
    stripped = tmp_path / "s.vlae"
    assert run_cli("encode", str(photo_png), "-o", str(stripped), "--model", model_path, "--strip").returncode == 0
    assert unpack_header(stripped.read_bytes())[0].metadata == {}
    assert len(stripped.read_bytes()) < len(vlae.read_bytes())


def test_lossy_files_keep_metadata_too(photo_png):
    from vlaecodec import api
    with Image.open(photo_png) as im:
        img = np.asarray(im)
    data = api.encode_lossy([img], beta=100.0, metadata=[{"icc_profile": ICC}])
    assert api.metadata(data) == [{"icc_profile": ICC}]
    assert api.decode(data).shape == img.shape


def test_pillow_gives_and_keeps_the_profile(photo_png):
    buf = io.BytesIO()
    with Image.open(photo_png) as im:
        im.save(buf, format="VLAE")      # im.info's profile is kept
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.info["icc_profile"] == ICC and im.mode == "RGB"
