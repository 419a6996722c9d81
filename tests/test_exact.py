"""The integer network gives the same numbers whatever the batch shape or thread count."""
import numpy as np
import pytest
import torch
from conftest import tiny_model

from vlaecodec.exact import ExactVLAE, QLinear, pixels_to_input


def test_conv_in_float64_equals_integer_arithmetic(rng):
    w = torch.from_numpy(rng.normal(size=(6, 5, 3, 3)) * 0.3)
    q = QLinear(w, torch.zeros(6), in_bits=12, padding=1)
    a = torch.from_numpy(rng.integers(-2 ** 20, 2 ** 20, size=(2, 5, 9, 9))).double()
    got = q.conv(a)
    # the same sums in int64, from unfolded patches
    cols = torch.nn.functional.unfold(a, 3, padding=1).long()           # B, 45, 81
    acc = torch.einsum("ok,bkn->bon", q.weight.reshape(6, -1).long(), cols) + q.bias.long()[None, :, None]
    want = torch.div(acc, 2 ** q.shift, rounding_mode="floor").clamp(-2 ** 22, 2 ** 22)
    assert torch.equal(got.reshape(2, 6, -1).long(), want)


@pytest.mark.parametrize("likelihood", ["categorical", "logistic"])
def test_pixel_tables_do_not_depend_on_batch_shape(likelihood):
    net = ExactVLAE(tiny_model(likelihood=likelihood))
    x = torch.randint(0, 256, (1, 3, 16, 12))
    zf = net.z_features(torch.randint(-4096, 4096, (1, 2, 4, 3)).double())[0]
    ctx_all = net.context(x, zf[None])[0].numpy()
    zf = zf.numpy()
    ys, xs = np.meshgrid(np.arange(16), np.arange(12), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    prev = np.ascontiguousarray(x[0].numpy()[:, ys, xs].T)
    t_all = net.trunk_rows(np.ascontiguousarray(ctx_all[:, ys, xs].T))
    whole = [net.probabilities(c, t_all, prev) for c in range(3)]
    # the decoder's way: a few pixels at a time, windows gathered from a padded buffer
    u_pad = torch.nn.functional.pad(pixels_to_input(x[0], 256), (net.left, net.right, net.up, 0)).numpy()
    for sl in (slice(0, 1), slice(5, 40), slice(100, 192)):
        ctx = net.context_rows(u_pad, ys[sl], xs[sl], np.ascontiguousarray(zf[:, ys[sl], xs[sl]].T))
        t = net.trunk_rows(ctx)
        for c in range(3):
            part = net.probabilities(c, t, prev[sl])
            assert np.array_equal(part, whole[c][sl])


def test_thread_count_does_not_change_results():
    net = ExactVLAE(tiny_model(likelihood="logistic"))
    x = torch.randint(0, 256, (2, 3, 32, 32))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = net.posterior(x)
        torch.set_num_threads(2)
        two = net.posterior(x)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_exact_logistic_tables_match_the_float_model():
    from vlaecodec.model import logistic_mixture_probs
    model = tiny_model(likelihood="logistic")
    net = ExactVLAE(model)
    x = torch.randint(0, 256, (1, 3, 8, 8))
    z = torch.zeros(1, 2, 2, 2)
    with torch.no_grad():
        t = model.heads.trunk_forward(model.pixel_context(x, z))
        p = model.heads.head(1, t, x).float()
        want = logistic_mixture_probs(*model.heads.split_logistic(1, p, x), 256)[0].permute(1, 2, 0).reshape(-1, 256)
    ys, xs = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    ctx = net.context(x, net.z_features(z.double()))[0].numpy()
    got = net.probabilities(1, net.trunk_rows(np.ascontiguousarray(ctx[:, ys, xs].T)),
                            np.ascontiguousarray(x[0].numpy()[:, ys, xs].T))
    kl = (want.numpy() * np.log((want.numpy() + 1e-12) / (got + 1e-12))).sum(1).mean()
    assert kl < 1e-3


def test_strips_give_the_same_integers_as_one_pass(monkeypatch):
    """Large images run the encoder and z-network in strips with halos; the result must not
    differ in a single bit from one pass over the whole image."""
    net = ExactVLAE(tiny_model(res_blocks=2))
    x = torch.randint(0, 256, (1, 3, 96, 20))
    z = torch.randint(-8000, 8000, (1, 2, 24, 5)).double()
    whole_post = net._posterior_full(x)
    whole_z = net._z_features_full(z)[0].float().numpy()
    monkeypatch.setattr(ExactVLAE, "STRIP_LATENT_ROWS", 3)
    mean, logscale = net.posterior(x)
    assert torch.equal(torch.cat([mean, logscale], 1), whole_post)
    assert np.array_equal(net.z_features_half(z), whole_z)


def test_compiled_tables_equal_the_numpy_reference(rng):
    from vlaecodec.exact import logistic_probabilities, logistic_probabilities_numpy
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
