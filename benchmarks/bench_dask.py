"""Filtering one float32 image in memory against a dask LocalCluster of 2 worker processes.

Each sample starts its own cluster in ``setup`` (not timed); the image is generated on the
workers (a seeded dask generator) and persisted there, then filtered ("same", symmetric
boundary) with the result reduced on the workers. The default grid is small (CI's
``asv run --quick`` also sets ``ARRAYCNN_BENCH_QUICK=1``: one case). The large cases, a
16384^2 image (1 GiB) and a 32768^2 image (4 GiB) under a 1 GiB memory limit per worker,
take minutes and are timed only with ``ARRAYCNN_BENCH_DASK_LARGE=1``. Without dask
installed every sample is skipped.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

import arraycnn
from arraycnn.tools.dask_bench import gaussian_kernel, start_rss_sampler, worker_peak_rss

from .common import pick

#: The large cases are opted into (module docstring).
LARGE = os.environ.get("ARRAYCNN_BENCH_DASK_LARGE", "0").strip() not in ("", "0")

#: (image side, memory limit per worker) of the cases.
IMAGES = ["16384", "32768/1GiB"] if LARGE else pick(["2048", "4096"], ["1024"])
KERNELS = pick([3, 9, 31], [9])
KINDS = pick(["gaussian", "random"], ["gaussian"])
#: Chunk side of the dask image.
CHUNK = 1024


def _case(image: str) -> tuple[int, str]:
    side, _, limit = image.partition("/")
    return int(side), limit or "auto"


def _kernel(size: int, kind: str) -> np.ndarray:
    if kind == "gaussian":
        return gaussian_kernel(size)
    return np.random.default_rng(size).standard_normal((size, size)).astype(np.float32)


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (the in-memory case)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class DaskFilter:
    """correlate2d of a float32 image, in memory (NumPy) and on 2 dask worker processes."""

    params: ClassVar[list] = [IMAGES, KERNELS, KINDS, ["memory", "dask"]]
    param_names: ClassVar[list] = ["image", "kernel", "kind", "where"]
    timeout = 1800

    def setup(self, image: str, kernel: int, kind: str, where: str) -> None:
        side, limit = _case(image)
        self.kernel = _kernel(kernel, kind)
        self.cluster = self.client = None
        if where == "memory":
            if limit != "auto":
                raise NotImplementedError("the memory-limited case runs on dask only")
            self.image = np.random.default_rng(0).standard_normal((side, side), dtype=np.float32)
            return
        try:
            import dask.array as da
            from dask.distributed import Client, LocalCluster, wait
        except ImportError as exc:
            raise NotImplementedError("dask is not installed") from exc
        self.cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=limit,
            silence_logs=40,
        )
        self.client = Client(self.cluster)
        image_ = da.random.default_rng(0).standard_normal((side, side), chunks=CHUNK)
        image_ = image_.astype(np.float32)
        if limit == "auto":  # persisted; the 4 GiB image under 1 GiB workers cannot be
            image_ = self.client.persist(image_)
            wait(image_)
        self.image = image_

    def teardown(self, *_: Any) -> None:
        if self.client is not None:
            self.client.close()
            self.cluster.close()

    def _run(self) -> None:
        result = arraycnn.correlate2d(self.image, self.kernel, "same", "symm")
        if self.client is not None:
            self.client.compute(result.sum()).result()

    def time_filter(self, *_: Any) -> None:
        """Seconds to filter the image ('same', 'symm'); on dask, reduced on the workers."""
        self._run()

    def track_worker_peak_memory(self, *_: Any) -> float:
        """Peak resident memory of the busiest worker process over the filtering (MiB);
        in memory: of this process."""
        if self.client is None:
            self._run()
            return _peak_rss() / 2**20
        # sampled in each worker (arraycnn.tools functions: the workers can import them;
        # ru_maxrss cannot serve there, it carries the parent's peak)
        self.client.run(start_rss_sampler)
        self._run()
        return max(self.client.run(worker_peak_rss).values()) / 2**20

    track_worker_peak_memory.unit = "MiB"
    track_worker_peak_memory.pretty_name = "peak memory per worker (MiB)"
