"""A short fuzz run: mutated .vlae files end in a clean error or a verified decode."""
from bench.fuzz import run


def test_short_fuzz_run_has_no_failures():
    import os
    before = os.environ.get("VLAECODEC_MAX_PIXELS")
    res = run(400, seed=1)
    assert os.environ.get("VLAECODEC_MAX_PIXELS") == before   # the fuzz's cap does not leak
    assert res["inputs"] == 400
    assert res["failures"] == 0, res["examples"]
    assert res["clean_errors"] > 0
