"""Pillow plugin: after ``import vlaecodec``, ``Image.open("x.vlae")`` decodes and
``im.save("x.vlae")`` encodes, so any program that reads and writes images through Pillow
handles .vlae files without knowing about the codec.

>>> import vlaecodec
>>> from PIL import Image
>>> ".vlae" in Image.registered_extensions() and "VLAE" in Image.OPEN
True

Registration is cheap on purpose: this module imports Pillow only.  The codec (numpy, numba,
the model's weights; torch only for a lossy-model file) is imported the first time a .vlae
image is decoded or saved, and ``Image.open``
itself only parses the header (no model), so ``im.size`` and ``im.mode`` cost nothing.

Opening reads the whole file: .vlae files are small, and a header's length depends on what
it holds.  Every mode opens the same way: lossless and near-lossless files decode to their
pixels, lossy files to the model's picture.  ``im.info`` names the coding mode
(``vlae_mode``), the bound of a near-lossless file (``max_error``), the rate weight of a
lossy file that records one (``beta``) and the file's model (``model_id``); the model is found in the zoo from that id, as ``vlaecodec decode`` does.
An image's ICC profile, EXIF and XMP come back in ``im.info`` (``icc_profile``, ``exif``,
``xmp``), and saving keeps them (from the save parameters of those names, else from
``im.info``).

Archives (several images in one file, ``vlaecodec encode --archive``) open as a multi-frame
image: ``im.n_frames`` images, ``im.seek(k)`` picks one, and each frame has its own size and
mode.  Their images are chained on one ANS stack, so no frame decodes without the others:
the first load decodes them all and keeps them for later seeks.

Saving takes the codec's options as save parameters:

* ``max_error=d``: near-lossless, every subpixel within d (0, the default, is lossless);
* ``model="default"``: a zoo name or a .safetensors path; or ``beta=B``: the zoo model
  trained at that beta (not both), as ``vlaecodec encode --beta`` does;
* ``lossy=True``: a lossy file (excludes ``max_error``), made as :func:`vlaecodec.api.encode_lossy`
  makes it: by default with the lossy (hyperprior) model, whose dial is ``beta=B`` (higher:
  smaller file) or ``target_bpp=R`` (bits per pixel); with a VLAE ``model`` (``default``,
  ``beta-0.5``, ...) the file holds z only and ``recon``, ``seed``, ``z_extra_bits`` apply;
* ``effort=2``: as ``vlaecodec encode --effort 2``: a lossless or near-lossless file tries
  both general models and keeps the smaller; a lossy one searches its latents (slower to
  encode, a smaller file at the same quality);
* ``save_all=True`` with ``append_images=[...]``: one archive holding every frame.

So ``beta`` means what it means for the kind of file asked for: a lossless or near-lossless
file's model, a lossy file's rate.

Images are 8-bit grey (``L``) or ``RGB``, with or without alpha (``LA``, ``RGBA``); ``1`` and
palette images are widened to those first (no pixel changes), anything else (16-bit,
premultiplied alpha) is refused.

Failures are :class:`VlaeImageError`, both a :class:`~vlaecodec.errors.VlaeError` (the
codec's one-line message) and an ``OSError`` (what code around Pillow already catches).
"""
from __future__ import annotations

from PIL import Image, ImageFile, ImageSequence

from .errors import VlaeError

FORMAT = "VLAE"
EXTENSION = ".vlae"
_MAGIC = b"VLAE"
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}     # by the decoded array's channels
_METADATA = ("icc_profile", "exif", "xmp")           # Pillow's info keys, the file's too
PNG_XMP = "XML:com.adobe.xmp"                        # the iTXt keyword that holds XMP in a PNG


class VlaeImageError(VlaeError, OSError):
    """A .vlae file Pillow cannot open, decode or write: corrupt, truncated, its model missing."""


def _tile(*parts):
    """A tile entry: Pillow 11 made it a named tuple, 10.x takes the plain tuple."""
    return ImageFile._Tile(*parts) if hasattr(ImageFile, "_Tile") else parts


def _accept(prefix: bytes) -> bool:
    # only the magic: a file that claims to be .vlae but is broken gets our own error
    return prefix[:4] == _MAGIC


