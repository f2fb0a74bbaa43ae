"""Fixed-point encoding and slot packing: round trips, packed sums, overflow bounds, offsets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jointcredit.crypto.encoding import (
    PACKING_MARGIN_BITS,
    FixedPoint,
    SlotPacker,
    shift_nonnegative,
    unshift_sums,
)
from jointcredit.errors import EncodingOverflowError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


# --- FixedPoint ----------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(np.float64, st.integers(0, 30), elements=finite),
    frac_bits=st.integers(0, 60),
)
def test_fixed_point_round_trip_error_bound(x, frac_bits):
    fp = FixedPoint(frac_bits)
    ints = fp.encode(x)
    assert ints.dtype == object and ints.shape == x.shape
    assert all(type(v) is int for v in ints.ravel())
    back = fp.decode(ints)
    assert np.all(np.abs(back - x) <= 2.0 ** -(frac_bits + 1) + 1e-12 * np.abs(x))


@settings(max_examples=50, deadline=None)
@given(
    a=hnp.arrays(np.float64, 12, elements=st.floats(-100, 100)),
    b=hnp.arrays(np.float64, 12, elements=st.floats(-100, 100)),
)
def test_fixed_point_sums_and_products(a, b):
    fp = FixedPoint(32)
    ea, eb = fp.encode(a), fp.encode(b)
    # sums keep the scale; exact integer arithmetic then one decode
    assert np.allclose(fp.decode(np.array([sum(ea)], dtype=object))[0], a.sum(), atol=12 * 2**-33)
    # a product of two encodings carries two scale factors
    prod = fp.decode(ea * eb, n_terms=2)
    assert np.allclose(prod, a * b, atol=100 * 2**-31)


def test_fixed_point_large_values_stay_exact():
    fp = FixedPoint(80)
    x = np.array([1e5, -3.25])
    ints = fp.encode(x)
    assert ints[1] == -13 * 2**78
    assert list(fp.decode(ints)) == [1e5, -3.25]


def test_fixed_point_rejects_non_finite():
    fp = FixedPoint(16)
    with pytest.raises(EncodingOverflowError, match="flat index 1"):
        fp.encode([1.0, np.nan])
    with pytest.raises(EncodingOverflowError):
        fp.encode([np.inf])
    with pytest.raises(EncodingOverflowError, match="overflow"):
        FixedPoint(1000).encode([1e300])
    with pytest.raises(ValueError):
        FixedPoint(-1)
    with pytest.raises(ValueError):
        fp.decode([1], n_terms=0)
    with pytest.raises(TypeError):
        fp.decode([1.5])


def test_int_bound():
    assert FixedPoint(10).int_bound(2.0) == 2048


# --- SlotPacker ----------------------------------------------------------------------------------


@st.composite
def packer_and_rows(draw):
    slot_bits = draw(st.integers(1, 70))
    n_slots = draw(st.integers(1, 6))
    rows = draw(st.integers(0, 10))
    data = draw(
        st.lists(
            st.lists(st.integers(0, 2**slot_bits - 1), min_size=n_slots, max_size=n_slots),
            min_size=rows,
            max_size=rows,
        )
    )
    return SlotPacker(slot_bits, n_slots), np.array(data, dtype=object).reshape(rows, n_slots)


@settings(max_examples=100, deadline=None)
@given(packer_and_rows())
def test_pack_unpack_round_trip(pr):
    packer, cols = pr
    packed = packer.pack(cols)
    assert len(packed) == cols.shape[0]
    assert all(0 <= p < 2**packer.total_bits for p in packed)
    out = packer.unpack(packed)
    assert out.shape == cols.shape
    assert (out == cols).all()


@settings(max_examples=60, deadline=None)
@given(
    value_bits=st.integers(1, 40),
    n_slots=st.integers(1, 5),
    terms=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_sums_of_packed_values_unpack_to_column_sums(value_bits, n_slots, terms, seed):
    packer = SlotPacker.for_bounds(value_bits, terms, n_slots, modulus_bits=2048)
    assert packer.max_terms >= terms
    rng = np.random.default_rng(seed)
    cols = np.array(
        [[int(rng.integers(0, 2**value_bits)) for _ in range(n_slots)] for _ in range(terms)],
        dtype=object,
    )
    total = sum(packer.pack(cols))
    assert (packer.unpack([total], n_terms=terms)[0] == cols.sum(axis=0)).all()


def test_worst_case_sum_at_max_terms_is_exact():
    packer = SlotPacker.for_bounds(value_bits=8, max_terms=1000, n_slots=3, modulus_bits=2048)
    top = np.full((1, 3), 255, dtype=object)
    one = packer.pack(top)[0]
    total = one * packer.max_terms
    assert (
        packer.unpack([total], n_terms=packer.max_terms)[0] == [255 * packer.max_terms] * 3
    ).all()
    with pytest.raises(EncodingOverflowError, match="max_terms"):
        packer.unpack([total], n_terms=packer.max_terms + 1)


def test_for_bounds_exactly_at_capacity_and_one_beyond():
    modulus_bits, n_slots, value_bits = 2048, 22, 64
    capacity = modulus_bits - PACKING_MARGIN_BITS
    slot_bits = capacity // n_slots  # 93: 22 * 93 == 2046 exactly
    assert n_slots * slot_bits == capacity
    limit = (2**slot_bits - 1) // (2**value_bits - 1)  # most terms a 93-bit slot can hold
    packer = SlotPacker.for_bounds(value_bits, limit, n_slots, modulus_bits)
    assert packer.slot_bits == slot_bits
    assert packer.total_bits == capacity
    assert packer.max_terms == limit
    with pytest.raises(EncodingOverflowError, match="2046"):
        SlotPacker.for_bounds(value_bits, limit + 1, n_slots, modulus_bits)
    with pytest.raises(EncodingOverflowError):
        SlotPacker.for_bounds(value_bits, limit, n_slots + 1, modulus_bits)
    assert SlotPacker.max_slots(slot_bits, modulus_bits) == n_slots


def test_design_figure_24_slots_of_64_bits_with_1e6_sums():
    packer = SlotPacker.for_bounds(64, 10**6, 24, 2048)
    assert packer.slot_bits == 84 and packer.max_terms >= 10**6


def test_pack_rejects_bad_input():
    packer = SlotPacker(8, 2, value_bits=4)
    with pytest.raises(EncodingOverflowError, match=r"columns\[1, 0\]"):
        packer.pack([[1, 2], [16, 0]])
    with pytest.raises(EncodingOverflowError, match="outside"):
        packer.pack([[-1, 0]])
    with pytest.raises(ValueError, match="shape"):
        packer.pack([[1, 2, 3]])
    with pytest.raises(TypeError):
        packer.pack(np.array([[1.0, 2.0]]))
    with pytest.raises(TypeError):
        packer.pack([[1, 2.5]])
    with pytest.raises(EncodingOverflowError):
        packer.unpack([-1])
    with pytest.raises(EncodingOverflowError):
        packer.unpack([2**16])
    with pytest.raises(EncodingOverflowError):
        SlotPacker(8, 2, value_bits=9)
    with pytest.raises(ValueError):
        SlotPacker(0, 2)


def test_pack_accepts_int_arrays():
    packer = SlotPacker(16, 2)
    assert packer.pack(np.array([[1, 2]], dtype=np.int64)) == [1 + (2 << 16)]
    assert packer.max_terms == 1


# --- offsets for signed values ----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    g=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1, 1)),
    h=hnp.arrays(np.float64, 1, elements=st.floats(0, 0.25)),
)
def test_signed_gradients_through_offset_packing(g, h):
    # the SecureBoost pattern: (g, h) per sample, g signed, packed into one int, summed
    fp = FixedPoint(24)
    hh = np.full(g.shape, h[0])
    offset = 2**24  # |encode(g)| <= 2^24
    g_shift = shift_nonnegative(fp.encode(g), offset)
    packer = SlotPacker.for_bounds(value_bits=26, max_terms=len(g), n_slots=2, modulus_bits=2048)
    cols = np.stack([g_shift, fp.encode(hh)], axis=1)
    total = sum(packer.pack(cols))
    g_sum, h_sum = packer.unpack([total], n_terms=len(g))[0]
    g_sum = unshift_sums([g_sum], len(g), offset)[0]
    assert g_sum == sum(fp.encode(g))
    assert abs(fp.decode([g_sum])[0] - g.sum()) <= len(g) * 2**-25
    assert abs(fp.decode([h_sum])[0] - hh.sum()) <= len(g) * 2**-25


def test_shift_rejects_too_small_offset_and_unshift_broadcasts():
    with pytest.raises(EncodingOverflowError, match="larger offset"):
        shift_nonnegative([5, -11], 10)
    out = unshift_sums([100, 200], [2, 3], 10)
    assert list(out) == [80, 170]


def test_package_reexports():
    import jointcredit.crypto as crypto

    missing = [name for name in crypto.__all__ if not hasattr(crypto, name)]
    assert not missing
