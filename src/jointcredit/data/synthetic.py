"""Synthetic SME credit data: a credit center's public table and a bank's customer table.

Real joint-modeling data never leaves the parties, so the library ships a generator whose
structure mirrors the real setting closely enough to exercise every protocol and to make the
*value of joining* measurable:

* The credit center knows every enterprise registered in one city (default 50,000) through ~44
  features from its public catalogue (:data:`~jointcredit.data.catalogue.CENTER_CATALOGUE`).
* The bank knows its customers (default 12,000), ~90 % of which are registered in the city; the
  rest are registered elsewhere (their USCCs carry other division codes) and exist only at the
  bank. It holds 13 account/credit features and the label ``default_12m``.
* Both tables are driven by one latent risk process (see :func:`_draw_latent` and
  ``docs/data.md``): each side observes different, noisy parts of it, so bank-only models are
  mediocre and joined models clearly better, as in the platforms' published pilots.

The generator is organised as *latent state → observed features*, with one function per party,
so that a later time dimension (monthly drift of the latent state, deterioration before default,
lagged outcomes) can re-use the observation functions month by month.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from jointcredit.data.catalogue import CENTER_CATALOGUE, DISTRICTS, FeatureInfo
from jointcredit.data.schema import PartyTable
from jointcredit.data.uscc import generate_uscc
from jointcredit.errors import DataValidationError

LABEL_COL = "default_12m"
ID_COL = "id"

#: Bank features, in table order. Amounts in 10,000 CNY (万元).
BANK_FEATURES: tuple[str, ...] = (
    "avg_balance",  # average daily deposit balance, last 6 months
    "monthly_inflow",  # average monthly credits to the settlement account
    "monthly_outflow",  # average monthly debits
    "inflow_volatility",  # coefficient of variation of monthly inflow, 12 months
    "balance_trend_6m",  # average balance, last 3 months over previous 3 months
    "account_age_months",  # months since the first account was opened
    "existing_loans",  # number of loans outstanding at this bank
    "existing_loan_balance",  # outstanding principal at this bank
    "credit_utilization",  # drawn / granted on revolving lines; NaN without a line
    "max_overdue_days_24m",  # worst days past due on any obligation, 24 months
    "overdue_count_24m",  # number of months with an overdue payment, 24 months
    "products_held",  # deposit, settlement, payroll, FX, ... products
    "payroll_service_flag",  # the bank runs the enterprise's payroll (代发工资)
)

CENTER_FEATURES: tuple[str, ...] = tuple(CENTER_CATALOGUE)

# Division codes of neighbouring cities, for bank customers registered outside the center's city.
_OUTSIDE_REGIONS = ("440604", "440605", "440606", "440304", "440305", "440306", "441900", "442000")

# Industry sections (index into GB/T 4754 A..T): sampling share and additive risk (logit).
_INDUSTRY_SHARE = np.array(
    [1, 0.2, 22, 0.3, 8, 30, 5, 6, 6, 0.5, 2, 10, 5, 0.5, 3, 0.5, 0.5, 0.8, 0.0, 0.0]
)
_INDUSTRY_RISK = np.array(
    [0.3, 0.3, 0.0, -0.4, 0.35, 0.15, 0.1, 0.4, -0.15, 0.0, 0.45, 0.1, -0.2, 0.0, 0.2, 0.0]
    + [0.0, 0.3, 0.0, 0.0]
)
_C, _E, _F, _H, _I, _M = 2, 4, 5, 7, 8, 12

# Entity types (see catalogue.ENTITY_TYPES) and their USCC prefixes.
_ENTITY_SHARE = np.array([0.70, 0.02, 0.04, 0.02, 0.20, 0.02])
_ENTITY_HEAD = np.array(["91", "91", "91", "91", "92", "93"])
_INDIVIDUAL, _COOPERATIVE = 4, 5


@dataclass
class SyntheticSME:
    """The two parties' raw tables for one synthetic city, and what describes them.

    ``truth`` holds the generator's ground truth for research and tests (true 12-month PD and
    whether the enterprise is in the center's table). It belongs to neither party and must never
    be a model input.
    """

    center: pd.DataFrame
    bank: pd.DataFrame
    center_catalogue: dict[str, FeatureInfo]
    seed: int
    truth: pd.DataFrame = field(repr=False)
    id_col: str = ID_COL
    label_col: str = LABEL_COL

    @property
    def center_feature_cols(self) -> tuple[str, ...]:
        return tuple(c for c in self.center.columns if c != self.id_col)

    @property
    def bank_feature_cols(self) -> tuple[str, ...]:
        return tuple(c for c in self.bank.columns if c not in (self.id_col, self.label_col))

    def center_table(self) -> PartyTable:
        """The center's table validated as a :class:`PartyTable` (USCC ids, no label)."""
        from jointcredit.data.loaders import load_party_table

        return load_party_table(self.center, id_col=self.id_col, id_kind="uscc")

    def bank_table(self) -> PartyTable:
        """The bank's table validated as a :class:`PartyTable` (USCC ids, label)."""
        from jointcredit.data.loaders import load_party_table

        return load_party_table(
            self.bank, id_col=self.id_col, label_col=self.label_col, id_kind="uscc"
        )

    def joined(self) -> pd.DataFrame:
        """Plaintext join of the bank's customers with the center's features (inner join).

        Only for insecure reference models and tests: in deployment this frame never exists.
        """
        return self.bank.merge(self.center, on=self.id_col, how="inner", validate="1:1")


