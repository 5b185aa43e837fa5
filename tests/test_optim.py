"""Optimizers: trajectories against torch.optim (same hyperparameters, conventions mapped),
AdagradMomentum against a hand-written loop, descent on a quadratic on every backend,
functional behaviour, per-key state, names and every validation error."""

from __future__ import annotations

import numpy as np
import pytest

from arraycnn.backend import device_of, to_numpy
from arraycnn.nn.optim import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    AdagradMomentum,
    Adam,
    AdamW,
    Momentum,
    Optimizer,
    RMSprop,
    get_optimizer,
)
from arraycnn.testing import assert_close

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# f(p) = 1/2 sum(a p^2) - sum(c p): a different curvature per element, minimum at c / a
CURVATURE = np.array([0.5, 1.0, 2.0, 4.0, 1.5, 0.8])
TARGET = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
START = np.array([0.3, 0.1, -1.2, 2.0, 0.0, 1.0])


def quadratic(p):
    return 0.5 * np.sum(CURVATURE * p * p) - np.sum(TARGET * p)


def quadratic_grad(p, xp=np):
    """Gradient of the quadratic restricted to the first ``len(p)`` elements."""
    n = p.shape[0]
    a = xp.asarray(CURVATURE[:n], dtype=p.dtype, device=device_of(p))
    c = xp.asarray(TARGET[:n], dtype=p.dtype, device=device_of(p))
    return a * p - c


