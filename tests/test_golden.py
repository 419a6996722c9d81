"""Files made by earlier versions still decode to the same pixels (tests/golden/, made once by
tests/golden/make.py): a change to a kernel, a table or the format cannot break them silently."""
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

import vlaecodec.api as api

GOLDEN = Path(__file__).parent / "golden"
ENTRIES = json.loads((GOLDEN / "manifest.json").read_text())


def pixels_sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def test_the_manifest_names_every_golden_file():
    files = [e["file"] for e in ENTRIES]
    assert len(files) == len(set(files))
    assert sorted(files) == sorted(p.name for p in GOLDEN.glob("*.vlae"))
    assert sorted(e["reference"] for e in ENTRIES if "reference" in e) == sorted(p.name for p in GOLDEN.glob("*.npy"))
    made_from = {e["model"] for e in ENTRIES}
    assert {"default", "default-0.2"} <= made_from  # both zoo defaults
    assert {"lossless", "near-lossless", "lossy"} <= {e["mode"] for e in ENTRIES}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["file"])
def test_golden_file_decodes_to_its_pixels(entry):
    data = (GOLDEN / entry["file"]).read_bytes()
    expected = entry["images"]
    decoded = [api.decode(data)] if len(expected) == 1 else api.decode_many(data)
    assert [list(d.shape) for d in decoded] == [e["shape"] for e in expected]
    if [pixels_sha256(d) for d in decoded] == [e["sha256"] for e in expected]:
        return
    # only a picture drawn in floating point may differ, by at most its tolerance, and rarely
    assert "reference" in entry, "an exactly decoded file decodes to other pixels"
    got = np.concatenate([d.ravel() for d in decoded]).astype(int)
    want = np.load(GOLDEN / entry["reference"]).astype(int)
    assert np.abs(got - want).max() <= entry["tolerance"]
    assert np.mean(got != want) < 0.01


def test_golden_file_decodes_through_the_command_line():
    entry = next(e for e in ENTRIES if e["model"] == "default-0.2" and e["mode"] == "near-lossless")
    r = run_cli("decode", str(GOLDEN / entry["file"]), "-o", "-")
    assert r.returncode == 0, r.stderr
    (image,) = entry["images"]
    pixels = np.asarray(Image.open(io.BytesIO(r.stdout))).reshape(image["shape"])
    assert pixels_sha256(pixels) == image["sha256"]
