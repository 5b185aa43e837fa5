"""The layer interface: the :class:`Layer` base class and the :data:`LAYERS` registry.

Its own module so that :mod:`arraycnn.nn.layers` and :mod:`arraycnn.nn.activations` both build
on it without importing each other. The interface::

    class Layer:
        params: dict[str, Array]   # trainable arrays by name ({"w": ..., "b": ...}; {} when none)
        grads: dict[str, Array]    # same keys, filled by backward()
        def build(self, input_shape, *, xp, device=None, dtype=None, rng) -> tuple[int, ...]
        def forward(self, x, *, training=False) -> Array      # keeps what backward needs
        def backward(self, gy) -> Array                       # returns gx, fills self.grads
        def get_config(self) -> dict                          # Layer(**config) rebuilds it
        def replica(self, index) -> Layer                     # a copy for a worker thread

* ``build`` takes the per-sample input shape (WITHOUT the batch axis), validates it, allocates
  the parameters on ``xp`` / ``device`` / ``dtype`` and returns the per-sample output shape. A
  shape that does not fit raises ``ValueError("<Layer>: expected ... got ...")``. ``xp`` is a
  namespace or a backend name; ``dtype=None`` means ``float32``; a dtype name is accepted.
  Weights are drawn on the host from the NumPy Generator ``rng`` and moved once (see
  :mod:`arraycnn.nn.init`). Layers without parameters accept ``rng=None``.
* ``forward`` reads ``self.params`` on every call, so an optimizer may replace the arrays in
  ``params`` (same keys) between steps.
* ``backward(gy)`` returns the gradient of ``sum(gy * y)`` with respect to the input ``x`` of
  the last ``forward`` and stores the gradient for each parameter in ``self.grads``. Calling it
  before ``forward`` raises RuntimeError.
* ``get_config`` returns JSON-serialisable constructor arguments (tuples become lists).
* ``replica(index)`` returns a copy that shares ``params`` and keeps its own ``grads`` and
  forward state, for worker thread ``index`` of a sharded batch (``fit(..., workers=k)``,
  :mod:`arraycnn.nn.parallel`); the base class's shallow copy suits layers that assign their
  state in ``forward``.
* ``build`` computes the bytes of its parameters and of one sample's output first
  (:func:`check_build_bytes`) and raises :class:`~arraycnn.budget.WorkspaceError` when either
  exceeds the memory available (:func:`arraycnn.budget.check_size`), before allocating. (The
  workspace budget bounds a convolution's temporaries, not parameters or results.)

Every subclass is registered by class name in :data:`LAYERS` (for save / load), the layers of
:mod:`arraycnn.nn.layers` and :mod:`arraycnn.nn.activations` as well as user-defined
subclasses; names starting with ``_`` are not registered.
"""

from __future__ import annotations

import copy
import math
import operator
from types import ModuleType
from typing import Any

import numpy as np

from ..budget import check_size, memory_limit

__all__ = [
    "LAYERS",
    "Layer",
    "backward_through",
    "check_build_bytes",
    "forward_through",
    "sample_shape",
]

Array = Any

#: Every layer class by class name (filled as subclasses are defined).
LAYERS: dict[str, type[Layer]] = {}


