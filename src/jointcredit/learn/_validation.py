"""Input checks the joint learning protocols share (binning, hetero LR, SecureBoost).

Every protocol half validates what it is given before it touches any state; these two checks
come up in all of them, and one definition keeps their messages and edge cases identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jointcredit.errors import DataValidationError
from jointcredit.protocol.fields import require_fields  # noqa: F401 (re-exported)

__all__ = ["check_rows", "require_fields"]


def check_rows(rows: Any, n_aligned: int, field: str = "rows") -> np.ndarray:
    """Row positions in the aligned intersection (``None``: all of them), as ``int64``.

    Refuses, naming ``field``: anything but a 1-D integer array, an empty selection, positions
    outside ``[0, n_aligned)`` and repeated positions (a repeated row would count twice in
    every sum the other party computes).
    """
    if rows is None:
        return np.arange(n_aligned, dtype=np.int64)
    arr = np.asarray(rows)
    if arr.ndim != 1:
        raise DataValidationError(field, "row positions must be a 1-D integer array")
    if arr.size == 0:
        raise DataValidationError(field, "no rows given")
    if arr.dtype.kind not in "iu":
        raise DataValidationError(field, "row positions must be a 1-D integer array")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n_aligned:
        raise DataValidationError(field, f"row positions must be in [0, {n_aligned})")
    if np.unique(arr).size != arr.size:
        raise DataValidationError(field, "row positions must not repeat")
    return arr
