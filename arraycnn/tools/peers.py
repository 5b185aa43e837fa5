"""Peers on the same work as arraycnn, for ``arraycnn bench`` and the asv suite.

- conv layers: ``torch.nn.functional.conv2d`` forward and torch's convolution backward;
- image filtering ('same' output): scipy.signal ``fftconvolve``, ``oaconvolve``,
  ``convolve2d``, ``convolve(method="auto")``, ``scipy.ndimage.convolve``, OpenCV
  ``filter2D`` and ``sepFilter2D`` (rank-1 kernels), torch ``conv2d``.

Kernels are flipped for the convolution-type peers, so that every peer computes the same
correlation as arraycnn. torch and OpenCV run on one thread. A peer that cannot run here
raises :class:`PeerUnavailable` (a ``NotImplementedError``: asv records it as skipped); one
whose package is missing raises its subclass :class:`PeerNotInstalled`, and
:func:`missing_peers` says which those are and how to install them, so that ``arraycnn
bench`` says it once instead of in every case.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .cases import Case

__all__ = [
    "DIRECT_RATES",
    "FILTER_PEERS",
    "OPENCV_PEERS",
    "PEER_GROUPS",
    "PEER_LEGEND",
    "PEER_PACKAGES",
    "SCIPY_PEERS",
    "PeerNotInstalled",
    "PeerUnavailable",
    "direct_seconds",
    "filter_peer",
    "filter_peers",
    "layer_peers",
    "missing_peers",
    "optional",
    "torch_conv_call",
    "torch_one_thread",
]

#: Peer names: what each one calls.
PEER_LEGEND = {
    "torch": "torch.nn.functional.conv2d (one thread, no autograd)",
    "scipy.fft": "scipy.signal.fftconvolve",
    "scipy.oa": "scipy.signal.oaconvolve",
    "scipy.2d": "scipy.signal.convolve2d",
    "scipy.auto": 'scipy.signal.convolve(method="auto")',
    "ndimage": "scipy.ndimage.convolve",
    "cv2": "cv2.filter2D",
    "cv2.sep": "cv2.sepFilter2D (rank-1 kernels)",
}
#: The filtering peers, in table order.
FILTER_PEERS = ("scipy.fft", "scipy.oa", "scipy.2d", "scipy.auto", "ndimage", "cv2", "cv2.sep")
FILTER_PEERS += ("torch",)
#: SciPy's functions among the filtering peers (a case's "scipy best").
SCIPY_PEERS = ("scipy.fft", "scipy.oa", "scipy.2d", "scipy.auto", "ndimage")
#: OpenCV's functions among the filtering peers.
OPENCV_PEERS = ("cv2", "cv2.sep")
#: Peers by library, one table each in ``arraycnn bench``: name -> short column header.
PEER_GROUPS = {
    "SciPy": {
        "scipy.fft": "fftconv",
        "scipy.oa": "oaconv",
        "scipy.2d": "conv2d",
        "scipy.auto": "convolve",
        "ndimage": "ndimage",
    },
    "OpenCV": {"cv2": "filter2D", "cv2.sep": "sepFilt"},
    "torch": {"torch": "conv2d"},
}
#: Optional peers: name -> (module, the pip package, the arraycnn extra that installs it).
PEER_PACKAGES = {
    "cv2": ("cv2", "opencv-python-headless", "bench"),
    "cv2.sep": ("cv2", "opencv-python-headless", "bench"),
    "torch": ("torch", "torch", "torch"),
}
#: Direct-method peers: rough multiply-adds per second, for the feasibility rule.
DIRECT_RATES = {"scipy.2d": 3e8, "ndimage": 5e8, "torch": 5e9}


class PeerUnavailable(NotImplementedError):
    """A peer that cannot run here (not installed, or not for this kernel)."""


class PeerNotInstalled(PeerUnavailable):
    """A peer whose package is not installed."""


def optional(name: str) -> ModuleType | None:
    """Module ``name``, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _required(name: str, package: str) -> ModuleType:
    module = optional(name)
    if module is None:
        raise PeerNotInstalled(f"{package} is not installed")
    return module


def missing_peers() -> dict[str, str]:
    """The optional peers that cannot run here, by name, each with the command that
    installs it (``pip install "arraycnn[bench]"`` for OpenCV, ``[torch]`` for torch)."""
    return {
        name: f'pip install "arraycnn[{extra}]" (or {package})'
        for name, (module, package, extra) in PEER_PACKAGES.items()
        if optional(module) is None
    }


def torch_one_thread() -> ModuleType:
    """torch, limited to one thread (PeerUnavailable when not installed)."""
    torch = _required("torch", "torch")
    torch.set_num_threads(1)
    return torch


def direct_seconds(name: str, image: int, kernel: int) -> float | None:
    """Rough seconds of a direct-method peer on an image x image picture and a kernel x
    kernel kernel (None for FFT or blocked methods, always fast enough on the grid)."""
    rate = DIRECT_RATES.get(name)
    return None if rate is None else image * image * kernel * kernel / rate


