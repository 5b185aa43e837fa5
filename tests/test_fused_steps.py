"""The cheap steps of training, fused or in place: softmax + cross-entropy in one function,
ReLU's backward without touching what the caller holds, and optimizer updates that write
their state in place (NumPy, torch) or functionally (array-api-strict), against finite
differences, explicit float64 formulas and torch."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from arraycnn.backend import backend_name, to_numpy
from arraycnn.nn import ReLU
from arraycnn.nn.activations import zero_where
from arraycnn.nn.losses import softmax_cross_entropy
from arraycnn.nn.optim import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    Momentum,
    RMSprop,
    get_optimizer,
    updates_in_place,
)
from arraycnn.testing import assert_close, check_grad

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


# --------------------------------------------------------------------------- softmax + CE


def _targets(rng, n: int, k: int) -> np.ndarray:
    """Non-negative (N, K) targets whose rows sum to anything in (0.5, 2): the gradient's
    ``sum_k t`` factor is exercised, not only one-hot rows."""
    t = rng.random((n, k))
    return t / t.sum(axis=1, keepdims=True) * rng.uniform(0.5, 2.0, (n, 1))


def test_softmax_cross_entropy_gradient_by_finite_differences(xp, to_xp, rng):
    z = rng.standard_normal((6, 5)) * 3
    t = _targets(rng, 6, 5)
    value, grad = softmax_cross_entropy(to_xp(z), to_xp(t), xp=xp)
    assert grad.shape == (6, 5) and grad.dtype == xp.float64
    check_grad(
        lambda v: float(softmax_cross_entropy(to_xp(v), to_xp(t), xp=xp)[0]), z, to_numpy(grad)
    )
    # the value against log-softmax written out on the host
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    assert_close(value, -np.sum(t * log_p) / 6, scale=1.0)


def test_softmax_cross_entropy_is_finite_for_huge_logits(xp, to_xp):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    t = np.eye(3)[[1, 2]]
    value, grad = softmax_cross_entropy(to_xp(z), to_xp(t), xp=xp)
    assert_close(value, (2e4 + np.log(3.0)) / 2, scale=1e4)
    assert_close(grad, np.array([[1.0, -1.0, 0.0], [1 / 3, 1 / 3, -2 / 3]]) / 2, scale=1.0)


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_matches_torch(rng, dtype):
    z = (rng.standard_normal((8, 10)) * 4).astype(dtype)
    t = _targets(rng, 8, 10).astype(dtype)
    value, grad = softmax_cross_entropy(z, t, xp=np)
    tz = torch.tensor(z, requires_grad=True)
    expected = F.cross_entropy(tz, torch.tensor(t))  # probability targets, mean over N
    expected.backward()
    assert value.dtype == np.dtype(dtype) and grad.dtype == np.dtype(dtype)
    assert_close(value, expected.detach().numpy(), scale=float(np.abs(z).max()))
    assert_close(grad, tz.grad.numpy(), scale=1.0)


# --------------------------------------------------------------------------- ReLU backward


def test_relu_backward_leaves_what_the_caller_holds(xp, to_xp, rng):
    x = to_xp(rng.standard_normal((3, 4, 5)))
    gy = to_xp(rng.standard_normal((3, 4, 5)))
    x_host, gy_host = to_numpy(x).copy(), to_numpy(gy).copy()
    layer = ReLU()
    y = layer.forward(x, training=True)
    y_host = to_numpy(y).copy()
    gx = layer.backward(gy)
    gx_again = layer.backward(gy)  # a second backward of the same forward
    for name, kept, before in (("x", x, x_host), ("gy", gy, gy_host), ("y", y, y_host)):
        np.testing.assert_array_equal(to_numpy(kept), before, err_msg=name)
    expected = np.where(x_host > 0, gy_host, 0.0)
    np.testing.assert_array_equal(to_numpy(gx), expected)
    np.testing.assert_array_equal(to_numpy(gx_again), expected)
    assert gx is not gy


def test_relu_backward_is_exact_for_non_finite_gradients(xp, to_xp):
    """Masked positions give 0 even for an infinite or NaN gy (a select, not a product
    with a 0/1 mask); kept positions pass gy bit for bit."""
    layer = ReLU()
    layer.forward(to_xp(np.array([[-1.0, -2.0, 0.0, 1.0, 2.0, 3.0]], dtype=np.float32)))
    gy = np.array([[np.inf, np.nan, -np.inf, np.inf, np.nan, -0.0]], dtype=np.float32)
    gx = to_numpy(layer.backward(to_xp(gy)))
    np.testing.assert_array_equal(gx, np.array([[0, 0, 0, np.inf, np.nan, -0.0]], np.float32))
    assert np.signbit(gx[0, 5]) and not np.signbit(gx[0, 0])
    assert gx.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_zero_where_matches_numpy_where(rng, dtype):
    gy = rng.standard_normal((4, 33)).astype(dtype)
    gy[0, :3] = [np.inf, -np.inf, np.nan]
    mask = rng.random((4, 33)) < 0.5
    got = zero_where(mask, gy[:, ::-1], xp=np)  # a view with a negative stride
    expected = np.where(mask, dtype(0), gy[:, ::-1])
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)


def test_relu_backward_refuses_a_gradient_of_another_shape(xp, to_xp):
    layer = ReLU()
    layer.forward(to_xp(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"ReLU.backward: gy has shape \(2, 1\) but .* \(2, 3\)"):
        layer.backward(to_xp(np.ones((2, 1))))


# --------------------------------------------------------------------------- optimizers

START = np.array([0.3, 0.1, -1.2, 2.0, 0.0, 1.0])
CURVATURE = np.array([0.5, 1.0, 2.0, 4.0, 1.5, 0.8])
TARGET = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])

TORCH_TWINS = {
    "adam": (lambda: Adam(0.05), lambda q: torch.optim.Adam(q, lr=0.05)),
    "adam_decay": (
        lambda: Adam(0.05, 0.8, 0.99, 1e-6, weight_decay=0.1),
        lambda q: torch.optim.Adam(q, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    ),
    "adamw": (
        lambda: AdamW(0.05, weight_decay=0.3),
        lambda q: torch.optim.AdamW(q, lr=0.05, weight_decay=0.3),
    ),
    "sgd": (lambda: SGD(0.1), lambda q: torch.optim.SGD(q, lr=0.1)),
    "momentum": (
        lambda: Momentum(0.05, 0.8),
        lambda q: torch.optim.SGD(q, lr=0.05, momentum=0.8),
    ),
    "nesterov": (
        lambda: Momentum(0.05, 0.9, nesterov=True, weight_decay=0.1),
        lambda q: torch.optim.SGD(q, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    ),
    "rmsprop": (
        lambda: RMSprop(0.02, rho=0.5, eps=1e-3),
        lambda q: torch.optim.RMSprop(q, lr=0.02, alpha=0.5, eps=1e-3),
    ),
}


def _gradient(p, xp):
    """Gradient of ``1/2 sum(a p^2) - sum(c p)`` on ``p``'s namespace."""
    return p * xp.asarray(CURVATURE, dtype=p.dtype, device=p.device) - xp.asarray(
        TARGET, dtype=p.dtype, device=p.device
    )