# --- latent state -------------------------------------------------------------------------------


@dataclass
class _Latent:
    """Per-enterprise hidden state. Observed features are noisy functions of it.

    size     scale of the business (drives amounts, headcount, balances), standard normal
    health   operating health (margins, stability of cash flow), standard normal
    conduct  compliance / integrity propensity (taxes, penalties, litigation), standard normal
    liquidity cash buffer and payment discipline towards lenders, standard normal; public
             records barely see it, the bank's account data does
    distress current financial distress in [0, ~1.5]; zero for most enterprises
    idio     idiosyncratic risk nobody observes
    """

    size: np.ndarray
    health: np.ndarray
    conduct: np.ndarray
    liquidity: np.ndarray
    distress: np.ndarray
    idio: np.ndarray
    age_years: np.ndarray
    industry: np.ndarray
    entity_type: np.ndarray
    district: np.ndarray  # index into DISTRICTS, or -1 outside the city

    @property
    def n(self) -> int:
        return self.size.shape[0]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw_latent(rng: np.random.Generator, n: int) -> _Latent:
    industry = rng.choice(20, size=n, p=_INDUSTRY_SHARE / _INDUSTRY_SHARE.sum())
    entity_type = rng.choice(6, size=n, p=_ENTITY_SHARE)
    # Age: many young enterprises, a long tail of old ones.
    age_years = np.round(np.clip(rng.lognormal(np.log(5.0), 0.8, n), 0.1, 40.0), 1)
    size = (
        0.35 * (np.log(age_years) - np.log(5.0))
        + rng.normal(0.0, 0.94, n)
        - 0.9 * (entity_type == _INDIVIDUAL)
    )
    health = rng.normal(0.0, 1.0, n)
    conduct = 0.3 * health + rng.normal(0.0, 0.95, n)
    liquidity = 0.1 * health + rng.normal(0.0, 0.995, n)
    # Distress: a minority of enterprises are in trouble now; weak health makes it likelier.
    p_distress = _sigmoid(-2.7 - 0.6 * health - 0.3 * conduct)
    distress = (rng.random(n) < p_distress) * rng.uniform(0.4, 1.5, n)
    return _Latent(
        size=size,
        health=health,
        conduct=conduct,
        liquidity=liquidity,
        distress=distress,
        idio=rng.normal(0.0, 1.0, n),
        age_years=age_years,
        industry=industry,
        entity_type=entity_type,
        district=rng.integers(0, len(DISTRICTS), n),
    )


