"""torch autograd: a requires_grad input gets a correct graph, and nothing leaks into later calls.

Where a torch input requires grad (grad mode on), conv2d, conv2d_backward, the filters and
pooling are recorded as one node whose backward runs the library's own backward functions;
every other call runs without recording anything, so no work buffer joins a graph.

Oracles: torch's own conv2d / pooling autograd (an independent implementation), and
``torch.autograd.gradcheck`` / ``gradgradcheck`` (finite differences, float64).
"""

from __future__ import annotations

import numpy as np
import oracles
import pytest

import arraycnn as ac

torch = pytest.importorskip("torch")
F = torch.nn.functional

STRATEGIES = [*ac.STRATEGY_NAMES, "auto"]
GEOMETRY = {"stride": (1, 2), "padding": ((1, 0), (2, 1)), "dilation": (2, 1), "groups": 2}
X_SHAPE, W_SHAPE = (2, 4, 9, 8), (6, 2, 3, 2)
#: GEOMETRY at stride 1 and dilation 1, for the strategies that take no other
#: (oracles.unsupported: Winograd).
UNIT_GEOMETRY = {**GEOMETRY, "stride": 1, "dilation": 1}
#: Every strategy with the geometry it runs under: GEOMETRY where it takes it.
CASES = [
    (name, GEOMETRY if oracles.runnable([name], X_SHAPE, W_SHAPE, **GEOMETRY) else UNIT_GEOMETRY)
    for name in STRATEGIES
]
#: gradcheck's call: stride (2, 1), or 1 for the strategies that take no other stride.
GRADCHECK_SHAPES, GRADCHECK = ((1, 2, 6, 5), (2, 2, 3, 3)), {"padding": 1, "stride": (2, 1)}
GRADCHECK_CASES = [
    (name, GRADCHECK["stride"] if oracles.runnable([name], *GRADCHECK_SHAPES, **GRADCHECK) else 1)
    for name in STRATEGIES
]
#: The strategies that do not take GEOMETRY.
REFUSING = [name for name, geometry in CASES if geometry is UNIT_GEOMETRY]


def _tensors(rng, *shapes, grad=True):
    return [
        torch.tensor(rng.standard_normal(shape), dtype=torch.float64, requires_grad=grad)
        for shape in shapes
    ]


def _torch_conv(x, w, b, *, stride, padding, dilation, groups):
    """torch's conv2d with explicit (top, bottom), (left, right) padding."""
    (top, bottom), (left, right) = padding
    xpad = F.pad(x, (left, right, top, bottom))
    return F.conv2d(xpad, w, b, stride=stride, dilation=dilation, groups=groups)


def graph_size(t) -> int:
    """Nodes of the autograd graph behind ``t`` (0 for a tensor outside any graph)."""
    seen, stack = set(), [t.grad_fn] if t.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize(("strategy", "geometry"), CASES)
