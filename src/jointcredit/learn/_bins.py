"""Local binning helpers shared by federated binning, the scorecard and SecureBoost.

A :class:`BinSpec` describes how one party cuts one of its own features: equal-frequency
numeric bins, one bin per special code (values such as ``-1`` = "not rated" that are codes, not
measurements) and one bin for missing values. Everything here runs inside one party; nothing in
this module crosses the wire. The WOE / IV arithmetic (:func:`woe_iv`) is also here so that the
bank computes it the same way for its own features and for the counts it receives.

WOE direction (DESIGN §4.5 / §7): ``WOE_i = ln(bad_share_i / good_share_i)`` where
``bad_share_i = bads_i / total_bads``. A bin riskier than the population has a *positive* WOE, so
a WOE-logistic regression has positive coefficients and ``IV = sum((bad_share - good_share) *
WOE)`` matches the design brief's formula term by term.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jointcredit.errors import DataValidationError

#: Added to the bad and good count of every bin before taking shares, so that a bin without
#: bads (or goods) gets a large but finite WOE instead of +-inf.
WOE_SMOOTHING = 0.5

#: Information-value strength bands of DESIGN §7 (upper bounds, label).
IV_BANDS: tuple[tuple[float, str], ...] = (
    (0.02, "useless"),
    (0.1, "weak"),
    (0.3, "medium"),
    (0.5, "strong"),
    (math.inf, "suspicious"),
)

NUMERIC, SPECIAL, MISSING = "numeric", "special", "missing"

#: Categorical features with more levels than this are binned like numeric ones.
MAX_LEVELS = 64


def iv_strength(iv: float) -> str:
    """Label an information value with the DESIGN §7 bands (< 0.02 useless ... > 0.5 suspicious)."""
    for upper, label in IV_BANDS:
        if iv < upper:
            return label
    return IV_BANDS[-1][1]


def equal_frequency_cuts(values: np.ndarray, max_bins: int) -> np.ndarray:
    """Interior cut points giving at most ``max_bins`` bins of about equal counts.

    Bins are right-closed, ``(c[k-1], c[k]]``; cuts are quantiles of ``values`` (finite values
    only), de-duplicated, so heavily tied features get fewer bins rather than empty ones. A cut
    equal to the maximum would leave the top bin empty and is dropped.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or max_bins < 2:
        return np.zeros(0)
    qs = np.linspace(0.0, 1.0, int(max_bins) + 1)[1:-1]
    cuts = np.unique(np.quantile(values, qs, method="linear"))
    return cuts[cuts < values.max()]


