"""Weight initialisers: He (Kaiming) and Glorot (Xavier), normal and uniform, and zeros.

Every initialiser has the signature::

    init(shape, *, rng, xp="numpy", device=None, dtype=None, fan_in=None, fan_out=None) -> Array

The values are drawn on the host from the NumPy ``Generator`` ``rng`` (so a seed gives the same
weights on every backend, for a given dtype) and moved once with
``xp.asarray(..., device=device)`` — the one documented host step of initialisation. They are
drawn in the target dtype itself (``Generator.standard_normal`` / ``Generator.random`` with
``dtype=``, then scaled in place), not in float64 and cast: a float32 weight costs its own
bytes on the host, no more. Half precision (float16, bfloat16), which NumPy's generators do
not draw, is drawn in float32 and rounded once. ``dtype=None`` means ``float32``; a dtype of
``xp`` or its name (``"float64"``) is accepted.

Fan-in and fan-out (see :func:`fans`) follow the weight layouts of :mod:`arraycnn.nn.layers`:

* Dense weights ``(in_features, out_features)``: ``fan_in = in_features``,
  ``fan_out = out_features``.
* Conv2D weights ``(F, C / groups, kh, kw)``: ``fan_in = (C / groups) * kh * kw`` (the inputs of one
  output unit); ``fan_out = F * kh * kw`` from the shape alone (torch's convention). With
  ``groups > 1`` an input channel only feeds ``F / groups`` filters; :class:`Conv2D` passes the
  exact ``fan_out = (F / groups) * kh * kw`` explicitly.

Scales (untruncated distributions, as ``torch.nn.init``; Keras truncates its normals):

===============  =====================================
he_normal        N(0, 2 / fan_in)
he_uniform       U(-a, a), a = sqrt(6 / fan_in)
glorot_normal    N(0, 2 / (fan_in + fan_out))
glorot_uniform   U(-a, a), a = sqrt(6 / (fan_in + fan_out))
zeros            0
===============  =====================================
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import resolve_backend, resolve_dtype

__all__ = [
    "INITIALIZERS",
    "fans",
    "get_initializer",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "zeros",
]

Array = Any


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shape (see the module docstring).

    Raises
    ------
    ValueError
        If ``shape`` is neither 2-D (Dense) nor 4-D (Conv2D); pass ``fan_in``/``fan_out``
        explicitly for other layouts.

    Examples
    --------
    >>> fans((784, 128))  # Dense (in_features, out_features)
    (784, 128)
    >>> fans((16, 3, 5, 5))  # Conv2D (F, C / groups, kh, kw)
    (75, 400)
    """
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 4:
        f, cg, kh, kw = shape
        return cg * kh * kw, f * kh * kw
    raise ValueError(
        f"cannot infer fan_in/fan_out from a weight of shape {tuple(shape)}: expected 2-D "
        "(in_features, out_features) or 4-D (F, C/groups, kh, kw); pass fan_in= and fan_out="
    )


def _checked_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        dims = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
    if any(d < 1 for d in dims):
        raise ValueError(f"shape must have positive sizes, got {tuple(shape)}")
    return dims


def _checked_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def _fans(shape: tuple[int, ...], fan_in: int | None, fan_out: int | None) -> tuple[int, int]:
    if fan_in is None or fan_out is None:
        inferred_in, inferred_out = fans(shape)
        fan_in = inferred_in if fan_in is None else fan_in
        fan_out = inferred_out if fan_out is None else fan_out
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fan_in and fan_out must be positive, got {fan_in} and {fan_out}")
    return fan_in, fan_out


def _target(xp: Any, dtype: Any) -> tuple[Any, Any, np.dtype]:
    """``(namespace, dtype of it, host dtype to draw in)``: float64 or float32 as the target,
    float32 for half precision."""
    space = resolve_backend(xp)
    dtype = resolve_dtype(space, dtype)
    if not space.isdtype(dtype, "real floating"):
        raise TypeError(f"dtype must be a real floating dtype, got {dtype}")
    host = np.dtype(np.float64 if space.finfo(dtype).bits == 64 else np.float32)
    return space, dtype, host


Draw = Callable[[np.random.Generator, tuple[int, ...], int, int, np.dtype], np.ndarray]


