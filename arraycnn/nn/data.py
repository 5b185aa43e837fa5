"""Data for :class:`~arraycnn.nn.model.Sequential`: checking ``X`` and ``y``, batching, and
moving host batches to the model's device.

Data may be NumPy arrays on the host or arrays of the model's namespace:

* NumPy ``X`` stays on the host and each batch is moved to the backend as it is used — the one
  documented host -> device transfer (a no-op on the NumPy backend);
* ``X`` already in the model's namespace is batched on the device (``xp.take`` for shuffled
  batches, so array-api-strict works too);
* labels ``y`` are small: they are brought to the host once, validated there (range, length),
  and each batch of them is moved to the backend with its images.

Arrays of the model's namespace on another device than the model's are refused with a
ValueError naming both devices (:func:`check_device`), before anything is computed: moving
them would be a hidden device-to-device (or device-to-host) copy of the whole data set.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import array_api_compat
import numpy as np

from ..backend import backend_name, device_of, to_numpy
from ..budget import WorkspaceError

__all__ = [
    "Dataset",
    "Placement",
    "batches",
    "check_X",
    "check_device",
    "check_flag",
    "check_seed",
    "check_whole",
    "check_y",
    "epoch_order",
    "num_outputs",
    "placement_of",
    "positive_int",
    "prepare_inputs",
    "prepare_labeled",
    "target_batch",
    "x_batch",
]

Array = Any
#: A batch's rows: a slice, or an array of sample indices (shuffled epochs).
Index = slice | np.ndarray


class _Buildable(Protocol):
    """What data preparation needs of a model."""

    xp: ModuleType
    dtype: Any
    device: Any
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None

    @property
    def built(self) -> bool: ...

    def build(self, input_shape: Sequence[int]) -> tuple[int, ...]: ...


# --------------------------------------------------------------------------------------------
# arguments and shapes
# --------------------------------------------------------------------------------------------


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (NumPy integers accepted, bools refused).

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is < 1.

    Examples
    --------
    >>> positive_int(np.int64(8), "batch_size")
    8
    >>> positive_int(0, "epochs")
    Traceback (most recent call last):
    ...
    ValueError: epochs must be >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_seed(value: Any, name: str) -> int | None:
    """``value`` as a seed: None, or an int >= 0 (NumPy integers accepted, bools refused).

    Raises
    ------
    TypeError
        If ``value`` is neither None nor an integer.
    ValueError
        If it is negative.

    Examples
    --------
    >>> check_seed(np.int64(7), "seed"), check_seed(None, "seed")
    (7, None)
    >>> check_seed(-1, "seed")
    Traceback (most recent call last):
    ...
    ValueError: seed must be a non-negative int or None, got -1
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be a non-negative int or None, got {type(value).__name__} {value!r}"
        )
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int or None, got {value}")
    return int(value)


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool (``True``, ``False`` or a NumPy bool; nothing else).

    Raises
    ------
    TypeError
        For anything else (``0``, ``"yes"``, None...).

    Examples
    --------
    >>> check_flag(np.True_, "shuffle")
    True
    >>> check_flag(1, "shuffle")
    Traceback (most recent call last):
    ...
    TypeError: shuffle must be True or False, got int 1
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def num_outputs(output_shape: tuple[int, ...] | None) -> int:
    """Number of output units of a built model: the product of its per-sample output shape.

    Examples
    --------
    >>> num_outputs((10,)), num_outputs((2, 3)), num_outputs(())
    (10, 6, 1)
    """
    assert output_shape is not None
    return math.prod(output_shape)


