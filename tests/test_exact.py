"""The integer network gives the same numbers whatever the batch shape or thread count."""
import numpy as np
import pytest
import torch
from conftest import tiny_model

from vlaecodec.exact import ExactVLAE, QLinear, pixels_to_input


@pytest.mark.parametrize("c_in,kernel,stride", [(5, 3, 1), (40, 3, 1), (24, 4, 2), (7, 1, 1)])
def test_conv_in_float64_equals_integer_arithmetic(rng, c_in, kernel, stride):
    """Both ways of the channels-last convolution (gathered patches for thin inputs, a sum
    over kernel taps otherwise) give the integer sums exactly."""
    w = torch.from_numpy(rng.normal(size=(6, c_in, kernel, kernel)) * 0.3)
    pad = kernel // 2 - (stride == 2)
    q = QLinear(w, torch.from_numpy(rng.normal(size=6)), in_bits=12, stride=stride, padding=pad)
    a = torch.from_numpy(rng.integers(-2 ** 20, 2 ** 20, size=(2, c_in, 10, 10))).double()
    got = torch.from_numpy(q.conv(a.numpy()))
    # the same sums in int64, from unfolded patches
    cols = torch.nn.functional.unfold(a, kernel, padding=pad, stride=stride).long()
    weight, bias = torch.from_numpy(q.weight), torch.from_numpy(q.bias)
    acc = torch.einsum("ok,bkn->bon", weight.reshape(6, -1).long(), cols) + bias.long()[None, :, None]
    want = torch.div(acc, 2 ** q.shift, rounding_mode="floor").clamp(-2 ** 22, 2 ** 22)
    assert torch.equal(got.reshape(2, 6, -1).long(), want)