def _default_logit(lat: _Latent) -> np.ndarray:
    """Log-odds of default within 12 months, before the intercept."""
    young = np.clip(3.0 - lat.age_years, 0.0, 3.0) / 3.0
    return (
        -0.8 * lat.health
        - 0.85 * lat.conduct
        - 0.95 * lat.liquidity
        + 2.1 * lat.distress
        - 0.28 * lat.size
        + 0.5 * young
        + _INDUSTRY_RISK[lat.industry]
        + 0.5 * lat.idio
    )


def _intercept_for(logit: np.ndarray, target_rate: float) -> float:
    """Intercept that makes the mean PD over ``logit`` equal ``target_rate`` (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _sigmoid(logit + mid).mean() > target_rate:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


# --- observations ----------------------------------------------------------------------------


def _poisson_log(rng: np.random.Generator, log_rate: np.ndarray) -> np.ndarray:
    return rng.poisson(np.exp(np.clip(log_rate, -20.0, 8.0))).astype(np.float64)


def _nb_log(rng: np.random.Generator, log_rate: np.ndarray, dispersion: float) -> np.ndarray:
    """Negative-binomial counts (gamma-mixed Poisson): heavier tails than Poisson."""
    mix = rng.gamma(dispersion, 1.0 / dispersion, log_rate.shape[0])
    return rng.poisson(np.exp(np.clip(log_rate, -20.0, 8.0)) * mix).astype(np.float64)


def _center_features(rng: np.random.Generator, lat: _Latent) -> dict[str, np.ndarray]:
    """What the credit center's sources record about each enterprise."""
    n = lat.n
    s, h, c, d = lat.size, lat.health, lat.conduct, lat.distress
    indiv = lat.entity_type == _INDIVIDUAL
    young = lat.age_years < 1.0
    nan = np.full(n, np.nan)
    f: dict[str, np.ndarray] = {}

    # registration
    f["industry_section"] = lat.industry.astype(np.float64)
    capital = np.round(rng.lognormal(np.log(100.0) + 0.9 * s, 1.0), 1)
    f["registered_capital_10k"] = np.where(indiv, -1.0, capital)
    f["years_since_founding"] = lat.age_years
    f["district"] = lat.district.astype(np.float64)
    scale_score = s + rng.normal(0.0, 0.35, n)
    f["enterprise_scale"] = np.digitize(scale_score, [0.4, 1.5, 2.6]).astype(np.float64)
    f["entity_type"] = lat.entity_type.astype(np.float64)
    f["legal_rep_changes_3y"] = _poisson_log(rng, np.log(0.12) + 0.9 * d - 0.25 * c)
    f["shareholder_changes_3y"] = _poisson_log(rng, np.log(0.25) + 0.3 * s + 0.5 * d)

    # tax
    grade_score = 0.95 * c + 0.35 * h - 1.0 * d + 0.2 * s + rng.normal(0.0, 0.45, n)
    grade = np.digitize(grade_score, [-2.0, -1.45, -0.9, 0.55])  # 0=D .. 4=A
    grade = (4 - grade).astype(np.float64)  # codes: 0=A, 1=B, 2=M, 3=C, 4=D
    new_taxpayer = young | (rng.random(n) < 0.04)
    grade = np.where(new_taxpayer, np.where(rng.random(n) < 0.5, 2.0, -1.0), grade)
    f["tax_credit_grade"] = np.where(indiv & (rng.random(n) < 0.7), -1.0, grade)
    zero_tax = rng.random(n) < _sigmoid(-2.6 + 1.6 * d - 0.5 * s + 1.2 * indiv)
    tax = rng.lognormal(np.log(8.0) + 1.0 * s + 0.3 * h - 0.6 * d, 0.8)
    f["tax_paid_12m_10k"] = np.where(zero_tax, 0.0, np.round(tax, 2))
    growth = np.exp(rng.normal(0.05 + 0.2 * h - 0.45 * d, 0.25)) - 1.0
    f["tax_paid_yoy"] = np.where(zero_tax | (lat.age_years < 2.0), nan, np.round(growth, 3))
    arrears = rng.random(n) < _sigmoid(-3.6 + 2.3 * d - 0.6 * c - 0.2 * h)
    f["tax_arrears_months_12m"] = np.where(arrears, rng.integers(1, 13, n), 0).astype(float)
    f["invoice_count_12m"] = _nb_log(rng, np.log(60.0) + 1.0 * s + 0.2 * h - 0.3 * d, 1.5)
    invoiced = rng.lognormal(np.log(150.0) + 1.05 * s + 0.2 * h - 0.4 * d, 0.6)
    f["invoice_amount_12m_10k"] = np.where(f["invoice_count_12m"] == 0, 0.0, np.round(invoiced, 1))
    trend = np.exp(rng.normal(0.03 + 0.15 * h - 0.5 * d, 0.3))
    no_prior = (f["invoice_count_12m"] < 3) | young
    f["invoice_amount_trend"] = np.where(no_prior, -1.0, np.round(trend, 3))
    zero_filing = rng.random(n) < _sigmoid(-2.4 + 1.4 * d - 0.6 * s)
    f["zero_filing_months_12m"] = np.where(zero_filing, rng.integers(1, 13, n), 0).astype(float)

    # social insurance and housing fund
    si_matched = rng.random(n) > 0.04
    headcount = np.floor(rng.lognormal(np.log(6.0) + 1.0 * s, 0.5))
    headcount = np.where(indiv & (rng.random(n) < 0.6), 0.0, headcount)
    f["insured_headcount"] = np.where(si_matched, headcount, nan)
    change = np.round(np.exp(rng.normal(0.03 + 0.12 * h - 0.45 * d, 0.18)) - 1.0, 3)
    has_staff = si_matched & (headcount > 0)
    f["insured_headcount_change_12m"] = np.where(has_staff & (lat.age_years >= 1.0), change, nan)
    si_arrears = np.where(
        rng.random(n) < _sigmoid(-3.3 + 2.0 * d - 0.5 * c), rng.integers(1, 13, n), 0
    )
    paid_months = np.minimum(12.0, np.ceil(lat.age_years * 12)) - si_arrears
    f["social_insurance_paid_months_12m"] = np.where(
        si_matched, np.where(headcount > 0, np.maximum(paid_months, 0.0), -1.0), nan
    )
    f["social_insurance_arrears_months_12m"] = np.where(has_staff, si_arrears.astype(float), nan)
    f["social_insurance_arrears_months_12m"] = np.where(
        si_matched & ~has_staff, 0.0, f["social_insurance_arrears_months_12m"]
    )
    hf_linked = si_matched & (rng.random(n) < _sigmoid(0.4 + 0.8 * s))
    hf_share = np.clip(rng.beta(2.0, 2.0, n) + 0.15 * s, 0.0, 1.0)
    f["housing_fund_headcount"] = np.where(hf_linked, np.floor(headcount * hf_share), nan)
    hf_arrears = np.where(
        rng.random(n) < _sigmoid(-3.6 + 1.8 * d - 0.4 * c), rng.integers(1, 13, n), 0
    )
    f["housing_fund_arrears_months_12m"] = np.where(hf_linked, hf_arrears.astype(float), nan)

    # utilities: NaN = not matched to a utility account; -1 = no own account (shared meter)
    util_matched = rng.random(n) > 0.08
    heavy = np.isin(lat.industry, [_C, _E, _H])
    shared = ~heavy & (rng.random(n) < _sigmoid(0.2 - 0.8 * s))
    kwh = np.round(rng.lognormal(np.log(2.0e4) + 1.0 * s + 1.4 * heavy + 0.2 * h - 0.4 * d, 0.8))
    f["electricity_kwh_12m"] = np.where(util_matched, np.where(shared, -1.0, kwh), nan)
    e_trend = np.round(np.exp(rng.normal(0.02 + 0.1 * h - 0.55 * d, 0.2)), 3)
    f["electricity_trend_6m"] = np.where(util_matched, np.where(shared | young, -1.0, e_trend), nan)
    e_arrears = _poisson_log(rng, -2.8 + 1.5 * d - 0.4 * c)
    f["electricity_arrears_12m"] = np.where(util_matched, np.where(shared, -1.0, e_arrears), nan)
    no_water = shared & (rng.random(n) < 0.8)
    w_arrears = _poisson_log(rng, -3.0 + 1.2 * d - 0.4 * c)
    f["water_arrears_12m"] = np.where(util_matched, np.where(no_water, -1.0, w_arrears), nan)
    has_gas = np.isin(lat.industry, [_C, _H]) & (rng.random(n) < 0.7) | (rng.random(n) < 0.05)
    g_arrears = _poisson_log(rng, -3.0 + 1.2 * d - 0.3 * c)
    f["gas_arrears_12m"] = np.where(util_matched, np.where(has_gas, g_arrears, -1.0), nan)

    # administrative
    f["admin_licence_count"] = _poisson_log(rng, np.log(1.5) + 0.35 * s + 0.5 * heavy)
    penalties = _nb_log(rng, -2.0 - 0.65 * c + 0.5 * d + 0.25 * s + 0.3 * heavy, 0.8)
    f["admin_penalty_count_3y"] = penalties
    f["admin_penalty_amount_3y_10k"] = np.where(
        penalties > 0, np.round(penalties * rng.lognormal(np.log(0.8), 1.2, n), 2), 0.0
    )
    f["abnormal_operation_flag"] = (rng.random(n) < _sigmoid(-4.0 + 1.6 * d - 0.7 * c)).astype(
        float
    )
    f["serious_violation_flag"] = (rng.random(n) < _sigmoid(-6.0 + 1.8 * d - 1.0 * c)).astype(float)

    # judicial
    f["judgments_defendant_3y"] = _nb_log(rng, -1.9 + 0.4 * s + 1.1 * d - 0.35 * c, 0.7)
    enforcement = _nb_log(rng, -3.3 + 2.0 * d - 0.5 * c + 0.1 * s, 0.7)
    f["enforcement_count_3y"] = enforcement
    f["enforcement_amount_3y_10k"] = np.where(
        enforcement > 0, np.round(enforcement * rng.lognormal(np.log(15.0) + 0.5 * s, 1.1), 1), 0.0
    )
    dishonest = (enforcement > 0) & (rng.random(n) < _sigmoid(-1.6 + 1.2 * d - 0.6 * c))
    f["dishonest_debtor_flag"] = dishonest.astype(float)
    restricted = (enforcement > 0) & (rng.random(n) < np.where(dishonest, 0.85, 0.15))
    f["consumption_restriction_flag"] = restricted.astype(float)

    # honours and qualifications
    tech_industry = np.isin(lat.industry, [_C, _I, _M])
    high_tech = rng.random(n) < _sigmoid(-4.2 + 0.9 * s + 2.0 * tech_industry + 0.3 * h)
    f["high_tech_flag"] = high_tech.astype(float)
    ssme = rng.random(n) < np.where(high_tech, 0.35, 0.01)
    f["specialized_sme_level"] = np.where(
        ssme, rng.choice([1.0, 2.0, 3.0], size=n, p=[0.6, 0.32, 0.08]), 0.0
    )
    f["honours_count"] = _poisson_log(rng, -2.2 + 0.5 * c + 0.5 * s + 0.2 * h)

    # public procurement
    wins = _nb_log(rng, -2.6 + 0.7 * s + 0.3 * c, 0.5)
    f["procurement_wins_3y"] = wins
    f["procurement_amount_3y_10k"] = np.where(
        wins > 0, np.round(wins * rng.lognormal(np.log(40.0) + 0.4 * s, 1.0), 1), 0.0
    )

    # intellectual property
    f["patent_count"] = _nb_log(rng, -1.5 + 0.8 * s + 2.0 * high_tech + 0.6 * tech_industry, 0.4)
    f["trademark_count"] = _nb_log(rng, -1.2 + 0.5 * s, 0.5)

    missing = set(CENTER_FEATURES) - set(f)
    assert not missing, f"catalogue features without a generator: {sorted(missing)}"
    return {name: f[name] for name in CENTER_FEATURES}


