"""The README's Python examples run as written (a user copies them first)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tomllib

from arraycnn import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """The README's fenced ``python`` blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def block_with(text: str) -> str:
    (block,) = [b for b in python_blocks() if text in b]
    return block


def install_section() -> str:
    return README.read_text().split("\n## Install\n", 1)[1].split("\n## ", 1)[0]


def test_the_convolution_example_runs():
    namespace: dict = {}
    exec(block_with("ac.conv2d_backward"), namespace)
    assert namespace["y"].shape == (8, 16, 32, 32)
    assert namespace["gw"].shape == namespace["w"].shape


def test_the_load_and_predict_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = nn.Sequential(
        [nn.Conv2D(1, 4, 3, padding="same"), nn.ReLU(), nn.Flatten(), nn.Dense(256, 10),
         nn.Softmax()],
        seed=0,
    )
    model.build((1, 8, 8))
    Path("out").mkdir()
    model.save("out/model_digits.npz")
    namespace: dict = {}
    exec(block_with("nn.load_model"), namespace)
    labels, proba, y = namespace["labels"], namespace["proba"], namespace["y"]
    assert labels.shape == y.shape == (1797,) and labels.dtype == np.int64
    assert proba.shape == (1797, 10)
    np.testing.assert_array_equal(labels, np.argmax(proba, axis=1))
    assert "accuracy" in capsys.readouterr().out


def test_the_readme_tables_every_extra_and_only_those():
    extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    rows = re.findall(r"^\| `(\w+)` \| ", install_section(), re.M)
    assert sorted(rows) == sorted(extras)
