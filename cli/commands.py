"""What the codec commands do with files: read images safely, write outputs atomically (with
the mode a plain ``open()`` would give), never overwrite without --force, report one line or
one JSON object per input.  All coding goes through :mod:`vlaecodec.api`; a failure is one
line on stderr and a non-zero exit.

>>> EncodeOptions(max_error=2).describe(), EncodeOptions(lossy=True).mode
({'mode': 'near-lossless', 'max_error': 2}, 'lossy')
"""
from __future__ import annotations

import io
import json
import os
import stat
import sys
import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vlaecodec.errors import VlaeError, describe
from vlaecodec.fileformat import MAX_SIDE, max_pixels
from vlaecodec.pillow_plugin import PNG_XMP, image_metadata

STDIO = "-"


# --- images in and out -------------------------------------------------------------------
def read_image(path: str) -> np.ndarray:
    """The pixels of :func:`read_picture`."""
    return read_picture(path)[0]


def read_picture(path: str) -> tuple[np.ndarray, dict[str, bytes]]:
    """(pixels, metadata): an 8-bit grey or RGB image, with or without alpha, as uint8 [H,W,C] (C = 1, 3; 2, 4
    with alpha last); anything else is a clear VlaeError.

    Palette images become RGB (or grey when the palette is grey; with alpha where the palette
    has transparency): same pixels, no loss.
    Stored pixels are coded as they are: EXIF orientation is not applied.  The metadata are
    what the file carries beside its pixels that a viewer needs or a photographer keeps: the
    ICC profile, EXIF and XMP (:func:`vlaecodec.pillow_plugin.image_metadata`)."""
    if path != STDIO and Path(path).is_dir():
        raise VlaeError(f"{path}: is a directory")
    source = sys.stdin.buffer if path == STDIO else path
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h == 0:
                raise VlaeError(f"{path}: image has no pixels ({w}x{h})")
            if w * h > max_pixels() or max(w, h) > MAX_SIDE:
                raise VlaeError(f"{path}: {w}x{h} is over the size limit ({max_pixels()} pixels, "
                                f"{MAX_SIDE} a side; VLAECODEC_MAX_PIXELS)")
            if getattr(im, "n_frames", 1) > 1:
                raise VlaeError(f"{path}: animated images are not supported")
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise VlaeError(f"{path}: {mode} images (16-bit or float) are not supported; 8-bit grey or RGB only")
            if mode in ("La", "RGBa"):   # straightening premultiplied alpha would round
                raise VlaeError(f"{path}: premultiplied alpha ({mode}) is not supported; straight alpha only")
            if mode not in ("L", "RGB", "1", "P", "LA", "RGBA", "PA"):
                raise VlaeError(f"{path}: {mode} images are not supported; 8-bit grey or RGB, with or without alpha")
            im.load()
            meta = image_metadata(im)
            if mode in ("P", "PA"):
                alpha = mode == "PA" or "transparency" in im.info
                rgb = np.asarray(im.convert("RGBA" if alpha else "RGB"))
                if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
                    rgb = rgb[..., 2:] if alpha else rgb[..., :1]   # grey (and alpha)
                return np.ascontiguousarray(rgb), meta
            arr = np.asarray(im.convert("L") if mode == "1" else im)
    except Image.DecompressionBombError:
        raise VlaeError(f"{path}: declared size is over the size limit (VLAECODEC_MAX_PIXELS)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise VlaeError(f"{path}: no such file") from None
        raise VlaeError(f"{path}: not a readable image ({type(e).__name__})") from None
    if arr.size == 0:
        raise VlaeError(f"{path}: image has no pixels")
    return np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr), meta


