"""The synthetic SME generator: structure, determinism, overlap, bad rate and signal strength."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jointcredit.data import (
    BANK_FEATURES,
    CATEGORIES,
    CENTER_CATALOGUE,
    LABEL_COL,
    category_of,
    make_sme_data,
    reference_aucs,
    valid_uscc_mask,
)
from jointcredit.data.catalogue import DISTRICTS, FeatureInfo
from jointcredit.errors import DataValidationError

SMALL = {"n_enterprises": 4000, "n_bank_customers": 1000}


@pytest.fixture(scope="module")
def default_data():  # type: ignore[no-untyped-def]
    return make_sme_data(seed=0)


@pytest.fixture(scope="module")
def small():  # type: ignore[no-untyped-def]
    return make_sme_data(**SMALL, seed=3)


def test_same_seed_gives_identical_frames() -> None:
    a = make_sme_data(**SMALL, seed=5)
    b = make_sme_data(**SMALL, seed=5)
    pd.testing.assert_frame_equal(a.center, b.center)
    pd.testing.assert_frame_equal(a.bank, b.bank)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert a.seed == b.seed == 5


def test_different_seed_gives_different_data() -> None:
    a = make_sme_data(**SMALL, seed=5)
    b = make_sme_data(**SMALL, seed=6)
    assert not set(a.center["id"]) & set(b.center["id"])
    assert not a.bank[list(BANK_FEATURES)].equals(b.bank[list(BANK_FEATURES)])


def test_default_sizes_columns_and_dtypes(default_data) -> None:  # type: ignore[no-untyped-def]
    center, bank = default_data.center, default_data.bank
    assert center.shape == (50_000, 1 + len(CENTER_CATALOGUE))
    assert list(center.columns) == ["id", *CENTER_CATALOGUE]
    assert 35 <= len(CENTER_CATALOGUE) <= 50
    assert list(bank.columns) == ["id", LABEL_COL, *BANK_FEATURES]
    assert bank.shape == (12_000, 2 + len(BANK_FEATURES))
    assert (center.drop(columns="id").dtypes == np.float64).all()
    assert (bank[list(BANK_FEATURES)].dtypes == np.float64).all()
    assert pd.api.types.is_integer_dtype(bank[LABEL_COL].dtype)
    assert set(bank[LABEL_COL].unique()) == {0, 1}
    assert default_data.center_catalogue == dict(CENTER_CATALOGUE)
    assert default_data.center_feature_cols == tuple(CENTER_CATALOGUE)
    assert default_data.bank_feature_cols == BANK_FEATURES


def test_ids_are_valid_distinct_usccs(default_data) -> None:  # type: ignore[no-untyped-def]
    all_ids = pd.concat([default_data.center["id"], default_data.bank["id"]]).unique()
    assert valid_uscc_mask(list(all_ids)).all()
    assert default_data.center["id"].is_unique and default_data.bank["id"].is_unique


def test_overlap_fraction_and_outside_customers(default_data) -> None:  # type: ignore[no-untyped-def]
    in_center = default_data.bank["id"].isin(set(default_data.center["id"]))
    assert in_center.sum() == 10_800  # round(0.9 * 12,000)
    outside = default_data.bank.loc[~in_center, "id"]
    # Customers registered elsewhere carry other cities' division codes.
    assert not outside.str.slice(2, 6).eq("4401").any()
    assert default_data.center["id"].str.slice(2, 6).eq("4401").all()
    assert len(default_data.joined()) == 10_800


@pytest.mark.parametrize("overlap", [0.0, 0.25, 1.0])
def test_overlap_parameter(overlap: float) -> None:
    data = make_sme_data(**SMALL, overlap=overlap, seed=1)
    inside = data.bank["id"].isin(set(data.center["id"])).sum()
    assert inside == round(overlap * SMALL["n_bank_customers"])


def test_bad_rate_in_realistic_range(default_data) -> None:  # type: ignore[no-untyped-def]
    assert 0.03 <= default_data.bank[LABEL_COL].mean() <= 0.08
    joined = default_data.joined()
    assert 0.03 <= joined[LABEL_COL].mean() <= 0.08


def test_bad_rate_parameter() -> None:
    data = make_sme_data(n_enterprises=20_000, n_bank_customers=8000, seed=2, bad_rate=0.03)
    assert 0.02 <= data.bank[LABEL_COL].mean() <= 0.04


def test_truth_is_consistent_with_tables(small) -> None:  # type: ignore[no-untyped-def]
    truth = small.truth.set_index("id")
    assert truth.loc[small.center["id"], "in_center"].all()
    assert truth.loc[small.bank["id"], "bank_customer"].all()
    assert truth["bank_customer"].sum() == len(small.bank)
    assert truth["pd_12m"].between(0, 1).all()
    # Defaults follow the PD: riskier half has clearly more bads.
    pd_bank = truth.loc[small.bank["id"], "pd_12m"].to_numpy()
    y = small.bank[LABEL_COL].to_numpy()
    high = pd_bank > np.median(pd_bank)
    assert y[high].mean() > 2 * y[~high].mean()


def test_catalogue_covers_all_categories_and_is_documented() -> None:
    assert {f.category for f in CENTER_CATALOGUE.values()} == set(CATEGORIES)
    for name, info in CENTER_CATALOGUE.items():
        assert isinstance(info, FeatureInfo) and info.name == name
        assert name.isascii() and name == name.lower() and " " not in name
        assert info.title_zh and not info.title_zh.isascii()
        assert category_of(name) == info.category
        if info.kind in ("ordinal", "categorical"):
            assert info.levels, name
    assert CENTER_CATALOGUE["tax_credit_grade"].title_zh == "纳税信用等级"
    assert CENTER_CATALOGUE["dishonest_debtor_flag"].title_zh == "失信被执行人"
    assert CENTER_CATALOGUE["tax_credit_grade"].special_codes[-1.0].startswith("未评价")
    with pytest.raises(KeyError):
        category_of("avg_balance")


def test_values_respect_the_catalogue(default_data) -> None:  # type: ignore[no-untyped-def]
    center = default_data.center
    for name, info in CENTER_CATALOGUE.items():
        col = center[name]
        observed = col.dropna()
        special = observed.isin(list(info.special_codes))
        for code in info.special_codes:  # every documented special code occurs
            assert (observed == code).any(), (name, code)
        regular = observed[~special]
        if info.kind == "flag":
            assert set(regular.unique()) <= {0.0, 1.0}
            assert regular.mean() > 0, name
        elif info.kind in ("ordinal", "categorical"):
            assert set(regular.unique()) <= set(info.levels), name
        else:
            assert (regular >= 0).all() or name.endswith(("_yoy", "_change_12m")), name


def test_realistic_missingness_and_heavy_tails(default_data) -> None:  # type: ignore[no-untyped-def]
    center = default_data.center
    nan_share = center.isna().mean()
    assert 0.2 < nan_share["housing_fund_headcount"] < 0.6
    assert 0.02 < nan_share["electricity_kwh_12m"] < 0.2
    assert nan_share["tax_credit_grade"] == 0.0
    assert 0.3 < default_data.bank["credit_utilization"].isna().mean() < 0.8
    for col in ("registered_capital_10k", "tax_paid_12m_10k", "invoice_amount_12m_10k"):
        x = center[col][center[col] > 0]
        assert x.max() > 20 * x.median(), col  # lognormal amounts, not bell curves
    x = default_data.bank["avg_balance"]
    assert x.max() > 20 * x.median()


def test_registration_agrees_with_the_code(default_data) -> None:  # type: ignore[no-untyped-def]
    center = default_data.center
    heads = center["id"].str.slice(0, 2)
    individual = center["entity_type"] == 4.0
    assert heads[individual].eq("92").all() and heads[~individual].ne("92").all()
    district_code = np.array([c for c, _ in DISTRICTS])[center["district"].astype(int)]
    assert (center["id"].str.slice(2, 8).to_numpy() == district_code).all()
    assert center.loc[individual, "registered_capital_10k"].eq(-1.0).all()


def test_both_sides_carry_signal_and_joining_helps() -> None:
    """The documented plaintext reference AUCs (docs/data.md), LightGBM with one thread.

    Averaged over three seeds, because a 30 % test split holds only ~160 bads and single-seed
    AUCs move by about +/- 0.02.
    """
    results = [reference_aucs(make_sme_data(seed=seed)) for seed in (0, 1, 2)]
    bank = np.mean([r["bank_only"] for r in results])
    center = np.mean([r["center_only"] for r in results])
    joined = np.mean([r["joined"] for r in results])
    assert 0.68 <= bank <= 0.74, bank
    assert 0.78 <= joined <= 0.85, joined
    # The bank's features add to the center's, not just the other way round.
    assert joined - center >= 0.01, (center, joined)
    for r in results:
        assert r["joined"] - r["bank_only"] >= 0.05, r
        assert r["n_test"] == pytest.approx(0.3 * 10_800, abs=1)


def test_logistic_reference_also_gains_from_joining(default_data) -> None:  # type: ignore[no-untyped-def]
    r = reference_aucs(default_data, model="logistic")
    assert 0.65 <= r["bank_only"] <= 0.76
    assert r["joined"] >= r["bank_only"] + 0.05
    with pytest.raises(DataValidationError):
        reference_aucs(default_data, model="svm")


def test_party_tables_validate(small) -> None:  # type: ignore[no-untyped-def]
    center, bank = small.center_table(), small.bank_table()
    assert center.schema.id_kind == bank.schema.id_kind == "uscc"
    assert center.y is None and bank.y is not None
    assert bank.feature_cols == BANK_FEATURES
    center.schema.check_alignable(bank.schema)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_enterprises": 0}, "n_enterprises"),
        ({"n_bank_customers": 0}, "n_bank_customers"),
        ({"overlap": 1.5}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"n_enterprises": 100, "n_bank_customers": 1000}, "n_bank_customers"),
        ({"bad_rate": 0.0}, "bad_rate"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(DataValidationError) as err:
        make_sme_data(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
