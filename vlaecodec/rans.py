"""The entropy coder of version 4 files: a range-ANS stack over integer frequencies.

Every symbol is pushed or popped with an integer interval ``[start, start + freq)`` of
``2**PRECISION``; nothing else about its model reaches the coder, so a model that gives both
ends the same integers gives them the same bits (no float re-quantization, unlike a
categorical table handed to constriction).  The state is an int64 below 2**63, at least
2**31 once a word has been written (renormalised by 32-bit words).  It starts at 0, so a
short payload is not padded with an empty state: the state is written as one word while
it fits in one and nothing lies under it.  A stack: the last symbol pushed is the first
popped, which is what bits-back coding needs (:mod:`vlaecodec.bands`).

The helpers :func:`push_symbol`, :func:`pop_slot` and :func:`pop_symbol` are compiled for
use inside other kernels (the pixel coder pops straight from its own loops,
:mod:`vlaecodec.wave_coder`); :class:`AnsStack` is the Python face.

>>> ans = AnsStack()
>>> ans.push_uniform(np.array([3, 1, 4]), 3)
>>> cdf = quantized_cdf(np.array([[0, 5, 6, 10]]), 10)       # masses 5, 1, 4 of 10
>>> ans.push_rows(np.array([2]), cdf)
>>> words = ans.compressed()
>>> back = AnsStack(words)
>>> back.pop_rows(cdf).tolist(), back.pop_uniform(3, 3).tolist(), back.is_empty()
([2], [3, 1, 4], True)
"""
from __future__ import annotations

import numpy as np
from numba import njit

PRECISION = 24                  # every interval is a part of 2**24
WORD_BITS = 32
STATE_LOW = 1 << 31             # below 2**63 (an int64 never overflows), above 2**31 over words
_RENORM_SHIFT = 63 - PRECISION  # push emits a word when state >= freq << 39
_SLOT_MASK = (1 << PRECISION) - 1
_WORD_MASK = (1 << WORD_BITS) - 1