@needs_torch
@pytest.mark.parametrize("name", list(TORCH_TWINS))
def test_updates_follow_torch_on_every_backend(xp, to_xp, name):
    ours, theirs = TORCH_TWINS[name]
    opt = ours()
    params = {"w": to_xp(START)}
    q = torch.tensor(START, requires_grad=True)
    t_opt = theirs([q])
    for _ in range(5):
        params = opt.step(params, {"w": _gradient(params["w"], xp)})
        t_opt.zero_grad()
        q.grad = _gradient(q.detach(), torch)
        t_opt.step()
    assert_close(params["w"], q.detach().numpy(), scale=1.0, err_msg=name)


def test_adam_follows_its_formula_in_float64(xp, to_xp):
    lr, b1, b2, eps = 0.1, 0.8, 0.95, 1e-7
    opt = Adam(lr, b1, b2, eps)
    p, ref = {"w": to_xp(START)}, START.copy()
    m, v = np.zeros(6), np.zeros(6)
    for t in range(1, 5):
        p = opt.step(p, {"w": _gradient(p["w"], xp)})
        g = CURVATURE * ref - TARGET
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref = ref - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    assert_close(p["w"], ref, scale=1.0)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_updates_leave_params_and_grads_as_they_were(xp, to_xp, name):
    opt = get_optimizer(name, lr=0.1)
    params = {"w": to_xp(START)}
    for _ in range(3):
        grads = {"w": _gradient(params["w"], xp)}
        held_p, held_g = to_numpy(params["w"]).copy(), to_numpy(grads["w"]).copy()
        new = opt.step(params, grads)
        np.testing.assert_array_equal(to_numpy(params["w"]), held_p, err_msg=name)
        np.testing.assert_array_equal(to_numpy(grads["w"]), held_g, err_msg=name)
        assert new["w"] is not params["w"] and new["w"] is not grads["w"]
        assert not any(new["w"] is s for s in opt.state["w"].values())
        params = new


