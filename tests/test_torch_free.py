"""Coding never imports torch: a VLAE's exact network is built from the weights as numpy
arrays, and the lossy model's transforms run in numpy.  These tests check that a coding process stays torch-free, and that the numpy
way of building the network gives the integers the torch way gave (so files do not change)."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_config, tiny_model

from vlaecodec import config, model
from vlaecodec.exact import ExactVLAE, QLinear, window_mask

# Runs in a fresh process: every coding entry point on the default zoo model, then the check.
CODING_SCRIPT = r"""
import os
import sys
import numpy as np
from PIL import Image
import vlaecodec.api as api
from cli.main import cli

folder = sys.argv[1]
img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
grey = img[:7, :5, :1].copy()
assert (api.decode(api.encode(img)) == img).all()
near = api.decode(api.encode(img, max_error=2))
assert np.abs(near.astype(int) - img).max() <= 2
archive = api.encode_many([img, grey], max_error=1)
assert len(api.decode_many(archive)) == 2 and api.decode_many(archive, preview=True)[1].shape == grey.shape
assert api.decode(api.encode_lossy([img], "default")).shape == img.shape   # z only
api.info(archive)

os.chdir(folder)
Image.fromarray(img).save("a.png")
for args in (["encode", "a.png", "-o", "a.vlae", "--no-elbo"],
             ["encode", "a.png", "-o", "n.vlae", "--no-elbo", "--max-error", "2"],
             ["decode", "a.vlae", "-o", "a2.png"], ["decode", "n.vlae", "-o", "n2.png"],
             ["decode", "a.vlae", "-o", "p.png", "--preview"], ["info", "a.vlae"]):
    cli.main(args, standalone_mode=False)
assert (np.asarray(Image.open("a2.png")) == img).all()
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert "torch" not in sys.modules, f"coding imported torch ({len(loaded)} modules: {loaded[:5]})"
print("torch-free")
"""


def _passes_in_a_fresh_process(script: str, folder, last_line: str) -> None:
    r = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith(last_line)


def test_lossless_and_near_lossless_coding_never_import_torch(tmp_path):
    _passes_in_a_fresh_process(CODING_SCRIPT, tmp_path, "torch-free")


# Lossy coding needs neither: its transforms run in numpy (torch's import costs a process
# about a second, numba's start about half a second).
LOSSY_SCRIPT = r"""
import os
import sys
import numpy as np
from PIL import Image
from cli.main import cli

os.chdir(sys.argv[1])
img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
Image.fromarray(img).save("a.png")
for args in (["encode", "a.png", "-o", "a.vlae", "--lossy", "--beta", "10", "--json"],
             ["decode", "a.vlae", "-o", "a2.png"], ["info", "a.vlae"]):
    cli.main(args, standalone_mode=False)
assert np.asarray(Image.open("a2.png")).shape == img.shape
for lib in ("numba", "torch"):
    loaded = sorted(m for m in sys.modules if m == lib or m.startswith(lib + "."))
    assert not loaded, f"lossy coding imported {lib} ({loaded[:5]})"
