"""Layers: thin holders of parameters around the functional core.

The layer interface (shared with :mod:`arraycnn.nn.model`)::

    class Layer:
        params: dict[str, Array]   # trainable arrays by name ({"w": ..., "b": ...}; {} when none)
        grads: dict[str, Array]    # same keys, filled by backward()
        def build(self, input_shape, *, xp, device=None, dtype=None, rng) -> tuple[int, ...]
        def forward(self, x, *, training=False) -> Array      # keeps what backward needs
        def backward(self, gy) -> Array                       # returns gx, fills self.grads
        def get_config(self) -> dict                          # Layer(**config) rebuilds it

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

Every subclass is registered by class name in :data:`LAYERS` (for save / load), including the
activation layers of :mod:`arraycnn.nn.activations` and user-defined subclasses; names starting
with ``_`` are not registered.

Layouts: images NCHW; Conv2D weights ``w`` (F, C / groups, kh, kw), bias ``b`` (F,); Dense
weights ``w`` (in_features, out_features), so ``y = x @ w + b`` (the transpose of torch's
``Linear.weight``), bias ``b`` (out_features,).
"""

from __future__ import annotations

import math
import operator
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import namespace_of, resolve_backend
from ..conv import conv2d, conv2d_backward
from ..conv.dispatch import parse_strategy
from ..geometry import Padding, conv_geometry, pair, pool_geometry, resolve_padding
from ..pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .init import get_initializer, zeros

__all__ = [
    "LAYERS",
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "MaxPool2D",
]

Array = Any

#: Every layer class by class name (filled as subclasses are defined).
LAYERS: dict[str, type[Layer]] = {}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Tuples (nested) -> lists, so a config survives ``json.dumps`` / ``json.loads`` unchanged."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _positive_int(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: {name} must be positive, got {value}")
    return int(value)


def _per_sample_shape(input_shape: Any, owner: str) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints (the per-sample shape, no batch axis)."""
    try:
        shape = tuple(operator.index(s) for s in input_shape)
    except TypeError:
        raise TypeError(
            f"{owner}: input_shape must be a tuple of ints, got {input_shape!r}"
        ) from None
    if any(s < 1 for s in shape):
        raise ValueError(f"{owner}: input_shape must have positive sizes, got {shape}")
    return shape


def _resolve_dtype(xp: ModuleType, dtype: Any) -> Any:
    if dtype is None:
        return xp.float32
    if isinstance(dtype, str):
        try:
            return getattr(xp, dtype)
        except AttributeError:
            raise ValueError(f"dtype {dtype!r} is not a dtype of {xp.__name__}") from None
    return dtype


def _check_bias_flag(bias: Any, owner: str) -> bool:
    if not isinstance(bias, bool):
        raise TypeError(f"{owner}: bias must be True or False, got {bias!r}")
    return bias


def _check_input_rank(x: Array, ndim: int, letters: str, owner: str) -> None:
    if x.ndim != ndim:
        raise ValueError(
            f"{owner}: expected a {ndim}-D batch ({letters}), got shape {tuple(x.shape)}"
        )


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------


class Layer:
    """Base class of all layers (see the module docstring for the interface).

    Subclasses call ``super().__init__()`` and override ``forward`` / ``backward`` and, when
    they have parameters or constructor arguments, ``build`` / ``get_config``.
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
        shape = _per_sample_shape(input_shape, type(self).__name__)
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


# ---------------------------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------------------------


