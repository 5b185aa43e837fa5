"""arraycnn: convolutional neural networks on any Array-API namespace.

The same code runs on NumPy (CPU), CuPy (GPU), torch, JAX and array-api-strict. 2-D
convolution comes in four verified strategies (naive, separable, im2col, FFT) behind one
dispatcher (``strategy="auto"``).
"""

from .backend import asarray, fft_module, resolve_backend, synchronize, to_numpy
from .capabilities import CAPABILITIES, STRATEGY_NAMES
from .conv import available_strategies, choose_strategy, conv2d, conv2d_backward
from .geometry import ConvGeometry, PoolGeometry, conv_geometry, output_size, pool_geometry

__version__ = "0.1.0"

__all__ = [
    "CAPABILITIES",
    "STRATEGY_NAMES",
    "ConvGeometry",
    "PoolGeometry",
    "__version__",
    "asarray",
    "available_strategies",
    "choose_strategy",
    "conv2d",
    "conv2d_backward",
    "conv_geometry",
    "fft_module",
    "output_size",
    "pool_geometry",
    "resolve_backend",
    "synchronize",
    "to_numpy",
]
