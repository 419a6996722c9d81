"""Fuzz the decoder: ``python -m bench.fuzz --inputs 100000 [--seed 0]``.

The header cap on declared pixels (VLAECODEC_MAX_PIXELS) is set to 2**14 here, so that the
time limit of 5 s per input separates hangs from honest decodes of large declared images.

Seeds are valid .vlae files (random and flat images, single and archive; lossless,
near-lossless and lossy; with alpha and with metadata) made with a tiny model, and lossy
files of a tiny lossy model, with and without loop-filter coefficients; each input is a
mutation of a seed (byte flips, insertions, deletions, truncation,
random bytes), half of them with the header and payload CRCs recomputed so that the mutation
reaches the ANS decoder and the pixel check.  Every input is decoded in full and as a
preview; each must end in a clean ``VlaeError`` or in a decode (whose pixels verify, where the
file has a digest); anything else (another exception, a hang, a crash) is a
failure.  Prints one JSON line with the counts.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import numpy as np
import torch

from vlaecodec.codec import Codec
from vlaecodec.errors import VlaeError
from vlaecodec.fileformat import reseal, with_metadata
from vlaecodec.model import VLAE, VLAEConfig


def tiny_codec() -> Codec:
    torch.manual_seed(0)
    model = VLAE(VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1, pixel_blocks=1,
                            likelihood="logistic")).eval()
    return Codec(model, "ab" * 32, z_bits=6)


def tiny_lossy():
    """A random lossy (hyperprior) coder, with the loop filter."""
    from vlaecodec.lossy_coder import LossyCoder, LossyTables
    from vlaecodec.lossy_model import LossyConfig, LossyModel
    torch.manual_seed(0)
    model = LossyModel(LossyConfig(n=8, m=12)).eval()
    return LossyCoder(model, LossyTables.from_model(model), "cd" * 8)


def lossy_seeds(coder, rng: np.random.Generator) -> list[bytes]:
    """Files whose pictures a random model draws badly: a loop filter is worth sending for
    some (a test in tests/test_fuzz.py checks that one carries coefficients)."""
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.clip(np.stack([xx * 4, yy * 5, xx + yy], -1), 0, 255).astype(np.uint8)
    noisy = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)
    return [coder.encode([smooth], 800.0), coder.encode([smooth, noisy[..., :1]], 100.0),
            coder.encode([noisy], 20.0)]


class Decoder:
    """Decodes a file with the tiny codec or, for lossy-model files, the tiny lossy coder."""

    def __init__(self, codec: Codec, lossy):
        self.codec, self.lossy = codec, lossy

    def __call__(self, data: bytes, preview: bool = False):
        from vlaecodec.fileformat import MODE_LATENT, unpack_header
        if unpack_header(data)[0].mode == MODE_LATENT:
            return self.lossy.decode(data)
        return self.codec.decode_many(data, preview=preview)


def seeds(codec: Codec, rng: np.random.Generator) -> list[bytes]:
    imgs = [rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), np.full((6, 5, 1), 7, np.uint8),
            rng.integers(0, 256, (20, 3, 1), dtype=np.uint8)]
    rgba = np.dstack([imgs[0], rng.integers(0, 256, (9, 11, 1), dtype=np.uint8)])
    opaque = np.dstack([imgs[0], np.full((9, 11, 1), 255, np.uint8)])
    return ([codec.encode(i) for i in imgs] + [codec.encode_many(imgs), codec.encode(imgs[0], max_error=3),
            codec.encode_many(imgs, max_error=1), codec.encode_lossy(imgs), codec.encode_lossy(imgs[:1], "sample"),
            codec.encode_many([rgba, imgs[1], opaque]),
            with_metadata(codec.encode_many(imgs), [{"icc_profile": bytes(range(200))}, {}, {"exif": b"Exif"}])])


def mutate(seed: bytes, rng: np.random.Generator) -> bytes:
    d = bytearray(seed)
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(0, 5)
        if op == 0 and d:
            i = int(rng.integers(0, len(d)))
            d[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            i = int(rng.integers(0, len(d) + 1))
            d[i:i] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif op == 2 and d:
            i = int(rng.integers(0, len(d)))
            del d[i:i + int(rng.integers(1, 9))]
        elif op == 3:
            d = d[:int(rng.integers(0, len(d) + 1))]
        else:
            d = bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
    if rng.random() < 0.5:
        d = bytearray(reseal(bytes(d), max_runs=64))
    return bytes(d)


class Timeout(Exception):
    pass


FUZZ_MAX_PIXELS = 1 << 14   # the configurable header cap, lowered so that every accepted
                            # header decodes within the time limit (a mutated header may
                            # declare a large image, whose honest decode takes minutes)


def run(n: int, seed: int = 0, time_limit: float = 5.0) -> dict:
    """Fuzz ``n`` mutated files; the lowered pixel cap holds only while it runs."""
    import os
    old = os.environ.get("VLAECODEC_MAX_PIXELS")
    os.environ["VLAECODEC_MAX_PIXELS"] = str(FUZZ_MAX_PIXELS)
    try:
        return _run(n, seed, time_limit)
    finally:   # the caller's process (a test session) keeps its own cap
        if old is None:
            del os.environ["VLAECODEC_MAX_PIXELS"]
        else:
            os.environ["VLAECODEC_MAX_PIXELS"] = old


def _run(n: int, seed: int, time_limit: float) -> dict:
    rng = np.random.default_rng(seed)
    codec, lossy = tiny_codec(), tiny_lossy()
    pool = seeds(codec, rng) + lossy_seeds(lossy, rng)
    decode = Decoder(codec, lossy)
    originals = [decode(s) for s in pool]
    counts = {"inputs": 0, "clean_errors": 0, "decodes": 0, "failures": 0}
    failures = []

    def on_alarm(*_):
        raise Timeout()

    signal.signal(signal.SIGALRM, on_alarm)
    for _ in range(n):
        k = int(rng.integers(0, len(pool)))
        data = mutate(pool[k], rng)
        counts["inputs"] += 1
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            decode(data, preview=bool(rng.integers(0, 2)))
            counts["decodes"] += 1  # where the file has a pixel digest, it matched
        except VlaeError:
            counts["clean_errors"] += 1
        except Exception as e:  # noqa: BLE001 - a fuzz finding
            counts["failures"] += 1
            failures.append(f"{type(e).__name__}: {e} :: {data[:64].hex()}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    counts["examples"] = failures[:5]
    del originals
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz")
    ap.add_argument("--inputs", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t = time.time()
    res = run(args.inputs, args.seed)
    res["seconds"] = round(time.time() - t, 1)
    res["command"] = "python -m bench.fuzz " + " ".join(sys.argv[1:] if argv is None else argv)
    print(json.dumps(res))
    sys.exit(1 if res["failures"] else 0)


if __name__ == "__main__":
    main()
