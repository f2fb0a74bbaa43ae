"""Monthly dynamics on top of the synthetic SME generator: drift, deterioration, lagged outcomes.

:func:`make_sme_timeline` takes one synthetic city from :func:`~jointcredit.data.make_sme_data`
(its public output only: the two tables and the ground-truth 12-month PD) and lets it run for
``n_months`` monthly snapshots. Month 0 is exactly the generator's output; every later month is
derived from it by the processes below, all seeded (same arguments, identical frames).

**The book.** The bank's ``default_12m`` label is read as the outcome of its *development
vintage*: enterprises with ``default_12m == 1`` defaulted before month 0 and are not lent to.
All other bank customers form the live book at month 0. Each enterprise of the city (and each
bank customer registered elsewhere) has a monthly default hazard ``1 - (1 - pd_12m) ** (1/12)``;
the first month in ``1 .. n_months - 1 + outcome_horizon`` at which it defaults is its
``default_month`` (only live-book enterprises can default; the months after the last snapshot
exist so later-holdout labels can be computed).

**Deterioration before default.** A defaulting enterprise's distress ``s`` ramps linearly from 0
to a severity in [1, 2] over the ``lead`` months (2 - 6) before its default month and stays
there. A share ``sudden_share`` (20 %) defaults without warning (lead 0: the ramp is a step at
the default month), and a share ``false_alarm_share`` (4 %) of enterprises that never default
goes through a temporary dip (peak 0.6 - 1.2, then recovery). Distress drives the monthly
changes of the features: falling invoices, tax, electricity use and insured headcount; arrears
months accumulating; new court enforcement records, dishonest-debtor listings and consumption
restrictions; at the bank, falling balances and inflows, rising utilisation and overdue days.

**Drift** (``drift_month``; ``None`` for a stable world). From that month on (a step, not a
ramp), a sector shock hits *exposed* enterprises: those depending on government procurement
(``procurement_wins_3y >= 1``) or in construction / real estate (industry sections E and K) -
delayed public payments and a property downturn. Their default hazard rises by
``DriftSpec.exposed_hazard`` on the logit scale, and their operating indicators (invoices,
tax, electricity, headcount) and bank flows fall; a milder macro shock hits everyone. Before the
drift, exposure carried *less* risk than average (these are larger, established enterprises),
so a model trained on the development vintage gets the new risk wrong: this is the scenario in
which a challenger trained on new outcomes should beat the stale champion.

**Outcomes arrive with a lag.** A default in month ``d`` is reported to the bank in month
``d + lag`` (default 2, e.g. 60 days past due confirmed at month end). :meth:`SMETimeline.
outcomes_known` is what the bank knows at a given month; :meth:`SMETimeline.outcome_labels`
builds training / holdout labels from it.

Month-to-month noise is independent per month (multiplicative, a few percent), so a stable
population stays stable: without drift, the monthly population stability of every feature stays
far below 0.1. The documented scenario is :data:`DRIFT_SCENARIO` (``seed=2024``, drift in month
5); ``docs/lifecycle.md`` shows what it looks like. Rolling windows of the features ("3y",
"12m") are not rolled: records only accumulate over the simulated year.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.data.schema import PartyTable
from jointcredit.errors import DataValidationError

__all__ = [
    "DRIFT_SCENARIO",
    "DriftSpec",
    "EXPOSED_INDUSTRIES",
    "SMETimeline",
    "make_sme_timeline",
]

#: The documented drift scenario: visible drift from month 5 (see docs/lifecycle.md).
DRIFT_SCENARIO: dict[str, int] = {"seed": 2024, "drift_month": 5}

#: Industry sections hit by the sector shock (GB/T 4754 codes 0..19: E construction, K real
#: estate).
EXPOSED_INDUSTRIES: tuple[int, ...] = (4, 10)

# Center features that change month to month; every other center feature is static.
_CENTER_DYNAMIC: tuple[str, ...] = (
    "invoice_count_12m",
    "invoice_amount_12m_10k",
    "invoice_amount_trend",
    "tax_paid_12m_10k",
    "tax_paid_yoy",
    "zero_filing_months_12m",
    "tax_arrears_months_12m",
    "insured_headcount",
    "insured_headcount_change_12m",
    "social_insurance_paid_months_12m",
    "social_insurance_arrears_months_12m",
    "housing_fund_arrears_months_12m",
    "electricity_kwh_12m",
    "electricity_trend_6m",
    "electricity_arrears_12m",
    "admin_penalty_count_3y",
    "abnormal_operation_flag",
    "judgments_defendant_3y",
    "enforcement_count_3y",
    "enforcement_amount_3y_10k",
    "dishonest_debtor_flag",
    "consumption_restriction_flag",
)

_BANK_DYNAMIC: tuple[str, ...] = (
    "avg_balance",
    "monthly_inflow",
    "monthly_outflow",
    "inflow_volatility",
    "balance_trend_6m",
    "account_age_months",
    "credit_utilization",
    "max_overdue_days_24m",
    "overdue_count_24m",
)


@dataclass(frozen=True)
class DriftSpec:
    """Strength of the shock from ``drift_month`` on (log / logit units).

    ``*_operating``: change of the log operating level (invoices, tax, electricity, headcount)
    for everyone (``macro``) and additionally for exposed enterprises. ``*_bank``: the same for
    bank flows and balances. ``*_hazard``: added to the logit of the monthly default hazard.
    """

    macro_operating: float = -0.12
    exposed_operating: float = -0.35
    macro_bank: float = -0.10
    exposed_bank: float = -0.35
    macro_hazard: float = 0.15
    exposed_hazard: float = 2.5
    #: Who is exposed: industry sections (codes 0..19) and/or government-procurement suppliers
    #: (``procurement_wins_3y >= exposed_min_procurement_wins``; None: not a criterion).
    exposed_industries: tuple[int, ...] = EXPOSED_INDUSTRIES
    exposed_min_procurement_wins: int | None = 1


@dataclass
class SMETimeline:
    """Monthly snapshots of one synthetic city and the bank's lagged outcomes.

    Ground truth (``truth``: per enterprise ``default_month``, ``lead``, ``exposed``, ...) is for
    research and tests and belongs to neither party. ``month_dates[t]`` is the last day of
    month ``t``: the date a snapshot is taken and events of that month are dated.
    """

    base: Any  # SyntheticSME
    n_months: int
    drift_month: int | None
    lag: int
    outcome_horizon: int
    seed: int
    month_dates: tuple[pd.Timestamp, ...]
    truth: pd.DataFrame = field(repr=False)
    distress: np.ndarray = field(repr=False)  # (n_months, n_universe) distress s per month
    _center_dynamic: list[dict[str, np.ndarray]] = field(repr=False, default_factory=list)
    _bank_dynamic: list[dict[str, np.ndarray]] = field(repr=False, default_factory=list)
    _center_universe_rows: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    _bank_universe_rows: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]

    # --- snapshots ---------------------------------------------------------------------------

    def _month(self, month: int, field_name: str = "month") -> int:
        if isinstance(month, bool) or not isinstance(month, int | np.integer):
            raise DataValidationError(field_name, f"must be an integer month, got {month!r}")
        if not 0 <= month < self.n_months:
            raise DataValidationError(
                field_name, f"month {month} outside the timeline 0..{self.n_months - 1}"
            )
        return int(month)

    def center_frame(self, month: int) -> pd.DataFrame:
        """The credit center's table at the end of ``month`` (``id`` + catalogue features)."""
        m = self._month(month)
        frame = self.base.center.copy()
        for col, values in self._center_dynamic[m].items():
            frame[col] = values
        return frame

    def bank_frame(self, month: int) -> pd.DataFrame:
        """The bank's customer table at the end of ``month`` (``id`` + bank features, no label)."""
        m = self._month(month)
        frame = self.base.bank.drop(columns=[self.base.label_col])
        for col, values in self._bank_dynamic[m].items():
            frame[col] = values
        return frame

    def center_table(self, month: int) -> PartyTable:
        from jointcredit.data.loaders import load_party_table

        return load_party_table(self.center_frame(month), id_col="id", id_kind="uscc")

    def bank_table(self, month: int, labels: pd.DataFrame | None = None) -> PartyTable:
        """The bank's table at ``month``; with ``labels`` (``id``, ``default``) only those rows,
        labelled (e.g. from :meth:`outcome_labels`)."""
        from jointcredit.data.loaders import load_party_table

        frame = self.bank_frame(month)
        if labels is None:
            return load_party_table(frame, id_col="id", id_kind="uscc")
        if not isinstance(labels, pd.DataFrame) or not {"id", "default"} <= set(labels.columns):
            raise DataValidationError("labels", "must be a DataFrame with columns id, default")
        merged = labels[["id", "default"]].merge(frame, on="id", how="inner", validate="1:1")
        if len(merged) != len(labels):
            raise DataValidationError("labels", "some labelled ids are not bank customers")
        return load_party_table(merged, id_col="id", label_col="default", id_kind="uscc")

    def refresh(self, session: Any, month: int) -> None:
        """Give both in-process parties their data as of ``month`` (simulation only).

        Stands in for both parties loading their new monthly extract. The aligned ids are kept:
        the set of enterprises does not change over the timeline. A deployment never does this
        across parties: each side refreshes its own table.
        """
        m = self._month(month)
        session.bank.table = _relabel_like(self.bank_table(m), session.bank.table)
        session.center.table = self.center_table(m)

    # --- the bank's view of outcomes ---------------------------------------------------------

    def book_ids(self, month: int) -> np.ndarray:
        """Live-book ids the bank still considers performing at ``month``.

        The development vintage's defaulters are never in the book; an enterprise leaves it
        when its default is *reported* (``default_month + lag <= month``).
        """
        m = self._month(month)
        t = self.truth[self.truth["bank_customer"]]
        live = ~t["historical_default"] & ~(t["reported_month"].between(1, m))
        return t.loc[live, "id"].to_numpy(dtype=object)

    def outcomes_known(self, as_of: int, *, include_development: bool = False) -> pd.DataFrame:
        """Defaults the bank knows at the end of month ``as_of``: ``id, default_month,
        default_date, reported_month, reported_date`` (the ``NEW_OUTCOMES`` of a retrain).

        ``include_development`` adds the development vintage's defaulters, dated in month -1
        (before the book started), so that a retrain cohort observed at month 0 or later
        excludes them as already defaulted.
        """
        if isinstance(as_of, bool) or not isinstance(as_of, int | np.integer) or as_of < 0:
            raise DataValidationError("as_of", f"must be a non-negative month, got {as_of!r}")
        t = self.truth
        known = t["bank_customer"] & t["reported_month"].between(1, int(as_of))
        out = t.loc[known, ["id", "default_month", "reported_month"]].reset_index(drop=True)
        if include_development:
            hist = t.loc[t["historical_default"], ["id"]].assign(default_month=-1, reported_month=0)
            out = pd.concat([hist, out], ignore_index=True)
        out.insert(2, "default_date", [self.date(int(m)) for m in out["default_month"]])
        out["reported_date"] = [self.date(int(m)) for m in out["reported_month"]]
        return out.sort_values(["reported_month", "id"], kind="stable").reset_index(drop=True)

    def outcome_labels(
        self,
        as_of: int,
        obs_month: int = 0,
        *,
        window: int | None = None,
        include_development: bool = False,
        ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Labels (``id``, ``default``) for the book at ``obs_month`` as known at ``as_of``.

        ``default = 1`` when the enterprise defaulted in ``(obs_month, obs_month + window]``
        (no upper bound without ``window``) and the default was reported by ``as_of``; else 0.
        ``as_of`` may exceed the last snapshot (up to ``n_months - 1 + outcome_horizon``) to
        read the full truth for a later holdout. ``include_development`` adds the development
        vintage's defaulters with label 1. ``ids`` restricts the rows.
        """
        obs = self._month(obs_month, "obs_month")
        limit = self.n_months - 1 + self.outcome_horizon + self.lag
        if isinstance(as_of, bool) or not isinstance(as_of, int | np.integer):
            raise DataValidationError("as_of", f"must be an integer month, got {as_of!r}")
        if not obs <= as_of <= limit:
            raise DataValidationError("as_of", f"must be within {obs}..{limit}, got {as_of}")
        if window is not None and (not isinstance(window, int) or window < 1):
            raise DataValidationError("window", f"must be a positive number of months: {window!r}")
        t = self.truth[self.truth["bank_customer"]]
        dm = t["default_month"].to_numpy()
        rm = t["reported_month"].to_numpy()
        hist = t["historical_default"].to_numpy()
        # A default at or before obs_month that the bank knows of by as_of takes the
        # enterprise out of the obs_month cohort; one it does not know of yet stays, labelled 0.
        in_book = ~hist & ~((dm >= 1) & (dm <= obs) & (rm <= as_of))
        hi = np.inf if window is None else obs + window
        bad = (dm > obs) & (dm <= hi) & (rm <= as_of)
        keep = in_book | (hist & include_development)
        out = pd.DataFrame(
            {
                "id": t["id"].to_numpy(dtype=object)[keep],
                "default": np.where(hist, 1, bad.astype(np.int64))[keep].astype(np.int64),
            }
        )
        if ids is not None:
            wanted = pd.Index([str(i) for i in ids])
            out = out[out["id"].isin(wanted)]
        return out.reset_index(drop=True)

    # --- helpers -----------------------------------------------------------------------------

    def date(self, month: int) -> pd.Timestamp:
        """Last day of ``month`` (months past the last snapshot are extrapolated)."""
        return (self.month_dates[0].to_period("M") + int(month)).to_timestamp(how="end").normalize()

    def exposed_ids(self) -> np.ndarray:
        return self.truth.loc[self.truth["exposed"], "id"].to_numpy(dtype=object)


def _relabel_like(table: PartyTable, previous: PartyTable) -> PartyTable:
    """Keep the previous table's rows and labels, with this month's features."""
    X = table.X.iloc[table.positions(previous.ids)].reset_index(drop=True)
    return PartyTable(previous.ids.copy(), X, previous.y, previous.schema)


# --- simulation ------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p) - np.log1p(-p)


def _check_args(n_months: int, drift_month: int | None, lag: int, horizon: int) -> None:
    if isinstance(n_months, bool) or not isinstance(n_months, int) or n_months < 2:
        raise DataValidationError("n_months", f"need at least 2 months, got {n_months!r}")
    if drift_month is not None and (
        isinstance(drift_month, bool)
        or not isinstance(drift_month, int)
        or not 1 <= drift_month < n_months
    ):
        raise DataValidationError(
            "drift_month", f"must be None or within 1..{n_months - 1}, got {drift_month!r}"
        )
    if isinstance(lag, bool) or not isinstance(lag, int) or not 0 <= lag <= 12:
        raise DataValidationError("lag", f"must be 0..12 months, got {lag!r}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or not 0 <= horizon <= 36:
        raise DataValidationError("outcome_horizon", f"must be 0..36 months, got {horizon!r}")


def make_sme_timeline(
    n_months: int = 12,
    seed: int = DRIFT_SCENARIO["seed"],
    drift_month: int | None = DRIFT_SCENARIO["drift_month"],
    *,
    lag: int = 2,
    outcome_horizon: int = 12,
    start: str = "2025-01",
    drift: DriftSpec | None = None,
    sudden_share: float = 0.2,
    false_alarm_share: float = 0.04,
    **sme_kwargs: Any,
) -> SMETimeline:
    """Simulate ``n_months`` monthly snapshots of a synthetic city (see the module docstring).

    ``sme_kwargs`` go to :func:`~jointcredit.data.make_sme_data` (``n_enterprises``,
    ``n_bank_customers``, ``overlap``, ``bad_rate``); ``seed`` seeds both it and the dynamics.
    ``start``: the calendar month of month 0 (``YYYY-MM``).
    """
    from jointcredit.data.synthetic import make_sme_data

    _check_args(n_months, drift_month, lag, outcome_horizon)
    for name, share in (("sudden_share", sudden_share), ("false_alarm_share", false_alarm_share)):
        if not 0.0 <= share <= 1.0:
            raise DataValidationError(name, f"must be within [0, 1], got {share!r}")
    try:
        period0 = pd.Period(start, freq="M")
    except (ValueError, TypeError):
        raise DataValidationError("start", f"not a YYYY-MM month: {start!r}") from None
    spec = drift or DriftSpec()
    base = make_sme_data(seed=seed, **sme_kwargs)
    streams = np.random.SeedSequence([seed, 0x7131E]).spawn(4)
    rng_default, rng_path, rng_center, rng_bank = (np.random.default_rng(s) for s in streams)

    # The universe: every enterprise of the truth table (city + bank customers from elsewhere).
    truth = base.truth.reset_index(drop=True)
    n = len(truth)
    uid = pd.Index(truth["id"].astype(str))
    center_rows = uid.get_indexer(base.center["id"].astype(str))
    bank_rows = uid.get_indexer(base.bank["id"].astype(str))
    bank_customer = np.zeros(n, dtype=bool)
    bank_customer[bank_rows] = True
    historical = np.zeros(n, dtype=bool)
    historical[bank_rows] = base.bank[base.label_col].to_numpy() == 1

    exposed = np.zeros(n, dtype=bool)
    wins = base.center["procurement_wins_3y"].to_numpy(dtype=np.float64)
    industry = base.center["industry_section"].to_numpy(dtype=np.float64)
    by_wins = (
        np.zeros(wins.shape, dtype=bool)
        if spec.exposed_min_procurement_wins is None
        else wins >= spec.exposed_min_procurement_wins
    )
    exposed[center_rows] = by_wins | np.isin(industry, spec.exposed_industries)
    outside = ~np.isin(np.arange(n), center_rows)
    exposed[outside] = rng_default.random(int(outside.sum())) < exposed[center_rows].mean()

    # Default months from the monthly hazard (drift raises it for the exposed from drift_month).
    last = n_months - 1 + outcome_horizon
    h0 = 1.0 - (1.0 - truth["pd_12m"].to_numpy(dtype=np.float64)) ** (1.0 / 12.0)
    months = np.arange(1, last + 1)
    logit = np.broadcast_to(_logit(h0)[:, None], (n, months.size)).copy()
    if drift_month is not None:
        after = months >= drift_month
        logit[:, after] += spec.macro_hazard + spec.exposed_hazard * exposed[:, None]
    hits = rng_default.random((n, months.size)) < _sigmoid(logit)
    hits[historical] = False  # already defaulted before month 0: out of the book
    first = np.where(hits.any(axis=1), months[np.argmax(hits, axis=1)], 0)
    default_month = first.astype(np.int64)
    defaulter = default_month > 0
    reported = np.where(defaulter, default_month + lag, 0)

    # Distress paths: ramps before default, sudden defaults, temporary dips.
    sudden = defaulter & (rng_path.random(n) < sudden_share)
    lead = np.where(sudden, 0, rng_path.integers(2, 7, n))
    lead = np.where(defaulter, lead, 0)
    severity = rng_path.uniform(1.0, 2.0, n)
    dip = ~defaulter & ~historical & (rng_path.random(n) < false_alarm_share)
    dip_start = rng_path.integers(1, max(2, n_months - 1), n)
    dip_peak = rng_path.uniform(0.6, 1.2, n)
    t_axis = np.arange(n_months)[:, None]
    onset = (default_month - lead)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ramp = np.where(
            lead[None, :] > 0,
            np.clip((t_axis - onset) / np.maximum(lead, 1)[None, :], 0.0, 1.0),
            (t_axis >= default_month[None, :]).astype(float),
        )
    ramp0 = ramp[0:1, :]
    s = np.where(defaulter[None, :], severity[None, :] * np.clip(ramp - ramp0, 0.0, None), 0.0)
    rel = t_axis - dip_start[None, :]
    dip_shape = np.select(
        [rel < 0, rel < 2, rel < 3, rel < 6],
        [0.0, (rel + 1) / 2.0, 1.0, 1.0 - (rel - 2) / 4.0],
        default=0.0,
    )
    s = s + np.where(dip[None, :], dip_peak[None, :] * np.clip(dip_shape, 0.0, 1.0), 0.0)

    shock_op = np.zeros((n_months, n))
    shock_bank = np.zeros((n_months, n))
    if drift_month is not None:
        shock_op[drift_month:] = spec.macro_operating + spec.exposed_operating * exposed
        shock_bank[drift_month:] = spec.macro_bank + spec.exposed_bank * exposed

    center_dyn = _simulate_center(
        base.center, s[:, center_rows], shock_op[:, center_rows], rng_center
    )
    bank_dyn = _simulate_bank(base.bank, s[:, bank_rows], shock_bank[:, bank_rows], rng_bank)

    truth_out = pd.DataFrame(
        {
            "id": truth["id"].astype(str).to_numpy(dtype=object),
            "pd_12m": truth["pd_12m"].to_numpy(),
            "in_center": truth["in_center"].to_numpy(dtype=bool),
            "bank_customer": bank_customer,
            "historical_default": historical,
            "exposed": exposed,
            "default_month": default_month,
            "reported_month": reported.astype(np.int64),
            "lead": lead.astype(np.int64),
            "severity": np.where(defaulter, severity, 0.0),
            "false_alarm": dip,
        }
    )
    dates = tuple((period0 + t).to_timestamp(how="end").normalize() for t in range(n_months))
    return SMETimeline(
        base=base,
        n_months=n_months,
        drift_month=drift_month,
        lag=lag,
        outcome_horizon=outcome_horizon,
        seed=seed,
        month_dates=dates,
        truth=truth_out,
        distress=s,
        _center_dynamic=center_dyn,
        _bank_dynamic=bank_dyn,
        _center_universe_rows=center_rows,
        _bank_universe_rows=bank_rows,
    )


def _noise(rng: np.random.Generator, n: int, sd: float) -> np.ndarray:
    return rng.normal(0.0, sd, n)


def _simulate_center(
    center: pd.DataFrame, s: np.ndarray, shock: np.ndarray, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """Monthly values of the dynamic center columns; month 0 = the generator's values."""
    n_months, n = s.shape
    base = {c: center[c].to_numpy(dtype=np.float64).copy() for c in _CENTER_DYNAMIC}
    out = [{c: v.copy() for c, v in base.items()}]
    state = {c: v.copy() for c, v in base.items()}
    for t in range(1, n_months):
        st, sh = s[t], shock[t]
        op = -0.35 * st + sh  # log operating level relative to month 0
        cur: dict[str, np.ndarray] = {}

        def scaled(
            col: str, power: float, sd: float, valid: np.ndarray, op: np.ndarray = op
        ) -> np.ndarray:
            factor = np.exp(power * op + _noise(rng, n, sd))
            return np.where(valid, base[col] * factor, base[col])

        inv = base["invoice_count_12m"]
        cur["invoice_count_12m"] = np.where(
            inv > 0, np.round(inv * np.exp(0.5 * op + _noise(rng, n, 0.03))), inv
        )
        cur["invoice_amount_12m_10k"] = np.round(
            scaled("invoice_amount_12m_10k", 0.5, 0.04, base["invoice_amount_12m_10k"] > 0), 1
        )
        cur["invoice_amount_trend"] = np.round(
            scaled("invoice_amount_trend", 1.0, 0.04, base["invoice_amount_trend"] >= 0), 3
        )
        cur["tax_paid_12m_10k"] = np.round(
            scaled("tax_paid_12m_10k", 0.5, 0.04, base["tax_paid_12m_10k"] > 0), 2
        )
        yoy = base["tax_paid_yoy"]
        cur["tax_paid_yoy"] = np.where(
            np.isnan(yoy), yoy, np.round((1 + yoy) * np.exp(op + _noise(rng, n, 0.03)) - 1, 3)
        )

        def accumulate(col: str, logit: np.ndarray, cap: float, valid: np.ndarray) -> np.ndarray:
            add = (rng.random(n) < _sigmoid(logit)) & valid
            state[col] = np.where(valid, np.minimum(state[col] + add, cap), state[col])
            return state[col].copy()

        ok = ~np.isnan(base["zero_filing_months_12m"])
        cur["zero_filing_months_12m"] = accumulate(
            "zero_filing_months_12m", -7.0 + 2.5 * st, 12.0, ok
        )
        cur["tax_arrears_months_12m"] = accumulate(
            "tax_arrears_months_12m",
            -6.5 + 3.0 * st,
            12.0,
            ~np.isnan(base["tax_arrears_months_12m"]),
        )
        hc = base["insured_headcount"]
        hc_factor = np.exp(-0.35 * st + 0.5 * sh + _noise(rng, n, 0.02))
        new_hc = np.where(hc > 0, np.round(hc * hc_factor), hc)
        cur["insured_headcount"] = new_hc
        change = base["insured_headcount_change_12m"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(hc > 0, new_hc / hc, 1.0)
        cur["insured_headcount_change_12m"] = np.where(
            np.isnan(change), change, np.round((1 + change) * ratio - 1, 3)
        )
        si_ok = ~np.isnan(base["social_insurance_arrears_months_12m"]) & (hc > 0)
        si = accumulate("social_insurance_arrears_months_12m", -6.5 + 2.8 * st, 12.0, si_ok)
        cur["social_insurance_arrears_months_12m"] = si
        paid = base["social_insurance_paid_months_12m"]
        new_arrears = si - np.nan_to_num(base["social_insurance_arrears_months_12m"])
        cur["social_insurance_paid_months_12m"] = np.where(
            np.isnan(paid) | (paid < 0), paid, np.maximum(paid - new_arrears, 0.0)
        )
        cur["housing_fund_arrears_months_12m"] = accumulate(
            "housing_fund_arrears_months_12m",
            -7.0 + 2.5 * st,
            12.0,
            ~np.isnan(base["housing_fund_arrears_months_12m"]),
        )
        kwh = base["electricity_kwh_12m"]
        cur["electricity_kwh_12m"] = np.where(
            kwh > 0, np.round(kwh * np.exp(0.5 * op + _noise(rng, n, 0.03))), kwh
        )
        trend = base["electricity_trend_6m"]
        e_op = -0.35 * st + 0.6 * sh
        cur["electricity_trend_6m"] = np.where(
            trend >= 0, np.round(trend * np.exp(e_op + _noise(rng, n, 0.04)), 3), trend
        )
        e_arr = base["electricity_arrears_12m"]
        e_new = rng.poisson(np.exp(-5.0 + 1.5 * st)).astype(np.float64)
        state["electricity_arrears_12m"] = np.where(
            e_arr >= 0, state["electricity_arrears_12m"] + e_new, e_arr
        )
        cur["electricity_arrears_12m"] = state["electricity_arrears_12m"].copy()

        def count(col: str, log_rate: np.ndarray) -> np.ndarray:
            new = rng.poisson(np.exp(np.clip(log_rate, -20.0, 3.0))).astype(np.float64)
            state[col] = state[col] + new
            return new

        count("admin_penalty_count_3y", -6.0 + 1.0 * st)
        cur["admin_penalty_count_3y"] = state["admin_penalty_count_3y"].copy()
        count("judgments_defendant_3y", -5.5 + 1.8 * st)
        cur["judgments_defendant_3y"] = state["judgments_defendant_3y"].copy()
        new_enf = count("enforcement_count_3y", -6.5 + 2.4 * st)
        cur["enforcement_count_3y"] = state["enforcement_count_3y"].copy()
        amount = new_enf * rng.lognormal(np.log(15.0), 1.0, n)
        state["enforcement_amount_3y_10k"] = np.round(
            state["enforcement_amount_3y_10k"] + amount, 1
        )
        cur["enforcement_amount_3y_10k"] = state["enforcement_amount_3y_10k"].copy()

        def flag(col: str, eligible: np.ndarray, p: np.ndarray) -> np.ndarray:
            turn_on = eligible & (state[col] == 0) & (rng.random(n) < p)
            state[col] = np.where(turn_on, 1.0, state[col])
            return state[col].copy()

        enforced = state["enforcement_count_3y"] > 0
        cur["dishonest_debtor_flag"] = flag(
            "dishonest_debtor_flag", enforced, _sigmoid(-4.0 + 1.6 * st)
        )
        dishonest = state["dishonest_debtor_flag"] > 0
        cur["consumption_restriction_flag"] = flag(
            "consumption_restriction_flag",
            enforced,
            np.where(dishonest, 0.35, _sigmoid(-5.0 + 1.5 * st)),
        )
        cur["abnormal_operation_flag"] = flag(
            "abnormal_operation_flag", np.ones(n, dtype=bool), _sigmoid(-8.0 + 2.5 * st)
        )
        out.append({c: cur[c] for c in _CENTER_DYNAMIC})
    return out


def _simulate_bank(
    bank: pd.DataFrame, s: np.ndarray, shock: np.ndarray, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """Monthly values of the dynamic bank columns; month 0 = the generator's values."""
    n_months, n = s.shape
    base = {c: bank[c].to_numpy(dtype=np.float64).copy() for c in _BANK_DYNAMIC}
    out = [{c: v.copy() for c, v in base.items()}]
    overdue_count = base["overdue_count_24m"].copy()
    max_days = base["max_overdue_days_24m"].copy()
    for t in range(1, n_months):
        st, sh = s[t], shock[t]
        op = -0.45 * st + sh
        cur: dict[str, np.ndarray] = {}
        cur["avg_balance"] = np.round(base["avg_balance"] * np.exp(op + _noise(rng, n, 0.05)), 2)
        inflow = base["monthly_inflow"] * np.exp(0.6 * op + _noise(rng, n, 0.04))
        cur["monthly_inflow"] = np.round(inflow, 2)
        cur["monthly_outflow"] = np.round(
            base["monthly_outflow"] * np.exp(0.6 * op + 0.1 * st + _noise(rng, n, 0.04)), 2
        )
        cur["inflow_volatility"] = np.round(
            base["inflow_volatility"] * np.exp(0.25 * st + _noise(rng, n, 0.04)), 3
        )
        cur["balance_trend_6m"] = np.round(
            base["balance_trend_6m"] * np.exp(0.8 * op + _noise(rng, n, 0.05)), 3
        )
        cur["account_age_months"] = base["account_age_months"] + t
        util = base["credit_utilization"]
        moved = _sigmoid(_logit(util) + 0.9 * st - 0.5 * sh + _noise(rng, n, 0.1))
        cur["credit_utilization"] = np.where(np.isnan(util), util, np.round(moved, 3))
        late = (rng.random(n) < _sigmoid(-5.0 + 3.0 * st)) & (st > 0.5)
        overdue_count = np.minimum(overdue_count + late, 24.0)
        days = np.ceil(40.0 * np.maximum(st - 0.6, 0.0) * rng.lognormal(0.0, 0.3, n))
        max_days = np.where(late, np.maximum(max_days, np.clip(days, 1.0, 180.0)), max_days)
        cur["overdue_count_24m"] = overdue_count.copy()
        cur["max_overdue_days_24m"] = max_days.copy()
        out.append({c: cur[c] for c in _BANK_DYNAMIC})
    return out
