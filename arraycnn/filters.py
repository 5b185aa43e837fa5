"""``correlate2d`` / ``convolve2d`` with the semantics of ``scipy.signal``, on any namespace.

Both functions extend the first input per ``boundary``, then run :func:`arraycnn.conv2d`
(one input channel, one filter) on the extended image, so every convolution strategy
(naive, separable, im2col, FFT, Winograd) and the ``auto`` dispatcher serve them.

Semantics (those of ``scipy.signal.correlate2d`` / ``convolve2d``, SciPy 1.17)
---------------------------------------------------------------------------
With ``in1`` of shape (H, W) and ``in2`` of shape (kh, kw), correlation is
``z[m, n] = sum_{i, j} ext(in1)[m + i - top, n + j - left] * in2[i, j]`` and convolution
the same with ``in2`` flipped in both axes, where ``ext`` extends ``in1`` beyond its edges:

=========  =======================  ===========================  ===========================
mode       output shape             correlate: (top, bottom)     convolve: (top, bottom)
=========  =======================  ===========================  ===========================
full       (H + kh - 1, W + kw - 1) (kh - 1, kh - 1)             (kh - 1, kh - 1)
same       (H, W)                   ((kh - 1) // 2, kh // 2)     (kh // 2, (kh - 1) // 2)
valid      (H - kh + 1, W - kw + 1) (0, 0)                       (0, 0)
=========  =======================  ===========================  ===========================

(``left``/``right`` likewise with kw). "same" is centred on the "full" output; for an
even kernel the extra row/column of the extension is at the bottom/right for correlation
and at the top/left for convolution, as in SciPy.

"valid" needs one input at least as large as the other in every dimension. If ``in2`` is
the larger one, the roles swap: ``convolve2d`` is commutative, and ``correlate2d`` returns
``correlate2d(in2, in1, "valid")`` flipped in both axes, which is the part of the "full"
correlation where ``in1`` lies inside ``in2`` (shape ``(kh - H + 1, kw - W + 1)``).

Boundaries (of the extension; "valid" never reads it):

- ``"fill"`` (alias ``"pad"``): the constant ``fillvalue``.
- ``"wrap"`` (alias ``"circular"``): periodic, ``ext[i] = x[i mod H]``.
- ``"symm"`` (alias ``"symmetric"``): mirror with the edge repeated, period 2H
  (``d c b a | a b c d | d c b a``), like ``numpy.pad(mode="symmetric")``.
- ``"reflect"`` (arraycnn only; SciPy's correlate2d rejects it): mirror about the edge
  sample, which is not repeated, period 2H - 2 (``d c b | a b c d | c b a``), like
  ``numpy.pad(mode="reflect")``. A single row/column extends as a constant.

Extensions wider than the image (kernel larger than the image) continue periodically /
reflect repeatedly, as SciPy does.

Complex data (as SciPy): ``correlate2d`` conjugates the kernel, ``z[m, n] = sum
ext(in1)[m + i - top, n + j - left] * conj(in2[i, j])``, and in a swapped "valid" call it
conjugates ``in1`` (the kernel there), as SciPy does; ``convolve2d`` conjugates nothing. A
complex ``fillvalue`` needs a complex result (otherwise ValueError, as in SciPy). Complex
inputs run through :func:`arraycnn.conv2d`'s complex path (one real convolution of the
real and imaginary parts, so every strategy serves them).

Inputs that are not arrays (nested lists or tuples, scalars) are converted as
``numpy.asarray`` converts them, as SciPy does (``[[1, 2]]`` is int64), and join the
namespace and device of the other input where that one is an array; a scalar is then a
0-d input and refused with ValueError, as are object and string dtypes.

Exact sums on integer values (``strategy="auto"``): SciPy's ``convolve2d`` always sums
directly, which is exact when every input is an integer and the sums stay below the
float mantissa. ``auto`` keeps that: for integer dtypes always (see below), and for
floating (and complex) NumPy inputs whose values are all integers (real and imaginary
parts, the fill value included) with ``max|ext(in1)| * sum|in2|`` below ``2**53``
(float64) or ``2**24`` (float32), it chooses only among the strategies whose sums are
exact (naive, im2col), never the FFT or the SVD-based separable strategy. SciPy's
``choose_conv_method`` reads integer inputs' values for a like reason (it keeps them on
the direct method where float64 could not hold the sums exactly). Reading values costs a
pass on the host, which is free of transfers on NumPy; arrays of other namespaces (a
device) are never read for it, and ``auto`` there chooses by speed alone (force
``"naive"`` or ``"im2col"`` for exact sums).

Where arraycnn differs from SciPy
---------------------------------
- Results have the inputs' namespace and device (NumPy, CuPy, torch, array-api-strict,
  ...); arrays of two namespaces are refused (TypeError).
- ``in1`` may carry leading batch axes, (..., H, W), filtered with the one 2-D kernel
  ``in2``; the result is (..., Ho, Wo). SciPy accepts 2-D ``in1`` only. In a swapped
  "valid" call (``in2`` larger), each image of the batch acts as the kernel.
- Empty inputs are refused (SciPy returns arrays of arbitrary shape for them).
- ``boundary="reflect"`` is an extension (see above).
- float16 inputs are computed in float32 and returned as float16 (SciPy refuses float16);
  so are bfloat16 ones (torch), which promote as float16 does except that bfloat16 with
  float16 gives float32 (as in torch); bool with bool is refused with ValueError, as in
  SciPy (there is no arithmetic result dtype).
- Results larger than the available memory (with the float copies and the extension) are
  refused before anything is allocated (:class:`arraycnn.WorkspaceError`).
- Integer (and bool with integer) inputs: the result dtype is SciPy's
  (``numpy.result_type`` of the two dtypes, e.g. int8 with int8 -> int8). The sums are
  computed in float64 with a strategy whose sums are exact (never FFT, never the
  SVD-based separable strategy), which is exact while ``max|ext(in1)| * sum|in2| < 2**53``;
  larger inputs raise ValueError instead of returning a rounded answer (SciPy computes in
  the integer type, wrapping around on overflow). The exact sum is then cast to the result
  dtype through int64, which wraps modulo 2**bits exactly as SciPy's integer arithmetic
  does (int8: 100*2 + 100*2 -> -112).
- ``fillvalue`` must be a number or an array (or sequence) with one element; other
  values raise ValueError with SciPy's wording (empty, several elements, complex for a
  real result); it is ignored unless ``boundary="fill"`` (as SciPy). For an integer
  result it is truncated toward zero (1.7 -> 1, as SciPy) and must be finite and within
  the result dtype's range (SciPy refuses out-of-range Python numbers but silently wraps
  NumPy integer scalars).
- Mixed float dtypes follow NumPy promotion on every namespace (float32 with int32 gives
  float64, as in SciPy), not the namespace's own rules.
- ``strategy`` as in :func:`arraycnn.conv2d`. ``"auto"`` may pick the FFT for floating
  inputs: its rounding error is relative to the whole image's magnitude rather than each
  window's, and a NaN/Inf anywhere spreads over the whole output; force ``"naive"`` or
  ``"im2col"`` for SciPy's window-local behaviour.
"""