class Conv2D(Layer):
    """2-D convolution layer (cross-correlation, as ``torch.nn.Conv2d``).

    Parameters
    ----------
    in_channels, out_channels : int
        C and F.
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid", "same" or "full"
    groups : int
        Divides ``in_channels`` and ``out_channels``.
    bias : bool
        Learn a bias ``b`` (F,) (initialised to zeros).
    strategy : {"auto", "naive", "separable", "im2col", "fft"}
        Passed to :func:`arraycnn.conv2d` and :func:`arraycnn.conv2d_backward`.
    init : str
        Weight initialiser name (:data:`arraycnn.nn.init.INITIALIZERS`), default He normal with
        ``fan_in = C/groups * kh * kw`` and ``fan_out = F/groups * kh * kw``.

    Shapes: input (N, C, H, W) -> output (N, F, Ho, Wo); ``params = {"w": (F, C/groups, kh,
    kw), "b": (F,)}``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        *,
        stride: Any = 1,
        padding: Padding = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        strategy: str = "auto",
        init: str = "he",
    ) -> None:
        super().__init__()
        owner = "Conv2D"
        self.in_channels = _positive_int(in_channels, "in_channels", owner)
        self.out_channels = _positive_int(out_channels, "out_channels", owner)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.groups = _positive_int(groups, "groups", owner)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{owner}: groups={self.groups} must divide in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )
        # the form of padding is checked now; whether it fits is checked by build
        resolve_padding(padding, self.kernel_size, self.kernel_size, self.stride, self.dilation)
        self.padding = padding
        self.bias = _check_bias_flag(bias, owner)
        self.strategy = parse_strategy(strategy)
        self.init = init
        self._initializer = get_initializer(init)
        self._x: Array | None = None

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """``(F, C / groups, kh, kw)``."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _geometry_kwargs(self) -> dict:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def build(self, input_shape, *, xp=None, device=None, dtype=None, rng=None):
        """Check ``input_shape == (in_channels, H, W)``; draw ``w``; ``b`` zeros."""
        shape = _per_sample_shape(input_shape, "Conv2D")
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(
                f"Conv2D: expected input shape (C, H, W) with C = in_channels = "
                f"{self.in_channels}, got {shape}"
            )
        try:
            geom = conv_geometry((1, *shape), self.weight_shape, **self._geometry_kwargs())
        except ValueError as exc:
            raise ValueError(f"Conv2D: input shape {shape} does not fit: {exc}") from exc
        space = resolve_backend(xp)
        dtype = _resolve_dtype(space, dtype)
        f, cg, kh, kw = self.weight_shape
        self.params = {
            "w": self._initializer(
                self.weight_shape,
                rng=rng,
                xp=space,
                device=device,
                dtype=dtype,
                fan_in=cg * kh * kw,
                fan_out=(f // self.groups) * kh * kw,
            )
        }
        if self.bias:
            self.params["b"] = zeros((f,), xp=space, device=device, dtype=dtype)
        self.grads = {}
        self.input_shape, self.output_shape = shape, (f, geom.ho, geom.wo)
        return self.output_shape

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._need_params()
        _check_input_rank(x, 4, "N, C, H, W", "Conv2D")
        self._x = x
        return conv2d(
            x,
            self.params["w"],
            self.params.get("b"),
            strategy=self.strategy,
            **self._geometry_kwargs(),
        )

    def backward(self, gy: Array) -> Array:
        x = self._need(self._x)
        gx, gw, gb = conv2d_backward(
            gy, x, self.params["w"], strategy=self.strategy, **self._geometry_kwargs()
        )
        self.grads = {"w": gw, "b": gb} if self.bias else {"w": gw}
        return gx

    def get_config(self) -> dict:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": _jsonable(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self.bias,
            "strategy": self.strategy,
            "init": self.init,
        }


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------


