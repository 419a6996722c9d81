"""The hyperprior lossy coder: exact integer tables, determinism, rate control, bad arguments.

A tiny random model keeps these fast; fidelity with the shipped model is in test_lossy_cli.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

from vlaecodec.errors import VlaeError
from vlaecodec.lossy_coder import ACT_BITS, LossyCoder, LossyTables, hyper_synthesis_exact
from vlaecodec.lossy_model import LossyConfig, LossyModel


@pytest.fixture(scope="module")
def tiny():
    """A tiny random torch model (the coder runs its transforms in numpy)."""
    torch.manual_seed(1)
    model = LossyModel(LossyConfig(n=8, m=12)).eval()
    with torch.no_grad():  # a trained model's gains grow as beta falls; give the random one such gains
        model.log_gain_y.copy_(torch.linspace(-1.5, 1.5, 8)[:, None].expand(8, 12))
        model.log_gain_y_inv.copy_(-model.log_gain_y)
    return model


@pytest.fixture(scope="module")
def coder(tiny):
    # without the loop filter: a random model's picture is so poor that the filter's choice,
    # not beta, would set these small files' rates (test_loop_filter covers the filter)
    return LossyCoder(tiny, LossyTables.from_model(tiny), model_id="00" * 8, loop_filter=False)


def _image(h=70, w=90, c=3, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 9.0) + np.cos(yy / 7.0)) * 60 + 128
    img = base[..., None] + rng.normal(0, 8, (h, w, c))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_integer_hyper_synthesis_matches_the_float_network(tiny, coder):
    z = np.random.default_rng(0).integers(-3, 4, (8, 2, 3))
    mean_int, index = hyper_synthesis_exact(coder.tables, z)
    with torch.no_grad():
        mean, scale = tiny.hyper_synthesis(torch.from_numpy(z).float()[None])
    assert np.abs(mean_int / 2 ** ACT_BITS - mean[0].numpy()).max() < 0.02
    # the index picks the table whose width is nearest the float width (log scale)
    from vlaecodec.lossy_coder import scale_table
    picked = scale_table()[index]
    want = np.clip(scale[0].numpy(), picked.min(), None)
    assert np.abs(np.log(picked) - np.log(np.maximum(want, 0.11))).max() < 0.2


def test_round_trip_shapes_and_grey(coder):
    for img in (_image(), _image(1, 1), _image(65, 64, 1), _image(3, 130)):
        data = coder.encode([img], beta=64.0)
        out = coder.decode(data)[0]
        assert out.shape == img.shape and out.dtype == np.uint8
    two = coder.decode(coder.encode([_image(), _image(20, 20, 1)], beta=200.0))
    assert [o.shape for o in two] == [(70, 90, 3), (20, 20, 1)]


def test_beta_is_a_dial(coder):
    img = _image()
    sizes = [len(coder.encode([img], beta=b)) for b in (10.0, 800.0)]
    assert sizes[0] > sizes[1]


def _same_in_another_process(model, img, beta, tmp_path):
    """The file and picture of a tiny torch ``model``'s coder (with the loop filter, as files
    are) are those another process makes with two threads."""
    coder = LossyCoder(model, LossyTables.from_model(model), "00" * 8)
    data = coder.encode([img], beta=beta)
    out = coder.decode(data)[0]
    torch.save(model.state_dict(), tmp_path / "m.pt")
    np.save(tmp_path / "img.npy", img)
    script = f"""
import sys, numpy as np, torch
from vlaecodec.lossy_coder import LossyCoder, LossyTables
from vlaecodec.lossy_model import LossyConfig, LossyModel
model = LossyModel(LossyConfig(**{model.cfg.to_dict()!r})).eval()
model.load_state_dict(torch.load(r"{tmp_path / 'm.pt'}"))
coder = LossyCoder(model.eval(), LossyTables.from_model(model), "00" * 8, threads=2)
data = coder.encode([np.load(r"{tmp_path / 'img.npy'}")], beta={beta!r})
sys.stdout.buffer.write(data)
np.save(r"{tmp_path / 'out.npy'}", coder.decode(data)[0])
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    assert res.stdout == data
    assert np.array_equal(np.load(tmp_path / "out.npy"), out)
    return out


def test_decoding_is_the_same_in_another_process_with_other_threads(tiny, tmp_path):
    _same_in_another_process(tiny, _image(), 100.0, tmp_path)


