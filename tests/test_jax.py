"""JAX as a backend: the library under ``jax.jit`` and ``jax.grad``.

Under a transformation JAX arrays are traced: their values cannot be read and nothing made
from them may outlive the trace. ``auto`` then skips its value-dependent checks (traced
inputs are taken as finite; separable is not chosen, as the kernel's rank cannot be read),
no scratch buffer is kept, and ``jax.grad`` runs the library's own ``conv2d_backward``
(``jax.custom_vjp``).

Oracles: explicit loops (tests/oracles.py), scipy.signal, torch's autograd and central
finite differences, all in float64.
"""

from __future__ import annotations

import numpy as np
import oracles
import pytest
import scipy.signal

import arraycnn as ac
from arraycnn.testing import assert_close, check_grad

jax = pytest.importorskip("jax")
jnp = jax.numpy

STRATEGIES = [*ac.STRATEGY_NAMES, "auto"]
GEOMETRY = {"stride": (1, 2), "padding": ((1, 0), (2, 1)), "dilation": (2, 1), "groups": 2}
#: GEOMETRY at stride 1 and dilation 1, for the strategies that take no other
#: (oracles.unsupported: Winograd).
UNIT_GEOMETRY = {**GEOMETRY, "stride": 1, "dilation": 1}
X_SHAPE, W_SHAPE = (2, 4, 9, 8), (6, 2, 3, 2)
#: Every strategy with the geometry it runs under: GEOMETRY where it takes it.
CASES = [
    (name, GEOMETRY if oracles.runnable([name], X_SHAPE, W_SHAPE, **GEOMETRY) else UNIT_GEOMETRY)
    for name in STRATEGIES
]
#: The strategies that do not take GEOMETRY.
REFUSING = [name for name, geometry in CASES if geometry is UNIT_GEOMETRY]


def _data(rng, *shapes):
    return [rng.standard_normal(shape) for shape in shapes]


def _scale(name: str, part: str, x, w, gy=None, geometry=GEOMETRY):
    """The error scale of strategy ``name`` (its error model, oracles.ERROR_MODEL)."""
    model = oracles.ERROR_MODEL.get(name, {"y": "map", "gx": "map", "gw": "map"})[part]
    scales = oracles.error_scales(x, w, None, gy, model=model, **geometry)
    return scales[{"y": 0, "gx": 1, "gw": 2}[part]]


@pytest.mark.parametrize(("strategy", "geometry"), CASES)
def test_conv2d_under_jit_matches_the_loops(strategy, geometry, rng):
    x, w = _data(rng, X_SHAPE, W_SHAPE)
    run = jax.jit(lambda a, b: ac.conv2d(a, b, strategy=strategy, **geometry))
    y = run(jnp.asarray(x), jnp.asarray(w))
    expected = oracles.correlate_loops(x, w, **geometry)
    scale = _scale(strategy, "y", x, w, geometry=geometry)
    assert_close(y, expected, xp=jnp, dtype=jnp.float64, scale=scale)


@pytest.mark.parametrize(("strategy", "geometry"), CASES)
def test_conv2d_backward_under_jit_matches_the_loops(strategy, geometry, rng):
    x, w = _data(rng, X_SHAPE, W_SHAPE)
    gy = rng.standard_normal(oracles.correlate_loops(x, w, **geometry).shape)
    run = jax.jit(lambda g, a, b: ac.conv2d_backward(g, a, b, strategy=strategy, **geometry))
    gx, gw, gb = run(jnp.asarray(gy), jnp.asarray(x), jnp.asarray(w))
    want_gx, want_gw, want_gb = oracles.correlate_loops_backward(gy, x, w, **geometry)
    scale_gx, scale_gw = (_scale(strategy, p, x, w, gy, geometry) for p in ("gx", "gw"))
    assert_close(gx, want_gx, xp=jnp, scale=scale_gx, err_msg="gx")
    assert_close(gw, want_gw, xp=jnp, scale=scale_gw, err_msg="gw")
    assert_close(gb, want_gb, xp=jnp, scale=np.abs(gy).sum(axis=(0, 2, 3)), err_msg="gb")


@pytest.mark.parametrize("strategy", REFUSING)
def test_forced_strategy_refuses_a_geometry_it_does_not_take_under_jit(strategy, rng):
    """The refusal depends on shapes and geometry only, so it is raised while tracing."""
    x, w = _data(rng, X_SHAPE, W_SHAPE)
    gy = oracles.correlate_loops(x, w, **GEOMETRY)
    x, w, gy = jnp.asarray(x), jnp.asarray(w), jnp.asarray(gy)
    match = f"strategy='{strategy}' cannot run this call"
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda a, b: ac.conv2d(a, b, strategy=strategy, **GEOMETRY))(x, w)
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda g, a, b: ac.conv2d_backward(g, a, b, strategy=strategy, **GEOMETRY))(
            gy, x, w
        )


