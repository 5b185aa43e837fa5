"""Convolution geometry: output sizes, padding forms, tap slices, validation helpers.

Expected values come from hand-computed tables and from the oracle module's own padding
rules (:mod:`oracles`), never from arraycnn.geometry itself.
"""

from __future__ import annotations

import dataclasses

import oracles
import pytest
from geometries import Case, any_cases
from hypothesis import given
from hypothesis import strategies as st

from arraycnn.geometry import (
    ConvGeometry,
    conv_geometry,
    output_size,
    pair,
    resolve_padding,
)

# (size, kernel, stride, pad_lo, pad_hi, dilation, output), by hand from
# floor((i + p_lo + p_hi - d (k - 1) - 1) / s) + 1
OUTPUT_SIZES = [
    (6, 3, 1, 0, 0, 1, 4),
    (6, 3, 1, 1, 1, 1, 6),
    (6, 3, 2, 1, 1, 1, 3),
    (7, 3, 2, 0, 0, 1, 3),
    (8, 3, 2, 0, 1, 1, 4),  # asymmetric padding: (8 + 1 - 3) // 2 + 1
    (9, 3, 1, 0, 0, 2, 5),  # dilated kernel spans 5
    (9, 3, 2, 0, 0, 3, 2),  # spans 7: (9 - 7) // 2 + 1
    (10, 4, 3, 2, 1, 2, 3),  # (10 + 3 - 6 - 1) // 3 + 1
    (1, 1, 3, 0, 0, 1, 1),
    (5, 5, 1, 0, 0, 1, 1),
    (4, 5, 1, 0, 0, 1, 0),  # does not fit: < 1 is returned, callers validate
    (5, 3, 1, 0, 0, 3, -1),
]


@pytest.mark.parametrize(("i", "k", "s", "lo", "hi", "d", "o"), OUTPUT_SIZES)
def test_output_size_table(i, k, s, lo, hi, d, o):
    assert output_size(i, k, stride=s, pad_lo=lo, pad_hi=hi, dilation=d) == o


@given(case=any_cases())
def test_conv_geometry_against_the_oracle_rules(case: Case):
    """Every derived size and slice of ConvGeometry, against the oracle's own formulas."""
    kw = case.kwargs
    if not case.fits:
        with pytest.raises(ValueError, match="is larger than the padded input"):
            conv_geometry(case.x_shape, case.w_shape, **kw)
        return
    geom = conv_geometry(case.x_shape, case.w_shape, **kw)
    n, _, h, w = case.x_shape
    f, cg, kh, kw_ = case.w_shape
    sh, sw = (kw["stride"],) * 2 if isinstance(kw["stride"], int) else kw["stride"]
    dh, dw = (kw["dilation"],) * 2 if isinstance(kw["dilation"], int) else kw["dilation"]
    pads = oracles.explicit_padding(kw["padding"], (h, w), (kh, kw_), (sh, sw), (dh, dw))
    assert geom.padding == pads
    assert geom.stride == (sh, sw) and geom.dilation == (dh, dw)
    assert geom.y_shape == case.y_shape
    assert geom.x_shape == case.x_shape and geom.w_shape == case.w_shape
    assert (geom.hp, geom.wp) == (h + sum(pads[0]), w + sum(pads[1]))
    assert (geom.kh_dilated, geom.kw_dilated) == (dh * (kh - 1) + 1, dw * (kw_ - 1) + 1)
    assert (geom.cg, geom.fg, geom.groups) == (cg, f // kw["groups"], kw["groups"])
    assert geom.is_padded == any(p for side in pads for p in side)
    assert geom.macs() == n * f * cg * geom.ho * geom.wo * kh * kw_
    # tap slices: one index per output position, all inside the padded input
    for i in range(kh):
        rows = range(geom.hp)[geom.tap_rows(i)]
        assert list(rows) == [p * sh + i * dh for p in range(geom.ho)]
    for j in range(kw_):
        cols = range(geom.wp)[geom.tap_cols(j)]
        assert list(cols) == [q * sw + j * dw for q in range(geom.wo)]


def test_geometry_is_frozen():
    geom = conv_geometry((1, 1, 5, 5), (1, 1, 3, 3))
    assert isinstance(geom, ConvGeometry)
    with pytest.raises(dataclasses.FrozenInstanceError):
        geom.ho = 7  # type: ignore[misc]


@pytest.mark.parametrize(
    ("padding", "expected"),
    [
        (0, ((0, 0), (0, 0))),
        (2, ((2, 2), (2, 2))),
        ((1, 3), ((1, 1), (3, 3))),
        ([1, 3], ((1, 1), (3, 3))),
        (((0, 1), (2, 3)), ((0, 1), (2, 3))),
        ([[0, 1], [2, 3]], ((0, 1), (2, 3))),
        ("valid", ((0, 0), (0, 0))),
        ("full", ((4, 4), (2, 2))),  # d (k - 1) with k = (3, 3), d = (2, 1)
        ("same", ((2, 2), (1, 1))),  # stride 1: total d (k - 1)
    ],
)
def test_resolve_padding_forms(padding, expected):
    got = resolve_padding(padding, (9, 9), (3, 3), (1, 1), (2, 1))
    assert got == expected


@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 9),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
)
def test_same_padding_rule(size, kernel, stride, dilation):
    """'same': output ceil(i / s); total padding minimal; the odd pixel at the end."""
    (lo, hi), _ = resolve_padding("same", (size, 1), (kernel, 1), (stride, 1), (dilation, 1))
    out = output_size(size, kernel, stride=stride, pad_lo=lo, pad_hi=hi, dilation=dilation)
    assert out == -(-size // stride)
    assert hi - lo in (0, 1)
    span = dilation * (kernel - 1) + 1
    # minimal: one pixel less of padding would lose the last output (or padding is 0)
    assert lo + hi == 0 or (size + lo + hi - 1 - span) // stride + 1 < out


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, (3, 3)), ((1, 2), (1, 2)), ([4, 5], (4, 5))],
)
def test_pair_accepts(value, expected):
    assert pair(value, "stride") == expected


