"""Near-lossless bound, lossy (z only) and preview decodes: deterministic, across processes."""
import io

import numpy as np
import pytest
from conftest import ROOT, run_cli, tiny_model
from PIL import Image

from vlaecodec.codec import Codec
from vlaecodec.fileformat import unpack_header
from vlaecodec.pixels import Bins


@pytest.fixture(scope="module", params=["categorical", "logistic"])
def codec(request):
    return Codec(tiny_model(likelihood=request.param), "ab" * 32, z_bits=6)


def kodak_crop(size=24):
    img = np.asarray(Image.open(ROOT / "samples" / "kodim23_crop.png").convert("RGB"))
    return np.ascontiguousarray(img[40:40 + size, 50:50 + size])


def max_abs_error(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("d", range(1, 9))
def test_near_lossless_bound_on_random_and_real_images(codec, rng, d):
    images = [rng.integers(0, 256, (13, 11, 3), dtype=np.uint8),
              rng.integers(0, 256, (9, 20, 1), dtype=np.uint8), kodak_crop()]
    out = codec.decode_many(codec.encode_many(images, max_error=d))
    for a, b in zip(out, images):
        assert a.shape == b.shape and max_abs_error(a, b) <= d
    single = codec.decode(codec.encode(images[2], max_error=d))
    assert np.array_equal(single, out[2])  # the same reconstruction alone or in an archive


def test_near_lossless_bins_cover_every_value():
    for d in range(65):
        b = Bins(d, 256)
        v = np.arange(256)
        assert np.abs(b.value(b.index(v)) - v).max() <= d
        assert b.index(v).max() == len(b.centers) - 1


def test_near_lossless_with_the_default_model_shrinks_with_d():
    from vlaecodec.api import load_codec
    codec, img = load_codec("default"), kodak_crop(32)
    sizes = []
    for d in (0, 1, 4, 8):
        data = codec.encode(img, max_error=d)
        assert max_abs_error(codec.decode(data), img) <= d
        sizes.append(len(data))
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 1.5


@pytest.mark.parametrize("recon", ["mean", "mode", "sample"])
def test_lossy_decodes_the_same_pixels_every_time(codec, recon):
    img = kodak_crop()
    data = codec.encode_lossy([img], recon=recon, seed=7)
    assert unpack_header(data)[0].mode == 2
    first = codec.decode(data)
    assert first.shape == img.shape and np.array_equal(codec.decode(data), first)


def test_lossy_with_no_latent_bits_is_just_a_header(codec):
    img = kodak_crop()
    data = codec.encode_lossy([img], extra_bits=-8)
    header, offset = unpack_header(data)
    assert header.active == [] and len(data) == offset
    assert codec.decode(data).shape == img.shape


def test_finer_latent_bins_cost_more(codec):
    img = kodak_crop()
    assert len(codec.encode_lossy([img], extra_bits=3)) > len(codec.encode_lossy([img]))


def z_layer_words(header) -> int:
    """How many payload words the z layer fills, from the header alone (docs/FORMAT.md): one
    symbol of z_bits bits per coded latent of every band of every image.  The ANS stack is
    read from the payload's end: the z layer, pushed last, is the last of its words, behind
    the coder's 64-bit state (two words).  Version 3 files send no z for the very last band."""
    latents = 0
    for i, im in enumerate(header.images):
        last = i == len(header.images) - 1
        bands = header.bands if last and header.bands else [im.height]
        if last and header.version >= 3:
            bands = bands[:-1]
        for rows in bands:
            latents += len(header.active) * -(-rows // 4) * -(-im.width // 4)
    return -(-latents * header.z_bits // 32) + 2


@pytest.mark.parametrize("max_error", [0, 2])
def test_preview_needs_no_pixel_bits(max_error):
    """The z layer comes first: with every pixel word cut away, or turned to garbage, the
    preview is the same, while the full decode of that file fails."""
    import vlaecodec.api as api
    from vlaecodec.errors import VlaeError
    from vlaecodec.fileformat import pack, unpack
    images = [kodak_crop(), np.random.default_rng(0).integers(0, 256, (40, 12, 1), dtype=np.uint8)]
    data = api.encode_many(images, max_error=max_error)
    previews = api.decode_many(data, preview=True)
    assert [p.shape for p in previews] == [i.shape for i in images]
    header, words = unpack(data)
    z_words = z_layer_words(header)
    assert z_words < len(words) / 4  # most of the payload is pixels
    garbage = words.copy()
    garbage[:-z_words] = np.random.default_rng(1).integers(0, 2 ** 32, len(words) - z_words, dtype=np.uint32)
    for pixels_gone in (pack(header, words[-z_words:]), pack(header, garbage)):
        assert all(np.array_equal(a, b) for a, b in zip(api.decode_many(pixels_gone, preview=True), previews))
        with pytest.raises(VlaeError):
            api.decode_many(pixels_gone)
    # two words fewer: the z layer itself is cut (the coder's state holds 32 to 64 bits, so
    # the count above may be a word more than the layer fills)
    cut_into_z = pack(header, words[2 - z_words:])
    assert not all(np.array_equal(a, b) for a, b in zip(api.decode_many(cut_into_z, preview=True), previews))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float(10 * np.log10(255 ** 2 / mse))


def test_z_only_pictures_resemble_the_image():
    """The z-only pictures of the default model on the bundled photo crop (128x128): the lossy
    file decodes at 12.96 dB and the preview of a lossless file at 11.98 dB.  A floor of 10 dB
    fails black (4.1 dB), white (6.7), uniform noise (8.7), the negative (6.9) and every flat
    grey outside 90..210.  It cannot fail every flat picture: the crop's mean colour scores
    13.96 dB, better than these pictures (z holds little more than the colour layout)."""
    import vlaecodec.api as api
    img = np.asarray(Image.open(ROOT / "samples" / "kodim23_crop.png").convert("RGB"))
    lossy = api.decode(api.encode_lossy([img], model="default"))  # z only (a VLAE model)
    preview = api.decode(api.encode(img, model="default"), preview=True)
    assert lossy.shape == preview.shape == img.shape
    assert psnr(lossy, img) > 10 and psnr(preview, img) > 10


def _png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_lossy_and_preview_are_the_same_in_another_process(model_path, tmp_path):
    from vlaecodec.api import load_codec
    codec = load_codec(model_path)
    img = kodak_crop(20)
    for name, data, flags in [("lossy", codec.encode_lossy([img], recon="sample", seed=3), []),
                              ("lossless", codec.encode(img), ["--preview"])]:
        f = tmp_path / f"{name}.vlae"
        f.write_bytes(data)
        here = codec.decode(data, preview=bool(flags))
        for threads in ("1", "2"):
            r = run_cli("decode", str(f), "-o", "-", "--model", model_path, "--threads", threads, *flags)
            assert r.returncode == 0, r.stderr
            assert np.array_equal(_png_pixels(r.stdout), here)


def test_cli_modes(model_path, tmp_path):
    src = tmp_path / "in.png"
    img = kodak_crop(16)
    Image.fromarray(img).save(src)
    near, lossy = tmp_path / "near.vlae", tmp_path / "lossy.vlae"
    assert run_cli("encode", str(src), "-o", str(near), "--model", model_path, "--max-error", "3").returncode == 0
    assert run_cli("encode", str(src), "-o", str(lossy), "--model", model_path, "--lossy").returncode == 0
    for f, mode in [(near, "near-lossless"), (lossy, "lossy")]:
        r = run_cli("info", str(f), "--json")
        assert f'"mode": "{mode}"' in r.stdout.decode()
        out = tmp_path / f"{mode}.png"
        r = run_cli("decode", str(f), "-o", str(out), "--model", model_path)
        assert r.returncode == 0, r.stderr
    assert max_abs_error(np.asarray(Image.open(tmp_path / "near-lossless.png")), img) <= 3
    bad = run_cli("encode", str(src), "-o", str(tmp_path / "x.vlae"), "--lossy", "--max-error", "2")
    assert bad.returncode != 0 and b"exclude" in bad.stderr
    bad = run_cli("encode", str(src), "-o", str(tmp_path / "x.vlae"), "--beta", "1234")
    assert bad.returncode == 1 and b"no model trained at beta 1234" in bad.stderr
    assert len(bad.stderr.decode().strip().splitlines()) == 1
    assert not (tmp_path / "x.vlae").exists()
