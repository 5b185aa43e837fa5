"""Array-namespace resolution, dtypes, data movement, random draws, FFT module, device sync
and the autograd boundary.

Every public function of arraycnn resolves its namespace once, at the boundary, with
:func:`namespace_of`; generic code below that takes ``xp`` as a keyword argument.

Backends are named by string (``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"``,
``"array_api_strict"``) or given as a namespace module. Optional libraries are imported
lazily: asking for one that is not installed, or for CuPy without a usable CUDA device,
raises a :class:`RuntimeError` that says which.

Autograd (torch): the library's kernels update work buffers in place, which must never
join a graph. Every public function therefore runs its kernels with grad mode off
(:func:`no_graph`); where a torch input requires grad while grad mode is on
(:func:`records_graph`), the call is recorded as one node of the graph (:class:`GraphOp`),
whose backward runs the library's own backward functions.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "BACKEND_NAMES",
    "GraphOp",
    "asarray",
    "backend_name",
    "device_of",
    "devices_differ",
    "fft_module",
    "graph_call",
    "is_accelerator",
    "is_floating",
    "is_traced",
    "namespace_of",
    "no_graph",
    "random_generator",
    "random_uniform",
    "records_graph",
    "resolve_backend",
    "resolve_dtype",
    "synchronize",
    "to_numpy",
    "values_on_host",
]

#: Backend names accepted by ``backend=``.
BACKEND_NAMES = ("numpy", "cupy", "torch", "jax", "array_api_strict")


def _import_optional(module_name: str, backend: str) -> ModuleType:
    """Import ``module_name`` or raise a RuntimeError naming the missing package."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            f"backend={backend!r} needs the package {module_name.split('.')[0]!r}, "
            f"which is not installed ({exc})"
        ) from exc


def _cupy_namespace() -> ModuleType:
    """Return the CuPy namespace, or raise RuntimeError saying why it is unusable."""
    cupy = _import_optional("cupy", "cupy")
    try:
        available = bool(cupy.is_available())
    except Exception as exc:  # pragma: no cover - depends on the driver
        raise RuntimeError(f"backend='cupy': CuPy is installed but CUDA failed: {exc}") from exc
    if not available:
        raise RuntimeError(
            "backend='cupy': CuPy is installed but no CUDA device is usable "
            "(cupy.is_available() returned False)"
        )
    return array_api_compat.array_namespace(cupy.empty(0))


def resolve_backend(backend: str | ModuleType | None) -> ModuleType:
    """Return the array namespace for a backend name or module.

    Parameters
    ----------
    backend : str or module or None
        One of :data:`BACKEND_NAMES`, or an array namespace / array library module.
        ``None`` means ``"numpy"``.

    Returns
    -------
    module
        An Array-API compatible namespace (array-api-compat wrappers where needed).

    Raises
    ------
    RuntimeError
        If the backend's library is not installed (or, for CuPy, no CUDA device is usable).

    Examples
    --------
    >>> backend_name(resolve_backend("numpy")), backend_name(resolve_backend(None))
    ('numpy', 'numpy')
    >>> resolve_backend("array_api_strict").__name__
    'array_api_strict'
    >>> resolve_backend("tensorflow")
    Traceback (most recent call last):
    ...
    ValueError: backend must be one of (...) or a namespace module, got 'tensorflow'
    """
    if backend is None:
        backend = "numpy"
    if isinstance(backend, ModuleType):
        name = backend.__name__
        if name in ("numpy", "cupy", "torch", "dask.array"):
            return resolve_backend(name.split(".")[0] if name != "dask.array" else name)
        if name == "jax.numpy" or name == "jax":
            return resolve_backend("jax")
        if hasattr(backend, "asarray") and hasattr(backend, "matmul"):
            return backend
        raise TypeError(f"backend: module {name!r} is not an array namespace")
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be a name in {BACKEND_NAMES} or a namespace module, "
            f"got {type(backend).__name__}"
        )
    if backend == "numpy":
        return array_api_compat.array_namespace(np.empty(0))
    if backend == "cupy":
        return _cupy_namespace()
    if backend == "torch":
        torch = _import_optional("torch", "torch")
        return array_api_compat.array_namespace(torch.empty(0))
    if backend == "jax":
        return _import_optional("jax.numpy", "jax")
    if backend == "array_api_strict":
        return _import_optional("array_api_strict", "array_api_strict")
    if backend == "dask.array":
        da = _import_optional("dask.array", "dask")
        return array_api_compat.array_namespace(da.empty(0))
    raise ValueError(
        f"backend must be one of {BACKEND_NAMES} or a namespace module, got {backend!r}"
    )


