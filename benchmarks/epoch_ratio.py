"""The lecture network's epoch against torch's, side by side, on one and on two threads.

Run from the repository root (torch installed)::

    python -m benchmarks.epoch_ratio --rounds 15 --threads 1,2 [--processes]

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


class ProcessEpoch:
    """One epoch of the lecture network on ``workers`` worker processes
    (``parallel="processes"``): fit's own epoch loop over steps, with the workers started once
    (in ``fit`` they start once per call, about a second, then serve every epoch); ``close``
    stops them."""

    def __init__(self, x: Any, labels: Any, workers: int) -> None:
        from arraycnn import nn
        from arraycnn.examples.lecture_mnist import build_model
        from arraycnn.nn import training
        from arraycnn.nn.progress import Reporter
        from arraycnn.nn.sharding import sharded

        from .bench_train import BATCH, LEARNING_RATE, MODEL_SEED, SAMPLE

        model = build_model(backend="numpy", seed=MODEL_SEED)
        model.build(SAMPLE)
        self._run = training._start_run(
            model, x, labels, 1, BATCH, "categorical_crossentropy", nn.Adam(LEARNING_RATE),
            None, True, None, workers, "processes",
        )  # fmt: skip
        self._shards = sharded(model, workers, "processes")
        self._run.shards = self._shards.__enter__()
        self._reporter = Reporter(False, 1, self._run.steps_per_epoch)
        self._epoch = training._train_epoch

    def __call__(self) -> Any:
        """One epoch; returns the last parameter written (what the timer waits for)."""
        self._epoch(self._run, self._reporter)
        return next(reversed(self._run.model.parameters().values()))

    def close(self) -> None:
        self._shards.__exit__(None, None, None)


def epoch_calls(threads: list[int], processes: bool = False) -> dict[str, Callable[[], Any]]:
    """One arraycnn and one torch epoch per thread count, by label; with ``processes``, also
    arraycnn on that many worker processes for every count above 1 (:class:`ProcessEpoch`)."""
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
        if processes and count > 1:
            calls[f"arraycnn {count} processes"] = ProcessEpoch(x, labels, count)
        calls[f"torch {count}"] = torch_on(count)
    return calls


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time the epochs, print the medians and ratios; return the medians (seconds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument(
        "--processes",
        action="store_true",
        help="also arraycnn on worker processes (fit(parallel='processes')) per count above 1",
    )
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    calls = epoch_calls(threads, args.processes)
    try:
        medians = interleaved_medians(calls, rounds=args.rounds, warm=True)
    finally:
        for call in calls.values():
            if isinstance(call, ProcessEpoch):
                call.close()
    for count in threads:
        theirs = medians[f"torch {count}"]
        for label in (f"arraycnn {count}", f"arraycnn {count} processes"):
            if label in medians:
                ours = medians[label]
                print(
                    f"{count} thread(s): {label} {ours * 1e3:.0f} ms, torch {theirs * 1e3:.0f} "
                    f"ms, ratio {ours / theirs:.2f}"
                )
    return medians


if __name__ == "__main__":
    main()
