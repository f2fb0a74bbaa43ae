"""Discrimination metrics credit modelers expect: AUC, KS, Gini and the gains table.

Convention used throughout: ``y`` is 1 for a bad (defaulted) enterprise and 0 for a good one,
and ``score`` is the predicted **probability of bad** (or any value that increases with risk).
A model that puts bads above goods has AUC > 0.5. A points-style scorecard score, where *higher
is safer*, must be negated (or passed as PD) before calling these functions.

Ties are handled exactly: AUC counts tied good/bad pairs as one half, and KS and the gains
table never split a group of equal scores, so results do not depend on row order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jointcredit.errors import DataValidationError

__all__ = ["auc", "gains_table", "gini", "ks", "summary"]


def _validated(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return (y as int8 0/1, score as float64) or raise naming the bad argument."""
    y_arr = np.asarray(y)
    s_arr = np.asarray(score)
    if y_arr.ndim != 1:
        raise DataValidationError("y", f"expected a 1-D array of labels, got shape {y_arr.shape}")
    if s_arr.ndim != 1:
        raise DataValidationError(
            "score", f"expected a 1-D array of scores, got shape {s_arr.shape}"
        )
    if y_arr.shape[0] != s_arr.shape[0]:
        raise DataValidationError(
            "score", f"{s_arr.shape[0]} scores for {y_arr.shape[0]} labels; lengths must match"
        )
    try:
        y_float = y_arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataValidationError("y", f"labels must be 0/1, got dtype {y_arr.dtype}") from exc
    if np.isnan(y_float).any():
        raise DataValidationError("y", "labels contain missing values")
    if not np.isin(y_float, (0.0, 1.0)).all():
        bad = sorted(set(y_float[~np.isin(y_float, (0.0, 1.0))].tolist()))[:5]
        raise DataValidationError("y", f"labels must be 0 (good) or 1 (bad), found {bad}")
    try:
        s_float = s_arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataValidationError("score", f"scores must be numeric, got {s_arr.dtype}") from exc
    if not np.isfinite(s_float).all():
        raise DataValidationError("score", "scores contain NaN or infinite values")
    n_bad = int(y_float.sum())
    if n_bad == 0 or n_bad == y_float.shape[0]:
        raise DataValidationError(
            "y", "both classes must be present (got only " + ("goods)" if n_bad == 0 else "bads)")
        )
    return y_float.astype(np.int8), s_float