#: array_api_compat's namespace of a NumPy array (what ``array_namespace`` returns for one).
_NUMPY_NAMESPACE = array_api_compat.array_namespace(np.empty(0))


def namespace_of(*arrays: Any, names: tuple[str, ...] | None = None) -> ModuleType:
    """Return the one namespace shared by ``arrays`` (``None`` entries are skipped).

    Raises
    ------
    TypeError
        If an argument is not an array, or the arrays come from different namespaces.
        ``names`` (the argument names, same order) makes the message name them.

    Examples
    --------
    >>> backend_name(namespace_of(np.ones(2), None, np.zeros(3)))
    'numpy'
    >>> namespace_of([1.0], names=("x",))
    Traceback (most recent call last):
    ...
    TypeError: x must be an array (NumPy, CuPy, torch, ...), got list
    """
    names = names or tuple(f"argument {i}" for i in range(len(arrays)))
    spaces: dict[str, ModuleType] = {}
    for name, a in zip(names, arrays):
        if a is None:
            continue
        if type(a) is np.ndarray:  # the common case, answered without array_namespace's walk
            spaces[name] = _NUMPY_NAMESPACE
            continue
        try:
            spaces[name] = array_api_compat.array_namespace(a)
        except TypeError as exc:
            raise TypeError(
                f"{name} must be an array (NumPy, CuPy, torch, ...), got {type(a).__name__}"
            ) from exc
    if not spaces:
        raise TypeError(f"{', '.join(names)}: expected at least one array, got only None")
    distinct = {id(ns): ns for ns in spaces.values()}
    if len(distinct) > 1:
        described = ", ".join(f"{n}: {ns.__name__}" for n, ns in spaces.items())
        raise TypeError(f"arrays come from different namespaces ({described}); convert them first")
    return next(iter(spaces.values()))


def device_of(x: Any) -> Any:
    """Return the device of array ``x`` (NumPy arrays and torch tensors answered directly:
    every public call asks).

    Examples
    --------
    >>> device_of(np.ones(2))
    'cpu'
    """
    kind = type(x)
    if kind is np.ndarray:
        return "cpu"
    if kind.__module__ == "torch":  # torch.Tensor (array_api_compat reads .device too)
        return x.device
    return array_api_compat.device(x)  # None for a traced JAX array (:func:`is_traced`)


def devices_differ(a: Any, b: Any) -> bool:
    """True if arrays ``a`` and ``b`` are on known, different devices. A traced JAX array
    (:func:`is_traced`) has no device while it is traced (:func:`device_of` gives None):
    it differs from none; JAX itself places the traced computation.

    Examples
    --------
    >>> devices_differ(np.ones(2), np.zeros(3))
    False
    """
    da, db = device_of(a), device_of(b)
    return da is not None and db is not None and da != db


def is_traced(x: Any) -> bool:
    """True for a JAX tracer (an array inside ``jax.jit``, ``jax.grad``, ``jax.vmap``, ...),
    whose values cannot be read and must not be kept past the transformation.

    Examples
    --------
    >>> is_traced(np.ones(2))
    False
    """
    if not type(x).__module__.startswith("jax"):  # nanoseconds; JAX is imported wherever
        return False  # a JAX array exists
    return isinstance(x, sys.modules["jax"].core.Tracer)


def backend_name(xp: ModuleType) -> str:
    """Short name of a namespace: 'numpy', 'cupy', 'torch', 'jax', 'array_api_strict', ...

    Examples
    --------
    >>> backend_name(np), backend_name(resolve_backend("array_api_strict"))
    ('numpy', 'array_api_strict')
    """
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_jax_namespace(xp):
        return "jax"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    if array_api_compat.is_dask_namespace(xp):
        return "dask"
    return xp.__name__


