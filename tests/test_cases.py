"""The registry of reference cases (:mod:`arraycnn.tools.cases`) shared by bench, tune and
the asv suite: labels (the asv history is keyed by them), grids, seeded inputs."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from arraycnn.tools import cases


def test_module_examples_pass():
    result = doctest.testmod(cases, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_reference_layers_keep_their_labels_and_geometry():
    assert list(cases.LAYERS) == [
        "64x1x28x28:32x3x3",
        "64x32x14x14:64x3x3",
        "32x64x56x56:64x3x3",
        "8x3x224x224:64x7x7/s2",
        "16x64x56x56:64x3x3/g64",
    ]
    assert set(cases.QUICK_LAYERS) <= set(cases.LAYERS)
    stem = cases.LAYERS["8x3x224x224:64x7x7/s2"].geometry()
    assert (stem.n, stem.c, stem.f, stem.kh, stem.ho, stem.wo) == (8, 3, 64, 7, 112, 112)
    depthwise = cases.LAYERS["16x64x56x56:64x3x3/g64"]
    assert depthwise.w_shape == (64, 1, 3, 3) and depthwise.groups == 64
    for case in cases.LAYERS.values():
        g = case.geometry()
        assert (g.ho, g.wo) == (-(-g.h // case.stride), -(-g.w // case.stride))  # 'same'
        assert case.kind == "layer" and case.dtype == "float32" and not case.is_filter


def test_filter_grids():
    full = cases.FILTERS.cases()
    assert len(full) == 3 * 5 * 2
    assert [c.label for c in full[:4]] == [
        "img256:k3:gaussian",
        "img256:k3:random",
        "img256:k7:gaussian",
        "img256:k7:random",
    ]
    assert full[-1].label == "img4096:k63:random"
    assert len(cases.FILTERS_QUICK.cases()) == 2 * 3 * 2
    assert [c.label for c in cases.FILTERS_ASV_QUICK.cases()] == [
        "img256:k3:gaussian",
        "img256:k3:random",
        "img256:k15:gaussian",
        "img256:k15:random",
    ]
    assert [c.label for c in cases.REGRET_FILTERS_QUICK] == [
        "img256:k3:random",
        "img256:k15:gaussian",
        "img256:k15:random",
    ]
    assert len(cases.REGRET_FILTERS.cases()) == 2 * 4 * 2
    assert [c.kernel for c in cases.FilterGrid((8,), (3, 9)).cases()] == [3, 3]  # 9 > 8
    for case in full:
        g = case.geometry()
        assert g.x_shape == (1, 1, case.image, case.image) and g.y_shape == g.x_shape
        assert case.is_filter


def test_labels_are_unique_across_the_registry():
    everything = [
        *cases.LAYERS.values(),
        *cases.FILTERS.cases(),
        *cases.FILTERS_QUICK.cases(),
        *(c for group in cases.TUNE_CASES.values() for c in group),
        *cases.holdout_cases(30, seed=0),
    ]
    by_label: dict[str, cases.Case] = {}
    for case in everything:
        assert by_label.setdefault(case.label, case) == case, case.label


def test_tune_sets():
    full, quick, tiny = (cases.tune_cases(name) for name in ("full", "quick", "tiny"))
    assert set(quick) < set(full) and len(tiny) == 2
    assert {c.kind for c in quick} == {"layer", "rank1"}
    assert {c.dtype for c in quick} == {"float32", "float64"}
    assert cases.LAYERS["32x64x56x56:64x3x3"] in full  # the same Case, not a copy
    assert cases.tune_cases("tiny")[1].label == "2x2x8x8:2x5x5/rank1"
    with pytest.raises(ValueError, match=r"tune case set must be one of .* got 'huge'"):
        cases.tune_cases("huge")


@pytest.mark.parametrize("tiny", [False, True])
def test_holdout_cases_are_seeded_and_bounded(tiny):
    first = cases.holdout_cases(8, seed=7, tiny=tiny)
    assert first == cases.holdout_cases(8, seed=7, tiny=tiny)
    assert first != cases.holdout_cases(8, seed=8, tiny=tiny)
    cap = cases.HOLDOUT_MAX_MACS_TINY if tiny else cases.HOLDOUT_MAX_MACS
    for case in first:
        g = case.geometry()
        assert g.macs() <= cap and case.kernel <= case.image
        assert case.padding in (0, case.kernel // 2)


def _ranks(w: np.ndarray) -> set[int]:
    """Numerical ranks of the kernel slices w[f, c] (float64 SVD)."""
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)  # (F, Cg, k)
    return {int(r) for r in (s > 1e-5 * s[..., :1]).sum(axis=-1).ravel()}


def test_host_arrays_are_seeded_and_of_the_cases_kind():
    layer = cases.LAYERS["64x32x14x14:64x3x3"]
    x, w, gy = cases.host_arrays(layer)
    again = cases.host_arrays(layer)
    assert all(np.array_equal(a, b) for a, b in zip((x, w, gy), again))
    assert (x.shape, w.shape, gy.shape) == (layer.x_shape, layer.w_shape, (64, 64, 14, 14))
    assert x.dtype == w.dtype == gy.dtype == np.float32
    assert _ranks(w) == {3}

    gaussian_x, gaussian, _ = cases.host_arrays(cases.filter_case(32, 7, "gaussian"))
    assert gaussian.shape == (1, 1, 7, 7) and gaussian.sum() == pytest.approx(1.0, rel=1e-6)
    assert _ranks(gaussian) == {1}
    np.testing.assert_allclose(gaussian[0, 0], gaussian[0, 0].T)  # isotropic
    random_x, random, _ = cases.host_arrays(cases.filter_case(32, 7, "random"))
    assert np.array_equal(gaussian_x, random_x)  # same image, two kernels
    assert (random.astype(np.float64) ** 2).sum() == pytest.approx(1.0, rel=1e-5)
    assert _ranks(random) == {7}
    np.testing.assert_array_equal(random[0, 0], cases.random_kernel(7))

    rank1 = cases.layer(2, 3, 16, 4, 5, kind="rank1", dtype="float64")
    x64, w64, _ = cases.host_arrays(rank1)
    assert x64.dtype == w64.dtype == np.float64 and _ranks(w64) == {1}


def test_bad_case_arguments_are_refused():
    with pytest.raises(ValueError, match=r"kind must be one of .* got 'smooth'"):
        cases.layer(1, 1, 8, 1, 3, kind="smooth")
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64', got 'int8'"):
        cases.layer(1, 1, 8, 1, 3, dtype="int8")
    with pytest.raises(ValueError, match="kernel kind must be 'gaussian' or 'random', got 'layer'"):
        cases.filter_case(8, 3, "layer")