def _initializer(draw: Draw):
    """Wrap a host draw ``(rng, shape, fan_in, fan_out, host dtype) -> ndarray`` into a public
    initialiser."""

    def init(
        shape: Any,
        *,
        rng: np.random.Generator,
        xp: Any = "numpy",
        device: Any = None,
        dtype: Any = None,
        fan_in: int | None = None,
        fan_out: int | None = None,
    ) -> Array:
        dims = _checked_shape(shape)
        generator = _checked_rng(rng)
        f_in, f_out = _fans(dims, fan_in, fan_out)
        space, target, host = _target(xp, dtype)
        return space.asarray(draw(generator, dims, f_in, f_out, host), dtype=target, device=device)

    init.__doc__ = draw.__doc__
    init.__name__ = draw.__name__
    init.__qualname__ = draw.__name__
    return init


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float, dtype: np.dtype):
    """N(0, std^2) draws in ``dtype`` (float32 or float64), scaled in place."""
    values = rng.standard_normal(shape, dtype=dtype)
    values *= dtype.type(std)
    return values


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float, dtype: np.dtype):
    """U(-bound, bound) draws in ``dtype`` (float32 or float64), scaled in place."""
    values = rng.random(shape, dtype=dtype)  # [0, 1)
    values *= dtype.type(2.0 * bound)
    values -= dtype.type(bound)
    return values


@_initializer
def he_normal(rng, shape, fan_in, fan_out, dtype):
    """He (Kaiming) normal: N(0, 2 / fan_in). For ReLU networks.

    Examples
    --------
    >>> w = he_normal((200, 100), rng=np.random.default_rng(0), dtype="float64")
    >>> w.dtype, round(float(w.std() ** 2 * 200), 1)  # variance 2 / fan_in
    (dtype('float64'), 2.0)
    """
    return _normal(rng, shape, math.sqrt(2.0 / fan_in), dtype)


@_initializer
def he_uniform(rng, shape, fan_in, fan_out, dtype):
    """He (Kaiming) uniform: U(-a, a) with a = sqrt(6 / fan_in).

    Examples
    --------
    >>> from arraycnn.backend import to_numpy
    >>> w = he_uniform((8, 3, 3, 3), rng=np.random.default_rng(0), xp="array_api_strict")
    >>> w.shape, bool(np.abs(to_numpy(w)).max() <= (6 / 27) ** 0.5)  # fan_in = 3 * 3 * 3
    ((8, 3, 3, 3), True)
    """
    return _uniform(rng, shape, math.sqrt(6.0 / fan_in), dtype)


@_initializer
def glorot_normal(rng, shape, fan_in, fan_out, dtype):
    """Glorot (Xavier) normal: N(0, 2 / (fan_in + fan_out)).

    Examples
    --------
    >>> w = glorot_normal((300, 100), rng=np.random.default_rng(0), dtype="float64")
    >>> round(float(w.std() ** 2 * (300 + 100)), 1)
    2.0
    """
    return _normal(rng, shape, math.sqrt(2.0 / (fan_in + fan_out)), dtype)


@_initializer
def glorot_uniform(rng, shape, fan_in, fan_out, dtype):
    """Glorot (Xavier) uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).

    Examples
    --------
    >>> w = glorot_uniform((4, 2), rng=np.random.default_rng(0))
    >>> w.dtype, bool(abs(w).max() <= 1.0)  # a = sqrt(6 / 6)
    (dtype('float32'), True)
    """
    return _uniform(rng, shape, math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def zeros(
    shape: Any,
    *,
    rng: np.random.Generator | None = None,
    xp: Any = "numpy",
    device: Any = None,
    dtype: Any = None,
    fan_in: int | None = None,
    fan_out: int | None = None,
) -> Array:
    """All zeros (``rng`` and the fans are accepted for a uniform signature and ignored).

    Examples
    --------
    >>> zeros((2, 3), dtype="float64")
    array([[0., 0., 0.],
           [0., 0., 0.]])
    """
    space, target, _host = _target(xp, dtype)
    return space.zeros(_checked_shape(shape), dtype=target, device=device)


#: Initialisers by name (the ``init=`` argument of Conv2D and Dense).
INITIALIZERS: dict[str, Callable[..., Array]] = {
    "he": he_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "glorot": glorot_uniform,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "zeros": zeros,
}


def get_initializer(name: str) -> Callable[..., Array]:
    """The initialiser called ``name`` (``"he"`` = he_normal, ``"glorot"`` = glorot_uniform).

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If it is unknown; the message lists the valid names.

    Examples
    --------
    >>> get_initializer("He") is he_normal, get_initializer("glorot") is glorot_uniform
    (True, True)
    >>> get_initializer("kaiming")
    Traceback (most recent call last):
    ...
    ValueError: init must be one of 'he', 'he_normal', ...; got 'kaiming'
    """
    if not isinstance(name, str):
        raise TypeError(f"init must be a name (str), got {type(name).__name__} {name!r}")
    try:
        return INITIALIZERS[name.lower()]
    except KeyError:
        valid = ", ".join(repr(n) for n in INITIALIZERS)
        raise ValueError(f"init must be one of {valid}; got {name!r}") from None
