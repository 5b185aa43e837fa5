"""Public 2-D convolution: ``conv2d``, ``conv2d_backward``, ``choose_strategy``.

Semantics are those of ``torch.nn.functional.conv2d``: cross-correlation, NCHW input
(N, C, H, W), weights (F, C / groups, kh, kw), optional bias (F,). Results have the
input's namespace, device and dtype.

Strategy choice, memory budget, autotuning and the treatment of NaN/Inf are those of
:mod:`arraycnn.conv.dispatch`; a call over the workspace budget runs on batch chunks (or
bands of output rows) there. Results larger than the available memory are refused before
anything is allocated (:func:`arraycnn.budget.check_size`).

torch autograd: where an input requires grad and grad mode is on, ``conv2d`` (and
``conv2d_backward``) are recorded as one node of the graph whose backward runs
:func:`conv2d_backward` (and, for second derivatives, ``conv2d`` and ``conv2d_backward``
again); otherwise they run without recording anything, so results never carry a
``grad_fn`` of the library's work buffers.

JAX: both functions work under ``jax.jit`` (and ``vmap``, ``grad``). Traced arrays have no
readable values, so the value-dependent checks are skipped for them: traced inputs are taken
as finite (a forced ``"fft"`` is not refused for NaN/Inf, and ``auto`` may pick FFT, which
spreads a NaN over the whole output), ``auto`` never picks ``"separable"`` (the kernel's
rank cannot be read; a forced ``"separable"`` uses every rank-1 term), ``autotune`` is off
(traced calls cannot be timed) and nothing traced is cached. Where an input is traced, each
call is one ``jax.custom_vjp`` function whose VJP is :func:`conv2d_backward` (reverse mode,
also reverse over reverse; JAX's forward mode, e.g. ``jax.jacfwd``, cannot differentiate a
custom_vjp function and raises JAX's TypeError saying so).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from types import ModuleType
from typing import Any

from .. import dask_arrays
from ..backend import device_of, devices_differ, graph_call, no_graph, resolve_backend
from ..budget import WorkspaceError, check_size, itemsize, set_workspace_limit
from ..geometry import ConvGeometry, Padding, conv_geometry
from ..settings import set_autotune
from ._boundary import check_float_pair, in_native_order, prepare, same_dtype
from ._complex import embed_channels, embed_weights, fold_channels, fold_weight_grad, is_complex
from .dispatch import (
    GRADIENT_NAMES,
    STRATEGIES,
    STRATEGY_NAMES,
    Plan,
    eligible_strategies,
    parse_needs,
    plan,
    run_backward,
    run_forward,
)
from .explanation import explain

__all__ = [
    "CAPABILITIES",
    "STRATEGY_NAMES",
    "WorkspaceError",
    "available_strategies",
    "choose_strategy",
    "conv2d",
    "conv2d_backward",
    "explain",
    "set_autotune",
    "set_workspace_limit",
]

Array = Any

#: What each strategy supports and needs, by name (``needs``, ``exact_sums``, ``nan_local``).
CAPABILITIES = STRATEGIES


def conv2d(
    x: Array,
    w: Array,
    b: Array | None = None,
    /,
    *,
    stride: Any = 1,
    padding: Padding = 0,
    dilation: Any = 1,
    groups: int = 1,
    strategy: str = "auto",
    autotune: bool | None = None,
) -> Array:
    """2-D cross-correlation of a batch of images with a bank of filters.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Input, real or complex floating.
    w : array, shape (F, C / groups, kh, kw)
        Filters, same dtype, namespace and device as ``x``. Complex data is convolved as
        torch's complex ``conv2d`` does (no conjugation), computed as one real convolution
        of twice the channels (:mod:`arraycnn.conv._complex`), so every strategy serves it.
    b : array, shape (F,), optional
        Bias added to each output channel.
    stride, dilation : int or (int, int)
        Positive.
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid", "same" or "full"
        Zero padding. ``"same"`` gives output ``ceil(H / sh)`` (extra padding at the end,
        as TensorFlow); ``"full"`` pads ``d (k - 1)`` on each side.
    groups : int
        Channel groups; divides C and F.
    strategy : {"auto", "naive", "separable", "im2col", "fft"}
        ``auto`` picks the fastest predicted (or measured) strategy that fits the workspace
        budget, never FFT for non-finite input; a forced strategy never falls back.
    autotune : bool or None
        As ``measure=True`` of :func:`scipy.signal.choose_conv_method`: if True, run and
        time the candidate strategies on the first call of this signature and use the
        fastest (kept in memory and in the user cache); if False, predict the fastest with
        the cost model. None: :func:`set_autotune` or env ``ARRAYCNN_AUTOTUNE``, and where
        neither is set, True on an accelerator (CuPy, torch CUDA) whose backend ``arraycnn
        tune`` has not fitted (the shipped constants are CPU figures; cuDNN users expect
        ``cudnn.benchmark``), False elsewhere. ``auto`` only. Ignored for traced JAX arrays
        (module docstring).

    Returns
    -------
    array, shape (N, F, Ho, Wo)
        ``Ho = floor((H + pt + pb - dh (kh - 1) - 1) / sh) + 1``, likewise ``Wo``.

    Raises
    ------
    ValueError, TypeError
        Bad arguments, naming the argument and the offending value.
    WorkspaceError
        The output (with the workspace) exceeds the available memory, or no strategy's
        workspace fits the budget even for one output row of one sample.

    Notes
    -----
    Under ``jax.jit`` the NaN/Inf checks and separable's rank are skipped (traced values
    cannot be read; module docstring) and ``jax.grad`` runs :func:`conv2d_backward`.

    ``auto`` predicts each strategy's time with a small cost model (five constants per
    backend, :mod:`arraycnn.conv.cost`). On the reference layers and filters its picks cost
    at most about 1.15 times the fastest strategy's time, and 1.03 times in the geometric
    mean; where that margin matters, measure (``autotune=True``).

    Examples
    --------
    >>> import numpy as np
    >>> import arraycnn as ac
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> ac.conv2d(x, w)[0, 0]
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]])
    >>> ac.conv2d(x, w, padding="same", stride=2, strategy="naive").shape
    (1, 1, 2, 2)
    """
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if dask_arrays.is_dask_array(x):  # lazy, block by block (arraycnn.dask_arrays)
        options = {"strategy": strategy, "autotune": autotune}
        return dask_arrays.conv2d(conv2d, x, w, b, **geometry, **options)
    xp, geom = prepare(x, w, **geometry, extra=(("b", b),) if b is not None else ())
    if b is not None:
        _check_bias(b, w, geom, xp)
        b = in_native_order(b)
    x, w = in_native_order(x), in_native_order(w)
    if is_complex(w, xp):  # the real embedding: one real convolution, 2C in, 2F out
        y = conv2d(
            embed_channels(x, geom.groups, xp=xp),
            embed_weights(w, geom.groups, xp=xp),
            stride=stride, padding=padding, dilation=dilation, groups=groups,
            strategy=strategy, autotune=autotune,
        )  # fmt: skip
        y = fold_channels(y, geom.groups, xp=xp)  # (N, 2F, Ho, Wo) -> complex (N, F, Ho, Wo)
        return y if b is None else y + xp.reshape(b, (1, geom.f, 1, 1))  # (F,) -> (1, F, 1, 1)
    results = math.prod(geom.y_shape) * itemsize(w.dtype, xp) * (2 if b is not None else 1)
    check_size(results, lambda: _what("conv2d", geom, w), xp, device_of(w))
    options = {"strategy": strategy, "autotune": autotune}

    def forward(x: Array, w: Array, b: Array | None) -> Array:
        chosen = plan(strategy, w, geom, xp=xp, x=x, direction="forward", autotune=autotune)
        _check_with_workspace(chosen, "conv2d", results, geom, w, xp)
        y = run_forward(chosen, x, w, xp=xp)
        return y if b is None else y + xp.reshape(b, (1, geom.f, 1, 1))  # (F,) -> (1, F, 1, 1)

    def backward(needs, grads, inputs) -> tuple[Array | None, ...]:
        (gy,), (x, w, _) = grads, inputs
        wanted = tuple(name for name, need in zip(GRADIENT_NAMES, needs) if need)
        return conv2d_backward(gy, x, w, **geometry, **options, needs=wanted)

    return graph_call(xp, forward, backward, x, w, b)


def _what(func: str, geom: ConvGeometry, w: Array, workspace: int | None = None) -> str:
    """The subject of a size error: ``conv2d: the output (N, F, Ho, Wo) = (...) of float32``
    (``conv2d_backward``: the gradients of x), with the workspace where one is planned."""
    if func == "conv2d":
        what = f"{func}: the output (N, F, Ho, Wo) = {geom.y_shape} of {w.dtype}"
    else:
        what = f"{func}: the gradients (gx, gw, gb) of x {geom.x_shape} of {w.dtype}"
    return what if workspace is None else f"{what} with a workspace of {workspace} bytes"


def _check_with_workspace(chosen: Plan, func: str, results: int, geom, w, xp) -> None:
    """Results (twice where the pieces are assembled) and the plan's workspace must fit the
    memory together."""
    total = results * (2 if chosen.chunked else 1) + chosen.bytes
    check_size(total, lambda: _what(func, geom, w, chosen.bytes), xp, device_of(w))


def _check_bias(b: Array, w: Array, geom: ConvGeometry, xp: ModuleType) -> None:
    if tuple(b.shape) != (geom.f,):
        raise ValueError(f"b must have shape (F,) = ({geom.f},), got {tuple(b.shape)}")
    if not same_dtype(b, w):
        raise TypeError(f"b ({b.dtype}) must have the dtype of w ({w.dtype})")
    if devices_differ(b, w):
        raise ValueError(f"b is on device {device_of(b)} but w is on {device_of(w)}")


def conv2d_backward(
    gy: Array,
    x: Array,
    w: Array,
    /,
    *,
    stride: Any = 1,
    padding: Padding = 0,
    dilation: Any = 1,
    groups: int = 1,
    strategy: str = "auto",
    autotune: bool | None = None,
    needs: Collection[str] = GRADIENT_NAMES,
) -> tuple[Array | None, Array | None, Array | None]:
    """Gradients of ``sum(gy * conv2d(x, w, b))`` with respect to x, w and b.

    Parameters
    ----------
    gy : array, shape (N, F, Ho, Wo)
        Gradient of the loss with respect to the convolution's output.
    x, w, stride, padding, dilation, groups, strategy, autotune
        As in :func:`conv2d` (the backward is planned, tuned and cached on its own).
    needs : collection of {"x", "w", "b"}
        The gradients to compute (as torch's ``needs_input_grad``): the others are None
        and cost nothing. A backward without the input gradient (a network's first layer)
        is planned on its own, without that phase; an empty collection returns three
        Nones.

    Returns
    -------
    gx : array, shape (N, C, H, W), or None
    gw : array, shape (F, C / groups, kh, kw), or None
    gb : array, shape (F,), or None

    For complex data the gradients are those torch autograd gives for its complex
    ``conv2d`` (``dL/dRe + i dL/dIm`` of a real loss L, with ``gy`` given the same way):
    ``gx`` convolves ``gy`` with ``conj(w)`` transposed, ``gw`` correlates ``conj(x)``
    with ``gy``.

    Raises
    ------
    ValueError, TypeError, WorkspaceError
        As :func:`conv2d`; ``gy`` must have the output's shape, dtype and device, and
        ``needs`` hold only names from ``("x", "w", "b")``.

    Examples
    --------
    >>> import numpy as np
    >>> import arraycnn as ac
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = ac.conv2d_backward(np.ones((1, 1, 3, 3)), x, w)
    >>> gw[0, 0]  # each tap sums the 3x3 inputs it met
    array([[45., 54.],
           [81., 90.]])
    >>> gb
    array([9.])
    >>> ac.conv2d_backward(np.ones((1, 1, 3, 3)), x, w, needs=("w",))[0] is None
    True
    """
    if dask_arrays.is_dask_array(x) or dask_arrays.is_dask_array(gy):  # arraycnn.dask_arrays
        geometry = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        options = {"strategy": strategy, "autotune": autotune, "needs": needs}
        return dask_arrays.conv2d_backward(conv2d_backward, gy, x, w, **geometry, **options)
    wanted = parse_needs(needs)
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    xp, geom = prepare(x, w, **geometry, extra=(("gy", gy),))
    if tuple(gy.shape) != geom.y_shape:
        raise ValueError(
            f"gy must have the output shape (N, F, Ho, Wo) = {geom.y_shape}, got {tuple(gy.shape)}"
        )
    check_float_pair(gy, x, xp, ("gy", "x"))
    if not wanted:
        return None, None, None
    gy, x, w = in_native_order(gy), in_native_order(x), in_native_order(w)
    if is_complex(w, xp):  # the real backward of the embedding (conv2d), folded back
        g, real_needs = geom.groups, tuple(wanted.replace("b", ""))
        gx, gw, _ = conv2d_backward(
            embed_channels(gy, g, xp=xp), embed_channels(x, g, xp=xp),
            embed_weights(w, g, xp=xp),
            stride=stride, padding=padding, dilation=dilation, groups=groups,
            strategy=strategy, autotune=autotune, needs=real_needs,
        ) if real_needs else (None, None, None)  # fmt: skip
        return (
            None if gx is None else fold_channels(gx, g, xp=xp),
            None if gw is None else fold_weight_grad(gw, g, xp=xp),
            xp.sum(gy, axis=(0, 2, 3)) if "b" in wanted else None,
        )
    grads = wanted.replace("b", "")  # the convolutions' part: "xw", "x", "w" or ""
    sizes = {"x": math.prod(geom.x_shape), "w": math.prod(geom.w_shape), "b": geom.f}
    results = itemsize(w.dtype, xp) * sum(sizes[name] for name in wanted)
    check_size(results, lambda: _what("conv2d_backward", geom, w), xp, device_of(w))
    kwargs = {**geometry, "strategy": strategy, "autotune": autotune}

    def forward(gy: Array, x: Array, w: Array) -> tuple[Array | None, ...]:
        gb = xp.sum(gy, axis=(0, 2, 3)) if "b" in wanted else None
        if not grads:
            return None, None, gb
        options = {"direction": "backward", "autotune": autotune, "grads": grads}
        chosen = plan(strategy, w, geom, xp=xp, x=x, gy=gy, **options)
        _check_with_workspace(chosen, "conv2d_backward", results, geom, w, xp)
        return (*run_backward(chosen, gy, x, w, xp=xp), gb)

    def backward(needs, grads, inputs) -> tuple[Array | None, ...]:
        # gx = A_w^T gy, gw = B_x^T gy with A_w v = conv2d(v, w), B_x v = conv2d(x, v): for
        # (ggx, ggw, ggb), gy gets conv2d(ggx, w) + conv2d(x, ggw) + ggb, x the input
        # gradient of conv2d(x, ggw), w the weight gradient of conv2d(ggx, w) (second
        # order); a gradient left out (None) adds nothing
        (ggx, ggw, ggb), (gy, x, w) = grads, inputs
        ggy = None
        if needs[0] and ggx is not None:
            ggy = conv2d(ggx, w, ggb, **kwargs)
        if needs[0] and ggw is not None:
            term = conv2d(x, ggw, **kwargs)
            ggy = term if ggy is None else ggy + term
        if needs[0] and ggx is None and ggb is not None:  # the bias term on its own
            bias = xp.reshape(ggb, (1, geom.f, 1, 1))  # (F,) -> (1, F, 1, 1)
            ggy = xp.broadcast_to(bias, tuple(gy.shape)) if ggy is None else ggy + bias
        use_ggw, use_ggx = needs[1] and ggw is not None, needs[2] and ggx is not None
        gx = conv2d_backward(gy, x, ggw, **kwargs, needs=("x",))[0] if use_ggw else None
        gw = conv2d_backward(gy, ggx, w, **kwargs, needs=("w",))[1] if use_ggx else None
        return ggy, gx, gw

    return graph_call(xp, forward, backward, gy, x, w)


def choose_strategy(
    x: Array,
    w: Array,
    /,
    *,
    stride: Any = 1,
    padding: Padding = 0,
    dilation: Any = 1,
    groups: int = 1,
    strategy: str = "auto",
    autotune: bool | None = None,
) -> str:
    """The strategy :func:`conv2d` would run for these arguments (validated the same way).

    As :func:`scipy.signal.choose_conv_method`: the cost model predicts the fastest (its
    picks cost at most about 1.15 times the fastest strategy's time on the reference cases,
    1.03 times in the geometric mean); with ``autotune=True`` (SciPy's ``measure=True``)
    the candidates are timed and the fastest cached, as conv2d would.

    Examples
    --------
    >>> import numpy as np
    >>> import arraycnn as ac
    >>> x, w = np.ones((1, 1, 64, 64)), np.ones((1, 1, 3, 3))
    >>> ac.choose_strategy(x, w) in ac.available_strategies()
    True
    >>> ac.choose_strategy(x, w, strategy="naive")
    'naive'
    """
    xp, geom = prepare(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    if is_complex(w, xp):  # conv2d runs the real embedding
        x, w = embed_channels(x, geom.groups, xp=xp), embed_weights(w, geom.groups, xp=xp)
        geom = conv_geometry(
            tuple(x.shape), tuple(w.shape),
            stride=stride, padding=padding, dilation=dilation, groups=groups,
        )  # fmt: skip
    with no_graph(xp):  # autotuning runs the candidates
        return plan(strategy, w, geom, xp=xp, x=x, autotune=autotune).strategy


def available_strategies(backend: str | ModuleType | None = None) -> list[str]:
    """Strategy names runnable on ``backend`` (all five on NumPy), in a fixed order.

    With ``backend=None`` the full list of strategy names is returned.

    Examples
    --------
    >>> import arraycnn as ac
    >>> ac.available_strategies("numpy")
    ['naive', 'separable', 'im2col', 'fft', 'winograd']
    """
    if backend is None:
        return list(STRATEGY_NAMES)
    return eligible_strategies(resolve_backend(backend))
