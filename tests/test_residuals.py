"""The residual histograms (the pixel intervals' second adaptation layer): their integer
bookkeeping, the bits they save where an image is smoother than the network expects, and
files without them still decoding."""
import numpy as np
import pytest
from conftest import tiny_model

from vlaecodec.codec import Codec
from vlaecodec.errors import VlaeError
from vlaecodec.fileformat import FLAG_RESIDUALS, reseal, unpack_header
from vlaecodec.adaptive import log2_table
from vlaecodec.residuals import ACTIVITY, HALVE_ABOVE, SIGNS, Residuals, hist_slot, learn, predict, span


@pytest.fixture(scope="module")
def codec():
    return Codec(tiny_model(likelihood="logistic"), "ef" * 32, z_bits=6)


def _dithered_gradient(h=40, w=56, seed=0):
    """A smooth ramp with one level of noise, like a rendered wallpaper."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2 + yy, 200 - xx - yy, 60 + yy * 2], -1)
    return np.clip(base + rng.integers(0, 2, base.shape), 0, 255).astype(np.uint8)


def test_histogram_slots_are_the_cumulative_counts_through_learning_and_halving():
    rng = np.random.default_rng(1)
    bins = 16
    st = Residuals(1, bins)
    counts = np.ones((st.counts.shape[0], 2 * bins - 1), np.int64)
    log2 = log2_table()
    for step in range(3000):   # enough to halve one context several times
        pred, b = int(rng.integers(0, bins)), int(np.clip(rng.normal(8, 1.5), 0, bins - 1))
        ctx = int(rng.integers(0, 2))
        lo, hsum = span(st.tree, ctx, pred, bins)
        window = counts[ctx, bins - 1 - pred:2 * bins - 1 - pred]     # residuals bins 0 .. bins-1 can have
        assert hsum == window.sum()
        for q in (0, b, bins):
            expect = window[:q].sum() * ((1 << 24) - bins) // window.sum() + q
            assert hist_slot(st.tree, ctx, q, pred, bins, lo, hsum) == expect
        learn(st.counts, st.tree, st.totals, st.lengths, st.seen, log2, ctx, b, pred, bins, 1 << 20, 1 << 20)
        counts[ctx, b - pred + bins - 1] += 16
        if counts[ctx].sum() > HALVE_ABOVE:
            counts[ctx] = (counts[ctx] + 1) >> 1
        assert np.array_equal(st.counts, counts)
    assert st.counts[0].sum() < 2 * HALVE_ABOVE


def test_prediction_is_med_and_context_is_activity():
    x = np.array([[[10, 20, 40], [30, 0, 0]]], np.int64)   # one channel, 2 rows
    # left 30, up 20, up-left 10, up-right 40: l + u - ul = 40, clipped to max(l, u); activity
    # |30 - 10| + |20 - 10| + |40 - 20| = 50 <= 63: class 6
    assert predict(x, 0, 1, 1, 1) == (30, 6 * SIGNS)
    x[0, 0, 2] = 100                                        # activity 110: the top class
    assert predict(x, 0, 1, 1, 1) == (30, 7 * SIGNS)
    assert predict(np.zeros((1, 2, 2), np.int64), 0, 1, 1, 1) == (0, 0)
    assert predict(x * 3, 0, 1, 1, 3) == (30, 7 * SIGNS)    # near-lossless: bins of 3 values
    # channel 1's context: its own activity, and whether channel 0 strayed above its prediction
    two = np.concatenate([x, x]).copy()
    two[0, 1, 1] = 31                                       # channel 0: 1 above its MED, 30
    assert predict(two, 1, 1, 1, 1) == (30, ((ACTIVITY + 7) * SIGNS) + 1)
    two[0, 1, 1] = 29
    assert predict(two, 1, 1, 1, 1)[1] == (ACTIVITY + 7) * SIGNS + 2


def test_new_files_carry_the_flag_and_save_bits_on_a_smooth_image(codec):
    img = _dithered_gradient()
    with_layer = codec.encode(img)
    assert unpack_header(with_layer)[0].residuals
    assert np.array_equal(codec.decode(with_layer), img)
    without = Codec(tiny_model(likelihood="logistic"), "ef" * 32, z_bits=6, residuals=False).encode(img)
    assert not unpack_header(without)[0].residuals        # and it still decodes
    assert np.array_equal(codec.decode(without), img)
    assert len(with_layer) < 0.9 * len(without)


@pytest.mark.parametrize("max_error", [1, 3])
def test_near_lossless_with_the_layer_keeps_its_bound(codec, max_error):
    img = _dithered_gradient(seed=2)
    out = codec.decode(codec.encode(img, max_error=max_error))
    assert int(np.abs(out.astype(int) - img).max()) <= max_error


def test_parallel_decode_gives_the_same_pixels():
    img = _dithered_gradient(h=70, w=90, seed=3)
    one = Codec(tiny_model(likelihood="logistic"), "ef" * 32, z_bits=6)
    two = Codec(tiny_model(likelihood="logistic"), "ef" * 32, z_bits=6, threads=2)
    data = one.encode(img)
    assert two.encode(img) == data
    assert np.array_equal(two.decode(data), img)


def test_the_flag_outside_version_4_is_a_corrupt_header(codec):
    data = bytearray(codec.encode(_dithered_gradient(8, 8), version=3))
    data[5] |= FLAG_RESIDUALS << 4
    with pytest.raises(VlaeError, match="corrupt header"):
        unpack_header(reseal(bytes(data)))