def png_bytes(img: np.ndarray, meta: dict[str, bytes] | None = None, lossy: bool = False) -> bytes:
    """A PNG of the pixels, with the ICC profile, EXIF and XMP where given.

    ``lossy``: the picture of a lossy file (or a preview), deflated with zlib's run-length
    strategy: 3.5-5 times faster than the default strategy, which took about a tenth of a
    lossy decode's time, and about as small on such pictures, which have runs but no exact
    repeats far apart.  An exact image (graphics, screenshots) keeps the default strategy:
    with runs alone, flat graphics came out up to 1.66 times larger (CHANGELOG 0.15)."""
    from PIL.PngImagePlugin import PngInfo
    meta = meta or {}
    extra = {k: meta[k] for k in ("icc_profile", "exif") if k in meta}
    if lossy:
        extra["compress_type"] = zlib.Z_RLE
    if "xmp" in meta:
        info = PngInfo()
        info.add_itxt(PNG_XMP, meta["xmp"].decode("utf-8", "replace"))
        extra["pnginfo"] = info
    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(buf, format="PNG", **extra)
    return buf.getvalue()


def threads_for(threads: int | None, jobs: int) -> int:
    """--threads as given, else the cores this process may use, shared by the --jobs
    processes: a lossless Kodak image decodes in 73-88% of its one-thread time on two cores
    (``python -m bench.speed``), and no file depends on it (lossy --effort 2's aside)."""
    if threads is not None:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, jobs))


def read_bytes(path: str) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    p = Path(path)
    if p.is_dir():
        raise VlaeError(f"{path}: is a directory")
    if not p.exists():
        raise VlaeError(f"{path}: no such file")
    return p.read_bytes()


def check_writable(path: str, force: bool) -> None:
    """Refuse before any work: an existing output without --force, or a missing folder."""
    if path == STDIO:
        return
    p = Path(path)
    if p.exists() and not force:
        raise VlaeError(f"{path}: exists (use --force to overwrite)")
    if p.is_dir():
        raise VlaeError(f"{path}: is a directory")
    if not p.parent.exists():
        raise VlaeError(f"{p.parent}: no such folder")
    if not os.access(p.parent, os.W_OK):
        raise VlaeError(f"{p.parent}: not writable")


def open_mode(path: Path) -> int:
    """The permissions ``open(path, "w")`` would leave: an existing file keeps its own, a new
    one gets 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # read it: os has no getter
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file beside the target, then rename: never a partial output.
    The output gets the permissions of a plain ``open()`` (:func:`open_mode`), not the
    temporary file's private 0o600."""
    if path == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), open_mode(p))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- encode ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodeOptions:
    """Lossless (the default), near-lossless (max_error > 0) or lossy: with a lossy model at
    ``beta`` or ``target_bpp``, with a VLAE model z only (``recon``, ``seed``, ``extra_bits``)."""
    max_error: int = 0
    lossy: bool = False
    recon: str = "mean"
    seed: int = 0
    extra_bits: int = 0
    beta: float | None = None
    target_bpp: float | None = None
    progress: bool = False      # a bar per large image: on a terminal, one job, no --json
    effort: int = 1             # lossless and near-lossless: 2 also tries other models; lossy: 2 searches the latents
    strip: bool = False         # drop the inputs' ICC profiles, EXIF and XMP

    @property
    def mode(self) -> str:
        return "lossy" if self.lossy else "near-lossless" if self.max_error else "lossless"

    def encode(self, images: list[np.ndarray], model: str, threads: int,
               metadata: list[dict[str, bytes]] | None = None, pictures: bool = False):
        """The file; with ``pictures`` (lossy only), (file, the pictures it decodes to)."""
        from vlaecodec import api
        metadata = None if self.strip else metadata
        if self.lossy:
            return api.encode_lossy(images, model, self.recon, self.seed, self.extra_bits, beta=self.beta,
                                    target_bpp=self.target_bpp, threads=threads, progress=self.progress,
                                    metadata=metadata, return_pictures=pictures, effort=self.effort)
        return api.encode_many(images, model, max_error=self.max_error, threads=threads, progress=self.progress,
                               effort=self.effort, metadata=metadata)

    def describe(self) -> dict:
        out = {"mode": self.mode}
        if self.max_error:
            out["max_error"] = self.max_error
        if self.effort > 1:
            out["effort"] = self.effort
        return out


