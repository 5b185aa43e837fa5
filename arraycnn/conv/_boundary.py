"""Validation at the public boundary of the convolution functions."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..backend import device_of, devices_differ, namespace_of
from ..geometry import ConvGeometry, Padding, conv_geometry

Array = Any


def same_dtype(a: Array, b: Array) -> bool:
    """True where ``a`` and ``b`` hold the same kind of values: equal dtypes, or NumPy dtypes
    that differ only in byte order (``>f8`` and ``float64``)."""
    if a.dtype == b.dtype:
        return True
    native = [getattr(d, "newbyteorder", None) for d in (a.dtype, b.dtype)]
    return None not in native and native[0]("=") == native[1]("=")


def in_native_order(a: Array) -> Array:
    """``a`` with its dtype in the machine's byte order: a NumPy array of the other order is
    copied (so that every strategy returns what NumPy's arithmetic would, a native-order
    result); any other array is returned as it is."""
    dtype = a.dtype
    if getattr(dtype, "isnative", True):
        return a
    return a.astype(dtype.newbyteorder("="))


def check_float_pair(x: Array, w: Array, xp: ModuleType, names: tuple[str, str]) -> None:
    """Both arrays floating (real or complex), same dtype up to NumPy's byte order (as
    NumPy's own arithmetic mixes them), same device (a traced JAX array's device is
    unknown: it matches any)."""
    same = same_dtype(x, w)
    for name, a in zip(names, (x,) if same else (x, w)):
        if not xp.isdtype(a.dtype, ("real floating", "complex floating")):
            raise TypeError(f"{name} must have a floating dtype (real or complex), got {a.dtype}")
    if not same:
        raise TypeError(
            f"{names[0]} ({x.dtype}) and {names[1]} ({w.dtype}) must have the same dtype"
        )
    if devices_differ(x, w):
        raise ValueError(
            f"{names[0]} is on device {device_of(x)} but {names[1]} is on {device_of(w)}"
        )


def prepare(
    x: Array,
    w: Array,
    *,
    stride: Any,
    padding: Padding,
    dilation: Any,
    groups: Any,
    extra: tuple[tuple[str, Array], ...] = (),
) -> tuple[ModuleType, ConvGeometry]:
    """Resolve the namespace, validate arrays and geometry: ``(xp, geom)``."""
    names = ("x", "w", *(n for n, _ in extra))
    for name, a in zip(names, (x, w, *(a for _, a in extra))):
        if a is None:  # namespace_of skips None entries
            raise TypeError(f"{name} must be an array (NumPy, CuPy, torch, ...), got None")
    xp = namespace_of(x, w, *(a for _, a in extra), names=names)
    geom = conv_geometry(
        tuple(x.shape),
        tuple(w.shape),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    check_float_pair(x, w, xp, ("x", "w"))
    return xp, geom
