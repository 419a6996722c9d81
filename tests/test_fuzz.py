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


def test_the_lossy_seeds_include_loop_filter_coefficients():
    """The fuzz reaches the loop filter's decoding: some seed is bigger than the same file
    without the filter, so coefficients follow its picture."""
    import numpy as np

    from bench.fuzz import lossy_seeds, tiny_lossy
    from vlaecodec.lossy_coder import LossyCoder
    coder = tiny_lossy()
    plain = LossyCoder(coder.model, coder.tables, coder.model_id, loop_filter=False)
    filtered = lossy_seeds(coder, np.random.default_rng(0))
    unfiltered = lossy_seeds(plain, np.random.default_rng(0))
    assert any(len(a) > len(b) for a, b in zip(filtered, unfiltered))
