"""Fuzzing the operations: every outcome is a correct result or an arraycnn error.

Hypothesis draws hostile calls of conv2d, conv2d_backward, correlate2d / convolve2d and the
pooling functions: bad and good shapes (any rank, empty dimensions), dtypes (half, single
and double precision, integers, bool, complex), non-arrays, mixed namespaces, and geometry
and option arguments of every type. For each call this file decides independently (its own
rules, written from the documented contract) whether the call is valid:

- valid: the result must match an independent oracle (explicit loops / scipy.signal in
  float64, on tiny inputs) within the per-dtype tolerance of :mod:`arraycnn.testing`;
- invalid: the call must raise ValueError or TypeError (WorkspaceError for sizes) from
  arraycnn's own code, whose message names one of the offending arguments.

Cases per run: :data:`EXAMPLES` per test (``FACTOR`` times the profile's ``max_examples``:
100 with the default profile, 1600 with ``thorough``).
"""

from __future__ import annotations

import cmath
import math
import numbers
import os
import re
import traceback

import numpy as np
import oracles
import pytest
import scipy.signal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import arraycnn as ac
from arraycnn.testing import assert_close

FACTOR = 4
EXAMPLES = FACTOR * settings().max_examples
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STRICT = ac.resolve_backend("array_api_strict")
LIBRARY = os.path.dirname(ac.__file__)
FLOATS = ("float64", "float32", "float16")
DTYPES = (*FLOATS, "int32", "uint8", "bool", "complex128")


# --------------------------------------------------------------------------- drawing


def _array(draw, shape, dtype, *, distinct=False):
    """A NumPy array of ``shape`` and ``dtype`` with small values (distinct if asked)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    size = math.prod(shape)
    if distinct:
        values = (rng.permutation(size) - size // 2).reshape(shape) / 4.0
    else:
        values = rng.integers(-3, 4, shape) + (0 if "int" in dtype else rng.random(shape))
    if dtype == "bool":
        return values > 0
    return np.asarray(values).astype(dtype)


def _shapes(ndim_choices, low=0, high=4):
    return st.sampled_from(ndim_choices).flatmap(
        lambda nd: st.tuples(*[st.integers(low, high)] * nd)
    )


def _ints(low=-1, high=3):
    return st.one_of(st.integers(low, high), st.integers(low, high).map(np.int64))


ODD_SCALARS = [1.5, True, False, "2", None, 2.0, [1], {}]


def _pair_like(low=-1, high=3):
    """Stride / dilation / kernel_size: ints, pairs, and every wrong type."""
    return st.one_of(
        _ints(low, high),
        st.tuples(_ints(low, high), _ints(low, high)),
        st.lists(st.integers(low, high), min_size=0, max_size=3),
        st.sampled_from([*ODD_SCALARS, (1, 2.0), (True, 1)]),
    )


PADDING_ODDITIES = [
    *("same", "valid", "full", "SAME", "Valid", "bogus", "", 1.5, None, True),
    *(((1,), (2,)), ((1, 2), 3), (1, (2, 3)), [[1, 0], [0, 1]], (1, 2, 3)),
]


def _paddings():
    return st.one_of(
        _ints(-1, 3),
        st.tuples(_ints(-1, 2), _ints(-1, 2)),
        st.tuples(st.tuples(_ints(-1, 2), _ints(-1, 2)), st.tuples(_ints(-1, 2), _ints(-1, 2))),
        st.sampled_from(PADDING_ODDITIES),
    )


def _strategies():
    return st.sampled_from(["auto", "naive", "im2col", "fft", "separable", "FFT", "winograd", 3])


# --------------------------------------------------------------------------- the rules


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _pair_ok(v, minimum: int) -> bool:
    if _is_int(v):
        return v >= minimum
    if isinstance(v, (tuple, list)):
        return len(v) == 2 and all(_is_int(a) and a >= minimum for a in v)
    return False


def _padding_ok(p) -> bool:
    if isinstance(p, str):
        return p.lower() in ("same", "valid", "full")
    if (
        isinstance(p, (tuple, list))
        and len(p) == 2
        and all(isinstance(q, (tuple, list)) for q in p)
    ):
        return all(_pair_ok(q, 0) for q in p)
    if isinstance(p, (tuple, list)) and any(isinstance(q, (tuple, list)) for q in p):
        return False
    return _pair_ok(p, 0)


def _two(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _plain_padding(p):
    """A valid padding in the oracle's forms (lower-case names, ints)."""
    if isinstance(p, str):
        return p.lower()
    if isinstance(p, (tuple, list)) and isinstance(p[0], (tuple, list)):
        return (_two(p[0]), _two(p[1]))
    return _two(p)