def _bank_features(rng: np.random.Generator, lat: _Latent) -> dict[str, np.ndarray]:
    """What the bank sees on its customers' accounts.

    Mostly liquidity (which public records barely reflect) and size; health and distress only
    faintly, and conduct not at all: that is what the credit center's records add.
    """
    n = lat.n
    s, h, d, liq = lat.size, lat.health, lat.distress, lat.liquidity
    f: dict[str, np.ndarray] = {}

    inflow = rng.lognormal(np.log(25.0) + 0.95 * s + 0.05 * h - 0.2 * d, 0.45)
    buffer = rng.lognormal(-0.6 + 0.4 * liq + 0.05 * h - 0.2 * d, 0.65)
    f["avg_balance"] = np.round(inflow * buffer, 2)
    f["monthly_inflow"] = np.round(inflow, 2)
    spend = rng.lognormal(0.01 - 0.03 * h - 0.03 * liq + 0.1 * d, 0.06)
    f["monthly_outflow"] = np.round(inflow * spend, 2)
    f["inflow_volatility"] = np.round(rng.lognormal(np.log(0.35) - 0.1 * h + 0.15 * d, 0.4), 3)
    f["balance_trend_6m"] = np.round(np.exp(rng.normal(0.05 * liq - 0.2 * d, 0.3)), 3)
    opened = np.clip(lat.age_years * 12.0 * rng.beta(3.0, 1.5, n), 1.0, None)
    f["account_age_months"] = np.round(opened)
    loans = _poisson_log(rng, np.log(0.6) + 0.35 * s + 0.3 * d)
    f["existing_loans"] = loans
    f["existing_loan_balance"] = np.where(
        loans > 0, np.round(loans * inflow * rng.lognormal(0.8, 0.7, n), 1), 0.0
    )
    has_line = rng.random(n) < _sigmoid(-0.6 + 0.5 * s)
    util = _sigmoid(rng.normal(-0.3 + 0.6 * d - 0.5 * liq, 0.8))
    f["credit_utilization"] = np.where(has_line, np.round(util, 3), np.nan)
    overdue = rng.random(n) < _sigmoid(-2.9 - 0.6 * liq - 0.1 * h + 0.4 * d)
    days = np.ceil(rng.lognormal(np.log(8.0) + 0.5 * d, 0.9))
    f["max_overdue_days_24m"] = np.where(overdue, np.clip(days, 1.0, 180.0), 0.0)
    f["overdue_count_24m"] = np.where(overdue, 1.0 + _poisson_log(rng, np.log(0.8) + 0.5 * d), 0.0)
    f["products_held"] = 1.0 + _poisson_log(rng, np.log(1.3) + 0.3 * s)
    f["payroll_service_flag"] = (rng.random(n) < _sigmoid(-1.0 + 0.6 * s)).astype(float)
    return {name: f[name] for name in BANK_FEATURES}


