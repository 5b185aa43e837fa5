"""Losses: hand formulas, torch (values and autograd gradients), finite differences, stability
with logits of 1e4, names and error paths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, log_softmax

from arraycnn.backend import namespace_of, to_numpy
from arraycnn.nn.losses import (
    LOSSES,
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    Loss,
    MeanSquaredError,
    get_loss,
)
from arraycnn.testing import assert_close, check_grad

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _probabilities(rng, shape):
    return rng.uniform(0.05, 0.95, size=shape)


def _soft_targets(rng, n, k):
    t = rng.uniform(size=(n, k))
    return t / t.sum(axis=1, keepdims=True)


# (loss, output maker, target maker, hand formula of the mean loss)
CASES = {
    "mse": (
        MeanSquaredError(),
        lambda rng: rng.standard_normal((4, 3)),
        lambda rng: rng.standard_normal((4, 3)),
        lambda o, t: np.mean((o - t) ** 2),
    ),
    "bce_probabilities": (
        BinaryCrossEntropy(),
        lambda rng: _probabilities(rng, (5, 2)),
        lambda rng: rng.integers(0, 2, size=(5, 2)).astype(float),
        lambda p, t: -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)),
    ),
    "bce_logits": (
        BinaryCrossEntropy(from_logits=True),
        lambda rng: rng.standard_normal((6, 1)) * 3,
        lambda rng: rng.uniform(size=(6, 1)),
        lambda z, t: -np.mean(t * np.log(expit(z)) + (1 - t) * np.log(1 - expit(z))),
    ),
    "cce_logits_labels": (
        CategoricalCrossEntropy(),
        lambda rng: rng.standard_normal((5, 4)) * 2,
        lambda rng: rng.integers(0, 4, size=5),
        lambda z, t: -np.mean(log_softmax(z, axis=1)[np.arange(len(t)), t]),
    ),
    "cce_logits_soft": (
        CategoricalCrossEntropy(),
        lambda rng: rng.standard_normal((5, 4)) * 2,
        lambda rng: _soft_targets(rng, 5, 4),
        lambda z, t: -np.sum(t * log_softmax(z, axis=1)) / len(t),
    ),
    "cce_probabilities": (
        CategoricalCrossEntropy(from_logits=False),
        lambda rng: _soft_targets(rng, 3, 5),
        lambda rng: np.eye(5)[[1, 4, 0]],
        lambda p, t: -np.sum(t * np.log(p)) / len(t),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_value_matches_hand_formula_and_gradient_matches_fd(case, xp, to_xp, rng):
    loss, make_output, make_target, formula = CASES[case]
    output, target = make_output(rng), make_target(rng)
    value, grad = loss(to_xp(output), to_xp(target))
    assert value.ndim == 0 and value.dtype == xp.float64
    assert namespace_of(grad).__name__ == xp.__name__ and tuple(grad.shape) == output.shape
    assert_close(value, formula(output, target), xp=xp, dtype=xp.float64)
    check_grad(lambda v: float(loss(to_xp(v), to_xp(target))[0]), output, to_numpy(grad))


@pytest.mark.parametrize("case", list(CASES))
def test_float32_keeps_dtype(case, xp, to_xp, rng):
    loss, make_output, make_target, formula = CASES[case]
    output, target = make_output(rng), make_target(rng)
    t = target if target.dtype.kind == "i" else target.astype(np.float32)
    value, grad = loss(to_xp(output.astype(np.float32)), to_xp(t))
    assert value.dtype == xp.float32 and grad.dtype == xp.float32
    assert_close(value, formula(output, target), xp=xp, rtol=1e-5, atol=1e-6)


def _torch_loss(fn, output, target, **kwargs):
    o = torch.tensor(output, requires_grad=True)
    value = fn(o, torch.tensor(target), **kwargs)
    value.backward()
    return value.detach().numpy(), o.grad.numpy()


@needs_torch
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_match_torch(rng, scale):
    n, k = 6, 5
    z = rng.standard_normal((n, k)) * scale
    labels = rng.integers(0, k, size=n)
    soft = _soft_targets(rng, n, k)
    p = _probabilities(rng, (n, k))
    binary = rng.integers(0, 2, size=(n, k)).astype(float)
    pairs = [
        (CategoricalCrossEntropy(), z, labels, F.cross_entropy, {}),
        (CategoricalCrossEntropy(), z, soft, F.cross_entropy, {}),
        (BinaryCrossEntropy(from_logits=True), z, soft, F.binary_cross_entropy_with_logits, {}),
        (BinaryCrossEntropy(), p, binary, F.binary_cross_entropy, {}),
        (MeanSquaredError(), z, soft, F.mse_loss, {}),
    ]
    for ours, output, target, theirs, kwargs in pairs:
        value, grad = ours(output, target)
        t_value, t_grad = _torch_loss(theirs, output, target, **kwargs)
        assert_close(value, t_value, err_msg=repr(ours))
        assert_close(grad, t_grad, scale=np.abs(t_grad).max(), err_msg=repr(ours))


def test_huge_logits_give_finite_exact_results(xp, to_xp):
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    value, grad = CategoricalCrossEntropy()(to_xp(z), to_xp(np.array([2, 0])))
    # row 0: label 2 scores -1e4 against a maximum of 1e4 -> 2e4; row 1: label 0 -> 1e4 + log 2
    assert_close(value, (2e4 + 1e4 + np.log(2)) / 2, xp=xp)
    assert_close(grad, [[0.5, 0.0, -0.5], [-0.5, 0.25, 0.25]], xp=xp, scale=1.0)
    value, grad = BinaryCrossEntropy(from_logits=True)(
        to_xp(np.array([1e4, -1e4, 1e4])), to_xp(np.array([0.0, 0.0, 1.0]))
    )
    assert_close(value, 1e4 / 3, xp=xp)
    assert_close(grad, [1 / 3, 0.0, 0.0], xp=xp, scale=1.0)


def test_probability_clipping_keeps_values_finite(xp, to_xp):
    p = to_xp(np.array([[0.0, 1.0]]))
    t = to_xp(np.array([[1.0, 0.0]]))
    for loss, target in ((BinaryCrossEntropy(), t), (CategoricalCrossEntropy(False), t)):
        value, grad = loss(p, target)
        assert np.isfinite(to_numpy(value)) and np.all(np.isfinite(to_numpy(grad)))
    value, _ = BinaryCrossEntropy()(p, t)
    eps = np.finfo(np.float64).eps
    assert_close(value, -np.log(eps), xp=xp)  # both elements hit the clip at eps


def test_labels_and_one_hot_agree(rng):
    z = rng.standard_normal((4, 3))
    labels = np.array([2, 0, 1, 1])
    a = CategoricalCrossEntropy()(z, labels)
    b = CategoricalCrossEntropy()(z, np.eye(3)[labels])
    assert_close(a[0], b[0])
    assert_close(a[1], b[1])


# ---------------------------------------------------------------------------------------------
# names and errors
# ---------------------------------------------------------------------------------------------


def test_get_loss_names_aliases_instances_and_classes():
    assert isinstance(get_loss("mse"), MeanSquaredError)
    assert isinstance(get_loss("BINARY_CROSSENTROPY"), BinaryCrossEntropy)
    assert isinstance(get_loss("categorical_crossentropy"), CategoricalCrossEntropy)
    assert isinstance(get_loss("cross_entropy"), CategoricalCrossEntropy)
    mine = BinaryCrossEntropy(from_logits=True)
    assert get_loss(mine) is mine
    assert isinstance(get_loss(MeanSquaredError), MeanSquaredError)
    assert {"mse", "binary_crossentropy", "categorical_crossentropy", "cross_entropy"} <= set(
        LOSSES
    )
    assert repr(CategoricalCrossEntropy(False)) == "CategoricalCrossEntropy(from_logits=False)"


def test_get_loss_errors():
    with pytest.raises(ValueError, match=r"loss must be one of 'mse', .*; got 'hinge'"):
        get_loss("hinge")
    with pytest.raises(TypeError, match=r"loss must be a name, a Loss instance .* got int"):
        get_loss(3)
    with pytest.raises(NotImplementedError):
        Loss()(np.zeros(1), np.zeros(1))


Z = np.zeros((3, 4))


@pytest.mark.parametrize(
    ("loss", "output", "target", "error", "match"),
    [
        (
            CategoricalCrossEntropy(),
            Z,
            np.array([0, 4, -1]),
            ValueError,
            r"labels must be in \[0, 4\) for K=4 classes; got out-of-range labels -1, 4",
        ),
        (
            CategoricalCrossEntropy(),
            Z,
            np.array([0.0, 1.0, 2.0]),
            TypeError,
            r"label targets \(N,\) must have an integer dtype, got float64",
        ),
        (CategoricalCrossEntropy(), Z, np.array([0, 1]), ValueError, r"got shape \(2,\)"),
        (CategoricalCrossEntropy(), Z, np.zeros((3, 5)), ValueError, r"target shape \(3, 5\)"),
        (CategoricalCrossEntropy(), np.zeros(4), np.array([0]), ValueError, r"\(N, K\) class"),
        (MeanSquaredError(), Z, np.zeros((4, 3)), ValueError, r"must equal output shape"),
        (BinaryCrossEntropy(), Z, np.zeros(3), ValueError, r"must equal output shape"),
        (MeanSquaredError(), np.zeros(3, int), np.zeros(3), TypeError, r"real floating dtype"),
        (MeanSquaredError(), Z, Z.tolist(), TypeError, r"target must be an array"),
    ],
)
def test_loss_errors(loss, output, target, error, match):
    with pytest.raises(error, match=match):
        loss(output, target)


def test_constructor_and_namespace_errors():
    with pytest.raises(TypeError, match=r"from_logits must be True or False, got 1"):
        BinaryCrossEntropy(from_logits=1)
    with pytest.raises(TypeError, match=r"from_logits must be True or False, got 'yes'"):
        CategoricalCrossEntropy(from_logits="yes")
    if torch is not None:
        with pytest.raises(TypeError, match=r"different namespaces"):
            MeanSquaredError()(Z, torch.zeros((3, 4), dtype=torch.float64))