def test_pair_accepts_integer_like_values():
    np = pytest.importorskip("numpy")
    assert pair(np.int64(2), "stride") == (2, 2)
    assert pair((np.int32(1), 3), "stride") == (1, 3)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, r"kernel_size must be positive, got 0"),
        ((2, -1), ValueError, r"kernel_size must be positive, got \(2, -1\)"),
        ((1, 2, 3), ValueError, r"kernel_size must be an int or a pair of ints, got \(1, 2, 3\)"),
        ((1,), ValueError, r"kernel_size must be an int or a pair of ints, got \(1,\)"),
        (True, TypeError, r"kernel_size must be an int, got bool True"),
        (2.0, TypeError, r"kernel_size must be an int, got float 2.0"),
        ((1, "2"), TypeError, r"kernel_size must be an int, got str '2'"),
    ],
)
def test_pair_refuses(value, error, match):
    with pytest.raises(error, match=match):
        pair(value, "kernel_size")


def test_pair_minimum():
    assert pair(0, "padding", minimum=0) == (0, 0)
    with pytest.raises(ValueError, match=r"padding must be >= 0, got -1"):
        pair(-1, "padding", minimum=0)


@pytest.mark.parametrize(
    ("argument", "bad", "error", "match"),
    [
        ("stride", True, TypeError, r"stride must be an int, got bool True"),
        ("stride", 1.0, TypeError, r"stride must be an int, got float 1.0"),
        ("groups", True, TypeError, r"groups must be an int, got bool True"),
        ("padding", (True, 1), TypeError, r"padding must be an int, got bool True"),
    ],
)
def test_values_equal_to_valid_ones_are_refused(argument, bad, error, match):
    """True == 1 and 1.0 == 1 (and hash alike): after a valid call with 1, the bad value
    is still refused."""
    valid = {"stride": 1, "groups": 1, "padding": (1, 1)}
    conv_geometry((1, 1, 5, 5), (1, 1, 3, 3), **{argument: valid[argument]})
    with pytest.raises(error, match=match):
        conv_geometry((1, 1, 5, 5), (1, 1, 3, 3), **{argument: bad})


def test_integer_like_arguments_give_the_same_geometry_as_ints():
    np = pytest.importorskip("numpy")
    plain = conv_geometry((2, 4, 9, 8), (6, 2, 3, 3), stride=2, padding=1, groups=2)
    numpy_ints = conv_geometry(
        (np.int64(2), 4, 9, 8), (6, 2, 3, 3), stride=np.int32(2), padding=1, groups=np.int64(2)
    )
    assert numpy_ints == plain