class VlaeImageFile(ImageFile.ImageFile):
    """A .vlae file: the header is parsed at open, the pixels decoded on ``load()``."""

    format = FORMAT
    format_description = "vlaecodec learned image codec"

    def _open(self) -> None:
        from .fileformat import MODE_NAMES, unpack_header
        self._data = self.fp.read()
        try:
            header, _ = unpack_header(self._data)
        except VlaeError as e:
            raise VlaeImageError(str(e)) from None
        self._shapes = header.images
        self._metadata = header.metadata
        self._frames: list | None = None  # every decoded frame of an archive, after one load
        self.info.update(vlae_mode=MODE_NAMES[header.mode], model_id=header.model_id,
                         images=len(header.images))
        if header.max_error:
            self.info["max_error"] = header.max_error
        if getattr(header, "beta", 0):  # a lossy file of the hyperprior family names its rate weight
            self.info["beta"] = header.beta
        if self.is_animated:  # seeked after a load, which sets fp to None: keep the file (as GIF does)
            self._fp = self.fp
            self._close_exclusive_fp_after_loading = False
        self._frame = -1
        self._select(0)

    @property
    def n_frames(self) -> int:
        return len(self._shapes)

    @property
    def is_animated(self) -> bool:
        return len(self._shapes) > 1

    def tell(self) -> int:
        return self._frame

    def seek(self, frame: int) -> None:
        if self._seek_check(frame):
            self._select(frame)

    def _select(self, frame: int) -> None:
        """Make ``frame`` the current image: its own size and mode, pixels not yet decoded."""
        shape = self._shapes[frame]
        self._frame = frame
        self._size = (shape.width, shape.height)
        self._mode = _MODES[shape.shown_channels]
        for key in _METADATA:     # this frame's ICC profile, EXIF and XMP, as Pillow names them
            self.info.pop(key, None)
        self.info.update(self._metadata.get(frame, {}))
        self.im = None  # the previous frame's pixels, possibly of another size
        if self.is_animated:
            self.fp = self._fp
        self.tile = [_tile(FORMAT, (0, 0, *self._size), 0, (frame, self._pixels))]

    def load_seek(self, pos: int) -> None:
        """The bytes were read at open; Pillow's seek to the tile's offset is not needed."""

    def _pixels(self, frame: int):
        """The decoded uint8 [H,W,C] pixels of one frame (the codec is imported here, not at
        open, so that opening stays cheap)."""
        from . import api
        try:
            if self._frames is None:
                frames = api.decode_many(self._data)
                if len(frames) == 1:
                    return frames[0]
                self._frames = frames
            return self._frames[frame]
        except VlaeError as e:
            raise VlaeImageError(str(e)) from None


class _Decoder(ImageFile.PyDecoder):
    """Hands one decoded frame to Pillow.  It "pulls" the file so that Pillow does not read it
    again in chunks: the bytes are already in memory."""

    _pulls_fd = True

    def decode(self, buffer) -> tuple[int, int]:
        frame, pixels_of = self.args
        pixels = pixels_of(frame)
        w, h = self.state.xsize, self.state.ysize
        channels = len(self.mode)      # L, LA, RGB, RGBA: a letter a channel
        if pixels.shape != (h, w, channels):
            raise VlaeImageError(f"decoded image is {pixels.shape}, the header says {(h, w, channels)}")
        self.set_as_raw(pixels.tobytes())
        return -1, 0