def test_target_rate_lands_near_the_target(coder):
    img = _image(128, 128)
    lo = len(coder.encode([img], beta=800.0)) * 8 / img.size * 3
    hi = len(coder.encode([img], beta=10.0)) * 8 / img.size * 3
    target = (lo * hi) ** 0.5
    data, beta = coder.encode_to_rate([img], target)
    assert abs(len(data) * 8 / (128 * 128) - target) <= 0.1 * target
    assert 10 <= beta <= 800


@pytest.mark.parametrize("beta", [-1.0, 0.0, float("nan"), float("inf"), 1e9, 0.01, 9.0, 900.0])
def test_absurd_betas_are_refused(coder, beta):
    with pytest.raises(VlaeError, match="beta"):
        coder.encode([_image()], beta=beta)


@pytest.mark.parametrize("bpp", [-1.0, 0.0, float("nan")])
def test_absurd_targets_are_refused(coder, bpp):
    with pytest.raises(VlaeError, match="target"):
        coder.encode_to_rate([_image()], bpp)


def test_corrupt_payload_is_an_error_not_a_crash(coder):
    data = bytearray(coder.encode([_image()], beta=64.0))
    data[-6] ^= 0xFF
    with pytest.raises(VlaeError):
        coder.decode(bytes(data))


def test_an_opaque_alpha_survives_lossy_and_any_other_is_refused(coder):
    img = np.dstack([_image(), np.full((70, 90), 255, np.uint8)])
    out = coder.decode(coder.encode([img], beta=100.0))[0]
    assert out.shape == img.shape and (out[..., 3] == 255).all()
    img[5, 5, 3] = 0
    with pytest.raises(VlaeError, match="alpha"):
        coder.encode([img], beta=100.0)


@pytest.fixture(scope="module")
def context_model():
    """A tiny random model with a checkerboard context network that does something."""
    torch.manual_seed(2)
    model = LossyModel(LossyConfig(n=8, m=12, context=6)).eval()
    with torch.no_grad():
        model.log_gain_y.copy_(torch.linspace(-1.5, 1.5, 8)[:, None].expand(8, 12))
        model.log_gain_y_inv.copy_(-model.log_gain_y)
        model.ctx[2].weight.normal_(0, 0.3)
        model.ctx[2].bias.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def context_coder(context_model):
    return LossyCoder(context_model, LossyTables.from_model(context_model), model_id="00" * 8, loop_filter=False)


def test_integer_context_network_matches_the_float_one(context_model, context_coder):
    from vlaecodec.lossy_coder import black_squares, context_exact, hyper_synthesis_raw
    coder = context_coder
    rng = np.random.default_rng(3)
    z = rng.integers(-3, 4, (8, 2, 3))
    y = torch.from_numpy(rng.normal(0, 3, (1, 12, 8, 12))).float()
    with torch.no_grad():
        y_hat, mean, scale = context_model.quantized(y, torch.from_numpy(z).float()[None])
        hs_mean = context_model.h_s(torch.from_numpy(z).float()[None]).chunk(2, dim=1)[0]
    mean_int, raw_int = hyper_synthesis_raw(coder.tables, z)
    black = black_squares(8, 12)
    sym = torch.round(y - hs_mean)[0].double().numpy()     # the black squares' symbols, as the float model rounds them
    m2, r2 = context_exact(coder.tables, mean_int, raw_int, np.where(black, sym * 2 ** ACT_BITS + mean_int, 0))
    assert np.array_equal(m2[:, black], mean_int[:, black])          # black squares: h_s alone
    assert not np.allclose(m2[:, ~black], mean_int[:, ~black])       # white ones: corrected...
    assert np.abs(m2 / 2 ** ACT_BITS - mean[0].numpy()).max() < 0.05  # ...as the float network does
    assert np.abs(np.log(np.logaddexp(0, r2 / 2 ** ACT_BITS)) - np.log(scale[0].numpy())).max() < 0.05


