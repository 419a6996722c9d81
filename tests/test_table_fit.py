"""y's tables fitted at export (vlaecodec.table_fit): smaller files on images they were not
fitted to, the shifts read by encoder and decoder alike, and models without them unchanged."""
import dataclasses

import numpy as np
import pytest
import torch

from vlaecodec import table_fit
from vlaecodec.lossy_coder import LossyCoder, LossyTables, table_index
from vlaecodec.lossy_model import LossyConfig, LossyModel


@pytest.fixture(scope="module")
def coder():
    torch.manual_seed(3)
    m = LossyModel(LossyConfig(n=8, m=8, betas=[400.0, 100.0, 25.0])).eval()
    return LossyCoder(m, LossyTables.from_model(m), model_id="00" * 8)


def _crops(seed, count, size=64):
    """Smooth random pictures: a few random gradients and edges, as photos have."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(count):
        a = rng.normal(size=(3, 3)) * 80
        img = 128 + a[0] * xx[..., None] + a[1] * yy[..., None] + a[2] * (xx[..., None] > rng.random())
        out.append(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))
    return out


def test_fitted_tables_make_smaller_files_of_pictures_they_were_not_fitted_to(coder):
    fitted, report = table_fit.fit(coder.tables, table_fit.collect(coder, _crops(0, 4)))
    assert report["fitted_bits"] < report["gaussian_bits"]
    other = LossyCoder(coder.model, fitted, coder.model_id)
    for img in _crops(1, 2):
        for beta in (400.0, 60.0):
            data, drawn = other.encode_and_draw([img], beta)
            assert np.array_equal(other.decode(data)[0], drawn[0])
            assert len(data) < len(coder.encode([img], beta))


def test_the_shift_of_the_nearest_trained_beta_picks_the_tables(coder):
    shift = np.zeros((3, 8), np.int64)
    shift[1] = [5, -5, 0, 1, 2, 3, -64, 64]   # row 1: betas between 200 and 50
    shifted = dataclasses.replace(coder.tables, y_shift=shift)
    raw = np.arange(-2000, 2000, 40).reshape(1, 1, -1).repeat(8, axis=0)
    plain = table_index(coder.tables, raw)
    for row in (0, 2):
        assert np.array_equal(table_index(shifted, raw, row), plain)
    moved = table_index(shifted, raw, 1)
    assert np.array_equal(moved, np.clip(plain + shift[1][:, None, None], 0, 63))
    img = _crops(2, 1)[0]
    other = LossyCoder(coder.model, shifted, coder.model_id)
    for beta, same in ((300.0, True), (100.0, False), (26.0, True)):
        data = other.encode([img], beta)
        assert (data == coder.encode([img], beta)) is same
        assert np.array_equal(other.decode(data)[0], other.encode_and_draw([img], beta)[1][0])


def test_each_trained_beta_codes_z_with_its_own_tables(coder):
    z = coder.tables.z_freqs
    flat = np.full_like(z, 100)
    per_beta = dataclasses.replace(coder.tables, z_freqs=np.stack([z, flat, z]))
    other = LossyCoder(coder.model, per_beta, coder.model_id)
    img = _crops(3, 1)[0]
    for beta, same in ((300.0, True), (100.0, False), (26.0, True)):
        data = other.encode([img], beta)
        assert (data == coder.encode([img], beta)) is same
        assert np.array_equal(other.decode(data)[0], coder.decode(coder.encode([img], beta))[0])


def test_tables_keep_their_shifts_in_the_file_and_older_ones_have_none(coder):
    shift = np.arange(24).reshape(3, 8) - 12
    back = LossyTables.from_tensors(dataclasses.replace(coder.tables, y_shift=shift).to_tensors())
    assert np.array_equal(back.y_shift, shift)
    assert LossyTables.from_tensors(coder.tables.to_tensors()).y_shift.size == 0
    per_beta = np.stack([coder.tables.z_freqs] * 3)   # z's tables, one set per trained beta
    assert np.array_equal(LossyTables.from_tensors(
        dataclasses.replace(coder.tables, z_freqs=per_beta).to_tensors()).z_freqs, per_beta)
    with pytest.raises(ValueError, match="unshifted"):
        table_fit.collect(LossyCoder(coder.model, dataclasses.replace(coder.tables, y_shift=shift), "00" * 8), [])
