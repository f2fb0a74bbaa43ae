"""Fixed-point encoding of floats as integers, and packing of several integers into one.

Additively homomorphic schemes (Paillier) work on integers mod ``n``. Floats are encoded as
``round(x * 2^frac_bits)`` (:class:`FixedPoint`); several small non-negative integers are packed
into one big integer, ``slot_bits`` bits per slot (:class:`SlotPacker`), so that one encryption,
one ciphertext addition and one decryption serve all slots at once. Packed sums stay exact as
long as no slot carries into its neighbour: :meth:`SlotPacker.for_bounds` sizes the slots from
the per-value bound and the number of terms that will be summed, and refuses what cannot fit.

Slots hold non-negative values only. Signed quantities (gradients) are shifted by a known offset
before packing (:func:`shift_nonnegative`) and the offset is removed from each sum afterwards
(:func:`unshift_sums`), which needs the number of terms in each sum.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from jointcredit.errors import EncodingOverflowError

__all__ = [
    "PACKING_MARGIN_BITS",
    "FixedPoint",
    "SlotPacker",
    "shift_nonnegative",
    "unshift_sums",
]

#: Packed integers use at most ``modulus_bits - PACKING_MARGIN_BITS`` bits: below ``n / 2`` for
#: an ``n`` of ``modulus_bits`` bits, so signed and unsigned decryption agree (same constant as
#: :data:`jointcredit.crypto.paillier.PACKING_MARGIN_BITS`).
PACKING_MARGIN_BITS = 2


def _int_list(values: Any, what: str) -> list[int]:
    """Flatten integer-valued input to Python ints; refuse floats and bools."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if arr.dtype.kind in "iu":
        return arr.ravel().tolist()
    if arr.dtype.kind != "O":
        raise TypeError(f"{what}: expected integers, got dtype {arr.dtype}")
    out = []
    for i, v in enumerate(arr.ravel().tolist()):
        if isinstance(v, int) and not isinstance(v, bool):
            out.append(v)
        elif not isinstance(v, (bool, np.bool_, float, np.floating)) and hasattr(
            type(v), "__index__"
        ):
            out.append(operator.index(v))  # numpy integers, gmpy2 mpz
        else:
            raise TypeError(f"{what}[{i}]: expected an integer, got {type(v).__name__}")
    return out


class FixedPoint:
    """Encode floats as ``round(x * 2^frac_bits)`` Python ints (exact, unbounded).

    ``decode(ints, n_terms)`` divides by ``2^(frac_bits * n_terms)``: ``n_terms`` is the number
    of encoded *factors* in each value (1 for encoded values and for sums of them; 2 for the
    product of two encoded values, e.g. an encrypted encoded gradient times an encoded
    feature). Sums do not change the scale.
    """

    def __init__(self, frac_bits: int) -> None:
        frac_bits = int(frac_bits)
        if not 0 <= frac_bits <= 1000:
            raise ValueError(f"frac_bits: must be in 0..1000, got {frac_bits}")
        self.frac_bits = frac_bits
        self.scale = 1 << frac_bits

    def __repr__(self) -> str:
        return f"FixedPoint(frac_bits={self.frac_bits})"

    def encode(self, x: Any) -> np.ndarray:
        """Object array (same shape as ``x``) of Python ints ``round(x * 2^frac_bits)``.

        Rounding is half-to-even (numpy ``rint``); the error is at most ``2^-(frac_bits+1)``.

        Raises:
            EncodingOverflowError: NaN or infinite input (it has no integer encoding).
        """
        arr = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            bad = np.flatnonzero(~np.isfinite(arr.ravel()))
            raise EncodingOverflowError(
                f"x: {bad.size} non-finite value(s) (NaN/inf) cannot be encoded, "
                f"first at flat index {int(bad[0])}"
            )
        # multiplying by a power of two is exact in binary floating point (barring overflow to
        # inf, caught below), so the only rounding is rint's
        with np.errstate(over="ignore"):
            scaled = np.rint(np.ldexp(arr, self.frac_bits))
        if not np.all(np.isfinite(scaled)):
            raise EncodingOverflowError(
                f"x: values overflow float64 when scaled by 2^{self.frac_bits}"
            )
        if scaled.size and np.max(np.abs(scaled)) < 2.0**62:
            out = scaled.astype(np.int64).astype(object)
        else:
            out = np.empty(arr.shape, dtype=object)
            out.ravel()[:] = [int(v) for v in scaled.ravel().tolist()]
        return out.reshape(arr.shape)

    def decode(self, ints: Any, n_terms: int = 1) -> np.ndarray:
        """Float array ``ints / 2^(frac_bits * n_terms)`` (correctly rounded for huge ints)."""
        if int(n_terms) < 1:
            raise ValueError(f"n_terms: must be >= 1, got {n_terms}")
        arr = np.asarray(ints, dtype=object) if not isinstance(ints, np.ndarray) else ints
        shape = arr.shape
        denom = 1 << (self.frac_bits * int(n_terms))
        # int / int true division rounds correctly even when the ints exceed float range
        vals = [v / denom for v in _int_list(arr, "ints")]
        return np.asarray(vals, dtype=np.float64).reshape(shape)

    def int_bound(self, max_abs: float) -> int:
        """Largest ``|encode(x)|`` for ``|x| <= max_abs``."""
        return int(np.rint(np.ldexp(float(max_abs), self.frac_bits)))