def _is_array(a) -> bool:
    return isinstance(a, np.ndarray) or type(a).__module__.startswith("array_api_strict")


def _real_floating(a) -> bool:
    return str(a.dtype).rsplit(".", 1)[-1] in FLOATS


def _floating(a) -> bool:
    """Real or complex floating: what conv2d takes (complex as torch's complex conv2d)."""
    return _real_floating(a) or str(a.dtype).rsplit(".", 1)[-1].startswith("complex")


def _conv_problems(x, w, kwargs, extra=()) -> set[str]:
    """The arguments of a conv2d-like call that break the contract (empty: valid); ``extra``
    holds the other arrays by name (a bias "b" must have shape (F,))."""
    problems = set()
    arrays = {"x": x, "w": w, **dict(extra)}
    for name, a in arrays.items():
        if not _is_array(a):
            problems.add(name)
    if problems:
        return problems
    if len({type(a).__module__.split(".")[0] for a in arrays.values()}) > 1:
        return set(arrays)
    for name, a in (("x", x), ("w", w)):
        if a.ndim != 4 or 0 in a.shape:
            problems.add(name)
    for name in ("stride", "dilation"):
        if not _pair_ok(kwargs[name], 1):
            problems.add(name)
    if not _padding_ok(kwargs["padding"]):
        problems.add("padding")
    groups = kwargs["groups"]
    if not (_is_int(groups) and groups >= 1):
        problems.add("groups")
    if problems:
        return problems
    if w.shape[0] % groups or w.shape[1] * groups != x.shape[1]:
        return {"x", "w", "groups"}
    geometry = {k: kwargs[k] for k in ("stride", "dilation")}
    if not oracles.fits(x.shape, w.shape, padding=_plain_padding(kwargs["padding"]), **geometry):
        return {"padding", "dilation"}
    for name, a in (("x", x), ("w", w), *extra):
        if not _floating(a) or a.dtype != x.dtype:
            problems.add(name)
    strategy = kwargs["strategy"]
    if not isinstance(strategy, str) or strategy.lower() not in (*ac.STRATEGY_NAMES, "auto"):
        problems.add("strategy")
    bias = dict(extra).get("b")
    if not problems and bias is not None and bias.shape != (w.shape[0],):
        problems.add("b")
    if not problems and strategy.lower() == "winograd":
        problems = _winograd_problems(x, w, kwargs)
    return problems


#: The real dtypes Winograd computes in (complex data runs as its real embedding).
WINOGRAD_DTYPES = ("float32", "float64", "complex64", "complex128")


def _winograd_problems(x, w, kwargs) -> set[str]:
    """Why a forced ``strategy="winograd"`` refuses an otherwise valid call: it takes
    stride 1, dilation 1, kernels of 2 to 7 taps along some axis and at most 7 along each,
    and single or double precision (real or complex); the error names the strategy, and
    the stride or dilation where those are the reason."""
    problems = {name for name in ("stride", "dilation") if _two(kwargs[name]) != (1, 1)}
    kh, kw = w.shape[2:]
    if max(kh, kw) > 7 or max(kh, kw) == 1 or str(x.dtype) not in WINOGRAD_DTYPES:
        problems.add("strategy")
    return {*problems, "strategy"} if problems else set()


def _y_shape(x, w, kwargs) -> tuple[int, ...] | None:
    """The output shape where shapes and geometry are valid (whatever the dtypes), else None."""
    if not (_is_array(x) and _is_array(w)) or x.ndim != 4 or w.ndim != 4:
        return None
    if 0 in x.shape or 0 in w.shape or not _padding_ok(kwargs["padding"]):
        return None
    stride, dilation, groups = kwargs["stride"], kwargs["dilation"], kwargs["groups"]
    if not (_pair_ok(stride, 1) and _pair_ok(dilation, 1) and _is_int(groups) and groups >= 1):
        return None
    if w.shape[0] % groups or w.shape[1] * groups != x.shape[1]:
        return None
    s, d = _two(stride), _two(dilation)
    pads = oracles.explicit_padding(
        _plain_padding(kwargs["padding"]), x.shape[2:], w.shape[2:], s, d
    )
    sizes = [
        oracles.out_size(i, k, s_, lo, hi, d_)
        for i, k, s_, (lo, hi), d_ in zip(x.shape[2:], w.shape[2:], s, pads, d)
    ]
    return None if min(sizes) < 1 else (x.shape[0], w.shape[0], *sizes)