# --- saving ------------------------------------------------------------------------------
def _options(info: dict) -> dict:
    """The save parameters, checked before the codec is imported: a wrong option fails fast."""
    from .fileformat import MAX_ERROR, RECON_NAMES
    max_error = int(info.get("max_error", 0))
    lossy = bool(info.get("lossy", False))
    model, beta = info.get("model"), info.get("beta")
    recon = info.get("recon", "mean")
    extra = int(info.get("z_extra_bits", 0))
    if not 0 <= max_error <= MAX_ERROR:
        raise ValueError(f"max_error must be 0 to {MAX_ERROR}, not {max_error}")
    if lossy and max_error:
        raise ValueError("lossy and max_error exclude each other")
    target = info.get("target_bpp")
    if not lossy and model is not None and beta is not None:
        raise ValueError("give model or beta, not both")
    if target is not None and not lossy:
        raise ValueError("target_bpp is for lossy files")
    if recon not in RECON_NAMES:
        raise ValueError(f"recon must be one of {', '.join(RECON_NAMES)}, not {recon!r}")
    if not -8 <= extra <= 8:
        raise ValueError(f"z_extra_bits must be -8 to 8, not {extra}")
    effort = info.get("effort", 1)
    if effort not in (1, 2):
        raise ValueError(f"effort must be 1 or 2, not {effort!r}")
    return dict(max_error=max_error, lossy=lossy, model=model, beta=beta, recon=recon,
                seed=int(info.get("seed", 0)), extra_bits=extra, target_bpp=target, effort=effort)


def _array(im: Image.Image):
    """uint8 [H,W,C] of an L, LA, RGB or RGBA image; 1 and palette images are widened
    losslessly (to RGBA where the palette has transparency)."""
    import numpy as np
    if im.mode == "1":
        im = im.convert("L")
    elif im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode not in _MODES.values():
        raise VlaeImageError(f"cannot write mode {im.mode} as {FORMAT}: 8-bit L, LA, RGB or RGBA only; "
                             "convert the image first")
    arr = np.asarray(im)
    return np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr)


def image_metadata(im: Image.Image, params: dict | None = None) -> dict[str, bytes]:
    """The ICC profile, EXIF and XMP to keep, as bytes (absent ones left out): the save
    parameters' (``params``), else the image's own ``info`` (a PNG's XMP also under its iTXt
    keyword).  The command line reads its inputs' metadata with this too."""
    params = params or {}
    out = {}
    for key in _METADATA:
        value = params.get(key, im.info.get(key))
        if key == "xmp" and not value:
            value = im.info.get(PNG_XMP)
        if isinstance(value, Image.Exif):
            value = value.tobytes()
        if value:
            out[key] = value.encode() if isinstance(value, str) else bytes(value)
    return out


def _encode(images: list, opts: dict, metadata: list[dict]) -> bytes:
    from . import api
    from .zoo import DEFAULT_MODEL, model_for_beta
    try:
        if opts["lossy"]:  # the api picks the lossy default model unless one is named
            named = {} if opts["model"] is None else {"model": opts["model"]}
            return api.encode_lossy(images, recon=opts["recon"], seed=opts["seed"],
                                    extra_bits=opts["extra_bits"], beta=opts["beta"],
                                    target_bpp=opts["target_bpp"], metadata=metadata, effort=opts["effort"],
                                    **named)
        model = model_for_beta(opts["beta"]) if opts["beta"] is not None else opts["model"] or DEFAULT_MODEL
        return api.encode_many(images, model, max_error=opts["max_error"], metadata=metadata, effort=opts["effort"])
    except (VlaeError, FileNotFoundError) as e:
        raise VlaeImageError(str(e)) from None


def _save(im: Image.Image, fp, filename, save_all: bool = False) -> None:
    opts = _options(im.encoderinfo)
    sources = [im, *im.encoderinfo.get("append_images", [])] if save_all else [im]
    images, metadata = [], []
    for source in sources:
        # (a multi-frame source yields itself at each frame: read each frame as it comes)
        for frame in (ImageSequence.Iterator(source) if save_all else [source]):
            images.append(_array(frame))
            # the first frame takes the save parameters' metadata; the others keep their own
            metadata.append(image_metadata(frame, im.encoderinfo if not metadata else {}))
    fp.write(_encode(images, opts, metadata))


def _save_all(im: Image.Image, fp, filename) -> None:
    _save(im, fp, filename, save_all=True)


def register() -> None:
    """Tell Pillow about .vlae (idempotent: Pillow keys every table by the format name)."""
    Image.register_open(FORMAT, VlaeImageFile, _accept)
    Image.register_decoder(FORMAT, _Decoder)
    Image.register_save(FORMAT, _save)
    Image.register_save_all(FORMAT, _save_all)
    Image.register_extension(FORMAT, EXTENSION)