class SlotPacker:
    """Pack ``n_slots`` non-negative ints, ``slot_bits`` bits each, into one int.

    Column ``j`` occupies bits ``[j * slot_bits, (j + 1) * slot_bits)`` (column 0 least
    significant). With ``value_bits`` set, every packed value must be ``< 2^value_bits`` and
    :attr:`max_terms` packed ints can be added (e.g. homomorphically) before any slot could
    carry into the next one; :meth:`unpack` refuses sums of more terms.
    """

    def __init__(self, slot_bits: int, n_slots: int, value_bits: int | None = None) -> None:
        slot_bits, n_slots = int(slot_bits), int(n_slots)
        if slot_bits < 1:
            raise ValueError(f"slot_bits: must be >= 1, got {slot_bits}")
        if n_slots < 1:
            raise ValueError(f"n_slots: must be >= 1, got {n_slots}")
        if value_bits is not None:
            value_bits = int(value_bits)
            if not 1 <= value_bits <= slot_bits:
                raise EncodingOverflowError(
                    f"value_bits: {value_bits} must be in 1..slot_bits ({slot_bits})"
                )
        self.slot_bits = slot_bits
        self.n_slots = n_slots
        self.value_bits = value_bits
        self._mask = (1 << slot_bits) - 1

    def __repr__(self) -> str:
        return (
            f"SlotPacker(slot_bits={self.slot_bits}, n_slots={self.n_slots}, "
            f"value_bits={self.value_bits}, max_terms={self.max_terms})"
        )

    @classmethod
    def for_bounds(
        cls, value_bits: int, max_terms: int, n_slots: int, modulus_bits: int
    ) -> SlotPacker:
        """The narrowest packer for sums of up to ``max_terms`` values ``< 2^value_bits``.

        ``slot_bits`` is the bit length of ``max_terms * (2^value_bits - 1)``, the largest
        possible slot sum. The packed int must stay below ``2^(modulus_bits - 2)`` (see
        :data:`PACKING_MARGIN_BITS`).

        Raises:
            EncodingOverflowError: ``n_slots * slot_bits > modulus_bits - 2``.
        """
        value_bits, max_terms = int(value_bits), int(max_terms)
        n_slots, modulus_bits = int(n_slots), int(modulus_bits)
        if value_bits < 1:
            raise ValueError(f"value_bits: must be >= 1, got {value_bits}")
        if max_terms < 1:
            raise ValueError(f"max_terms: must be >= 1, got {max_terms}")
        if n_slots < 1:
            raise ValueError(f"n_slots: must be >= 1, got {n_slots}")
        slot_bits = (max_terms * ((1 << value_bits) - 1)).bit_length()
        capacity = modulus_bits - PACKING_MARGIN_BITS
        if n_slots * slot_bits > capacity:
            raise EncodingOverflowError(
                f"n_slots: {n_slots} slots of {slot_bits} bits ({value_bits}-bit values, sums of "
                f"up to {max_terms}) need {n_slots * slot_bits} bits; a {modulus_bits}-bit "
                f"modulus holds {capacity}"
            )
        return cls(slot_bits, n_slots, value_bits)

    @staticmethod
    def max_slots(slot_bits: int, modulus_bits: int) -> int:
        """How many ``slot_bits``-bit slots fit under a ``modulus_bits``-bit modulus."""
        return (int(modulus_bits) - PACKING_MARGIN_BITS) // int(slot_bits)

    @property
    def total_bits(self) -> int:
        """Bits used by one packed int (``slot_bits * n_slots``)."""
        return self.slot_bits * self.n_slots

    @property
    def max_terms(self) -> int:
        """How many packed ints can be summed before a slot might overflow."""
        if self.value_bits is None:
            return 1
        return self._mask // ((1 << self.value_bits) - 1)

    def pack(self, columns: Any) -> list[int]:
        """Pack an ``(n, n_slots)`` array of non-negative ints into ``n`` Python ints.

        Raises:
            EncodingOverflowError: a negative value or one ``>= 2^value_bits``
                (``2^slot_bits`` without ``value_bits``); names the row and column.
        """
        arr = (
            np.asarray(columns)
            if isinstance(columns, np.ndarray)
            else np.asarray(columns, dtype=object)
        )
        if arr.ndim != 2 or arr.shape[1] != self.n_slots:
            raise ValueError(f"columns: expected shape (n, {self.n_slots}), got {arr.shape}")
        n = arr.shape[0]
        flat = _int_list(arr, "columns")
        limit_bits = self.value_bits if self.value_bits is not None else self.slot_bits
        limit = 1 << limit_bits
        s = self.slot_bits
        k = self.n_slots
        out = []
        for i in range(n):
            row = flat[i * k : (i + 1) * k]
            acc = 0
            for j in range(k - 1, -1, -1):
                v = row[j]
                if not 0 <= v < limit:
                    raise EncodingOverflowError(
                        f"columns[{i}, {j}]: {v} is outside [0, 2^{limit_bits})"
                    )
                acc = (acc << s) | v
            out.append(acc)
        return out

    def unpack(self, packed: Sequence[int], n_terms: int = 1) -> np.ndarray:
        """Split packed ints (or sums of ``n_terms`` packed ints) into an ``(n, n_slots)``
        object array of Python ints.

        Raises:
            EncodingOverflowError: ``n_terms > max_terms`` (slots may have carried), or a packed
                value is negative or wider than ``total_bits``.
        """
        if int(n_terms) > self.max_terms:
            raise EncodingOverflowError(
                f"n_terms: sums of {n_terms} packed values may overflow {self.slot_bits}-bit "
                f"slots (max_terms={self.max_terms})"
            )
        values = _int_list(np.asarray(packed, dtype=object).ravel(), "packed")
        s, k, mask = self.slot_bits, self.n_slots, self._mask
        out = np.empty((len(values), k), dtype=object)
        for i, v in enumerate(values):
            if v < 0 or v.bit_length() > self.total_bits:
                raise EncodingOverflowError(
                    f"packed[{i}]: value is negative or wider than {self.total_bits} bits"
                )
            for j in range(k):
                out[i, j] = (v >> (j * s)) & mask
        return out


def shift_nonnegative(values: Any, offset: int) -> np.ndarray:
    """``values + offset`` as an object array of Python ints; refuses results below zero.

    Typical use: fixed-point gradients in ``(-2^b, 2^b)`` shifted by ``offset = 2^b`` so they fit
    unsigned slots; the bound for :meth:`SlotPacker.for_bounds` is then ``b + 1`` bits.
    """
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    shape = arr.shape
    off = int(offset)
    out = [v + off for v in _int_list(arr, "values")]
    for i, v in enumerate(out):
        if v < 0:
            raise EncodingOverflowError(
                f"values[{i}]: {v - off} + offset {off} is negative; use a larger offset"
            )
    res = np.empty(len(out), dtype=object)
    res[:] = out
    return res.reshape(shape)


def unshift_sums(sums: Any, counts: Any, offset: int) -> np.ndarray:
    """``sums - counts * offset``: remove the offset from sums of ``counts`` shifted values.

    ``counts`` broadcasts against ``sums`` (a scalar, or one count per sum, e.g. the number of
    samples in each histogram bin).
    """
    s = np.asarray(sums, dtype=object)
    c = np.asarray(counts, dtype=object)
    res = s - c * int(offset)
    return np.asarray(res, dtype=object)