def test_state_is_updated_in_place_where_the_namespace_allows(xp, to_xp):
    opt = Adam(0.1)
    p = {"w": to_xp(START)}
    p = opt.step(p, {"w": _gradient(p["w"], xp)})
    first = opt.state["w"]["m"], opt.state["w"]["v"]
    second_m_values = None
    p = opt.step(p, {"w": _gradient(p["w"], xp)})
    second_m_values = to_numpy(opt.state["w"]["m"])
    same_arrays = opt.state["w"]["m"] is first[0] and opt.state["w"]["v"] is first[1]
    writes_in_place = backend_name(xp) in ("numpy", "torch", "cupy")
    assert updates_in_place(first[0]) is writes_in_place
    assert same_arrays is writes_in_place
    assert np.all(second_m_values != 0)


def test_a_read_only_state_array_is_replaced_not_written():
    opt = Momentum(0.1, 0.5)
    p = opt.step({"w": START.copy()}, {"w": np.ones(6)})
    buffer = opt.state["w"]["b"]
    buffer.flags.writeable = False
    opt.step(p, {"w": np.ones(6)})
    assert opt.state["w"]["b"] is not buffer
    np.testing.assert_array_equal(buffer, np.ones(6))
    np.testing.assert_array_equal(opt.state["w"]["b"], np.full(6, 1.5))


@needs_torch
@pytest.mark.parametrize("name", ["adam", "momentum", "rmsprop"])
def test_updates_record_no_autograd_graph(name):
    """Parameters and gradients that require grad (an autograd user's tensors): the new
    parameters and the state stay out of any graph, step after step."""
    opt = get_optimizer(name, lr=0.1)
    params = {"w": torch.tensor(START, requires_grad=True)}
    source = torch.tensor(CURVATURE, requires_grad=True)
    for _ in range(3):
        g = params["w"].detach() * source - torch.tensor(TARGET)  # in a graph
        assert g.requires_grad
        params = opt.step(params, {"w": g})
        assert not params["w"].requires_grad and params["w"].grad_fn is None
        state = [s for s in opt.state["w"].values() if isinstance(s, torch.Tensor)]
        assert state and all(not s.requires_grad for s in state)


def test_optimizer_state_survives_a_deep_copy_and_diverges_from_it():
    """Copies of an optimizer (checkpointing by deepcopy) own their state: stepping one
    does not write into the other's moments."""
    opt = Adam(0.1)
    p = opt.step({"w": START.copy()}, {"w": np.ones(6)})
    twin = copy.deepcopy(opt)
    opt.step(p, {"w": np.ones(6)})
    assert twin.state["w"]["t"] == 1
    assert_close(twin.state["w"]["m"], np.full(6, 0.1), scale=1.0)
