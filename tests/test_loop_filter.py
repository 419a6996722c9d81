"""The lossy files' loop filter: exact at the decoder, fitted at the encoder, worth its bits."""
import numpy as np
import pytest

from vlaecodec import loop_filter as lf
from vlaecodec.errors import VlaeError
from vlaecodec.fileformat import unpack


@pytest.fixture(scope="module")
def pair():
    """A photo crop and a degraded copy of it: blurred, with a colour cast."""
    from PIL import Image, ImageFilter
    img = Image.open("samples/kodim23_crop.png").convert("RGB")
    target = np.asarray(img)[:96, :128]
    blurred = np.asarray(Image.fromarray(target).filter(ImageFilter.BoxBlur(1))).astype(int)
    return target, np.clip(blurred + [4, -3, 0], 0, 255).astype(np.uint8)


def test_coarser_classes_are_unions_of_the_finest(pair):
    """choose() adds up the finest classes' sums for every coarser choice: that holds only if
    each coarser class is exactly a union of finest ones."""
    _, pic = pair
    fa, fb = 8, 2
    fine = lf.classes(pic, (fa, fb))
    for ka, kb in lf.CLASS_CHOICES[1:]:
        coarse = (fine // fb) // (fa // ka) * kb + (fine % fb) // (fb // kb)
        assert np.array_equal(lf.classes(pic, (ka, kb)), coarse), (ka, kb)


@pytest.mark.parametrize("kind", [0, 1])
@pytest.mark.parametrize("shape", [(4, 2), (1, 1)])
def test_the_filter_is_integer_arithmetic(pair, kind, shape):
    """apply() runs its sums in floats for BLAS: with the largest coefficients a file can
    hold (float64 sums), it must still give what exact integer arithmetic gives (one class or
    several)."""
    _, pic = pair
    rng = np.random.default_rng(1)
    big = 8 * lf.RADIUS      # the largest a file can make: eight coded differences at their limit
    q = rng.integers(-big, big + 1, (shape[0] * shape[1], lf.n_features(3, kind), 3))
    F = lf.features(pic, kind=kind).astype(np.int64)
    cls = lf.classes(pic, shape)
    corr = np.einsum("nf,nfc->nc", F, q[cls])
    want = np.clip(pic.reshape(-1, 3) + ((corr + (1 << (lf.SHIFT - 1))) >> lf.SHIFT), 0, 255)
    assert np.array_equal(lf.apply(pic, q, shape, kind=kind).reshape(-1, 3), want)


@pytest.mark.parametrize("kind", [0, 1])
def test_float32_sums_are_exact_up_to_their_bound(kind):
    """Fitted coefficients are small, so apply() sums in float32 where no sum can reach
    2**24: at the largest coefficients that allows, on a picture whose
    features reach their bounds (dark pixels alone among bright ones), it must still give
    exact integer arithmetic's result, and one step over, it must take float64."""
    pic = np.full((9, 11, 3), 255, np.uint8)
    pic[2::4, 3::5] = 0
    bound = lf.feature_bounds(3, kind)
    top = (2 ** 24 - 1) // int(bound.sum())
    signs = (-1) ** np.arange(lf.n_features(3, kind))[None, :, None]   # sums that need not saturate
    q = top * signs * np.ones((1, 1, 3), np.int64)
    assert lf._exact_dtype(q, 3, kind) is np.float32
    # every filter the encoder fits (each coefficient within +-LIMIT) sums in float32
    assert lf._exact_dtype(np.full((8, lf.n_features(3, kind), 3), lf.LIMIT), 3, kind) is np.float32
    q_over = q.copy()
    q_over[0, 0, 0] += 2 ** 24 // int(bound[0])
    assert lf._exact_dtype(q_over, 3, kind) is np.float64
    F = lf.features(pic, kind=kind).astype(np.int64)
    assert np.array_equal(np.abs(F).max(axis=0), bound)      # the bounds are reached
    for coeffs in (q, q_over, -q):
        corr = F @ coeffs[0]
        want = np.clip(pic.reshape(-1, 3) + ((corr + (1 << (lf.SHIFT - 1))) >> lf.SHIFT), 0, 255)
        assert np.array_equal(lf.apply(pic, coeffs, (1, 1), kind=kind).reshape(-1, 3), want)


@pytest.mark.parametrize("kind", [0, 1])
def test_features_are_what_the_format_says(kind):
    """docs/FORMAT.md's definition, pixel by pixel, on a small picture with strong edges:
    kind 0 clips at 8; kind 1 at 1, 4, 16 and 64, each direction's four side by side."""
    pic = np.random.default_rng(3).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    H, W, C = pic.shape
    P = pic.astype(int)
    at = lambda y, x: P[min(max(y, 0), H - 1), min(max(x, 0), W - 1)]  # noqa: E731 (edges repeat)
    want = []
    for y in range(H):
        for x in range(W):
            row = []
            for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0)):
                for t in ((8,), (1, 4, 16, 64))[kind]:
                    row += list(np.clip(at(y + dy, x + dx) - P[y, x], -t, t) + np.clip(at(y - dy, x - dx) - P[y, x], -t, t))
            want.append(row + list(P[y, x] - 128) + [128])
    assert np.array_equal(lf.features(pic, kind=kind), np.array(want))


@pytest.mark.parametrize("kind", [0, 1])
def test_coefficients_survive_their_coding(kind):
    rng = np.random.default_rng(2)
    for ka, kb in lf.CLASS_CHOICES[1:]:
        for C in (1, 3):
            q = rng.integers(-lf.LIMIT, lf.LIMIT + 1, (ka * kb, lf.n_features(C, kind), C))
            symbols = lf.to_symbols(q, (ka, kb))
            assert np.abs(symbols).max() <= lf.RADIUS
            assert np.array_equal(lf.from_symbols(symbols, (ka, kb), C, kind), q)