# --- assembly -------------------------------------------------------------------------------


def make_sme_data(
    n_enterprises: int = 50_000,
    n_bank_customers: int = 12_000,
    overlap: float = 0.9,
    seed: int = 0,
    *,
    bad_rate: float = 0.05,
) -> SyntheticSME:
    """Generate a credit center's table and a bank's table for one synthetic city.

    Parameters
    ----------
    n_enterprises:
        Enterprises registered in the city: the credit center's table has exactly these rows.
    n_bank_customers:
        Rows of the bank's table.
    overlap:
        Share of bank customers registered in the city (in the center's table); the others are
        registered in neighbouring cities and exist only at the bank. Exact up to rounding.
    seed:
        Same seed, identical frames (column order, row order, values).
    bad_rate:
        Expected 12-month default rate among the bank's customers (the realised rate varies by
        sampling noise; keep it within 3-8 % for realism).

    Returns
    -------
    SyntheticSME
        ``center``: ``id`` + catalogue features; ``bank``: ``id``, ``default_12m`` + bank
        features. Rows are in random order; ids are valid, distinct USCCs.
    """
    _check_args(n_enterprises, n_bank_customers, overlap, bad_rate)
    n_inside = int(round(overlap * n_bank_customers))
    n_outside = n_bank_customers - n_inside
    n_total = n_enterprises + n_outside

    # One independent stream per stage, so changing one stage (e.g. adding a feature) leaves
    # the others' draws, and hence most of the data, unchanged.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    rng_latent, rng_ids, rng_sample, rng_center, rng_bank, rng_label = streams

    lat = _draw_latent(rng_latent, n_total)
    lat.district[n_enterprises:] = -1
    regions = np.array([code for code, _name in DISTRICTS])[np.maximum(lat.district, 0)]
    regions[n_enterprises:] = rng_ids.choice(np.array(_OUTSIDE_REGIONS), size=n_outside)
    ids = np.array(
        generate_uscc(rng_ids, n_total, regions=regions, heads=_ENTITY_HEAD[lat.entity_type]),
        dtype=object,
    )

    # Banks reach larger, longer-established enterprises more often than a random draw would.
    weight = np.exp(0.6 * lat.size[:n_enterprises])
    inside = rng_sample.choice(n_enterprises, size=n_inside, replace=False, p=weight / weight.sum())
    customers = np.concatenate([inside, np.arange(n_enterprises, n_total)])
    customers = customers[rng_sample.permutation(customers.size)]

    # The intercept is set on the bank's customers (whose bad rate the caller asks for) and
    # applied to every enterprise, so PDs inside and outside the bank's book are comparable.
    logit = _default_logit(lat)
    pd_all = _sigmoid(logit + _intercept_for(logit[customers], bad_rate))
    default = (rng_label.random(n_total) < pd_all).astype(np.int64)

    center_order = rng_sample.permutation(n_enterprises)
    center_cols = _center_features(rng_center, lat)
    center = pd.DataFrame({ID_COL: pd.Series(ids[center_order], dtype="str")})
    center = pd.concat(
        [center, pd.DataFrame({k: v[center_order] for k, v in center_cols.items()})], axis=1
    )

    bank_sub = _subset_latent(lat, customers)
    bank_cols = _bank_features(rng_bank, bank_sub)
    bank = pd.DataFrame(
        {
            ID_COL: pd.Series(ids[customers], dtype="str"),
            LABEL_COL: default[customers],
        }
    )
    bank = pd.concat([bank, pd.DataFrame(bank_cols)], axis=1)

    truth = pd.DataFrame(
        {
            ID_COL: pd.Series(ids, dtype="str"),
            "pd_12m": pd_all,
            "in_center": np.arange(n_total) < n_enterprises,
            "bank_customer": np.isin(np.arange(n_total), customers),
        }
    )
    return SyntheticSME(
        center=center,
        bank=bank,
        center_catalogue=dict(CENTER_CATALOGUE),
        seed=seed,
        truth=truth,
    )