#: torch device types that hold no accelerator memory.
_TORCH_HOST_TYPES = ("cpu", "meta")


def is_accelerator(xp: ModuleType, device: Any) -> bool:
    """True if ``device`` of namespace ``xp`` is an accelerator (a GPU), from the namespace
    and the device object: CuPy always; torch by the device's type (a device name such as
    ``"cuda:0"`` is read as ``torch.device`` reads it; ``"cpu"`` and ``"meta"`` are not
    accelerators); JAX by the device's platform (by JAX's default backend for the unknown
    device, None, of a traced array). NumPy and array-api-strict (whose
    ``Device("device1")`` is a CPU stand-in) never.

    Examples
    --------
    >>> is_accelerator(resolve_backend("numpy"), "cpu")
    False
    >>> strict = resolve_backend("array_api_strict")
    >>> is_accelerator(strict, strict.Device("device1"))
    False
    """
    name = backend_name(xp)
    if name == "cupy":
        return True
    if name == "torch":
        if device is None:
            return False
        torch = sys.modules["torch"]
        return torch.device(device).type not in _TORCH_HOST_TYPES
    if name == "jax":
        if device is None:
            return sys.modules["jax"].default_backend() != "cpu"
        return getattr(device, "platform", "cpu") != "cpu"
    return False


def values_on_host(xp: ModuleType, device: Any) -> bool:
    """True where reading an array's values (``bool``, ``int``, ``float`` of a reduction)
    is host work, not a round trip to a device: NumPy, torch and JAX on the CPU, and
    array-api-strict's default device. False on accelerators and on array-api-strict's
    other devices (``Device("device1")``, the CPU stand-in for a GPU that the round-trip
    tests count on).

    Examples
    --------
    >>> values_on_host(resolve_backend("numpy"), "cpu")
    True
    >>> strict = resolve_backend("array_api_strict")
    >>> values_on_host(strict, strict.Device("device1"))
    False
    """
    if is_accelerator(xp, device):
        return False
    if backend_name(xp) == "array_api_strict":
        return device is None or device == xp.empty(0).device
    return True


def asarray(
    x: Any,
    *,
    backend: str | ModuleType | None = "numpy",
    dtype: Any = None,
    device: Any = None,
) -> Any:
    """Move ``x`` (array, nested sequence or scalar) to ``backend``.

    Data from another library goes through the host (NumPy) explicitly: that is the
    one documented host round trip, used to bring user data onto a backend.

    Examples
    --------
    >>> a = asarray([[1, 2], [3, 4]], backend="array_api_strict", dtype="float32")
    >>> a.shape, backend_name(namespace_of(a))
    ((2, 2), 'array_api_strict')
    >>> asarray(a, backend="numpy")
    array([[1., 2.],
           [3., 4.]], dtype=float32)
    """
    xp = resolve_backend(backend)
    try:
        src = array_api_compat.array_namespace(x)
    except TypeError:
        src = None
    if src is not None and src is not xp:
        x = to_numpy(x)
    if isinstance(dtype, str):
        dtype = getattr(xp, dtype)
    return xp.asarray(x, dtype=dtype, device=device)


def to_numpy(x: Any) -> np.ndarray:
    """Copy array ``x`` of any supported namespace to a NumPy array on the host.

    NumPy arrays are returned as they are (no copy). torch's bfloat16, which NumPy lacks,
    arrives as float32 (every bfloat16 value is a float32 value).

    Examples
    --------
    >>> strict = resolve_backend("array_api_strict")
    >>> to_numpy(strict.asarray([1.5, 2.5]))
    array([1.5, 2.5])
    """
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        x = x.detach().cpu()
        if x.dtype == sys.modules["torch"].bfloat16:  # NumPy has no bfloat16: widen, exactly
            x = x.float()
        return x.numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_jax_array(x):
        return np.asarray(x)
    try:
        return np.from_dlpack(x)
    except Exception:
        return np.asarray(x)


