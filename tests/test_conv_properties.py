"""Property tests: every strategy against independent oracles over random geometries.

Geometries come from :mod:`geometries` (N 1-3, groups 1-3, C and F 1-4 per group, H and W
1-24, kernels 1-7 per axis, stride and dilation 1-3 per axis, every padding form). The
oracles (:mod:`oracles`) are scipy.signal, explicit loops, torch autograd and central
finite differences. Errors are measured against the rounding scale ``sum |x||w|``
(:func:`oracles.error_scales`), or the coarser scale of the strategy's error model where
its rounding is not that of a plain sum (:data:`oracles.ERROR_MODEL`: separable's SVD
factors, the FFT, Winograd's tiles), with the per-dtype tolerances of :mod:`arraycnn.testing`.

A strategy forced on a call it does not take (Winograd: stride or dilation other than 1,
a 1x1 kernel; :func:`oracles.unsupported`) must raise instead; half of the drawn
geometries have stride 1 and dilation 1 (:func:`often_unit_steps`) so that such strategies
run often.

``HYPOTHESIS_PROFILE=thorough`` runs many more examples.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import oracles
import pytest
from geometries import Case, any_cases, fitting_cases, tiny_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import ERROR_MODEL, MODELS

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.testing import assert_close, check_grad, tolerance

# The xp / to_xp fixtures do not change between examples, so sharing them is sound.
# Inherits the loaded profile (conftest) and adds this one check to its suppressed list.
FIXTURES_OK = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)

DTYPES = ["float32", "float64"]


def _strategies(xp) -> list[str]:
    return [*ac.available_strategies(xp), "auto"]


@st.composite
def often_unit_steps(draw, cases: st.SearchStrategy[Case]) -> Case:
    """A case of ``cases``, half the time with stride 1 and dilation 1 (the geometries
    Winograd runs; a smaller dilation keeps a fitting kernel fitting)."""
    case = draw(cases)
    if draw(st.booleans()):
        return replace(case, kwargs={**case.kwargs, "stride": 1, "dilation": 1})
    return case


def _refused(name: str, case: Case, dtype: str, x, w, gy) -> bool:
    """True if a forced ``strategy=name`` does not take the case (:func:`oracles.unsupported`),
    after checking that its forward and backward both raise the ValueError saying so."""
    if oracles.runnable([name], case.x_shape, case.w_shape, dtype, **case.kwargs):
        return False
    match = f"strategy='{name}' cannot run this call"
    with pytest.raises(ValueError, match=match):
        ac.conv2d(x, w, strategy=name, **case.kwargs)
    with pytest.raises(ValueError, match=match):
        ac.conv2d_backward(gy, x, w, strategy=name, **case.kwargs)
    return True


def _scales(name: str, by_model: dict, x, w, case: Case) -> tuple[np.ndarray, ...]:
    """``(y_s, gx_s, gw_s, gb_s)`` that strategy ``name`` is held to (:data:`ERROR_MODEL`).

    ``by_model[model]`` holds the scales of each model. ``auto``'s forward choice is public
    (``choose_strategy``); its backward is planned on its own and the choice is not, so its
    gradients get the elementwise maximum over all models.
    """
    if name == "auto":
        chosen = ERROR_MODEL[ac.choose_strategy(x, w, **case.kwargs)]["y"]
        coarsest = [np.maximum.reduce([by_model[m][k] for m in MODELS]) for k in (1, 2)]
        return (by_model[chosen][0], *coarsest, by_model["local"][3])
    model = ERROR_MODEL[name]
    return (
        by_model[model["y"]][0],
        by_model[model["gx"]][1],
        by_model[model["gw"]][2],
        by_model["local"][3],
    )


def _run(xp, to_xp, case: Case, dtype: str, bias: bool):
    """The case's data as NumPy float64 (rounded to dtype) and on the backend."""
    x, w, b, gy = case.data(np.dtype(dtype), bias=bias)
    on_xp = [None if a is None else to_xp(a, dtype=np.dtype(dtype)) for a in (x, w, b, gy)]
    return (x, w, b, gy), on_xp


def _check(name, got, expected, by_model, *, case, x, w, **want):
    """assert_close of y, gx, gw, gb of strategy ``name`` with the scales it is held to."""
    scales = _scales(name, by_model, x, w, case)
    for a, e, s, label in zip(got, expected, scales, ("y", "gx", "gw", "gb")):
        assert_close(a, e, scale=s, err_msg=f"{label} {name} {case}", **want)


def _scales_by_model(x, w, b, gy, case: Case) -> dict:
    return {m: oracles.error_scales(x, w, b, gy, model=m, **case.kwargs) for m in MODELS}


@FIXTURES_OK
@given(case=often_unit_steps(fitting_cases()), bias=st.booleans())
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_strategy_matches_scipy_oracle(xp, to_xp, dtype, case, bias):
    """Forward (y) and backward (gx, gw, gb) of every strategy against scipy.signal."""
    (x, w, b, gy), (tx, tw, tb, tgy) = _run(xp, to_xp, case, dtype, bias)
    ref = oracles.reference(x, w, b, gy, **case.kwargs)
    expected = (ref.y, ref.gx, ref.gw, ref.gb)
    want = {"xp": xp, "dtype": getattr(xp, dtype), "device": device_of(tx)}
    results = {}
    for name in _strategies(xp):
        if _refused(name, case, dtype, tx, tw, tgy):
            continue
        got = (
            ac.conv2d(tx, tw, tb, strategy=name, **case.kwargs),
            *ac.conv2d_backward(tgy, tx, tw, strategy=name, **case.kwargs),
        )
        _check(name, got, expected, ref.scales, case=case, x=tx, w=tw, **want)
        results[name] = [ac.to_numpy(a) for a in got]
    # All strategies agree with each other within twice the table tolerance (each one is
    # within one tolerance of the oracle), on the coarser of the two strategies' scales.
    rtol, atol = tolerance(dtype)
    first, *others = results
    for name in others:
        scales = [
            np.maximum(a, b_)
            for a, b_ in zip(
                _scales(name, ref.scales, tx, tw, case), _scales(first, ref.scales, tx, tw, case)
            )
        ]
        for a, e, s, label in zip(results[name], results[first], scales, ("y", "gx", "gw", "gb")):
            assert_close(
                a,
                e,
                scale=s,
                rtol=2 * rtol,
                atol=2 * atol,
                err_msg=f"{label}: {name} vs {first} {case}",
            )


