"""The lecture network's epoch against torch's, side by side, on one and on two threads.

Run from the repository root (torch installed)::

    python -m benchmarks.epoch_ratio --rounds 15 --threads 1,2

Every round times, in turn, one epoch of arraycnn on ``t`` threads (``fit(..., workers=t)``,
NumPy, :class:`~benchmarks.bench_train.ArraycnnEpoch`) and one of torch on ``t`` threads
(``torch.set_num_threads(t)``, :class:`~benchmarks.bench_train.TorchEpoch`) for every ``t``
of ``--threads``; the medians (ms) and arraycnn / torch per thread count are printed. The
asv rows ``TrainEpoch*`` time the same epochs one row at a time; a ratio wants them
interleaved (:func:`arraycnn.timing.interleaved_medians`), which this script does. Not an
asv benchmark: asv collects nothing from this module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from arraycnn.timing import interleaved_medians

from .bench_train import ArraycnnEpoch, TorchEpoch, host_epoch_data


def epoch_calls(threads: list[int]) -> dict[str, Callable[[], Any]]:
    """One arraycnn and one torch epoch per thread count, by label."""
    import torch
    from threadpoolctl import threadpool_limits

    x, labels = host_epoch_data()
    torch_epoch = TorchEpoch(x, labels)

    def arraycnn_on(count: int) -> Callable[[], Any]:
        epoch = ArraycnnEpoch("numpy", x, labels, workers=count)

        def run() -> Any:
            with threadpool_limits(limits=1, user_api="blas"):  # fit's own limit for count > 1
                return epoch()

        return run

    def torch_on(count: int) -> Callable[[], Any]:
        def run() -> Any:
            torch.set_num_threads(count)
            return torch_epoch()

        return run

    calls: dict[str, Callable[[], Any]] = {}
    for count in threads:
        calls[f"arraycnn {count}"] = arraycnn_on(count)
        calls[f"torch {count}"] = torch_on(count)
    return calls


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time the epochs, print the medians and ratios; return the medians (seconds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    medians = interleaved_medians(epoch_calls(threads), rounds=args.rounds, warm=True)
    for count in threads:
        ours, theirs = medians[f"arraycnn {count}"], medians[f"torch {count}"]
        print(
            f"{count} thread(s): arraycnn {ours * 1e3:.0f} ms, torch {theirs * 1e3:.0f} ms, "
            f"ratio {ours / theirs:.2f}"
        )
    return medians


if __name__ == "__main__":
    main()
