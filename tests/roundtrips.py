"""Counting host round trips: reads of array values from a device back to Python or NumPy.

On a GPU, every read of an array's value (``bool(a)``, ``float(a)``, ``int(a)``, an index,
a copy to NumPy) waits for the device to finish its queued work and copies the result to
the host: a synchronisation that stalls the pipeline. array-api-strict's ``device1`` is the
CPU stand-in for such a device; :func:`count_round_trips` counts those reads of arrays on it
by wrapping the conversion methods of array-api-strict's ``Array`` class while the ``with``
block runs.

Counted: ``__bool__``, ``__int__``, ``__float__``, ``__complex__``, ``__index__``,
``__array__``, ``__buffer__`` (NumPy's buffer protocol) and ``__dlpack__`` (what
``np.from_dlpack``, hence ``arraycnn.backend.to_numpy``, calls) of arrays whose device is
the one watched. Shapes, dtypes and devices are metadata, not reads, and are not counted.

Examples
--------
>>> import array_api_strict as strict
>>> device = strict.Device("device1")
>>> a = strict.ones(3, device=device)
>>> with count_round_trips(device) as trips:
...     _ = float(strict.sum(a))
...     _ = strict.sum(a) + 1.0  # stays on the device
>>> trips.total, trips.by_method
(1, {'__float__': 1})
"""

from __future__ import annotations

import contextlib
import functools
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import array_api_strict

__all__ = ["DEVICE", "READS", "RoundTrips", "count_round_trips"]

#: The CPU stand-in for a GPU.
DEVICE = array_api_strict.Device("device1")
#: The methods of array-api-strict's ``Array`` that read values to the host.
READS = (
    "__bool__",
    "__int__",
    "__float__",
    "__complex__",
    "__index__",
    "__array__",
    "__buffer__",
    "__dlpack__",
)


@dataclass
class RoundTrips:
    """The host round trips seen while :func:`count_round_trips` ran.

    Attributes
    ----------
    by_method : dict[str, int]
        Reads per method name.
    sites : collections.Counter
        Reads per calling site (``file:line function``) outside array-api-strict and NumPy,
        the first frame of the project's code: where a count comes from.
    """

    by_method: dict[str, int] = field(default_factory=dict)
    sites: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Reads of all kinds."""
        return sum(self.by_method.values())

    def record(self, method: str) -> None:
        self.by_method[method] = self.by_method.get(method, 0) + 1
        self.sites[_calling_site()] += 1


def _calling_site() -> str:
    """The innermost frame outside this module, array-api-strict, array-api-compat and NumPy."""
    skipped = ("array_api_strict", "array_api_compat", "numpy", "roundtrips.py")
    for frame in reversed(traceback.extract_stack()):
        if not any(part in frame.filename for part in skipped):
            return f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}"
    return "?"


def _counting(method: str, original: Callable[..., Any], device: Any, seen: RoundTrips) -> Any:
    @functools.wraps(original)
    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.device == device:
            seen.record(method)
        return original(self, *args, **kwargs)

    return counted


@contextlib.contextmanager
def count_round_trips(device: Any = DEVICE) -> Iterator[RoundTrips]:
    """Count the value reads of array-api-strict arrays on ``device`` within the block.

    Parameters
    ----------
    device : array_api_strict.Device
        The device watched (default ``device1``).

    Yields
    ------
    RoundTrips
        Filled in as the block runs.
    """
    cls = type(array_api_strict.asarray(0))  # the Array class (not exported by name)
    seen = RoundTrips()
    originals = {name: cls.__dict__[name] for name in READS if name in cls.__dict__}
    try:
        for name, original in originals.items():
            setattr(cls, name, _counting(name, original, device, seen))
        yield seen
    finally:
        for name, original in originals.items():
            setattr(cls, name, original)
