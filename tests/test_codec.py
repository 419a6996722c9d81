"""Lossless round trips, bit-exact, on odd sizes, grey and RGB, single files and archives."""
import numpy as np
import pytest
from conftest import tiny_model

from vlaecodec.bands import BandChain
from vlaecodec.codec import Codec, CodingStats
from vlaecodec.errors import VlaeError


@pytest.fixture(scope="module", params=["categorical", "logistic"])
def codec(request):
    return Codec(tiny_model(likelihood=request.param), "ab" * 32, z_bits=6)


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (33, 17), (3, 1000), (8, 8)])
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_odd_sizes(codec, shape, channels, rng):
    img = rng.integers(0, 256, (*shape, channels), dtype=np.uint8)
    out = codec.decode(codec.encode(img))
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.array_equal(out, img)


def test_smooth_image_round_trip(codec):
    yy, xx = np.mgrid[0:24, 0:20]
    img = np.stack([(yy * 9) % 256, (xx * 11) % 256, (yy + xx) % 256], -1).astype(np.uint8)
    assert np.array_equal(codec.decode(codec.encode(img)), img)


def test_archive_chains_images(codec, rng):
    images = [rng.integers(0, 256, (h, w, c), dtype=np.uint8)
              for h, w, c in [(8, 8, 3), (5, 9, 1), (16, 4, 3), (1, 1, 3)]]
    stats = CodingStats()
    data = codec.encode_many(images, stats)
    assert stats.bits_back > 0  # every image but the last borrowed its z bits
    out = codec.decode_many(data)
    assert len(out) == len(images)
    assert all(np.array_equal(a, b) for a, b in zip(out, images))


