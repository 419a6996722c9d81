"""The compiled wave kernels give exactly the numpy path's integers and probability rows."""
import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_model

from vlaecodec.exact import ExactVLAE
from vlaecodec.pixels import PixelCoder, wavefront
from vlaecodec.wave_kernel import WaveKernel


def numpy_path(net, u_pad, zfeat, ys, xs, r0, prev):
    """What the pixel coder computes today: trunk features and every channel's rows."""
    zrows = np.ascontiguousarray(zfeat[:, ys >> 1, xs >> 1].T, dtype=np.float64)
    t = net.trunk_rows(net.context_rows(u_pad, ys + r0, xs, zrows))
    return t, [net.probabilities(c, t, prev if c else None) for c in range(net.cfg.channels)]


def wave_rows(kernel, u_pad, zfeat, ys, xs, r0, prev):
    """What the wave coder's kernels compute a layer at a time for a set of pixels: trunk
    features and every channel's head output."""
    from vlaecodec.wave_kernel import head_rows, trunk_rows
    zf = kernel._channels_last(zfeat)
    t = np.empty((len(ys), zf.shape[2]))
    trunk_rows(u_pad, zf, ys.astype(np.int64), xs.astype(np.int64), r0, kernel.trunk_w, t)
    params = np.zeros((len(ys), kernel.channels, kernel.out_w.shape[2]), np.int64)
    for c in range(kernel.channels):
        head_rows(c, t, np.ascontiguousarray(prev, np.int64), kernel.head_w, params[:, c])
    return t, params