@pytest.mark.parametrize("likelihood", ["categorical", "logistic"])
def test_pixel_tables_do_not_depend_on_batch_shape(likelihood):
    net = ExactVLAE.from_module(tiny_model(likelihood=likelihood))
    x = torch.randint(0, 256, (1, 3, 16, 12))
    zf = net.z_features(torch.randint(-4096, 4096, (1, 2, 4, 3)).double())[0]
    ctx_all = net.context(x, zf[None])[0]
    ys, xs = np.meshgrid(np.arange(16), np.arange(12), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    prev = np.ascontiguousarray(x[0].numpy()[:, ys, xs].T)
    t_all = net.trunk_rows(np.ascontiguousarray(ctx_all[:, ys, xs].T))
    whole = [net.probabilities(c, t_all, prev) for c in range(3)]
    # the decoder's way: a few pixels at a time, windows gathered from a padded buffer
    u_pad = np.pad(pixels_to_input(x[0], 256), ((0, 0), (net.up, 0), (net.left, net.right)))
    for sl in (slice(0, 1), slice(5, 40), slice(100, 192)):
        ctx = net.context_rows(u_pad, ys[sl], xs[sl], np.ascontiguousarray(zf[:, ys[sl], xs[sl]].T))
        t = net.trunk_rows(ctx)
        for c in range(3):
            part = net.probabilities(c, t, prev[sl])
            assert np.array_equal(part, whole[c][sl])


def test_thread_count_does_not_change_results():
    """The convolutions are BLAS products: one thread or two, the same integers."""
    from threadpoolctl import threadpool_limits
    net = ExactVLAE.from_module(tiny_model(likelihood="logistic"))
    x = torch.randint(0, 256, (2, 3, 32, 32))
    with threadpool_limits(limits=1, user_api="blas"):
        one = [torch.from_numpy(a) for a in net.posterior(x)]
    with threadpool_limits(limits=2, user_api="blas"):
        two = [torch.from_numpy(a) for a in net.posterior(x)]
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_exact_logistic_tables_match_the_float_model():
    from vlaecodec.model import logistic_mixture_probs
    model = tiny_model(likelihood="logistic")
    net = ExactVLAE.from_module(model)
    x = torch.randint(0, 256, (1, 3, 8, 8))
    z = torch.zeros(1, 2, 2, 2)
    with torch.no_grad():
        t = model.heads.trunk_forward(model.pixel_context(x, z))
        p = model.heads.head(1, t, x).float()
        want = logistic_mixture_probs(*model.heads.split_logistic(1, p, x), 256)[0].permute(1, 2, 0).reshape(-1, 256)
    ys, xs = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    ctx = net.context(x, net.z_features(z.double()))[0]
    got = net.probabilities(1, net.trunk_rows(np.ascontiguousarray(ctx[:, ys, xs].T)),
                            np.ascontiguousarray(x[0].numpy()[:, ys, xs].T))
    kl = (want.numpy() * np.log((want.numpy() + 1e-12) / (got + 1e-12))).sum(1).mean()
    assert kl < 1e-3


def test_strips_give_the_same_integers_as_one_pass(monkeypatch):
    """Large images run the encoder and z-network in strips with halos; the result must not
    differ in a single bit from one pass over the whole image."""
    net = ExactVLAE.from_module(tiny_model(res_blocks=2))
    x = torch.randint(0, 256, (1, 3, 96, 20))
    z = torch.randint(-8000, 8000, (1, 2, 24, 5)).double()
    assert ExactVLAE.STRIP_LATENT_POSITIONS >= 24 * 5   # one strip: the whole image in one pass
    whole_post = torch.cat([torch.from_numpy(a) for a in net.posterior(x)], 1)
    whole_z = net.z_features_half(z)
    monkeypatch.setattr(ExactVLAE, "STRIP_LATENT_POSITIONS", 15)
    monkeypatch.setattr(ExactVLAE, "MIN_STRIP_ROWS", 3)
    monkeypatch.setattr(ExactVLAE, "STEM_ROWS", 5)
    monkeypatch.setattr(QLinear, "CHUNK_OUTPUTS", 40)    # and every layer in bands of rows
    mean, logscale = (torch.from_numpy(a) for a in net.posterior(x))
    assert torch.equal(torch.cat([mean, logscale], 1), whole_post)
    assert np.array_equal(net.z_features_half(z), whole_z)


def test_compiled_tables_equal_the_numpy_reference(rng):
    from vlaecodec.fixedpoint import logistic_probabilities, logistic_probabilities_numpy
    K, n = 5, 300
    for c in range(3):
        params = np.concatenate([rng.integers(-40000, 40000, (n, K)),          # weight logits
                                 rng.integers(-5000, 5000, (n, K)),            # means
                                 rng.integers(-30000, 12000, (n, K)),          # log scales
                                 rng.integers(-9000, 9000, (n, c * K))], 1).astype(np.float64)
        prev = rng.integers(-255, 256, (n, c)) | 1
        a = logistic_probabilities(params, prev if c else None, c, K, 256)
        b = logistic_probabilities_numpy(params, prev if c else None, c, K, 256)
        assert np.array_equal(a, b)


def test_stem_in_row_steps_equals_the_two_layers(monkeypatch):
    """The encoder's first two layers run a few rows at a time; that must give exactly the
    two convolutions applied one after the other."""
    net = ExactVLAE.from_module(tiny_model())
    u = np.ascontiguousarray(pixels_to_input(torch.randint(0, 256, (3, 20, 12)), 256).transpose(1, 2, 0))
    whole = np.maximum(net.e_down1.conv_hwc(np.maximum(net.e_inp.conv_hwc(u), 0)), 0)
    twice = net.e_down2.conv_hwc(whole)
    for rows in (1, 3, 16):
        monkeypatch.setattr(ExactVLAE, "STEM_ROWS", rows)
        assert np.array_equal(net._stem(u), whole)
        for down2_rows in (1, 2, 5):
            monkeypatch.setattr(ExactVLAE, "DOWN2_ROWS", down2_rows)
            assert np.array_equal(net._stem_down2(u), twice)


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_compiled_latent_tables_equal_the_numpy_reference(rng, bits):
    from vlaecodec.latents import Latents
    from vlaecodec.model import LOGSCALE_MAX, LOGSCALE_MIN
    lat = Latents(bits)
    mean = torch.from_numpy(rng.integers(-40000, 40000, 500).astype(np.float64))
    logscale = torch.from_numpy(rng.integers(int(LOGSCALE_MIN * 4096), int(LOGSCALE_MAX * 4096), 500)
                                .astype(np.float64))
    a = lat.posterior_probabilities(mean, logscale)
    assert np.array_equal(a, lat.posterior_probabilities_numpy(mean, logscale))
    assert a.shape == (500, 1 << bits) and np.allclose(a.sum(axis=1), 1)


@pytest.mark.parametrize("shape", [(5, 7, 6), (1, 1, 3), (4, 9, 80)])
def test_conv_of_the_upsampled_image_without_upsampling(rng, shape):
    """conv_up2_hwc (2x2 phase convolutions) gives exactly the 3x3 convolution of the
    nearest-upsampled image, at the bounds of the fixed-point format."""
    from vlaecodec.exact import QLinear
    from vlaecodec.fixedpoint import ACT_LIMIT
    H, W, C = shape
    q = QLinear(rng.normal(size=(11, C, 3, 3)) * rng.choice([1e-3, 1.0, 50.0]), rng.normal(size=11), 12, padding=1)
    a = rng.integers(-ACT_LIMIT, ACT_LIMIT + 1, (H, W, C)).astype(np.float64)
    want = q.conv_hwc(a.repeat(2, axis=0).repeat(2, axis=1))
    assert np.array_equal(q.conv_up2_hwc(a), want)


@pytest.mark.parametrize("kernel,stride,padding,pad_rows", [(3, 1, 1, True), (4, 2, 1, True), (4, 2, 1, False),
                                                            (1, 1, 0, True), (5, 2, 2, True)])
def test_bands_of_output_rows_give_the_same_integers(rng, monkeypatch, kernel, stride, padding, pad_rows):
    """A layer computed in bands of output rows (bounded temporaries) is the same layer."""
    from vlaecodec.fixedpoint import ACT_LIMIT
    q = QLinear(rng.normal(size=(6, 9, kernel, kernel)), rng.normal(size=6), 12, stride=stride, padding=padding)
    a = rng.integers(-ACT_LIMIT, ACT_LIMIT + 1, (23, 11, 9)).astype(np.float64)
    whole, up = q.conv_hwc(a, pad_rows=pad_rows), None
    if kernel == 3:
        up = q.conv_up2_hwc(a)
    monkeypatch.setattr(QLinear, "CHUNK_OUTPUTS", 70)    # bands of one or a few rows
    assert np.array_equal(q.conv_hwc(a, pad_rows=pad_rows), whole)
    if up is not None:
        assert np.array_equal(q.conv_up2_hwc(a), up)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (1, 1, 0), (4, 2, 1), (5, 2, 2), (3, 2, 1), (2, 1, 0)])