def test_wrong_model_is_refused(codec, rng):
    data = codec.encode(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    other = Codec(tiny_model(seed=1), "cd" * 32, z_bits=6)
    with pytest.raises(VlaeError, match="model"):
        other.decode(data)


def test_bad_images_are_refused(codec):
    for bad in [np.zeros((0, 3, 3), np.uint8), np.zeros((3, 3, 5), np.uint8), np.zeros((3, 3, 3), np.uint16)]:
        with pytest.raises(VlaeError):
            codec.encode(bad)


@pytest.mark.parametrize("value", [0, 255, 128])
def test_flat_images_leave_little_to_borrow_but_still_round_trip(codec, value):
    """A flat image compresses to almost nothing, so bits-back borrows from a nearly empty stack."""
    img = np.full((40, 23, 3), value, np.uint8)
    assert np.array_equal(codec.decode(codec.encode(img)), img)
    many = [np.full((4, 4, 1), value, np.uint8)] * 5 + [img]
    out = codec.decode_many(codec.encode_many(many))
    assert all(np.array_equal(a, b) for a, b in zip(out, many))


def test_bands_of_a_tall_image(codec, rng, monkeypatch):
    """The last image is cut into bands sized by the bits below them; the heights are in the header."""
    from vlaecodec.fileformat import unpack_header
    # a small last image is also tried whole with z = 0, which wins with an untrained model
    monkeypatch.setattr(BandChain, "SMALL", 0)
    img = rng.integers(0, 256, (150, 9, 3), dtype=np.uint8)
    data = codec.encode(img)
    bands = unpack_header(data)[0].bands
    assert len(bands) >= 2 and sum(bands) == 150 and bands[-1] == codec.tail
    assert np.array_equal(codec.decode(data), img)
    # in an archive the last image is the one that is cut (the header's bands are its rows):
    # 20 rows are a bottom band of `tail` rows and one band of the 12 rows above it, which the
    # bottom band's pixel bits pay for
    data = codec.encode_many([img, img[:20]])
    assert unpack_header(data)[0].bands == [12, codec.tail]
    assert all(np.array_equal(a, b) for a, b in zip(codec.decode_many(data), [img, img[:20]]))


def test_bands_stay_within_their_pixel_cap(codec, rng, monkeypatch):
    """However many bits the stack holds, no band above the bottom one is larger than
    MAX_BAND_PIXELS (so a large image is coded in bounded pieces), and it still round-trips."""
    from vlaecodec.fileformat import unpack_header
    monkeypatch.setattr(BandChain, "SMALL", 0)
    monkeypatch.setattr(BandChain, "MAX_BAND_PIXELS", 9 * 24)     # 24 rows of 9 pixels
    img = rng.integers(0, 256, (150, 9, 3), dtype=np.uint8)
    data = codec.encode(img)
    bands = unpack_header(data)[0].bands
    assert sum(bands) == 150 and len(bands) >= 150 // 24
    assert max(bands[:-1]) < 24 + 4      # the top band may also take a sliver of under 4 rows
    assert np.array_equal(codec.decode(data), img)


def test_few_pixel_bits_make_more_bands(rng):
    """A nearly flat image leaves few bits to borrow, so its bands stay short (a trained model:
    the tiny untrained one spends bits even on flat images)."""
    from vlaecodec.api import load_codec
    from vlaecodec.fileformat import unpack_header
    codec = load_codec("default")
    img = np.full((160, 40, 3), 128, np.uint8)
    img[rng.random(img.shape[:2]) < 0.02] = 0
    data = codec.encode(img)
    assert len(unpack_header(data)[0].bands) > 3
    assert np.array_equal(codec.decode(data), img)


@pytest.mark.parametrize("version", [3, 4])
def test_latent_chunks_do_not_change_the_file(monkeypatch, version):
    """Posterior tables are made a chunk of latents at a time; the bits must not depend on it."""
    import vlaecodec.payloads as payloads
    codec = Codec(tiny_model(), "ab" * 32)
    img = np.random.default_rng(3).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    whole = codec.encode(img, version=version)
    monkeypatch.setattr(payloads, "LATENT_CHUNK", 7)
    assert codec.encode(img, version=version) == whole
    assert np.array_equal(codec.decode(whole), img)


@pytest.mark.parametrize("version", [3, 4])
def test_decoding_with_threads_gives_the_same_pixels(monkeypatch, version):
    """Waves split between threads: every table is the same, so the file decodes the same."""
    import vlaecodec.pixels as pixels_module
    import vlaecodec.wave_coder as wave_coder
    monkeypatch.setattr(pixels_module, "MIN_ROWS_PER_THREAD", 2)
    monkeypatch.setattr(wave_coder, "MIN_SPLIT", 2)
    codec = Codec(tiny_model(), "ab" * 32)
    img = np.random.default_rng(4).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    data = codec.encode(img, version=version)
    preview = codec.decode(data, preview=True)
    codec = Codec(tiny_model(), "ab" * 32, threads=3)
    assert np.array_equal(codec.decode(data), img)
    assert np.array_equal(codec.decode(data, preview=True), preview)


@pytest.mark.parametrize("version", [3, 4])
def test_encoding_with_threads_gives_the_same_file(monkeypatch, version):
    """Chunks of pixels are tabled in parallel and pushed in order: the same file."""
    import vlaecodec.wave_coder as wave_coder
    monkeypatch.setattr(wave_coder, "ENCODE_CHUNK", 100)
    codec = Codec(tiny_model(), "ab" * 32)
    img = np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    one = codec.encode(img, version=version)
    codec = Codec(tiny_model(), "ab" * 32, threads=2)
    assert codec.encode(img, version=version) == one


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (33, 17), (3, 1000)])
@pytest.mark.parametrize("channels", [1, 3])
def test_shipped_model_round_trips_odd_sizes(shape, channels, rng):
    """The same sizes with the default model that ships (a trained network, real band cuts)."""
    from vlaecodec.api import load_codec
    codec = load_codec("default")
    img = rng.integers(0, 256, (*shape, channels), dtype=np.uint8)
    img = np.sort(img, axis=1)  # some structure, so the model has bits to borrow
    assert np.array_equal(codec.decode(codec.encode(img)), img)


def test_a_local_model_codes_without_z(rng, monkeypatch):
    """latent=False: no z in the file (no active channel), the posterior is never run, the
    z features come from the small grid, and every image still round-trips."""
    from vlaecodec import exact
    from vlaecodec.fileformat import unpack
    from vlaecodec.posterior import Posterior

    codec = Codec(tiny_model(likelihood="logistic", latent=False), "ef" * 32, active_channels=[])

    def never(*args, **kwargs):
        raise AssertionError("a local model needs no posterior")
    monkeypatch.setattr(Posterior, "rows", never)
    whole = exact.ExactVLAE.z_features_half

    def small_only(self, z):     # a 90x70 image has 23x18 latents: only the small grid is run
        assert z.shape[2] <= 11 and z.shape[3] <= 11, z.shape
        return whole(self, z)
    monkeypatch.setattr(exact.ExactVLAE, "z_features_half", small_only)
    images = [rng.integers(0, 256, (90, 70, 3), dtype=np.uint8), rng.integers(0, 256, (5, 9, 3), dtype=np.uint8)]
    data = codec.encode_many(images)
    assert unpack(data)[0].active == []
    assert all(np.array_equal(a, b) for a, b in zip(codec.decode_many(data), images))
    # no z layer: the preview is the full decode; and there is no z-only lossy file to make
    assert all(np.array_equal(a, b) for a, b in zip(codec.decode_many(data, preview=True), images))
    with pytest.raises(VlaeError, match="no latent"):
        codec.encode_lossy(images[:1])