def _ranks(score: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = np.argsort(score, kind="mergesort")
    sorted_s = score[order]
    # Boundaries of tie groups in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], sorted_s.shape[0]]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions starts+1 .. ends
    ranks = np.empty(score.shape[0], dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(y: Any, score: Any) -> float:
    """Area under the ROC curve: the probability that a random bad outranks a random good.

    Computed from ranks (Mann-Whitney U), ties counting one half.
    """
    y_v, s_v = _validated(y, score)
    n_bad = int(y_v.sum())
    n_good = y_v.shape[0] - n_bad
    rank_sum = float(_ranks(s_v)[y_v == 1].sum())
    return (rank_sum - n_bad * (n_bad + 1) / 2.0) / (n_bad * n_good)


def _cumulative_by_threshold(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TPR and FPR when rejecting every score >= t, for each distinct threshold t (descending)."""
    order = np.argsort(-score, kind="mergesort")
    s_sorted = score[order]
    y_sorted = y[order]
    last_of_group = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    cum_bad = np.cumsum(y_sorted)[last_of_group]
    cum_good = np.cumsum(1 - y_sorted)[last_of_group]
    return cum_bad / y.sum(), cum_good / (y.shape[0] - y.sum())


def ks(y: Any, score: Any) -> float:
    """Kolmogorov-Smirnov statistic: max over thresholds of TPR - FPR (bads caught minus goods).

    Evaluated only between groups of tied scores, since a cut-off cannot separate equal scores.
    """
    y_v, s_v = _validated(y, score)
    tpr, fpr = _cumulative_by_threshold(y_v, s_v)
    return float(max(0.0, np.max(tpr - fpr)))


def gini(y: Any, score: Any) -> float:
    """Gini coefficient (accuracy ratio) = 2 * AUC - 1."""
    return 2.0 * auc(y, score) - 1.0


def gains_table(y: Any, score: Any, n_bands: int = 10) -> pd.DataFrame:
    """Gains table by score band, riskiest band first.

    Rows are sorted by descending score and cut into ``n_bands`` bands of about equal size;
    tied scores always stay in one band (the band holding the middle of the tie group), so
    bands can be uneven and fewer than ``n_bands`` when scores are heavily tied. Columns:

    ``band`` (1 = highest risk), ``score_min``, ``score_max``, ``count``, ``bads``, ``goods``,
    ``bad_rate``, ``cum_count_share``, ``cum_bads_share`` (share of all bads in this band or
    riskier ones: the "captured" rate), ``cum_goods_share``, ``ks`` (``cum_bads_share -
    cum_goods_share`` at the band's lower edge; the maximum over bands is at most :func:`ks`),
    ``lift`` (band bad rate over the overall bad rate) and ``cum_lift``.
    """
    y_v, s_v = _validated(y, score)
    if isinstance(n_bands, bool) or not isinstance(n_bands, int | np.integer) or n_bands < 1:
        raise DataValidationError("n_bands", f"must be a positive integer, got {n_bands!r}")
    n = y_v.shape[0]
    order = np.argsort(-s_v, kind="mergesort")
    s_sorted = s_v[order]
    y_sorted = y_v[order].astype(np.int64)
    # A tie group goes, whole, to the band that holds the middle of its positions; without ties
    # this gives bands of equal size (up to rounding).
    group_start = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    group_end = np.r_[group_start[1:], n]
    group_band = ((group_start + group_end - 1) * n_bands) // (2 * n)
    band = np.repeat(group_band, group_end - group_start)

    frame = pd.DataFrame({"band": band, "score": s_sorted, "bad": y_sorted})
    grouped = frame.groupby("band", sort=True)
    table = pd.DataFrame(
        {
            "score_min": grouped["score"].min(),
            "score_max": grouped["score"].max(),
            "count": grouped["bad"].size(),
            "bads": grouped["bad"].sum(),
        }
    ).reset_index(drop=True)
    table.insert(0, "band", np.arange(1, len(table) + 1))
    total_bads = int(y_sorted.sum())
    total_goods = n - total_bads
    overall_rate = total_bads / n
    table["goods"] = table["count"] - table["bads"]
    table["bad_rate"] = table["bads"] / table["count"]
    table["cum_count_share"] = table["count"].cumsum() / n
    table["cum_bads_share"] = table["bads"].cumsum() / total_bads
    table["cum_goods_share"] = table["goods"].cumsum() / total_goods
    table["ks"] = table["cum_bads_share"] - table["cum_goods_share"]
    table["lift"] = table["bad_rate"] / overall_rate
    table["cum_lift"] = (table["bads"].cumsum() / table["count"].cumsum()) / overall_rate
    cols = ["count", "bads", "goods"]
    table[cols] = table[cols].astype(np.int64)
    return table[
        [
            "band",
            "score_min",
            "score_max",
            "count",
            "bads",
            "goods",
            "bad_rate",
            "cum_count_share",
            "cum_bads_share",
            "cum_goods_share",
            "ks",
            "lift",
            "cum_lift",
        ]
    ]


def summary(y: Any, score: Any) -> dict[str, float | int]:
    """AUC, KS and Gini in one dict (plus ``n``, ``bads`` and ``bad_rate`` for context)."""
    y_v, s_v = _validated(y, score)
    a = auc(y_v, s_v)
    return {
        "auc": a,
        "ks": ks(y_v, s_v),
        "gini": 2.0 * a - 1.0,
        "n": int(y_v.shape[0]),
        "bads": int(y_v.sum()),
        "bad_rate": float(y_v.mean()),
    }
