"""The command line's first import of numba, without scipy.

When numba loads (``numba/__init__`` and ``numba.np.arraymath``, which checks for a BLAS)
it imports scipy and ``scipy.linalg``; that alone takes 0.3-0.45 s of every lossless command
on the 2-core test machine (an 8x8 decode: 1.8 -> 1.4 s).  So a ``vlaecodec`` process hides
scipy while numba is imported: numba records that it has no BLAS for ``np.inner`` and
``np.vdot``, which the coder never calls.  The kernels' matrix products look their BLAS up
when they first run, and :mod:`vlaecodec.blas` has loaded it by then without
``scipy.linalg``.  scipy is visible again as soon as numba is loaded, so anything else may
import it.

A library process (``import vlaecodec``) is left alone: another package there may compile
numba code that uses BLAS.

>>> import sys
>>> finder = NumbaWithoutBlasProbe()
>>> finder.find_spec("numpy") is None        # any other module: not ours to load
True
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


class _HidingScipy(importlib.abc.Loader):
    """numba's own loader, run with scipy hidden, then its array maths imported so that the
    BLAS check runs while scipy is still hidden."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        hidden = "scipy" not in sys.modules
        if hidden:
            sys.modules["scipy"] = None      # an import of scipy now fails at once
        try:
            self.loader.exec_module(module)
            try:
                importlib.import_module("numba.np.arraymath")
            except ImportError:              # another numba layout: only the saving is lost
                pass
        finally:
            if hidden and "scipy" in sys.modules and sys.modules["scipy"] is None:
                del sys.modules["scipy"]
            # numba's own loader from here on (its resources, is_package, ...)
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader


class NumbaWithoutBlasProbe(importlib.abc.MetaPathFinder):
    """Finds numba as the other finders do, once, and loads it with scipy hidden."""

    def find_spec(self, name, path=None, target=None):
        if name != "numba":
            return None
        sys.meta_path.remove(self)           # once: numba's submodules load as usual
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _HidingScipy(spec.loader)
        return spec


def install() -> None:
    """Before the command runs: numba's first import goes through the finder above."""
    if "numba" not in sys.modules and not any(isinstance(f, NumbaWithoutBlasProbe) for f in sys.meta_path):
        sys.meta_path.insert(0, NumbaWithoutBlasProbe())