def _check_error(exc: BaseException, problems: set[str]) -> None:
    """An arraycnn ValueError/TypeError naming one of ``problems``, raised in arraycnn."""
    assert problems, f"a valid call raised {type(exc).__name__}: {exc}"
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
    named = [p for p in problems if re.search(rf"\b{re.escape(p)}\b", str(exc))]
    assert named, f"{exc!r} names none of {sorted(problems)}"
    frames = traceback.extract_tb(exc.__traceback__)
    assert frames[-1].filename.startswith(LIBRARY), f"raised outside arraycnn: {frames[-1]}"
    event(f"error: {sorted(named)[0]}")


def _outcome(call, problems: set[str]):
    """The result of ``call()`` if valid, None after checking the error if not."""
    try:
        result = call()
    except Exception as exc:  # every error is checked
        _check_error(exc, problems)
        return None
    assert not problems, f"invalid call ({sorted(problems)}) returned a result"
    event("result")
    return result


def _scales(name, x, w, gy=None, **geometry):
    """The error scales of the strategy ``name`` actually ran (its error model)."""
    scales = {m: oracles.error_scales(x, w, None, gy, model=m, **geometry) for m in oracles.MODELS}
    models = oracles.ERROR_MODEL[name]
    if gy is None:
        return (scales[models["y"]][0],)
    return scales[models["y"]][0], scales[models["gx"]][1], scales[models["gw"]][2]


# --------------------------------------------------------------------------- convolution


#: Faults injected into an otherwise valid convolution call (None: none).
CONV_FAULTS = (None, None, None, None, "x", "w", "dtype", "array", "geometry", "strategy", "b")