def test_auto_under_jit_does_not_choose_separable_for_a_traced_kernel(rng):
    """A rank-1 kernel, which auto runs separably on concrete arrays, is not separable under
    jit (its rank cannot be read), and the traced call is still right."""
    x = rng.standard_normal((1, 1, 64, 64))
    w = np.outer(rng.standard_normal(7), rng.standard_normal(7))[None, None]  # rank 1
    tx, tw = jnp.asarray(x), jnp.asarray(w)
    chosen = {}

    def traced(a, b):
        chosen["traced"] = ac.choose_strategy(a, b, padding="same")  # a name, not a tracer
        return ac.conv2d(a, b, padding="same")

    y = jax.jit(traced)(tx, tw)
    assert ac.choose_strategy(tx, tw, padding="same") == "separable"
    assert chosen["traced"] != "separable"
    scale = oracles.error_scales(x, w, padding="same", model="map")[0]
    assert_close(y, oracles.correlate_scipy(x, w, padding="same"), scale=scale)


def test_traced_input_is_taken_as_finite(rng):
    """Non-finite values cannot be seen while traced: a forced FFT, refused on concrete
    input with a NaN, runs under jit (the NaN then spreads, as documented)."""
    x = rng.standard_normal((1, 1, 8, 8))
    x[0, 0, 3, 3] = np.nan
    w = rng.standard_normal((1, 1, 3, 3))
    with pytest.raises(ValueError, match="strategy='fft' cannot handle non-finite input"):
        ac.conv2d(jnp.asarray(x), jnp.asarray(w), strategy="fft")
    y = jax.jit(lambda a, b: ac.conv2d(a, b, strategy="fft"))(jnp.asarray(x), jnp.asarray(w))
    assert np.isnan(np.asarray(y)[0, 0, 2, 2])  # in the NaN's receptive field


def test_two_jitted_functions_of_the_same_shapes_both_run(rng):
    """Nothing traced is kept between traces (the scratch buffers, the FFT's matrices)."""
    x, w = _data(rng, X_SHAPE, W_SHAPE)
    expected = oracles.correlate_loops(x, w, **GEOMETRY)
    for strategy in ("naive", "im2col", "fft"):  # the strategies with scratch buffers
        first = jax.jit(lambda a, b, s=strategy: ac.conv2d(a, b, strategy=s, **GEOMETRY))
        second = jax.jit(lambda a, b, s=strategy: -ac.conv2d(a, b, strategy=s, **GEOMETRY))
        tx, tw = jnp.asarray(x), jnp.asarray(w)
        y1, y2, y3 = first(tx, tw), second(tx, tw), first(tx + 0.0, tw)
        scale = _scale(strategy, "y", x, w)
        assert_close(y1, expected, scale=scale, err_msg=strategy)
        assert_close(y2, -expected, scale=scale, err_msg=strategy)
        assert_close(y3, expected, scale=scale, err_msg=strategy)
        assert_close(ac.conv2d(tx, tw, strategy=strategy, **GEOMETRY), expected, scale=scale)


@pytest.mark.parametrize(("strategy", "geometry"), CASES)
def test_grad_of_a_sum_of_conv2d_matches_torch_autograd(strategy, geometry, rng):
    torch = pytest.importorskip("torch")
    x, w, b = _data(rng, X_SHAPE, W_SHAPE, (6,))
    c = rng.standard_normal(oracles.correlate_loops(x, w, **geometry).shape)

    def loss(a, k, bias):
        return jnp.sum(jnp.asarray(c) * ac.conv2d(a, k, bias, strategy=strategy, **geometry))

    grads = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    (top, bottom), (left, right) = geometry["padding"]
    padded = torch.nn.functional.pad(tx, (left, right, top, bottom))
    options = {k: v for k, v in geometry.items() if k != "padding"}
    ty = torch.nn.functional.conv2d(padded, tw, tb, **options)
    expected = torch.autograd.grad(torch.sum(torch.tensor(c) * ty), (tx, tw, tb))
    scales = (_scale(strategy, p, x, w, c, geometry) for p in ("gx", "gw"))
    scales = (*scales, None)
    for name, got, want, scale in zip("xwb", grads, expected, scales):
        assert_close(got, want.numpy(), xp=jnp, dtype=jnp.float64, scale=scale, err_msg=name)


def test_grad_runs_the_library_backward_as_one_custom_vjp(rng):
    """Under a transformation conv2d is one ``custom_vjp`` call (its VJP: conv2d_backward),
    not the kernels' own operations, which JAX would otherwise differentiate one by one."""
    x, w = _data(rng, X_SHAPE, W_SHAPE)
    jaxpr = str(jax.make_jaxpr(lambda a, b: ac.conv2d(a, b, **GEOMETRY))(x, w))
    assert jaxpr.count("custom_vjp_call") == 1


