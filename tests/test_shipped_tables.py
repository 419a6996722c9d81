"""The tables shipped in vlaecodec/tables.npz are exactly what the decimal code computes,
and they are all there (so no coding process recomputes one)."""
import numpy as np

from vlaecodec import shipped_tables
from vlaecodec.fixedpoint import fixed_tables


def test_every_shipped_table_equals_its_computation():
    stored = shipped_tables.stored()
    tables = fixed_tables()
    assert set(stored) == set(tables)
    for name, compute in tables.items():
        want = compute()
        assert stored[name].dtype == want.dtype and np.array_equal(stored[name], want), name


def test_a_missing_file_computes_the_tables(monkeypatch, tmp_path):
    monkeypatch.setattr(shipped_tables, "FILE", tmp_path / "none.npz")
    shipped_tables.stored.cache_clear()
    try:
        assert shipped_tables.stored() == {}
        assert np.array_equal(shipped_tables.table("exp", fixed_tables()["exp"]), fixed_tables()["exp"]())
    finally:
        shipped_tables.stored.cache_clear()