@dataclass
class BinSpec:
    """How one feature is cut into bins.

    Bin indices: ``0 .. n_numeric - 1`` numeric bins in increasing value order, then one bin per
    entry of ``special_codes`` (in that order), then the missing-value bin (always present, so
    that a missing value at scoring time has a bin even if training had none).
    """

    cuts: np.ndarray
    special_codes: tuple[float, ...] = ()
    special_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        self.cuts = np.asarray(self.cuts, dtype=np.float64).reshape(-1)
        if self.cuts.size and not np.all(np.diff(self.cuts) > 0):
            raise DataValidationError("cuts", "cut points must be strictly increasing")
        self.special_codes = tuple(float(c) for c in self.special_codes)
        if not self.special_names:
            self.special_names = tuple("" for _ in self.special_codes)

    @property
    def n_numeric(self) -> int:
        return int(self.cuts.size) + 1

    @property
    def n_bins(self) -> int:
        return self.n_numeric + len(self.special_codes) + 1

    @property
    def missing_bin(self) -> int:
        return self.n_bins - 1

    def kind(self, index: int) -> str:
        """``"numeric"``, ``"special"`` or ``"missing"`` for a bin index."""
        if index < self.n_numeric:
            return NUMERIC
        if index < self.n_numeric + len(self.special_codes):
            return SPECIAL
        return MISSING

    def kinds(self) -> list[str]:
        return [self.kind(i) for i in range(self.n_bins)]

    def assign(self, values: Any) -> np.ndarray:
        """Bin index (int64) of each value: NaN -> missing bin, special codes -> their bin."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        out = np.searchsorted(self.cuts, x, side="left").astype(np.int64)
        for k, code in enumerate(self.special_codes):
            out[x == code] = self.n_numeric + k
        out[np.isnan(x)] = self.missing_bin
        return out

    def describe(self, index: int) -> str:
        """Human-readable bin description (for the owner's own reports only: shows cut points)."""
        kind = self.kind(index)
        if kind == MISSING:
            return "missing"
        if kind == SPECIAL:
            k = index - self.n_numeric
            name = self.special_names[k]
            return f"= {self.special_codes[k]:g}" + (f" ({name})" if name else "")
        lo = -math.inf if index == 0 else float(self.cuts[index - 1])
        hi = math.inf if index == self.n_numeric - 1 else float(self.cuts[index])
        return f"({lo:g}, {hi:g}]"

    def merge_numeric(self, groups: Sequence[Sequence[int]]) -> tuple[BinSpec, np.ndarray]:
        """Merge runs of adjacent numeric bins; return the new spec and old -> new index map.

        ``groups`` partitions ``0 .. n_numeric - 1`` into runs of consecutive indices, in order.
        Special and missing bins are kept as they are.

        Raises:
            DataValidationError: the groups are not an ordered partition into adjacent runs.
        """
        flat = [int(i) for g in groups for i in g]
        if flat != list(range(self.n_numeric)) or any(len(g) == 0 for g in groups):
            raise DataValidationError(
                "merge", "groups must cover every numeric bin once, as adjacent runs in order"
            )
        keep = [int(g[-1]) for g in groups[:-1]]  # a run ends at cut index == its last bin
        new = BinSpec(self.cuts[keep], self.special_codes, self.special_names)
        mapping = np.empty(self.n_bins, dtype=np.int64)
        for new_index, g in enumerate(groups):
            mapping[list(g)] = new_index
        extra = self.n_bins - self.n_numeric
        mapping[self.n_numeric :] = np.arange(new.n_numeric, new.n_numeric + extra)
        return new, mapping

    def to_dict(self) -> dict[str, Any]:
        return {
            "cuts": [float(c) for c in self.cuts],
            "special_codes": list(self.special_codes),
            "special_names": list(self.special_names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinSpec:
        return cls(
            np.asarray(data["cuts"], dtype=np.float64),
            tuple(data.get("special_codes", ())),
            tuple(data.get("special_names", ())),
        )


def fit_bins(
    values: Any,
    *,
    max_bins: int = 10,
    special_codes: dict[float, str] | Iterable[float] | None = None,
    min_bin_fraction: float = 0.0,
    categorical: bool = False,
) -> BinSpec:
    """Equal-frequency bins for one feature, with separate special-code and missing bins.

    ``min_bin_fraction``: numeric bins holding fewer than this share of the non-missing,
    non-special values are merged into their smaller neighbour (tiny bins make noisy WOE).
    ``categorical``: integer-coded categories get one bin per level (codes have no order, so
    quantiles of them mean nothing), unless there are more than :data:`MAX_LEVELS` levels.
    """
    if int(max_bins) < 2:
        raise DataValidationError("max_bins", f"must be at least 2, got {max_bins}")
    if not 0.0 <= float(min_bin_fraction) < 0.5:
        raise DataValidationError(
            "min_bin_fraction", f"must be in [0, 0.5), got {min_bin_fraction}"
        )
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if isinstance(special_codes, dict):
        codes = tuple(float(c) for c in special_codes)
        names = tuple(str(special_codes[c]) for c in special_codes)
    else:
        codes = tuple(float(c) for c in (special_codes or ()))
        names = tuple("" for _ in codes)
    regular = ~np.isnan(x)
    for code in codes:
        regular &= x != code
    levels = np.unique(x[regular])
    if categorical and 1 < levels.size <= MAX_LEVELS:
        return BinSpec((levels[1:] + levels[:-1]) / 2.0, codes, names)
    spec = BinSpec(equal_frequency_cuts(x[regular], int(max_bins)), codes, names)
    if min_bin_fraction > 0 and spec.n_numeric > 1 and regular.any():
        spec = _merge_small(spec, x[regular], float(min_bin_fraction))
    return spec


def _merge_small(spec: BinSpec, regular: np.ndarray, fraction: float) -> BinSpec:
    counts = np.bincount(spec.assign(regular), minlength=spec.n_bins)[: spec.n_numeric]
    groups = [[i] for i in range(spec.n_numeric)]
    sizes = [int(c) for c in counts]
    limit = fraction * regular.size
    while len(groups) > 1 and min(sizes) < limit:
        i = int(np.argmin(sizes))
        if i == 0:
            j = 1
        elif i == len(groups) - 1:
            j = i - 1
        else:
            j = i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1
        a, b = min(i, j), max(i, j)
        groups[a] = groups[a] + groups[b]
        sizes[a] += sizes[b]
        del groups[b], sizes[b]
    return spec.merge_numeric(groups)[0] if len(groups) < spec.n_numeric else spec


def woe_iv(
    bads: Any, totals: Any, smoothing: float = WOE_SMOOTHING
) -> tuple[np.ndarray, np.ndarray, float]:
    """WOE per bin, IV contribution per bin and total IV from per-bin bad and total counts.

    ``WOE = ln(bad_share / good_share)`` (positive = riskier than average; see module docstring),
    shares taken after adding ``smoothing`` to every non-empty bin's bad and good count. Empty
    bins get WOE 0 and contribute nothing.
    """
    bads = np.asarray(bads, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)
    if bads.shape != totals.shape:
        raise DataValidationError("bads", "bads and totals must have the same shape")
    if np.any(bads < 0) or np.any(bads > totals):
        raise DataValidationError("bads", "bad counts must be between 0 and the bin totals")
    goods = totals - bads
    used = totals > 0
    b = np.where(used, bads + smoothing, 0.0)
    g = np.where(used, goods + smoothing, 0.0)
    if b.sum() <= 0 or g.sum() <= 0:
        zeros = np.zeros_like(bads)
        return zeros, zeros, 0.0
    bad_share = b / b.sum()
    good_share = g / g.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        woe = np.where(used, np.log(bad_share / good_share), 0.0)
    contrib = np.where(used, (bad_share - good_share) * woe, 0.0)
    return woe, contrib, float(contrib.sum())


def monotonic_groups(bads: Any, totals: Any) -> list[list[int]]:
    """Merge adjacent bins (in the given order) until the bad rate is monotonic.

    Pool-adjacent-violators on bin bad rates, weighted by bin size; the direction (increasing or
    decreasing) is the one that needs fewer merges, ties going to the sign of the rank
    correlation. Returns the runs of input positions, in order. Empty bins join their neighbour.
    """
    bads = np.asarray(bads, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)
    n = bads.size
    if n <= 1:
        return [list(range(n))]
    best: list[list[int]] | None = None
    for increasing in (True, False):
        groups = _pava(bads, totals, increasing)
        if best is None or len(groups) > len(best):
            best = groups
        elif len(groups) == len(best):
            rates = bads / np.maximum(totals, 1)
            slope = np.corrcoef(np.arange(n), rates)[0, 1] if np.ptp(rates) > 0 else 0.0
            if (slope >= 0) == increasing:
                best = groups
    return best or [list(range(n))]


def _pava(bads: np.ndarray, totals: np.ndarray, increasing: bool) -> list[list[int]]:
    blocks: list[tuple[list[int], float, float]] = []  # members, bads, totals
    for i in range(bads.size):
        blocks.append(([i], float(bads[i]), float(totals[i])))
        while len(blocks) > 1:
            m1, b1, t1 = blocks[-2]
            m2, b2, t2 = blocks[-1]
            if t1 == 0 or t2 == 0:
                violates = True
            else:
                r1, r2 = b1 / t1, b2 / t2
                violates = r1 > r2 if increasing else r1 < r2
            if not violates:
                break
            blocks[-2:] = [(m1 + m2, b1 + b2, t1 + t2)]
    return [m for m, _, _ in blocks]
