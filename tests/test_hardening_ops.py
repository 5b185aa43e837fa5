"""Memory hardening of the operations: the budget's readings, sizes checked before any
allocation, and backward (and forward) under a small budget in chunks and row bands.

Oracles: scipy.signal / the explicit loops of :mod:`oracles` (float64), reshapes for
non-overlapping pooling windows, fake files for the memory readings.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import oracles
import pytest

import arraycnn as ac
from arraycnn import budget
from arraycnn.backend import device_of
from arraycnn.budget import HostSources
from arraycnn.conv import chunking, dispatch
from arraycnn.testing import assert_close

GiB = 2**30


# --------------------------------------------------------------------------- readings


def test_meminfo_parsing():
    text = "MemTotal:  16000000 kB\nMemFree: 100 kB\nMemAvailable:   8000000 kB\n"
    assert budget.meminfo_available(text) == 8000000 * 1024
    for bad in ("", None, "MemAvailable: lots kB\n", "MemTotal: 5 kB\n", "MemAvailable:\n"):
        assert budget.meminfo_available(bad) is None


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _sources(tmp_path, cgroup: str, **kwargs) -> HostSources:
    _write(tmp_path / "self_cgroup", cgroup)
    return HostSources(
        meminfo=str(tmp_path / "meminfo"),
        self_cgroup=str(tmp_path / "self_cgroup"),
        cgroup_root=str(tmp_path / "cgroup"),
        statm=str(tmp_path / "statm"),
        **kwargs,
    )


def test_cgroup_v2_room_is_the_tightest_ancestor(tmp_path):
    sources = _sources(tmp_path, "0::/user.slice/app.scope\n")
    root = tmp_path / "cgroup"
    _write(root / "user.slice" / "app.scope" / "memory.max", "4294967296\n")
    _write(root / "user.slice" / "app.scope" / "memory.current", "1073741824\n")
    _write(root / "user.slice" / "memory.max", "max\n")  # no limit at this level
    assert budget.cgroup_room(sources) == 3 * GiB
    _write(root / "user.slice" / "memory.max", str(2 * GiB))  # a tighter parent
    _write(root / "user.slice" / "memory.current", str(GiB + 512))
    assert budget.cgroup_room(sources) == GiB - 512
    _write(root / "user.slice" / "memory.current", str(3 * GiB))  # over its limit: no room
    assert budget.cgroup_room(sources) == 0


def test_cgroup_v1_room_and_unlimited(tmp_path):
    sources = _sources(tmp_path, "5:cpu,cpuacct:/x\n4:memory:/docker/abc\n1:name=systemd:/\n")
    group = tmp_path / "cgroup" / "memory" / "docker" / "abc"
    _write(group / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    _write(group / "memory.usage_in_bytes", "12345\n")
    assert budget.cgroup_room(sources) is None
    _write(group / "memory.limit_in_bytes", str(GiB))
    assert budget.cgroup_room(sources) == GiB - 12345


def test_cgroup_path_not_mounted_reads_the_nearest_mounted_ancestor(tmp_path):
    """A container lists its host path but sees its own cgroup at the mount's root."""
    sources = _sources(tmp_path, "4:memory:/kubepods/pod1/abc\n")
    root = tmp_path / "cgroup" / "memory"
    _write(root / "memory.limit_in_bytes", str(2 * GiB))
    _write(root / "memory.usage_in_bytes", str(GiB // 2))
    assert budget.cgroup_room(sources) == GiB + GiB // 2


def test_cgroup_unreadable_or_garbage(tmp_path):
    assert budget.cgroup_room(_sources(tmp_path, "garbage without colons\n")) is None
    sources = _sources(tmp_path, "0::/../../etc\n")  # no escape from the mount
    _write(tmp_path / "cgroup" / "memory.max", "not a number")
    assert budget.cgroup_room(sources) is None


def test_address_space_room():
    assert budget.address_space_room(HostSources(address_limit=8 * GiB, address_used=GiB)) == (
        7 * GiB
    )
    assert budget.address_space_room(HostSources(address_limit=GiB, address_used=2 * GiB)) == 0
    assert budget.address_space_room(HostSources(address_limit=-1, address_used=0)) is None


def test_address_space_reads_statm(tmp_path):
    _write(tmp_path / "statm", "1000 20 3 4 0 5 0\n")
    page = os.sysconf("SC_PAGE_SIZE")
    sources = HostSources(statm=str(tmp_path / "statm"), address_limit=10**12)
    assert budget.address_space_room(sources) == 10**12 - 1000 * page
    _write(tmp_path / "statm", "")
    assert budget.address_space_room(sources) is None


def test_host_available_is_the_least_reading(tmp_path):
    sources = _sources(tmp_path, "0::/app\n", address_limit=6 * GiB, address_used=GiB)
    _write(tmp_path / "meminfo", "MemAvailable: 8388608 kB\n")  # 8 GiB
    assert budget.host_available(sources) == 5 * GiB  # RLIMIT_AS binds
    _write(tmp_path / "cgroup" / "app" / "memory.max", str(3 * GiB))
    _write(tmp_path / "cgroup" / "app" / "memory.current", "0")
    assert budget.host_available(sources) == 3 * GiB  # the cgroup binds
    _write(tmp_path / "meminfo", "MemAvailable: 1048576 kB\n")
    assert budget.host_available(sources) == GiB  # available memory binds
    nothing = HostSources(
        meminfo="/nonexistent",
        self_cgroup="/nonexistent",
        statm="/nonexistent",
        address_limit=-1,
    )
    assert budget.host_available(nothing) is None


def test_default_budget_is_a_fraction_of_the_reading():
    ac.clear_caches()
    available = budget.available_memory()
    assert budget.workspace_limit() == int(budget.DEFAULT_FRACTION * available)
    live = budget.host_available()
    if live is not None:
        assert abs(available - live) < 0.1 * live  # memory moves
    assert budget.memory_limit() == available or live is None


def test_check_size_names_the_size_and_the_limit():
    calls = []

    def what() -> str:
        calls.append(1)
        return "the thing"

    budget.check_size(100, what, limit=100)
    assert calls == []  # the message is made only for the error
    with pytest.raises(
        ac.WorkspaceError,
        match=r"the thing needs 101 bytes \(101 B\), more "
        r"than the budget of 100 bytes \(100 B\)",
    ):
        budget.check_size(101, what, limit=100, kind="the budget")
    with pytest.raises(MemoryError, match=r"needs \d+ bytes .*more than the memory available"):
        budget.check_size(2**80, "a result")


# --------------------------------------------------------------------------- sizes first

HUGE = (100000, 64, 1024, 1024)


def _huge(xp, shape=HUGE):
    """A broadcast array of ``shape`` (allocates one element)."""
    return xp.broadcast_to(xp.ones((1,) * len(shape), dtype=xp.float32), shape)


def test_a_broadcast_input_is_refused_before_anything_is_allocated(xp, traced_peak):
    x, w = _huge(xp), xp.ones((64, 64, 3, 3), dtype=xp.float32)
    gy = _huge(xp, (100000, 64, 1022, 1022))
    calls = {
        "conv2d": lambda: ac.conv2d(x, w),
        "conv2d_backward": lambda: ac.conv2d_backward(gy, x, w),
        "max_pool2d": lambda: ac.max_pool2d(x, 2),
        "avg_pool2d": lambda: ac.avg_pool2d(x, 3, stride=1, padding=1),
        "max_pool2d_backward": lambda: ac.max_pool2d_backward(
            _huge(xp, (*HUGE[:2], 512, 512)), x, 2
        ),
        "correlate2d": lambda: ac.correlate2d(
            _huge(xp, (HUGE[0], *HUGE[2:])), xp.ones((3, 3)), "same"
        ),
        "convolve2d": lambda: ac.convolve2d(
            _huge(xp, (HUGE[0], *HUGE[2:])), xp.ones((5, 5)), "full"
        ),
    }
    for name, call in calls.items():

        def refused(call=call, name=name):
            with pytest.raises(
                ac.WorkspaceError,
                match=rf"{name}: .* needs \d+ bytes .* more "
                r"than the memory available of \d+ bytes",
            ):
                call()

        _, peak = traced_peak(refused)
        assert peak < 2**20, name  # nothing near the size was allocated (NumPy's own count)


def test_the_size_error_names_the_shapes():
    x = np.broadcast_to(np.float64(0), (2**20, 8, 1024, 1024))
    with pytest.raises(
        ac.WorkspaceError,
        match=r"output \(N, F, Ho, Wo\) = "
        r"\(1048576, 4, 1024, 1024\) of float64 needs 35184372088832 bytes",
    ):
        ac.conv2d(x, np.ones((4, 8, 1, 1)))
    with pytest.raises(ac.WorkspaceError, match=r"max_pool2d: the output \(1048576, 8, 512, 512\)"):
        ac.max_pool2d(x, 2)


# --------------------------------------------------------------------------- small budgets


@pytest.mark.parametrize("strategy", [*ac.STRATEGY_NAMES, "auto"])
def test_training_sized_calls_run_under_1mib(strategy, rng):
    """A training-sized layer, forward and backward, under a 1 MiB workspace budget: in
    chunks (or bands), each piece's predicted workspace within the budget, the results
    those of the oracle as they are without the budget."""
    x = rng.standard_normal((16, 8, 28, 28)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((16, 16, 28, 28)).astype(np.float32)
    ref = oracles.reference(x, w, None, gy, padding=1)
    xp = ac.resolve_backend("numpy")
    geom = ac.conv_geometry(x.shape, w.shape, padding=1)
    results = {}
    for limit in (None, "1M"):
        with ac.config(workspace_limit=limit):
            if limit:
                for d in ("forward", "backward"):
                    p = dispatch.plan(strategy, w, geom, xp=xp, x=x, gy=gy, direction=d)
                    assert p.chunked and p.bytes <= 2**20, (d, p.reason)
            y = ac.conv2d(x, w, padding=1, strategy=strategy)
            gx, gw, _ = ac.conv2d_backward(gy, x, w, padding=1, strategy=strategy)
            forward = ac.choose_strategy(x, w, padding=1, strategy=strategy)
            info = ac.conv.explain(x, w, padding=1, strategy=strategy, direction="backward", gy=gy)
            models = {"y": oracles.ERROR_MODEL[forward]["y"]}
            models |= {k: oracles.ERROR_MODEL[info["choice"]][k] for k in ("gx", "gw")}
            results[limit] = (f"{forward}/{info['choice']}", models, y, gx, gw)
    for limit, (name, models, y, gx, gw) in results.items():
        s_y, s_gx, s_gw, _ = ref.scales_for(models)
        for got, want, scale, label in (
            (y, ref.y, s_y, "y"),
            (gx, ref.gx, s_gx, "gx"),
            (gw, ref.gw, s_gw, "gw"),
        ):
            assert_close(got, want, scale=scale, err_msg=f"{name} {label} budget {limit}")


BANDED = [
    (
        (2, 4, 23, 9),
        (4, 2, 4, 3),
        {"padding": ((3, 1), (1, 2)), "stride": (2, 1), "dilation": (1, 2), "groups": 2},
    ),
    ((1, 1, 17, 6), (2, 1, 3, 3), {"padding": ((9, 0), (0, 0))}),  # top bands read padding
    ((1, 2, 20, 7), (3, 2, 5, 2), {"padding": "full", "stride": 3}),
    ((1, 2, 21, 8), (4, 1, 3, 5), {"padding": ((2, 0), (1, 3)), "groups": 2}),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), BANDED, ids=str)
@pytest.mark.parametrize("strategy", ac.STRATEGY_NAMES)
def test_one_sample_over_the_budget_runs_in_bands_of_rows(
    strategy, x_shape, w_shape, kwargs, xp, to_xp, rng
):
    if oracles.unsupported(strategy, x_shape, w_shape, **kwargs):
        pytest.skip(oracles.unsupported(strategy, x_shape, w_shape, **kwargs))
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    geom = ac.conv_geometry(x_shape, w_shape, **kwargs)
    gy = rng.standard_normal(geom.y_shape)
    ref = oracles.reference(x, w, None, gy, **kwargs)
    tx, tw, tgy = to_xp(x), to_xp(w), to_xp(gy)
    s_y, s_gx, s_gw, _ = ref.scales_for(oracles.ERROR_MODEL[strategy])
    for direction in ("forward", "backward"):
        call = dispatch.describe(tw, geom, xp=xp, direction=direction)
        cal = ac.conv.cost.calibration_for(call.backend)[0]
        rank = 2 if strategy == "separable" else None
        one = chunking.price(
            strategy, call.with_n(1), rank=rank, cal=cal, budget=2**62, reason=""
        ).bytes
        row = chunking.price(strategy, call, rank=rank, cal=cal, budget=1, reason="").bytes
        if row >= one:  # one row costs as much as the sample: nothing to band
            continue
        with ac.config(workspace_limit=(row + one) // 2):
            p = dispatch.plan(strategy, tw, geom, xp=xp, x=tx, gy=tgy, direction=direction)
            assert p.chunk == 1 and 1 <= p.rows < geom.ho and p.bytes <= (row + one) // 2
            if direction == "forward":
                y = ac.conv2d(tx, tw, strategy=strategy, **kwargs)
                assert_close(y, ref.y, scale=s_y, xp=xp, device=device_of(tx), err_msg="y")
            else:
                gx, gw, _ = ac.conv2d_backward(tgy, tx, tw, strategy=strategy, **kwargs)
                assert_close(gx, ref.gx, scale=s_gx, xp=xp, device=device_of(tx), err_msg="gx")
                assert_close(gw, ref.gw, scale=s_gw, xp=xp, device=device_of(tx), err_msg="gw")


def test_one_row_over_the_budget_raises_for_a_forced_strategy(rng):
    x, w = rng.standard_normal((1, 1, 16, 16)), rng.standard_normal((1, 1, 3, 3))
    with ac.config(workspace_limit="2K"):
        with pytest.raises(
            ac.WorkspaceError,
            match=r"strategy='im2col' \(backward\) needs a "
            r"predicted workspace of \d+ bytes .* even for one output row of "
            r"one sample",
        ):
            ac.conv2d_backward(np.ones((1, 1, 14, 14)), x, w, strategy="im2col")
        with pytest.raises(ac.WorkspaceError, match="no convolution strategy fits this call"):
            ac.conv2d(x, w)


def test_forced_im2col_on_a_large_image_with_a_large_kernel_runs_in_bands(rng):
    """Under the default budget im2col cuts a large image into its own cache-sized bands;
    under a small one the dispatcher runs it in bands of output rows, forward and backward
    (each band's input gradient added onto the input rows it read)."""
    big = ac.conv_geometry((1, 1, 2048, 2048), (1, 1, 31, 31), padding="same")
    p = dispatch.plan("im2col", np.ones((1, 1, 31, 31), np.float32), big, xp=np)
    assert 1 <= p.rows < big.ho and len(p.bands) > 1
    x = rng.standard_normal((1, 1, 200, 190)).astype(np.float32)
    w = rng.standard_normal((1, 1, 31, 31)).astype(np.float32)
    gy = rng.standard_normal((1, 1, 200, 190)).astype(np.float32)
    ref = oracles.reference(x, w, None, gy, padding="same")
    limit = 4 * 2**20  # one sample's columns alone take 140 MiB
    with ac.config(workspace_limit=limit):
        geom = ac.conv_geometry(x.shape, w.shape, padding="same")
        for direction in ("forward", "backward"):
            p = dispatch.plan("im2col", w, geom, xp=np, x=x, gy=gy, direction=direction)
            assert 1 <= p.rows < geom.ho and p.bytes <= limit
        y = ac.conv2d(x, w, padding="same", strategy="im2col")
        gx, gw, _ = ac.conv2d_backward(gy, x, w, padding="same", strategy="im2col")
    local = ref.scales["local"]
    assert_close(y, ref.y, scale=local[0])
    assert_close(gx, ref.gx, scale=local[1])
    assert_close(gw, ref.gw, scale=local[2])


def test_explain_reports_the_rows(rng):
    x, w = rng.standard_normal((1, 1, 64, 64)), rng.standard_normal((1, 1, 5, 5))
    with ac.config(workspace_limit="96K"):
        info = ac.conv.explain(x, w, padding=2, strategy="naive")
    assert info["choice"] == "naive" and 1 <= info["rows"] < 64
    assert "bands of" in info["why"] and info["strategies"]["naive"]["rows"] == info["rows"]


# --------------------------------------------------------------------------- pooling


def _windows(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H/2, W/2, 4): the 2x2 windows of stride 2."""
    n, c, h, w = a.shape
    return (
        a.reshape(n, c, h // 2, 2, w // 2, 2)
        .transpose(0, 1, 2, 4, 3, 5)
        .reshape(n, c, h // 2, w // 2, 4)
    )


# forward: samples (2 per block), channels (3, 2 planes); backward: samples (1), channels
# (1 plane): temporaries of 110 and 221 KiB per plane, 1.6 and 3.2 MiB in all
@pytest.mark.parametrize("limit", ["1200K", "400K", "250K"])
def test_pooling_runs_in_blocks_of_planes_under_a_small_budget(limit, xp, to_xp, rng):
    x = rng.permutation(3 * 5 * 96 * 96).reshape(3, 5, 96, 96).astype(np.float64)  # no ties
    gy = rng.standard_normal((3, 5, 48, 48))
    windows = _windows(x)
    first = windows.argmax(axis=-1)
    expected_gx = np.zeros(windows.shape)
    np.put_along_axis(expected_gx, first[..., None], gy[..., None], axis=-1)
    expected_gx = expected_gx.reshape(3, 5, 48, 48, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    expected_gx = expected_gx.reshape(x.shape)
    tx, tgy = to_xp(x), to_xp(gy)
    with ac.config(workspace_limit=limit):
        assert_close(ac.max_pool2d(tx, 2), windows.max(axis=-1), xp=xp)
        assert_close(ac.avg_pool2d(tx, 2), windows.mean(axis=-1), xp=xp)
        assert_close(ac.max_pool2d_backward(tgy, tx, 2), expected_gx, xp=xp)
        avg_gx = np.repeat(np.repeat(gy / 4, 2, axis=2), 2, axis=3)
        assert_close(ac.avg_pool2d_backward(tgy, tx, 2), avg_gx, xp=xp)


def test_pooling_plane_over_the_budget_raises():
    with ac.config(workspace_limit="2M"):
        with pytest.raises(
            ac.WorkspaceError,
            match=r"max_pool2d: one plane \(one channel of "
            r"one sample, 512x512\) needs a workspace of \d+ bytes",
        ):
            ac.max_pool2d(np.broadcast_to(0.0, (1, 1, 512, 512)), 2)


def test_count_include_pad_must_be_a_bool():
    for fn in (
        ac.avg_pool2d,
        lambda x, k, **kw: ac.avg_pool2d_backward(np.ones((1, 1, 2, 2)), x, k, **kw),
    ):
        with pytest.raises(
            TypeError, match="count_include_pad must be True or False, got str 'no'"
        ):
            fn(np.ones((1, 1, 4, 4)), 2, count_include_pad="no")


def test_a_bad_scratch_size_in_the_environment_is_reported_and_ignored():
    code = "import arraycnn.scratch as s; print(s.cache_limit())"
    env = {**os.environ, "ARRAYCNN_SCRATCH_BYTES": "lots"}
    run = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.strip() == str(2**30)
    assert "ignoring ARRAYCNN_SCRATCH_BYTES must be a number of bytes" in run.stderr
    env["ARRAYCNN_SCRATCH_BYTES"] = "64M"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == str(64 * 2**20)
