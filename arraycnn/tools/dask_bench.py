"""``arraycnn bench --dask``: filtering a large image in memory against a dask cluster.

For each image side x kernel side x kernel kind (Gaussian, random), one float32 image is
filtered ("same", symmetric boundary) twice:

- in memory: :func:`arraycnn.correlate2d` on a NumPy image, timed once, its peak memory the
  peak of NumPy's allocations during the call (``tracemalloc``); left out where the image,
  its float copies and the result would not fit the memory available;
- on a ``dask.distributed`` ``LocalCluster`` of ``--dask-workers`` one-thread processes on
  127.0.0.1 (``--dask-memory-limit`` per worker): the image is generated on the workers in
  ``--dask-chunk`` square chunks (a seeded dask generator), persisted there where it fits in
  half the workers' memory, and filtered; the result is reduced to one number on the workers
  (nothing returns to this process). Each case gets a fresh cluster; each worker samples its
  resident memory during the filtering and reports the peak (persisted image included).

Seconds are wall-clock seconds of one run (a large image is its own warm-up); the image's
generation is counted in the dask time only where it could not be persisted first (the
table's "persisted" column says which).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any

import numpy as np

from ..filters import correlate2d

__all__ = [
    "DEFAULT_IMAGES",
    "DEFAULT_KERNELS",
    "gaussian_kernel",
    "measure_case",
    "run",
    "start_rss_sampler",
    "worker_peak_rss",
]

#: Image sides and kernel sides of ``--dask`` without ``--image-sizes`` / ``--kernel-sizes``.
DEFAULT_IMAGES = (4096,)
DEFAULT_KERNELS = (3, 9, 31)
KINDS = ("gaussian", "random")
MIB = 2**20


def gaussian_kernel(size: int) -> np.ndarray:
    """A normalized float32 Gaussian of side ``size`` (sigma = size / 6), shape (size, size).

    Examples
    --------
    >>> k = gaussian_kernel(5)
    >>> k.shape, round(float(k.sum()), 5)
    ((5, 5), 1.0)
    """
    taps = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / max(size / 6, 0.5)) ** 2)
    kernel = np.outer(taps, taps)
    return (kernel / kernel.sum()).astype(np.float32)


def _kernel(size: int, kind: str) -> np.ndarray:
    if kind == "gaussian":
        return gaussian_kernel(size)
    return np.random.default_rng(size).standard_normal((size, size)).astype(np.float32)


def _available_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return 2**62


def _in_memory(side: int, kernel: np.ndarray) -> tuple[float, float] | None:
    """(seconds, peak MiB of the call's allocations), or None where it would not fit."""
    if 4 * side * side * 4 > _available_bytes():  # image, float copies, extension, result
        return None
    image = np.random.default_rng(0).standard_normal((side, side), dtype=np.float32)
    tracemalloc.start()
    started = time.perf_counter()
    correlate2d(image, kernel, "same", "symm")
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / MIB


#: Peak resident bytes seen by the sampler of this (worker) process.
_PEAK = {"bytes": 0, "running": False}


def start_rss_sampler(interval: float = 0.02) -> None:
    """In a worker: sample this process's resident memory every ``interval`` seconds and
    keep the maximum (``ru_maxrss`` cannot serve: Linux carries the parent's peak over
    fork and exec into the worker processes)."""
    import threading

    import psutil

    process = psutil.Process()
    _PEAK.update(bytes=process.memory_info().rss, running=True)

    def sample() -> None:
        while _PEAK["running"]:
            _PEAK["bytes"] = max(_PEAK["bytes"], process.memory_info().rss)
            time.sleep(interval)

    threading.Thread(target=sample, daemon=True).start()


def worker_peak_rss() -> int:
    """The sampled peak resident memory of this worker process in bytes; stops sampling."""
    _PEAK["running"] = False
    return _PEAK["bytes"]


def _on_cluster(side: int, kernel: np.ndarray, settings: dict) -> dict:
    """Seconds, whether the image was persisted first, and each worker's peak RSS (MiB)."""
    import dask.array as da
    from dask.distributed import Client, LocalCluster, wait

    workers, limit, chunk = settings["workers"], settings["memory_limit"], settings["chunk"]
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        memory_limit=limit,
        silence_logs=40,
    )
    with cluster, Client(cluster) as client:
        image = da.random.default_rng(0).standard_normal((side, side), chunks=chunk)
        image = image.astype(np.float32)
        budget = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
        persisted = image.nbytes <= budget / 2
        if persisted:
            image = client.persist(image)
            wait(image)
        client.run(start_rss_sampler)
        started = time.perf_counter()
        client.compute(correlate2d(image, kernel, "same", "symm").sum()).result()
        seconds = time.perf_counter() - started
        peaks = client.run(worker_peak_rss)
    return {
        "seconds": seconds,
        "persisted": persisted,
        "worker_peak_mib": [peaks[w] / MIB for w in sorted(peaks)],
    }


def measure_case(side: int, size: int, kind: str, settings: dict) -> dict:
    """One row of the table: in memory and on the cluster."""
    kernel = _kernel(size, kind)
    memory = _in_memory(side, kernel) if settings["in_memory"] else None
    row: dict[str, Any] = {"image": side, "kernel": size, "kind": kind}
    row["memory_seconds"], row["memory_peak_mib"] = memory if memory else (None, None)
    row.update(_on_cluster(side, kernel, settings))
    return row


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_row(row: dict) -> None:
    peaks = "/".join(f"{p:.0f}" for p in row["worker_peak_mib"])
    print(
        f"{row['image']:>6} {row['kernel']:>4} {row['kind']:<9} "
        f"{_cell(row['memory_seconds']):>9} {_cell(row['memory_peak_mib'], 0):>10} "
        f"{row['seconds']:>8.2f} {'yes' if row['persisted'] else 'no':>9} {peaks:>14}",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    """Print the table of ``arraycnn bench --dask`` (one line per case as it finishes)."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        print('arraycnn bench: --dask needs dask: pip install "arraycnn[dask]"')
        return 2
    settings = {
        "workers": args.dask_workers,
        "memory_limit": args.dask_memory_limit,
        "chunk": args.dask_chunk,
        "in_memory": not args.dask_no_in_memory,
    }
    sides = args.image_sizes or list(DEFAULT_IMAGES)
    sizes = args.kernel_sizes or list(DEFAULT_KERNELS)
    print(
        f"correlate2d 'same' 'symm', float32; dask: {settings['workers']} worker processes "
        f"x 1 thread, memory limit {settings['memory_limit']}, chunks {settings['chunk']}^2"
    )
    print(
        f"{'image':>6} {'k':>4} {'kind':<9} {'memory s':>9} {'peak MiB':>10} {'dask s':>8} "
        f"{'persisted':>9} {'worker MiB':>14}"
    )
    for side in sides:
        for size in sizes:
            for kind in KINDS:
                _print_row(measure_case(side, size, kind, settings))
    return 0