def test_conv2d_gradients_match_torch_autograd(strategy, geometry, rng):
    x, w, b = _tensors(rng, X_SHAPE, W_SHAPE, (6,))
    expected = _torch_conv(x, w, b, **geometry)
    gy = torch.tensor(rng.standard_normal(tuple(expected.shape)), dtype=torch.float64)
    y = ac.conv2d(x, w, b, strategy=strategy, **geometry)
    assert y.requires_grad and y.grad_fn is not None
    y.backward(gy)
    mine = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    torch.testing.assert_close(y.detach(), expected.detach(), rtol=1e-10, atol=1e-10)
    expected.backward(gy)
    for got, t, name in zip(mine, (x, w, b), ("x", "w", "b")):
        torch.testing.assert_close(got, t.grad, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("strategy", REFUSING)
def test_forced_strategy_refuses_a_geometry_it_does_not_take(strategy, rng):
    """A tensor that requires grad changes nothing: the forced call raises before any
    graph is recorded, and so does the gradcheck geometry's."""
    x, w = _tensors(rng, X_SHAPE, W_SHAPE)
    match = f"strategy='{strategy}' cannot run this call"
    with pytest.raises(ValueError, match=match):
        ac.conv2d(x, w, strategy=strategy, **GEOMETRY)
    x, w = _tensors(rng, *GRADCHECK_SHAPES)
    if not oracles.runnable([strategy], *GRADCHECK_SHAPES, **GRADCHECK):
        with pytest.raises(ValueError, match=match):
            ac.conv2d(x, w, strategy=strategy, **GRADCHECK)


@pytest.mark.parametrize(("strategy", "stride"), GRADCHECK_CASES)
def test_conv2d_gradcheck(strategy, stride, rng):
    x, w, b = _tensors(rng, *GRADCHECK_SHAPES, (2,))

    def f(x, w, b):
        return ac.conv2d(x, w, b, padding=1, stride=stride, strategy=strategy)

    assert torch.autograd.gradcheck(f, (x, w, b))
    if strategy == "auto":  # second derivatives: conv2d and conv2d_backward again
        assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_conv2d_backward_is_differentiable(rng):
    """conv2d_backward on tensors that require grad: gradients of its outputs (gradient
    penalties) by finite differences."""
    x, w = _tensors(rng, (1, 2, 4, 4), (2, 2, 2, 2))
    (gy,) = _tensors(rng, (1, 2, 3, 3))

    def f(gy, x, w):
        return ac.conv2d_backward(gy, x, w, strategy="naive")

    assert torch.autograd.gradcheck(f, (gy, x, w))
    assert torch.autograd.gradgradcheck(f, (gy, x, w))


@pytest.mark.parametrize("which", ["x", "w", "b"])
def test_only_the_inputs_that_require_grad_get_one(which, rng):
    x, w, b = _tensors(rng, (1, 2, 5, 5), (3, 2, 3, 3), (3,), grad=False)
    target = {"x": x, "w": w, "b": b}[which]
    target.requires_grad_(True)
    (ac.conv2d(x, w, b) ** 2).sum().backward()
    assert [t.grad is not None for t in (x, w, b)] == [t is target for t in (x, w, b)]
    mine = target.grad.clone()
    target.grad = None
    (F.conv2d(x, w, b) ** 2).sum().backward()
    torch.testing.assert_close(mine, target.grad, rtol=1e-10, atol=1e-10)


def test_grad_mode_off_records_nothing(rng):
    x, w = _tensors(rng, (1, 1, 6, 6), (1, 1, 3, 3))
    with torch.no_grad():
        y = ac.conv2d(x, w)
        p = ac.max_pool2d(x, 2)
    assert not y.requires_grad and not p.requires_grad


@pytest.mark.parametrize("strategy", ac.STRATEGY_NAMES)
def test_no_requires_grad_leaks_into_later_calls(strategy, rng):
    """After calls on tensors that require grad, plain calls (same shapes: the same work
    buffers) return plain tensors, and every recorded graph stays one node deep."""
    x, w = _tensors(rng, (2, 3, 12, 12), (4, 3, 3, 3))
    plain_x, plain_w = x.detach().clone(), w.detach().clone()
    sizes = []
    for _ in range(4):
        y = ac.conv2d(x, w, padding=1, strategy=strategy)
        sizes.append(graph_size(y))
        y.sum().backward()
        grads = ac.conv2d_backward(torch.ones_like(y), x, w, padding=1, strategy=strategy)
        assert grads[0].requires_grad  # recorded: x requires grad
        plain = ac.conv2d(plain_x, plain_w, padding=1, strategy=strategy)
        assert not plain.requires_grad and plain.grad_fn is None
        grads = ac.conv2d_backward(torch.ones_like(plain), plain_x, plain_w, padding=1)
        assert not any(g.requires_grad for g in grads)
    # our node, and an AccumulateGrad per leaf: no chain through earlier calls' buffers
    assert sizes == [3] * 4


def test_filters_and_pooling_do_not_leak(rng):
    (image,) = _tensors(rng, (2, 20, 20))
    (kernel,) = _tensors(rng, (5, 5))
    (x,) = _tensors(rng, (2, 3, 8, 8))
    for _ in range(3):
        for out in (
            ac.correlate2d(image, kernel, "same", boundary="symm"),
            ac.convolve2d(image, kernel, "valid", strategy="im2col"),
            ac.max_pool2d(x, 3, stride=2, padding=1),
            ac.avg_pool2d(x, 2),
        ):
            assert out.requires_grad
            out.sum().backward()
        plain = [
            ac.correlate2d(image.detach(), kernel.detach(), "same", boundary="symm"),
            ac.convolve2d(image.detach(), kernel.detach(), "valid", strategy="im2col"),
            ac.max_pool2d(x.detach(), 3, stride=2, padding=1),
            ac.avg_pool2d(x.detach(), 2),
            ac.max_pool2d_backward(
                torch.ones(2, 3, 4, 4, dtype=x.dtype), x.detach(), 3, stride=2, padding=1
            ),
        ]
        assert not any(t.requires_grad or t.grad_fn is not None for t in plain)


def test_inference_mode_then_normal_mode(rng):
    """Work buffers made under inference_mode are inference tensors; a later normal call
    of the same shapes must not reuse them."""
    x, w = (t.detach() for t in _tensors(rng, (1, 2, 8, 8), (2, 2, 3, 3)))
    with torch.inference_mode():
        inside = ac.conv2d(x, w, strategy="naive")
    outside = ac.conv2d(x, w, strategy="naive")
    torch.testing.assert_close(inside, outside)
    xg = x.clone().requires_grad_(True)
    ac.conv2d(xg, w, strategy="naive").sum().backward()
    assert xg.grad is not None


@pytest.mark.parametrize("strategy", ["naive", "fft", "separable", "im2col", "winograd"])
def test_correlate2d_gradients(strategy, rng):
    image, kernel = _tensors(rng, (2, 7, 6), (3, 4))

    def f(image, kernel):
        return ac.correlate2d(image, kernel, "same", boundary="wrap", strategy=strategy)

    assert torch.autograd.gradcheck(f, (image, kernel))


POOLS = [
    (lambda x: ac.max_pool2d(x, 3, stride=2, padding=1), lambda x: F.max_pool2d(x, 3, 2, 1)),
    (lambda x: ac.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2)),
    (
        lambda x: ac.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
        lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    ),
    (lambda x: ac.avg_pool2d(x, 2, stride=1), lambda x: F.avg_pool2d(x, 2, 1)),
]


