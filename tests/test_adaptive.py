"""The coder's adaptation (adaptive.py): what it learns, and what it buys on flat images."""
import numpy as np
from conftest import tiny_model

from vlaecodec.adaptive import N_WEIGHTS, WEIGHTS, Adaptation, choose, context, log2_table, update
from vlaecodec.codec import Codec


def test_code_lengths_follow_the_image():
    """Subpixels that always repeat their left neighbour, which the network gives 1/64: the
    choice moves from the network alone to the left neighbour at a high weight."""
    ad = Adaptation()
    ctx, total, f_net = 5, 1 << 20, (1 << 20) // 64
    assert choose(ad.lengths, ctx, 7) == 0
    for _ in range(50):
        update(ad.lengths, ad.counts, ad.log2, WEIGHTS, ctx, True, False, True, f_net, total)
    k = choose(ad.lengths, ctx, 7)
    assert k < N_WEIGHTS and WEIGHTS[k] >= 3840          # the left neighbour, nearly certain
    assert choose(ad.lengths, ctx + 1, 7) == 0             # other contexts learnt nothing
    assert choose(ad.lengths, ctx, -1) == 0                # no candidate: the network alone


def test_log2_table_is_log2():
    t = log2_table()
    i = np.arange(1024)
    assert np.abs(t / 2 ** 16 - np.log2(1 + i / 1024)).max() < 1e-4


def test_neighbours_and_contexts_at_the_edges():
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert context(x, 0, 0, 0)[:2] == (-1, -1)                          # corner: none
    assert context(x, 0, 0, 2)[:2] == (x[0, 0, 1], x[0, 0, 1])          # top row: left twice
    assert context(x, 1, 2, 0)[:2] == (x[1, 1, 0], x[1, 1, 0])          # left column: up twice
    left, up, ctx = context(x, 1, 2, 3)
    assert (left, up) == (x[1, 2, 2], x[1, 1, 3]) and 0 <= ctx < 54


def test_flat_and_repeated_images_cost_a_fraction():
    """A graphic of flat bands and a repeated tile: version 4 (adaptive) against version 3
    (the network alone, through constriction's tables)."""
    codec = Codec(tiny_model(), "ab" * 32)
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :20] = (200, 30, 30)
    img[:, 20:40] = (20, 120, 220)
    tile = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img[:, 40:] = np.tile(tile, (12, 6, 1))
    v3, v4 = codec.encode(img, version=3), codec.encode(img, version=4)
    assert np.array_equal(codec.decode(v4), img)
    assert len(v4) < 0.6 * len(v3)


def test_code_length_of_an_integer_is_its_exponent_and_mantissa():
    """_neg_log2 takes the exponent from the top bit's position (a CPU instruction): it
    must give the integers of the definition, floor(log2 g) and the table at g's next 10
    bits, for every size of g."""
    from numba import njit

    from vlaecodec.adaptive import _neg_log2

    @njit
    def lengths(gs, table):
        return np.array([_neg_log2(g, table) for g in gs])

    table = log2_table()
    rng = np.random.default_rng(0)
    powers = np.int64(1) << np.arange(63, dtype=np.int64)
    gs = np.concatenate([np.arange(-3, 3000), powers, powers - 1, powers + 1, powers[1:] + powers[:-1],
                         rng.integers(1, 1 << 62, 20000), [(1 << 63) - 1]]).astype(np.int64)

    def reference(g):
        g = max(int(g), 1)
        e = g.bit_length() - 1
        m = (g >> (e - 10)) & 1023 if e >= 10 else (g << (10 - e)) & 1023
        return ((64 - e) << 16) - int(table[m])
    assert lengths(gs, table).tolist() == [reference(g) for g in gs]