def _subset_latent(lat: _Latent, rows: np.ndarray) -> _Latent:
    return _Latent(**{f.name: getattr(lat, f.name)[rows] for f in fields(lat)})


def _check_args(n_enterprises: int, n_bank: int, overlap: float, bad_rate: float) -> None:
    if n_enterprises < 1:
        raise DataValidationError("n_enterprises", f"must be at least 1, got {n_enterprises}")
    if n_bank < 1:
        raise DataValidationError("n_bank_customers", f"must be at least 1, got {n_bank}")
    if not 0.0 <= overlap <= 1.0:
        raise DataValidationError("overlap", f"must be within [0, 1], got {overlap}")
    if round(overlap * n_bank) > n_enterprises:
        raise DataValidationError(
            "n_bank_customers",
            f"{round(overlap * n_bank)} customers inside the city exceed {n_enterprises} "
            "registered enterprises",
        )
    if not 0.0 < bad_rate < 0.5:
        raise DataValidationError("bad_rate", f"must be within (0, 0.5), got {bad_rate}")


# --- plaintext reference models --------------------------------------------------------------

#: LightGBM settings of the plaintext reference (one thread: see DESIGN §5).
LGBM_REFERENCE_PARAMS: dict[str, object] = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "max_depth": 4,
    "min_child_samples": 40,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


