"""Post-loan early warning: red / yellow / green per enterprise, with the reasons.

Runs at the bank on what it legitimately holds after a monitoring run: each enterprise's current
PD and grade (re-scored jointly), the previous run's and the baseline's (e.g. at loan origination),
and the credit center's risk-event flags (:mod:`jointcredit.monitor.events`). The rules are
explicit and configurable (:class:`WarningRules`; JSON via ``to_dict``/``from_dict``). An
enterprise's status is the most severe rule that fires; every rule that fires adds a reason code.

Default rules (see docs/lifecycle.md for how they were chosen on the drift scenario):

=====================  ==========================================  ========
rule                   fires when                                  status
=====================  ==========================================  ========
``pd_level``           PD >= 0.20 (red) / >= 0.10 (yellow)          red/yellow
``pd_up``              PD / reference PD >= 3.0 (red) / 2.0         red/yellow
                       (yellow), against the previous run or the
                       baseline, and PD rose by >= 0.02 in absolute
                       terms (tiny PDs doubling is not a warning)
``grade_drop``         grade fell by >= 3 notches (red) / 2         red/yellow
                       notches (yellow) against the previous run or
                       the baseline (one notch is within the
                       month-to-month noise of a re-score)
``event``              a center flag of a red type (new enforcement red/yellow
                       record, dishonest-debtor listing,
                       consumption restriction) / a yellow type
                       (tax arrears, headcount drop, electricity
                       drop) in the monitoring period
=====================  ==========================================  ========

Reason codes (``;``-separated, most severe first): ``pd_level:0.231``,
``pd_up:2.4x_since_baseline``, ``grade_drop:B->D_since_previous``,
``event:enforcement_new@2025-06-30``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.errors import DataValidationError, DuplicateIdentifierError
from jointcredit.monitor.events import (
    CONSUMPTION_RESTRICTED,
    DISHONEST_DEBTOR_LISTED,
    ELECTRICITY_DROP,
    ENFORCEMENT_NEW,
    EVENT_TYPES,
    HEADCOUNT_DROP,
    TAX_ARREARS,
)

__all__ = [
    "GREEN",
    "RED",
    "STATUSES",
    "WARNING_COLUMNS",
    "YELLOW",
    "WarningRules",
    "evaluate_warnings",
]

GREEN, YELLOW, RED = "green", "yellow", "red"
STATUSES: tuple[str, ...] = (GREEN, YELLOW, RED)
_RANK = {GREEN: 0, YELLOW: 1, RED: 2}

WARNING_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    "reasons",
    "pd",
    "pd_previous",
    "pd_baseline",
    "grade",
    "grade_previous",
    "grade_baseline",
    "n_events",
)


def _number(value: Any, field: str, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataValidationError(field, f"must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or not low <= v <= high:
        raise DataValidationError(field, f"must be within [{low}, {high}], got {value!r}")
    return v


@dataclass(frozen=True)
class WarningRules:
    """Thresholds of the warning rules (defaults in the module docstring)."""

    pd_level_yellow: float = 0.10
    pd_level_red: float = 0.20
    pd_ratio_yellow: float = 2.0
    pd_ratio_red: float = 3.0
    pd_min_increase: float = 0.02
    grade_drop_yellow: int = 2
    grade_drop_red: int = 3
    red_events: tuple[str, ...] = (ENFORCEMENT_NEW, DISHONEST_DEBTOR_LISTED, CONSUMPTION_RESTRICTED)
    yellow_events: tuple[str, ...] = (TAX_ARREARS, HEADCOUNT_DROP, ELECTRICITY_DROP)

    def __post_init__(self) -> None:
        y = _number(self.pd_level_yellow, "rules.pd_level_yellow", high=1.0)
        r = _number(self.pd_level_red, "rules.pd_level_red", high=1.0)
        if r < y:
            raise DataValidationError("rules.pd_level_red", "must not be below pd_level_yellow")
        y = _number(self.pd_ratio_yellow, "rules.pd_ratio_yellow", low=1.0)
        r = _number(self.pd_ratio_red, "rules.pd_ratio_red", low=1.0)
        if r < y:
            raise DataValidationError("rules.pd_ratio_red", "must not be below pd_ratio_yellow")
        _number(self.pd_min_increase, "rules.pd_min_increase", high=1.0)
        for name in ("grade_drop_yellow", "grade_drop_red"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DataValidationError(f"rules.{name}", f"must be a positive integer: {v!r}")
        if self.grade_drop_red < self.grade_drop_yellow:
            raise DataValidationError("rules.grade_drop_red", "must not be below grade_drop_yellow")
        for name in ("red_events", "yellow_events"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise DataValidationError(f"rules.{name}", "must be a list of event types")
            unknown = sorted(set(value) - set(EVENT_TYPES))
            if unknown:
                raise DataValidationError(f"rules.{name}", f"unknown event type(s) {unknown}")
            object.__setattr__(self, name, tuple(value))
        both = sorted(set(self.red_events) & set(self.yellow_events))
        if both:
            raise DataValidationError("rules.yellow_events", f"also listed as red: {both}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["red_events"] = list(self.red_events)
        data["yellow_events"] = list(self.yellow_events)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WarningRules:
        if not isinstance(data, Mapping):
            raise DataValidationError("rules", "must be a JSON object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise DataValidationError(f"rules.{unknown[0]}", "unknown warning rule")
        return cls(**dict(data))


def _frame(data: pd.DataFrame | None, name: str, required: Sequence[str]) -> pd.DataFrame | None:
    if data is None:
        return None
    if not isinstance(data, pd.DataFrame):
        raise DataValidationError(name, "must be a DataFrame")
    missing = [c for c in required if c not in data.columns]
    if missing:
        raise DataValidationError(f"{name}.{missing[0]}", "column missing")
    ids = data["id"].astype(str)
    if ids.duplicated().any():
        raise DuplicateIdentifierError(f"{name}.id", ids[ids.duplicated()].unique().tolist())
    pds = pd.to_numeric(data["pd"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(pds).all() or ((pds < 0) | (pds > 1)).any():
        raise DataValidationError(f"{name}.pd", "PDs must be finite and within [0, 1]")
    return pd.DataFrame(
        {"pd": pds, "grade": data["grade"].astype(str).to_numpy(dtype=object)},
        index=pd.Index(ids.to_numpy(dtype=object), name="id"),
    )


def evaluate_warnings(
    current: pd.DataFrame,
    *,
    previous: pd.DataFrame | None = None,
    baseline: pd.DataFrame | None = None,
    events: pd.DataFrame | None = None,
    rules: WarningRules | None = None,
    grades: Sequence[str] = ("A", "B", "C", "D", "E"),
) -> pd.DataFrame:
    """Status and reasons per enterprise of ``current`` (``id, pd, grade``).

    ``previous`` / ``baseline``: the same columns from the last run and from a fixed reference
    (e.g. origination); enterprises absent there are compared with what is available.
    ``events``: flags ``id, event_type, date`` for the monitoring period. ``grades``: the
    policy's grade labels, best first. Returns :data:`WARNING_COLUMNS`, in ``current``'s order.
    """
    rules = rules or WarningRules()
    cur = _frame(current, "current", ("id", "pd", "grade"))
    assert cur is not None
    prev = _frame(previous, "previous", ("id", "pd", "grade"))
    base = _frame(baseline, "baseline", ("id", "pd", "grade"))
    labels = list(grades)
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise DataValidationError("grades", "need at least two distinct grade labels")
    for name, frame in (("current", cur), ("previous", prev), ("baseline", base)):
        if frame is not None:
            unknown = sorted(set(frame["grade"]) - set(labels))
            if unknown:
                raise DataValidationError(f"{name}.grade", f"grades not in {labels}: {unknown}")
    rank = {g: i for i, g in enumerate(labels)}
    n = len(cur)
    ids = cur.index
    severity = np.zeros(n, dtype=np.int64)
    reasons: list[list[tuple[int, str]]] = [[] for _ in range(n)]

    def add(mask: np.ndarray, level: int, texts: Sequence[str] | str) -> None:
        for i in np.flatnonzero(mask):
            severity[i] = max(severity[i], level)
            reasons[i].append((level, texts if isinstance(texts, str) else texts[i]))

    p = cur["pd"].to_numpy()
    g = np.array([rank[x] for x in cur["grade"]], dtype=np.int64)
    red_level = p >= rules.pd_level_red
    add(red_level, 2, [f"pd_level:{v:.3f}" for v in p])
    add(~red_level & (p >= rules.pd_level_yellow), 1, [f"pd_level:{v:.3f}" for v in p])

    def compare(ref: pd.DataFrame | None, tag: str) -> tuple[np.ndarray, np.ndarray]:
        if ref is None:
            return np.full(n, np.nan), np.full(n, None, dtype=object)
        aligned = ref.reindex(ids)
        ref_p = aligned["pd"].to_numpy(dtype=np.float64)
        ref_g = aligned["grade"].to_numpy(dtype=object)
        known = ~np.isnan(ref_p)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(known, p / np.maximum(ref_p, 1e-12), np.nan)
        rose = known & (p - np.nan_to_num(ref_p) >= rules.pd_min_increase)
        text = [f"pd_up:{r:.1f}x_since_{tag}" for r in ratio]
        is_red = rose & (ratio >= rules.pd_ratio_red)
        add(is_red, 2, text)
        add(rose & ~is_red & (ratio >= rules.pd_ratio_yellow), 1, text)
        ref_rank = np.array([rank.get(x, -1) if isinstance(x, str) else -1 for x in ref_g])
        drop = np.where(ref_rank >= 0, g - ref_rank, 0)
        gtext = [
            f"grade_drop:{ref_g[i]}->{cur['grade'].iloc[i]}_since_{tag}" if drop[i] > 0 else ""
            for i in range(n)
        ]
        add(drop >= rules.grade_drop_red, 2, gtext)
        add((drop >= rules.grade_drop_yellow) & (drop < rules.grade_drop_red), 1, gtext)
        return ref_p, ref_g

    prev_p, prev_g = compare(prev, "previous")
    base_p, base_g = compare(base, "baseline")

    n_events = np.zeros(n, dtype=np.int64)
    if events is not None:
        if not isinstance(events, pd.DataFrame) or not {"id", "event_type", "date"} <= set(
            events.columns
        ):
            raise DataValidationError("events", "must be a DataFrame with id, event_type, date")
        position = {e: i for i, e in enumerate(ids)}
        for row in events.itertuples(index=False):
            i = position.get(str(row.id))
            if i is None:
                continue
            kind = str(row.event_type)
            if kind not in EVENT_TYPES:
                raise DataValidationError("events.event_type", f"unknown event type {kind!r}")
            n_events[i] += 1
            level = 2 if kind in rules.red_events else 1 if kind in rules.yellow_events else 0
            text = f"event:{kind}@{pd.Timestamp(row.date).date()}"
            if level:
                severity[i] = max(severity[i], level)
            reasons[i].append((level, text))

    status = np.array([STATUSES[s] for s in severity], dtype=object)
    reason_text = [";".join(t for _, t in sorted(r, key=lambda item: -item[0])) for r in reasons]
    return pd.DataFrame(
        {
            "id": pd.Series(ids.to_numpy(dtype=object), dtype=object),
            "status": pd.Series(status, dtype=object),
            "reasons": pd.Series(reason_text, dtype=object),
            "pd": p,
            "pd_previous": prev_p,
            "pd_baseline": base_p,
            "grade": pd.Series(cur["grade"].to_numpy(dtype=object), dtype=object),
            "grade_previous": pd.Series(prev_g, dtype=object),
            "grade_baseline": pd.Series(base_g, dtype=object),
            "n_events": n_events,
        },
        columns=list(WARNING_COLUMNS),
    )


def status_rank(status: str) -> int:
    """0 green, 1 yellow, 2 red (for sorting and "at least yellow" filters)."""
    try:
        return _RANK[status]
    except KeyError:
        raise DataValidationError("status", f"unknown status {status!r}") from None
