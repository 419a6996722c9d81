"""The version 4 coder: the rANS stack and the pixel coder that pops from the network's CDF."""
import numpy as np
import pytest
from conftest import tiny_model

from vlaecodec.codec import Codec
from vlaecodec.pixels import Bins
from vlaecodec.rans import PRECISION, AnsStack, quantized_cdf
from vlaecodec.wave_coder import WaveCoder


def random_cdf(rng, n, m):
    masses = rng.integers(0, 1000, (n, m))
    masses[:, rng.integers(0, m)] += 1          # no row without mass
    masses[rng.random((n, m)) < 0.5] = 0         # many symbols of mass 0
    masses[:, 0] += (masses.sum(axis=1) == 0)
    cum = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(masses, axis=1)], axis=1)
    total = int(cum[:, -1].max())
    return quantized_cdf(cum * total // cum[:, -1:], total)


def test_quantized_cdf_gives_every_symbol_a_slot(rng):
    cdf = random_cdf(rng, 50, 300)
    assert (cdf[:, 0] == 0).all() and (cdf[:, -1] == 1 << PRECISION).all()
    assert (np.diff(cdf, axis=1) >= 1).all()
    with pytest.raises(ValueError):
        quantized_cdf(np.array([[0, 1 << 40]]), 1 << 40)   # total * 2**24 would overflow int64


@pytest.mark.parametrize("m", [2, 17, 256])
def test_stack_round_trips_and_costs_what_the_model_says(rng, m):
    """Pushes and pops in the bits-back pattern (pop from a fresh stack first), exact, and the
    payload within three words of the ideal code length (the state and rounding)."""
    n = 3000
    cdf = random_cdf(rng, n, m)
    p = np.diff(cdf, axis=1) / (1 << PRECISION)
    symbols = np.array([rng.choice(m, p=row) for row in p])
    enc = AnsStack()
    borrowed = enc.pop_uniform(7, 8)
    enc.push_rows(symbols, cdf)
    enc.push_uniform(borrowed, 8)
    words = enc.compressed()
    ideal = -np.log2(p[np.arange(n), symbols]).sum() + 7 * 8 - 7 * 8   # the borrowed bits come back
    assert 32 * len(words) <= ideal + 3 * 32

    dec = AnsStack(words)
    assert np.array_equal(dec.pop_uniform(7, 8), borrowed)
    assert np.array_equal(dec.pop_rows(cdf), symbols)
    dec.push_uniform(borrowed, 8)
    assert dec.is_empty()


def test_a_payload_without_its_state_is_refused():
    with pytest.raises(ValueError):
        AnsStack(np.array([], np.uint32))
    with pytest.raises(ValueError):
        AnsStack(np.array([0, 0xFFFFFFFF], np.uint32))    # a state above 2**63


@pytest.mark.parametrize("max_error", [0, 3])
def test_the_integer_cdf_gives_the_tables_probabilities(max_error, rng):
    """The network's part of version 4's intervals is the network's probabilities (the float
    tables of version 3), up to the shift of the integer CDF."""
    codec = Codec(tiny_model(), "ab" * 32)
    pixels = codec.pixels
    img = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    x = codec.posterior.image(img)
    bins = Bins(max_error, 256)
    x = bins.value(bins.index(x))
    u_pad = pixels.padded_input(x)
    zc = codec.cfg.z_channels
    zhalf = pixels.features(rng.normal(0, 4096, zc * 9).round(), list(range(zc)), (3, 3))
    waves = codec.bands.waves
    from vlaecodec.wave_coder import _network_edges, wave_sizes
    sizes = wave_sizes(9, 11, waves.lag)
    edges = np.empty((3 * sizes.sum(), 3), np.int64)
    _network_edges(0, len(sizes), 9, 11, waves.lag, 0, u_pad, pixels.kernel._channels_last(zhalf),
                   np.ascontiguousarray(x), waves.trunk_w, waves.head_w, waves.cdf, bins.width, edges)
    # the same subpixels through the float tables, in the decoder's order
    want = []
    for ys, xs in pixels.schedule(9, 11):
        rows = pixels.kernel.tables(u_pad, zhalf, ys, xs, 0, np.ascontiguousarray(x[:, ys, xs].T))
        for c in range(3):
            probs = bins.masses(rows[c])
            want.append(probs[np.arange(len(ys)), bins.index(x[c, ys, xs])])
    want = np.concatenate(want)
    got = (edges[:, 1] - edges[:, 0]) / edges[:, 2]
    assert np.allclose(got, want, rtol=1e-3, atol=1e-6)


def test_version_4_files_are_no_larger_than_version_3(rng):
    codec = Codec(tiny_model(), "ab" * 32)
    img = np.sort(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), axis=1)
    v3, v4 = codec.encode(img, version=3), codec.encode(img, version=4)
    assert v3[4] == 3 and v4[4] == 4
    assert len(v4) <= len(v3) * 1.01 + 8
    assert np.array_equal(codec.decode(v4), img) and np.array_equal(codec.decode(v3), img)


def test_the_pixel_coder_is_configured_from_the_network():
    codec = Codec(tiny_model(), "ab" * 32)
    waves = codec.bands.waves
    assert isinstance(waves, WaveCoder)
    assert waves.lag == codec.pixels.lag
