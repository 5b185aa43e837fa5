"""The library's JSON files in the user cache directory: the autotune choices and the
calibration of ``arraycnn tune``.

Each file is an object ``{"format": <int>, <section>: {key: entry}}``. Readers check the
format and the section (:func:`read_section`, a :class:`ValueError` naming what is wrong);
writers merge one entry into what is on disk under an exclusive lock on ``<file>.lock``
(:func:`fcntl.flock`, where the platform has it) held from the read to the replace, and
replace the file atomically (a temporary file, then :func:`os.replace`), so concurrent
writers keep each other's entries and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows: writers may then lose each other's entries
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_SUFFIX", "atomic_write_json", "locked", "merge_entry", "read_section"]

#: Suffix of the lock file beside a cache file.
LOCK_SUFFIX = ".lock"


def read_section(path: Path, fmt: int, section: str, label: str = "cache") -> dict[str, Any]:
    """The ``section`` object of the file at ``path`` in format ``fmt``.

    Raises
    ------
    FileNotFoundError, OSError
        The file cannot be read.
    ValueError
        It is not JSON, has another format, or no ``section`` object (the message names
        the file by ``label``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.json"
    >>> merge_entry(path, 1, "entries", "a", {"strategy": "fft"})
    >>> read_section(path, 1, "entries")
    {'a': {'strategy': 'fft'}}
    >>> read_section(path, 2, "entries", "demo")
    Traceback (most recent call last):
    ...
    ValueError: unknown demo format 1
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"unknown {label} format {found!r}")
    entries = data.get(section)
    if not isinstance(entries, dict):
        raise ValueError(f"malformed {label} file: no {section!r} object")
    return entries


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file + :func:`os.replace`).

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.json"
    >>> atomic_write_json(path, {"format": 1, "entries": {}})
    >>> json.loads(path.read_text())
    {'entries': {}, 'format': 1}
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the file ``path`` (its ``.lock`` file) meanwhile; raises
    OSError where the lock file cannot be made.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.json"
    >>> with locked(path):  # other writers wait here
    ...     atomic_write_json(path, {"format": 1, "entries": {}})
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def merge_entry(path: Path, fmt: int, section: str, key: str, entry: Any) -> None:
    """Set ``section[key] = entry`` in the file, keeping what other processes wrote (read,
    merge and replace under the file's lock; a missing or unreadable file starts afresh).
    Raises OSError where the file cannot be written.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.json"
    >>> merge_entry(path, 1, "entries", "a", 1)
    >>> merge_entry(path, 1, "entries", "b", 2)
    >>> read_section(path, 1, "entries")
    {'a': 1, 'b': 2}
    """
    with locked(path):
        try:
            entries = dict(read_section(path, fmt, section))
        except (OSError, ValueError):
            entries = {}
        entries[key] = entry
        atomic_write_json(path, {"format": fmt, section: entries})
