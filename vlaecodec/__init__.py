"""vlaecodec: a learned image codec (lossless, near-lossless, lossy) built on the Variational Lossy
Autoencoder.

Importing the package is cheap (no torch, no numpy): it registers the .vlae Pillow plugin
(:mod:`vlaecodec.pillow_plugin`), whose opener and saver load the codec when first used.
``__version__`` is read from the installed package's metadata, so it cannot drift from
pyproject.toml the way a hand-written string did.
"""
from . import pillow_plugin as _pillow_plugin

_pillow_plugin.register()


def __getattr__(name: str):
    # computed on first use: importlib.metadata costs more than the rest of this import
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            value = version("vlaecodec")
        except PackageNotFoundError:  # run from a source tree that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