@st.composite
def conv_calls(draw, *, backward: bool = False, faults=CONV_FAULTS):
    """(x, w, b, kwargs, fault): a valid call with one fault injected about half of the
    time (``fault`` names it; the backward's "gy" is injected by the test), or (one in six)
    wild shapes and dtypes."""
    groups = draw(st.sampled_from([1, 1, 2]))
    cg, fg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    x_shape = (
        draw(st.integers(1, 2)),
        cg * groups,
        draw(st.integers(1, 7)),
        draw(st.integers(1, 7)),
    )
    w_shape = (fg * groups, cg, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dtype = w_dtype = draw(st.sampled_from(FLOATS))
    kwargs = {
        "stride": draw(st.sampled_from([1, 2, (1, 2), [2, 1], np.int64(1)])),
        "padding": draw(st.sampled_from([0, 1, "same", "valid", "FULL", ((1, 0), (0, 2)), (0, 1)])),
        "dilation": draw(st.sampled_from([1, 1, (2, 1)])),
        "groups": groups,
        "strategy": draw(st.sampled_from([*ac.STRATEGY_NAMES, "auto", "Auto"])),
    }
    fault = draw(st.sampled_from(faults))
    if draw(st.integers(0, 5)) == 0:  # wild
        x_shape, w_shape = draw(_shapes([3, 4, 4, 5])), draw(_shapes([4, 4, 2]))
        dtype, w_dtype = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    elif fault == "x":
        x_shape = draw(
            st.sampled_from([x_shape[1:], (*x_shape, 1), (0, *x_shape[1:]), (*x_shape[:3], 0)])
        )
    elif fault == "w":
        w_shape = draw(
            st.sampled_from(
                [
                    w_shape[1:],
                    (w_shape[0], w_shape[1] + 1, *w_shape[2:]),
                    (*w_shape[:2], 0, 1),
                    (w_shape[0] + 1, *w_shape[1:]),
                ]
            )
        )
    elif fault == "dtype":
        dtype, w_dtype = draw(
            st.sampled_from(
                [
                    (dtype, "float64" if dtype != "float64" else "float32"),
                    ("int32", "int32"),
                    ("bool", dtype),
                    (dtype, "complex128"),
                    ("uint8", "uint8"),
                ]
            )
        )
    elif fault == "geometry":
        name = draw(st.sampled_from(["stride", "padding", "dilation", "groups"]))
        kwargs[name] = draw(
            {
                "stride": _pair_like(),
                "padding": _paddings(),
                "dilation": _pair_like(),
                "groups": _ints(-1, 3) | st.sampled_from([1.0, True, "2", None]),
            }[name]
        )
    elif fault == "strategy":
        kwargs["strategy"] = draw(st.sampled_from(["strassen", "", 3, None, ("fft",)]))
    x, w = _array(draw, x_shape, dtype), _array(draw, w_shape, w_dtype)
    if fault == "array":
        which = draw(st.sampled_from(["list", "None", "strict", "int", "wNone"]))
        if which == "list":
            x = x.tolist()
        elif which == "None":
            x = None
        elif which == "wNone":
            w = None
        elif which == "strict":  # array-api-strict has no float16
            w = STRICT.asarray(w if w.dtype != np.float16 else w.astype(np.float32))
        else:
            x = 3
    b = None
    if not backward and (fault == "b" or draw(st.booleans())) and _is_array(w) and w.ndim >= 1:
        f = w.shape[0]
        shape, b_dtype = (f,), w_dtype
        if fault == "b":
            shape, b_dtype = draw(
                st.sampled_from(
                    [
                        ((f + 1,), w_dtype),
                        ((1, f), w_dtype),
                        ((f,), "int32"),
                        ((f,), "float64" if w_dtype != "float64" else "float16"),
                    ]
                )
            )
        b = _array(draw, shape, b_dtype)
    return x, w, b, kwargs, fault


@FUZZ
@given(data=st.data(), call=conv_calls())
def test_fuzz_conv2d(data, call):
    x, w, b, kwargs, _ = call
    problems = _conv_problems(x, w, kwargs, extra=() if b is None else (("b", b),))
    y = _outcome(lambda: ac.conv2d(x, w, b, **kwargs), problems)
    if y is None:
        return
    geometry = {k: kwargs[k] for k in ("stride", "dilation", "groups")}
    geometry["padding"] = _plain_padding(kwargs["padding"])
    expected = oracles.correlate_loops(x, w, b, **geometry)
    name = ac.choose_strategy(
        x, w, **{**geometry, "padding": kwargs["padding"]}, strategy=kwargs["strategy"]
    )
    (scale,) = _scales(name, x, w, **geometry)
    if b is not None:
        scale = scale + np.abs(np.asarray(b)).astype(np.float64)[None, :, None, None]
    assert_close(y, expected, scale=scale, dtype=x.dtype, err_msg=name)


@FUZZ
@given(data=st.data(), call=conv_calls(backward=True, faults=(*CONV_FAULTS[:-1], "gy")))
def test_fuzz_conv2d_backward(data, call):
    x, w, _, kwargs, fault = call
    problems = _conv_problems(x, w, kwargs)
    y_shape = _y_shape(x, w, kwargs)
    kind = "right" if fault != "gy" else data.draw(st.sampled_from(["shape", "dtype", "list"]))
    if y_shape is None:  # the geometry is refused before gy is looked at
        y_shape, kind = (1, 1, 2, 2), "right"
    shape = y_shape if kind != "shape" else (*y_shape[:3], y_shape[3] + 1)
    dtype = data.draw(st.sampled_from(DTYPES)) if kind == "dtype" else None
    if dtype is None:
        dtype = str(x.dtype) if _is_array(x) else "float64"
    gy = _array(data.draw, shape, dtype)
    if kind == "list":
        gy = gy.tolist()
    if kind != "right" and (kind != "dtype" or dtype != str(x.dtype)):
        problems = {*problems, "gy"}
    geometry = {k: kwargs[k] for k in ("stride", "dilation", "groups")}
    if not problems:
        geometry["padding"] = _plain_padding(kwargs["padding"])
    grads = _outcome(lambda: ac.conv2d_backward(gy, x, w, **kwargs), problems)
    if grads is None:
        return
    gx, gw, gb = grads
    ex_gx, ex_gw, ex_gb = oracles.correlate_loops_backward(gy, x, w, **geometry)
    options = {**geometry, "padding": kwargs["padding"], "strategy": kwargs["strategy"]}
    name = ac.conv.explain(x, w, **options, direction="backward", gy=gy)["choice"]
    _, s_gx, s_gw = _scales(name, x, w, gy, **geometry)
    assert_close(gx, ex_gx, scale=s_gx, dtype=x.dtype, err_msg=f"{name} gx")
    assert_close(gw, ex_gw, scale=s_gw, dtype=x.dtype, err_msg=f"{name} gw")
    assert_close(
        gb,
        ex_gb,
        scale=np.abs(gy).astype(np.float64).sum(axis=(0, 2, 3)),
        dtype=x.dtype,
        err_msg="gb",
    )


@FUZZ
@given(call=conv_calls(faults=(None,)), limit=st.sampled_from([64, 4096, 80_000, 200_000]))
def test_fuzz_small_budgets_chunk_band_or_refuse(call, limit):
    """Under tiny budgets a valid call is correct (in chunks or bands) or a WorkspaceError
    that names the workspace and the budget."""
    x, w, _, kwargs, _ = call
    if _conv_problems(x, w, kwargs):
        return
    geometry = {k: kwargs[k] for k in ("stride", "dilation", "groups")}
    geometry["padding"] = _plain_padding(kwargs["padding"])
    with ac.config(workspace_limit=limit):
        try:
            y = ac.conv2d(x, w, **kwargs)
        except ac.WorkspaceError as exc:
            message = str(exc)
            assert "workspace" in message, message
            assert f"budget {limit} bytes" in message or f"budget of {limit} bytes" in message
            event("refused: workspace over the budget")
            return
        event("result")
        name = ac.choose_strategy(
            x, w, **{**geometry, "padding": kwargs["padding"]}, strategy=kwargs["strategy"]
        )
    (scale,) = _scales(name, x, w, **geometry)
    assert_close(y, oracles.correlate_loops(x, w, **geometry), scale=scale, dtype=x.dtype)


# --------------------------------------------------------------------------- filters


MODES = ("full", "same", "valid")
BOUNDARIES = {
    "fill": "fill",
    "pad": "fill",
    "wrap": "wrap",
    "circular": "wrap",
    "symm": "symm",
    "symmetric": "symm",
    "reflect": "reflect",
}
NP_PAD = {"wrap": "wrap", "symm": "symmetric", "reflect": "reflect"}


def _filter_problems(in1, in2, mode, boundary, fillvalue, strategy) -> set[str]:
    if not _is_array(in1) or not _is_array(in2):
        return {n for n, a in (("in1", in1), ("in2", in2)) if not _is_array(a)}
    problems = set()
    if in2.ndim != 2 or 0 in in2.shape:
        problems.add("in2")
    if in1.ndim < 2 or 0 in in1.shape:
        problems.add("in1")
    if not isinstance(mode, str) or mode not in MODES:
        problems.add("mode")
    if not isinstance(boundary, str) or boundary not in BOUNDARIES:
        problems.add("boundary")
    if not isinstance(strategy, str) or strategy.lower() not in (*ac.STRATEGY_NAMES, "auto"):
        problems.add("strategy")
    if problems:
        return problems
    kinds = {str(a.dtype) for a in (in1, in2)}
    if kinds == {"bool"}:
        return {"in1", "in2"}
    integer = np.result_type(in1.dtype, in2.dtype).kind in "iu"
    complex_result = np.result_type(in1.dtype, in2.dtype).kind == "c"
    if integer and strategy.lower() in ("fft", "separable"):
        return {"strategy"}
    if mode == "valid":
        hw1, hw2 = in1.shape[-2:], in2.shape
        if not (all(a >= b for a, b in zip(hw1, hw2)) or all(b >= a for a, b in zip(hw1, hw2))):
            return {"in1", "in2"}
    if BOUNDARIES[boundary] == "fill":
        if isinstance(fillvalue, (str, type(None), list)):
            return {"fillvalue"}
        if isinstance(fillvalue, complex) and not complex_result:
            return {"fillvalue"}
        if isinstance(fillvalue, np.ndarray) and fillvalue.size != 1:
            return {"fillvalue"}
        value = complex(np.asarray(fillvalue).reshape(()))
        if not complex_result:
            value = value.real
        if integer and not math.isfinite(value):
            return {"fillvalue"}
        if integer:
            info = np.iinfo(np.result_type(in1.dtype, in2.dtype))
            if not info.min <= math.trunc(value) <= info.max:
                return {"fillvalue"}
        elif strategy.lower() == "fft" and mode != "valid" and not cmath.isfinite(value):
            return {"fillvalue"}  # the FFT would spread it (the images here are finite)
    return set()


def _filter_oracle(in1, in2, mode, boundary, fillvalue, convolve):
    """scipy.signal per image in float64 (np.pad + 'valid' for 'reflect')."""
    func = scipy.signal.convolve2d if convolve else scipy.signal.correlate2d
    values = np.complex128 if np.iscomplexobj(in1) or np.iscomplexobj(in2) else np.float64
    kernel = np.asarray(in2, values)
    canonical = BOUNDARIES[boundary]
    images = np.asarray(in1, values).reshape(-1, *in1.shape[-2:])
    out = []
    for image in images:
        if canonical != "reflect" or mode == "valid":  # "valid" reads no extension
            kw = {"boundary": canonical} if canonical != "reflect" else {}
            if canonical == "fill":
                kw["fillvalue"] = fillvalue
            out.append(func(image, kernel, mode, **kw))
            continue
        (kh, kw_) = kernel.shape
        pads = []
        for k in (kh, kw_):
            if mode == "full":
                pads.append((k - 1, k - 1))
            else:
                lo, hi = (k - 1) // 2, k // 2
                pads.append((hi, lo) if convolve else (lo, hi))
        padded = image
        for axis, pad in enumerate(pads):  # numpy's reflect of a single sample: a constant
            width = [(0, 0), (0, 0)]
            width[axis] = pad
            padded = np.pad(padded, width, mode="reflect" if image.shape[axis] > 1 else "edge")
        out.append(func(padded, kernel, "valid"))
    return np.stack(out).reshape(*in1.shape[:-2], *out[0].shape)


FILTER_FAULTS = (None, None, None, "in1", "in2", "dtype", "mode", "boundary", "fill", "strategy")


@FUZZ
@given(data=st.data(), convolve=st.booleans(), fault=st.sampled_from(FILTER_FAULTS))
def test_fuzz_filters(data, convolve, fault):
    draw = data.draw
    dtype1 = draw(st.sampled_from([*FLOATS, "int16", "uint8", "int8"]))
    dtype2 = draw(st.sampled_from([dtype1, dtype1, "float64", "int8", "bool"]))
    shape1 = (
        *draw(st.sampled_from([(), (), (2,), (1, 2)])),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 6)),
    )
    shape2 = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    mode = draw(st.sampled_from(MODES))
    boundary = draw(st.sampled_from(list(BOUNDARIES)))
    fillvalue = draw(st.sampled_from([0, 0, 1.5, -2, 3, np.float64(0.5), np.array([2.0])]))
    strategy = draw(st.sampled_from(["auto", "naive", "im2col", "Auto"]))
    if dtype1.startswith("float") or dtype2.startswith("float"):
        strategy = draw(st.sampled_from([strategy, "fft", "separable"]))
    if fault == "in1":
        shape1 = draw(st.sampled_from([shape1[-1:], (0, 3), (*shape1[:-1], 0), (2, 0, 3, 3)]))
    elif fault == "in2":
        shape2 = draw(st.sampled_from([shape2[:1], (1, *shape2), (0, 2), ()]))
    elif fault == "dtype":
        dtype1, dtype2 = draw(
            st.sampled_from([("complex64", dtype2), ("bool", "bool"), (dtype1, "complex128")])
        )
    elif fault == "mode":
        mode = draw(st.sampled_from(["SAME", "bogus", 1, None]))
    elif fault == "boundary":
        boundary = draw(st.sampled_from(["edge", "Fill", None, 2]))
    elif fault == "fill":
        boundary = "fill"
        fillvalue = draw(st.sampled_from(["x", None, 1j, [1, 2], np.ones(2), float("nan")]))
    elif fault == "strategy":
        strategy = draw(st.sampled_from(["bogus", 3, None]))
    in1, in2 = _array(draw, shape1, dtype1), _array(draw, shape2, dtype2)
    if isinstance(fillvalue, float) and math.isnan(fillvalue):  # NaN meeting 0: unspecified
        in2 = np.where(in2 == 0, 1, in2).astype(in2.dtype)
    if fault == "in1" and draw(st.booleans()):
        in1 = in1.tolist()
    problems = _filter_problems(in1, in2, mode, boundary, fillvalue, strategy)
    func = ac.convolve2d if convolve else ac.correlate2d
    out = _outcome(lambda: func(in1, in2, mode, boundary, fillvalue, strategy=strategy), problems)
    if out is None:
        return
    result = np.result_type(in1.dtype, in2.dtype)
    assert out.dtype == result and out.shape[:-2] == in1.shape[:-2]
    fill = _scalar(fillvalue) if BOUNDARIES[boundary] == "fill" else 0
    if result.kind in "iu":
        fill = math.trunc(fill)
    expected = _filter_oracle(in1, in2, mode, boundary, fill, convolve)
    if result.kind in "iu":  # exact, wrapping as SciPy's integer arithmetic
        np.testing.assert_array_equal(out, expected.astype(np.int64).astype(result))
        return
    a1, a2 = np.abs(in1).astype(np.float64), np.abs(in2).astype(np.float64)
    finite_fill = abs(fill) if cmath.isfinite(fill) else 0.0  # a NaN fill: NaN where it reaches
    scale = _filter_oracle(a1, a2, mode, boundary, finite_fill, convolve)
    scale = scale + (np.linalg.norm(a1) + finite_fill) * np.linalg.norm(a2)  # FFT, SVD
    nan = np.isnan(expected)  # a NaN fill reaches these outputs
    np.testing.assert_array_equal(np.isnan(ac.to_numpy(out)), nan)
    if not nan.all():
        got = ac.to_numpy(out)[~nan]
        assert_close(got, expected[~nan], scale=scale[~nan], dtype=out.dtype)