@njit(cache=True, nogil=True, inline="always")
def push_symbol(state, buf, n, start, freq):
    """Push [start, start + freq) onto (state, buf[:n]); returns the new (state, n).  At most
    one word is written, so buf needs one free place per symbol."""
    if state >= freq << _RENORM_SHIFT:
        buf[n] = state & _WORD_MASK
        n += 1
        state >>= WORD_BITS
    return ((state // freq) << PRECISION) + state % freq + start, n


@njit(cache=True, nogil=True, inline="always")
def pop_slot(state):
    """The slot in [0, 2**PRECISION) whose interval holds the next symbol."""
    return state & _SLOT_MASK


@njit(cache=True, nogil=True, inline="always")
def pop_symbol(state, buf, n, start, freq):
    """Remove the symbol of interval [start, start + freq) (which holds ``pop_slot(state)``)
    from (state, buf[:n]); returns the new (state, n).  An empty buffer is not read past:
    the state then only shrinks (bits-back pops from a short stack stay invertible)."""
    state = freq * (state >> PRECISION) + (state & _SLOT_MASK) - start
    if state < STATE_LOW and n > 0:
        n -= 1
        state = (state << WORD_BITS) | np.int64(buf[n])
    return state, n


@njit(cache=True, nogil=True)
def _push_rows(state, buf, n, symbols, cdf):
    for i in range(symbols.shape[0] - 1, -1, -1):
        s = symbols[i]
        state, n = push_symbol(state, buf, n, cdf[i, s], cdf[i, s + 1] - cdf[i, s])
    return state, n


@njit(cache=True, nogil=True)
def _pop_rows(state, buf, n, cdf, out):
    for i in range(cdf.shape[0]):
        slot = pop_slot(state)
        lo, hi = 0, cdf.shape[1] - 1          # cdf[i, lo] <= slot < cdf[i, hi]
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if cdf[i, mid] <= slot:
                lo = mid
            else:
                hi = mid
        out[i] = lo
        state, n = pop_symbol(state, buf, n, cdf[i, lo], cdf[i, hi] - cdf[i, lo])
    return state, n


@njit(cache=True, nogil=True)
def _pop_uniform(state, buf, n, shift, out):
    freq = 1 << shift
    for i in range(out.shape[0]):
        s = pop_slot(state) >> shift
        out[i] = s
        state, n = pop_symbol(state, buf, n, s << shift, freq)
    return state, n


@njit(cache=True, nogil=True)
def _push_intervals(state, buf, n, starts, freqs):
    for i in range(starts.shape[0] - 1, -1, -1):
        state, n = push_symbol(state, buf, n, starts[i], freqs[i])
    return state, n


@njit(cache=True, nogil=True)
def _quantize(cum, total, out):
    """out[i, k] = floor(cum[i, k] * (2**P - m) / total) + k: the cumulative masses on the
    coder's scale, every one of the m symbols given at least one slot."""
    m = cum.shape[1] - 1
    span = (1 << PRECISION) - m
    for i in range(cum.shape[0]):
        for k in range(m + 1):
            out[i, k] = (cum[i, k] * span) // total + k
    return out


def quantized_cdf(cum: np.ndarray, total: int) -> np.ndarray:
    """Rows of cumulative integer masses [n, m+1] (from 0 up to ``total``, non-decreasing) as
    the coder's cumulative frequencies: row[0] = 0, row[m] = 2**PRECISION, every symbol at
    least one slot.  ``total * 2**PRECISION`` must stay below 2**63.

    >>> quantized_cdf(np.array([[0, 0, 1, 1]]), 1).tolist()    # one certain symbol of three
    [[0, 1, 16777215, 16777216]]
    """
    if total <= 0 or total.bit_length() + PRECISION > 63:
        raise ValueError("masses out of the coder's range")
    cum = np.ascontiguousarray(cum, dtype=np.int64)
    return _quantize(cum, total, np.empty_like(cum))


class AnsStack:
    """A stack of symbols: ``AnsStack()`` to encode, ``AnsStack(words)`` to decode a payload
    made by :meth:`compressed`.  Pushes and pops may alternate (bits-back)."""

    def __init__(self, words: np.ndarray | None = None):
        if words is None:
            self._buf = np.zeros(1024, np.uint32)
            self._n = 0
            self._state = 0
            return
        words = np.asarray(words, dtype=np.uint32)
        if len(words) == 0:
            raise ValueError("an ANS payload holds at least its state")
        if len(words) == 1:
            self._state, head = int(words[0]), 1
        else:
            self._state, head = int(words[-2]) | (int(words[-1]) << WORD_BITS), 2
        if self._state >= 1 << 63:
            raise ValueError("ANS state out of range")
        self._buf = np.array(words[:-head], dtype=np.uint32)
        self._n = len(self._buf)

    def num_bits(self) -> int:
        """Bits in the stack, as the payload would hold them."""
        return WORD_BITS * len(self._state_words()) + WORD_BITS * self._n

    def is_empty(self) -> bool:
        """True when every pushed symbol has been popped (a decoder's last check)."""
        return self._n == 0 and self._state == 0

    def _state_words(self) -> list[int]:
        s = self._state
        if self._n == 0 and s >> WORD_BITS == 0:
            return [s]                        # nothing under it: one word
        return [s & _WORD_MASK, s >> WORD_BITS]

    def compressed(self) -> np.ndarray:
        """The payload: the words, then the state (its low word, then its high word, unless
        the stack holds no words and the state fits in one)."""
        return np.concatenate([self._buf[:self._n], np.array(self._state_words(), np.uint32)])

    def reserve(self, symbols: int) -> tuple[int, np.ndarray, int]:
        """(state, buffer, n) with room for ``symbols`` more pushes, for a kernel that pushes
        or pops on its own; hand the result back with :meth:`update`."""
        need = self._n + symbols
        if need > len(self._buf):
            grown = np.zeros(max(need, 2 * len(self._buf)), np.uint32)
            grown[:self._n] = self._buf[:self._n]
            self._buf = grown
        return self._state, self._buf, self._n

    def update(self, state: int, n: int) -> None:
        self._state, self._n = int(state), int(n)

    # --- whole arrays of symbols -------------------------------------------------------------
    def push_rows(self, symbols: np.ndarray, cdf: np.ndarray) -> None:
        """Push symbols[i] with row i of cumulative frequencies (:func:`quantized_cdf`), so
        that :meth:`pop_rows` gives them back in order (symbols[0] first)."""
        state, buf, n = self.reserve(len(symbols))
        self.update(*_push_rows(state, buf, n, np.ascontiguousarray(symbols, np.int64), cdf))

    def pop_rows(self, cdf: np.ndarray) -> np.ndarray:
        out = np.empty(len(cdf), np.int64)
        state, buf, n = self.reserve(0)
        self.update(*_pop_rows(state, buf, n, np.ascontiguousarray(cdf, np.int64), out))
        return out

    def push_intervals(self, starts: np.ndarray, freqs: np.ndarray) -> None:
        """Push intervals given by their starts and sizes (popped in order, starts[0] first)."""
        state, buf, n = self.reserve(len(starts))
        self.update(*_push_intervals(state, buf, n, starts, freqs))

    def push_uniform(self, symbols: np.ndarray, bits: int) -> None:
        """Symbols uniform over 2**bits values (each costs exactly ``bits``)."""
        symbols = np.ascontiguousarray(symbols, np.int64)
        freq = 1 << (PRECISION - bits)
        self.push_intervals(symbols * freq, np.full(len(symbols), freq, np.int64))

    def pop_uniform(self, count: int, bits: int) -> np.ndarray:
        out = np.empty(count, np.int64)
        state, buf, n = self.reserve(0)
        self.update(*_pop_uniform(state, buf, n, PRECISION - bits, out))
        return out