@pytest.mark.parametrize("h, w, block", [(8, 12, 4096), (5, 7, 4096), (1, 1, 4096), (9, 4, 3), (6, 9, 5)])
def test_context_network_on_the_white_squares_alone_is_the_whole_grids(context_coder, monkeypatch, h, w, block):
    # the packed white squares must give the integers the whole grid's convolutions give,
    # odd sides, and blocks of rows, included
    import vlaecodec.lossy_coder as lc
    tables, rng = context_coder.tables, np.random.default_rng(h * w)
    m = tables.ctx_weights[0].shape[1]
    black = lc.black_squares(h, w)
    mean, raw = (rng.integers(-2 ** 14, 2 ** 14, (m, h, w)).astype(np.float64) for _ in range(2))
    black_hat = np.where(black, rng.integers(-2 ** 13, 2 ** 13, (m, h, w)), 0).astype(np.float64)
    a = black_hat
    for i, (wt, b) in enumerate(zip(tables.ctx_weights, tables.ctx_biases)):
        a = lc._conv_exact(a, wt, b)
        a = np.clip(a, 0, lc.ACT_LIMIT) if i < len(tables.ctx_weights) - 1 else a
    d_mean, d_raw = np.split(a, 2)
    monkeypatch.setattr(lc, "CONV_BLOCK", block)
    got = lc.context_exact(tables, mean, raw, black_hat)
    for g, base, d in zip(got, (mean, raw), (d_mean, d_raw)):
        assert np.array_equal(g, np.clip(np.where(black, base, base + d), -lc.ACT_LIMIT, lc.ACT_LIMIT))


def test_context_model_decodes_the_same_in_another_process(context_model, tmp_path):
    img = _image(70, 130)
    out = _same_in_another_process(context_model, img, 64.0, tmp_path)
    assert out.shape == img.shape and 10 * np.log10(255 ** 2 / np.mean((out - img.astype(float)) ** 2)) > 12


def test_tables_with_a_context_network_survive_saving(context_coder):
    t = LossyTables.from_tensors(context_coder.tables.to_tensors())
    assert len(t.ctx_weights) == 2 and all(np.array_equal(a, b) for a, b in zip(t.ctx_weights, context_coder.tables.ctx_weights))
    saved = context_coder.tables.to_tensors()     # narrow integers on disk, int64 in memory
    assert saved["tables.ctx0.weight"].dtype in (torch.int16, torch.int32)
    assert all(w.dtype == np.int64 for w in t.ctx_weights)


@pytest.mark.parametrize("filtered", [False, True])
def test_the_encoders_pictures_are_the_decoders(coder, filtered):
    c = LossyCoder(coder.model, coder.tables, model_id="00" * 8, loop_filter=filtered)
    images = [_image(), _image(33, 47, 1, seed=1), np.dstack([_image(20, 30), np.full((20, 30), 255, np.uint8)])]
    data, pictures = c.encode_and_draw(images, beta=64.0)
    assert data == c.encode(images, beta=64.0)
    assert all(np.array_equal(p, d) for p, d in zip(pictures, c.decode(data), strict=True))


def test_transforms_on_tiles_match_the_whole_image(tiny):
    """Tiles with the halo give the whole image's transforms (to float rounding); without
    it they would not, so the halo is what makes tiling safe."""
    import vlaecodec.lossy_transforms as lt
    t = lt.LossyTransforms.from_module(tiny)
    x = np.ascontiguousarray(_image(192, 256).transpose(2, 0, 1), dtype=np.float32)
    y, _ = t.analysis(x, 2.0)
    x_hat = t.synthesis(np.round(y), 2.0)
    assert np.abs(t.analysis(x, 2.0, tile=4)[0] - y).max() < 1e-4
    assert np.abs(t.synthesis(np.round(y), 2.0, tile=4) - x_hat).max() < 1e-3
    halo, lt.TILE_HALO = lt.TILE_HALO, 0
    try:
        assert np.abs(t.synthesis(np.round(y), 2.0, tile=4) - x_hat).max() > 0.1
    finally:
        lt.TILE_HALO = halo


def test_transforms_in_numpy_are_the_float_models(tiny):
    """The coder's numpy transforms compute what the trained torch model computes."""
    from vlaecodec.lossy_transforms import LossyTransforms
    t = LossyTransforms.from_module(tiny)
    x = np.ascontiguousarray(_image(64, 128).transpose(2, 0, 1), dtype=np.float32)
    for level in (0.0, 2.5, 7.0):
        y, z = t.analysis(x, level)
        with torch.no_grad():
            y_t, z_t = tiny.analysis(torch.from_numpy(x)[None], level)
            x_t = tiny.synthesis(y_t.round(), level)[0].numpy()
        assert np.abs(y - y_t[0].numpy()).max() < 1e-4 and np.abs(z - z_t[0].numpy()).max() < 1e-4
        assert np.abs(t.synthesis(np.round(y), level) - x_t).max() < 1e-3