@pytest.mark.parametrize("argnum", [0, 1])
def test_grad_of_one_argument_with_the_other_concrete(argnum, rng):
    """Only x (or only w) traced: the traced array has no device while traced, which the
    device check must accept; the gradient agrees with finite differences."""
    x, w = _data(rng, X_SHAPE, W_SHAPE)
    args = [x, w]

    def loss(*arrays):
        return jnp.sum(ac.conv2d(*arrays, **GEOMETRY) ** 2)

    grad = jax.grad(loss, argnums=argnum)(*map(jnp.asarray, args))

    def numeric(v):
        arrays = [*args]
        arrays[argnum] = v
        return float(np.sum(oracles.correlate_scipy(*arrays, **GEOMETRY) ** 2))

    check_grad(numeric, args[argnum], np.asarray(grad))


def test_grad_under_jit_and_grad_of_grad_match_torch(rng):
    """jit(grad) runs the library's backward traced; grad(grad) differentiates that
    backward in turn (reverse over reverse; forward mode, e.g. jax.hessian, is JAX's
    custom_vjp limit)."""
    torch = pytest.importorskip("torch")
    x, w = _data(rng, X_SHAPE, W_SHAPE)
    tw = jnp.asarray(w)

    def cube(a):
        return jnp.sum(ac.conv2d(a, tw, **GEOMETRY) ** 3)

    gx = jax.jit(jax.grad(cube))(jnp.asarray(x))
    ggx = jax.grad(lambda a: jnp.sum(jax.grad(cube)(a) ** 2))(jnp.asarray(x))
    tx = torch.tensor(x, requires_grad=True)
    (top, bottom), (left, right) = GEOMETRY["padding"]
    options = {k: v for k, v in GEOMETRY.items() if k != "padding"}
    padded = torch.nn.functional.pad(tx, (left, right, top, bottom))
    ty = torch.nn.functional.conv2d(padded, torch.tensor(w), **options)
    (want_gx,) = torch.autograd.grad(torch.sum(ty**3), tx, create_graph=True)
    (want_ggx,) = torch.autograd.grad(torch.sum(want_gx**2), tx)
    assert_close(gx, want_gx.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg="gx")
    scale = np.max(np.abs(want_ggx.numpy()))
    assert_close(ggx, want_ggx.numpy(), scale=scale, rtol=1e-10, err_msg="ggx")


@pytest.mark.parametrize("pool", ["max_pool2d", "avg_pool2d"])
def test_pooling_under_jit_and_grad(pool, rng):
    x = rng.standard_normal((2, 3, 8, 8))
    op = getattr(ac, pool)
    windows = x.reshape(2, 3, 4, 2, 4, 2)  # (N, C, Ho, 2, Wo, 2)
    reduce = np.max if pool == "max_pool2d" else np.mean
    expected = reduce(windows, axis=(3, 5))
    assert_close(jax.jit(lambda a: op(a, 2))(jnp.asarray(x)), expected, xp=jnp)
    grad = jax.grad(lambda a: jnp.sum(op(a, 2) ** 2))(jnp.asarray(x))
    check_grad(
        lambda v: float(np.sum(reduce(v.reshape(2, 3, 4, 2, 4, 2), axis=(3, 5)) ** 2)),
        x,
        np.asarray(grad),
    )


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_correlate2d_auto_under_jit_matches_scipy(mode, boundary, rng):
    a, k = rng.standard_normal((12, 13)), rng.standard_normal((4, 5))
    run = jax.jit(lambda p, q: ac.correlate2d(p, q, mode=mode, boundary=boundary))
    expected = scipy.signal.correlate2d(a, k, mode=mode, boundary=boundary)
    scale = np.sqrt(np.sum(a**2) * np.sum(k**2))  # a transform's error scale: whole-map norms
    assert_close(run(jnp.asarray(a), jnp.asarray(k)), expected, xp=jnp, scale=scale)


@pytest.mark.parametrize("strategy", ["naive", "separable", "im2col", "fft"])
def test_correlate2d_forced_strategy_under_jit_matches_scipy(strategy, rng):
    """Forced FFT and separable need finite inputs: under a trace the values cannot be
    read, so the checks are skipped (as the dispatcher skips them) instead of failing."""
    a, k = rng.standard_normal((12, 13)), rng.standard_normal((4, 5))
    run = jax.jit(lambda p, q: ac.correlate2d(p, q, mode="same", strategy=strategy))
    expected = scipy.signal.correlate2d(a, k, mode="same")
    scale = np.sqrt(np.sum(a**2) * np.sum(k**2))
    assert_close(run(jnp.asarray(a), jnp.asarray(k)), expected, xp=jnp, scale=scale)