def _scalar(value) -> float | complex:
    value = complex(np.asarray(value).reshape(()))
    return value if value.imag else value.real


# --------------------------------------------------------------------------- pooling


def _pool_problems(x, kernel_size, stride, padding, count_include_pad, gy=None) -> set[str]:
    if not _is_array(x):
        return {"x"}
    if x.ndim != 4 or 0 in x.shape:
        return {"x"}
    problems = set()
    if not _pair_ok(kernel_size, 1):
        problems.add("kernel_size")
    if stride is not None and not _pair_ok(stride, 1):
        problems.add("stride")
    if not _padding_ok(padding):
        problems.add("padding")
    if problems:
        return problems
    k = _two(kernel_size)
    s = k if stride is None else _two(stride)
    pads = oracles.explicit_padding(_plain_padding(padding), x.shape[2:], k, s, 1)
    if not isinstance(padding, str) and any(max(p) > kk // 2 for p, kk in zip(pads, k)):
        return {"padding"}
    if any(
        oracles.out_size(i, kk, ss, lo, hi, 1) < 1
        for i, kk, ss, (lo, hi) in zip(x.shape[2:], k, s, pads)
    ):
        return {"kernel_size"}
    if not _real_floating(x):
        return {"x"}
    if not isinstance(count_include_pad, bool):
        return {"count_include_pad"}
    return set()


def _pool_oracle(x, k, s, pads, kind, count_include_pad):
    """Loops over windows in float64: (y, the windows' first-maximum / members)."""
    x = np.asarray(x, np.float64)
    (t, b), (left, r) = pads
    fill = -np.inf if kind == "max" else 0.0
    xpad = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=fill)
    inside = np.pad(np.ones_like(x), ((0, 0), (0, 0), (t, b), (left, r)))
    ho = (x.shape[2] + t + b - k[0]) // s[0] + 1
    wo = (x.shape[3] + left + r - k[1]) // s[1] + 1
    y = np.zeros((*x.shape[:2], ho, wo))
    for p in range(ho):
        for q in range(wo):
            rows, cols = slice(p * s[0], p * s[0] + k[0]), slice(q * s[1], q * s[1] + k[1])
            window = xpad[:, :, rows, cols]
            if kind == "max":
                y[:, :, p, q] = window.max(axis=(2, 3))
            else:
                count = (
                    k[0] * k[1] if count_include_pad else inside[:, :, rows, cols].sum(axis=(2, 3))
                )
                y[:, :, p, q] = window.sum(axis=(2, 3)) / count
    return y


