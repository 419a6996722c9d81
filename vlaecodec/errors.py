"""Errors the codec reports to users as one line."""
from __future__ import annotations


class VlaeError(Exception):
    """A user-facing failure: bad input, corrupt file, wrong model."""


def describe(e: BaseException) -> str:
    """One line for any exception at the CLI boundary."""
    if isinstance(e, VlaeError):
        return str(e)
    if isinstance(e, FileNotFoundError):
        return f"not found: {e.filename or e}"
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename or e}"
    if isinstance(e, IsADirectoryError):
        return f"is a directory: {e.filename or e}"
    if isinstance(e, OSError) and e.errno == 28:
        return "no space left on device"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