def _cv2_peer(name: str, image: np.ndarray, kernel: np.ndarray) -> Callable[[], Any]:
    cv2 = _required("cv2", "opencv-python-headless")
    cv2.setNumThreads(1)
    border = cv2.BORDER_CONSTANT
    if name == "cv2":
        return lambda: cv2.filter2D(image, -1, kernel, borderType=border)
    u, s, vt = np.linalg.svd(kernel.astype(np.float64))
    if s[1:].max(initial=0.0) > 1e-6 * s[0]:
        raise PeerUnavailable("sepFilter2D needs a rank-1 kernel")
    column = (u[:, 0] * math.sqrt(s[0])).astype(image.dtype)
    row = (vt[0] * math.sqrt(s[0])).astype(image.dtype)
    return lambda: cv2.sepFilter2D(image, -1, row, column, borderType=border)


def filter_peer(name: str, image: np.ndarray, kernel: np.ndarray) -> Callable[[], Any]:
    """A no-argument call of peer ``name`` correlating ``image`` (H, W) with ``kernel``
    (k, k), output (H, W) ('same', zero boundary). Raises PeerUnavailable."""
    from scipy import ndimage, signal

    flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # convolution = flipped correlation
    scipy_calls: dict[str, Callable[[], Any]] = {
        "scipy.fft": lambda: signal.fftconvolve(image, flipped, mode="same"),
        "scipy.oa": lambda: signal.oaconvolve(image, flipped, mode="same"),
        "scipy.2d": lambda: signal.convolve2d(image, flipped, mode="same"),
        "scipy.auto": lambda: signal.convolve(image, flipped, mode="same", method="auto"),
        "ndimage": lambda: ndimage.convolve(image, flipped, mode="constant"),
    }
    if name in scipy_calls:
        return scipy_calls[name]
    if name in OPENCV_PEERS:
        return _cv2_peer(name, image, kernel)
    if name == "torch":
        torch = torch_one_thread()
        tx = torch.from_numpy(image)[None, None]  # (H, W) -> (1, 1, H, W)
        tw = torch.from_numpy(kernel)[None, None]  # (k, k) -> (1, 1, k, k)

        def call() -> Any:
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, padding="same")

        return call
    raise ValueError(f"unknown filtering peer {name!r}; choose from {', '.join(FILTER_PEERS)}")


def filter_peers(
    case: Case, x: np.ndarray, w: np.ndarray, max_seconds: float
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Peers of a filtering case and why the others are left out (direct methods predicted
    slower than ``max_seconds``); sepFilter2D for rank-1 kinds only. Peers not installed are
    left out without a reason (:func:`missing_peers` gives it once)."""
    image, kernel = x[0, 0], w[0, 0]  # (1, 1, H, W) -> (H, W); (1, 1, k, k) -> (k, k)
    calls: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}
    for name in FILTER_PEERS:
        if name == "cv2.sep" and case.kind not in ("gaussian", "rank1"):
            continue
        seconds = direct_seconds(name, case.image, case.kernel)
        if seconds is not None and seconds > max_seconds:
            skipped[name] = f"predicted {seconds:.2g} s per call"
            continue
        try:
            calls[name] = filter_peer(name, image, kernel)
        except PeerNotInstalled:
            continue
        except PeerUnavailable as exc:
            skipped[name] = str(exc)
    return calls, skipped


def layer_peers(
    case: Case, x: np.ndarray, w: np.ndarray, gy: np.ndarray | None = None
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Peers of a layer case: torch, one thread, no autograd graph.

    Forward: ``torch.nn.functional.conv2d``. Backward (when ``gy`` is given):
    ``torch.ops.aten.convolution_backward`` for (gx, gw, gb), the kernel torch's autograd
    runs for conv2d, so that both sides are timed without a forward pass in the backward.
    No peer, and no reason, where torch is not installed (:func:`missing_peers` gives it).
    """
    try:
        torch = torch_one_thread()
    except PeerNotInstalled:
        return {}, {}
    tgy = None if gy is None else torch.from_numpy(gy)
    return {
        "torch": torch_conv_call(torch, case, torch.from_numpy(x), torch.from_numpy(w), tgy)
    }, {}


def torch_conv_call(torch: Any, case: Case, tx: Any, tw: Any, tgy: Any = None) -> Callable[[], Any]:
    """torch's conv2d of ``case`` on tensors (any device) as a call: the forward without a
    graph, or where ``tgy`` is given the backward kernel autograd runs, for (gx, gw, gb)."""
    if tgy is None:

        def forward() -> Any:
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, **case.kwargs)

        return forward
    g = case.geometry()
    (top, _), (left, _) = g.padding  # the cases pad symmetrically

    def backward() -> Any:
        return torch.ops.aten.convolution_backward(
            tgy,
            tx,
            tw,
            [g.f],
            list(g.stride),
            [top, left],
            list(g.dilation),
            False,
            [0, 0],
            g.groups,
            [True, True, True],
        )

    return backward
