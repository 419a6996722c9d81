"""Version 5 files: a large image cut into stripes, each a version 4 file, coded by threads at once."""
import numpy as np
import pytest
from conftest import tiny_model

from vlaecodec.codec import Codec
from vlaecodec.errors import VlaeError
from vlaecodec.fileformat import RANS_VERSION, STRIPES_VERSION, pack, unpack, unpack_header
from vlaecodec.stripes import MIN_STRIPE_ROWS, split_stripes, stripe_heights

STRIPE_PIXELS = 64   # so that a test image of 260 rows is cut in two


@pytest.fixture(scope="module")
def net():
    return tiny_model(likelihood="logistic")


def codec_of(net, threads=1):
    return Codec(net, "ab" * 32, z_bits=6, threads=threads, stripe_pixels=STRIPE_PIXELS)


def smooth(h, w, c):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(yy * 3 + xx * k) % 256 for k in range(1, c + 1)], -1).astype(np.uint8)


@pytest.mark.parametrize("shape", [(260, 12), (64, 9), (600, 7), (2000, 3)])
def test_stripe_heights_cover_the_image_in_a_power_of_two_of_stripes(shape):
    h, w = shape
    heights = stripe_heights(h, w, STRIPE_PIXELS)
    n = len(heights)
    assert sum(heights) == h and n & (n - 1) == 0
    assert all(r % 4 == 0 for r in heights[:-1])
    assert n == 1 or min(heights) >= MIN_STRIPE_ROWS - 4


@pytest.mark.parametrize("channels, max_error", [(3, 0), (1, 2), (4, 0)])
def test_a_large_image_is_cut_into_stripes_and_round_trips(net, channels, max_error):
    img = smooth(260, 12, channels)
    if channels == 4:
        img[..., 3] = 255       # an opaque alpha: not coded, stripes as for RGB
    data = codec_of(net).encode(img, max_error=max_error)
    header, words = unpack(data)
    assert header.version == STRIPES_VERSION and header.bands == stripe_heights(260, 12, STRIPE_PIXELS)
    parts = split_stripes(header, words.tobytes())
    assert [unpack_header(p)[0].version for p in parts] == [RANS_VERSION] * len(header.bands)
    out = codec_of(net).decode(data)
    assert out.shape == img.shape
    assert int(np.abs(out.astype(int) - img.astype(int)).max()) <= max_error


def test_stripes_make_the_same_bytes_on_any_number_of_threads(net):
    img = smooth(260, 12, 3)
    one, two = codec_of(net, 1).encode(img), codec_of(net, 2).encode(img)
    assert one == two
    assert np.array_equal(codec_of(net, 2).decode(one), img)


def test_version_4_when_asked_for_and_for_small_images(net):
    img = smooth(260, 12, 3)
    four = codec_of(net).encode(img, version=RANS_VERSION)
    assert unpack_header(four)[0].version == RANS_VERSION
    assert np.array_equal(codec_of(net, 2).decode(four), img)
    small = codec_of(net).encode(smooth(200, 12, 3))
    assert unpack_header(small)[0].version == RANS_VERSION


def test_a_striped_file_has_a_preview(net):
    img = smooth(260, 12, 3)
    preview = codec_of(net, 2).decode_many(codec_of(net).encode(img), preview=True)[0]
    assert preview.shape == img.shape and preview.dtype == np.uint8


def _repacked(data: bytes, bands=None, extra: bytes = b"") -> bytes:
    header, words = unpack(data)
    if bands is not None:
        header.bands = bands
    payload = words.tobytes() + extra
    return pack(header, np.frombuffer(payload, dtype="<u4"))


def test_stripes_that_do_not_match_the_header_are_refused(net):
    codec = codec_of(net)
    data = codec.encode(smooth(260, 12, 3))
    h = unpack_header(data)[0].bands
    for bad in (_repacked(data, bands=h[::-1]),             # heights in another order
                _repacked(data, extra=b"\x01\x00\x00\x00"),  # a word after the last stripe
                _repacked(data, bands=[h[0], h[1] - 10, 10])):   # a stripe too many
        with pytest.raises(VlaeError, match="corrupt"):
            codec.decode(bad)


def test_a_damaged_stripe_is_refused(net):
    codec = codec_of(net)
    data = codec.encode(smooth(260, 12, 3))
    header, words = unpack(data)
    payload = bytearray(words.tobytes())
    payload[-8] ^= 0xFF                                    # inside the second stripe's payload
    bad = pack(header, np.frombuffer(bytes(payload), dtype="<u4"))
    with pytest.raises(VlaeError, match="corrupt"):
        codec.decode(bad)


@pytest.mark.parametrize("alpha, bands", [(1, [8, 8]), (0, [16])])
def test_a_version_5_header_holds_one_image_in_two_or_more_stripes(alpha, bands):
    from vlaecodec.fileformat import Header, ImageInfo
    header = Header(model_id="ab" * 8, z_bits=6, active=[0], images=[ImageInfo(4, 16, 3, alpha)],
                    bands=bands, version=STRIPES_VERSION)
    with pytest.raises(VlaeError, match="version 5"):
        unpack(pack(header, np.zeros(1, np.uint32)))


def test_info_names_the_stripes(net):
    from vlaecodec import api
    rec = api.info(codec_of(net).encode(smooth(260, 12, 3)))
    assert rec["format_version"] == STRIPES_VERSION and rec["stripes"] == 2
