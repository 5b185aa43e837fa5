"""Loss functions: ``loss(output, target) -> (value, grad)``.

Every loss is a callable object returning a pair:

* ``value`` — a 0-d array, the mean loss over the batch (namespace, dtype, device of ``output``);
* ``grad`` — the gradient of ``value`` with respect to ``output``, same shape as ``output``.

Means follow PyTorch's ``reduction="mean"``: :class:`MeanSquaredError` and
:class:`BinaryCrossEntropy` average over every element; :class:`CategoricalCrossEntropy` sums
over the K classes and averages over the N samples.

Numerics:

* ``BinaryCrossEntropy(from_logits=True)`` uses ``max(z, 0) - z t + log1p(exp(-|z|))``
  (finite for any logit); its gradient is ``(sigmoid(z) - t) / size``.
* ``BinaryCrossEntropy(from_logits=False)`` and ``CategoricalCrossEntropy(from_logits=False)``
  take probabilities and clip them to ``[eps, 1 - eps]`` with ``eps = finfo(dtype).eps`` before
  the logarithm (torch clamps the log at -100 instead); the gradient is the unclipped formula
  evaluated at the clipped probability, so it stays finite and non-zero.
* ``CategoricalCrossEntropy(from_logits=True)`` fuses softmax and cross-entropy through
  log-sum-exp (the maximum is subtracted first): finite for logits of 1e4 and beyond.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from ..backend import device_of, namespace_of, to_numpy
from .activations import sigmoid

__all__ = [
    "LOSSES",
    "BinaryCrossEntropy",
    "CategoricalCrossEntropy",
    "Loss",
    "MeanSquaredError",
    "get_loss",
    "one_hot",
    "softmax_cross_entropy",
]

Array = Any


def one_hot(labels: Array, k: int, dtype: Any, *, xp: ModuleType) -> Array:
    """Class labels (N,) in ``[0, k)`` -> one-hot rows (N, K) of ``dtype``, on the labels'
    device (no range check: the caller's).

    Examples
    --------
    >>> import numpy as np
    >>> one_hot(np.array([2, 0]), 3, np.float32, xp=np)
    array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """
    classes = xp.arange(k, dtype=labels.dtype, device=device_of(labels))
    # (N, 1) == (1, K) -> (N, K)
    return xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(classes, (1, k)), dtype)


def softmax_cross_entropy(logits: Array, t: Array, *, xp: ModuleType) -> tuple[Array, Array]:
    """Softmax and cross-entropy fused: the mean over N of ``-sum_k t log softmax(z)`` and
    its gradient ``(softmax(z) sum_k t - t) / N``, from logits ``z`` (N, K) and targets
    ``t`` (N, K) of ``z``'s dtype.

    One ``exp`` pass: with ``s = z - max_k z`` (each row's maximum 0) and ``e = exp(s)``,
    ``log softmax(z) = s - log(sum_k e)`` and ``softmax(z) = e / sum_k e``. The value sums
    ``t * s`` and ``sum_k t * log(sum_k e)`` without forming the log-probabilities; every
    exponent is <= 0 (no overflow), every ``log`` sees a sum in ``[1, K]``.

    Examples
    --------
    >>> value, grad = softmax_cross_entropy(np.array([[0.0, np.log(3.0)]]),
    ...                                     np.array([[0.0, 1.0]]), xp=np)
    >>> round(float(value), 6), grad  # -log(3/4); softmax(z) - t
    (0.287682, array([[ 0.25, -0.25]]))
    """
    n = float(max(logits.shape[0], 1))
    shifted = logits - xp.max(logits, axis=1, keepdims=True)  # (N, K), max 0 per row
    e = xp.exp(shifted)  # (N, K), in (0, 1]
    sum_e = xp.sum(e, axis=1, keepdims=True)  # (N, 1), in [1, K]
    mass = xp.sum(t, axis=1, keepdims=True)  # (N, 1): 1 for one-hot or label targets
    value = (xp.sum(mass * xp.log(sum_e)) - xp.sum(t * shifted)) / n
    grad = (e * (mass / sum_e) - t) / n  # (N, K)
    return value, grad


def _check_output(output: Array, target: Array, owner: str) -> ModuleType:
    xp = namespace_of(output, target, names=("output", "target"))
    if not xp.isdtype(output.dtype, "real floating"):
        raise TypeError(f"{owner}: output must have a real floating dtype, got {output.dtype}")
    if device_of(output) != device_of(target):
        raise ValueError(
            f"{owner}: output is on device {device_of(output)} but target is on {device_of(target)}"
        )
    return xp


def _same_shape_target(output: Array, target: Array, owner: str, *, xp: ModuleType) -> Array:
    """``target`` cast to ``output``'s dtype, after checking the shapes agree."""
    if tuple(target.shape) != tuple(output.shape):
        raise ValueError(
            f"{owner}: target shape {tuple(target.shape)} must equal output shape "
            f"{tuple(output.shape)}"
        )
    return xp.astype(target, output.dtype)


def _eps(output: Array, xp: ModuleType) -> float:
    return float(xp.finfo(output.dtype).eps)


class Loss:
    """Base class: ``loss(output, target) -> (0-d mean loss, gradient w.r.t. output)``.

    Subclasses implement ``__call__`` and, when they take arguments, ``get_config``.

    Examples
    --------
    >>> class MeanAbsoluteError(Loss):
    ...     name = "mae"
    ...     def __call__(self, output, target):
    ...         diff = output - target
    ...         return np.mean(np.abs(diff)), np.sign(diff) / diff.size
    >>> MeanAbsoluteError()(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    (np.float64(1.0), array([-0.5,  0.5]))
    """

    #: The name :func:`get_loss` knows this loss by.
    name: str = ""

    def __call__(self, output: Array, target: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def get_config(self) -> dict:
        """Constructor keyword arguments, JSON-serialisable."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MeanSquaredError(Loss):
    """``mean((output - target) ** 2)`` over all elements (torch's ``F.mse_loss``).

    Examples
    --------
    >>> value, grad = MeanSquaredError()(np.array([[1.0, 3.0]]), np.array([[0.0, 0.0]]))
    >>> value, grad
    (np.float64(5.0), array([[1., 3.]]))
    """

    name = "mse"

    def __call__(self, output: Array, target: Array) -> tuple[Array, Array]:
        xp = _check_output(output, target, "MeanSquaredError")
        t = _same_shape_target(output, target, "MeanSquaredError", xp=xp)
        diff = output - t
        size = float(max(math.prod(diff.shape), 1))
        return xp.sum(diff * diff) / size, (2.0 / size) * diff


class BinaryCrossEntropy(Loss):
    """``-mean(t log p + (1 - t) log(1 - p))`` over all elements, targets ``t`` in [0, 1].

    Parameters
    ----------
    from_logits : bool
        False (default): ``output`` holds probabilities ``p`` (clipped, see the module
        docstring). True: ``output`` holds logits ``z`` with ``p = sigmoid(z)``, computed
        stably.

    Examples
    --------
    >>> value, grad = BinaryCrossEntropy()(np.array([[0.5], [0.5]]), np.array([[1.0], [0.0]]))
    >>> round(float(value), 6), grad.ravel()  # log 2; (p - t) / (p (1 - p)) / 2
    (0.693147, array([-1.,  1.]))
    >>> value, _ = BinaryCrossEntropy(from_logits=True)(np.array([[1e4]]), np.array([[0.0]]))
    >>> float(value)  # finite for any logit
    10000.0
    """

    name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False) -> None:
        if not isinstance(from_logits, bool):
            raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
        self.from_logits = from_logits

    def __call__(self, output: Array, target: Array) -> tuple[Array, Array]:
        owner = "BinaryCrossEntropy"
        xp = _check_output(output, target, owner)
        t = _same_shape_target(output, target, owner, xp=xp)
        size = float(max(math.prod(output.shape), 1))
        if self.from_logits:
            z = output
            per_element = xp.maximum(z, xp.zeros_like(z)) - z * t + xp.log1p(xp.exp(-xp.abs(z)))
            grad = (sigmoid(z) - t) / size
        else:
            eps = _eps(output, xp)
            p = xp.clip(output, eps, 1.0 - eps)
            per_element = -(t * xp.log(p) + (1.0 - t) * xp.log1p(-p))
            grad = (p - t) / (p * (1.0 - p)) / size
        return xp.sum(per_element) / size, grad

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}


class CategoricalCrossEntropy(Loss):
    """Cross-entropy of K-class scores ``output`` (N, K), summed over K, averaged over N.

    Targets are integer labels (N,) in ``[0, K)`` or class probabilities / one-hot (N, K).

    Parameters
    ----------
    from_logits : bool
        True (default): ``output`` holds raw scores; softmax is fused in with log-sum-exp and
        the gradient is ``(softmax(z) * sum_k t - t) / N`` (``softmax(z) - t`` for one-hot or
        label targets), as ``torch.nn.functional.cross_entropy``. False: ``output`` holds
        probabilities (clipped, see the module docstring); gradient ``-t / p / N``.

    Examples
    --------
    >>> loss = CategoricalCrossEntropy()
    >>> value, grad = loss(np.array([[0.0, np.log(3.0)]]), np.array([1]))  # p = (1/4, 3/4)
    >>> round(float(value), 6), grad  # -log(3/4); softmax(z) - one-hot
    (0.287682, array([[ 0.25, -0.25]]))
    >>> loss(np.zeros((1, 2)), np.array([2]))
    Traceback (most recent call last):
    ...
    ValueError: CategoricalCrossEntropy: labels must be in [0, 2) for K=2 classes; got ...
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = True) -> None:
        if not isinstance(from_logits, bool):
            raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
        self.from_logits = from_logits

    def _target_matrix(self, output: Array, target: Array, *, xp: ModuleType) -> Array:
        """Targets as an (N, K) array of ``output``'s dtype (labels become one-hot)."""
        owner = "CategoricalCrossEntropy"
        n, k = output.shape
        if target.ndim == 2:
            return _same_shape_target(output, target, owner, xp=xp)
        if target.ndim != 1 or target.shape[0] != n:
            raise ValueError(
                f"{owner}: target must be integer labels (N,) = ({n},) or probabilities "
                f"(N, K) = ({n}, {k}), got shape {tuple(target.shape)}"
            )
        if not xp.isdtype(target.dtype, "integral"):
            raise TypeError(
                f"{owner}: label targets (N,) must have an integer dtype, got {target.dtype}"
            )
        outside = (target < 0) | (target >= k)
        if bool(xp.any(outside)):
            labels = to_numpy(target)  # error path only: name the offending labels
            bad = sorted({int(v) for v in labels[(labels < 0) | (labels >= k)]})
            shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
            raise ValueError(
                f"{owner}: labels must be in [0, {k}) for K={k} classes; got out-of-range "
                f"labels {shown}"
            )
        return one_hot(target, k, output.dtype, xp=xp)

    def __call__(self, output: Array, target: Array) -> tuple[Array, Array]:
        owner = "CategoricalCrossEntropy"
        xp = _check_output(output, target, owner)
        if output.ndim != 2:
            raise ValueError(
                f"{owner}: output must be (N, K) class scores, got shape {tuple(output.shape)}"
            )
        t = self._target_matrix(output, target, xp=xp)
        n = float(max(output.shape[0], 1))
        if self.from_logits:
            value, grad = softmax_cross_entropy(output, t, xp=xp)
        else:
            eps = _eps(output, xp)
            p = xp.clip(output, eps, 1.0 - eps)
            value = -xp.sum(t * xp.log(p)) / n
            grad = -t / p / n
        return value, grad

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}


#: Loss classes by name (and alias).
LOSSES: dict[str, type[Loss]] = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "binary_crossentropy": BinaryCrossEntropy,
    "bce": BinaryCrossEntropy,
    "categorical_crossentropy": CategoricalCrossEntropy,
    "cross_entropy": CategoricalCrossEntropy,
}


def get_loss(name_or_obj: str | Loss | type[Loss]) -> Loss:
    """A :class:`Loss` from a name, a Loss subclass (instantiated with defaults) or an instance.

    Names: ``"mse"`` (``"mean_squared_error"``), ``"binary_crossentropy"`` (``"bce"``),
    ``"categorical_crossentropy"`` (``"cross_entropy"``), case-insensitive.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    TypeError
        For anything else.

    Examples
    --------
    >>> get_loss("BCE"), get_loss(CategoricalCrossEntropy)
    (BinaryCrossEntropy(from_logits=False), CategoricalCrossEntropy(from_logits=True))
    >>> get_loss("hinge")
    Traceback (most recent call last):
    ...
    ValueError: loss must be one of 'mse', ...; got 'hinge'
    """
    if isinstance(name_or_obj, Loss):
        return name_or_obj
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, Loss):
        return name_or_obj()
    if isinstance(name_or_obj, str):
        try:
            return LOSSES[name_or_obj.lower()]()
        except KeyError:
            valid = ", ".join(repr(n) for n in LOSSES)
            raise ValueError(f"loss must be one of {valid}; got {name_or_obj!r}") from None
    raise TypeError(
        f"loss must be a name, a Loss instance or a Loss subclass, got "
        f"{type(name_or_obj).__name__} {name_or_obj!r}"
    )