print("numba-free and torch-free")
"""


def test_lossy_coding_never_imports_numba_or_torch(tmp_path):
    _passes_in_a_fresh_process(LOSSY_SCRIPT, tmp_path, "numba-free and torch-free")


def _integers(net: ExactVLAE) -> list[np.ndarray]:
    """Every integer array of an exact network, in a fixed order."""
    layers = [getattr(net, k) for k in sorted(vars(net)) if isinstance(getattr(net, k), QLinear)]
    for k in ("e_blocks", "z_blocks", "trunk"):
        layers += [q for pair in getattr(net, k) for q in pair]
    layers += net.hidden + net.out
    out = [a for q in layers for a in (q.weight, q.bias, np.array([q.shift, q.stride, q.padding]))]
    return out + net.embed + ([net.window_matrix] if net.local else [])


@pytest.mark.parametrize("name", ["default", "cifar-factorized", "bmnist-local"])
def test_weights_from_the_file_give_the_integers_of_the_torch_module(name):
    from vlaecodec.zoo import load_model, load_weights
    weights, cfg, card = load_weights(name)
    from_file = ExactVLAE(weights, cfg)
    from_module = ExactVLAE.from_module(load_model(name)[0])
    a, b = _integers(from_file), _integers(from_module)
    assert len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))
    assert card["model_id"] == load_model(name)[1]["model_id"]


def test_weights_of_another_architecture_are_refused():
    state = {k: v.numpy() for k, v in tiny_model().state_dict().items()}
    with pytest.raises(ValueError, match="do not fit"):
        ExactVLAE(state, config.VLAEConfig(**{**tiny_config().to_dict(), "pixel_blocks": 2}))
    with pytest.raises(ValueError, match="do not fit"):
        ExactVLAE({**state, "extra.weight": np.zeros(1)}, config.VLAEConfig(**tiny_config().to_dict()))


@pytest.mark.parametrize("window", [[7, 4], [5, 2], [3, 1], [6, 3]])
def test_window_mask_is_the_window_convolutions(window):
    """WindowConv keeps its mask out of the state dict: the rebuilt one must be the same."""
    conv = model.WindowConv(3, 4, window)
    assert np.array_equal(window_mask(window), conv.mask.numpy())
    assert (conv.left, conv.right, conv.up) == ((window[0] - 1) // 2, window[0] - 1 - (window[0] - 1) // 2,
                                                window[1])


def test_the_float_model_shares_the_torch_free_config():
    """One definition of the config and of the constants the exact network copies: the float
    model (which imports torch) takes them from vlaecodec.config."""
    for name in ("VLAEConfig", "window_offsets", "LOGSCALE_MIN", "LOGSCALE_MAX", "LOGISTIC_LOGSCALE_MIN",
                 "LOGISTIC_LOGSCALE_MAX"):
        assert getattr(model, name) is getattr(config, name), name
    assert model.PixelHeads.embed_index is config.embed_index


def test_lossy_bit_depths_round_as_torch_did():
    """A z-only file's bits per channel: round(log2(1.25 / sigma)) at the lower median, once
    computed in torch.  Every integer log scale lands far from a rounding boundary (so libm's
    last bits cannot move it), and the lower median is torch's median."""
    from vlaecodec.zonly import _lower_median
    k = np.arange(int(config.LOGSCALE_MIN * 4096), int(config.LOGSCALE_MAX * 4096) + 1)
    v = np.log2(1.25 / np.exp(k / 4096))
    assert np.abs(v - np.floor(v) - 0.5).min() > 1e-9
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 8):
        a = rng.normal(size=(3, n))
        assert np.array_equal(_lower_median(a), torch.from_numpy(a).median(dim=1).values.numpy())


def test_new_files_equal_the_golden_files():
    """What this version writes for the golden entries of format versions 3 and 4 (the VLAE
    ones; the lossy model's pictures are float32) is byte for byte what the golden files
    hold: version 4 as the API writes it (without the residual histograms where the file
    has none: 0.6's and 0.7's), version 3 when asked for (``version=3``)."""
    import vlaecodec.api as api
    from vlaecodec.codec import Codec
    from vlaecodec.fileformat import unpack_header
    spec = importlib.util.spec_from_file_location("golden_make", ROOT / "tests" / "golden" / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    checked = {3: 0, 4: 0}
    for file, name, _, fn, srcs, opts in make.ENTRIES:
        golden = (make.HERE / file).read_bytes()
        if golden[4] not in checked or name in make.LOSSY_MODELS:
            continue
        images = [make.source(s) for s in srcs]
        if golden[4] == 4 and unpack_header(golden)[0].residuals:
            made = getattr(api, fn)(images[0] if fn == "encode" else images, **opts)
        elif golden[4] == 4:   # 0.6's and 0.7's files: no residual histograms
            net, card = api._exact(opts["model"])
            made = Codec(net, card["model_id"], active_channels=card.get("active_channels"),
                         residuals=False).encode_many(images, max_error=opts.get("max_error", 0))
        else:
            made = api.load_codec(opts["model"]).encode_many(images, max_error=opts.get("max_error", 0),
                                                             version=3)
        assert made == golden, file
        checked[golden[4]] += 1
    assert checked[3] >= 6 and checked[4] >= 6


NUMBA_SCRIPT = r"""
import sys
from cli import numba_startup
from cli.main import cli
numba_startup.install()        # the command line's own start-up (main() less its quick exit)
cli.main(["decode", sys.argv[1], "-o", sys.argv[2]], standalone_mode=False)   # a lossless decode
import numba.np.arraymath as arraymath
print("scipy.linalg" in sys.modules, arraymath._HAVE_BLAS)
import scipy.linalg            # visible again once numba is loaded
"""


def test_a_command_line_process_loads_numba_without_importing_scipy_linalg(tmp_path):
    """numba imports scipy.linalg when it loads; the command line hides it then
    (cli/numba_startup.py), and only then; the kernels' BLAS comes without scipy.linalg
    (vlaecodec/blas.py)."""
    import vlaecodec.api as api
    (tmp_path / "a.vlae").write_bytes(api.encode(np.zeros((8, 8, 3), np.uint8)))
    r = subprocess.run([sys.executable, "-c", NUMBA_SCRIPT, str(tmp_path / "a.vlae"), str(tmp_path / "a.png")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["False", "False"]
    assert (tmp_path / "a.png").exists()