def _output_for(inp: str, output: str | None, many: bool, suffix: str) -> str:
    if output == STDIO or (output and not many):
        return output
    name = "stdin" if inp == STDIO else Path(inp).stem
    folder = Path(output) if output else (Path(".") if inp == STDIO else Path(inp).parent)
    return str(folder / f"{name}{suffix}")


def _float_threads(threads: int) -> None:
    """torch's CPU threads, set only where a float model runs (the ELBO): coding runs on
    numpy and never imports torch; the lossy model's coder sets its own BLAS threads around
    its transforms."""
    import torch
    torch.set_num_threads(threads)


def _encode_one(args) -> dict:
    inp, out, model_name, threads, with_elbo, opts = args
    from vlaecodec import api
    from vlaecodec.quality import psnr
    img, meta = read_picture(inp)
    # a lossy file's picture is what the user gets: its PSNR is reported
    drawn = opts.lossy and api.is_lossy(model_name)
    data = opts.encode([img], model_name, threads, [meta], pictures=drawn)
    if drawn:
        data, (picture,) = data
    write_atomic(out, data)
    rec = {"input": inp, "output": out, "width": img.shape[1], "height": img.shape[0],
           "channels": img.shape[2], "bytes": len(data), "bpd": len(data) * 8 / img.size,
           "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]), **opts.describe()}
    if opts.effort > 1 and not drawn:   # the model that won
        rec["model"] = api.info(data).get("model_name")
    if drawn:
        rec["beta"] = api.info(data)["beta"]
        rec["psnr"] = psnr(img, picture)
    elif with_elbo:
        _float_threads(threads)
        distortion, rate = api.elbo_parts(img, model_name)
        rec["elbo_bpd"] = distortion + rate
        if opts.lossy:  # what z costs in the model, beside what it cost in the file
            rec["kl_bpd"] = rate
    return rec


def _prepare_outputs(pairs, force):
    for _, out in pairs:
        check_writable(out, force)
    if len({o for _, o in pairs}) != len(pairs):
        raise VlaeError("several inputs would write the same output")


def encode_command(inputs, output, archive, model_name, force, as_json, jobs, threads, with_elbo,
                   opts: EncodeOptions = EncodeOptions()) -> int:
    """Encode each input to its own file, or all into one archive; the number of failed inputs."""
    opts = replace(opts, progress=_bars_wanted(as_json, jobs, len(inputs)))
    if archive or (len(inputs) > 1 and output and output.endswith(".vlae")):
        return _encode_archive(inputs, output, model_name, force, as_json, threads, with_elbo, opts)
    many = len(inputs) > 1
    if many and output and output != STDIO and not Path(output).is_dir():
        raise VlaeError(f"{output}: several inputs need an existing output folder (or --archive)")
    pairs = [(i, _output_for(i, output, many, ".vlae")) for i in inputs]
    _prepare_outputs(pairs, force)
    tasks = [(i, o, model_name, threads, with_elbo, opts) for i, o in pairs]
    return _run(tasks, _encode_one, jobs, as_json)


def _encode_archive(inputs, output, model_name, force, as_json, threads, with_elbo, opts) -> int:
    if not output:
        raise VlaeError("an archive needs -o OUT.vlae")
    check_writable(output, force)
    images, metas = zip(*[read_picture(i) for i in inputs])
    images = list(images)
    data = opts.encode(images, model_name, threads, list(metas))
    write_atomic(output, data)
    dims = sum(i.size for i in images)
    rec = {"output": output, "images": len(images), "bytes": len(data), "bpd": len(data) * 8 / dims,
           **opts.describe()}
    if with_elbo:
        from vlaecodec.api import elbo_bpd
        _float_threads(threads)
        colour = [i[..., :3 if i.shape[2] >= 3 else 1] for i in images]   # the ELBO is the colour's
        rec["elbo_bpd"] = sum(elbo_bpd(i, model_name) * i.size for i in colour) / sum(i.size for i in colour)
    _report(rec, as_json)
    return 0


def _report(rec: dict, as_json: bool) -> None:
    stream = sys.stderr if rec.get("output") == STDIO else sys.stdout  # stdout may carry the file itself
    if as_json:
        print(json.dumps(rec), file=stream, flush=True)
    else:
        line = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items())
        print(line, file=stream, flush=True)