@pytest.mark.parametrize("channels", [3, 9, 70])
def test_convolution_paths_give_a_direct_sum(rng, kernel, stride, padding, channels):
    """Every way conv_hwc computes a layer (gathered patches, products over views of the flat
    input, stride 2 as space-to-depth, strided taps) gives the integers of the direct sum."""
    from vlaecodec.exact import QLinear
    from vlaecodec.fixedpoint import ACT_LIMIT
    q = QLinear(rng.normal(size=(5, channels, kernel, kernel)), rng.normal(size=5), 12, stride=stride,
                padding=padding)
    for H, W in ((11, 8), (6, 13), (1, 1)):
        a = rng.integers(-ACT_LIMIT, ACT_LIMIT + 1, (H, W, channels)).astype(np.float64)
        ap = np.pad(a, ((padding, padding), (padding, padding), (0, 0))).astype(np.int64)
        ho, wo = (H + 2 * padding - kernel) // stride + 1, (W + 2 * padding - kernel) // stride + 1
        if ho < 1 or wo < 1:
            continue
        w = q.taps.astype(np.int64)
        acc = np.zeros((ho, wo, w.shape[-1]), np.int64) + q.bias.astype(np.int64)
        for ky in range(kernel):
            for kx in range(kernel):
                acc += ap[ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride] @ w[ky, kx]
        want = np.clip(acc >> q.shift, -ACT_LIMIT, ACT_LIMIT)
        assert np.array_equal(q.conv_hwc(a), want)


@pytest.mark.parametrize("grid", [(1, 1), (2, 5), (9, 40), (23, 23), (24, 61), (70, 3)])
def test_features_of_z_zero_come_from_a_small_grid(grid):
    """zero_features_half (a local model's, every bottom band's) gives the z-decoder's
    integers for z = 0, from a grid of at most (2R+1)^2 latents, at every distance from the
    edges, for grids smaller and larger than that on each side."""
    net = ExactVLAE.from_module(tiny_model(res_blocks=2))
    want = net.z_features_half(np.zeros((1, net.cfg.z_channels, *grid)))
    got = net.zero_features_half(grid)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got, want)
