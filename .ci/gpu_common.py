"""Shared pieces of the GPU check's scripts (.ci/gpu-check): the step report, the devices
and the timing of contenders.

A step script writes its figures to a JSON file that it rewrites after every case, so that a
step stopped by its time limit still leaves what it measured. A step that cannot run here (no
CuPy, no CUDA device) writes ``status: "skipped"`` with the reason and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


class Report:
    """A JSON object on disk, rewritten (atomically) after every change."""

    def __init__(self, path: str | os.PathLike, **fields: Any) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = dict(fields)
        self.flush()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.flush()

    def flush(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=1, default=str, allow_nan=False))
        partial.replace(self.path)


def error_text(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


#: ``ARRAYCNN_GPU_CHECK_STANDIN=1``: NumPy stands in for CuPy and torch's CPU for CUDA, so
#: that the scripts' code paths can be exercised on a machine without a GPU (figures
#: meaningless). Never set by .ci/gpu-check itself.
STANDIN = os.environ.get("ARRAYCNN_GPU_CHECK_STANDIN") == "1"


def array_backend() -> tuple[str | None, str | None]:
    """("cupy", None) when CuPy has a usable CUDA device, else (None, why not); ("numpy",
    None) under :data:`STANDIN`."""
    if STANDIN:
        return "numpy", None
    try:
        import cupy
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc})"
    try:
        if not cupy.is_available():
            return None, "CuPy is installed but no CUDA device is usable"
    except Exception as exc:
        return None, f"CuPy is installed but CUDA failed: {error_text(exc)}"
    return "cupy", None


def torch_device() -> tuple[ModuleType | None, str, str | None]:
    """(torch, "cuda", None) when torch has a usable CUDA device, else (None, "", why not);
    (torch, "cpu", None) under :data:`STANDIN`."""
    try:
        import torch
    except ImportError as exc:
        return None, "", f"torch is not installed ({exc})"
    if STANDIN:
        return torch, "cpu", None
    if not torch.cuda.is_available():
        return None, "", f"torch {torch.__version__} sees no CUDA device"
    return torch, "cuda", None


def skip(report_path: str, reason: str, **fields: Any) -> int:
    """Write a skipped step's report; the exit status of a skipped step (0)."""
    Report(report_path, status="skipped", reason=reason, **fields)
    print(f"skipped: {reason}")
    return 0


def free_device_memory() -> None:
    """Hand the cached blocks of CuPy's and torch's allocators back to the driver."""
    if "cupy" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    if "torch" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["torch"].cuda.empty_cache()


@contextlib.contextmanager
def cudnn_settings(torch: ModuleType, *, benchmark: bool, tf32: bool) -> Iterator[None]:
    """cuDNN's autotuner (``cudnn.benchmark``) and float32 precision (TF32 or IEEE) for the
    block, then back as they were."""
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    modern = conv is not None and hasattr(conv, "fp32_precision")
    previous = (cudnn.benchmark, conv.fp32_precision if modern else cudnn.allow_tf32)
    cudnn.benchmark = benchmark
    if modern:
        conv.fp32_precision = "tf32" if tf32 else "ieee"
    else:
        cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        cudnn.benchmark = previous[0]
        if modern:
            conv.fp32_precision = previous[1]
        else:
            cudnn.allow_tf32 = previous[1]


def host(a: Any) -> np.ndarray:
    """``a`` (CuPy array, torch tensor, NumPy) as a float64 NumPy array."""
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    elif hasattr(a, "get"):
        a = a.get()
    return np.asarray(a, dtype=np.float64)


def relative_error(got: Any, want: Any) -> float:
    """max |got - want| / max |want| (over every array of a tuple)."""
    pairs = zip(got, want) if isinstance(want, (tuple, list)) else [(got, want)]
    worst = 0.0
    for g, w in pairs:
        if w is None or g is None:
            continue
        g, w = host(g), host(w)
        if g.shape != w.shape:
            return math.inf
        scale = max(float(np.max(np.abs(w), initial=0.0)), 1e-30)
        worst = max(worst, float(np.max(np.abs(g - w), initial=0.0)) / scale)
    return worst


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 4)


class Deadline:
    """Seconds left of a step's budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def time_contenders(
    calls: dict[str, Callable[[], Any]],
    *,
    reference: str | None,
    rounds: int,
    min_seconds: float,
    slow_seconds: float,
    deadline: Deadline | None = None,
) -> dict[str, dict[str, Any]]:
    """Time each contender: its first call (planning, kernel compilation and autotuning
    included), then the median of interleaved, synchronised rounds
    (:func:`arraycnn.timing.interleaved_medians`). A contender that raises is recorded with
    its error; one whose second call takes longer than ``slow_seconds`` keeps that one time.
    Past ``deadline`` (seconds left under ``slow_seconds``) the contenders still to come are
    marked ``not_run`` and no rounds are timed.
    ``reference`` names the contender whose output the others are compared with
    (``rel_err``: max abs difference over the reference's max abs).
    """
    from arraycnn.backend import synchronize
    from arraycnn.timing import interleaved_medians, time_call

    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Any] = {}
    timed: dict[str, Callable[[], Any]] = {}

    def out_of_time() -> bool:
        return deadline is not None and deadline.left() < slow_seconds

    for name, call in calls.items():
        if out_of_time():
            results[name] = {"not_run": "the step's budget is spent"}
            continue
        try:
            first = time_call(call)
            started = time.perf_counter()
            out = call()
            synchronize(out[0] if isinstance(out, (tuple, list)) else out)
            second = time.perf_counter() - started
        except Exception as exc:
            results[name] = {"error": error_text(exc)}
            continue
        outputs[name] = out
        results[name] = {"first_ms": milliseconds(first)}
        if second > slow_seconds or out_of_time():  # no rounds: its second call stands
            results[name].update(ms=milliseconds(second), single_call=True)
        else:
            timed[name] = call
    if timed:
        medians = interleaved_medians(timed, rounds, min_seconds=min_seconds, max_rounds=40)
        for name, seconds in medians.items():
            results[name]["ms"] = milliseconds(seconds)
    if reference in outputs:
        for name, out in outputs.items():
            try:
                results[name]["rel_err"] = float(f"{relative_error(out, outputs[reference]):.3g}")
            except Exception as exc:
                results[name]["rel_err_error"] = error_text(exc)
    return results


def time_case(
    make_calls: Callable[[], dict[str, Callable[[], Any]]],
    reference: str | None,
    args: Any,
    deadline: Deadline | None,
) -> dict[str, dict[str, Any]]:
    """:func:`time_contenders` on the calls ``make_calls()`` builds, with the script's
    ``--rounds``, ``--min-seconds`` and ``--slow-seconds``; a failure outside any one
    contender (building the calls) is recorded as the entry ``"error"``."""
    try:
        return time_contenders(
            make_calls(),
            reference=reference,
            rounds=args.rounds,
            min_seconds=args.min_seconds,
            slow_seconds=args.slow_seconds,
            deadline=deadline,
        )
    except Exception as exc:  # a failure outside any one contender: note it, go on
        return {"error": {"error": error_text(exc)}}


def geometric_mean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    if not values:
        return None
    return float(math.exp(sum(math.log(v) for v in values) / len(values)))