def check(net, x, zfeat, r0=0, rows=None):
    """Every wave of rows [r0, r1) of x [C,H,W]: kernel == numpy path, bit for bit; the
    wave's rows by BLAS == the same rows in int64 (no BLAS) == the numpy path's trunk."""
    coder = PixelCoder(net)
    u_pad = coder.padded_input(x)
    kernel = WaveKernel(net)
    reference = WaveKernel(net, blas=False)
    r1 = x.shape[1] if rows is None else rows
    waves = coder.schedule(r1 - r0, x.shape[2])
    # every wave of a small band; a sample of a large one (first, last, widest, some between)
    if len(waves) > 40:
        waves = waves[:8] + waves[len(waves) // 2 - 4:len(waves) // 2 + 4] + waves[-8:]
    for ys, xs in waves:
        prev = np.ascontiguousarray(x[:, ys + r0, xs].T)
        t_want, p_want = numpy_path(net, u_pad, zfeat, ys, xs, r0, prev)
        t, p0 = kernel.first(u_pad, zfeat, ys, xs, r0)
        assert np.array_equal(t, t_want)                        # same integers
        assert np.array_equal(p0, p_want[0])                    # same float64 rows
        for c in range(1, net.cfg.channels):
            assert np.array_equal(kernel.probabilities(c, t, prev), p_want[c])
        both = kernel.tables(u_pad, zfeat, ys, xs, r0, prev)
        for c in range(net.cfg.channels):
            assert np.array_equal(both[c], p_want[c])
        t_blas, params_blas = wave_rows(kernel, u_pad, zfeat, ys, xs, r0, prev)
        t_int, params_int = wave_rows(reference, u_pad, zfeat, ys, xs, r0, prev)
        assert np.array_equal(t_blas, t_want) and np.array_equal(t_int, t_want)
        assert np.array_equal(params_blas, params_int)


def random_zfeat(net, rng, H, W):
    z = torch.from_numpy(rng.integers(-8000, 8000, (1, net.cfg.z_channels, -(-H // 4), -(-W // 4)))).double()
    return net.z_features_half(z)


@pytest.mark.parametrize("likelihood", ["categorical", "logistic"])
@pytest.mark.parametrize("decoder", ["local", "factorized"])
def test_random_weights(rng, likelihood, decoder):
    net = ExactVLAE.from_module(tiny_model(likelihood=likelihood, decoder=decoder, pixel_blocks=2))
    x = rng.integers(0, 256, (3, 13, 11))
    check(net, x, random_zfeat(net, rng, 13, 11))


def test_random_weights_band_inside_an_image(rng):
    """A band starting at row 5: windows reach into the band above, z features are the band's."""
    net = ExactVLAE.from_module(tiny_model(likelihood="logistic"))
    x = rng.integers(0, 256, (3, 17, 9))
    check(net, x, random_zfeat(net, rng, 12, 9), r0=5, rows=17)


def test_large_weights_and_activations(rng):
    """Weights scaled up (activations hit the +-2**22 clip, layer shifts are small)."""
    model = tiny_model(likelihood="logistic")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(30)
    net = ExactVLAE.from_module(model)
    x = rng.integers(0, 256, (3, 9, 10))
    check(net, x, random_zfeat(net, rng, 9, 10))


@pytest.fixture(scope="module")
def shipped():
    from vlaecodec.zoo import load_model
    model, _ = load_model("default")
    return ExactVLAE.from_module(model)


def kodak_crop(rows, cols):
    from PIL import Image
    img = np.asarray(Image.open(ROOT / "samples" / "kodim23_crop.png").convert("RGB"))
    return np.ascontiguousarray(img[rows, cols].transpose(2, 0, 1)).astype(np.int64)


def posterior_zfeat(net, x):
    from vlaecodec.latents import Latents
    from vlaecodec.posterior import Posterior
    q = Posterior(net)
    mean, _ = q.rows(torch.from_numpy(x), list(range(net.cfg.z_channels)))
    lat = Latents(8)
    H, W = x.shape[1:]
    z = lat.values(lat.mode_bins(mean)).reshape(1, net.cfg.z_channels, -(-H // 4), -(-W // 4))
    return net.z_features_half(z)


@pytest.mark.parametrize("region", [(slice(0, 40), slice(0, 48)), (slice(70, 128), slice(101, 128))])
def test_shipped_model_on_a_real_image(shipped, region):
    """The default model on crops of the bundled sample, edges included (the second one
    ends at the image's right and bottom edges)."""
    x = kodak_crop(*region)
    check(shipped, x, posterior_zfeat(shipped, x))


@pytest.mark.parametrize("value", [0, 128, 255])
def test_shipped_model_on_grey_and_flat_images(shipped, value, rng):
    x = np.full((3, 12, 21), value, np.int64)
    check(shipped, x, posterior_zfeat(shipped, x))
    g = np.repeat(rng.integers(0, 256, (1, 10, 14)), 3, axis=0)     # grey: R = G = B
    check(shipped, g, posterior_zfeat(shipped, g))


def test_threads_split_rows_exactly(shipped, rng):
    """Any split of a pixel set gives the same rows (the decoder splits wide waves)."""
    x = kodak_crop(slice(0, 64), slice(0, 64))
    zf = posterior_zfeat(shipped, x)
    k = WaveKernel(shipped)
    u_pad = PixelCoder(shipped).padded_input(x)
    ys, xs = wavefront(64, 64, 4)[100]
    t, p = k.first(u_pad, zf, ys, xs)
    for cut in (1, len(ys) // 2, len(ys) - 1):
        a, b = k.first(u_pad, zf, ys[:cut], xs[:cut]), k.first(u_pad, zf, ys[cut:], xs[cut:])
        assert np.array_equal(np.concatenate([a[0], b[0]]), t)
        assert np.array_equal(np.concatenate([a[1], b[1]]), p)



def test_weights_outside_the_bounds_are_refused():
    from vlaecodec.wave_kernel import _int_matrix
    assert _int_matrix(np.array([3.0, -2 ** 30]), 1 << 31, np.int32).dtype == np.int32
    for bad in (np.array([0.5]), np.array([2.0 ** 31])):
        with pytest.raises(ValueError):
            _int_matrix(bad, 1 << 31, np.int32)


@pytest.mark.parametrize("likelihood", ["categorical", "logistic"])
def test_narrow_inner_layers(rng, likelihood):
    """Blocks and heads narrower than the residual stream (a pruned model's shape)."""
    net = ExactVLAE.from_module(tiny_model(likelihood=likelihood, pixel_blocks=2, pixel_inner=5, inner=3))
    x = rng.integers(0, 256, (3, 13, 11))
    check(net, x, random_zfeat(net, rng, 13, 11))
