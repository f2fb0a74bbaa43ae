"""Population stability of scores and features between a reference and a current population.

The index (DESIGN §7; it is deliberately never abbreviated in code, because "PSI" means private
set intersection in this library) compares the share of a population in each bin::

    population_stability = sum_i (a_i - e_i) * ln(a_i / e_i)

where ``e_i`` is the reference ("expected") share and ``a_i`` the current ("actual") share of bin
``i``. Conventions used here:

* Bins are quantiles of the *reference* population (``bins=10`` by default) or explicit cut
  points; a bin is right-closed, ``(c_k, c_k+1]``, with open ends below the first and above the
  last cut point, so every finite value lands in exactly one bin.
* Missing values (NaN) form their own bin, and so does every value listed in ``special_values``
  (e.g. ``-1`` = "no own utility account"): a change in how often data is missing is a change
  of population, and special codes must not be mixed with measurements.
* A bin that is empty on one side would make the index infinite; its share is raised to ``eps``
  (1e-4 by default) on both sides before the sum. This is the usual practical convention; it
  makes the index finite and slightly underestimates extreme shifts.

Bands: < 0.1 ``stable``, 0.1 – 0.25 ``monitor``, > 0.25 ``redevelop`` (both bounds inclusive of
``monitor``).

A :class:`StabilityReference` keeps only the bin edges and shares of a reference population, so
a model registry or the credit center can store it and compare later populations against it
without keeping per-enterprise values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.errors import DataValidationError

__all__ = [
    "MONITOR",
    "REDEVELOP",
    "STABLE",
    "STABILITY_BANDS",
    "StabilityReference",
    "feature_stability",
    "population_stability",
    "stability_band",
    "stability_reference",
    "stability_table",
]

STABLE = "stable"
MONITOR = "monitor"
REDEVELOP = "redevelop"

#: Band limits: below the first value ``stable``; up to the second ``monitor``; above it
#: ``redevelop``.
STABILITY_BANDS: tuple[float, float] = (0.1, 0.25)

#: Share given to a bin that is empty on one side (see the module docstring).
DEFAULT_EPS = 1e-4


def stability_band(value: float) -> str:
    """``"stable"`` (< 0.1), ``"monitor"`` (0.1 – 0.25) or ``"redevelop"`` (> 0.25)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataValidationError("value", f"must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise DataValidationError("value", f"a stability index is finite and >= 0, got {value!r}")
    low, high = STABILITY_BANDS
    if v < low:
        return STABLE
    if v <= high:
        return MONITOR
    return REDEVELOP


def _values(values: Any, field: str) -> np.ndarray:
    if isinstance(values, pd.DataFrame):
        raise DataValidationError(field, "give one column (a Series or 1-D array), not a frame")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataValidationError(field, "values must be numeric (NaN allowed)") from None
    if arr.ndim != 1:
        raise DataValidationError(field, f"expected a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise DataValidationError(field, "empty population")
    if np.isinf(arr).any():
        raise DataValidationError(field, "infinite values; use NaN for missing")
    return arr


def _specials(special_values: Sequence[float], field: str = "special_values") -> tuple[float, ...]:
    out = []
    for i, v in enumerate(special_values):
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise DataValidationError(f"{field}[{i}]", f"must be a number, got {v!r}")
        if not math.isfinite(float(v)):
            raise DataValidationError(f"{field}[{i}]", "must be finite (NaN has its own bin)")
        out.append(float(v))
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class StabilityReference:
    """Bins and reference shares of one population: enough to compute the index later.

    ``edges``: interior cut points (right-closed bins, open ends). ``special_values``: codes
    with their own bin. ``shares``: reference shares, in the order regular bins, then one per
    special value, then NaN. ``n``: size of the reference population.
    """

    edges: tuple[float, ...]
    special_values: tuple[float, ...]
    shares: tuple[float, ...]
    n: int

    def __post_init__(self) -> None:
        expected = len(self.edges) + 1 + len(self.special_values) + 1
        if len(self.shares) != expected:
            raise DataValidationError(
                "shares", f"{len(self.shares)} shares for {expected} bins (regular+special+NaN)"
            )
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise DataValidationError("edges", "cut points must strictly increase")
        total = float(sum(self.shares))
        if any(s < 0 for s in self.shares) or not math.isclose(total, 1.0, abs_tol=1e-9):
            raise DataValidationError("shares", "shares must be >= 0 and sum to 1")

    def counts(self, values: Any, field: str = "actual") -> np.ndarray:
        """Counts of ``values`` per bin, in the order of :attr:`shares`."""
        arr = _values(values, field)
        nan = np.isnan(arr)
        special_hits = [arr == v for v in self.special_values]
        regular = ~nan
        for hit in special_hits:
            regular &= ~hit
        idx = np.searchsorted(np.asarray(self.edges, dtype=np.float64), arr[regular], side="left")
        regular_counts = np.bincount(idx, minlength=len(self.edges) + 1)
        return np.concatenate(
            [
                regular_counts,
                np.array([int(h.sum()) for h in special_hits], dtype=np.int64),
                np.array([int(nan.sum())], dtype=np.int64),
            ]
        ).astype(np.int64)

    def compare(self, values: Any, *, eps: float = DEFAULT_EPS) -> float:
        """The index of ``values`` (the current population) against this reference."""
        counts = self.counts(values)
        actual = counts / counts.sum()
        return _index(np.asarray(self.shares, dtype=np.float64), actual, eps)

    def labels(self) -> list[str]:
        """Readable bin names, in the order of :attr:`shares`."""
        cuts = [-math.inf, *self.edges, math.inf]
        names = [f"({lo:.6g}, {hi:.6g}]" for lo, hi in zip(cuts, cuts[1:], strict=False)]
        names += [f"={v:g}" for v in self.special_values]
        return [*names, "NaN"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": list(self.edges),
            "special_values": list(self.special_values),
            "shares": list(self.shares),
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StabilityReference:
        unknown = sorted(set(data) - {"edges", "special_values", "shares", "n"})
        if unknown:
            raise DataValidationError(unknown[0], "unknown field of a stability reference")
        try:
            return cls(
                edges=tuple(float(v) for v in data["edges"]),
                special_values=_specials(data.get("special_values", ())),
                shares=tuple(float(v) for v in data["shares"]),
                n=int(data["n"]),
            )
        except KeyError as exc:
            raise DataValidationError(
                str(exc.args[0]), "missing from stability reference"
            ) from None


def _index(expected: np.ndarray, actual: np.ndarray, eps: float) -> float:
    if not (isinstance(eps, float | int) and 0 < float(eps) < 0.5):
        raise DataValidationError("eps", f"must be in (0, 0.5), got {eps!r}")
    e = np.maximum(expected, eps)
    a = np.maximum(actual, eps)
    # Bins empty on both sides contribute exactly zero; skip them so eps cannot add noise.
    used = (expected > 0) | (actual > 0)
    return float(np.sum((a[used] - e[used]) * np.log(a[used] / e[used])))


def _cut_points(regular: np.ndarray, bins: int | Sequence[float] | np.ndarray) -> tuple[float, ...]:
    if isinstance(bins, bool):
        raise DataValidationError("bins", "give a number of bins or a list of cut points")
    if isinstance(bins, int | np.integer):
        if bins < 2:
            raise DataValidationError("bins", f"need at least 2 bins, got {bins}")
        if regular.size == 0:
            return ()
        qs = np.quantile(regular, np.linspace(0.0, 1.0, int(bins) + 1)[1:-1], method="linear")
        cuts = np.unique(qs)
        # A cut at the maximum would leave an always-empty top bin.
        return tuple(float(c) for c in cuts if c < regular.max())
    try:
        cuts = np.asarray(bins, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataValidationError("bins", "cut points must be numeric") from None
    if cuts.ndim != 1 or cuts.size == 0:
        raise DataValidationError("bins", "give a non-empty 1-D list of cut points")
    if np.isnan(cuts).any():
        raise DataValidationError("bins", "cut points must not be NaN")
    cuts = cuts[np.isfinite(cuts)]  # -inf / +inf outer edges are implied
    if np.any(np.diff(cuts) <= 0):
        raise DataValidationError("bins", "cut points must strictly increase")
    return tuple(float(c) for c in cuts)


def stability_reference(
    expected: Any,
    bins: int | Sequence[float] | np.ndarray = 10,
    *,
    special_values: Sequence[float] = (),
) -> StabilityReference:
    """Bin a reference population (quantile bins of its regular values, or given cut points)."""
    arr = _values(expected, "expected")
    specials = _specials(special_values)
    regular = arr[~np.isnan(arr) & ~np.isin(arr, specials)]
    edges = _cut_points(regular, bins)
    probe = StabilityReference(
        edges, specials, (1.0,) + (0.0,) * (len(edges) + len(specials) + 1), int(arr.size)
    )
    counts = probe.counts(arr, "expected")
    return StabilityReference(edges, specials, tuple((counts / counts.sum()).tolist()), arr.size)


def population_stability(
    expected: Any,
    actual: Any,
    bins: int | Sequence[float] | np.ndarray = 10,
    *,
    special_values: Sequence[float] = (),
    eps: float = DEFAULT_EPS,
) -> float:
    """Population stability index of ``actual`` against ``expected`` (see the module docstring).

    ``bins``: number of quantile bins of ``expected`` (ties merge bins) or explicit cut points.
    ``special_values``: codes that get their own bin; NaN always has its own bin. ``expected``
    may also be a :class:`StabilityReference` (then ``bins``/``special_values`` are ignored).
    """
    if isinstance(expected, StabilityReference):
        return expected.compare(actual, eps=eps)
    reference = stability_reference(expected, bins, special_values=special_values)
    return reference.compare(actual, eps=eps)


def stability_table(
    expected: Any,
    actual: Any,
    bins: int | Sequence[float] | np.ndarray = 10,
    *,
    special_values: Sequence[float] = (),
    eps: float = DEFAULT_EPS,
) -> pd.DataFrame:
    """Per-bin breakdown: ``bin, expected_share, actual_share, contribution`` (sums to the index)."""
    reference = (
        expected
        if isinstance(expected, StabilityReference)
        else stability_reference(expected, bins, special_values=special_values)
    )
    counts = reference.counts(actual)
    e = np.asarray(reference.shares, dtype=np.float64)
    a = counts / counts.sum()
    ee, aa = np.maximum(e, eps), np.maximum(a, eps)
    contribution = np.where((e > 0) | (a > 0), (aa - ee) * np.log(aa / ee), 0.0)
    return pd.DataFrame(
        {
            "bin": reference.labels(),
            "expected_share": e,
            "actual_share": a,
            "contribution": contribution,
        }
    )


def feature_stability(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    bins: int = 10,
    special_values: Mapping[str, Sequence[float]] | None = None,
    eps: float = DEFAULT_EPS,
) -> pd.DataFrame:
    """Index and band of every feature between two frames (one party's own data).

    Returns ``feature, stability, band, n_reference, n_current``, most unstable first.
    ``special_values`` maps a feature to its special codes (e.g. from the credit center's
    catalogue); other features get only the NaN bin.
    """
    for name, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise DataValidationError(name, "must be a DataFrame")
    cols = list(features) if features is not None else [c for c in reference.columns if c != "id"]
    if not cols:
        raise DataValidationError("features", "no feature to compare")
    for col in cols:
        for name, frame in (("reference", reference), ("current", current)):
            if col not in frame.columns:
                raise DataValidationError(col, f"column missing from the {name} frame")
    specials = dict(special_values or {})
    rows = []
    for col in cols:
        value = population_stability(
            reference[col].to_numpy(dtype=np.float64),
            current[col].to_numpy(dtype=np.float64),
            bins,
            special_values=tuple(specials.get(col, ())),
            eps=eps,
        )
        rows.append(
            {
                "feature": col,
                "stability": value,
                "band": stability_band(value),
                "n_reference": int(len(reference)),
                "n_current": int(len(current)),
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values("stability", ascending=False, kind="stable").reset_index(drop=True)