from __future__ import annotations

import cmath
import math
import numbers
from types import ModuleType
from typing import Any

import array_api_compat
import array_api_extra as xpx
import numpy as np  # dtype promotion on names; converts non-array inputs, as SciPy does

from . import dask_arrays
from .backend import asarray, device_of, is_traced, namespace_of
from .budget import check_size, itemsize
from .conv import CAPABILITIES, conv2d
from .conv._boundary import in_native_order
from .conv._complex import complex_from_parts, embed_weights
from .conv.dispatch import parse_strategy, plan
from .extension import BOUNDARIES, extend_mirrored, extension_pads
from .geometry import conv_geometry

__all__ = ["BOUNDARIES", "MODES", "convolve2d", "correlate2d"]

Array = Any

#: Accepted ``mode`` values.
MODES: tuple[str, ...] = ("full", "same", "valid")

#: float64 represents every integer of magnitude below this exactly.
EXACT_FLOAT64_LIMIT = 2.0**53

#: Dtype names looked up in a namespace (a dtype's name is found by equality).
_DTYPE_NAMES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)


# --------------------------------------------------------------------------- public API


def correlate2d(
    in1: Array,
    in2: Array,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: Any = 0,
    *,
    strategy: str = "auto",
) -> Array:
    """Cross-correlate ``in1`` with ``in2``, as ``scipy.signal.correlate2d``.

    Parameters
    ----------
    in1 : array_like, shape (H, W) or (..., H, W)
        Image, or a batch of images (arraycnn extension): bool, integer, floating or
        complex. Lists, tuples and scalars are converted as ``numpy.asarray`` does.
    in2 : array_like, shape (kh, kw)
        Kernel; same namespace and device as ``in1`` (or array_like). Conjugated by
        ``correlate2d`` where complex, as in SciPy.
    mode : {"full", "same", "valid"}
        Output size; see the module docstring for shapes and centring.
    boundary : {"fill", "wrap", "symm", "reflect"}
        Extension of ``in1`` beyond its edges (aliases "pad", "circular", "symmetric").
        "reflect" is an arraycnn extension (edge sample not repeated).
    fillvalue : scalar or one-element array
        Value of the extension for ``boundary="fill"``; ignored otherwise. Complex only
        for a complex result.
    strategy : {"auto", "naive", "separable", "im2col", "fft"}
        Convolution strategy. Integer inputs only accept exact ones ("naive", "im2col");
        ``auto`` keeps integer-valued NumPy inputs exact (module docstring).

    Returns
    -------
    array, shape (..., Ho, Wo)
        Dtype ``numpy.result_type(in1.dtype, in2.dtype)`` (float16 stays float16);
        namespace and device of the inputs.

    Raises
    ------
    ValueError
        Wrong number of dimensions (scalars included), empty input, a dtype that is not a
        number (object, string) or bool with bool, unknown mode / boundary / strategy, a
        ``fillvalue`` that is not one number (or complex for a real result), "valid" with
        neither input at least as large as the other, a strategy that is not exact for
        integer inputs, integer inputs too large for exact float64 sums, inputs on
        different devices.
    TypeError
        Inputs of two namespaces; ``mode`` or ``boundary`` not a string.

    Examples
    --------
    >>> image = np.arange(16.0).reshape(4, 4)
    >>> correlate2d(image, np.array([[1.0, -1.0]]), mode="valid")
    array([[-1., -1., -1.],
           [-1., -1., -1.],
           [-1., -1., -1.],
           [-1., -1., -1.]])
    >>> correlate2d(np.eye(3, dtype=np.int8), np.ones((2, 2), dtype=np.int8), "same")
    array([[2, 1, 0],
           [1, 2, 1],
           [0, 1, 1]], dtype=int8)
    """
    if dask_arrays.is_dask_array(in1):  # lazy, chunk by chunk (arraycnn.dask_arrays)
        args = (in1, in2, mode, boundary, fillvalue)
        return dask_arrays.filter2d(correlate2d, *args, strategy=strategy, convolve=False)
    return _filter2d(in1, in2, mode, boundary, fillvalue, strategy, convolve=False)


