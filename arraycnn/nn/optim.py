"""Optimizers, in order of increasing complexity, each one ``_step`` composed of parts.

Interface::

    new_params = optimizer.step(params, grads)

``params`` and ``grads`` are dicts with the same keys (array of the same shape under each key);
the result is a new dict of updated arrays with the same keys. Inputs are not modified, so the
optimizers work on functional namespaces (JAX) as well. State (moments, accumulators, the step
count used for bias correction) is kept per key inside the optimizer, created on the first
step that sees the key.

**Few temporaries.** Where the namespace updates arrays in place (NumPy, CuPy and torch
arrays that are writeable, :func:`updates_in_place`), the state arrays are updated in place
and the new parameter is built in the step's one fresh array; elsewhere (JAX's immutable
arrays, array-api-strict) every update is functional. An update never records an autograd
graph (torch: grad mode is off inside :meth:`Optimizer.step`, as in ``torch.optim``).

**Keys must identify parameters across the whole model.** One optimizer serves one model: give
every parameter a unique key (e.g. ``"0.w"``, ``"0.b"``, ``"3.w"``), either all in one ``step``
call or in several calls with disjoint keys. Two parameters sharing a key would share moments;
a key whose shape changes raises ValueError. :meth:`Optimizer.reset` forgets all state.

``lr`` is a plain attribute (validated on assignment): a schedule may change it between steps.

**Half precision.** For float16 / bfloat16 parameters the update is computed in float32 and the
state (moments, accumulators) is kept in float32; only the new parameter is rounded back to its
dtype. In float16 itself Adam's default ``eps = 1e-8`` rounds to 0 and ``(1 - beta2) g^2``
underflows to 0 for gradients below about 1e-2, so a zero or small gradient gives ``0 / 0``:
NaN weights after one step.

Reuse is by composition: an optimizer holds *parts*, each owning its hyperparameters, their
validation and its piece of the update rule, and its one ``_step`` chains them:

* a weight-decay part, :class:`L2Penalty` or :class:`DecoupledDecay`; both have
  ``apply(p, g, lr) -> (p, g)``, the parameter and gradient the rest of the rule sees;
* a direction part: :class:`HeavyBall`, :class:`SquaredGradientSum`,
  :class:`SquaredGradientAverage` or :class:`AdamMoments` (AdagradMomentum chains
  :class:`SquaredGradientSum` into :class:`HeavyBall`).

Adam and AdamW are one definition: AdamW is Adam with :class:`DecoupledDecay` as its decay
part (as ``torch.optim.AdamW``). A hyperparameter is also an attribute of the optimizer
(``opt.beta1`` reads and writes ``opt.moments.beta1``).

Update rules (``g`` the gradient, ``p`` the parameter; ``lambda`` = ``weight_decay``; the
conventions are PyTorch's, so results agree with ``torch.optim``):

=================  ===========================================================================
SGD                g += lambda p;  p -= lr g
Momentum           g += lambda p;  b = mu b + g;  p -= lr (g + mu b if nesterov else b)
Adagrad            g += lambda p;  G += g^2;  p -= lr g / (sqrt(G) + eps)
AdagradMomentum    g += lambda p;  G += g^2;  v = mu v + g / (sqrt(G) + eps);  p -= lr v
RMSprop            g += lambda p;  v = rho v + (1 - rho) g^2;  p -= lr g / (sqrt(v) + eps)
Adam               g += lambda p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
                   p -= lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t),
                   v_hat = v / (1 - b2^t)
AdamW              p -= lr lambda p (decoupled decay), then Adam without the L2 term
=================  ===========================================================================

``weight_decay`` in SGD / Momentum / Adagrad / AdagradMomentum / RMSprop / Adam is an L2
penalty ``lambda / 2 |p|^2`` added to the loss (the lecture's ``lam``). Conventions that differ
from other libraries: ``eps`` is added outside the square root (torch; Keras's RMSprop too, the
lecture adds it inside); momentum accumulates the raw gradient and ``lr`` multiplies at the
update (torch), so a new ``lr`` takes effect at once; Adagrad's accumulator starts at
``initial_accumulator_value`` (torch's default 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import array_api_compat

from ..backend import namespace_of, no_graph

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "AdagradMomentum",
    "Adam",
    "AdamMoments",
    "AdamW",
    "DecoupledDecay",
    "HeavyBall",
    "L2Penalty",
    "Momentum",
    "Optimizer",
    "RMSprop",
    "SquaredGradientAverage",
    "SquaredGradientSum",
    "get_optimizer",
    "updates_in_place",
]

Array = Any
State = dict[str, Any]


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


def _mutable_kind(x: Array) -> bool:
    """A NumPy, CuPy or torch array: a kind the optimizers write into (JAX arrays are
    immutable; array-api-strict stands for namespaces whose in-place semantics the library
    does not rely on)."""
    return (
        array_api_compat.is_numpy_array(x)
        or array_api_compat.is_torch_array(x)
        or array_api_compat.is_cupy_array(x)
    )


def updates_in_place(x: Array) -> bool:
    """Whether the optimizers update the state array ``x`` in place: a writeable NumPy,
    CuPy or torch array. Elsewhere (JAX, array-api-strict) updates are functional.

    Examples
    --------
    >>> import numpy as np
    >>> frozen = np.zeros(2)
    >>> frozen.flags.writeable = False
    >>> updates_in_place(np.zeros(2)), updates_in_place(frozen)
    (True, False)
    """
    return _mutable_kind(x) and bool(array_api_compat.is_writeable_array(x))


def _scale_add(acc: Array, decay: float, term: Array) -> Array:
    """``decay * acc + term`` (shapes of ``acc``): written into ``acc`` where
    :func:`updates_in_place`, else a new array. Callers keep the returned array."""
    if updates_in_place(acc):
        acc *= decay
        acc += term
        return acc
    return decay * acc + term


def _scaled(x: Array, factor: float, *, owned: bool) -> Array:
    """``factor * x``: in place when ``x`` is ``owned`` (a temporary of the caller, which
    may be overwritten) and :func:`updates_in_place`, else a new array."""
    if owned and updates_in_place(x):
        x *= factor
        return x
    return factor * x


def _shifted(x: Array, offset: float) -> Array:
    """``x + offset`` for a temporary ``x`` of the caller: in place where
    :func:`updates_in_place`, else a new array."""
    if updates_in_place(x):
        x += offset
        return x
    return x + offset


def _descend(p: Array, lr: float, direction: Array, *, owned: bool) -> Array:
    """The new parameter ``p - lr * direction`` (shape of ``p``), a fresh array; ``p`` is
    not modified.

    Where the namespace writes in place, the result is built in one array: ``direction``
    itself when it is ``owned`` (a temporary of the caller), else one new array for the
    scaled direction, to which ``p`` is then added.
    """
    if not _mutable_kind(p):
        return p - lr * direction
    step = _scaled(direction, -lr, owned=owned)
    step += p
    return step


def _slot(state: State, name: str, p: Array, fill: float = 0.0) -> Array:
    """``state[name]``, created as an array like ``p`` filled with ``fill`` on first use."""
    if name not in state:
        xp = namespace_of(p)
        state[name] = xp.full_like(p, fill) if fill else xp.zeros_like(p)
    return state[name]


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------


class _PartAttribute:
    """A hyperparameter kept by one part: ``opt.<name>`` reads and writes ``opt.<part>.<name>``.

    There is one copy of each value (on the part); :meth:`Optimizer.get_config` lists an
    optimizer's part attributes in the order its class declares them.
    """

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class Optimizer:
    """Base class: validates the ``step`` arguments, keeps per-key state, calls ``_step``.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.

    Attributes
    ----------
    state : dict[str, dict]
        Per parameter key: the step count ``"t"``, the parameter's ``"shape"`` and the
        optimizer's slots (moments, accumulators), arrays shaped like the parameter.

    Notes
    -----
    A subclass implements ``_step(state, p, g) -> new p`` for one parameter; ``state`` is the
    key's entry of :attr:`state`, with ``"t"`` already advanced.

    Examples
    --------
    >>> import numpy as np
    >>> class HalfStep(Optimizer):
    ...     def _step(self, state, p, g):
    ...         return p - 0.5 * self.lr * g
    >>> opt = HalfStep(lr=1.0)
    >>> opt.step({"w": np.array([1.0, 2.0])}, {"w": np.array([1.0, -1.0])})["w"]
    array([0.5, 2.5])
    >>> opt.state["w"]["t"], opt
    (1, HalfStep(lr=1.0))
    """

    #: The name :func:`get_optimizer` knows this optimizer by.
    name: str = ""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.state: dict[str, State] = {}

    @property
    def lr(self) -> float:
        """Learning rate (> 0); may be changed between steps."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _positive(value, "lr")

    def step(self, params: dict[str, Array], grads: dict[str, Array]) -> dict[str, Array]:
        """Return the updated parameters (a new dict, same keys); inputs are not modified.

        Parameters
        ----------
        params, grads : dict[str, array]
            Same keys; ``grads[k]`` has the shape and namespace of ``params[k]``.

        Returns
        -------
        dict[str, array]
            The updated parameters, each of the shape of its input.

        Raises
        ------
        ValueError
            If the keys of ``params`` and ``grads`` differ, or a gradient's shape differs from
            its parameter's.
        TypeError
            If a parameter and its gradient come from different namespaces.

        Examples
        --------
        >>> import numpy as np
        >>> opt = SGD(0.1)
        >>> new = opt.step({"w": np.array([1.0, -1.0])}, {"w": np.array([2.0, 4.0])})
        >>> new["w"].round(4)
        array([ 0.8, -1.4])
        >>> opt.step({"w": np.zeros(2)}, {"v": np.zeros(2)})
        Traceback (most recent call last):
        ...
        ValueError: params and grads must have the same keys: no gradient for ['w'], ...
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
            xp = namespace_of(p, g, names=(f"params[{key!r}]", f"grads[{key!r}]"))
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(
                    f"grads[{key!r}] has shape {tuple(g.shape)} but params[{key!r}] has shape "
                    f"{tuple(p.shape)}"
                )
            with no_graph(xp):  # the update is no part of any autograd graph
                updated[key] = self._update(self._state_of(key, p), p, g)
        return updated

    def _update(self, state: State, p: Array, g: Array) -> Array:
        """:meth:`_step`, computed in float32 for half-precision parameters (module docstring)."""
        xp = namespace_of(p)
        if not (xp.isdtype(p.dtype, "real floating") and xp.finfo(p.dtype).bits < 32):
            return self._step(state, p, g)
        wide = xp.float32
        return xp.astype(self._step(state, xp.astype(p, wide), xp.astype(g, wide)), p.dtype)

    def _state_of(self, key: str, p: Array) -> State:
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

    def _step(self, state: State, p: Array, g: Array) -> Array:
        """Updated ``p`` from gradient ``g``; may read and replace entries of ``state``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state (moments, accumulators, step counts).

        Examples
        --------
        >>> import numpy as np
        >>> opt = Adam()
        >>> _ = opt.step({"w": np.zeros(2)}, {"w": np.ones(2)})
        >>> sorted(opt.state["w"])
        ['m', 'shape', 't', 'v']
        >>> opt.reset()
        >>> opt.state
        {}
        """
        self.state.clear()

    def get_config(self) -> dict:
        """Constructor keyword arguments, JSON-serialisable: ``lr``, then the hyperparameters.

        Examples
        --------
        >>> Momentum(0.1, nesterov=True).get_config()
        {'lr': 0.1, 'weight_decay': 0.0, 'momentum': 0.9, 'nesterov': True}
        """
        names = dict.fromkeys(
            name
            for cls in reversed(type(self).__mro__)
            for name, value in vars(cls).items()
            if isinstance(value, _PartAttribute)
        )
        return {"lr": self.lr, **{name: getattr(self, name) for name in names}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------------------------
# parts: hyperparameters, their validation and one piece of an update rule
# ---------------------------------------------------------------------------------------------


@dataclass
class L2Penalty:
    """Weight decay as an L2 term ``weight_decay / 2 |p|^2`` of the loss: ``g + weight_decay p``.

    Parameters
    ----------
    weight_decay : float
        ``>= 0``; 0 leaves the gradient as it is.

    Examples
    --------
    >>> import numpy as np
    >>> L2Penalty(0.5).apply(np.array([2.0, -4.0]), np.array([1.0, 1.0]), lr=0.1)
    (array([ 2., -4.]), array([ 2., -1.]))
    """

    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        self.weight_decay = _non_negative(self.weight_decay, "weight_decay")

    def apply(self, p: Array, g: Array, lr: float) -> tuple[Array, Array]:
        """``p`` as it is and the gradient of the penalised loss (shapes of ``p``)."""
        return p, (g + self.weight_decay * p if self.weight_decay else g)


@dataclass
class DecoupledDecay:
    """Weight decay applied to the parameter, not the gradient: ``p - lr weight_decay p``.

    Parameters
    ----------
    weight_decay : float
        ``>= 0``; 0 leaves the parameter as it is.

    Examples
    --------
    >>> import numpy as np
    >>> DecoupledDecay(0.5).apply(np.array([2.0, -4.0]), np.array([1.0, 1.0]), lr=0.1)
    (array([ 1.9, -3.8]), array([1., 1.]))
    """

    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        self.weight_decay = _non_negative(self.weight_decay, "weight_decay")

    def apply(self, p: Array, g: Array, lr: float) -> tuple[Array, Array]:
        """``p`` decayed by one step of learning rate ``lr``, and ``g`` as it is."""
        return (p - (lr * self.weight_decay) * p if self.weight_decay else p), g


@dataclass
class HeavyBall:
    """Momentum: the buffer ``b = momentum b + g`` (kept in ``state[slot]``) is the direction.

    Parameters
    ----------
    momentum : float
        In ``[0, 1)``.
    nesterov : bool
        Look ahead: the direction is ``g + momentum b`` instead of ``b``.
    slot : str
        The state entry holding the buffer.

    Examples
    --------
    >>> import numpy as np
    >>> ball, state, p = HeavyBall(0.5), {}, np.zeros(2)
    >>> ball.direction(state, p, np.array([1.0, 2.0]))
    array([1., 2.])
    >>> ball.direction(state, p, np.array([1.0, 2.0]))
    array([1.5, 3. ])
    """

    momentum: float = 0.9
    nesterov: bool = False
    slot: str = "b"

    def __post_init__(self) -> None:
        self.momentum = _fraction(self.momentum, "momentum")
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov must be True or False, got {self.nesterov!r}")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")

    def direction(self, state: State, p: Array, g: Array) -> Array:
        """The step direction for gradient ``g`` (shape of ``p``); updates the buffer (in
        place where :func:`updates_in_place`). Without Nesterov the direction *is* the
        buffer: callers must not modify it."""
        b = _scale_add(_slot(state, self.slot, p), self.momentum, g)
        state[self.slot] = b
        return g + self.momentum * b if self.nesterov else b


@dataclass
class SquaredGradientSum:
    """Adagrad's scaling: ``G += g^2`` (``state["G"]``), then ``g / (sqrt(G) + eps)``.

    Parameters
    ----------
    eps : float
        ``> 0``, added outside the square root.
    initial_accumulator_value : float
        ``>= 0``, the first value of ``G``.

    Examples
    --------
    >>> import numpy as np
    >>> part, state = SquaredGradientSum(eps=1e-10), {}
    >>> part.scale(state, np.zeros(2), np.array([3.0, -4.0])).round(4)
    array([ 1., -1.])
    >>> state["G"]
    array([ 9., 16.])
    """

    eps: float = 1e-10
    initial_accumulator_value: float = 0.0

    def __post_init__(self) -> None:
        self.eps = _positive(self.eps, "eps")
        self.initial_accumulator_value = _non_negative(
            self.initial_accumulator_value, "initial_accumulator_value"
        )

    def scale(self, state: State, p: Array, g: Array) -> Array:
        """``g`` divided elementwise by the root of the accumulated squares (shape of ``p``)."""
        xp = namespace_of(p)
        acc = _scale_add(_slot(state, "G", p, self.initial_accumulator_value), 1.0, g * g)
        state["G"] = acc
        return g / _shifted(xp.sqrt(acc), self.eps)


@dataclass
class SquaredGradientAverage:
    """RMSprop's denominator: ``v = rho v + (1 - rho) g^2`` (``state["v"]``), ``sqrt(v) + eps``.

    Parameters
    ----------
    rho : float
        Decay of the running average, in ``[0, 1)``.
    eps : float
        ``> 0``, added outside the square root.

    Examples
    --------
    >>> import numpy as np
    >>> part = SquaredGradientAverage(rho=0.5, eps=1e-8)
    >>> part.denominator({}, np.zeros(2), np.array([2.0, -2.0])).round(4)
    array([1.4142, 1.4142])
    """

    rho: float = 0.9
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self.rho = _fraction(self.rho, "rho")
        self.eps = _positive(self.eps, "eps")

    def denominator(self, state: State, p: Array, g: Array) -> Array:
        """``sqrt(v) + eps`` after averaging in ``g`` (shape of ``p``)."""
        xp = namespace_of(p)
        squares = _scaled(g * g, 1.0 - self.rho, owned=True)
        v = _scale_add(_slot(state, "v", p), self.rho, squares)
        state["v"] = v
        return _shifted(xp.sqrt(v), self.eps)


@dataclass
class AdamMoments:
    """Adam's direction ``m_hat / (sqrt(v_hat) + eps)`` from bias-corrected moments.

    ``m = beta1 m + (1 - beta1) g`` and ``v = beta2 v + (1 - beta2) g^2`` live in
    ``state["m"]`` and ``state["v"]``; the bias correction uses the step count ``state["t"]``.

    Parameters
    ----------
    beta1, beta2 : float
        Decays of the first and second moments, in ``[0, 1)``.
    eps : float
        ``> 0``, added outside the square root.

    Examples
    --------
    >>> import numpy as np
    >>> state = {"t": 1}
    >>> AdamMoments().direction(state, np.zeros(2), np.array([0.5, -2.0])).round(6)
    array([ 1., -1.])
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self.beta1 = _fraction(self.beta1, "beta1")
        self.beta2 = _fraction(self.beta2, "beta2")
        self.eps = _positive(self.eps, "eps")

    def direction(self, state: State, p: Array, g: Array) -> Array:
        """The step direction for gradient ``g`` (shape of ``p``); updates the moments."""
        xp = namespace_of(p)
        m = _scale_add(_slot(state, "m", p), self.beta1, (1.0 - self.beta1) * g)
        squares = _scaled(g * g, 1.0 - self.beta2, owned=True)
        v = _scale_add(_slot(state, "v", p), self.beta2, squares)
        state["m"], state["v"] = m, v
        t = state["t"]
        # sqrt(v_hat) + eps = sqrt(v) / sqrt(1 - beta2^t) + eps (as torch.optim.Adam)
        denominator = _scaled(xp.sqrt(v), 1.0 / math.sqrt(1.0 - self.beta2**t), owned=True)
        denominator = _shifted(denominator, self.eps)
        return _scaled(m / denominator, 1.0 / (1.0 - self.beta1**t), owned=True)


