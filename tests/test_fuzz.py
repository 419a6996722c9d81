"""A short fuzz run: mutated .vlae files end in a clean error or a verified decode."""
from bench.fuzz import run


def test_short_fuzz_run_has_no_failures():
    res = run(400, seed=1)
    assert res["inputs"] == 400
    assert res["failures"] == 0, res["examples"]
    assert res["clean_errors"] > 0
