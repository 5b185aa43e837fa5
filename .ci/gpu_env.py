"""GPU check, the machine: Python, package versions, CuPy's and torch's view of the GPU.

Writes a JSON object (``--json``) and prints it; .ci/gpu-check reads its flags
(``cupy_usable``, ``torch_cuda_usable``, ``arraycnn_importable``, ``pytest_timeout``) to
decide which steps can run. Never fails: what cannot be read is recorded as an error string.

Usage: python .ci/gpu_env.py --json env.json [--flag NAME]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import sys
from pathlib import Path
from typing import Any

#: Distributions whose versions are recorded (missing ones as None).
DISTRIBUTIONS = (
    "numpy",
    "scipy",
    "cupy-cuda13x",
    "cupy-cuda12x",
    "cupy",
    "torch",
    "array-api-compat",
    "array-api-extra",
    "array-api-strict",
    "hypothesis",
    "pytest",
    "pytest-xdist",
    "pytest-timeout",
    "rich",
    "matplotlib",
    "scikit-learn",
    "setuptools",
)


def error_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def cupy_facts() -> dict[str, Any]:
    try:
        import cupy
    except Exception as exc:
        return {"usable": False, "reason": f"not importable: {error_text(exc)}"}
    facts: dict[str, Any] = {"version": cupy.__version__}
    try:
        facts["usable"] = bool(cupy.is_available())
        if facts["usable"]:
            runtime = cupy.cuda.runtime
            props = runtime.getDeviceProperties(0)
            name = props["name"]
            facts["device"] = name.decode() if isinstance(name, bytes) else str(name)
            facts["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
            facts["cuda_runtime"] = runtime.runtimeGetVersion()
            facts["cuda_driver"] = runtime.driverGetVersion()
        else:
            facts["reason"] = "cupy.is_available() returned False"
    except Exception as exc:
        facts.update(usable=False, reason=error_text(exc))
    return facts


def torch_facts() -> dict[str, Any]:
    try:
        import torch
    except Exception as exc:
        return {"cuda_usable": False, "reason": f"not importable: {error_text(exc)}"}
    facts: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda}
    try:
        facts["cuda_usable"] = bool(torch.cuda.is_available())
        if facts["cuda_usable"]:
            facts["device"] = torch.cuda.get_device_name(0)
            facts["cudnn"] = torch.backends.cudnn.version()
            facts["capability"] = list(torch.cuda.get_device_capability(0))
        else:
            facts["reason"] = "torch.cuda.is_available() returned False"
    except Exception as exc:
        facts.update(cuda_usable=False, reason=error_text(exc))
    return facts


def arraycnn_facts() -> dict[str, Any]:
    try:
        module = importlib.import_module("arraycnn")
    except Exception as exc:
        return {"importable": False, "reason": error_text(exc)}
    return {
        "importable": True,
        "version": module.__version__,
        "path": str(Path(module.__file__).parent),
    }


def probe() -> dict[str, Any]:
    cupy, torch, arraycnn = cupy_facts(), torch_facts(), arraycnn_facts()
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "versions": versions(),
        "cupy": cupy,
        "torch": torch,
        "arraycnn": arraycnn,
        "flags": {
            "cupy_usable": bool(cupy.get("usable")),
            "torch_cuda_usable": bool(torch.get("cuda_usable")),
            "arraycnn_importable": bool(arraycnn.get("importable")),
            "pytest_timeout": importlib.util.find_spec("pytest_timeout") is not None,
            "xdist": importlib.util.find_spec("xdist") is not None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the facts")
    parser.add_argument("--flag", default=None, help="print only this flag: 1 or 0")
    args = parser.parse_args(argv)
    path = Path(args.json)
    if args.flag:  # read back a flag of an earlier probe
        print(1 if json.loads(path.read_text())["flags"].get(args.flag) else 0)
        return 0
    facts = probe()
    path.write_text(json.dumps(facts, indent=1, default=str))
    print(json.dumps(facts, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
