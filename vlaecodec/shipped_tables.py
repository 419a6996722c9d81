"""Fixed integer tables shipped with the package, so that no process recomputes them.

The exp, sigmoid and 1/scale tables of :mod:`vlaecodec.fixedpoint` come from Python's
``decimal`` module: exact and the same on every machine, but 0.12 s of every coding
process's start-up on the 2-core test machine.  ``tables.npz`` holds them as made by
``python -m vlaecodec.shipped_tables``; the tests recompute every table the file holds and
compare them entry by entry, so it can hold nothing but what the ``decimal`` code gives.  A
table the file lacks (or a missing file) is computed as before.

>>> from vlaecodec.fixedpoint import exp_table
>>> bool((table("exp", lambda: None) == exp_table()).all())
True
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

FILE = Path(__file__).with_name("tables.npz")


@lru_cache(maxsize=1)
def stored() -> dict[str, np.ndarray]:
    """The tables in ``FILE`` by name (none when it cannot be read)."""
    try:
        with np.load(FILE) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError):
        return {}


def table(name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The stored table ``name``, or ``compute()`` when the file has none."""
    t = stored().get(name)
    return compute() if t is None else t


def main() -> None:
    """Write ``FILE`` from the ``decimal`` code: every table that coding uses."""
    from .fixedpoint import fixed_tables
    tables = {name: compute() for name, compute in fixed_tables().items()}
    np.savez_compressed(FILE, **tables)
    print(f"{FILE}: {', '.join(f'{k} [{len(v)}]' for k, v in tables.items())}")


if __name__ == "__main__":
    main()
