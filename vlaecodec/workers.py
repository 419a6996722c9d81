"""Threads for work that releases the GIL (numba kernels, numpy's products): a pool of
``threads`` threads, or none, so that one thread runs everything in place.  No numba here:
the lossy coder, which never starts numba, shares them with the lossless one.

>>> with workers(1) as pool:
...     pool is None, pool_map(pool, abs, [-1, 2])
(True, [1, 2])
>>> with workers(2) as pool:
...     pool_map(pool, abs, range(-2, 1))
[2, 1, 0]
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager


@contextmanager
def workers(threads: int):
    """A thread pool for ``threads`` > 1, else None (everything then runs in this thread)."""
    if threads <= 1:
        yield None
        return
    with ThreadPoolExecutor(threads) as pool:
        yield pool


def pool_map(pool, fn, items) -> list:
    """[fn(item) for item in items], in the pool when there is one and more than one item."""
    return list(pool.map(fn, items)) if pool and len(items) > 1 else [fn(i) for i in items]