@pytest.mark.parametrize(("mine", "theirs"), POOLS)
def test_pooling_gradients_match_torch(mine, theirs, rng):
    values = rng.permutation(2 * 2 * 5 * 5).reshape(2, 2, 5, 5) * 0.1  # no ties
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mine, (x,))
    assert torch.autograd.gradgradcheck(mine, (x,))
    y = mine(x)
    gy = torch.tensor(rng.standard_normal(tuple(y.shape)), dtype=torch.float64)
    (got,) = torch.autograd.grad(y, x, gy)
    (expected,) = torch.autograd.grad(theirs(x), x, gy)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_pooling_backwards_are_differentiable(rng):
    values = rng.permutation(1 * 1 * 4 * 4).reshape(1, 1, 4, 4) * 0.1
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    (gy,) = _tensors(rng, (1, 1, 2, 2))

    def max_back(gy, x):
        return ac.max_pool2d_backward(gy, x, 2)

    def avg_back(gy, x):
        return ac.avg_pool2d_backward(gy, x, 3, stride=2, padding=1)  # (1, 1, 2, 2) too

    for f in (max_back, avg_back):
        assert torch.autograd.gradcheck(f, (gy, x))
        assert torch.autograd.gradgradcheck(f, (gy, x))


def test_requires_grad_float32_training_step_matches_torch(rng):
    """A small float32 layer trained one step through arraycnn's graph equals torch's."""
    x = torch.tensor(rng.standard_normal((4, 3, 10, 10)), dtype=torch.float32)
    w0 = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    results = []
    for conv in (ac.conv2d, F.conv2d):
        w = torch.tensor(w0, requires_grad=True)
        loss = (conv(x, w, padding=1) ** 2).mean()
        loss.backward()
        results.append((loss.item(), w.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)