@dataclass(frozen=True)
class Placement:
    """Where a model's arrays live: namespace, floating dtype and device.

    Examples
    --------
    >>> place = Placement(np, np.float32, "cpu")
    >>> place.from_host(np.arange(3)).dtype
    dtype('float32')
    >>> place.from_host(np.arange(3), np.int64)
    array([0, 1, 2])
    """

    xp: ModuleType
    dtype: Any
    device: Any

    def from_host(self, a: np.ndarray, dtype: Any = None) -> Array:
        """Host array -> the namespace and device (the one documented host -> device transfer).

        ``dtype`` defaults to the floating dtype.
        """
        dtype = self.dtype if dtype is None else dtype
        return self.xp.asarray(np.ascontiguousarray(a), dtype=dtype, device=self.device)


def placement_of(model: _Buildable) -> Placement:
    """The :class:`Placement` of a model (its ``xp``, ``dtype`` and ``device``).

    Examples
    --------
    >>> from arraycnn.nn import ReLU, Sequential
    >>> place = placement_of(Sequential([ReLU()], backend="numpy", dtype="float64"))
    >>> place.dtype is np.float64, place.device
    (True, 'cpu')
    """
    return Placement(model.xp, model.dtype, model.device)


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def check_device(a: Any, device: Any, name: str) -> None:
    """Refuse an array ``a`` of the model's namespace that is not on the model's ``device``.

    Raises
    ------
    ValueError
        Naming ``name``, the array's device and the model's.

    Examples
    --------
    >>> import array_api_strict as strict
    >>> check_device(strict.ones(2), strict.Device("CPU_DEVICE"), "X")
    >>> check_device(strict.ones(2), strict.Device("device1"), "X")
    Traceback (most recent call last):
    ...
    ValueError: X is on device array_api_strict.Device('CPU_DEVICE') but the model is on ...
    """
    found = device_of(a)
    if found != device:
        raise ValueError(
            f"{name} is on device {found} but the model is on device {device}; move it to "
            "the model's device, or pass NumPy data (moved to the device one batch at a time)"
        )


def _namespace_data(X: Any, xp: ModuleType, name: str, device: Any) -> tuple[Any, bool]:
    """A non-NumPy ``X`` checked to be of ``xp`` (and on ``device``, unless None); whether it
    is host data after all."""
    backend = backend_name(xp)
    try:
        space = array_api_compat.array_namespace(X)
    except TypeError:
        raise TypeError(
            f"{name} must be a NumPy array or an array of the model's backend "
            f"({backend}), got {type(X).__name__}"
        ) from None
    if backend_name(space) != backend:
        raise TypeError(
            f"{name} is a {backend_name(space)} array but the model runs on "
            f"{backend}; pass NumPy data or convert it with arraycnn.asarray"
        )
    if backend == "numpy":
        return np.asarray(X), True
    if device is not None:
        check_device(X, device, name)
    return X, False


