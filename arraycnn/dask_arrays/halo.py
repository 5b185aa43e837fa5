"""Halo arithmetic of the chunked paths: host work on Python ints, no dask, no array data.

Two kinds of sweep share it:

- the filters (:mod:`.images`): the image is extended once at the array's edges, then every
  output chunk is a "valid" correlation of its input chunk and the ``k - 1`` rows (columns)
  after it, taken from the next chunk (``map_overlap`` with depth ``(0, k - 1)``);
- conv2d and pooling (:mod:`.windows`): the output rows ``[start, stop)`` of a window sweep
  (kernel ``k``, stride ``s``, dilation ``d``, padding ``(lo, hi)``) read the input rows of
  :meth:`AxisSweep.band`, with the padding that band itself needs; the input gradient of
  the rows ``[a, b)`` needs the outputs of :meth:`AxisSweep.touching`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = [
    "AxisSweep",
    "follow_chunks",
    "merge_small",
]


def merge_small(chunks: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    """Merge neighbouring chunks until each holds at least ``minimum`` (a remainder
    smaller than that joins the last chunk); the total is kept.

    Examples
    --------
    >>> merge_small((2, 2, 5, 1), 4)
    (4, 6)
    >>> merge_small((3,), 8)
    (3,)
    """
    merged: list[int] = []
    pending = 0
    for c in chunks:
        pending += c
        if pending >= minimum:
            merged.append(pending)
            pending = 0
    if pending:
        if merged:
            merged[-1] += pending
        else:
            merged.append(pending)
    return tuple(merged)


def follow_chunks(chunks: tuple[int, ...], out: int, *, offset: int = 0, scale: int = 1) -> tuple:
    """Chunks of an output axis of length ``out`` that follow the input's ``chunks``.

    An input boundary ``b`` maps to the output index ``(b + offset) // scale`` (``offset``
    the padding before the axis, ``scale`` the stride); boundaries outside ``(0, out)``
    and repeats are dropped.

    Examples
    --------
    >>> follow_chunks((4, 4, 4), 12)
    (4, 4, 4)
    >>> follow_chunks((4, 4, 4), 14)
    (4, 4, 6)
    >>> follow_chunks((5, 5, 5), 8, offset=1, scale=2)
    (3, 2, 3)
    """
    cuts = sorted({(b + offset) // scale for b in itertools.accumulate(chunks[:-1])})
    cuts = [c for c in cuts if 0 < c < out]
    edges = [0, *cuts, out]
    return tuple(b - a for a, b in itertools.pairwise(edges))


@dataclass(frozen=True)
class AxisSweep:
    """One axis of a window sweep: input ``size``, ``kernel``, ``stride``, ``dilation``,
    padding ``pad_lo`` / ``pad_hi`` and the number of outputs ``out``."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_lo: int
    pad_hi: int
    out: int

    @property
    def extent(self) -> int:
        """Span of one window, ``d (k - 1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1

    def band(self, start: int, stop: int) -> tuple[int, int, int, int]:
        """(lo, hi, pad_lo, pad_hi): the input rows ``[lo, hi)`` that the outputs
        ``[start, stop)`` read and the padding of that band (its sweep gives exactly
        ``stop - start`` outputs). ``hi <= lo`` where they read padding only.

        Examples
        --------
        >>> AxisSweep(8, 3, 1, 1, 1, 1, 8).band(2, 5)
        (1, 6, 0, 0)
        >>> AxisSweep(8, 3, 2, 1, 1, 1, 4).band(0, 2)
        (0, 4, 1, 0)
        """
        first = start * self.stride - self.pad_lo
        end = (stop - 1) * self.stride - self.pad_lo + self.extent
        lo, hi = max(first, 0), min(end, self.size)
        return lo, hi, lo - first, end - hi

    def touching(self, a: int, b: int) -> tuple[int, int]:
        """Outputs ``[o_lo, o_hi)`` whose windows span some of the input rows ``[a, b)``
        (every output whose gradient reaches those rows; empty if none).

        Examples
        --------
        >>> AxisSweep(8, 3, 1, 1, 1, 1, 8).touching(4, 6)
        (3, 7)
        >>> AxisSweep(9, 2, 3, 1, 0, 0, 3).touching(2, 3)
        (0, 0)
        """
        lo = max(0, -(-(a + self.pad_lo - self.extent + 1) // self.stride))
        hi = min(self.out, (b - 1 + self.pad_lo) // self.stride + 1)
        while lo < hi and not self._meets(lo, a, b):
            lo += 1
        while hi > lo and not self._meets(hi - 1, a, b):
            hi -= 1
        return (lo, hi) if lo < hi else (0, 0)

    def _meets(self, o: int, a: int, b: int) -> bool:
        """True if some tap of output ``o`` lands in the input rows ``[a, b)``."""
        start = o * self.stride - self.pad_lo
        return any(a <= start + i * self.dilation < b for i in range(self.kernel))