# (ours, torch constructor); torch's RMSprop calls our rho "alpha", Adam's betas are a pair
TORCH_PAIRS = [
    (lambda: SGD(0.1), lambda q: torch.optim.SGD(q, lr=0.1)),
    (
        lambda: SGD(0.1, weight_decay=0.2),
        lambda q: torch.optim.SGD(q, lr=0.1, weight_decay=0.2),
    ),
    (
        lambda: Momentum(0.05, 0.8),
        lambda q: torch.optim.SGD(q, lr=0.05, momentum=0.8),
    ),
    (
        lambda: Momentum(0.05, 0.9, nesterov=True, weight_decay=0.1),
        lambda q: torch.optim.SGD(q, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    ),
    (lambda: Adagrad(0.3), lambda q: torch.optim.Adagrad(q, lr=0.3)),
    (
        lambda: Adagrad(0.3, eps=1e-6, initial_accumulator_value=0.1, weight_decay=0.05),
        lambda q: torch.optim.Adagrad(
            q, lr=0.3, eps=1e-6, initial_accumulator_value=0.1, weight_decay=0.05
        ),
    ),
    (lambda: RMSprop(0.01), lambda q: torch.optim.RMSprop(q, lr=0.01, alpha=0.9, eps=1e-8)),
    (
        lambda: RMSprop(0.02, rho=0.5, eps=1e-3, weight_decay=0.1),
        lambda q: torch.optim.RMSprop(q, lr=0.02, alpha=0.5, eps=1e-3, weight_decay=0.1),
    ),
    (lambda: Adam(0.05), lambda q: torch.optim.Adam(q, lr=0.05)),
    (
        lambda: Adam(0.05, 0.8, 0.99, 1e-6, weight_decay=0.1),
        lambda q: torch.optim.Adam(q, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    ),
    (lambda: AdamW(0.05), lambda q: torch.optim.AdamW(q, lr=0.05)),
    (
        lambda: AdamW(0.05, 0.7, 0.95, 1e-7, weight_decay=0.3),
        lambda q: torch.optim.AdamW(q, lr=0.05, betas=(0.7, 0.95), eps=1e-7, weight_decay=0.3),
    ),
]


@needs_torch
@pytest.mark.parametrize(("ours", "theirs"), TORCH_PAIRS)
def test_trajectory_matches_torch(ours, theirs):
    """Six steps, then the learning rate is halved (a schedule) and six more."""
    opt = ours()
    params = {"w": START.copy(), "b": START[:2].copy() * 2}
    q = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    t_opt = theirs(list(q.values()))
    for step in range(12):
        if step == 6:
            opt.lr = opt.lr / 2
            for group in t_opt.param_groups:
                group["lr"] = group["lr"] / 2
        params = opt.step(params, {k: quadratic_grad(v) for k, v in params.items()})
        t_opt.zero_grad()
        loss = sum(
            0.5 * (torch.tensor(CURVATURE[: len(v)]) * v * v).sum()
            - (torch.tensor(TARGET[: len(v)]) * v).sum()
            for v in q.values()
        )
        loss.backward()
        t_opt.step()
    for k in params:
        assert_close(params[k], q[k].detach().numpy(), scale=1.0, err_msg=f"{opt!r} {k}")


def test_adagrad_momentum_matches_hand_loop():
    lr, mu, eps, g0 = 0.2, 0.7, 1e-10, 0.05
    opt = AdagradMomentum(lr, mu, eps, initial_accumulator_value=g0)
    p = START.copy()
    ref, acc, v = START.copy(), np.full_like(START, g0), np.zeros_like(START)
    for step in range(8):
        if step == 4:
            opt.lr = lr = 0.1
        p = opt.step({"p": p}, {"p": quadratic_grad(p)})["p"]
        g = CURVATURE * ref - TARGET
        acc = acc + g**2
        v = mu * v + g / (np.sqrt(acc) + eps)
        ref = ref - lr * v
    assert_close(p, ref, scale=1.0)


def test_sgd_and_momentum_match_hand_formulas():
    p = {"p": np.array([1.0, -2.0])}
    g = {"p": np.array([0.5, 0.25])}
    assert_close(SGD(0.1, weight_decay=0.5).step(p, g)["p"], [1 - 0.1 * 1.0, -2 - 0.1 * -0.75])
    opt = Momentum(0.1, 0.5)
    first = opt.step(p, g)["p"]  # b = g
    second = opt.step({"p": first}, g)["p"]  # b = 0.5 g + g
    assert_close(second, first - 0.1 * 1.5 * g["p"])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_decreases_a_quadratic(name, xp, to_xp):
    lr = {"sgd": 0.1, "momentum": 0.05, "adagrad": 0.5, "adagrad_momentum": 0.1}.get(name, 0.05)
    opt = get_optimizer(name, lr=lr)
    params = {"p": to_xp(START)}
    start = quadratic(START)
    for _ in range(60):
        params = opt.step(params, {"p": quadratic_grad(params["p"], xp)})
    assert params["p"].dtype == xp.float64
    end = quadratic(to_numpy(params["p"]))
    optimum = quadratic(TARGET / CURVATURE)
    assert end - optimum < 0.5 * (start - optimum), (name, start, end, optimum)


def test_step_is_functional_and_state_is_per_key():
    p = {"a": START.copy(), "b": START.copy() * 2}
    before = {k: v.copy() for k, v in p.items()}
    g = {k: quadratic_grad(v) for k, v in p.items()}
    together = Adam(0.1)
    out = together.step(p, g)
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])  # inputs untouched
        assert out[k] is not p[k]
    out2 = together.step(out, {k: quadratic_grad(v) for k, v in out.items()})
    # the same two steps with one optimizer per key give the same result
    for k in p:
        alone = Adam(0.1)
        q = alone.step({k: before[k]}, {k: g[k]})
        q = alone.step(q, {k: quadratic_grad(q[k])})
        np.testing.assert_array_equal(out2[k], q[k])
    assert together.state["a"]["t"] == 2
    together.reset()
    assert together.state == {}


def test_float32_parameters_stay_float32(xp, to_xp):
    p = {"p": to_xp(START.astype(np.float32))}
    for name in OPTIMIZERS:
        out = get_optimizer(name).step(p, {"p": to_xp(np.ones(6, dtype=np.float32))})
        assert out["p"].dtype == xp.float32


def half_dtype(xp):
    if not hasattr(xp, "float16"):
        pytest.skip(f"{xp.__name__} has no float16")
    return xp.float16