def _all_finite(X: Any, on_host: bool, xp: ModuleType, name: str) -> bool:
    """Whether ``X`` holds no NaN or infinity, after checking that it holds real numbers."""
    if on_host:
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
        return bool(np.isfinite(X).all()) if X.dtype.kind == "f" else True
    if not xp.isdtype(X.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    return bool(xp.all(xp.isfinite(X))) if xp.isdtype(X.dtype, "real floating") else True


def check_X(
    X: Any,
    *,
    xp: ModuleType,
    input_shape: tuple[int, ...] | None,
    name: str = "X",
    device: Any = None,
) -> tuple[Any, bool]:
    """Validate samples ``X`` for a model on ``xp``; return them and whether they are on the host.

    Parameters
    ----------
    X : array, shape (N, *sample_shape)
        NumPy, or an array of ``xp``.
    xp : namespace
        The model's namespace.
    input_shape : tuple of int or None
        The model's per-sample input shape; None (not built yet) accepts any.
    name : str
        How error messages call ``X``.
    device : device, optional
        The model's device: an ``X`` of ``xp`` elsewhere is refused (None: not checked).

    Returns
    -------
    X : array
        ``X`` itself (a NumPy view for NumPy-namespace arrays).
    on_host : bool
        True for NumPy data: batches are then moved to the device one by one.

    Raises
    ------
    TypeError
        For non-arrays, arrays of another namespace, and non-real dtypes.
    ValueError
        For an ``X`` on another device than ``device`` (checked first), NaN or infinite
        values, a missing batch axis, or samples of the wrong shape.

    Examples
    --------
    >>> X, on_host = check_X(np.zeros((4, 1, 3, 3)), xp=np, input_shape=(1, 3, 3))
    >>> X.shape, on_host
    ((4, 1, 3, 3), True)
    >>> check_X(np.zeros((4, 2)), xp=np, input_shape=(3,))
    Traceback (most recent call last):
    ...
    ValueError: X: expected samples of shape (3,) (the model's input), got (2,) ...
    """
    if isinstance(X, np.ndarray):
        on_host = True
    else:
        X, on_host = _namespace_data(X, xp, name, device)
    if not _all_finite(X, on_host, xp, name):
        raise ValueError(f"{name} contains NaN or infinite values")
    if len(X.shape) < 2:
        raise ValueError(f"{name} must have a batch axis and sample axes, got shape {X.shape}")
    if input_shape is not None and tuple(X.shape[1:]) != input_shape:
        raise ValueError(
            f"{name}: expected samples of shape {input_shape} (the model's input), "
            f"got {tuple(X.shape[1:])} (X.shape = {tuple(X.shape)})"
        )
    return X, on_host


def _host_labels(y: Any, name: str) -> np.ndarray:
    """``y`` as a NumPy array of real numbers on the host."""
    try:
        y_host = np.asarray(to_numpy(y))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers, got {type(y).__name__}") from exc
    if y_host.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold numbers, got dtype {y_host.dtype}")
    return y_host


def check_whole(y: np.ndarray, name: str) -> None:
    """Refuse float class labels that are not whole numbers (they would be truncated).

    Examples
    --------
    >>> check_whole(np.array([0.0, 2.0]), "y")
    >>> check_whole(np.array([0.0, 1.5]), "y")
    Traceback (most recent call last):
    ...
    ValueError: y: float labels must be whole numbers (class indices), got 1.5 at index 1
    """
    if y.dtype.kind != "f":
        return
    fractional = np.flatnonzero(y != np.floor(y))
    if fractional.size:
        i = int(fractional[0])
        raise ValueError(
            f"{name}: float labels must be whole numbers (class indices), got "
            f"{float(y[i])!r} at index {i}"
        )


def check_y(y: Any, n: int, *, num_outputs: int, name: str = "y") -> np.ndarray:
    """Bring labels or targets to the host and check their length, values and range.

    Parameters
    ----------
    y : array, shape (N,) labels, or (N, K) / (N, *output_shape) one-hot / targets
        Any namespace. With ``K > 1`` outputs, 1-D ``y`` holds class labels: integers, or
        floats that are whole numbers, in ``[0, K)``. With one output, 1-D integer labels are
        0 or 1, and 1-D floats are targets (any finite value, e.g. soft binary targets).
    n : int
        The number of samples they must match.
    num_outputs : int
        The model's output units ``K``; a single unit means two classes, 0 and 1.
    name : str
        How error messages call ``y``.

    Returns
    -------
    numpy.ndarray
        ``y`` on the host.

    Raises
    ------
    TypeError
        For non-numeric ``y``.
    ValueError
        For a length that differs from ``n``, NaN or infinity, labels out of range or not
        whole numbers, targets of the wrong shape.

    Examples
    --------
    >>> check_y([0, 2, 1], 3, num_outputs=3)
    array([0, 2, 1])
    >>> check_y([0, 3], 2, num_outputs=3)
    Traceback (most recent call last):
    ...
    ValueError: y: labels must be in [0, 3) for a model with 3 output(s), got values in [0, 3]
    """
    y_host = _host_labels(y, name)
    if y_host.ndim == 0 or y_host.shape[0] != n:
        raise ValueError(
            f"X and {name} must have the same length, got {n} samples and "
            f"{y_host.shape[0] if y_host.ndim else 'a scalar'} labels"
        )
    if y_host.dtype.kind == "f" and not np.isfinite(y_host).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    k = num_outputs
    if y_host.ndim == 1:
        if y_host.dtype.kind == "f" and k == 1:
            return y_host  # targets of the single output
        check_whole(y_host, name)
        limit = max(k, 2)
        low, high = int(y_host.min(initial=0)), int(y_host.max(initial=0))
        if low < 0 or high >= limit:
            raise ValueError(
                f"{name}: labels must be in [0, {limit}) for a model with {k} output(s), "
                f"got values in [{low}, {high}]"
            )
    elif math.prod(y_host.shape[1:]) != k:
        raise ValueError(f"{name}: expected one-hot targets of shape (N, {k}), got {y_host.shape}")
    return y_host


# --------------------------------------------------------------------------------------------
# data sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """Checked samples (and labels) ready for batching.

    Attributes
    ----------
    X : array, shape (N, *sample_shape)
        NumPy (``on_host``) or the model's namespace.
    on_host : bool
        Whether batches of ``X`` must be moved to the device.
    y : numpy.ndarray or None, shape (N,) or (N, K)
        Labels or targets on the host; None for inference.

    Examples
    --------
    >>> Dataset(np.zeros((5, 2)), on_host=True, y=np.arange(5)).n
    5
    """

    X: Any
    on_host: bool
    y: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])


def prepare_inputs(
    model: _Buildable, X: Any, *, name: str = "X", nonempty: bool = False
) -> Dataset:
    """Check ``X`` for ``model`` and build the model for its sample shape if it is not built.

    Parameters
    ----------
    model : Sequential
        Anything with ``xp``, ``input_shape``, ``built`` and ``build``.
    X : array, shape (N, *sample_shape)
    name : str
        How error messages call ``X``.
    nonempty : bool
        Refuse ``N == 0`` (before building).

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(3, 2)], backend="numpy", seed=0)
    >>> prepare_inputs(model, np.ones((4, 3))).n, model.input_shape
    (4, (3,))
    """
    X, on_host = check_X(
        X, xp=model.xp, input_shape=model.input_shape, name=name, device=model.device
    )
    if nonempty and int(X.shape[0]) == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not model.built:
        _build_for(model, tuple(X.shape[1:]), name)
    return Dataset(X, on_host)


def _build_for(model: _Buildable, shape: tuple[int, ...], name: str) -> None:
    """Build ``model`` for samples of ``shape``; errors say that they come from ``name``."""
    try:
        model.build(shape)
    except WorkspaceError as exc:
        raise WorkspaceError(f"{name}: samples of shape {shape}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"{name}: samples of shape {shape} do not fit the model: {exc}") from exc


def _of_namespace(a: Any, xp: ModuleType) -> bool:
    """Whether ``a`` is an array of namespace ``xp`` (NumPy's: never, it is host data)."""
    if isinstance(a, np.ndarray) or backend_name(xp) == "numpy":
        return False
    try:
        return backend_name(array_api_compat.array_namespace(a)) == backend_name(xp)
    except TypeError:
        return False


def prepare_labeled(
    model: _Buildable,
    X: Any,
    y: Any,
    *,
    names: tuple[str, str] = ("X", "y"),
    nonempty: bool = False,
) -> Dataset:
    """:func:`prepare_inputs`, then labels ``y`` checked against the built model's outputs.

    ``y`` of the model's namespace on another device than the model's is refused first
    (:func:`check_device`), before ``X`` is looked at or the model built.

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(3, 2)], backend="numpy", seed=0)
    >>> prepare_labeled(model, np.ones((4, 3)), [0, 1, 1, 0]).y
    array([0, 1, 1, 0])
    >>> prepare_labeled(model, np.ones((4, 3)), [0, 1])
    Traceback (most recent call last):
    ...
    ValueError: X and y must have the same length, got 4 samples and 2 labels
    """
    if _of_namespace(y, model.xp):
        check_device(y, model.device, names[1])
    data = prepare_inputs(model, X, name=names[0], nonempty=nonempty)
    y_host = check_y(y, data.n, num_outputs=num_outputs(model.output_shape), name=names[1])
    return Dataset(data.X, data.on_host, y_host)


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------


def epoch_order(rng: np.random.Generator, n: int, shuffle: bool) -> np.ndarray | None:
    """A fresh permutation of ``n`` samples, or None (in order) when not shuffling.

    ``rng`` is drawn from only when shuffling.

    Examples
    --------
    >>> epoch_order(np.random.default_rng(0), 5, shuffle=True).shape
    (5,)
    >>> epoch_order(np.random.default_rng(0), 5, shuffle=False) is None
    True
    """
    return rng.permutation(n) if shuffle else None


def batches(n: int, batch_size: int, order: np.ndarray | None = None) -> Iterator[Index]:
    """Rows of consecutive batches of ``batch_size`` (the last may be smaller).

    Slices when ``order`` is None, else the batches' pieces of ``order``.

    Examples
    --------
    >>> list(batches(5, 2))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    >>> [b.tolist() for b in batches(5, 2, np.array([4, 3, 2, 1, 0]))]
    [[4, 3], [2, 1], [0]]
    """
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        yield slice(lo, hi) if order is None else order[lo:hi]


def x_batch(data: Dataset, index: Index, place: Placement) -> Array:
    """Samples ``index`` of ``data.X`` in the model's namespace, device and floating dtype.

    Returns
    -------
    array, shape (B, *sample_shape)

    Examples
    --------
    >>> data = Dataset(np.arange(6).reshape(3, 2), on_host=True)  # (6,) -> (3, 2)
    >>> x_batch(data, np.array([2, 0]), Placement(np, np.float32, "cpu"))
    array([[4., 5.],
           [0., 1.]], dtype=float32)
    """
    if data.on_host:
        return place.from_host(data.X[index])
    xp = place.xp
    if isinstance(index, slice):
        batch = data.X[index, ...]
    else:
        batch = xp.take(data.X, xp.asarray(index, dtype=xp.int64, device=place.device), axis=0)
    return batch if batch.dtype == place.dtype else xp.astype(batch, place.dtype)


def target_batch(
    y: np.ndarray, *, int_labels: bool, output_shape: tuple[int, ...], place: Placement
) -> Array:
    """A batch of labels or targets ``y`` (host) as the loss wants them, on the device.

    Parameters
    ----------
    y : numpy.ndarray, shape (B,) or (B, K)
    int_labels : bool
        The loss takes integer labels (categorical cross-entropy): 1-D ``y`` becomes int64;
        otherwise integer labels become one-hot rows (K > 1 outputs).
    output_shape : tuple of int
        The model's per-sample output shape; float targets take it, (B,) -> (B, 1) for one
        output.
    place : Placement

    Returns
    -------
    array, shape (B,) int64 labels, or (B, *output_shape) of the floating dtype

    Examples
    --------
    >>> place = Placement(np, np.float32, "cpu")
    >>> target_batch(np.array([2, 0]), int_labels=True, output_shape=(3,), place=place)
    array([2, 0])
    >>> target_batch(np.array([2, 0]), int_labels=False, output_shape=(3,), place=place)
    array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """
    if int_labels:
        if y.ndim == 1:
            check_whole(y, "y")
            return place.from_host(y.astype(np.int64), place.xp.int64)
        return place.from_host(y)
    if y.ndim == 1 and math.prod(output_shape) > 1:  # int labels for an elementwise loss
        check_whole(y, "y")
        onehot = np.zeros((y.shape[0], math.prod(output_shape)), dtype=np.float64)
        onehot[np.arange(y.shape[0]), y.astype(np.int64)] = 1.0
        y = onehot
    y = y.reshape((y.shape[0], *output_shape))  # (B,) -> (B, 1) for one output; (B, K) kept
    return place.from_host(y)
