"""Layers: thin holders of parameters around the functional core.

Each follows the interface of :class:`arraycnn.nn.base.Layer` (build, forward, backward,
get_config; ``params`` and ``grads``) and is registered by class name in :data:`LAYERS`.

Layouts: images NCHW; Conv2D weights ``w`` (F, C / groups, kh, kw), bias ``b`` (F,); Dense
weights ``w`` (in_features, out_features), so ``y = x @ w + b`` (the transpose of torch's
``Linear.weight``), bias ``b`` (out_features,).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import (
    backend_name,
    namespace_of,
    random_generator,
    random_uniform,
    resolve_backend,
    resolve_dtype,
)
from ..conv import conv2d, conv2d_backward
from ..conv.dispatch import describe
from ..conv.table import STRATEGIES, parse_strategy
from ..geometry import ConvGeometry, Padding, conv_geometry, pair, pool_geometry, resolve_padding
from ..pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .base import LAYERS, Layer, check_build_bytes, sample_shape
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
# convolution
# ---------------------------------------------------------------------------------------------


def _check_forced_strategy(strategy: str, w: Array, geom: ConvGeometry, xp: Any) -> None:
    """Refuse, at build, a forced ``strategy`` that cannot run the layer (its stride,
    dilation, kernel or dtype; a namespace without what it needs) rather than at the first
    forward. ``auto`` always can.

    Raises
    ------
    ValueError
        Naming the strategy and the reason.
    """
    if strategy == "auto":
        return
    chosen = STRATEGIES[strategy]
    if missing := chosen.missing(xp):
        raise ValueError(
            f"Conv2D: strategy={strategy!r} needs {', '.join(missing)}, which namespace "
            f"{xp.__name__} does not provide"
        )
    for direction in ("forward", "backward"):
        if why := chosen.why_not(describe(w, geom, xp=xp, direction=direction)):
            raise ValueError(f"Conv2D: strategy={strategy!r} cannot run this layer: {why}")


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

    Attributes
    ----------
    input_grad : bool
        True (the default): ``backward`` returns the gradient with respect to the input.
        False: it returns None and skips that part of the backward (about half of it), for
        a layer whose input gradient nobody uses (a network's first layer).

    Examples
    --------
    >>> layer = Conv2D(3, 8, 3, stride=2, padding="same")
    >>> layer.build((3, 32, 32), rng=np.random.default_rng(0))
    (8, 16, 16)
    >>> {name: p.shape for name, p in layer.params.items()}
    {'w': (8, 3, 3, 3), 'b': (8,)}
    >>> y = layer.forward(np.ones((2, 3, 32, 32), dtype=np.float32))
    >>> layer.backward(np.ones_like(y)).shape, layer.grads["w"].shape
    ((2, 3, 32, 32), (8, 3, 3, 3))
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
        self.input_grad = True
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
        """Check ``input_shape == (in_channels, H, W)`` and the bytes of the parameters and of
        one sample's output (:func:`~arraycnn.nn.base.check_build_bytes`); draw ``w``; ``b``
        zeros."""
        shape = sample_shape(input_shape, "Conv2D")
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
        dtype = resolve_dtype(space, dtype)
        f, cg, kh, kw = self.weight_shape
        params = {"w": self.weight_shape, **({"b": (f,)} if self.bias else {})}
        output = (f, geom.ho, geom.wo)
        check_build_bytes(
            "Conv2D", xp=space, device=device, dtype=dtype, params=params, output=output
        )
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
        _check_forced_strategy(self.strategy, self.params["w"], geom, space)
        self.grads = {}
        self.input_shape, self.output_shape = shape, output
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

    def backward(self, gy: Array) -> Array | None:
        """Fill ``grads``; return the input gradient (None where :attr:`input_grad` is off)."""
        x = self._need(self._x)
        needs = ("x",) * bool(self.input_grad) + ("w",) + ("b",) * self.bias
        gx, gw, gb = conv2d_backward(
            gy, x, self.params["w"], strategy=self.strategy, needs=needs, **self._geometry_kwargs()
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
        """Check ``input_shape == (C, H, W)``, that the window fits and that one sample's
        output fits the memory available."""
        owner = type(self).__name__
        shape = sample_shape(input_shape, owner)
        if len(shape) != 3:
            raise ValueError(f"{owner}: expected input shape (C, H, W), got {shape}")
        try:
            geom = pool_geometry(
                (1, *shape), self.kernel_size, stride=self.stride, padding=self.padding
            )
        except ValueError as exc:
            raise ValueError(f"{owner}: input shape {shape} does not fit: {exc}") from exc
        output = (shape[0], geom.ho, geom.wo)
        space = resolve_backend(xp)
        check_build_bytes(
            owner,
            xp=space,
            device=device,
            dtype=resolve_dtype(space, dtype),
            params={},
            output=output,
        )
        self.input_shape, self.output_shape = shape, output
        return self.output_shape

    def get_config(self) -> dict:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": None if self.stride is None else list(self.stride),
            "padding": _jsonable(self.padding),
        }


class MaxPool2D(_Pool2D):
    """Max pooling (:func:`arraycnn.pooling.max_pool2d`); ties send the gradient to the first
    maximum of each window in row-major order. (N, C, H, W) -> (N, C, Ho, Wo).

    Examples
    --------
    >>> layer = MaxPool2D(2)
    >>> layer.build((1, 2, 4))
    (1, 1, 2)
    >>> x = np.array([[[[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 2.0, 1.0]]]])  # (1, 1, 2, 4)
    >>> layer.forward(x)
    array([[[[5., 2.]]]])
    >>> layer.backward(np.ones((1, 1, 1, 2)))  # ties: the first maximum of the window
    array([[[[0., 1., 1., 0.],
             [0., 0., 0., 0.]]]])
    """

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._x = x
        return max_pool2d(x, self.kernel_size, **self._pool_kwargs())

    def backward(self, gy: Array) -> Array:
        x = self._need(self._x)
        return max_pool2d_backward(gy, x, self.kernel_size, **self._pool_kwargs())


class AvgPool2D(_Pool2D):
    """Average pooling (:func:`arraycnn.pooling.avg_pool2d`), zero padding.

    ``count_include_pad`` as in torch (default True: divide by ``kh * kw``).

    Examples
    --------
    >>> layer = AvgPool2D(2, padding=1, count_include_pad=False)
    >>> layer.build((1, 2, 2))
    (1, 2, 2)
    >>> layer.forward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))  # one input tap per window
    array([[[[1., 2.],
             [3., 4.]]]])
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
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), row-major (as ``torch.flatten(x, 1)``).

    Examples
    --------
    >>> layer = Flatten()
    >>> layer.build((2, 3, 4))
    (24,)
    >>> layer.forward(np.zeros((5, 2, 3, 4))).shape, layer.backward(np.zeros((5, 24))).shape
    ((5, 24), (5, 2, 3, 4))
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def build(self, input_shape, *, xp=None, device=None, dtype=None, rng=None):
        shape = sample_shape(input_shape, "Flatten")
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

    Examples
    --------
    >>> layer = Dense(3, 2)
    >>> layer.build((3,), dtype="float64", rng=np.random.default_rng(0))
    (2,)
    >>> layer.params["w"] = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> layer.forward(np.array([[1.0, 2.0, 3.0]]))
    array([[4., 5.]])
    >>> layer.backward(np.array([[1.0, 0.0]])), layer.grads["w"].ravel()
    (array([[1., 0., 1.]]), array([1., 0., 2., 0., 3., 0.]))
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
        """Check ``input_shape == (in_features,)`` and the bytes of the parameters
        (:func:`~arraycnn.nn.base.check_build_bytes`); draw ``w``; ``b`` zeros."""
        shape = sample_shape(input_shape, "Dense")
        if shape != (self.in_features,):
            raise ValueError(
                f"Dense: expected input shape ({self.in_features},) (in_features), got {shape}"
                + (" (add a Flatten layer before Dense)" if len(shape) > 1 else "")
            )
        space = resolve_backend(xp)
        dtype = resolve_dtype(space, dtype)
        w_shape = (self.in_features, self.out_features)
        params = {"w": w_shape, **({"b": (self.out_features,)} if self.bias else {})}
        check_build_bytes(
            "Dense",
            xp=space,
            device=device,
            dtype=dtype,
            params=params,
            output=(self.out_features,),
        )
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