def test_an_image_wider_than_a_tile_round_trips(coder):
    from vlaecodec.lossy_coder import PAD, TILE
    img = _image(40, TILE * 16 + 3 * PAD + 5)          # two tiles across (1280 pixels padded), one down
    data, (picture,) = coder.encode_and_draw([img], beta=64.0)
    out = coder.decode(data)[0]
    assert out.shape == img.shape and np.array_equal(out, picture)
    assert 10 * np.log10(255 ** 2 / np.mean((out - img.astype(float)) ** 2)) > 12


def test_the_float_transforms_do_not_depend_on_the_blas_threads():
    """Another thread count must not move a decoded pixel: OpenBLAS may split a float32
    product between threads so that its sums differ in the last bits (it does in 0.3.31)."""
    from threadpoolctl import threadpool_limits

    from vlaecodec.lossy_coder import load_lossy_coder
    rng = np.random.default_rng(0)
    y = np.round(rng.normal(0, 3, (256, 16, 24))).astype(np.float32)
    x = rng.uniform(0, 255, (3, 256, 384)).astype(np.float32)
    runs = []
    for threads in (1, 2):   # the coder's threads share each layer's chunks, and BLAS may use as many
        t = load_lossy_coder("lossy", threads=threads).model
        assert t.threads == threads and t.cfg.m == y.shape[0]
        with threadpool_limits(threads, user_api="blas"):
            runs.append((t.synthesis(y, 5.0), *t.analysis(x, 5.0)))
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("chunk_bytes", [1 << 10, 5 << 10, 1 << 22])
@pytest.mark.parametrize("c, o, k", [(8, 8, 5), (8, 3, 5), (4, 6, 5), (4, 6, 3)])
def test_chunked_convolutions_are_torchs(monkeypatch, chunk_bytes, c, o, k):
    """conv and deconv in chunks of rows (one row, a few with a shorter last one, or all), by
    phases (o >= k) or by rows of taps (o < k), on a pool of threads or not, with a pixelwise
    ``post``, against torch's Conv2d and ConvTranspose2d."""
    from concurrent.futures import ThreadPoolExecutor

    import torch.nn.functional as F

    from vlaecodec import lossy_transforms as lt
    monkeypatch.setattr(lt, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (c, 12, 20)).astype(np.float32)
    b = rng.normal(0, 1, o).astype(np.float32)
    w_t = rng.normal(0, 0.2, (c, o, k, k)).astype(np.float32)
    w = rng.normal(0, 0.2, (o, c, k, k)).astype(np.float32)
    t = lambda a: torch.from_numpy(a)
    double = lambda a: 2 * a
    with ThreadPoolExecutor(2) as pool:
        for use in (None, pool):
            want = F.conv_transpose2d(t(x)[None], t(w_t), t(b), stride=2, padding=k // 2, output_padding=1)[0].numpy()
            assert np.abs(lt.deconv(x, w_t, b, use, double) - 2 * want).max() < 1e-4
            for stride in (1, 2):
                want = F.conv2d(t(x)[None], t(w), t(b), stride=stride, padding=k // 2)[0].numpy()
                assert np.abs(lt.conv(x, w, b, stride, use, double) - 2 * want).max() < 1e-4


def test_lossy_files_do_not_depend_on_the_threads():
    """The encoder's float products (chunks shared by threads) and the loop filter's sums
    (bands on threads) give the same file at one and two threads."""
    import vlaecodec.api as api
    y, x = np.mgrid[0:128, 0:192]
    img = np.stack([(x + y) % 256, (3 * x) % 256, (x * y // 64) % 256], axis=2).astype(np.uint8)
    assert api.encode_lossy([img], beta=100.0) == api.encode_lossy([img], beta=100.0, threads=2)


def test_api_decode_gives_the_same_pixels_with_two_threads():
    """api.decode takes ``threads`` as decode_many does; lossy and lossless alike, the pixels
    do not depend on it (a picture large enough for several chunks of rows per layer)."""
    import vlaecodec.api as api
    y, x = np.mgrid[0:192, 0:256]
    img = np.stack([(x + y) % 256, (3 * x) % 256, (x * y // 64) % 256], axis=2).astype(np.uint8)
    for data in (api.encode_lossy([img], beta=100.0), api.encode(img[:32, :48])):
        assert np.array_equal(api.decode(data), api.decode(data, threads=2))
