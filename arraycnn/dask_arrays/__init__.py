"""arraycnn on dask arrays: lazy filters, convolutions, pooling and inference, chunk by chunk.

The public functions of :mod:`arraycnn.filters`, :mod:`arraycnn.conv`,
:mod:`arraycnn.pooling` and :class:`arraycnn.nn.Sequential` hand a dask array to the
functions here, which build a dask graph whose tasks call the in-memory functions on the
chunks (NumPy or CuPy, each on its own namespace, with the strategy asked for). Nothing is
computed until the user calls ``compute()`` (or ``persist``, or a ``dask.distributed``
client does). dask (``pip install "arraycnn[dask]"``) is imported only when a dask array
arrives: ``import arraycnn`` does not import it.

The in-memory function is passed in by the caller (``filter2d(correlate2d, ...)``), so this
package never imports the modules that delegate to it (no import cycle). See
``docs/dask.md`` for the halo rules.
"""

from .checks import is_dask_array
from .images import filter2d
from .inference import predict, predict_proba
from .windows import conv2d, conv2d_backward, pool2d, pool2d_backward

__all__ = [
    "conv2d",
    "conv2d_backward",
    "filter2d",
    "is_dask_array",
    "pool2d",
    "pool2d_backward",
    "predict",
    "predict_proba",
]