POOL_FAULTS = (None, None, None, "x", "dtype", "kernel_size", "stride", "padding", "include")


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["max", "avg"]), fault=st.sampled_from(POOL_FAULTS))
def test_fuzz_pooling(data, kind, fault):
    draw = data.draw
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        draw(st.integers(2, 7)),
        draw(st.integers(2, 7)),
    )
    dtype = draw(st.sampled_from(FLOATS))
    kernel_size = draw(st.sampled_from([1, 2, 2, 3, (2, 3), [2, 1], np.int64(2)]))
    stride = draw(st.sampled_from([None, None, 1, 2, (1, 2)]))
    padding = draw(st.sampled_from([0, 0, 1, "same", "valid", ((1, 0), (0, 1)), (1, 0)]))
    include = draw(st.booleans())
    if fault == "x":
        shape = draw(st.sampled_from([shape[1:], (*shape, 1), (0, *shape[1:]), (*shape[:3], 0)]))
    elif fault == "dtype":
        dtype = draw(st.sampled_from(["int32", "bool", "complex128", "uint8"]))
    elif fault == "kernel_size":
        kernel_size = draw(_pair_like(-1, 9))
    elif fault == "stride":
        stride = draw(_pair_like(-1, 3))
    elif fault == "padding":
        padding = draw(_paddings())
    elif fault == "include":
        include = draw(st.sampled_from(["no", 1, None, 0.0]))
    x = _array(draw, shape, dtype, distinct=True)
    if fault == "x" and draw(st.booleans()):
        x = x.tolist()
    options = {"stride": stride, "padding": padding}
    if kind == "avg":
        options["count_include_pad"] = include
    else:
        include = True
    problems = _pool_problems(x, kernel_size, stride, padding, include)
    func = ac.max_pool2d if kind == "max" else ac.avg_pool2d
    y = _outcome(lambda: func(x, kernel_size, **options), problems)
    if y is None:
        return
    k = _two(kernel_size)
    s = k if stride is None else _two(stride)
    pads = oracles.explicit_padding(_plain_padding(padding), x.shape[2:], k, s, 1)
    expected = _pool_oracle(x, k, s, pads, kind, include)
    x64 = x.astype(np.float64)
    assert_close(y, expected, scale=np.abs(x64).max(), dtype=x.dtype)
    # the backward by its adjoint identity <gy, J dx> = <J^T gy, dx> for a small random
    # dx (distinct values 1/4 apart: a step of 1e-3 moves no maximum)
    gy = _array(draw, tuple(y.shape), str(x.dtype))
    backward = ac.max_pool2d_backward if kind == "max" else ac.avg_pool2d_backward
    gx = ac.to_numpy(backward(gy, x, kernel_size, **options)).astype(np.float64)
    dx = np.random.default_rng(0).uniform(-1e-3, 1e-3, x.shape)
    if kind == "max":
        change = _pool_oracle(x64 + dx, k, s, pads, kind, include) - _pool_oracle(
            x64, k, s, pads, kind, include
        )
    else:
        change = _pool_oracle(dx, k, s, pads, kind, include)
    lhs, rhs = float(np.sum(gy.astype(np.float64) * change)), float(np.sum(gx * dx))
    rtol, atol = ac.testing.tolerance(x.dtype)
    assert abs(lhs - rhs) <= atol * 1e-3 + rtol * 1e-3 * float(
        np.abs(gy).astype(np.float64).sum() * k[0] * k[1]
    ), (lhs, rhs)


