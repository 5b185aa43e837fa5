"""What each convolution strategy supports: one table, read by the dispatcher, tests and benchmarks.

Every strategy supports every geometry (stride, dilation, groups, all paddings) and has a
backward. What differs is what a strategy needs from the namespace (an FFT module, a
linear-algebra extension) and whether it is exact on integer-valued data.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

__all__ = [
    "CAPABILITIES",
    "STRATEGY_NAMES",
    "Capability",
    "exact_strategies",
    "missing_requirements",
]


@dataclass(frozen=True)
class Capability:
    """Capabilities of one strategy.

    Attributes
    ----------
    name : str
        Strategy name as accepted by ``strategy=``.
    needs : tuple of str
        Namespace extensions it needs: ``"fft"`` (``xp.fft`` or a backend FFT module),
        ``"linalg"`` (``xp.linalg.svd``).
    exact_sums : bool
        True if the result is a plain sum of products of the inputs (exact for
        integer-valued data whose sums fit the mantissa). False for FFT, whose rounding
        spreads over the whole output, and for separable, whose SVD factors are rounded
        (irrational in general). ``dispatch.select_strategy(..., require_exact=True)``
        reads this.
    nan_local : bool
        True if a NaN/Inf in the input only reaches the outputs whose receptive field
        contains it (the rule of :mod:`arraycnn.conv.dispatch`). The FFT spreads it over
        the whole output, so the dispatcher keeps non-finite input away from it.
    """

    name: str
    needs: tuple[str, ...] = ()
    exact_sums: bool = True
    nan_local: bool = True
    stride: bool = True
    dilation: bool = True
    groups: bool = True
    padding: bool = True
    backward: bool = True


CAPABILITIES: dict[str, Capability] = {
    "naive": Capability("naive"),
    "separable": Capability("separable", needs=("linalg",), exact_sums=False),
    "im2col": Capability("im2col"),
    "fft": Capability("fft", needs=("fft",), exact_sums=False, nan_local=False),
}

#: Valid values of ``strategy=`` other than ``"auto"``, in a fixed order.
STRATEGY_NAMES: tuple[str, ...] = tuple(CAPABILITIES)


def missing_requirements(name: str, xp: ModuleType) -> list[str]:
    """Extensions strategy ``name`` needs that namespace ``xp`` lacks (empty if none)."""
    from .backend import backend_name

    missing = []
    for need in CAPABILITIES[name].needs:
        if need == "fft" and backend_name(xp) not in ("numpy", "cupy") and not hasattr(xp, "fft"):
            missing.append("fft")
        if need == "linalg" and not hasattr(getattr(xp, "linalg", None), "svd"):
            missing.append("linalg.svd")
    return missing


def exact_strategies() -> tuple[str, ...]:
    """Strategies whose results are plain sums of products (see ``Capability.exact_sums``)."""
    return tuple(name for name, cap in CAPABILITIES.items() if cap.exact_sums)