def sample_shape(input_shape: Any, owner: str) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints (the per-sample shape, no batch axis).

    Raises
    ------
    TypeError
        If ``input_shape`` is not a sequence of integers (the message names ``owner``).
    ValueError
        If a size is not positive.

    Examples
    --------
    >>> sample_shape([1, np.int64(28), 28], "Conv2D")
    (1, 28, 28)
    >>> sample_shape((3, 0), "Dense")
    Traceback (most recent call last):
    ...
    ValueError: Dense: input_shape must have positive sizes, got (3, 0)
    """
    try:
        shape = tuple(operator.index(s) for s in input_shape)
    except TypeError:
        raise TypeError(
            f"{owner}: input_shape must be a tuple of ints, got {input_shape!r}"
        ) from None
    if any(s < 1 for s in shape):
        raise ValueError(f"{owner}: input_shape must have positive sizes, got {shape}")
    return shape


def check_build_bytes(
    owner: str,
    *,
    xp: ModuleType,
    device: Any,
    dtype: Any,
    params: dict[str, tuple[int, ...]],
    output: tuple[int, ...],
) -> int:
    """Bytes of a layer's parameters ``params`` (shapes by name) in ``dtype``, checked with one
    sample's ``output`` against the memory available before anything is allocated.

    Returns
    -------
    int
        The parameters' bytes (Python int: no overflow for any shape).

    Raises
    ------
    TypeError
        If ``dtype`` is not a real floating dtype of ``xp``.
    WorkspaceError
        If the parameters, or one sample's output, exceed the memory available
        (:func:`arraycnn.budget.memory_limit`); the message names ``owner`` and the sizes.

    Examples
    --------
    >>> check_build_bytes("Dense", xp=np, device="cpu", dtype=np.float32,
    ...                   params={"w": (3, 2), "b": (2,)}, output=(2,))
    32
    >>> check_build_bytes("Dense", xp=np, device="cpu", dtype=np.float32,
    ...                   params={"w": (10**6, 10**6)}, output=(10**6,))
    Traceback (most recent call last):
    ...
    arraycnn.budget.WorkspaceError: Dense: the parameters ... needs 4000000000000 bytes ...
    """
    if not xp.isdtype(dtype, "real floating"):
        raise TypeError(f"{owner}: dtype must be a real floating dtype, got {dtype}")
    bits = xp.finfo(dtype).bits
    itemsize = bits // 8
    limit = memory_limit(xp, device)
    param_bytes = sum(math.prod(shape) for shape in params.values()) * itemsize
    check_size(param_bytes, lambda: f"{owner}: the parameters {params} of float{bits}", limit=limit)
    check_size(
        math.prod(output) * itemsize,
        lambda: f"{owner}: one sample's output {output} of float{bits}",
        limit=limit,
    )
    return param_bytes


class Layer:
    """Base class of all layers (see the module docstring for the interface).

    Subclasses call ``super().__init__()`` and override ``forward`` / ``backward`` and, when
    they have parameters or constructor arguments, ``build`` / ``get_config``.

    Attributes
    ----------
    params, grads : dict[str, array]
        Trainable arrays and their gradients by name (empty for parameter-free layers).
    input_shape, output_shape : tuple of int or None
        Per-sample shapes, set by :meth:`build`.

    Examples
    --------
    >>> class Double(Layer):
    ...     def forward(self, x, *, training=False):
    ...         return 2 * x
    ...     def backward(self, gy):
    ...         return 2 * gy
    >>> layer = Double()
    >>> layer.build((3,)), layer.built, LAYERS["Double"] is Double
    ((3,), True, True)
    >>> layer.forward(np.ones((1, 3)))
    array([[2., 2., 2.]])
    """

    params: dict[str, Array]
    grads: dict[str, Array]

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            LAYERS[cls.__name__] = cls

    @property
    def built(self) -> bool:
        """True once :meth:`build` succeeded."""
        return self.output_shape is not None

    def build(
        self,
        input_shape: tuple[int, ...],
        *,
        xp: Any = None,
        device: Any = None,
        dtype: Any = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[int, ...]:
        """Validate ``input_shape`` and allocate parameters; return the output shape.

        The base implementation (for shape-preserving, parameter-free layers) only checks that
        ``input_shape`` is a tuple of positive ints and returns it.
        """
        shape = sample_shape(input_shape, type(self).__name__)
        self.input_shape = self.output_shape = shape
        return shape

    def forward(self, x: Array, *, training: bool = False) -> Array:
        """Output for the batch ``x``; keeps what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, gy: Array) -> Array:
        """Gradient with respect to the last input; fills :attr:`grads`."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """Constructor keyword arguments, JSON-serialisable."""
        return {}

    def replica(self, index: int) -> Layer:
        """A copy of this built layer for worker thread ``index`` (>= 1) of a sharded batch
        (:mod:`arraycnn.nn.parallel`): the same ``params`` dict (an optimizer's update reaches
        every replica), its own ``grads`` and forward state.

        The default is a shallow copy, right for layers that keep their forward state in
        attributes assigned by ``forward``, as the interface asks. A layer with a random
        source overrides it to give each replica its own (:class:`~arraycnn.nn.layers.Dropout`).

        Examples
        --------
        >>> from arraycnn.nn import Dense
        >>> layer = Dense(3, 2)
        >>> _ = layer.build((3,), rng=np.random.default_rng(0))
        >>> twin = layer.replica(1)
        >>> twin.params is layer.params, twin.grads is layer.grads
        (True, False)
        """
        twin = copy.copy(self)
        twin.grads = {}
        return twin

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def _need(self, saved: Any) -> Any:
        if saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return saved

    def _need_params(self) -> None:
        if not self.params:
            raise RuntimeError(f"{type(self).__name__} has no parameters yet: call build first")


def forward_through(
    layers: list[Any], x: Array, *, training: bool = False, stop: int | None = None
) -> Array:
    """Run ``layers[:stop]`` in order on ``x`` (the forward pass of
    :class:`~arraycnn.nn.model.Sequential` and of its thread replicas).

    Examples
    --------
    >>> class Double(Layer):
    ...     def forward(self, x, *, training=False):
    ...         return 2 * x
    >>> forward_through([Double(), Double(), Double()], np.ones(2), stop=-1)
    array([4., 4.])
    """
    for layer in layers[:stop]:
        x = layer.forward(x, training=training)
    return x


def backward_through(
    layers: list[Any], gy: Array, *, stop: int | None = None, input_grad: bool = True
) -> Array | None:
    """Back-propagate ``gy`` through ``layers[:stop]`` in reverse, filling their grads; the
    first layer skips its input gradient where ``input_grad`` is False and it can (a
    Conv2D's ``input_grad``).

    Examples
    --------
    >>> class Double(Layer):
    ...     def backward(self, gy):
    ...         return 2 * gy
    >>> backward_through([Double(), Double()], np.ones(2))
    array([4., 4.])
    """
    layers = layers[:stop]
    if layers and hasattr(layers[0], "input_grad"):
        layers[0].input_grad = input_grad
    for layer in reversed(layers):
        gy = layer.backward(gy)
    return gy
