"""--effort 2: more models tried, the smallest file kept, decoded without a flag."""
import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

import vlaecodec.api as api
from vlaecodec.errors import VlaeError


@pytest.fixture(scope="module")
def crop():
    from conftest import ROOT
    return np.asarray(Image.open(ROOT / "samples" / "kodim23_crop.png").convert("RGB"))[:24, :32].copy()


def test_effort_2_keeps_the_smallest_file_and_it_decodes(crop):
    one = api.encode(crop)
    each = {m: api.encode(crop, model=m) for m in api.effort_models("default", 2)}
    two = api.encode(crop, effort=2)
    assert len(each) == 2 and one == each["default"]
    assert len(two) == min(len(d) for d in each.values())
    assert np.array_equal(api.decode(two), crop)
    assert api.info(two)["model_name"] in each


def test_effort_2_near_lossless_and_archives(crop):
    near = api.encode(crop, max_error=2, effort=2)
    assert int(np.abs(api.decode(near).astype(int) - crop).max()) <= 2
    grey = crop[..., :1].copy()
    data = api.encode_many([crop, grey], effort=2)
    assert len(data) <= len(api.encode_many([crop, grey]))
    assert all(np.array_equal(a, b) for a, b in zip(api.decode_many(data), [crop, grey]))


def test_bad_effort_is_refused(crop):
    with pytest.raises(VlaeError, match="effort"):
        api.encode(crop, effort=3)


def test_cli_effort(tmp_path, crop):
    src = tmp_path / "a.png"
    Image.fromarray(crop).save(src)
    r = run_cli("encode", str(src), "-o", str(tmp_path / "a.vlae"), "--effort", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] in ("default", "fast")
    r = run_cli("encode", str(src), "-o", str(tmp_path / "b.vlae"), "--effort", "2", "--lossy", "--model", "default")
    assert r.returncode == 2 and b"effort" in r.stderr and not (tmp_path / "b.vlae").exists()
    r = run_cli("encode", str(src), "-o", str(tmp_path / "c.vlae"), "--effort", "5")
    assert r.returncode == 2 and not (tmp_path / "c.vlae").exists()
