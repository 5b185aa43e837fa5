"""The peers of ``arraycnn bench`` and the asv suite compute arraycnn's correlation: each
against the explicit-loop oracle of ``tests/oracles.py`` (float64) on tiny inputs, with a
kernel that is not symmetric, so that a missing or extra flip shows. No speed is asserted."""

from __future__ import annotations

import numpy as np
import oracles
import pytest

from arraycnn.testing import assert_close
from arraycnn.tools import cases, peers

RANDOM = cases.filter_case(12, 5, "random")
RANK1 = cases.layer(1, 1, 12, 1, 5, kind="rank1")


def _plane(out) -> object:
    """(H, W) of a peer's output: torch returns (1, 1, H, W)."""
    return out[0, 0] if out.ndim == 4 else out


@pytest.mark.parametrize("name", peers.FILTER_PEERS)
def test_filter_peers_correlate_like_arraycnn(name):
    case = RANK1 if name == "cv2.sep" else RANDOM
    x, w, _ = cases.host_arrays(case)
    assert not np.allclose(w[0, 0], w[0, 0, ::-1, ::-1])  # a flip would change the result
    try:
        call = peers.filter_peer(name, x[0, 0], w[0, 0])  # (H, W), (k, k)
    except peers.PeerUnavailable as exc:
        pytest.skip(str(exc))
    expected = oracles.correlate_loops(x, w, **case.kwargs)[0, 0]
    (scale,) = oracles.error_scales(x, w, model="map", **case.kwargs)
    assert_close(_plane(call()), expected, scale=scale[0, 0], err_msg=name)


def test_sep_filter_refuses_a_full_rank_kernel():
    pytest.importorskip("cv2")
    x, w, _ = cases.host_arrays(RANDOM)
    with pytest.raises(peers.PeerUnavailable, match="sepFilter2D needs a rank-1 kernel"):
        peers.filter_peer("cv2.sep", x[0, 0], w[0, 0])
    with pytest.raises(ValueError, match="unknown filtering peer 'fast'"):
        peers.filter_peer("fast", x[0, 0], w[0, 0])


def test_filter_peers_leave_out_slow_direct_methods_and_sep_for_full_rank():
    x, w, _ = cases.host_arrays(RANDOM)
    calls, skipped = peers.filter_peers(RANDOM, x, w, max_seconds=1e-12)
    assert {"scipy.2d", "ndimage"} <= set(skipped) and not {"scipy.2d", "ndimage"} & set(calls)
    assert all("predicted" in skipped[n] for n in ("scipy.2d", "ndimage"))
    assert "scipy.fft" in calls and "cv2.sep" not in calls and "cv2.sep" not in skipped
    assert peers.direct_seconds("scipy.fft", 256, 3) is None
    assert peers.direct_seconds("scipy.2d", 100, 3) == pytest.approx(1e4 * 9 / 3e8)


def test_layer_peers_are_torchs_forward_and_backward():
    pytest.importorskip("torch")
    case = cases.layer(2, 4, 7, 6, 3, stride=2, groups=2)
    x, w, gy = cases.host_arrays(case)
    geometry = case.kwargs
    forward, _ = peers.layer_peers(case, x, w)
    backward, _ = peers.layer_peers(case, x, w, gy)
    (y_scale, *grad_scales) = oracles.error_scales(x, w, gy=gy, **geometry)
    assert_close(forward["torch"](), oracles.correlate_loops(x, w, **geometry), scale=y_scale)
    expected = oracles.correlate_loops_backward(gy, x, w, **geometry)
    for got, want, scale, what in zip(
        backward["torch"](), expected, grad_scales, "gx gw gb".split()
    ):
        assert_close(got, want, scale=scale, err_msg=what)
