"""Progress display of :meth:`Sequential.fit <arraycnn.nn.model.Sequential.fit>`: a rich bar on
a terminal, one line per epoch otherwise, nothing when disabled.

The running loss and accuracy live on the model's device; reading them is a host round trip
(a synchronisation on a GPU). The bar reads them only at a few ticks per epoch
(:data:`TICKS_PER_EPOCH`, :func:`is_tick`); the per-epoch line reads them once, at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["LINE_WIDTH", "TICKS_PER_EPOCH", "Reporter", "epoch_line", "format_metrics", "is_tick"]

#: The per-epoch line fits this many columns (up to 999 epochs, losses below 10, epochs
#: shorter than 1000 s, with validation data).
LINE_WIDTH = 80
#: Shorter names for the progress display (the history keeps the full ones, as Keras').
SHORT_NAMES = {"accuracy": "acc", "val_accuracy": "val_acc"}
#: The bar shows the running metrics at most this many times per epoch, the last at its end.
TICKS_PER_EPOCH = 4


def is_tick(step: int, steps_per_epoch: int, ticks: int = TICKS_PER_EPOCH) -> bool:
    """Whether the bar reads the running metrics after ``step`` (1-based) of an epoch: at
    ``ticks - 1`` evenly spaced steps before the last (the epoch's end reads them anyway).

    Examples
    --------
    >>> [s for s in range(1, 9) if is_tick(s, 8)]
    [2, 4, 6]
    >>> [s for s in range(1, 101) if is_tick(s, 100)]
    [25, 50, 75]
    >>> [s for s in range(1, 3) if is_tick(s, 2)]
    [1]
    """
    if step >= steps_per_epoch:
        return False
    return step * ticks // steps_per_epoch != (step - 1) * ticks // steps_per_epoch


def format_metrics(metrics: dict[str, float]) -> str:
    """``"name value"`` pairs with 4 decimals, ``epoch_time`` left out, accuracies shortened
    to ``acc`` (:data:`SHORT_NAMES`).

    Examples
    --------
    >>> format_metrics({"loss": 0.5, "accuracy": 0.875, "epoch_time": 1.0})
    'loss 0.5000  acc 0.8750'
    """
    return "  ".join(
        f"{SHORT_NAMES.get(k, k)} {v:.4f}" for k, v in metrics.items() if k != "epoch_time"
    )


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """The line printed after an epoch: number, metrics and wall seconds (``epoch_time``).

    At most :data:`LINE_WIDTH` columns for up to 999 epochs, losses below 10 and epochs
    under 1000 s, with validation metrics.

    Examples
    --------
    >>> epoch_line(3, 30, {"loss": 0.25, "accuracy": 0.9, "epoch_time": 1.25})
    'epoch 3/30  loss 0.2500  acc 0.9000  1.2s'
    """
    line = f"epoch {epoch}/{epochs}  {format_metrics(metrics)}"
    if "epoch_time" in metrics:
        line += f"  {metrics['epoch_time']:.1f}s"
    return line


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


class Reporter:
    """Training progress: a rich bar on a terminal, one line per epoch otherwise.

    A context manager: the bar (if any) is shown while the ``with`` block runs.

    Parameters
    ----------
    enabled : bool
        False prints nothing but :meth:`message`.
    epochs, steps_per_epoch : int
        The bar's extent.

    Examples
    --------
    >>> with Reporter(True, epochs=2, steps_per_epoch=1) as reporter:  # not a terminal
    ...     reporter.start_epoch(1)
    ...     reporter.step(lambda: {"loss": 0.5, "accuracy": 1.0})
    ...     reporter.end_epoch(1, {"loss": 0.5, "accuracy": 1.0, "epoch_time": 0.5})
    epoch 1/2  loss 0.5000  acc 1.0000  0.5s
    """

    def __init__(self, enabled: bool, epochs: int, steps_per_epoch: int) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.live = enabled and sys.stdout.isatty()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._step = 0

    def __enter__(self) -> Reporter:
        if self.live:
            self._progress = _bar()
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int) -> None:
        """Open the bar of ``epoch`` (1-based)."""
        self._step = 0
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"epoch {epoch}/{self.epochs}", total=self.steps_per_epoch, metrics=""
            )

    def step(self, means: Callable[[], dict[str, float]]) -> None:
        """Advance the bar by one step; at a tick (:func:`is_tick`) show the epoch's running
        means, which ``means()`` reads from the device (a host round trip). Without a bar,
        ``means`` is never called."""
        self._step += 1
        if self._progress is None:
            return
        if is_tick(self._step, self.steps_per_epoch):
            self._progress.update(self._task, advance=1, metrics=format_metrics(means()))
        else:
            self._progress.update(self._task, advance=1)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Show the epoch's final metrics (``epoch_time`` in seconds)."""
        line = epoch_line(epoch, self.epochs, metrics)
        if self._progress is not None:
            self._progress.update(self._task, metrics=format_metrics(metrics))
        elif self.enabled:
            print(line, flush=True)

    def message(self, text: str) -> None:
        """Print ``text`` (even when disabled), above the bar if one is shown.

        Examples
        --------
        >>> Reporter(False, epochs=1, steps_per_epoch=1).message("stopped")
        stopped
        """
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, flush=True)