@given(case=often_unit_steps(tiny_cases()), bias=st.booleans())
def test_loop_oracle_matches_every_strategy(case, bias):
    """Tiny geometries against the explicit-loop definition (NumPy, float64)."""
    xp = ac.resolve_backend("numpy")
    x, w, b, gy = case.data(np.float64, bias=bias)
    y = oracles.correlate_loops(x, w, b, **case.kwargs)
    gx, gw, gb = oracles.correlate_loops_backward(gy, x, w, **case.kwargs)
    scales = _scales_by_model(x, w, b, gy, case)
    for name in ac.available_strategies("numpy"):
        if _refused(name, case, "float64", x, w, gy):
            continue
        got = (
            ac.conv2d(x, w, b, strategy=name, **case.kwargs),
            *ac.conv2d_backward(gy, x, w, strategy=name, **case.kwargs),
        )
        _check(name, got, (y, gx, gw, gb), scales, case=case, x=x, w=w, xp=xp, dtype=np.float64)


@given(case=tiny_cases(), bias=st.booleans())
def test_oracles_agree_with_each_other(case, bias):
    """The oracles validate each other: loops, scipy.signal and torch (when installed)."""
    x, w, b, gy = case.data(np.float64, bias=bias)
    loops = (
        oracles.correlate_loops(x, w, b, **case.kwargs),
        *oracles.correlate_loops_backward(gy, x, w, **case.kwargs),
    )
    scipy_ = (
        oracles.correlate_scipy(x, w, b, **case.kwargs),
        *oracles.correlate_scipy_backward(gy, x, w, **case.kwargs),
    )
    scales = oracles.error_scales(x, w, b, gy, **case.kwargs)
    assert loops[0].shape == case.y_shape
    for a, e, s in zip(scipy_, loops, scales):
        assert_close(a, e, scale=s)
    torch_ = oracles.correlate_torch(x, w, b, gy, **case.kwargs)
    if torch_ is not None:
        for a, e, s in zip(torch_, loops, scales):
            assert_close(a, e, scale=s)


@FIXTURES_OK
@given(case=often_unit_steps(fitting_cases(max_size=12, max_batch=2)), bias=st.booleans())
def test_every_strategy_matches_torch_autograd(xp, to_xp, case, bias):
    """float64 forward and gradients against torch.nn.functional.conv2d + autograd."""
    pytest.importorskip("torch")
    (x, w, b, gy), (tx, tw, tb, tgy) = _run(xp, to_xp, case, "float64", bias)
    y, gx, gw, gb = oracles.correlate_torch(x, w, b, gy, **case.kwargs)
    scales = _scales_by_model(x, w, b, gy, case)
    want = {"xp": xp, "dtype": xp.float64, "device": device_of(tx)}
    for name in ac.available_strategies(xp):
        if _refused(name, case, "float64", tx, tw, tgy):
            continue
        got = (
            ac.conv2d(tx, tw, tb, strategy=name, **case.kwargs),
            *ac.conv2d_backward(tgy, tx, tw, strategy=name, **case.kwargs),
        )
        _check(name, got, (y, gx, gw, gb), scales, case=case, x=tx, w=tw, **want)


@given(case=often_unit_steps(fitting_cases(max_size=10, max_batch=2)))
def test_gradients_match_finite_differences(case):
    """Each strategy's (gx, gw, gb) against central differences (float64) of the loss
    ``sum(gy * y)``, with y by the scipy oracle (an independent forward)."""
    x, w, _, gy = case.data(np.float64, bias=False)
    kw = case.kwargs

    def loss_x(x_):
        return float(np.sum(gy * oracles.correlate_scipy(x_, w, **kw)))

    def loss_w(w_):
        return float(np.sum(gy * oracles.correlate_scipy(x, w_, **kw)))

    def loss_b(b_):
        return float(np.sum(gy * oracles.correlate_scipy(x, w, b_, **kw)))

    for name in ac.available_strategies("numpy"):
        if _refused(name, case, "float64", x, w, gy):
            continue
        gx, gw, gb = ac.conv2d_backward(gy, x, w, strategy=name, **kw)

        check_grad(loss_x, x, gx, seed=case.seed % 1000)
        check_grad(loss_w, w, gw, seed=case.seed % 1000 + 1)
        check_grad(loss_b, np.zeros(w.shape[0]), gb, seed=case.seed % 1000 + 2)


@given(case=any_cases(max_size=12))
def test_geometries_that_do_not_fit_raise(case):
    """Where the dilated kernel does not fit the padded input conv2d raises, else it runs."""
    x = np.zeros(case.x_shape)
    w = np.zeros(case.w_shape)
    if case.fits:
        assert ac.conv2d(x, w, strategy="naive", **case.kwargs).shape == case.y_shape
    else:
        with pytest.raises(ValueError, match=r"dilated kernel .* is larger than the padded input"):
            ac.conv2d(x, w, strategy="naive", **case.kwargs)
