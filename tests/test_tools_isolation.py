"""The library never imports the tools: ``import arraycnn`` with the nn package and the
filters, one conv2d and one Sequential forward leave no ``arraycnn.tools`` module loaded
(checked in a fresh interpreter, where nothing else imported them first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROGRAM = """
import json, sys
import numpy as np
import arraycnn, arraycnn.nn, arraycnn.filters
from arraycnn import nn

x = np.ones((2, 1, 8, 8), dtype=np.float32)
arraycnn.conv2d(x, np.ones((3, 1, 3, 3), dtype=np.float32), padding=1)
arraycnn.filters.correlate2d(x[0, 0], np.ones((3, 3), dtype=np.float32), mode="same")
model = nn.Sequential([nn.Conv2D(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(72, 3)], seed=0)
model.build((1, 8, 8))
assert model.forward(x).shape == (2, 3)
print(json.dumps(sorted(name for name in sys.modules if name.startswith("arraycnn"))))
"""


def test_the_library_does_not_import_the_tools(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "ARRAYCNN_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "arraycnn.conv" in loaded and "arraycnn.nn" in loaded  # the program ran the library
    assert [name for name in loaded if name.startswith("arraycnn.tools")] == []