def is_floating(x: Any, xp: ModuleType) -> bool:
    """True if ``x`` has a real floating dtype.

    Examples
    --------
    >>> is_floating(np.ones(2), np), is_floating(np.arange(2), np)
    (True, False)
    """
    return bool(xp.isdtype(x.dtype, "real floating"))


def resolve_dtype(xp: ModuleType, dtype: Any) -> Any:
    """The dtype object of namespace ``xp`` for ``dtype``: None means ``float32``; a name
    (``"float64"``) is looked up in ``xp``; a dtype object is returned as it is.

    Raises
    ------
    ValueError
        If ``xp`` has no dtype of that name.

    Examples
    --------
    >>> strict = resolve_backend("array_api_strict")
    >>> resolve_dtype(strict, None) == strict.float32, resolve_dtype(strict, "int64")
    (True, array_api_strict.int64)
    >>> resolve_dtype(strict, "float99")
    Traceback (most recent call last):
    ...
    ValueError: dtype 'float99' is not a dtype of array_api_strict
    """
    if dtype is None:
        return xp.float32
    if isinstance(dtype, str):
        try:
            return getattr(xp, dtype)
        except AttributeError:
            raise ValueError(f"dtype {dtype!r} is not a dtype of {xp.__name__}") from None
    return dtype


def random_generator(xp: ModuleType, seed: int, *, device: Any = None) -> Any:
    """A random generator native to namespace ``xp``, seeded with ``seed``, for ``device``.

    NumPy: ``numpy.random.Generator`` (PCG64). torch: a ``torch.Generator`` on ``device``
    (default CPU). CuPy: ``cupy.random.default_rng`` (imported only here). JAX: a
    ``jax.random`` key. Other namespaces (array-api-strict, dask) have no generator of their
    own: a NumPy Generator on the host, whose draws :func:`random_uniform` moves to ``device``.
    The generator is opaque: draw from it only with :func:`random_uniform`.

    Examples
    --------
    >>> generator = random_generator(resolve_backend("numpy"), seed=0)
    >>> type(generator).__name__
    'Generator'
    """
    name = backend_name(xp)
    if name == "torch":
        torch = _import_optional("torch", "torch")
        generator = torch.Generator(device=device if device is not None else "cpu")
        generator.manual_seed(seed)
        return generator
    if name == "cupy":  # pragma: no cover - needs a GPU
        return _import_optional("cupy", "cupy").random.default_rng(seed)
    if name == "jax":  # pragma: no cover - jax not installed in CI
        return _import_optional("jax", "jax").random.key(seed)
    return np.random.default_rng(seed)


def random_uniform(
    generator: Any, shape: tuple[int, ...], *, xp: ModuleType, dtype: Any, device: Any = None
) -> tuple[Any, Any]:
    """Uniform ``[0, 1)`` draws of ``shape`` and ``dtype`` from a :func:`random_generator`.

    Draws are made on the generator's device; for namespaces without a generator of their
    own they are made on the host and moved with ``xp.asarray(..., device=device)``: one
    documented host round trip per call.

    Returns
    -------
    draws : array of ``xp``, shape ``shape``
    generator
        The generator to draw from next: the same object, except for JAX, whose keys are
        immutable and are split on every draw.

    Examples
    --------
    >>> xp = resolve_backend("array_api_strict")
    >>> generator = random_generator(xp, seed=0)
    >>> u, generator = random_uniform(generator, (2, 3), xp=xp, dtype=xp.float32)
    >>> u.shape, u.dtype == xp.float32, bool(xp.all((u >= 0) & (u < 1)))
    ((2, 3), True, True)
    """
    name = backend_name(xp)
    if name == "torch":
        torch = _import_optional("torch", "torch")
        draws = torch.rand(shape, generator=generator, dtype=dtype, device=generator.device)
        return draws, generator
    if name == "cupy":  # pragma: no cover - needs a GPU
        return generator.random(shape, dtype=dtype), generator
    if name == "jax":  # pragma: no cover - jax not installed in CI
        jax = _import_optional("jax", "jax")
        generator, key = jax.random.split(generator)
        return jax.random.uniform(key, shape, dtype=dtype), generator
    host = generator.random(shape)
    if name == "numpy":
        return host.astype(dtype, copy=False), generator
    return xp.asarray(host, dtype=dtype, device=device), generator