def test_adam_on_float16_keeps_float32_state_and_never_divides_zero_by_zero(xp, to_xp):
    """One Adam step is p - lr g / (|g| + eps) (t = 1: m_hat = g, v_hat = g^2). In float16,
    eps = 1e-8 and (1 - beta2) g^2 for g = 1e-3 round to 0: a zero gradient gave 0 / 0."""
    f16 = half_dtype(xp)
    p = np.array([0.5, -0.25, 1.0, 2.0, -3.0], dtype=np.float16)
    g = np.array([0.0, 1e-3, -2e-2, 1e-5, 5.0], dtype=np.float16)
    opt = Adam(0.01)
    out = opt.step({"w": to_xp(p)}, {"w": to_xp(g)})["w"]
    g64 = g.astype(np.float64)
    expected = p.astype(np.float64) - 0.01 * g64 / (np.abs(g64) + 1e-8)
    assert out.dtype == f16
    assert_close(out, expected.astype(np.float16))
    assert opt.state["w"]["m"].dtype == xp.float32 and opt.state["w"]["v"].dtype == xp.float32


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_keeps_float16_parameters_finite(name, xp, to_xp):
    half_dtype(xp)
    opt = get_optimizer(name)
    p = {"w": to_xp(np.array([0.5, -0.25, 1.0], dtype=np.float16))}
    for g in ([0.0, 0.0, 0.0], [1e-4, 0.0, -1e-4], [300.0, -300.0, 0.0]):
        p = opt.step(p, {"w": to_xp(np.array(g, dtype=np.float16))})
        assert np.isfinite(np.asarray(to_numpy(p["w"]), dtype=np.float64)).all(), (name, g)


@needs_torch
def test_float16_adam_follows_torch_on_float32_parameters():
    """torch.optim.Adam on float32 copies (an independent implementation): ours on float16
    parameters differs only by rounding the parameters to float16 after each step."""
    grads = np.random.default_rng(5).standard_normal((6, 6)) * 1e-3
    grads[:, 0] = 0.0  # a unit that never receives a gradient
    q = torch.tensor(START, dtype=torch.float32, requires_grad=True)
    theirs = torch.optim.Adam([q], lr=0.01)
    ours, p = Adam(0.01), {"w": START.astype(np.float16)}
    for g in grads:
        q.grad = torch.tensor(g, dtype=torch.float32)
        theirs.step()
        p = ours.step(p, {"w": g.astype(np.float16)})
    assert p["w"].dtype == np.float16
    assert_close(p["w"], q.detach().numpy().astype(np.float16))


# ---------------------------------------------------------------------------------------------
# names and validation
# ---------------------------------------------------------------------------------------------


def test_get_optimizer_names_classes_and_instances():
    assert isinstance(get_optimizer("SGD"), SGD)
    assert isinstance(get_optimizer("adamw", weight_decay=0.1), AdamW)
    assert get_optimizer("adamw", weight_decay=0.1).weight_decay == 0.1
    assert isinstance(get_optimizer(RMSprop, rho=0.5), RMSprop)
    mine = Momentum(0.1)
    assert get_optimizer(mine) is mine
    assert set(OPTIMIZERS) == {
        "sgd",
        "momentum",
        "adagrad",
        "adagrad_momentum",
        "rmsprop",
        "adam",
        "adamw",
    }
    assert get_optimizer("adagrad_momentum", momentum=0.5).get_config()["momentum"] == 0.5
    assert repr(SGD(0.5)) == "SGD(lr=0.5, weight_decay=0.0)"
    assert get_optimizer("adam").get_config() == {
        "lr": 0.001,
        "weight_decay": 0.0,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
    }