@FUZZ
@given(
    data=st.data(),
    kind=st.sampled_from(["max", "avg"]),
    gy_kind=st.sampled_from(["shape", "dtype", "list", "strict"]),
)
def test_fuzz_pooling_backward_bad_gy(data, kind, gy_kind):
    x = _array(data.draw, (1, 2, 4, 4), "float64", distinct=True)
    gy = {
        "shape": np.ones((1, 2, 3, 2)),
        "dtype": np.ones((1, 2, 2, 2), dtype=data.draw(st.sampled_from(["float32", "int64"]))),
        "list": [[[[1.0]]]],
        "strict": STRICT.ones((1, 2, 2, 2), dtype=STRICT.float64),
    }[gy_kind]
    backward = ac.max_pool2d_backward if kind == "max" else ac.avg_pool2d_backward
    _outcome(lambda: backward(gy, x, 2), {"gy"})


def test_the_number_of_cases_per_run():
    """The docstring's count: FACTOR times the profile's examples, per fuzz test."""
    assert EXAMPLES == FACTOR * settings().max_examples
    if os.environ.get("HYPOTHESIS_PROFILE", "default") == "default":
        assert EXAMPLES == 100


@pytest.mark.parametrize("bad", [np.ones((2, 2)), "image", None, 3.0])
def test_named_errors_on_a_hand_made_call(bad):
    """The error check itself: a message naming another argument would fail it."""
    with pytest.raises(AssertionError, match="names none of"):
        _check_error(ValueError("stride must be positive"), {"x"})
    with pytest.raises(TypeError, match=r"x must be an array"):
        ac.conv2d(bad if not isinstance(bad, np.ndarray) else bad.tolist(), np.ones((1, 1, 1, 1)))
