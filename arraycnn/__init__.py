"""arraycnn: convolutional neural networks on any Array-API namespace.

The same code runs on NumPy (CPU), CuPy (GPU), torch, JAX and array-api-strict. 2-D
convolution comes in five verified strategies (naive, separable, im2col, FFT, Winograd)
behind one dispatcher (``strategy="auto"``); image filtering (``correlate2d``/``convolve2d``) and
pooling run on the same machinery; :mod:`arraycnn.nn` builds and trains CNNs.
"""

from ._version import __version__
from .backend import asarray, fft_module, resolve_backend, synchronize, to_numpy
from .conv import (
    CAPABILITIES,
    STRATEGY_NAMES,
    WorkspaceError,
    available_strategies,
    choose_strategy,
    conv2d,
    conv2d_backward,
)
from .filters import convolve2d, correlate2d
from .geometry import ConvGeometry, PoolGeometry, conv_geometry, output_size, pool_geometry
from .pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .settings import clear_caches, config, set_autotune, set_workspace_limit

__all__ = [
    "CAPABILITIES",
    "STRATEGY_NAMES",
    "ConvGeometry",
    "PoolGeometry",
    "WorkspaceError",
    "__version__",
    "asarray",
    "available_strategies",
    "avg_pool2d",
    "avg_pool2d_backward",
    "choose_strategy",
    "clear_caches",
    "config",
    "conv2d",
    "conv2d_backward",
    "conv_geometry",
    "convolve2d",
    "correlate2d",
    "fft_module",
    "max_pool2d",
    "max_pool2d_backward",
    "output_size",
    "pool_geometry",
    "resolve_backend",
    "set_autotune",
    "set_workspace_limit",
    "synchronize",
    "to_numpy",
]
