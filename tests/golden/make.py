"""Make the golden files: small .vlae files that every later version must still decode.

Run by a person, on purpose, never by the tests::

    .venv/bin/python tests/golden/make.py            # makes the entries whose files are missing
    .venv/bin/python tests/golden/make.py --force    # remakes every entry (old files are lost)

An existing file is never overwritten without ``--force``: a golden file records what an
older version wrote, and remaking it with today's code would prove nothing.  To add files
(a new mode, a new model), add entries to :data:`ENTRIES` and run it without ``--force``.

``manifest.json`` is a list of entries, one per file: the file, the model and mode that made
it, how (``made_by``), what it was made from (``sources``), the version that made it, and for
each image it decodes to, the shape and the SHA-256 of the decoded uint8 pixel array
(``np.ascontiguousarray(pixels).tobytes()``, the array as ``vlaecodec.api`` returns it,
[H, W, C]).  ``tests/test_golden.py`` decodes every entry and checks both.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MANIFEST = HERE / "manifest.json"
SAMPLE = "samples/kodim23_crop.png"

# name -> (rows, columns, Pillow mode) of a crop of the sample: a 24x16 RGB and a 16x16 grey
SOURCES = {
    "rgb": ((slice(40, 56), slice(50, 74)), "RGB"),
    "grey": ((slice(60, 76), slice(30, 46)), "L"),
    "rgb64": ((slice(0, 64), slice(0, 64)), "RGB"),   # large enough for the residual histograms to be used
    "rgb128": ((slice(0, 128), slice(0, 128)), "RGB"),   # the whole sample: large enough for a loop filter
}


def source(name: str) -> np.ndarray:
    """A crop of the bundled sample as uint8 [H, W, C]; ``rgba``: the rgb crop with the grey
    crop of the same box as its alpha."""
    if name == "rgb-opaque":
        rgb = source("rgb")
        return np.ascontiguousarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    if name == "rgb256-tiled":   # large enough for a filter of kind 1 to pay
        return np.ascontiguousarray(np.tile(source("rgb128"), (2, 2, 1)))
    if name == "grey512-tiled":   # large enough (2**18 pixels) to be cut into stripes
        grey = np.asarray(Image.open(ROOT / SAMPLE).convert("L"))[..., None]
        return np.ascontiguousarray(np.tile(grey, (4, 4, 1)))
    if name == "rgba":
        box = SOURCES["rgb"][0]
        sample = Image.open(ROOT / SAMPLE)
        return np.ascontiguousarray(np.dstack([np.asarray(sample.convert("RGB"))[box],
                                               np.asarray(sample.convert("L"))[box]]))
    box, mode = SOURCES[name]
    img = np.asarray(Image.open(ROOT / SAMPLE).convert(mode))[box]
    return np.ascontiguousarray(img if img.ndim == 3 else img[..., None])


def describe(name: str) -> str:
    if name == "rgba":
        return describe("rgb") + ", its L crop as alpha"
    if name == "rgb-opaque":
        return describe("rgb") + ", with an opaque alpha"
    if name == "rgb256-tiled":
        return describe("rgb128") + ", tiled 2 x 2"
    if name == "grey512-tiled":
        return f"{SAMPLE} as L, tiled 4 x 4"
    (rows, cols), mode = SOURCES[name]
    return f"{SAMPLE}[{rows.start}:{rows.stop}, {cols.start}:{cols.stop}] as {mode}"


def pixels_sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


# (file suffix, mode, the api function, its sources, its options): made from each zoo default
# that still decodes.  encode takes one image, the others a list.
KINDS = [
    ("lossless-rgb", "lossless", "encode", ["rgb"], {}),
    ("lossless-grey", "lossless", "encode", ["grey"], {}),
    ("near2-rgb", "near-lossless", "encode", ["rgb"], {"max_error": 2}),
    ("near2-grey", "near-lossless", "encode", ["grey"], {"max_error": 2}),
    ("lossy-rgb", "lossy", "encode_lossy", ["rgb"], {}),
    ("lossy-grey", "lossy", "encode_lossy", ["grey"], {}),
    ("lossy-z2-rgb", "lossy", "encode_lossy", ["rgb"], {"extra_bits": 2}),  # more bits in z
    ("archive", "lossless", "encode_many", ["rgb", "grey"], {}),
]
ENTRIES = [(f"{model}-{suffix}.vlae", model, mode, fn, srcs, {"model": model, **opts})
           for model in ("default", "default-0.2") for suffix, mode, fn, srcs, opts in KINDS]
# format version 3 (vlaecodec 0.4): the compact header, the bottom band without z
V3_KINDS = [("v3-lossless-rgb", "lossless", "encode", ["rgb"], {}),
            ("v3-near2-grey", "near-lossless", "encode", ["grey"], {"max_error": 2}),
            ("v3-archive", "lossless", "encode_many", ["rgb", "grey"], {})]
ENTRIES += [(f"default-{suffix}.vlae", "default", mode, fn, srcs, {"model": "default", **opts})
            for suffix, mode, fn, srcs, opts in V3_KINDS]
# the fast model (vlaecodec 0.5): inner layers narrower than its residual streams
ENTRIES += [(f"fast-{suffix[3:]}.vlae", "fast", mode, fn, srcs, {"model": "fast", **opts})
            for suffix, mode, fn, srcs, opts in V3_KINDS]
# format version 4 (vlaecodec 0.6): the rANS payload, pixels coded from the integer CDF
V4_KINDS = [("v4-lossless-rgb", "lossless", "encode", ["rgb"], {}),
            ("v4-near2-grey", "near-lossless", "encode", ["grey"], {"max_error": 2}),
            ("v4-archive", "lossless", "encode_many", ["rgb", "grey"], {})]
ENTRIES += [(f"{model}-{suffix}.vlae", model, mode, fn, srcs, {"model": model, **opts})
            for model in ("default", "fast") for suffix, mode, fn, srcs, opts in V4_KINDS]
# vlaecodec 0.8: the residual histograms (every new version 4 file), alpha, metadata
V4R_KINDS = [("v4r-lossless-rgb", "lossless", "encode", ["rgb"], {}),
             ("v4r-near2-grey", "near-lossless", "encode", ["grey"], {"max_error": 2}),
             ("v4r-archive-alpha", "lossless", "encode_many", ["rgba", "grey"], {}),
             ("v4r-icc-rgb", "lossless", "encode", ["rgb"], {"metadata": {"icc_profile": b"an ICC profile"}}),
             ("v4r-lossless-rgb64", "lossless", "encode", ["rgb64"], {})]
ENTRIES += [(f"{model}-{suffix}.vlae", model, mode, fn, srcs, {"model": model, **opts})
            for model in ("default", "fast") for suffix, mode, fn, srcs, opts in V4R_KINDS]
# vlaecodec 0.17: format version 5, a large image in stripes (two of 256 rows)
ENTRIES += [("fast-v5-stripes-grey512.vlae", "fast", "lossless", "encode", ["grey512-tiled"], {"model": "fast"})]
# vlaecodec 0.19: a model with no latent (no z in the file, no bits-back)
ENTRIES += [("fast-local-lossless-rgb64.vlae", "fast-local", "lossless", "encode", ["rgb64"], {"model": "fast-local"}),
            ("fast-local-near2-grey.vlae", "fast-local", "near-lossless", "encode", ["grey"],
             {"model": "fast-local", "max_error": 2}),
            ("fast-local-v5-stripes-grey512.vlae", "fast-local", "lossless", "encode", ["grey512-tiled"],
             {"model": "fast-local"})]
# the lossy (hyperprior) model: its picture is drawn in float32, so another machine may decode
# a subpixel one level apart; these entries also keep the decoded pixels (NAME.npy) and allow
# that difference (``tolerance``)
LOSSY_MODELS = ("lossy-0.4", "lossy-0.5", "lossy-0.7", "lossy-0.8", "lossy-0.9", "lossy-0.10", "lossy-0.15", "lossy")
LOSSY_KINDS = [
    ("beta64-rgb", "lossy", "encode_lossy", ["rgb"], {"beta": 64.0}),
    ("beta200-grey", "lossy", "encode_lossy", ["grey"], {"beta": 200.0}),
    ("beta15-archive", "lossy", "encode_lossy", ["rgb", "grey"], {"beta": 15.0}),
]
# made by 0.4's lossy model, which was then called ``lossy`` (hence the files' names)
ENTRIES += [(f"lossy-{suffix}.vlae", "lossy-0.4", mode, fn, srcs, {"model": "lossy-0.4", **opts})
            for suffix, mode, fn, srcs, opts in LOSSY_KINDS]
# 0.5's lossy model (``lossy`` in 0.5 and 0.6, ``lossy-0.5`` since)
ENTRIES += [(f"lossy-0.5-{suffix}.vlae", "lossy-0.5", mode, fn, srcs, {"model": "lossy-0.5", **opts})
            for suffix, mode, fn, srcs, opts in LOSSY_KINDS]
# 0.7's lossy model (256 latent channels; ``lossy`` in 0.7, ``lossy-0.7`` since)
ENTRIES += [(f"lossy-0.7-{suffix}.vlae", "lossy-0.7", mode, fn, srcs, {"model": "lossy-0.7", **opts})
            for suffix, mode, fn, srcs, opts in LOSSY_KINDS]
# 0.8's lossy model (0.7's, trained longer; ``lossy`` in 0.8, ``lossy-0.8`` since), with an
# opaque alpha and a profile in one file
ENTRIES += [(f"lossy-0.8-{suffix}.vlae", "lossy-0.8", mode, fn, srcs, {"model": "lossy-0.8", **opts})
            for suffix, mode, fn, srcs, opts in LOSSY_KINDS]
ENTRIES += [("lossy-0.8-beta64-opaque-icc.vlae", "lossy-0.8", "lossy", "encode_lossy", ["rgb-opaque"],
             {"model": "lossy-0.8", "beta": 64.0, "metadata": [{"icc_profile": b"an ICC profile"}]})]
# 0.9's lossy model (0.8's, trained longer; ``lossy`` in 0.9, ``lossy-0.9`` since) and the
# loop filter (every new lossy file has the flag; on the whole 128x128 sample the coefficients
# are worth sending, on smaller crops not)
FILTERED_KINDS = LOSSY_KINDS + [("beta15-rgb128", "lossy", "encode_lossy", ["rgb128"], {"beta": 15.0})]
ENTRIES += [(f"lossy-0.9-{suffix}.vlae", "lossy-0.9", mode, fn, srcs, {"model": "lossy-0.9", **opts})
            for suffix, mode, fn, srcs, opts in FILTERED_KINDS]
# 0.10's lossy model: 0.9's with a checkerboard context network grown on it, trained on
# (``lossy`` in 0.10, ``lossy-0.10`` since)
ENTRIES += [(f"lossy-0.10-{suffix}.vlae", "lossy-0.10", mode, fn, srcs, {"model": "lossy-0.10", **opts})
            for suffix, mode, fn, srcs, opts in FILTERED_KINDS]
# 0.11's lossy model: 0.10's, trained on; its pictures drawn with numpy (``lossy`` in 0.11 to
# 0.15, ``lossy-0.15`` since)
ENTRIES += [(f"lossy-0.11-{suffix}.vlae", "lossy-0.15", mode, fn, srcs, {"model": "lossy-0.15", **opts})
            for suffix, mode, fn, srcs, opts in FILTERED_KINDS]
# vlaecodec 0.14: the loop filter of kind 1 (four clip levels, loop_filter.CLIPS), the same model
TILED_KINDS = FILTERED_KINDS + [("beta15-rgb256", "lossy", "encode_lossy", ["rgb256-tiled"], {"beta": 15.0})]
ENTRIES += [(f"lossy-0.14-{suffix}.vlae", "lossy-0.15", mode, fn, srcs, {"model": "lossy-0.15", **opts})
            for suffix, mode, fn, srcs, opts in TILED_KINDS]
# 0.16's lossy model: 0.15's trained on, with fitted tables (y's shifted per beta and channel,
# z's per beta)
ENTRIES += [(f"lossy-0.16-{suffix}.vlae", "lossy", mode, fn, srcs, {"model": "lossy", **opts})
            for suffix, mode, fn, srcs, opts in TILED_KINDS]
TOLERANCE = 1
# a filtered picture: the loop filter is exact on its input, but may carry a one-level
# difference of the float32 synthesis a few levels further (docs/FORMAT.md)
TOLERANCE_FILTERED = 4


def made_by(fn: str, srcs: list[str], opts: dict) -> str:
    """The call, as a reader would type it (the sources by name)."""
    images = srcs[0] if fn == "encode" else f"[{', '.join(srcs)}]"
    return f"api.{fn}({images}, {', '.join(f'{k}={v!r}' for k, v in opts.items())})"


def check(mode: str, decoded: list[np.ndarray], images: list[np.ndarray]) -> None:
    """What the mode promises, checked before a file is kept."""
    for out, img in zip(decoded, images):
        assert out.shape == img.shape, (out.shape, img.shape)
        err = int(np.abs(out.astype(int) - img.astype(int)).max())
        if mode == "lossless":
            assert err == 0, "lossless file does not decode to its image"
        elif mode == "near-lossless":
            assert err <= 2, f"near-lossless error {err} > 2"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="remake files that exist (they are lost)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import vlaecodec
    import vlaecodec.api as api
    import vlaecodec.fileformat

    old = {e["file"]: e for e in json.loads(MANIFEST.read_text())} if MANIFEST.exists() else {}
    manifest = []
    for file, model, mode, fn, srcs, opts in ENTRIES:
        path = HERE / file
        if path.exists() and not args.force:
            if file not in old:
                print(f"{file} exists but is not in the manifest: remove it or use --force", file=sys.stderr)
                return 1
            print(f"kept   {file} (exists; --force remakes it)")
            manifest.append(old.pop(file))
            continue
        images = [source(s) for s in srcs]
        data = getattr(api, fn)(images[0] if fn == "encode" else images, **opts)
        decoded = api.decode_many(data)
        check(mode, decoded, images)
        path.write_bytes(data)
        old.pop(file, None)
        entry = {
            "file": file, "model": model, "mode": mode, "made_by": made_by(fn, srcs, opts),
            "sources": [describe(s) for s in srcs], "version": vlaecodec.__version__,
            "images": [{"shape": list(d.shape), "sha256": pixels_sha256(d)} for d in decoded]}
        if model in LOSSY_MODELS:
            np.save(path.with_suffix(".npy"), np.concatenate([d.ravel() for d in decoded]))
            filtered = vlaecodec.fileformat.unpack(data)[0].filtered
            entry.update(reference=path.with_suffix(".npy").name,
                         tolerance=TOLERANCE_FILTERED if filtered else TOLERANCE)
        manifest.append(entry)
        print(f"made   {file} ({len(data)} bytes)")
    manifest += old.values()  # entries made elsewhere (another mode's files) stay as they are
    MANIFEST.write_text("[\n" + ",\n".join(json.dumps(e) for e in manifest) + "\n]\n")  # an entry a line
    return 0


if __name__ == "__main__":
    sys.exit(main())
