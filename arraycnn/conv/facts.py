"""The value-dependent facts of a call: the one place planning reads array values.

Two decisions need values, not only shapes: whether the inputs are finite (the FFT
spreads a NaN or Inf over the whole output, Winograd over its tile) and the kernel's
numerical rank (separable). Reading a value on the host is cheap; on a device it
synchronises (a host round trip).

- On the host (NumPy, torch and JAX on the CPU), each fact is read once per call, only
  where a decision needs it: finiteness only where FFT or Winograd would be chosen or is
  forced, the rank only where separable is still in question. Small NumPy kernels have
  both memoised by content (a filter reapplied frame after frame is analysed once).
- On a device (:func:`arraycnn.backend.values_on_host` is False), ``auto`` reads nothing:
  the inputs are taken as finite, so where FFT or Winograd is chosen a NaN or Inf makes
  every output it reaches, and possibly others of its FFT or Winograd tile, NaN (as
  cuDNN's FFT and Winograd algorithms do) instead of only those it reaches; and
  separable, whose worth depends on the rank, is not considered. A forced
  ``strategy="separable"`` reads w's finiteness and rank there (two round trips per call).
- Traced arrays (JAX ``jit``) cannot be read: they are taken as finite, and separable is
  not considered for them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from array_api_compat import is_numpy_array

from ..backend import device_of, is_traced, values_on_host
from ..settings import register_cache
from . import separable

__all__ = ["KERNEL_FACTS_MAX_ELEMENTS", "Values", "nonfinite_error"]

Array = Any

#: Kernels of at most this many elements have their facts memoised by content.
KERNEL_FACTS_MAX_ELEMENTS = 4096
#: Kernels whose facts are kept at most (the memo is emptied when full).
KERNEL_FACTS_KEPT = 256


class Values:
    """The call's arrays and the facts read from their values, each read at most once."""

    def __init__(self, xp: ModuleType, **arrays: Array | None) -> None:
        self.xp = xp
        self.arrays = {k: v for k, v in arrays.items() if v is not None}
        self._finite: dict[str, bool] = {}
        self._traced: bool | None = None
        w = self.arrays.get("w")
        #: False on a device: ``auto`` reads no value there (see the module docstring).
        self.on_host = w is None or values_on_host(xp, device_of(w))

    def traced(self) -> bool:
        """True if any array is a JAX tracer (its values cannot be read); found once."""
        if self._traced is None:
            self._traced = any(is_traced(a) for a in self.arrays.values())
        return self._traced

    def finite(self, name: str, *, on_a_device: bool = False) -> bool:
        """True if array ``name`` has no NaN/Inf; read on the host (on a device too with
        ``on_a_device``: a host round trip), taken as True otherwise and for traced arrays."""
        if name not in self.arrays or self.traced() or not (self.on_host or on_a_device):
            return True
        if name not in self._finite:
            xp = self.xp
            self._finite[name] = bool(xp.all(xp.isfinite(self.arrays[name])))
        return self._finite[name]

    def nonfinite(self, direction: str) -> list[str]:
        """Names of the inputs of ``direction`` that hold NaN or Inf."""
        names = ("x", "w") if direction == "forward" else ("gy", "x", "w")
        return [n for n in names if not self.finite(n)]

    def rank(self) -> int | None:
        """w's numerical rank (:func:`separable.numerical_rank`); None for a non-finite or
        traced w. Small NumPy kernels are memoised by content (:data:`_KERNEL_FACTS`)."""
        w = self.arrays["w"]
        if self.traced():
            return None
        key = None
        if is_numpy_array(w) and w.size <= KERNEL_FACTS_MAX_ELEMENTS:
            key = (w.dtype.str, w.shape, w.tobytes())
        facts = _KERNEL_FACTS.get(key) if key is not None else None
        if facts is None:
            finite = self.finite("w", on_a_device=True)  # the SVD needs a finite w
            facts = (finite, separable.numerical_rank(w, xp=self.xp) if finite else None)
            if key is not None:
                if len(_KERNEL_FACTS) >= KERNEL_FACTS_KEPT:
                    _KERNEL_FACTS.clear()
                _KERNEL_FACTS[key] = facts
        self._finite.setdefault("w", facts[0])
        return facts[1]


#: Facts of small NumPy kernels by content: (dtype, shape, bytes) -> (finite, rank).
_KERNEL_FACTS: dict[tuple[Any, ...], tuple[bool, int | None]] = {}
register_cache(_KERNEL_FACTS.clear)


def nonfinite_error(name: str, bad: list[str]) -> ValueError:
    why = {
        "fft": "FFT would spread them over the whole output",
        "winograd": "Winograd would spread them over their tiles",
        "separable": "the SVD of w is undefined",
    }
    return ValueError(
        f"strategy={name!r} cannot handle non-finite input: {', '.join(bad)} "
        f"contain{'s' if len(bad) == 1 else ''} NaN or Inf and {why[name]}; use strategy='auto' "
        "or a direct strategy ('naive', 'im2col'), which keep non-finite values local"
    )
