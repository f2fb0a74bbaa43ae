"""AUC, KS, Gini and the gains table (score = probability of bad)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from jointcredit.errors import DataValidationError
from jointcredit.report import auc, gains_table, gini, ks, summary


def _random(seed: int, n: int = 2000, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    score = rng.normal(0.0, 1.0, n) + 1.2 * y
    if ties:
        score = np.round(score, 1)
    return y, score


labels_and_scores = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda v: 0 < sum(v) < n),
        st.lists(st.integers(0, 5), min_size=n, max_size=n),  # few values: many ties
    )
)


@settings(max_examples=200, deadline=None)
@given(labels_and_scores)
def test_auc_and_ks_match_sklearn_with_ties(data: tuple[list[int], list[int]]) -> None:
    y, score = data
    assert auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, score)
    assert ks(y, score) == pytest.approx(max(0.0, float(np.max(tpr - fpr))), abs=1e-12)


def test_perfect_reversed_and_uninformative_scores() -> None:
    y = np.array([0, 0, 0, 1, 1])
    assert auc(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert ks(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert auc(y, [0.9, 0.8, 0.7, 0.2, 0.1]) == 0.0
    assert gini(y, [0.9, 0.8, 0.7, 0.2, 0.1]) == -1.0
    assert auc(y, [0.5] * 5) == 0.5
    assert ks(y, [0.5] * 5) == 0.0


def test_gini_is_two_auc_minus_one() -> None:
    y, score = _random(1)
    assert gini(y, score) == pytest.approx(2 * auc(y, score) - 1)


def test_accepts_pandas_and_bool_labels() -> None:
    y, score = _random(2)
    expected = auc(y, score)
    assert auc(pd.Series(y.astype(bool)), pd.Series(score)) == pytest.approx(expected)
    assert auc(list(y), list(score)) == pytest.approx(expected)


def test_summary() -> None:
    y, score = _random(3)
    out = summary(y, score)
    assert out["auc"] == pytest.approx(auc(y, score))
    assert out["ks"] == pytest.approx(ks(y, score))
    assert out["gini"] == pytest.approx(gini(y, score))
    assert out["n"] == len(y) and out["bads"] == int(y.sum())
    assert out["bad_rate"] == pytest.approx(y.mean())


@pytest.mark.parametrize("ties", [False, True])
def test_gains_table_accounts_for_every_row(ties: bool) -> None:
    y, score = _random(4, ties=ties)
    table = gains_table(y, score, n_bands=10)
    assert list(table.columns) == [
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
    assert table["band"].tolist() == list(range(1, len(table) + 1))
    assert table["count"].sum() == len(y) and table["bads"].sum() == y.sum()
    assert (table["goods"] == table["count"] - table["bads"]).all()
    last = table.iloc[-1]
    assert last["cum_count_share"] == pytest.approx(1.0)
    assert last["cum_bads_share"] == pytest.approx(1.0)
    assert last["cum_goods_share"] == pytest.approx(1.0)
    assert last["cum_lift"] == pytest.approx(1.0)
    # Riskiest band first, bands do not overlap.
    assert (table["score_min"].to_numpy()[:-1] > table["score_max"].to_numpy()[1:]).all()
    assert table["ks"].max() <= ks(y, score) + 1e-12
    assert table["lift"].iloc[0] > 1.5 > table["lift"].iloc[-1]
    overall = y.mean()
    assert table["lift"].to_numpy() == pytest.approx(table["bad_rate"].to_numpy() / overall)


def test_gains_table_equal_bands_without_ties() -> None:
    y, score = _random(5, n=1000)
    table = gains_table(y, score, n_bands=4)
    assert table["count"].tolist() == [250, 250, 250, 250]
    top = np.sort(score)[::-1][:250]
    assert table.loc[0, "score_max"] == top[0] and table.loc[0, "score_min"] == top[-1]
    assert table.loc[0, "bads"] == y[np.argsort(-score)[:250]].sum()


def test_gains_table_never_splits_ties() -> None:
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1])
    table = gains_table(y, score, n_bands=5)
    assert table["count"].tolist() == [1, 6, 3]
    assert table["bads"].tolist() == [1, 1, 0]


def test_ks_at_best_cut_off_in_gains_table() -> None:
    # Bands cut exactly where the KS maximum sits, so the table reaches it.
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    score = np.arange(8, 0, -1) / 10
    assert gains_table(y, score, n_bands=8)["ks"].max() == pytest.approx(ks(y, score))


@pytest.mark.parametrize(
    ("y", "score", "field", "fragment"),
    [
        ([0, 1, 0], [0.1, 0.2], "score", "lengths must match"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "y", "both classes"),
        ([1, 1], [0.1, 0.2], "y", "both classes"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "y", "0 (good) or 1 (bad)"),
        ([0, np.nan, 1], [0.1, 0.2, 0.3], "y", "missing"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "score", "NaN"),
        ([0, 1, 1], [0.1, np.inf, 0.3], "score", "infinite"),
        ([0, 1, 1], ["a", "b", "c"], "score", "numeric"),
        ([[0, 1]], [[0.1, 0.2]], "y", "1-D"),
    ],
)
def test_input_validation(y: object, score: object, field: str, fragment: str) -> None:
    for fn in (auc, ks, gini, gains_table, summary):
        with pytest.raises(DataValidationError) as err:
            fn(y, score)
        assert err.value.field == field and fragment in err.value.reason


@pytest.mark.parametrize("n_bands", [0, -1, 2.5, True])
def test_gains_table_rejects_bad_band_count(n_bands: object) -> None:
    with pytest.raises(DataValidationError) as err:
        gains_table([0, 1, 0], [0.1, 0.9, 0.2], n_bands=n_bands)  # type: ignore[arg-type]
    assert err.value.field == "n_bands"


@settings(max_examples=100, deadline=None)
@given(labels_and_scores, st.integers(1, 12))
def test_gains_table_properties_hold_under_ties(
    data: tuple[list[int], list[int]], n_bands: int
) -> None:
    y, score = data
    table = gains_table(y, score, n_bands=n_bands)
    assert 1 <= len(table) <= n_bands
    assert table["count"].sum() == len(y) and table["bads"].sum() == sum(y)
    assert (table["count"] > 0).all()
    # Each distinct score lives in exactly one band: ranges are disjoint and descending.
    assert (table["score_min"].to_numpy()[:-1] > table["score_max"].to_numpy()[1:]).all()
    assert table["ks"].max() <= ks(y, score) + 1e-12