def _run(tasks, fn, jobs, as_json) -> int:
    """fn over every task, each report or one-line error printed as it comes; the number of
    failures.  Over several inputs, failures are also counted in one final error."""
    failures = 0
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp     # here: a one-file command need not import them
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(fn, t) for t in tasks]
            for t, f in zip(tasks, futures):
                failures += _collect(t[0], f.result, as_json)
    else:
        progress = _progress(len(tasks), as_json)
        for t in tasks:
            failures += _collect(t[0], lambda t=t: fn(t), as_json)
            progress()
    if failures and len(tasks) > 1:
        raise VlaeError(f"{failures} of {len(tasks)} inputs failed")
    return failures   # one input: its one-line error is already printed


def _bars_wanted(as_json: bool, jobs: int, inputs: int) -> bool:
    """Per-image bars only where a person watches one process: a terminal, no --json, and
    one job (parallel workers would draw over each other)."""
    return sys.stderr.isatty() and not as_json and (jobs <= 1 or inputs <= 1)


def _progress(total: int, as_json: bool):
    if total < 3 or not _bars_wanted(as_json, 1, total):
        return lambda: None
    from tqdm import tqdm
    bar = tqdm(total=total, unit="img")
    return lambda: bar.update(1)


def _collect(name, result, as_json) -> int:
    try:
        _report(result(), as_json)
        return 0
    except Exception as e:  # noqa: BLE001 - one bad input must not stop the others
        _error(name, e)
        return 1


def _error(name, e: Exception) -> None:
    """One line on stderr naming the input (once)."""
    msg = describe(e)
    print(f"vlaecodec: error: {msg if msg.startswith(str(name)) else f'{name}: {msg}'}", file=sys.stderr)


# --- decode ------------------------------------------------------------------------------
def _decode_one(args) -> dict:
    inp, out, model_name, threads, preview, recon, progress = args
    from vlaecodec.api import decode_many, metadata
    from vlaecodec.fileformat import MODE_LATENT, MODE_LOSSY, unpack_header
    data = read_bytes(inp)
    images = decode_many(data, None if model_name == "auto" else model_name, preview, recon, threads=threads,
                         progress=progress)
    metas = metadata(data)
    lossy = preview or unpack_header(data)[0].mode in (MODE_LOSSY, MODE_LATENT)
    if len(images) == 1:
        write_atomic(out, png_bytes(images[0], metas[0], lossy))
        return {"input": inp, "output": out, "width": images[0].shape[1], "height": images[0].shape[0]}
    folder = Path(out).with_suffix("") if out != STDIO else None
    if folder is None:
        raise VlaeError("an archive decodes to a folder, not stdout")
    folder.mkdir(exist_ok=True)
    for k, img in enumerate(images):
        write_atomic(str(folder / f"{k:05d}.png"), png_bytes(img, metas[k], lossy))
    return {"input": inp, "output": str(folder), "images": len(images)}


def decode_command(inputs, output, model_name, force, jobs, threads, preview=False, recon="mean") -> int:
    """Decode each input to PNG (an archive to a folder of PNGs); the number of failed inputs."""
    many = len(inputs) > 1
    if many and output and output != STDIO and not Path(output).is_dir():
        raise VlaeError(f"{output}: several inputs need an existing output folder")
    pairs = [(i, _output_for(i, output, many, ".png")) for i in inputs]
    _prepare_outputs(pairs, force)
    progress = _bars_wanted(False, jobs, len(pairs))
    return _run([(i, o, model_name, threads, preview, recon, progress) for i, o in pairs], _decode_one, jobs,
                as_json=False)


# --- info --------------------------------------------------------------------------------
def info_command(files, as_json) -> int:
    """Describe each file from its header; the number of files that could not be read."""
    from vlaecodec import api
    failures = 0
    for f in files:
        try:
            _report({"file": f, **api.info(read_bytes(f))}, as_json)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            _error(f, e)
            failures += 1
    return failures