def fft_module(xp: ModuleType) -> ModuleType:
    """FFT module for a namespace: scipy.fft (NumPy), cupyx.scipy.fft (CuPy), else ``xp.fft``.

    Examples
    --------
    >>> fft_module(resolve_backend("numpy")).__name__
    'scipy.fft'
    >>> fft_module(resolve_backend("array_api_strict")).__name__
    'array_api_strict._fft'
    """
    name = backend_name(xp)
    if name == "numpy":
        import scipy.fft

        return scipy.fft
    if name == "cupy":  # pragma: no cover - needs a GPU
        import cupyx.scipy.fft

        return cupyx.scipy.fft
    return xp.fft


def synchronize(x_or_xp: Any = None) -> None:
    """Wait until queued device work finished (CuPy, torch CUDA); a no-op on the CPU.

    Call it before reading a clock when timing GPU work.

    Examples
    --------
    >>> synchronize(np.ones(3))  # NumPy: nothing to wait for
    """
    if x_or_xp is None:
        return
    if isinstance(x_or_xp, ModuleType):
        xp, device = x_or_xp, None
    else:
        xp = array_api_compat.array_namespace(x_or_xp)
        device = device_of(x_or_xp)
    name = backend_name(xp)
    if name == "cupy":  # pragma: no cover - needs a GPU
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif name == "torch":
        _torch_synchronize(sys.modules["torch"], device)
    elif name == "jax" and device is not None:  # pragma: no cover - jax not in CI
        x_or_xp.block_until_ready()


def _torch_synchronize(torch: ModuleType, device: Any) -> None:
    """Wait for torch's queued work on ``device``'s accelerator (None: CUDA, where present)."""
    if device is None:
        if torch.cuda.is_available():  # pragma: no cover - needs a GPU
            torch.cuda.synchronize()
        return
    if torch.device(device).type in _TORCH_HOST_TYPES:
        return
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "synchronize"):  # any accelerator type
        accelerator.synchronize(device)
    else:  # older torch: CUDA is the accelerator
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- autograd


def records_graph(*arrays: Any) -> bool:
    """True if a call on ``arrays`` must be recorded in an autograd graph: one of them is
    a torch tensor that requires grad, and grad mode is on. False for other namespaces.

    Examples
    --------
    >>> records_graph(np.ones(2), None)
    False
    """
    for a in arrays:
        if getattr(a, "requires_grad", False):
            return bool(sys.modules["torch"].is_grad_enabled())
    return False


_NULL_CONTEXT = contextlib.nullcontext()


class _GradModeOff:
    """Grad mode off for a ``with`` block, then back as it was (``torch.no_grad()``'s
    effect at a fraction of its cost: the public functions enter it on every call)."""

    __slots__ = ("_previous", "_set")

    def __init__(self, torch: ModuleType) -> None:
        self._set = torch._C._set_grad_enabled

    def __enter__(self) -> None:
        self._previous = True
        self._set(False)

    def __exit__(self, *exc: Any) -> None:
        self._set(self._previous)


def no_graph(xp: ModuleType) -> contextlib.AbstractContextManager:
    """A context in which namespace ``xp`` records no autograd graph: grad mode off on
    torch (where it is on), else a null context.

    Examples
    --------
    >>> with no_graph(resolve_backend("numpy")):
    ...     pass
    """
    if backend_name(xp) != "torch":
        return _NULL_CONTEXT
    torch = sys.modules["torch"]
    if not torch.is_grad_enabled():
        return _NULL_CONTEXT
    if not hasattr(torch._C, "_set_grad_enabled"):  # pragma: no cover - other torch versions
        return torch.no_grad()
    return _GradModeOff(torch)


