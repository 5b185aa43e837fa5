"""Measured strategy choice (autotune): settings, keys, the persistent cache (round trip,
corruption, clear).

Timings are replaced by fixed numbers where a choice is asserted; no test asserts speed.
Results are checked against scipy.signal.correlate (an independent oracle).
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import scipy.signal

import arraycnn as ac
from arraycnn.backend import to_numpy
from arraycnn.conv import cost, dispatch, measured
from arraycnn.conv.strategy import Call
from arraycnn.settings import autotune_enabled
from arraycnn.testing import assert_close

STRATEGIES = ("naive", "separable", "im2col", "fft")


@pytest.fixture
def fake_times(monkeypatch):
    """fake_times(times): measurement returns ``times`` (and records what was timed)."""
    timed: list[list[str]] = []

    def install(times: dict[str, float]):
        def measure(candidates, run, *, repeats=measured.REPEATS):
            timed.append(list(candidates))
            for name in candidates:
                run(name)  # the candidates really run (errors would surface)
            return {name: times.get(name, 1.0) for name in candidates}

        monkeypatch.setattr(measured, "measure", measure)
        return timed

    return install


def oracle(x, w):
    """Valid cross-correlation, stride 1, one group: sum over channels of correlate2d."""
    n, f = x.shape[0], w.shape[0]
    return np.stack(
        [
            np.stack(
                [
                    sum(
                        scipy.signal.correlate2d(x[i, c], w[o, c], mode="valid")
                        for c in range(x.shape[1])
                    )
                    for o in range(f)
                ]
            )
            for i in range(n)
        ]
    )


def _data(rng, dtype="float64", n=2):
    return rng.standard_normal((n, 2, 9, 9)).astype(dtype), rng.standard_normal(
        (3, 2, 3, 3)
    ).astype(dtype)


# --------------------------------------------------------------------------- settings


def test_autotune_setting_resolution(monkeypatch):
    assert autotune_enabled() is False
    monkeypatch.setenv("ARRAYCNN_AUTOTUNE", "1")
    assert autotune_enabled() is True
    assert autotune_enabled(False) is False  # the call's argument wins
    ac.set_autotune(False)  # the global setting wins over the environment
    assert autotune_enabled() is False
    with ac.config(autotune=True):  # and config() over the setter, for its block
        assert autotune_enabled() is True
    assert autotune_enabled() is False
    ac.set_autotune(None)
    monkeypatch.setenv("ARRAYCNN_AUTOTUNE", "off")
    assert autotune_enabled() is False
    with pytest.raises(TypeError, match="autotune must be True, False or None, got 'yes'"):
        autotune_enabled("yes")
    with pytest.raises(TypeError, match="enabled must be True, False or None, got 1"):
        ac.set_autotune(1)
    with pytest.raises(TypeError, match="autotune must be True, False or None"):
        ac.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), autotune="always")


def test_accelerators_autotune_by_default_until_tuned(monkeypatch):
    """The dispatcher's default (True on an accelerator without a fitted calibration) is
    used only where the call, the setting and the environment say nothing."""
    monkeypatch.delenv("ARRAYCNN_AUTOTUNE", raising=False)
    assert autotune_enabled(default=True) is True
    assert autotune_enabled(False, default=True) is False
    with ac.config(autotune=False):
        assert autotune_enabled(default=True) is False
    monkeypatch.setenv("ARRAYCNN_AUTOTUNE", "0")
    assert autotune_enabled(default=True) is False
    monkeypatch.delenv("ARRAYCNN_AUTOTUNE")
    with ac.config(deterministic=True):
        assert autotune_enabled(default=True) is False
    # on the CPU (no accelerator) auto keeps predicting: no timing happened
    x, w = np.ones((1, 1, 8, 8)), np.ones((1, 1, 3, 3))
    assert ac.conv.explain(x, w)["why"] == "cheapest predicted"


def test_keys_differ_by_every_part():
    geom = ac.conv_geometry((2, 3, 8, 8), (4, 3, 3, 3), padding=1)
    base = Call(geom, "forward", "numpy", "float32", 4)

    def key(call=base, device="cpu", rank=None, chunked=False):
        return measured.make_key(call, device, rank, chunked)

    def other(**changes):
        return dataclasses.replace(base, geom=dataclasses.replace(geom, **changes))

    variants = [
        key(dataclasses.replace(base, backend="torch")),
        key(device="cuda:0"),
        key(dataclasses.replace(base, dtype="float64", itemsize=8)),
        key(other(n=3)),
        key(other(f=5)),
        key(other(kw=5)),
        key(other(stride=(2, 1))),
        key(other(padding=((1, 0), (1, 1)))),
        key(other(dilation=(1, 2))),
        key(other(groups=3)),
        key(dataclasses.replace(base, direction="backward")),
        key(rank=1),
        key(chunked=True),
    ]
    assert len({key(), *variants}) == len(variants) + 1
    assert f"v={ac.__version__}" in key()


# --------------------------------------------------------------------------- conv2d


def test_first_call_measures_then_cache_is_used(fake_times, rng, tmp_path):
    timed = fake_times({"naive": 3.0, "im2col": 2.0, "fft": 1.0, "winograd": 4.0})
    x, w = _data(rng)
    y = ac.conv2d(x, w, autotune=True)
    assert_close(y, oracle(x, w), scale=oracle(np.abs(x), np.abs(w)))
    assert len(timed) == 1 and set(timed[0]) <= {"naive", "im2col", "fft", "winograd"}
    entries = measured.cache_entries()
    assert len(entries) == 1
    ((key, entry),) = entries.items()
    assert entry["strategy"] == "fft" and "float64" in key and "x=2x2x9x9" in key
    assert key.endswith("|forward")
    ac.conv2d(x, w, autotune=True)
    assert len(timed) == 1  # cached: not timed again
    assert ac.choose_strategy(x, w, autotune=True) == "fft"
    # persisted: a fresh process (empty memory) reads the same choice from the file
    on_disk = json.loads((tmp_path / "cache" / "autotune.json").read_text())
    assert on_disk["entries"][key]["strategy"] == "fft"
    ac.clear_caches()  # as a fresh process: the choices are read from the file
    assert measured.cache_entries() == entries
    assert ac.choose_strategy(x, w, autotune=True) == "fft" and len(timed) == 1


def test_entries_per_dtype_shape_geometry_direction(fake_times, rng):
    fake_times({"im2col": 0.5})
    x, w = _data(rng)
    ac.conv2d(x, w, autotune=True)
    ac.conv2d(x.astype("float32"), w.astype("float32"), autotune=True)
    ac.conv2d(x[:1], w, autotune=True)
    ac.conv2d(x, w, autotune=True, padding=1)
    gy = rng.standard_normal((2, 3, 7, 7))
    ac.conv2d_backward(gy, x, w, autotune=True)
    keys = list(measured.cache_entries())
    assert len(keys) == 5 and sum(k.endswith("|backward") for k in keys) == 1
    assert all(e["strategy"] == "im2col" for e in measured.cache_entries().values())


def test_autotuned_results_match_oracle_on_every_backend(xp, to_xp, rng):
    x, w = _data(rng)
    y = ac.conv2d(to_xp(x), to_xp(w), autotune=True)  # real timing, any winner
    assert_close(y, oracle(x, w), xp=xp, scale=oracle(np.abs(x), np.abs(w)))
    (entry,) = measured.cache_entries().values()
    assert entry["strategy"] in STRATEGIES and entry["strategy"] in entry["times"]
    assert all(t > 0 for t in entry["times"].values())


def test_environment_switches_autotune_on(monkeypatch, fake_times, rng):
    timed = fake_times({})
    x, w = _data(rng)
    monkeypatch.setenv("ARRAYCNN_AUTOTUNE", "0")
    ac.conv2d(x, w)
    assert timed == [] and measured.cache_entries() == {}
    monkeypatch.setenv("ARRAYCNN_AUTOTUNE", "1")
    ac.conv2d(x, w)
    assert len(timed) == 1 and len(measured.cache_entries()) == 1
    ac.set_autotune(False)
    ac.conv2d(x[:1], w)
    assert len(timed) == 1


def test_only_candidates_within_spread_are_timed(fake_times, rng):
    factor = {"naive": 1.0, "separable": 1.0, "im2col": 1.0, "fft": 1e4}  # fft hopeless
    cost.save_user_calibration("numpy", cost.Calibration(0.0, 0.0, 1e-10, 1e-10, 1e-6, factor))
    timed = fake_times({})
    x, w = _data(rng)
    ac.conv2d(x, w, autotune=True)
    assert timed and "fft" not in timed[0]


def test_cached_choice_outside_current_candidates_is_remeasured(fake_times, rng):
    timed = fake_times({"fft": 0.1, "naive": 1.0, "im2col": 1.0})
    x, w = _data(rng)
    ac.conv2d(x, w, autotune=True)
    (key,) = measured.cache_entries()
    assert measured.lookup(key, ["naive", "im2col"]) is None
    assert measured.lookup(key, ["fft", "naive"]) == "fft"
    assert len(timed) == 1


def test_cached_fft_is_not_used_for_nonfinite_input(fake_times, rng):
    fake_times({"fft": 0.1})
    x, w = _data(rng)
    assert ac.choose_strategy(x, w, autotune=True) == "fft"
    x[0, 1, 4, 4] = np.nan
    geom = ac.conv_geometry(x.shape, w.shape)
    plan = dispatch.plan("auto", w, geom, xp=ac.resolve_backend("numpy"), x=x, autotune=True)
    assert plan.strategy != "fft" and "fft skipped: non-finite input" in plan.reason
    y = to_numpy(ac.conv2d(x, w, autotune=True))
    assert np.isnan(y[0]).any() and np.isfinite(y[1]).all() and np.isfinite(y[0]).any()


# --------------------------------------------------------------------------- cache file


def test_corrupt_cache_warns_and_starts_fresh(fake_times, rng, tmp_path):
    fake_times({"naive": 0.1})
    path = tmp_path / "cache" / "autotune.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "entries": {"k": ')  # truncated write
    with pytest.warns(RuntimeWarning, match="autotune cache .* is corrupt"):
        assert measured.cache_entries() == {}
    x, w = _data(rng)
    ac.conv2d(x, w, autotune=True)
    data = json.loads(path.read_text())  # rewritten whole and valid
    assert [e["strategy"] for e in data["entries"].values()] == ["naive"]


@pytest.mark.parametrize(
    "content",
    ['["a list"]', '{"format": 99, "entries": {}}', '{"format": 1, "entries": {"k": {"x": 1}}}'],
)
def test_malformed_cache_contents(content, tmp_path):
    path = tmp_path / "cache" / "autotune.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert measured.cache_entries() == {}


def test_clear_cache(fake_times, rng, tmp_path):
    fake_times({})
    x, w = _data(rng)
    ac.conv2d(x, w, autotune=True)
    ac.conv2d(x[:1], w, autotune=True)
    path = tmp_path / "cache" / "autotune.json"
    assert path.exists()
    assert measured.clear_cache() == 2
    assert not path.exists() and measured.cache_entries() == {}
    assert measured.clear_cache() == 0  # idempotent


def test_writes_are_atomic_and_merge_other_processes(fake_times, rng, tmp_path):
    fake_times({})
    x, w = _data(rng)
    ac.conv2d(x, w, autotune=True)
    path = tmp_path / "cache" / "autotune.json"
    # another process adds an entry meanwhile
    data = json.loads(path.read_text())
    data["entries"]["other|process"] = {"strategy": "naive", "times": {}, "created": "now"}
    path.write_text(json.dumps(data))
    ac.conv2d(x[:1], w, autotune=True)
    merged = json.loads(path.read_text())["entries"]
    assert "other|process" in merged and len(merged) == 3
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["autotune.json", "autotune.json.lock"]  # no temp files


def test_unwritable_cache_keeps_choice_in_memory(fake_times, rng, tmp_path):
    fake_times({"im2col": 0.1})
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    x, w = _data(rng)
    with ac.config(cache_dir=blocker / "sub"), pytest.warns(RuntimeWarning) as record:
        ac.conv2d(x, w, autotune=True)
        entries = measured.cache_entries()
    messages = [str(r.message) for r in record]
    assert any("cannot read autotune cache" in m for m in messages)
    assert any("cannot write the autotune cache" in m for m in messages)
    assert [e["strategy"] for e in entries.values()] == ["im2col"]


def test_real_measure_times_each_candidate_and_gives_up_on_the_hopeless():
    """A warm-up each, then ``repeats`` rounds of those within GIVE_UP_FACTOR of the best
    warm-up; the others keep their warm-up time. Pauses of 20 ms: a busy machine's sleep
    overshoot (a few ms) stays far below GIVE_UP_FACTOR times them."""
    calls = []
    pause = {"a": 0.02, "b": 0.02, "slow": 0.02 * 4 * measured.GIVE_UP_FACTOR}

    def run(name):
        calls.append(name)
        time.sleep(pause[name])

    times = measured.measure(["a", "slow", "b"], run, repeats=2)
    assert set(times) == {"a", "b", "slow"} and times["slow"] >= pause["slow"]
    assert (calls.count("a"), calls.count("b"), calls.count("slow")) == (3, 3, 1)


# --------------------------------------------------------------------------- concurrency


WRITERS, ENTRIES_EACH = 4, 25


def _write_entries(cache: str, worker: int, start) -> None:
    """A writer process: measures ENTRIES_EACH signatures of its own into the shared cache."""
    start.wait()
    with ac.config(cache_dir=cache):
        for i in range(ENTRIES_EACH):
            key = f"writer{worker}|entry{i}"
            measured.tuned_choice(key, ["naive", "im2col"], lambda name: None, repeats=1)


def test_concurrent_writer_processes_keep_every_entry(tmp_path):
    """Processes writing the autotune file at once: every entry survives (the lock)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    context = multiprocessing.get_context("fork")
    cache = str(tmp_path / "shared")
    start = context.Barrier(WRITERS)
    writers = [
        context.Process(target=_write_entries, args=(cache, i, start)) for i in range(WRITERS)
    ]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
    assert [p.exitcode for p in writers] == [0] * WRITERS
    entries = json.loads((tmp_path / "shared" / "autotune.json").read_text())["entries"]
    expected = {f"writer{w}|entry{i}" for w in range(WRITERS) for i in range(ENTRIES_EACH)}
    assert set(entries) == expected


