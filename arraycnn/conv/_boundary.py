"""Validation at the public boundary of the convolution functions."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..backend import device_of, devices_differ, namespace_of
from ..geometry import ConvGeometry, Padding, conv_geometry

Array = Any


def check_float_pair(x: Array, w: Array, xp: ModuleType, names: tuple[str, str]) -> None:
    """Both arrays floating (real or complex), same dtype, same device (a traced JAX array's
    device is unknown: it matches any)."""
    for name, a in zip(names, (x, w) if x.dtype != w.dtype else (x,)):
        if not xp.isdtype(a.dtype, ("real floating", "complex floating")):
            raise TypeError(f"{name} must have a floating dtype (real or complex), got {a.dtype}")
    if x.dtype != w.dtype:
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