def convolve2d(
    in1: Array,
    in2: Array,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: Any = 0,
    *,
    strategy: str = "auto",
) -> Array:
    """Convolve ``in1`` with ``in2``, as ``scipy.signal.convolve2d``.

    The correlation with ``in2`` flipped in both axes; "same" centres the other way for
    even kernels (see the module docstring). Parameters, returns and errors as in
    :func:`correlate2d`.

    Examples
    --------
    >>> image = np.arange(16.0).reshape(4, 4)
    >>> convolve2d(image, np.array([[1.0, -1.0]]), mode="valid")[0]
    array([1., 1., 1.])
    >>> convolve2d(image, np.ones((3, 3)) / 9, boundary="symm", mode="same").shape
    (4, 4)
    """
    if dask_arrays.is_dask_array(in1):  # lazy, chunk by chunk (arraycnn.dask_arrays)
        args = (in1, in2, mode, boundary, fillvalue)
        return dask_arrays.filter2d(convolve2d, *args, strategy=strategy, convolve=True)
    return _filter2d(in1, in2, mode, boundary, fillvalue, strategy, convolve=True)


# --------------------------------------------------------------------------- validation


def _parse_mode(mode: Any) -> str:
    """``mode`` as given (SciPy is case-sensitive); ValueError/TypeError otherwise."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be one of {MODES}, got {type(mode).__name__} {mode!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    return mode


def _parse_boundary(boundary: Any) -> str:
    """Canonical boundary name ('fill', 'wrap', 'symm' or 'reflect')."""
    if not isinstance(boundary, str):
        raise TypeError(
            f"boundary must be one of {tuple(BOUNDARIES)}, got {type(boundary).__name__} "
            f"{boundary!r}"
        )
    try:
        return BOUNDARIES[boundary]
    except KeyError:
        raise ValueError(f"boundary must be one of {tuple(BOUNDARIES)}; got {boundary!r}") from None


def _check_shapes(in1: Array, in2: Array, func: str) -> None:
    """in1 (..., H, W), in2 (kh, kw), neither empty."""
    if in2.ndim != 2:
        raise ValueError(f"{func}: in2 must be 2-D (kh, kw), got shape {tuple(in2.shape)}")
    if in1.ndim < 2:
        raise ValueError(
            f"{func}: in1 must be 2-D (H, W) or a batch (..., H, W), got shape {tuple(in1.shape)}"
        )
    for name, a in (("in1", in1), ("in2", in2)):
        if any(s == 0 for s in a.shape):
            raise ValueError(f"{func}: {name} must not be empty, got shape {tuple(a.shape)}")


def _valid_swap(hw1: tuple[int, int], hw2: tuple[int, int]) -> bool:
    """For "valid": True if in2 is the larger input (the roles swap), as SciPy decides.

    Raises ValueError if neither is at least as large as the other in both dimensions.
    """
    in1_larger = all(a >= b for a, b in zip(hw1, hw2))
    in2_larger = all(b >= a for a, b in zip(hw1, hw2))
    if not (in1_larger or in2_larger):
        raise ValueError(
            f"mode='valid' needs one input at least as large as the other in every "
            f"dimension; got in1 (H, W) = {hw1} and in2 = {hw2}"
        )
    return not in1_larger


def _dtype_name(dtype: Any, xp: ModuleType) -> str | None:
    """The name under which ``xp`` exposes ``dtype`` (None if not a known dtype)."""
    for name in _DTYPE_NAMES:
        candidate = getattr(xp, name, None)
        if candidate is not None and dtype == candidate:
            return name
    return None


def _dtype_plan(in1: Array, in2: Array, xp: ModuleType, func: str) -> tuple[Any, Any, bool]:
    """(result dtype, compute dtype, integer result?) for the two inputs.

    The result dtype is NumPy's promotion of the two dtypes (what SciPy returns), looked
    up by name in ``xp``; the sums run in float32/float64 (float64 for integer results),
    complex results in their own dtype.
    """
    names = []
    for arg, a in (("in1", in1), ("in2", in2)):
        name = _dtype_name(a.dtype, xp)
        if name is None:
            raise ValueError(
                f"{func}: {arg} has dtype {a.dtype}, which is not a number type (bool, "
                f"integer, floating or complex)"
            )
        names.append(name)
    result = _promote(*names)
    if result == "bool":
        raise ValueError(
            f"{func}: in1 and in2 are both bool, which has no arithmetic result dtype (SciPy "
            f"refuses it too); cast one input to an integer dtype"
        )
    result_dtype = getattr(xp, result, None)
    if result_dtype is None:
        raise TypeError(
            f"{func}: the result dtype {result} of in1 ({in1.dtype}) and in2 ({in2.dtype}) is "
            f"not available in {xp.__name__}"
        )
    integer = result.startswith(("int", "uint"))
    compute = "float64" if integer else ("float32" if result in HALF else result)
    return result_dtype, getattr(xp, compute), integer


#: Half-precision dtype names: computed in float32, returned in their own dtype.
HALF = ("float16", "bfloat16")


def _promote(first: str, second: str) -> str:
    """NumPy's promotion of two dtype names; bfloat16 (which NumPy lacks) promotes as
    float16, except that bfloat16 with float16 gives float32 (as in torch)."""
    if "bfloat16" not in (first, second):
        return np.result_type(np.dtype(first), np.dtype(second)).name
    other = second if first == "bfloat16" else first
    if other in HALF:
        return "bfloat16" if other == "bfloat16" else "float32"
    result = np.result_type(np.float16, np.dtype(other)).name
    return "bfloat16" if result == "float16" else result


def _scalar_from_array(value: Any) -> int | float | complex:
    """The Python number held by a one-element array of any namespace (SciPy's errors for
    other sizes, ValueError for a dtype that is not a number)."""
    size = math.prod(value.shape) if all(isinstance(s, int) for s in value.shape) else None
    if size == 0:
        raise ValueError(
            f"`fillvalue` cannot be an empty array, got an array of shape {tuple(value.shape)}"
        )
    if size != 1:
        raise ValueError(
            f"`fillvalue` must be scalar or an array with one element, got an array of "
            f"shape {tuple(value.shape)}"
        )
    vxp = array_api_compat.array_namespace(value)
    v = vxp.reshape(value, ())  # (1, ..., 1) -> ()
    if _dtype_name(v.dtype, vxp) is None:
        raise ValueError(f"fillvalue must be a number, got an array of dtype {v.dtype}")
    if vxp.isdtype(v.dtype, "complex floating"):
        return complex(v)
    if vxp.isdtype(v.dtype, "real floating"):
        return float(v)
    return int(v)


def _fill_number(fillvalue: Any) -> Any:
    """``fillvalue`` as a number: a scalar, or the element of a one-element array or
    sequence (converted as ``numpy.asarray``, as SciPy does); ValueError otherwise."""
    if array_api_compat.is_array_api_obj(fillvalue):
        return _scalar_from_array(fillvalue)
    if isinstance(fillvalue, numbers.Number):
        return fillvalue
    if isinstance(fillvalue, (str, bytes)) or fillvalue is None:
        raise ValueError(
            f"fillvalue must be a number, got {type(fillvalue).__name__} {fillvalue!r}"
        )
    try:
        host = np.asarray(fillvalue)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"fillvalue must be a number, got {type(fillvalue).__name__} {fillvalue!r} ({exc})"
        ) from None
    return _scalar_from_array(host)


def _is_complex_number(value: Any) -> bool:
    return isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real)


def _parse_fillvalue(
    fillvalue: Any, integer: bool, result_dtype: Any, xp: ModuleType
) -> float | complex:
    """``fillvalue`` as a number of the computation: complex for a complex result, else a
    float (truncated toward zero for integers). A complex fill value for a real result is
    refused, as SciPy refuses it (even with a zero imaginary part)."""
    value = _fill_number(fillvalue)
    if xp.isdtype(result_dtype, "complex floating"):
        return complex(value)
    if _is_complex_number(value):
        raise ValueError(
            f"could not cast `fillvalue` directly to the output type {result_dtype}: "
            f"{value!r} is complex and the inputs are real"
        )
    try:
        real = float(value)
    except (TypeError, ValueError, OverflowError):
        if isinstance(value, numbers.Integral):  # an int beyond float range
            real = math.inf if value > 0 else -math.inf
        else:
            raise ValueError(
                f"fillvalue must be a number, got {type(value).__name__} {value!r}"
            ) from None
    if not integer:
        return real
    return float(_integer_fill(value, real, result_dtype, xp))


def _integer_fill(value: Any, real: float, result_dtype: Any, xp: ModuleType) -> int:
    """Fill value of an integer result: finite, truncated toward zero, in range."""
    if not math.isfinite(real):
        raise ValueError(f"fillvalue must be finite for an integer result, got {value!r}")
    whole = int(value) if isinstance(value, numbers.Integral) else math.trunc(real)
    info = xp.iinfo(result_dtype)
    if not info.min <= whole <= info.max:
        raise ValueError(
            f"fillvalue {value!r} is out of range for the integer result dtype "
            f"{result_dtype} [{info.min}, {info.max}]"
        )
    return whole


# --------------------------------------------------------------------------- extension


def extend(
    x: Array,
    pads: tuple[tuple[int, int], tuple[int, int]],
    boundary: str,
    fillvalue: float | complex = 0.0,
    *,
    xp: ModuleType,
) -> Array:
    """Extend the last two axes of ``x`` (..., H, W) to (..., H + t + b, W + l + r).

    ``pads`` is ``((top, bottom), (left, right))``; ``boundary`` a canonical name. Pads
    may exceed the image (periodic / repeated mirror continuation).
    """
    (top, bottom), (left, right) = pads
    if boundary == "fill" and xp.isdtype(x.dtype, "complex floating"):  # each part its own fill
        fill = complex(fillvalue)
        re = extend(xp.real(x), pads, boundary, fill.real, xp=xp)
        return complex_from_parts(re, extend(xp.imag(x), pads, boundary, fill.imag, xp=xp), xp=xp)
    if boundary == "fill":
        width = ((0, 0),) * (x.ndim - 2) + ((top, bottom), (left, right))
        return xpx.pad(x, width, constant_values=fillvalue, xp=xp)
    return extend_mirrored(x, pads, boundary, xp=xp)


# --------------------------------------------------------------------------- computation


def _check_exact_strategy(name: str, func: str) -> None:
    """A forced strategy on integer inputs must sum exactly."""
    if name == "auto":
        return
    if not CAPABILITIES[name].exact_sums:
        why = {
            "fft": "the FFT rounds every output (errors relative to the whole image)",
            "winograd": "its tile transforms round every product",
        }.get(name, "it rebuilds the kernel from rounded SVD factors")
        raise ValueError(
            f"{func}: strategy={name!r} is not exact for integer inputs ({why}); use "
            f"'auto', 'naive' or 'im2col', or cast the inputs to a float dtype"
        )


def _exact_auto_strategy(image: Array, kernels: Array, padding: Any, *, xp: ModuleType) -> str:
    """The dispatcher's choice among strategies exact on integer-valued float64 data.

    image (N, H, W), kernels (F, kh, kw), as :func:`_correlate_batch` will run them.
    """
    w = kernels[:, None, ...]  # (F, kh, kw) -> (F, 1, kh, kw)
    channels = 1
    if xp.isdtype(w.dtype, "complex floating"):  # conv2d runs the real embedding
        w, channels = embed_weights(w, 1, xp=xp), 2  # (2F, 2, kh, kw)
    x_shape = (image.shape[0], channels, *image.shape[1:])  # (N, 1 or 2, H, W)
    geom = conv_geometry(x_shape, tuple(w.shape), padding=padding)
    return plan("auto", w, geom, xp=xp, require_exact=True).strategy


#: Integers of magnitude below these are exact in float32 / float64 (and their sums).
EXACT_INTEGER_LIMIT = {"float32": 2.0**24, "float64": EXACT_FLOAT64_LIMIT}


def _integer_valued_exact(image: Array, kernels: Array, fill: Any, *, xp: ModuleType) -> bool:
    """True if every sum of products of ``kernels`` (F, kh, kw) with ``image`` (N, H, W)
    (and ``fill``, None if unused) is exact in their float dtype: NumPy arrays only (their
    values are read on the host for free), all values integers (real and imaginary parts),
    and ``max|image| * max_k sum|kernel k|`` below 2**24 (float32) or 2**53 (float64).

    The kernels, usually the smaller, are read first; the image only if they qualify.
    """
    if not (array_api_compat.is_numpy_array(image) and array_api_compat.is_numpy_array(kernels)):
        return False
    if fill is not None and not (
        cmath.isfinite(fill) and fill.real == int(fill.real) and fill.imag == int(fill.imag)
    ):
        return False
    parts = (np.real(kernels), np.imag(kernels)) if np.iscomplexobj(kernels) else (kernels,)
    if not all(np.all(np.isfinite(p) & (p == np.trunc(p))) for p in parts):
        return False
    mass = float(np.max(sum(np.sum(np.abs(p), axis=(-2, -1)) for p in parts)))
    parts = (np.real(image), np.imag(image)) if np.iscomplexobj(image) else (image,)
    if not all(np.all(np.isfinite(p) & (p == np.trunc(p))) for p in parts):
        return False
    peak = max(float(np.max(np.abs(p))) for p in parts)
    if fill is not None:
        peak = max(peak, abs(fill.real), abs(fill.imag))
    limit = EXACT_INTEGER_LIMIT["float32" if np.real(image).dtype == np.float32 else "float64"]
    return peak * mass < limit


def _check_integer_magnitude(
    image: Array, kernels: Array, fill: float | None, func: str, *, xp: ModuleType
) -> None:
    """Raise unless ``max|image ext| * max_k sum|kernel k|`` < 2**53 (exact float64 sums).

    ``kernels`` is (..., kh, kw) (one kernel, or one per batch entry in a swapped call).
    Two reductions brought to the host as Python floats.
    """
    if is_traced(image) or is_traced(kernels):
        return  # values cannot be read under a trace (documented in the module)
    peak = float(xp.max(xp.abs(image)))
    if fill is not None:
        peak = max(peak, abs(fill))
    mass = float(xp.max(xp.sum(xp.abs(kernels), axis=(-2, -1))))
    if not peak * mass < EXACT_FLOAT64_LIMIT:
        raise ValueError(
            f"{func}: integer inputs too large for exact sums: max|image| ({peak:.6g}) * "
            f"sum|kernel| ({mass:.6g}) must be < 2**53; cast the inputs to float64 to "
            f"accept rounding"
        )


def _check_finite_for(
    strategy: str, arrays: tuple[Array, Array], names: tuple[str, str], fill, func: str
) -> None:
    """A forced FFT or Winograd needs finite images, kernels and fill value, separable
    finite kernels (the SVD): raise naming the filter's own argument (reads values, as the
    forced strategy would)."""
    spreads = not CAPABILITIES[strategy].nan_local  # FFT, Winograd: both inputs mix
    both = ((arrays[0], names[0]), (arrays[1], names[1]))
    checked = both if spreads else both[1:]
    bad = [name for a, name in checked if not _all_finite(a)]
    if spreads and fill is not None and not cmath.isfinite(fill):
        bad.append("fillvalue")
    if bad:
        why = {
            "fft": "the FFT would spread them over the whole output",
            "winograd": "Winograd would spread them over their tiles",
        }.get(strategy, "the SVD of the kernel is undefined")
        raise ValueError(
            f"{func}: strategy={strategy!r} cannot handle non-finite input: "
            f"{' and '.join(bad)} {'holds' if len(bad) == 1 else 'hold'} NaN or Inf and {why}; "
            "use strategy='auto', 'naive' or "
            "'im2col', which keep non-finite values local"
        )


def _all_finite(a: Array) -> bool:
    """True if ``a`` holds no NaN/Inf; traced (JAX ``jit``) arrays cannot be read and are
    taken as finite, as the dispatcher takes them."""
    if is_traced(a):
        return True
    xp = array_api_compat.array_namespace(a)
    return bool(xp.all(xp.isfinite(a)))


def _to_result(y: Array, result_dtype: Any, integer: bool, *, xp: ModuleType) -> Array:
    """Cast the float sums to the result dtype; integers go through int64 (exact, wrapping)."""
    if integer:
        y = xp.astype(y, xp.int64)
    return xp.astype(y, result_dtype, copy=False)


def _correlate_batch(
    images: Array,
    kernels: Array,
    strategy: str,
    padding: Any,
) -> Array:
    """conv2d of images (N, H, W) with kernels (F, kh, kw) -> (N, F, Ho, Wo)."""
    x = images[:, None, ...]  # (N, H, W) -> (N, 1, H, W)
    w = kernels[:, None, ...]  # (F, kh, kw) -> (F, 1, kh, kw)
    return conv2d(x, w, padding=padding, strategy=strategy)


def _check_filter_size(
    in1: Array,
    kernel_hw: tuple[int, int],
    mode: str,
    boundary: str,
    fill: float | None,
    dtypes: tuple[Any, Any],
    func: str,
) -> None:
    """Refuse, before any allocation, a result that with the float copy of ``in1``, its
    extension and the float sums exceeds the available memory (host arithmetic)."""
    xp = namespace_of(in1)
    result_dtype, compute_dtype = dtypes
    compute, result = itemsize(compute_dtype, xp), itemsize(result_dtype, xp)
    images, (h, w), (kh, kw) = math.prod(in1.shape[:-2]), in1.shape[-2:], kernel_hw
    if mode == "full":
        out = (h + kh - 1) * (w + kw - 1)
    elif mode == "same":
        out = h * w
    else:
        out = max(h - kh + 1, kh - h + 1) * max(w - kw + 1, kw - w + 1)
    total = images * out * compute
    if compute_dtype != in1.dtype:
        total += images * h * w * compute  # the float copy of in1
    if mode != "valid" and (boundary != "fill" or fill != 0):
        total += images * (h + 2 * kh) * (w + 2 * kw) * compute  # the extended images
    if result_dtype != compute_dtype:
        total += images * out * (result + 8)  # the result, through int64 for integers
    if xp.isdtype(compute_dtype, "complex floating"):
        total += images * (h + 2 * kh) * (w + 2 * kw) * compute  # conv2d's real embedding
    shape = (*in1.shape[:-2], h, w)
    check_size(total, f"{func}: filtering in1 of shape {shape} ({mode!r})", xp, device_of(in1))


def _as_arrays(in1: Any, in2: Any, func: str) -> tuple[Array, Array]:
    """The inputs as arrays: a non-array one (nested lists or tuples, a scalar) is converted
    as ``numpy.asarray`` converts it (SciPy's array_like), then moved to the namespace and
    device of the other input where that one is an array."""
    given = (("in1", in1), ("in2", in2))
    like = next((a for _, a in given if array_api_compat.is_array_api_obj(a)), None)
    out = []
    for name, a in given:
        if array_api_compat.is_array_api_obj(a):
            out.append(a)
            continue
        try:
            host = np.asarray(a)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{func}: {name} must be an array or nested sequences of numbers, got "
                f"{type(a).__name__} ({exc})"
            ) from None
        if like is not None and not array_api_compat.is_numpy_array(like):
            host = asarray(host, backend=namespace_of(like), device=device_of(like))
        out.append(host)
    return out[0], out[1]


def _filter2d(
    in1: Array,
    in2: Array,
    mode: Any,
    boundary: Any,
    fillvalue: Any,
    strategy: Any,
    *,
    convolve: bool,
) -> Array:
    """Shared body of :func:`correlate2d` and :func:`convolve2d` (the public boundary)."""
    func = "convolve2d" if convolve else "correlate2d"
    in1, in2 = _as_arrays(in1, in2, func)
    xp = namespace_of(in1, in2, names=("in1", "in2"))
    in1, in2 = in_native_order(in1), in_native_order(in2)  # ">f8" computes as float64
    _check_shapes(in1, in2, func)
    mode = _parse_mode(mode)
    boundary = _parse_boundary(boundary)
    strategy = parse_strategy(strategy)
    if device_of(in1) != device_of(in2):
        raise ValueError(f"{func}: in1 is on device {device_of(in1)} but in2 on {device_of(in2)}")
    result_dtype, compute_dtype, integer = _dtype_plan(in1, in2, xp, func)
    batch = tuple(in1.shape[:-2])
    h, w = in1.shape[-2:]
    kh, kw = in2.shape
    swapped = mode == "valid" and _valid_swap((h, w), (kh, kw))
    fill = _parse_fillvalue(fillvalue, integer, result_dtype, xp) if boundary == "fill" else None
    if integer:
        _check_exact_strategy(strategy, func)

    _check_filter_size(in1, (kh, kw), mode, boundary, fill, (result_dtype, compute_dtype), func)
    a = xp.astype(in1, compute_dtype, copy=False)
    k = xp.astype(in2, compute_dtype, copy=False)
    a = xp.reshape(a, (math.prod(batch), h, w))  # (..., H, W) -> (N, H, W)
    if swapped:  # in2 is the image, each in1 is a kernel; no extension in "valid"
        image, kernels, padding = k[None, ...], a, 0  # (1, kh, kw), (N, H, W)
    else:
        pads = extension_pads(mode, (kh, kw), convolve=convolve)
        image, kernels = a, k[None, ...]  # (N, H, W), (1, kh, kw)
        if boundary == "fill" and fill == 0:
            padding = pads  # conv2d zero-pads inside the strategy
        else:
            image = extend(image, pads, boundary, 0.0 if fill is None else fill, xp=xp)
            padding = 0
    if convolve:
        kernels = xp.flip(kernels, axis=(-2, -1))
    elif xp.isdtype(kernels.dtype, "complex floating"):  # SciPy conjugates the kernel role
        kernels = xp.conj(kernels)
    uses_fill = boundary == "fill" and not swapped and mode != "valid"
    if integer:
        _check_integer_magnitude(image, kernels, fill if uses_fill else None, func, xp=xp)
        if strategy == "auto":
            strategy = _exact_auto_strategy(image, kernels, padding, xp=xp)
    elif strategy == "auto" and _integer_valued_exact(
        image, kernels, fill if uses_fill else None, xp=xp
    ):
        strategy = _exact_auto_strategy(image, kernels, padding, xp=xp)
    elif strategy in ("fft", "separable", "winograd"):
        names = ("in2", "in1") if swapped else ("in1", "in2")
        _check_finite_for(strategy, (image, kernels), names, fill if uses_fill else None, func)
    y = _correlate_batch(image, kernels, strategy, padding)  # (N, F, Ho, Wo), N or F is 1
    ho, wo = y.shape[-2:]
    if swapped and not convolve:
        y = xp.flip(y, axis=(-2, -1))
    y = xp.reshape(y, (*batch, ho, wo))  # (N, 1, Ho, Wo) or (1, N, Ho, Wo) -> (..., Ho, Wo)
    return _to_result(y, result_dtype, integer, xp=xp)
