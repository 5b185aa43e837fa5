"""asv benchmarks of arraycnn (see ``asv.conf.json`` at the top of the repository).

Thread counts are pinned to one before NumPy, SciPy or torch are imported, so that a
timing measures one core whatever else runs on the machine.

``ARRAYCNN_BENCH_TREE=<folder>`` times the ``arraycnn`` package in that folder (a checkout
of another commit) instead of the installed one: CI's history backfill (``.ci/history``)
runs this suite on earlier commits of ``main`` that way, with ``asv run --python=same
--set-commit-hash=<commit>``. asv does not pass ``PYTHONPATH`` to its benchmark processes;
other environment variables reach them.
"""

import os
import sys

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

#: The folder whose arraycnn package is timed instead of the installed one (None: installed).
TREE = (
    os.path.abspath(os.environ["ARRAYCNN_BENCH_TREE"])
    if os.environ.get("ARRAYCNN_BENCH_TREE")
    else None
)
if TREE is not None:
    sys.path.insert(0, TREE)
    import arraycnn

    if not os.path.abspath(arraycnn.__file__).startswith(os.path.join(TREE, "")):
        raise ImportError(
            f"ARRAYCNN_BENCH_TREE={TREE}, but arraycnn was imported from {arraycnn.__file__}"
        )
