"""Recording which kernel functions run (the path tests of the strategies' own modules)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any


def record_calls(
    monkeypatch, module: ModuleType, labels: dict[str, str], taken: list[str] | None = None
) -> list[str]:
    """Wrap ``module``'s functions named in ``labels`` so that each call appends its label to
    ``taken`` (a new list if None; pass one to record several modules in one order), which is
    returned; the functions still run. ``monkeypatch`` undoes it.

    Examples
    --------
    >>> import types
    >>> from _pytest.monkeypatch import MonkeyPatch
    >>> m = types.SimpleNamespace(f=lambda x: x + 1)
    >>> patch = MonkeyPatch()
    >>> taken = record_calls(patch, m, {"f": "F"})
    >>> m.f(1), taken
    (2, ['F'])
    >>> patch.undo()
    """
    taken = [] if taken is None else taken

    def recorded(original: Callable[..., Any], label: str) -> Callable[..., Any]:
        def call(*args, **kwargs):
            taken.append(label)
            return original(*args, **kwargs)

        return call

    for name, label in labels.items():
        monkeypatch.setattr(module, name, recorded(getattr(module, name), label))
    return taken
