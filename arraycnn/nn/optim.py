"""Optimizers, in order of increasing complexity; each differs only in its ``_step``.

Interface::

    new_params = optimizer.step(params, grads)

``params`` and ``grads`` are dicts with the same keys (array of the same shape under each key);
the result is a new dict of updated arrays with the same keys. Inputs are not modified, so the
optimizers work on functional namespaces (JAX) as well. State (moments, accumulators, the step
count used for bias correction) is kept per key inside the optimizer, created on the first
step that sees the key.

**Keys must identify parameters across the whole model.** One optimizer serves one model: give
every parameter a unique key (e.g. ``"0.w"``, ``"0.b"``, ``"3.w"``), either all in one ``step``
call or in several calls with disjoint keys. Two parameters sharing a key would share moments;
a key whose shape changes raises ValueError. :meth:`Optimizer.reset` forgets all state.

``lr`` is a plain attribute (validated on assignment): a schedule may change it between steps.

Update rules (``g`` the gradient, ``p`` the parameter; ``lambda`` = ``weight_decay``; the
conventions are PyTorch's, so results agree with ``torch.optim``):

=================  ===========================================================================
SGD                g += lambda p;  p -= lr g
Momentum           g += lambda p;  b = mu b + g;  p -= lr (g + mu b if nesterov else b)
Adagrad            g += lambda p;  G += g^2;  p -= lr g / (sqrt(G) + eps)
AdagradMomentum    G += g^2;  v = mu v + g / (sqrt(G) + eps);  p -= lr v
RMSprop            g += lambda p;  v = rho v + (1 - rho) g^2;  p -= lr g / (sqrt(v) + eps)
Adam               g += lambda p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
                   p -= lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t),
                   v_hat = v / (1 - b2^t)
AdamW              p -= lr lambda p (decoupled decay), then Adam without the L2 term
=================  ===========================================================================

``weight_decay`` in SGD / Momentum / Adagrad / RMSprop / Adam is an L2 penalty
``lambda / 2 |p|^2`` added to the loss (the lecture's ``lam``). Conventions that differ from
other libraries: ``eps`` is added outside the square root (torch; Keras's RMSprop too, the
lecture adds it inside); momentum accumulates the raw gradient and ``lr`` multiplies at the
update (torch), so a new ``lr`` takes effect at once; Adagrad's accumulator starts at
``initial_accumulator_value`` (torch's default 0).
"""

from __future__ import annotations

import math
from typing import Any

from ..backend import namespace_of

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "AdagradMomentum",
    "Adam",
    "AdamW",
    "Momentum",
    "Optimizer",
    "RMSprop",
    "get_optimizer",
]

Array = Any