def reference_aucs(
    data: SyntheticSME,
    *,
    model: str = "lightgbm",
    test_size: float = 0.3,
    random_state: int = 0,
) -> dict[str, float]:
    """Plaintext AUC of bank-only, center-only and joined features on the intersection.

    This is the *insecure* reference a joint protocol must match: it trains on the plaintext join
    that the protocols exist to avoid. Split: stratified ``1 - test_size`` / ``test_size`` over
    the bank's customers that are in the center's table. ``model`` is ``"lightgbm"`` (settings in
    :data:`LGBM_REFERENCE_PARAMS`) or ``"logistic"`` (median imputation with missing indicators,
    standardisation, L2 logistic regression).
    """
    from sklearn.model_selection import train_test_split

    from jointcredit.report.metrics import auc

    joined = data.joined()
    y = joined[data.label_col].to_numpy()
    bank_cols = list(data.bank_feature_cols)
    center_cols = list(data.center_feature_cols)
    train, test = train_test_split(
        np.arange(len(joined)), test_size=test_size, stratify=y, random_state=random_state
    )
    out: dict[str, float] = {}
    views = (
        ("bank_only", bank_cols),
        ("center_only", center_cols),
        ("joined", bank_cols + center_cols),
    )
    for name, cols in views:
        X = joined[cols].to_numpy(dtype=np.float64)
        score = _fit_score(model, X[train], y[train], X[test], random_state)
        out[name] = auc(y[test], score)
    out["n_train"] = float(len(train))
    out["n_test"] = float(len(test))
    out["test_bads"] = float(y[test].sum())
    return out