class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability ``rate`` and scale the
    survivors by ``1 / (1 - rate)``; identity in inference (``training=False``).

    ``build`` takes one seed from ``rng``; masks then come from a generator native to the
    backend seeded with it (:func:`arraycnn.backend.random_generator`), so a seeded model drops
    the same units on every run.

    Examples
    --------
    >>> layer = Dropout(0.5)
    >>> layer.build((4,), rng=np.random.default_rng(0))
    (4,)
    >>> y = layer.forward(np.ones((2, 4)), training=True)
    >>> sorted(set(y.ravel().tolist()) - {0.0})  # survivors scaled by 1 / (1 - rate)
    [2.0]
    >>> layer.forward(np.ones((2, 4))).sum()  # inference: the identity
    np.float64(8.0)
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(f"Dropout: rate must be a float, got {type(rate).__name__} {rate!r}")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self._generator: Any = None
        self._xp: Any = None
        self._device: Any = None
        self._scaled_mask: Array | None = None
        self._ran = False
        self._replica_seeds: np.random.Generator | None = None

    def build(self, input_shape, *, xp=None, device=None, dtype=None, rng=None):
        shape = super().build(input_shape)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"Dropout: rng must be a numpy.random.Generator, got {type(rng).__name__}"
            )
        seed = int(rng.integers(0, 2**63 - 1))
        self._xp, self._device = resolve_backend(xp), device
        self._generator = random_generator(self._xp, seed, device=device)
        self._replica_seeds = np.random.default_rng(seed)  # host: a seed per replica made
        return shape

    def __getstate__(self) -> dict[str, Any]:
        """For pickle: the backend by name (a module cannot be pickled)."""
        xp = self._xp
        return {**self.__dict__, "_xp": None if xp is None else backend_name(xp)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        xp = state["_xp"]
        self.__dict__.update(state, _xp=None if xp is None else resolve_backend(xp))

    def replica(self, index: int) -> Dropout:
        """A copy with its own random source, seeded from this layer's (host) seed stream:
        a seeded model's replicas drop the same units on every run.

        Examples
        --------
        >>> layer = Dropout(0.5)
        >>> _ = layer.build((1000,), rng=np.random.default_rng(0))
        >>> twin = layer.replica(1)
        >>> x = np.ones((1, 1000))
        >>> bool((layer.forward(x, training=True) != twin.forward(x, training=True)).any())
        True
        """
        twin = super().replica(index)
        if self._generator is None:
            raise RuntimeError("Dropout has no random source yet: call build first")
        seed = int(self._replica_seeds.integers(0, 2**63 - 1))
        twin._generator = random_generator(self._xp, seed, device=self._device)
        twin._scaled_mask, twin._ran = None, False
        return twin

    def forward(self, x: Array, *, training: bool = False) -> Array:
        self._ran = True
        if not training or self.rate == 0.0:
            self._scaled_mask = None
            return x
        if self._generator is None:
            raise RuntimeError("Dropout has no random source yet: call build first")
        xp = namespace_of(x, names=("x",))
        u, self._generator = random_uniform(
            self._generator, tuple(x.shape), xp=self._xp, dtype=x.dtype, device=self._device
        )
        keep = u >= self.rate
        self._scaled_mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - self.rate))
        return x * self._scaled_mask

    def backward(self, gy: Array) -> Array:
        if not self._ran:
            raise RuntimeError("Dropout.backward called before forward")
        return gy if self._scaled_mask is None else gy * self._scaled_mask

    def get_config(self) -> dict:
        return {"rate": self.rate}
