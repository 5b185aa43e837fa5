"""asv benchmarks of arraycnn (see ``asv.conf.json`` at the top of the repository).

Thread counts are pinned to one before NumPy, SciPy or torch are imported, so that a
timing measures one core whatever else runs on the machine.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