# ---------------------------------------------------------------------------------------------
# hyperparameter validation
# ---------------------------------------------------------------------------------------------


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _positive(value: Any, name: str) -> float:
    value = _real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _non_negative(value: Any, name: str) -> float:
    value = _real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _fraction(value: Any, name: str) -> float:
    value = _real(value, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------


class Optimizer:
    """Base class: validates the ``step`` arguments, keeps per-key state, calls ``_step``."""

    #: The name :func:`get_optimizer` knows this optimizer by.
    name: str = ""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.state: dict[str, dict[str, Any]] = {}

    @property
    def lr(self) -> float:
        """Learning rate (> 0); may be changed between steps."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _positive(value, "lr")

    def step(self, params: dict[str, Array], grads: dict[str, Array]) -> dict[str, Array]:
        """Return the updated parameters (a new dict, same keys); inputs are not modified.

        Raises
        ------
        ValueError
            If the keys of ``params`` and ``grads`` differ, or a gradient's shape differs from
            its parameter's.
        TypeError
            If a parameter and its gradient come from different namespaces.
        """
        if not isinstance(params, dict) or not isinstance(grads, dict):
            raise TypeError(
                f"params and grads must be dicts of arrays, got {type(params).__name__} "
                f"and {type(grads).__name__}"
            )
        if params.keys() != grads.keys():
            missing = sorted(set(params) - set(grads))
            extra = sorted(set(grads) - set(params))
            raise ValueError(
                f"params and grads must have the same keys: no gradient for {missing}, "
                f"gradients without a parameter: {extra}"
            )
        updated = {}
        for key, p in params.items():
            g = grads[key]
            namespace_of(p, g, names=(f"params[{key!r}]", f"grads[{key!r}]"))
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(
                    f"grads[{key!r}] has shape {tuple(g.shape)} but params[{key!r}] has shape "
                    f"{tuple(p.shape)}"
                )
            updated[key] = self._step(self._state_of(key, p), p, g)
        return updated

    def _state_of(self, key: str, p: Array) -> dict[str, Any]:
        """The state of ``key`` (created empty); its step count ``t`` advanced by one."""
        state = self.state.setdefault(key, {"t": 0, "shape": tuple(p.shape)})
        if state["shape"] != tuple(p.shape):
            raise ValueError(
                f"params[{key!r}] has shape {tuple(p.shape)} but the optimizer's state for that "
                f"key has shape {state['shape']}: keys must be unique per parameter (or call "
                "reset())"
            )
        state["t"] += 1
        return state

    def _step(self, state: dict[str, Any], p: Array, g: Array) -> Array:
        """Updated ``p`` from gradient ``g``; may read and replace entries of ``state``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state (moments, accumulators, step counts)."""
        self.state.clear()

    def get_config(self) -> dict:
        """Constructor keyword arguments, JSON-serialisable."""
        return {"lr": self.lr}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _zeros_like(state: dict[str, Any], name: str, p: Array, fill: float = 0.0) -> Array:
    """``state[name]``, created as an array like ``p`` filled with ``fill`` on first use."""
    if name not in state:
        xp = namespace_of(p)
        state[name] = xp.full_like(p, fill) if fill else xp.zeros_like(p)
    return state[name]


# ---------------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------------


class SGD(Optimizer):
    """Plain gradient descent ``p -= lr (g + weight_decay p)``."""

    name = "sgd"

    def __init__(self, lr: float = 0.01, *, weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self.weight_decay = _non_negative(weight_decay, "weight_decay")

    def _decayed(self, p: Array, g: Array) -> Array:
        return g + self.weight_decay * p if self.weight_decay else g

    def _step(self, state, p, g):
        return p - self.lr * self._decayed(p, g)

    def get_config(self) -> dict:
        return {**super().get_config(), "weight_decay": self.weight_decay}


class Momentum(SGD):
    """Heavy-ball momentum ``b = mu b + g; p -= lr b`` (Nesterov: ``p -= lr (g + mu b)``)."""

    name = "momentum"

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.9,
        *,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay=weight_decay)
        self.momentum = _fraction(momentum, "momentum")
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        self.nesterov = nesterov

    def _step(self, state, p, g):
        g = self._decayed(p, g)
        b = self.momentum * _zeros_like(state, "b", p) + g
        state["b"] = b
        direction = g + self.momentum * b if self.nesterov else b
        return p - self.lr * direction

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adagrad(SGD):
    """Per-element steps shrinking with the accumulated squared gradient ``G``."""

    name = "adagrad"

    def __init__(
        self,
        lr: float = 0.01,
        eps: float = 1e-10,
        *,
        initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay=weight_decay)
        self.eps = _positive(eps, "eps")
        self.initial_accumulator_value = _non_negative(
            initial_accumulator_value, "initial_accumulator_value"
        )

    def _accumulate(self, state, p, g) -> Array:
        xp = namespace_of(p)
        acc = _zeros_like(state, "G", p, self.initial_accumulator_value) + g * g
        state["G"] = acc
        return g / (xp.sqrt(acc) + self.eps)

    def _step(self, state, p, g):
        return p - self.lr * self._accumulate(state, p, self._decayed(p, g))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "eps": self.eps,
            "initial_accumulator_value": self.initial_accumulator_value,
        }


class AdagradMomentum(Adagrad):
    """Adagrad's scaled gradient fed into heavy-ball momentum: ``v = mu v + g / (sqrt(G) + eps);
    p -= lr v``."""

    name = "adagrad_momentum"

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.9,
        eps: float = 1e-10,
        *,
        initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            lr,
            eps,
            initial_accumulator_value=initial_accumulator_value,
            weight_decay=weight_decay,
        )
        self.momentum = _fraction(momentum, "momentum")

    def _step(self, state, p, g):
        scaled = self._accumulate(state, p, self._decayed(p, g))
        v = self.momentum * _zeros_like(state, "v", p) + scaled
        state["v"] = v
        return p - self.lr * v

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}


class RMSprop(SGD):
    """Steps scaled by a running mean of squared gradients (decay ``rho``)."""

    name = "rmsprop"

    def __init__(
        self, lr: float = 0.01, rho: float = 0.9, eps: float = 1e-8, *, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, weight_decay=weight_decay)
        self.rho = _fraction(rho, "rho")
        self.eps = _positive(eps, "eps")

    def _step(self, state, p, g):
        xp = namespace_of(p)
        g = self._decayed(p, g)
        v = self.rho * _zeros_like(state, "v", p) + (1.0 - self.rho) * (g * g)
        state["v"] = v
        return p - self.lr * g / (xp.sqrt(v) + self.eps)

    def get_config(self) -> dict:
        return {**super().get_config(), "rho": self.rho, "eps": self.eps}


class Adam(SGD):
    """Adam: bias-corrected first and second moments; ``weight_decay`` is an L2 term."""

    name = "adam"

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        *,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay=weight_decay)
        self.beta1 = _fraction(beta1, "beta1")
        self.beta2 = _fraction(beta2, "beta2")
        self.eps = _positive(eps, "eps")

    def _adam_direction(self, state, p, g) -> Array:
        """``m_hat / (sqrt(v_hat) + eps)`` after updating the moments with ``g``."""
        xp = namespace_of(p)
        m = self.beta1 * _zeros_like(state, "m", p) + (1.0 - self.beta1) * g
        v = self.beta2 * _zeros_like(state, "v", p) + (1.0 - self.beta2) * (g * g)
        state["m"], state["v"] = m, v
        t = state["t"]
        m_hat = m / (1.0 - self.beta1**t)
        v_hat = v / (1.0 - self.beta2**t)
        return m_hat / (xp.sqrt(v_hat) + self.eps)

    def _step(self, state, p, g):
        return p - self.lr * self._adam_direction(state, p, self._decayed(p, g))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p -= lr weight_decay p`` before the Adam step."""

    name = "adamw"

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        *,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay=weight_decay)

    def _step(self, state, p, g):
        decayed = p - (self.lr * self.weight_decay) * p if self.weight_decay else p
        return decayed - self.lr * self._adam_direction(state, p, g)