# --------------------------------------------------------------------------- determinism


def test_deterministic_mode_turns_autotuning_off(fake_times, rng, monkeypatch):
    timed = fake_times({"naive": 0.1})
    x, w = _data(rng)
    with ac.config(autotune=True, deterministic=True):
        assert autotune_enabled() is False
        ac.conv2d(x, w)
        with pytest.raises(ValueError, match="autotune=True conflicts with deterministic mode"):
            ac.conv2d(x, w, autotune=True)
    assert timed == [] and measured.cache_entries() == {}
    monkeypatch.setenv("ARRAYCNN_DETERMINISTIC", "1")
    with ac.config(autotune=True):
        assert autotune_enabled() is False
    with ac.config(deterministic=False, autotune=True):  # the setting wins over the env
        assert autotune_enabled() is True
    with pytest.raises(TypeError, match="deterministic must be True, False or None, got 'yes'"):
        with ac.config(deterministic="yes"):
            pass


def test_a_measured_choice_is_kept_for_its_signature(fake_times, rng):
    """Once measured, a signature keeps its strategy for the process, whatever later
    timings would say: repeated (seeded) calls run the same strategy."""
    timed = fake_times({"im2col": 0.1})
    x, w = _data(rng)
    first = ac.choose_strategy(x, w, autotune=True)
    fake_times({first: 9.0})  # measurements would now prefer another strategy
    for _ in range(3):
        assert ac.choose_strategy(x, w, autotune=True) == first
    assert len(timed) == 1