class _Pool2D(Layer):
    """Shared argument handling of the pooling layers."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Padding = 0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = None if stride is None else pair(stride, "stride")
        # the form and size of padding are checked now, on a window-sized dummy input
        big = 4 * max(self.kernel_size) + 4
        pool_geometry((1, 1, big, big), self.kernel_size, stride=self.stride, padding=padding)
        self.padding = padding
        self._x: Array | None = None

    def _pool_kwargs(self) -> dict:
        return {"stride": self.stride, "padding": self.padding}

    def build(self, input_shape, *, xp=None, device=None, dtype=None, rng=None):
        """Check ``input_shape == (C, H, W)`` and that the window fits."""
        owner = type(self).__name__
        shape = _per_sample_shape(input_shape, owner)
        if len(shape) != 3:
            raise ValueError(f"{owner}: expected input shape (C, H, W), got {shape}")
        try:
            geom = pool_geometry(
                (1, *shape), self.kernel_size, stride=self.stride, padding=self.padding
            )
        except ValueError as exc:
            raise ValueError(f"{owner}: input shape {shape} does not fit: {exc}") from exc
        self.input_shape, self.output_shape = shape, (shape[0], geom.ho, geom.wo)
        return self.output_shape

    def get_config(self) -> dict:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": None if self.stride is None else list(self.stride),
            "padding": _jsonable(self.padding),
        }


class MaxPool2D(_Pool2D):
    """Max pooling (:func:`arraycnn.pooling.max_pool2d`); ties send the gradient to the first
    maximum of each window in row-major order. (N, C, H, W) -> (N, C, Ho, Wo)."""

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._x = x
        return max_pool2d(x, self.kernel_size, **self._pool_kwargs())

    def backward(self, gy: Array) -> Array:
        x = self._need(self._x)
        return max_pool2d_backward(gy, x, self.kernel_size, **self._pool_kwargs())


class AvgPool2D(_Pool2D):
    """Average pooling (:func:`arraycnn.pooling.avg_pool2d`), zero padding.

    ``count_include_pad`` as in torch (default True: divide by ``kh * kw``).
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Padding = 0,
        *,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        if not isinstance(count_include_pad, bool):
            raise TypeError(
                f"AvgPool2D: count_include_pad must be True or False, got {count_include_pad!r}"
            )
        self.count_include_pad = count_include_pad

    def _pool_kwargs(self) -> dict:
        return {**super()._pool_kwargs(), "count_include_pad": self.count_include_pad}

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._x = x
        return avg_pool2d(x, self.kernel_size, **self._pool_kwargs())

    def backward(self, gy: Array) -> Array:
        x = self._need(self._x)
        return avg_pool2d_backward(gy, x, self.kernel_size, **self._pool_kwargs())

    def get_config(self) -> dict:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


# ---------------------------------------------------------------------------------------------
# reshaping and dense
# ---------------------------------------------------------------------------------------------


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), row-major (as ``torch.flatten(x, 1)``)."""

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def build(self, input_shape, *, xp=None, device=None, dtype=None, rng=None):
        shape = _per_sample_shape(input_shape, "Flatten")
        if not shape:
            raise ValueError("Flatten: expected at least one axis per sample, got ()")
        self.input_shape, self.output_shape = shape, (math.prod(shape),)
        return self.output_shape

    def forward(self, x: Array, *, training: bool = False) -> Array:
        xp = namespace_of(x, names=("x",))
        if x.ndim < 2:
            raise ValueError(f"Flatten: expected a batch (N, ...), got shape {tuple(x.shape)}")
        self._shape = tuple(x.shape)
        # (N, d1, d2, ...) -> (N, d1*d2*...)
        return xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def backward(self, gy: Array) -> Array:
        shape = self._need(self._shape)
        xp = namespace_of(gy, names=("gy",))
        # (N, d1*d2*...) -> (N, d1, d2, ...)
        return xp.reshape(gy, shape)


class Dense(Layer):
    """Fully connected layer ``y = x @ w + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        Learn a bias ``b`` (out_features,) (initialised to zeros).
    init : str
        Weight initialiser name, default Glorot uniform (``fan_in = in_features``,
        ``fan_out = out_features``).

    Shapes: input (N, in_features) -> (N, out_features); ``params = {"w": (in_features,
    out_features), "b": (out_features,)}``.
    """

    def __init__(
        self, in_features: int, out_features: int, *, bias: bool = True, init: str = "glorot"
    ) -> None:
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Dense")
        self.out_features = _positive_int(out_features, "out_features", "Dense")
        self.bias = _check_bias_flag(bias, "Dense")
        self.init = init
        self._initializer = get_initializer(init)
        self._x: Array | None = None

    def build(self, input_shape, *, xp=None, device=None, dtype=None, rng=None):
        """Check ``input_shape == (in_features,)``; draw ``w``; ``b`` zeros."""
        shape = _per_sample_shape(input_shape, "Dense")
        if shape != (self.in_features,):
            raise ValueError(
                f"Dense: expected input shape ({self.in_features},) (in_features), got {shape}"
                + (" (add a Flatten layer before Dense)" if len(shape) > 1 else "")
            )
        space = resolve_backend(xp)
        dtype = _resolve_dtype(space, dtype)
        w_shape = (self.in_features, self.out_features)
        self.params = {
            "w": self._initializer(w_shape, rng=rng, xp=space, device=device, dtype=dtype)
        }
        if self.bias:
            self.params["b"] = zeros((self.out_features,), xp=space, device=device, dtype=dtype)
        self.grads = {}
        self.input_shape, self.output_shape = shape, (self.out_features,)
        return self.output_shape

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._need_params()
        namespace_of(x, self.params["w"], names=("x", "w"))
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Dense: expected input (N, {self.in_features}), got shape {tuple(x.shape)}"
            )
        self._x = x
        y = x @ self.params["w"]  # (N, in) @ (in, out) -> (N, out)
        if self.bias:
            y = y + self.params["b"]
        return y

    def backward(self, gy: Array) -> Array:
        x = self._need(self._x)
        xp = namespace_of(gy, x, names=("gy", "x"))
        w = self.params["w"]
        gw = xp.matrix_transpose(x) @ gy  # (in, N) @ (N, out) -> (in, out)
        self.grads = {"w": gw, "b": xp.sum(gy, axis=0)} if self.bias else {"w": gw}
        return gy @ xp.matrix_transpose(w)  # (N, out) @ (out, in) -> (N, in)

    def get_config(self) -> dict:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "init": self.init,
        }


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------


class _UniformSource:
    """Reproducible uniform [0, 1) draws on a backend, from one integer seed.

    Native generators where the library has one: NumPy ``Generator(PCG64)``, ``torch.Generator``
    on the device, ``cupy.random.default_rng``, ``jax.random`` keys (split per call). Other
    namespaces (array-api-strict, dask) draw on the host with NumPy and move the mask with
    ``xp.asarray(..., device=)``: a documented host round trip of one mask per call.
    """

    def __init__(self, xp: ModuleType, device: Any, seed: int) -> None:
        from ..backend import backend_name

        self.xp, self.device, self.kind = xp, device, backend_name(xp)
        if self.kind == "torch":
            import torch

            self._gen = torch.Generator(device=device if device is not None else "cpu")
            self._gen.manual_seed(seed)
        elif self.kind == "cupy":  # pragma: no cover - needs a GPU
            import cupy

            self._gen = cupy.random.default_rng(seed)
        elif self.kind == "jax":  # pragma: no cover - jax not installed in CI
            import jax

            self._gen = jax.random.key(seed)
        else:
            self._gen = np.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """Uniform [0, 1) of ``shape`` and ``dtype`` on the source's device."""
        if self.kind == "torch":
            import torch

            return torch.rand(shape, generator=self._gen, dtype=dtype, device=self._gen.device)
        if self.kind == "cupy":  # pragma: no cover - needs a GPU
            return self._gen.random(shape, dtype=dtype)
        if self.kind == "jax":  # pragma: no cover - jax not installed in CI
            import jax

            self._gen, key = jax.random.split(self._gen)
            return jax.random.uniform(key, shape, dtype=dtype)
        host = self._gen.random(shape)
        if self.kind == "numpy":
            return host.astype(dtype, copy=False)
        return self.xp.asarray(host, dtype=dtype, device=self.device)