def _fit_score(
    model: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, random_state: int
) -> np.ndarray:
    if model == "lightgbm":
        import lightgbm as lgb

        clf = lgb.LGBMClassifier(random_state=random_state, **LGBM_REFERENCE_PARAMS)
        clf.fit(X_train, y_train)
        return clf.predict_proba(X_test)[:, 1]
    if model == "logistic":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pipe = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=0.1, max_iter=2000),
        )
        pipe.fit(X_train, y_train)
        return pipe.predict_proba(X_test)[:, 1]
    raise DataValidationError("model", f"unknown reference model {model!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jointcredit.data.synthetic``: measure the reference AUCs over seeds."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--models", nargs="+", default=["lightgbm", "logistic"])
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        data = make_sme_data(seed=seed)
        gen_s = time.perf_counter() - t0
        row: dict[str, object] = {
            "seed": seed,
            "generate_s": round(gen_s, 2),
            "bad_rate": round(float(data.bank[data.label_col].mean()), 4),
        }
        for m in args.models:
            res = reference_aucs(data, model=m)
            for view in ("bank_only", "center_only", "joined"):
                row[f"{m}_{view}"] = round(res[view], 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    frame = pd.DataFrame(rows)
    print(frame.drop(columns="seed").agg(["mean", "std", "min", "max"]).round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
