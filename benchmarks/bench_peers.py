"""Peers on the same work, each its own row: torch, SciPy, OpenCV (rows skip when absent).

- conv layers: ``torch.nn.functional.conv2d`` forward, and forward + backward (autograd);
- image filtering ("same" output, float32): scipy.signal ``fftconvolve``, ``oaconvolve``,
  ``convolve2d``, ``convolve(method="auto")``, ``scipy.ndimage.convolve``, OpenCV
  ``filter2D`` and ``sepFilter2D`` (rank-1 kernels only), torch ``conv2d``.

Kernels are flipped for the convolution-type peers so that every row computes the same
correlation as arraycnn. torch runs on one thread.
"""

from __future__ import annotations

from typing import Any, ClassVar

import scipy.ndimage  # imported once with the suite (asv's forkserver), not per sample
import scipy.signal  # noqa: F401

try:
    import cv2  # noqa: F401 - optional peer
except ImportError:  # pragma: no cover - opencv-python-headless is optional
    pass

from arraycnn.tools import peers
from arraycnn.tools.cases import filter_case, host_arrays

from .common import (
    DEPTHWISE,
    IMAGE_SIZES,
    KERNEL_KINDS,
    KERNEL_SIZES,
    LAYER_NAMES,
    LAYERS,
    MAX_SECONDS,
    limit_threads,
)


class PeerConvTorch:
    """torch conv2d (CPU, one thread) on the reference layers: forward, forward + backward."""

    params: ClassVar[list] = [[*LAYER_NAMES, *DEPTHWISE], ["forward", "forward+backward"]]
    param_names: ClassVar[list] = ["layer", "pass"]
    timeout = 120.0

    def setup(self, layer: str, pass_: str) -> None:
        limit_threads()
        torch = peers.torch_one_thread()
        case = {**LAYERS, **DEPTHWISE}[layer]
        x, w, gy = (torch.from_numpy(a) for a in host_arrays(case))
        kwargs = case.kwargs
        if pass_ == "forward":

            def call() -> None:
                with torch.no_grad():
                    torch.nn.functional.conv2d(x, w, **kwargs)

        else:
            x.requires_grad_(True)
            w.requires_grad_(True)

            def call() -> None:
                x.grad = w.grad = None
                torch.nn.functional.conv2d(x, w, **kwargs).backward(gy)

        self.call = call
        call()  # warm-up

    def time_conv(self, *_: str) -> None:
        """Seconds per call of the peer's conv2d (torch, one thread)."""
        self.call()


#: asv parameter value -> the peer's name in :mod:`arraycnn.tools.peers`.
FILTER_PEERS: dict[str, str] = {
    "scipy.signal.fftconvolve": "scipy.fft",
    "scipy.signal.oaconvolve": "scipy.oa",
    "scipy.signal.convolve2d": "scipy.2d",
    "scipy.signal.convolve:auto": "scipy.auto",
    "scipy.ndimage.convolve": "ndimage",
    "cv2.filter2D": "cv2",
    "cv2.sepFilter2D": "cv2.sep",
    "torch.conv2d": "torch",
}


class PeerFilter:
    """Peers filtering an image (float32) with a Gaussian or random kernel ("same")."""

    params: ClassVar[list] = [list(FILTER_PEERS), IMAGE_SIZES, KERNEL_SIZES, KERNEL_KINDS]
    param_names: ClassVar[list] = ["peer", "image", "kernel", "kind"]
    timeout = 120.0

    def setup(self, peer: str, image: int, kernel: int, kind: str) -> None:
        limit_threads()
        name = FILTER_PEERS[peer]
        seconds = peers.direct_seconds(name, image, kernel)
        if seconds is not None and seconds > MAX_SECONDS:
            raise NotImplementedError(f"{peer}: direct method predicted over {MAX_SECONDS} s")
        x, w, _ = host_arrays(filter_case(image, kernel, kind))
        # (1, 1, H, W) -> (H, W); (1, 1, k, k) -> (k, k); PeerUnavailable skips (asv)
        self.call = peers.filter_peer(name, x[0, 0], w[0, 0])
        self.call()  # warm-up

    def time_filter(self, *_: Any) -> None:
        """Seconds per call of the peer's filter (SciPy, OpenCV, torch)."""
        self.call()