@pytest.mark.parametrize("kind", [0, 1])
def test_banded_features_equal_the_whole_pictures(pair, kind):
    _, pic = pair
    H, W, _ = pic.shape
    whole = lf.features(pic, kind=kind)
    for y0, y1 in [(0, 1), (0, 5), (40, 41), (90, 96)]:
        assert np.array_equal(lf.features(pic, (y0, y1), kind), whole[y0 * W:y1 * W])


@pytest.mark.parametrize("kinds", [(0,), (1,), (0, 1)])
def test_the_fitted_filter_undoes_blur_and_cast(pair, kinds):
    target, pic = pair
    kind, choice, q = lf.choose(pic, target, beta=10.0, kinds=kinds)   # a small picture: its many coefficients must pay
    assert choice > 0 and kind in kinds and q.shape[1] == lf.n_features(3, kind)
    mse = lambda a: np.mean((a.astype(int) - target.astype(int)) ** 2)  # noqa: E731
    assert mse(lf.apply(pic, q, lf.CLASS_CHOICES[choice], kind=kind)) < 0.7 * mse(pic)


def test_a_filter_not_worth_its_bits_is_not_sent(pair):
    target, _ = pair
    _, choice, q = lf.choose(target, target, beta=100.0, kinds=lf.KINDS)   # nothing to correct
    assert choice == 0 and q.size == 0


def test_lossy_files_carry_a_filter_that_pays():
    """On a real photo (a 256x384 crop of a Kodak image), the filtered file's picture is
    closer to the image than the same file's without the filter, for a few more bytes; both
    decode with no flag."""
    from vlaecodec import data as D
    from vlaecodec.lossy_coder import load_lossy_coder
    target = np.ascontiguousarray(D.load_dataset("kodak", 1)[0][128:384, 192:576])
    plain, filtered = load_lossy_coder("lossy", loop_filter=False), load_lossy_coder("lossy")
    for beta in (229.0, 35.0):
        a, b = plain.encode([target], beta), filtered.encode([target], beta)
        assert not unpack(a)[0].filtered and unpack(b)[0].filtered and unpack(b)[0].filter_kinds == len(lf.KINDS)
        mse = lambda data: np.mean((filtered.decode(data)[0].astype(int) - target.astype(int)) ** 2)  # noqa: E731
        assert mse(b) < mse(a)
        assert len(b) < 1.1 * len(a)


def test_the_filter_flag_on_a_lossless_file_is_a_corrupt_header():
    from vlaecodec import api
    from vlaecodec.fileformat import FLAG_FILTERED
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    data = bytearray(api.encode(img, model="fast"))
    data[5] |= FLAG_FILTERED << 4
    import zlib
    header = unpack(api.encode(img, model="fast"))[0]
    end = header.size
    data[end - 4:end] = zlib.crc32(bytes(data[:end - 4])).to_bytes(4, "little")
    with pytest.raises(VlaeError, match="flags"):
        unpack(bytes(data))


def test_filtered_files_decode_the_same_in_another_process_with_two_threads(tmp_path):
    import subprocess
    import sys

    from vlaecodec import data as D
    from vlaecodec.lossy_coder import load_lossy_coder
    target = np.ascontiguousarray(D.load_dataset("kodak", 1)[0][128:384, 192:576])
    coder = load_lossy_coder("lossy")
    data = coder.encode([target], 100.0)
    assert len(data) > len(load_lossy_coder("lossy", loop_filter=False).encode([target], 100.0))  # coefficients sent
    (tmp_path / "a.vlae").write_bytes(data)
    script = f"""
import numpy as np
from vlaecodec.lossy_coder import load_lossy_coder
np.save(r"{tmp_path / 'out.npy'}", load_lossy_coder("lossy", threads=2).decode(open(r"{tmp_path / 'a.vlae'}", "rb").read())[0])
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    assert np.array_equal(np.load(tmp_path / "out.npy"), coder.decode(data)[0])


def test_a_target_rate_gets_a_filtered_file_near_the_target():
    from vlaecodec import data as D
    from vlaecodec.lossy_coder import load_lossy_coder
    target = np.ascontiguousarray(D.load_dataset("kodak", 1)[0][128:384, 192:576])
    data, _ = load_lossy_coder("lossy").encode_to_rate([target], 0.5)
    assert unpack(data)[0].filtered
    assert abs(len(data) * 8 / (256 * 384) / 0.5 - 1) <= 0.1


def test_the_wide_filter_bit_is_read_by_mode():
    """Bit 6 of the mode byte is the residuals flag of a lossless file and says, in a lossy
    file, that each picture's filter names its kind; a lossy file without filters may not
    set it."""
    import zlib

    from vlaecodec import api
    from vlaecodec.fileformat import FLAG_FILTER_KINDS
    from vlaecodec.lossy_coder import load_lossy_coder
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lossless = unpack(api.encode(img[:8, :8], model="fast"))[0]
    assert lossless.residuals and lossless.filter_kinds == 1
    plain = load_lossy_coder("lossy", loop_filter=False).encode([img], 100.0)
    header = unpack(plain)[0]
    assert not header.filtered and header.filter_kinds == 1
    data = bytearray(plain)
    data[5] |= FLAG_FILTER_KINDS << 4
    data[header.size - 4:header.size] = zlib.crc32(bytes(data[:header.size - 4])).to_bytes(4, "little")
    with pytest.raises(VlaeError, match="flags"):
        unpack(bytes(data))