#: Optimizer classes by name.
OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, Adagrad, AdagradMomentum, RMSprop, Adam, AdamW)
}


def get_optimizer(name_or_obj: str | Optimizer | type[Optimizer], **kwargs: Any) -> Optimizer:
    """An :class:`Optimizer` from a name (case-insensitive) or class with ``kwargs``, or an
    instance (returned as is; ``kwargs`` are then refused).

    Names: ``"sgd"``, ``"momentum"``, ``"adagrad"``, ``"adagrad_momentum"``, ``"rmsprop"``,
    ``"adam"``, ``"adamw"``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or invalid hyperparameters.
    TypeError
        For anything else, or ``kwargs`` given with an instance.
    """
    if isinstance(name_or_obj, Optimizer):
        if kwargs:
            raise TypeError(
                f"optimizer is already an instance ({name_or_obj!r}); hyperparameters "
                f"{sorted(kwargs)} cannot be applied to it"
            )
        return name_or_obj
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, Optimizer):
        return name_or_obj(**kwargs)
    if isinstance(name_or_obj, str):
        try:
            cls = OPTIMIZERS[name_or_obj.lower()]
        except KeyError:
            valid = ", ".join(repr(n) for n in OPTIMIZERS)
            raise ValueError(f"optimizer must be one of {valid}; got {name_or_obj!r}") from None
        return cls(**kwargs)
    raise TypeError(
        f"optimizer must be a name, an Optimizer instance or an Optimizer subclass, got "
        f"{type(name_or_obj).__name__} {name_or_obj!r}"
    )