# ---------------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------------


class SGD(Optimizer):
    """Plain gradient descent ``p -= lr (g + weight_decay p)``.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    weight_decay : float
        L2 penalty (:class:`L2Penalty`), >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> SGD(0.1, weight_decay=0.5).step({"w": np.array([1.0])}, {"w": np.array([0.5])})
    {'w': array([0.9])}
    """

    name = "sgd"
    weight_decay = _PartAttribute("decay")

    def __init__(self, lr: float = 0.01, *, weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self.decay = L2Penalty(weight_decay)

    def _step(self, state: State, p: Array, g: Array) -> Array:
        p, g = self.decay.apply(p, g, self.lr)
        return _descend(p, self.lr, g, owned=False)


class Momentum(Optimizer):
    """Heavy-ball momentum ``b = mu b + g; p -= lr b`` (Nesterov: ``p -= lr (g + mu b)``).

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    momentum : float
        ``mu`` in ``[0, 1)`` (:class:`HeavyBall`).
    nesterov : bool
        Nesterov's look-ahead (needs ``momentum > 0``).
    weight_decay : float
        L2 penalty, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> opt, p, g = Momentum(0.1, 0.5), {"w": np.array([1.0])}, {"w": np.array([1.0])}
    >>> p = opt.step(p, g)  # b = 1
    >>> opt.step(p, g)["w"].round(4)  # b = 0.5 + 1
    array([0.75])
    """

    name = "momentum"
    weight_decay = _PartAttribute("decay")
    momentum = _PartAttribute("heavy_ball")
    nesterov = _PartAttribute("heavy_ball")

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.9,
        *,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.decay = L2Penalty(weight_decay)
        self.heavy_ball = HeavyBall(momentum, nesterov)

    def _step(self, state: State, p: Array, g: Array) -> Array:
        p, g = self.decay.apply(p, g, self.lr)
        direction = self.heavy_ball.direction(state, p, g)
        return _descend(p, self.lr, direction, owned=self.heavy_ball.nesterov)


class Adagrad(Optimizer):
    """Per-element steps shrinking with the accumulated squared gradient ``G``.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    eps : float
        ``> 0``, added outside the square root.
    initial_accumulator_value : float
        ``>= 0``, the first value of ``G`` (:class:`SquaredGradientSum`).
    weight_decay : float
        L2 penalty, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> Adagrad(0.5).step({"w": np.array([1.0, 1.0])}, {"w": np.array([4.0, -0.1])})["w"]
    array([0.5, 1.5])
    """

    name = "adagrad"
    weight_decay = _PartAttribute("decay")
    eps = _PartAttribute("accumulator")
    initial_accumulator_value = _PartAttribute("accumulator")

    def __init__(
        self,
        lr: float = 0.01,
        eps: float = 1e-10,
        *,
        initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.decay = L2Penalty(weight_decay)
        self.accumulator = SquaredGradientSum(eps, initial_accumulator_value)

    def _step(self, state: State, p: Array, g: Array) -> Array:
        p, g = self.decay.apply(p, g, self.lr)
        return _descend(p, self.lr, self.accumulator.scale(state, p, g), owned=True)


class AdagradMomentum(Optimizer):
    """Adagrad's scaled gradient fed into heavy-ball momentum: ``v = mu v + g / (sqrt(G) + eps);
    p -= lr v``.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    momentum : float
        ``mu`` in ``[0, 1)``.
    eps, initial_accumulator_value : float
        As in :class:`Adagrad`.
    weight_decay : float
        L2 penalty, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> opt, p, g = AdagradMomentum(0.1, 0.5), {"w": np.array([1.0])}, {"w": np.array([3.0])}
    >>> p = opt.step(p, g)  # G = 9, v = 1
    >>> opt.step(p, g)["w"].round(4)  # G = 18, v = 0.5 + 3 / sqrt(18)
    array([0.7793])
    """

    name = "adagrad_momentum"
    weight_decay = _PartAttribute("decay")
    eps = _PartAttribute("accumulator")
    initial_accumulator_value = _PartAttribute("accumulator")
    momentum = _PartAttribute("heavy_ball")

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.9,
        eps: float = 1e-10,
        *,
        initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.decay = L2Penalty(weight_decay)
        self.accumulator = SquaredGradientSum(eps, initial_accumulator_value)
        self.heavy_ball = HeavyBall(momentum, slot="v")

    def _step(self, state: State, p: Array, g: Array) -> Array:
        p, g = self.decay.apply(p, g, self.lr)
        scaled = self.accumulator.scale(state, p, g)
        direction = self.heavy_ball.direction(state, p, scaled)
        return _descend(p, self.lr, direction, owned=self.heavy_ball.nesterov)


class RMSprop(Optimizer):
    """Steps scaled by a running mean of squared gradients (decay ``rho``).

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    rho : float
        Decay of the running mean, in ``[0, 1)`` (torch's ``alpha``).
    eps : float
        ``> 0``, added outside the square root.
    weight_decay : float
        L2 penalty, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> RMSprop(0.1, rho=0.75).step({"w": np.array([1.0])}, {"w": np.array([3.0])})["w"]
    array([0.8])
    """

    name = "rmsprop"
    weight_decay = _PartAttribute("decay")
    rho = _PartAttribute("mean_square")
    eps = _PartAttribute("mean_square")

    def __init__(
        self, lr: float = 0.01, rho: float = 0.9, eps: float = 1e-8, *, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr)
        self.decay = L2Penalty(weight_decay)
        self.mean_square = SquaredGradientAverage(rho, eps)

    def _step(self, state: State, p: Array, g: Array) -> Array:
        p, g = self.decay.apply(p, g, self.lr)
        return _descend(p, self.lr, g / self.mean_square.denominator(state, p, g), owned=True)


class Adam(Optimizer):
    """Adam: bias-corrected first and second moments; ``weight_decay`` is an L2 term.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    beta1, beta2 : float
        Moment decays in ``[0, 1)`` (:class:`AdamMoments`).
    eps : float
        ``> 0``, added outside the square root.
    weight_decay : float
        L2 penalty (:class:`L2Penalty`), >= 0; see :class:`AdamW` for the decoupled form.

    Examples
    --------
    >>> import numpy as np
    >>> Adam(0.1).step({"w": np.array([1.0, 1.0])}, {"w": np.array([0.5, -2.0])})["w"].round(6)
    array([0.9, 1.1])
    """

    name = "adam"
    #: The class of the weight-decay part (AdamW: :class:`DecoupledDecay`).
    decay_rule: type[L2Penalty | DecoupledDecay] = L2Penalty
    weight_decay = _PartAttribute("decay")
    beta1 = _PartAttribute("moments")
    beta2 = _PartAttribute("moments")
    eps = _PartAttribute("moments")

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        *,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.decay = self.decay_rule(weight_decay)
        self.moments = AdamMoments(beta1, beta2, eps)

    def _step(self, state: State, p: Array, g: Array) -> Array:
        decayed, g = self.decay.apply(p, g, self.lr)
        return _descend(decayed, self.lr, self.moments.direction(state, p, g), owned=True)


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p -= lr weight_decay p`` beside the Adam step.

    :class:`Adam` with :class:`DecoupledDecay` in place of the L2 term, and a default decay
    of 0.01 (as ``torch.optim.AdamW``).

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    beta1, beta2, eps : float
        As in :class:`Adam`.
    weight_decay : float
        Decoupled decay rate, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> opt = AdamW(0.1, weight_decay=0.5)
    >>> opt.step({"w": np.array([1.0, 1.0])}, {"w": np.array([0.5, -2.0])})["w"].round(6)
    array([0.85, 1.05])
    """

    name = "adamw"
    decay_rule = DecoupledDecay

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

    Examples
    --------
    >>> get_optimizer("AdamW", lr=0.01)
    AdamW(lr=0.01, weight_decay=0.01, beta1=0.9, beta2=0.999, eps=1e-08)
    >>> get_optimizer(RMSprop, rho=0.5).rho
    0.5
    >>> get_optimizer("lbfgs")
    Traceback (most recent call last):
    ...
    ValueError: optimizer must be one of 'sgd', 'momentum', ...; got 'lbfgs'
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