def test_get_optimizer_errors():
    with pytest.raises(ValueError, match=r"optimizer must be one of 'sgd', .*; got 'lbfgs'"):
        get_optimizer("lbfgs")
    with pytest.raises(TypeError, match=r"cannot be applied to it"):
        get_optimizer(SGD(), lr=0.1)
    with pytest.raises(TypeError, match=r"optimizer must be a name, .* got float"):
        get_optimizer(0.1)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'momentum'"):
        get_optimizer("adam", momentum=0.9)
    with pytest.raises(NotImplementedError):
        Optimizer(0.1).step({"p": np.zeros(1)}, {"p": np.zeros(1)})


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: SGD(0.0), ValueError, r"lr must be > 0, got 0.0"),
        (lambda: SGD(-1), ValueError, r"lr must be > 0, got -1.0"),
        (lambda: SGD(float("inf")), ValueError, r"lr must be finite"),
        (lambda: SGD("0.1"), TypeError, r"lr must be a real number, got str"),
        (lambda: SGD(True), TypeError, r"lr must be a real number, got bool"),
        (lambda: SGD(weight_decay=-0.1), ValueError, r"weight_decay must be >= 0, got -0.1"),
        (lambda: Momentum(0.1, 1.0), ValueError, r"momentum must be in \[0, 1\), got 1.0"),
        (lambda: Momentum(0.1, -0.1), ValueError, r"momentum must be in \[0, 1\)"),
        (lambda: Momentum(0.1, 0.0, nesterov=True), ValueError, r"nesterov=True needs momentum"),
        (lambda: Momentum(0.1, nesterov=1), TypeError, r"nesterov must be True or False"),
        (lambda: Adagrad(0.1, eps=0), ValueError, r"eps must be > 0, got 0.0"),
        (
            lambda: Adagrad(0.1, initial_accumulator_value=-1),
            ValueError,
            r"initial_accumulator_value must be >= 0",
        ),
        (lambda: AdagradMomentum(0.1, momentum=1.5), ValueError, r"momentum must be in \[0, 1\)"),
        (lambda: RMSprop(0.1, rho=1.0), ValueError, r"rho must be in \[0, 1\), got 1.0"),
        (lambda: RMSprop(0.1, eps=-1e-8), ValueError, r"eps must be > 0"),
        (lambda: Adam(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\), got 1.0"),
        (lambda: Adam(beta2=-0.5), ValueError, r"beta2 must be in \[0, 1\), got -0.5"),
        (lambda: Adam(eps=0.0), ValueError, r"eps must be > 0"),
        (lambda: Adam(weight_decay=-1.0), ValueError, r"weight_decay must be >= 0"),
        (lambda: AdamW(weight_decay=float("nan")), ValueError, r"weight_decay must be finite"),
    ],
)
def test_hyperparameter_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_lr_is_settable_and_validated():
    opt = SGD(0.1)
    opt.lr = 0.5
    assert opt.step({"p": np.ones(1)}, {"p": np.ones(1)})["p"][0] == 0.5
    with pytest.raises(ValueError, match=r"lr must be > 0, got 0.0"):
        opt.lr = 0.0
    assert opt.lr == 0.5


def test_step_argument_errors():
    opt = Adam()
    p = {"w": np.zeros((2, 3)), "b": np.zeros(3)}
    with pytest.raises(ValueError, match=r"no gradient for \['b'\], gradients without .*\['c'\]"):
        opt.step(p, {"w": np.zeros((2, 3)), "c": np.zeros(3)})
    with pytest.raises(ValueError, match=r"grads\['b'\] has shape \(2,\) but params\['b'\]"):
        opt.step(p, {"w": np.zeros((2, 3)), "b": np.zeros(2)})
    with pytest.raises(TypeError, match=r"params and grads must be dicts"):
        opt.step([np.zeros(3)], [np.zeros(3)])
    with pytest.raises(TypeError, match=r"grads\['b'\] must be an array"):
        opt.step(p, {"w": np.zeros((2, 3)), "b": [0.0, 0.0, 0.0]})
    opt.step(p, {"w": np.zeros((2, 3)), "b": np.zeros(3)})
    with pytest.raises(ValueError, match=r"keys must be unique per parameter"):
        opt.step({"w": np.zeros(4)}, {"w": np.zeros(4)})
    if torch is not None:
        with pytest.raises(TypeError, match=r"different namespaces"):
            opt.step({"b": np.zeros(3)}, {"b": torch.zeros(3, dtype=torch.float64)})
