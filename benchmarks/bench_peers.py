"""Peers on the same work, each its own row: torch, SciPy, OpenCV (rows skip when absent).

- conv layers: ``torch.nn.functional.conv2d`` forward, and forward + backward (autograd);
- image filtering ("same" output, float32): scipy.signal ``fftconvolve``, ``oaconvolve``,
  ``convolve2d``, ``convolve(method="auto")``, ``scipy.ndimage.convolve``, OpenCV
  ``filter2D`` and ``sepFilter2D`` (rank-1 kernels only), torch ``conv2d``.

Kernels are flipped for the convolution-type peers so that every row computes the same
correlation as arraycnn. torch runs on one thread.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import scipy.ndimage  # imported once with the suite (asv's forkserver), not per sample
import scipy.signal

try:
    import cv2  # noqa: F401 - optional peer
except ImportError:  # pragma: no cover - opencv-python-headless is optional
    pass

from .common import (
    DEPTHWISE,
    IMAGE_SIZES,
    KERNEL_KINDS,
    KERNEL_SIZES,
    LAYER_NAMES,
    LAYERS,
    MAX_SECONDS,
    kernel_of,
    limit_threads,
    seeded,
)


def _optional(module: str) -> Any:
    """Import ``module`` or raise NotImplementedError (asv: skipped)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NotImplementedError(f"{module} is not installed") from exc


def _torch() -> Any:
    torch = _optional("torch")
    torch.set_num_threads(1)
    return torch


class PeerConvTorch:
    """torch conv2d (CPU, one thread) on the reference layers: forward, forward + backward."""

    params: ClassVar[list] = [[*LAYER_NAMES, *DEPTHWISE], ["forward", "forward+backward"]]
    param_names: ClassVar[list] = ["layer", "pass"]
    timeout = 120.0

    def setup(self, layer: str, pass_: str) -> None:
        limit_threads()
        torch = _torch()
        spec = {**LAYERS, **DEPTHWISE}[layer]
        x = torch.from_numpy(seeded(spec.x_shape, np.float32, seed=0))
        w = torch.from_numpy(seeded(spec.w_shape, np.float32, seed=1))
        kwargs = spec.kwargs
        if pass_ == "forward":

            def call() -> None:
                with torch.no_grad():
                    torch.nn.functional.conv2d(x, w, **kwargs)

        else:
            x.requires_grad_(True)
            w.requires_grad_(True)
            out_shape = torch.nn.functional.conv2d(x, w, **kwargs).shape
            gy = torch.from_numpy(seeded(tuple(out_shape), np.float32, seed=2))

            def call() -> None:
                x.grad = w.grad = None
                torch.nn.functional.conv2d(x, w, **kwargs).backward(gy)

        self.call = call
        call()  # warm-up

    def time_conv(self, *_: str) -> None:
        self.call()


#: Peer -> rough rate (multiply-adds per second) of its direct method, for the skip rule;
#: None: an FFT or blocked method, always fast enough on this grid.
FILTER_PEERS: dict[str, float | None] = {
    "scipy.signal.fftconvolve": None,
    "scipy.signal.oaconvolve": None,
    "scipy.signal.convolve2d": 3e8,
    "scipy.signal.convolve:auto": None,
    "scipy.ndimage.convolve": 5e8,
    "cv2.filter2D": None,
    "cv2.sepFilter2D": None,
    "torch.conv2d": 5e9,
}


def _filter_call(peer: str, image: np.ndarray, kernel: np.ndarray) -> Callable[[], Any]:
    """A no-argument call of ``peer`` correlating ``image`` with ``kernel`` ("same" size)."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])
    if peer.startswith("scipy.signal."):
        signal = scipy.signal
        if peer.endswith(":auto"):
            return lambda: signal.convolve(image, flipped, mode="same", method="auto")
        fn = getattr(signal, peer.rsplit(".", 1)[1])
        return lambda: fn(image, flipped, mode="same")
    if peer == "scipy.ndimage.convolve":
        ndimage = scipy.ndimage
        return lambda: ndimage.convolve(image, flipped, mode="constant")
    if peer.startswith("cv2."):
        cv2 = _optional("cv2")
        cv2.setNumThreads(1)
        if peer == "cv2.filter2D":
            return lambda: cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        u, s, vt = np.linalg.svd(kernel.astype(np.float64))
        if s[1:].max(initial=0.0) > 1e-6 * s[0]:
            raise NotImplementedError("sepFilter2D needs a rank-1 kernel")
        column = (u[:, 0] * np.sqrt(s[0])).astype(np.float32)
        row = (vt[0] * np.sqrt(s[0])).astype(np.float32)
        return lambda: cv2.sepFilter2D(image, -1, row, column, borderType=cv2.BORDER_CONSTANT)
    if peer == "torch.conv2d":
        torch = _torch()
        x = torch.from_numpy(image)[None, None]  # (H, W) -> (1, 1, H, W)
        w = torch.from_numpy(kernel)[None, None]  # (k, k) -> (1, 1, k, k)

        def call() -> Any:
            with torch.no_grad():
                return torch.nn.functional.conv2d(x, w, padding="same")

        return call
    raise ValueError(f"unknown peer {peer!r}")


class PeerFilter:
    """Peers filtering an image (float32) with a Gaussian or random kernel ("same")."""

    params: ClassVar[list] = [list(FILTER_PEERS), IMAGE_SIZES, KERNEL_SIZES, KERNEL_KINDS]
    param_names: ClassVar[list] = ["peer", "image", "kernel", "kind"]
    timeout = 120.0

    def setup(self, peer: str, image: int, kernel: int, kind: str) -> None:
        limit_threads()
        rate = FILTER_PEERS[peer]
        if rate is not None and image * image * kernel * kernel / rate > MAX_SECONDS:
            raise NotImplementedError(f"{peer}: direct method predicted over {MAX_SECONDS} s")
        picture = seeded((image, image), np.float32, seed=0)
        self.call = _filter_call(peer, picture, kernel_of(kind, kernel))
        self.call()  # warm-up

    def time_filter(self, *_: Any) -> None:
        self.call()