class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability ``rate`` and scale the
    survivors by ``1 / (1 - rate)``; identity in inference (``training=False``).

    ``build`` takes one seed from ``rng``; masks then come from a backend generator seeded with
    it (see :class:`_UniformSource`), so a seeded model drops the same units on every run.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(f"Dropout: rate must be a float, got {type(rate).__name__} {rate!r}")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self._source: _UniformSource | None = None
        self._scaled_mask: Array | None = None
        self._ran = False

    def build(self, input_shape, *, xp=None, device=None, dtype=None, rng=None):
        shape = super().build(input_shape)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"Dropout: rng must be a numpy.random.Generator, got {type(rng).__name__}"
            )
        seed = int(rng.integers(0, 2**63 - 1))
        self._source = _UniformSource(resolve_backend(xp), device, seed)
        return shape

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._ran = True
        if not training or self.rate == 0.0:
            self._scaled_mask = None
            return x
        if self._source is None:
            raise RuntimeError("Dropout has no random source yet: call build first")
        xp = namespace_of(x, names=("x",))
        keep = self._source.uniform(tuple(x.shape), x.dtype) >= self.rate
        self._scaled_mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - self.rate))
        return x * self._scaled_mask

    def backward(self, gy: Array) -> Array:
        if not self._ran:
            raise RuntimeError("Dropout.backward called before forward")
        return gy if self._scaled_mask is None else gy * self._scaled_mask

    def get_config(self) -> dict:
        return {"rate": self.rate}


# the activation layers register themselves in LAYERS when their module is imported
from . import activations as _activations  # noqa: E402, F401
