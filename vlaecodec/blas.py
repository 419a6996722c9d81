"""The BLAS that the compiled kernels' matrix products call, loaded once and held to one thread.

numba compiles ``X @ W`` on float64 arrays into a call of ``dgemm`` that it looks up in
``scipy.linalg.cython_blas`` when the product first runs.  Importing that module the usual
way imports all of ``scipy.linalg`` first, 0.25 s of a decoder's start-up on the 2-core test
machine, for one table of function pointers.  :func:`load` loads the one extension module
from scipy's install (about 6 ms) and registers it under its name, where numba finds it; on
any surprise (another layout of scipy, say) it falls back to the usual import.

The kernels run one per coding thread already, and a product of a wave is too small to share
between threads, so the library is held to one thread.  If numpy loaded the same library
first, it is left as it is.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

MODULE = "scipy.linalg.cython_blas"
_loaded = False


def _load_extension() -> None:
    """``MODULE`` from its file, without running ``scipy.linalg``'s package import."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scipy is not installed")
    for folder in spec.submodule_search_locations:
        linalg = importlib.machinery.FileFinder(
            f"{folder}/linalg", (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
        found = linalg.find_spec(MODULE)
        if found is not None and found.loader is not None:
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
            if not getattr(module, "__pyx_capi__", {}).get("dgemm"):
                raise ImportError("no dgemm in scipy's cython_blas")
            sys.modules[MODULE] = module
            return
    raise ImportError(f"{MODULE} not found")


def load() -> None:
    """Make numba's matrix products callable and keep their BLAS to one thread (once per
    process).

    >>> load(); MODULE in sys.modules
    True
    """
    global _loaded
    if _loaded:
        return
    from threadpoolctl import ThreadpoolController
    before = {lib.filepath for lib in ThreadpoolController().lib_controllers}
    if MODULE not in sys.modules:
        try:
            _load_extension()
        except Exception:          # noqa: BLE001 - any failure: the usual, slower import
            importlib.import_module(MODULE)
    ctl = ThreadpoolController()
    new = [lib.filepath for lib in ctl.lib_controllers if lib.filepath not in before]
    if new:
        ctl.select(filepath=new).limit(limits=1)
    _loaded = True