@dataclass(frozen=True)
class GraphOp:
    """One library call recorded as a single node of torch's autograd graph.

    ``forward(*inputs)`` computes the output (an array or a tuple of arrays) and runs with
    grad mode off, so that no work buffer joins the graph. ``backward(needs, grads,
    inputs)`` returns one gradient (or None) per input: ``needs[i]`` says whether input
    ``i`` wants one, ``grads`` are the gradients of the outputs. It runs the library's own
    public backward functions, which record their own nodes when torch asks for a graph of
    the backward (``create_graph=True``), so that higher derivatives work too.

    Calling the op on its inputs (torch tensors; None for an absent optional input) returns
    what ``forward`` returns, attached to the graph.

    Examples
    --------
    >>> square = GraphOp(lambda a: a * a, lambda needs, grads, inputs: (2 * inputs[0] * grads[0],))
    >>> square.forward(3.0), square.backward((True,), (1.0,), (3.0,))  # what torch calls
    (9.0, (6.0,))

    With torch, ``square(a)`` for a tensor ``a`` that requires grad gives ``a * a``, whose
    ``backward()`` leaves ``2 a`` in ``a.grad``.
    """

    forward: Callable[..., Any]
    backward: Callable[..., tuple[Any, ...]]

    def __call__(self, *inputs: Any) -> Any:
        return _autograd_function().apply(self, *inputs)


def graph_call(
    xp: ModuleType, forward: Callable[..., Any], backward: Callable[..., Any], *inputs: Any
) -> Any:
    """``forward(*inputs)``: on torch, recorded as one node of the graph with ``backward``
    (:class:`GraphOp`) where :func:`records_graph`, else run with no graph (:func:`no_graph`);
    on JAX, where an input is traced (:func:`is_traced`: inside ``jax.grad``, ``jax.jit``,
    ...), run as a ``jax.custom_vjp`` function whose VJP is ``backward`` (all present inputs
    get a gradient), so that JAX differentiates the call with the library's backward, never
    through its kernels; on other namespaces (and concrete JAX arrays), simply run.

    Examples
    --------
    >>> graph_call(resolve_backend("numpy"), lambda a: a * a, None, np.float64(3.0))
    np.float64(9.0)
    """
    name = backend_name(xp)
    if name == "jax" and any(is_traced(a) for a in inputs):
        return _jax_custom_vjp(forward, backward)(*inputs)
    if name != "torch":
        return forward(*inputs)
    if records_graph(*inputs):
        return GraphOp(forward, backward)(*inputs)
    with no_graph(xp):
        return forward(*inputs)


def _jax_custom_vjp(forward: Callable[..., Any], backward: Callable[..., Any]) -> Callable:
    """``forward`` as a ``jax.custom_vjp`` function whose VJP runs ``backward(needs, grads,
    inputs)`` (:class:`GraphOp`'s contract) on the saved inputs, ``needs`` true for every
    present (not None) input. The backward's own calls are custom_vjp functions again, so
    JAX can differentiate it in turn (higher derivatives)."""
    jax = sys.modules["jax"]
    op = jax.custom_vjp(forward)

    def op_forward(*inputs: Any) -> tuple[Any, tuple[Any, ...]]:
        return forward(*inputs), inputs

    def op_backward(inputs: tuple[Any, ...], cotangent: Any) -> tuple[Any, ...]:
        grads = cotangent if isinstance(cotangent, tuple) else (cotangent,)
        needs = tuple(a is not None for a in inputs)
        return tuple(backward(needs, grads, inputs))

    op.defvjp(op_forward, op_backward)
    return op


#: The one torch.autograd.Function class, made on first use (torch imported lazily).
_FUNCTION: list[type] = []


def _autograd_function() -> type:
    """The ``torch.autograd.Function`` running :class:`GraphOp` values."""
    if not _FUNCTION:
        torch = _import_optional("torch", "torch")

        class ArraycnnOp(torch.autograd.Function):
            """Runs a GraphOp: its forward without a graph, its backward on the saved inputs."""

            @staticmethod
            def forward(ctx: Any, op: GraphOp, *inputs: Any) -> Any:
                ctx.op = op
                ctx.save_for_backward(*inputs)
                return op.forward(*inputs)

            @staticmethod
            def backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
                inputs = ctx.saved_tensors
                return (None, *ctx.op.backward(ctx.needs_input_grad[1:], grads, inputs))

        _FUNCTION.append(ArraycnnOp)
    return _FUNCTION[0]
