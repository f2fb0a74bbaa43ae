"""Credit-center risk events for a bank's monitored book: protocol ``risk_events``.

The credit center sees things about an enterprise long before the bank's account data does: a
court enforcement record, a listing as a dishonest judgment debtor (失信被执行人), a consumption
restriction order (限制高消费), tax arrears piling up, insured headcount or electricity use
collapsing. Platforms push such signals to lending banks as post-loan warnings. Here they travel
as **flags: enterprise id, event type and date, nothing else** (no amounts, no counts, no
feature values), and **only for enterprises that authorised this bank for
``post_loan_monitoring``** in the center's :class:`~jointcredit.scoring.ConsentRegistry`.

The center never asks for the bank's book: the consent records it already holds for this bank
and purpose *are* the monitored book as far as the center is concerned. An event is delivered
only if consent was valid on the event's date **and** is still valid when the flags are sent
(a revocation stops delivery of older events too).

Protocol ``risk_events`` (two round trips)::

    center -> bank  start      {}
    bank -> center  start.ok   {since, until}              the period the bank asks flags for
    center:         events of the period -> consent filter (bank, post_loan_monitoring,
                    at the event date and now) -> audit line
    center -> bank  flags      {since, until, ids, types, dates, consented}
    bank -> center  flags.ok   {received}

``consented`` lists the enterprises whose monitoring consent for this bank is valid now, so the
bank can keep everyone else out of its re-scoring. These are the bank's own consents; the list
reveals nothing about other banks or other purposes.

Where events come from: :func:`detect_events` derives them from the center's consecutive
monthly snapshots with configurable :class:`EventRules`; a center with dated source records
(court filings, list entries) can pass those directly as a frame ``id, event_type, date``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.errors import (
    DataValidationError,
    JointCreditError,
    MalformedMessageError,
    UnexpectedMessageError,
)
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.session import ProtocolChannel
from jointcredit.scoring.audit import AuditLog, id_digest, to_utc, utc_now
from jointcredit.scoring.consent import ConsentRegistry

__all__ = [
    "CONSUMPTION_RESTRICTED",
    "DISHONEST_DEBTOR_LISTED",
    "ELECTRICITY_DROP",
    "ENFORCEMENT_NEW",
    "EVENT_TYPES",
    "HEADCOUNT_DROP",
    "MONITORING_PURPOSE",
    "PROTOCOL",
    "TAX_ARREARS",
    "CenterMonitor",
    "EventRules",
    "RiskEventFlags",
    "RiskEventsBank",
    "RiskEventsCenter",
    "attach_center_monitor",
    "center_monitor",
    "detect_events",
    "fetch_risk_events",
]

PROTOCOL = "risk_events"
MONITORING_PURPOSE = "post_loan_monitoring"
SERVICE_KEY = "monitor"

ENFORCEMENT_NEW = "enforcement_new"
DISHONEST_DEBTOR_LISTED = "dishonest_debtor_listed"
CONSUMPTION_RESTRICTED = "consumption_restricted"
TAX_ARREARS = "tax_arrears"
HEADCOUNT_DROP = "headcount_drop"
ELECTRICITY_DROP = "electricity_drop"

#: Every event type a flag can carry (the wire sends the type's position in this tuple).
EVENT_TYPES: tuple[str, ...] = (
    ENFORCEMENT_NEW,
    DISHONEST_DEBTOR_LISTED,
    CONSUMPTION_RESTRICTED,
    TAX_ARREARS,
    HEADCOUNT_DROP,
    ELECTRICITY_DROP,
)

#: Longest period one request may cover (a bank asks month by month, or for a quarter).
MAX_PERIOD_DAYS = 400

EVENT_COLUMNS: tuple[str, ...] = ("id", "event_type", "date")


# --- detection from monthly snapshots ---------------------------------------------------------


@dataclass(frozen=True)
class EventRules:
    """When a change between the center's monthly snapshots counts as an event.

    * ``enforcement_new``: ``enforcement_count_3y`` increased since the previous month.
    * ``dishonest_debtor_listed`` / ``consumption_restricted``: the flag turned from 0 to 1.
    * ``tax_arrears``: ``tax_arrears_months_12m`` reached ``tax_arrears_months`` (default 3)
      this month (it was below the month before).
    * ``headcount_drop``: insured headcount fell by at least ``headcount_drop`` (30 %) against
      ``lookback`` months earlier (3), for enterprises that had at least ``headcount_min`` (5)
      insured staff then; reported in the first month the condition holds.
    * ``electricity_drop``: ``electricity_trend_6m`` fell by at least ``electricity_drop`` (30 %)
      against ``lookback`` months earlier; special codes (no own meter) and unmatched accounts
      never trigger it.
    """

    tax_arrears_months: int = 3
    headcount_drop: float = 0.30
    headcount_min: int = 5
    electricity_drop: float = 0.30
    lookback: int = 3

    def __post_init__(self) -> None:
        for name in ("tax_arrears_months", "headcount_min", "lookback"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataValidationError(f"rules.{name}", f"must be a positive integer: {value!r}")
        for name in ("headcount_drop", "electricity_drop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise DataValidationError(f"rules.{name}", f"must be a share in (0, 1): {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventRules:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise DataValidationError(f"rules.{unknown[0]}", "unknown event rule")
        return cls(**dict(data))


def _as_day(value: object, field: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise DataValidationError(field, f"not a date: {value!r}") from None
    if ts is pd.NaT or pd.isna(ts):
        raise DataValidationError(field, "missing date")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("Asia/Shanghai").tz_localize(None)
    return ts.normalize()


def detect_events(
    snapshots: Sequence[tuple[object, pd.DataFrame]], rules: EventRules | None = None
) -> pd.DataFrame:
    """Events between consecutive monthly snapshots ``[(date, frame), ...]`` (oldest first).

    Each frame has an ``id`` column and the catalogue columns the rules read. Returns ``id,
    event_type, date`` (the date of the snapshot in which the change was first seen), one row
    per event, ordered by date. Runs at the center on its own data.
    """
    rules = rules or EventRules()
    if len(snapshots) < 2:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    dates = [_as_day(d, f"snapshots[{i}].date") for i, (d, _) in enumerate(snapshots)]
    if any(b <= a for a, b in zip(dates, dates[1:], strict=False)):
        raise DataValidationError("snapshots", "dates must strictly increase (oldest first)")
    ids = pd.Index(snapshots[0][1]["id"].astype(str))
    if not ids.is_unique:
        raise DataValidationError("id", "duplicate ids in a snapshot")

    def column(frame: pd.DataFrame, name: str, i: int) -> np.ndarray:
        if name not in frame.columns:
            raise DataValidationError(name, f"column missing from snapshot {i}")
        keyed = frame.assign(id=frame["id"].astype(str)).set_index("id")[name]
        values = keyed.reindex(ids)
        return values.to_numpy(dtype=np.float64)

    cols = (
        "enforcement_count_3y",
        "dishonest_debtor_flag",
        "consumption_restriction_flag",
        "tax_arrears_months_12m",
        "insured_headcount",
        "electricity_trend_6m",
    )
    series = {c: [column(frame, c, i) for i, (_, frame) in enumerate(snapshots)] for c in cols}
    out: list[pd.DataFrame] = []
    with np.errstate(invalid="ignore"):
        for t in range(1, len(snapshots)):
            hits: dict[str, np.ndarray] = {}
            enf = series["enforcement_count_3y"]
            hits[ENFORCEMENT_NEW] = enf[t] > enf[t - 1]
            for name, col in (
                (DISHONEST_DEBTOR_LISTED, "dishonest_debtor_flag"),
                (CONSUMPTION_RESTRICTED, "consumption_restriction_flag"),
            ):
                hits[name] = (series[col][t] >= 1) & (series[col][t - 1] < 1)
            tax = series["tax_arrears_months_12m"]
            n_arrears = rules.tax_arrears_months
            hits[TAX_ARREARS] = (tax[t] >= n_arrears) & (tax[t - 1] < n_arrears)
            hits[HEADCOUNT_DROP] = _dropped(
                series["insured_headcount"], t, rules.lookback, rules.headcount_drop,
                rules.headcount_min,
            )  # fmt: skip
            hits[ELECTRICITY_DROP] = _dropped(
                series["electricity_trend_6m"], t, rules.lookback, rules.electricity_drop, 0.0
            )
            for event_type in EVENT_TYPES:
                mask = hits[event_type]
                if mask.any():
                    out.append(
                        pd.DataFrame(
                            {
                                "id": ids[mask].to_numpy(dtype=object),
                                "event_type": event_type,
                                "date": dates[t],
                            }
                        )
                    )
    if not out:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    events = pd.concat(out, ignore_index=True)
    return events.sort_values(["date", "event_type", "id"], kind="stable").reset_index(drop=True)


def _dropped(
    series: list[np.ndarray], t: int, lookback: int, share: float, minimum: float
) -> np.ndarray:
    """First month in which ``value <= (1 - share) * value lookback months earlier``."""

    def condition(k: int) -> np.ndarray:
        if k < 1:
            return np.zeros(series[0].shape, dtype=bool)
        then = series[max(0, k - lookback)]
        now = series[k]
        valid = (then > 0) & (then >= minimum) & (now >= 0)  # special codes / NaN never count
        return valid & (now <= (1.0 - share) * then)

    return condition(t) & ~condition(t - 1)


def _check_events(events: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(events, pd.DataFrame):
        raise DataValidationError("events", "must be a DataFrame with columns id, event_type, date")
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise DataValidationError(missing[0], "column missing from the event records")
    unknown = sorted(set(events["event_type"].astype(str)) - set(EVENT_TYPES))
    if unknown:
        raise DataValidationError("event_type", f"unknown event type(s) {unknown}")
    out = pd.DataFrame(
        {
            "id": events["id"].astype(str).str.strip().str.upper().to_numpy(dtype=object),
            "event_type": events["event_type"].astype(str).to_numpy(dtype=object),
            "date": pd.to_datetime(events["date"]).dt.normalize().to_numpy(),
        }
    )
    if out["date"].isna().any():
        raise DataValidationError("date", "missing event date")
    return out.drop_duplicates().reset_index(drop=True)


# --- the center's monitoring context ----------------------------------------------------------


@dataclass
class CenterMonitor:
    """What the center's monitoring protocol halves need, for the one bank a session serves.

    ``bank_id`` comes from the center's own configuration (in deployment: the authenticated
    node's registered name), never from a message, so a bank cannot ask for another bank's
    flags. ``events``: the center's dated records (``id, event_type, date``), e.g. from
    :func:`detect_events`. ``snapshots``: the center's monthly tables by month label
    (``"2025-06"``), for ``feature_stability``. ``clock``: "now" for consent checks (tests and
    simulations set it). ``min_population``: smallest population the center computes feature
    stability over (indices over a handful of enterprises would describe individuals).
    """

    bank_id: str
    consents: ConsentRegistry
    events: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    )
    snapshots: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    audit: AuditLog | None = None
    clock: Callable[[], datetime] = utc_now
    min_population: int = 50
    actor: str = "credit_center"

    def __post_init__(self) -> None:
        if not isinstance(self.bank_id, str) or not self.bank_id.strip():
            raise DataValidationError("bank_id", "must be non-empty text")
        if not isinstance(self.consents, ConsentRegistry):
            raise DataValidationError("consents", "must be a ConsentRegistry")
        self.events = _check_events(self.events)
        if isinstance(self.min_population, bool) or not isinstance(self.min_population, int):
            raise DataValidationError("min_population", "must be an integer")
        if self.min_population < 1:
            raise DataValidationError("min_population", "must be at least 1")

    def now(self) -> datetime:
        return to_utc(self.clock(), "clock")

    def consented_now(self) -> list[str]:
        """Enterprises whose monitoring consent for this bank is valid now (sorted)."""
        candidates = sorted(
            {
                r.enterprise_id
                for r in self.consents.records(bank_id=self.bank_id, purpose=MONITORING_PURPOSE)
            }
        )
        if not candidates:
            return []
        allowed, _ = self.consents.filter(candidates, self.bank_id, MONITORING_PURPOSE, self.now())
        return sorted(allowed)

    def log(self, action: str, details: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.append(self.actor, action, details)


def attach_center_monitor(center: CenterParty, monitor: CenterMonitor) -> None:
    """Configure the center's monitoring context for the bank this party state serves."""
    if not isinstance(monitor, CenterMonitor):
        raise DataValidationError("monitor", "must be a CenterMonitor")
    center.services[SERVICE_KEY] = monitor


def center_monitor(center: CenterParty) -> CenterMonitor:
    """The monitoring context, or a typed error the bank receives as a refusal."""
    monitor = getattr(center, "services", {}).get(SERVICE_KEY)
    if not isinstance(monitor, CenterMonitor):
        raise UnexpectedMessageError(
            "post-loan monitoring is not configured at this credit center for this bank"
        )
    return monitor


# --- protocol ``risk_events`` -----------------------------------------------------------------


def _period(payload: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    if not isinstance(payload, dict) or not {"since", "until"} <= set(payload):
        raise MalformedMessageError(f"{PROTOCOL}: the period needs 'since' and 'until'")
    since = _as_day(payload["since"], "since")
    until = _as_day(payload["until"], "until")
    if until < since:
        raise DataValidationError("until", f"{until.date()} is before since {since.date()}")
    if (until - since).days > MAX_PERIOD_DAYS:
        raise DataValidationError("until", f"a period covers at most {MAX_PERIOD_DAYS} days")
    return since, until


class RiskEventsCenter:
    """The center's half: filters its event records by this bank's monitoring consent."""

    protocol = PROTOCOL

    def __init__(self, center: CenterParty) -> None:
        self.center = center

    def run(self, channel: ProtocolChannel) -> dict[str, Any]:
        monitor = center_monitor(self.center)
        since, until = _period(channel.request("start", {}))
        events = monitor.events
        in_period = events[(events["date"] >= since) & (events["date"] <= until)]
        deliver = self._consented(monitor, in_period)
        consented = monitor.consented_now()
        monitor.log(
            "risk_events_delivered",
            {
                "bank": monitor.bank_id,
                "purpose": MONITORING_PURPOSE,
                "since": str(since.date()),
                "until": str(until.date()),
                "flags": int(len(deliver)),
                "by_type": {t: int((deliver["event_type"] == t).sum()) for t in EVENT_TYPES},
                "flagged_ids_digest": id_digest(deliver["id"]),
                "withheld_no_consent": int(len(in_period) - len(deliver)),
                "consented": len(consented),
            },
        )
        reply = channel.request(
            "flags",
            {
                "since": str(since.date()),
                "until": str(until.date()),
                "ids": deliver["id"].tolist(),
                "types": [EVENT_TYPES.index(t) for t in deliver["event_type"]],
                "dates": [str(pd.Timestamp(d).date()) for d in deliver["date"]],
                "consented": consented,
            },
        )
        if not isinstance(reply, dict) or reply.get("received") != len(deliver):
            raise MalformedMessageError(f"{PROTOCOL}: the bank did not acknowledge every flag")
        return {"flags": int(len(deliver)), "consented": len(consented)}

    @staticmethod
    def _consented(monitor: CenterMonitor, events: pd.DataFrame) -> pd.DataFrame:
        if events.empty:
            return events.reset_index(drop=True)
        events = events.reset_index(drop=True)
        now = monitor.now()
        unique_ids = sorted(set(events["id"]))
        valid_now, _ = monitor.consents.filter(unique_ids, monitor.bank_id, MONITORING_PURPOSE, now)
        valid_now_set = set(valid_now)
        keep = np.zeros(len(events), dtype=bool)
        for day, group in events.groupby("date", sort=True):
            ids = sorted(set(group["id"]) & valid_now_set)
            if not ids:
                continue
            # Start of the event's day, read as China Standard Time by the consent registry.
            at = datetime.combine(pd.Timestamp(day).date(), datetime.min.time())
            valid_then, _ = monitor.consents.filter(ids, monitor.bank_id, MONITORING_PURPOSE, at)
            hit = group["id"].isin(set(valid_then)).to_numpy()
            keep[group.index.to_numpy()[hit]] = True
        out = events[keep]
        return out.sort_values(["date", "event_type", "id"], kind="stable").reset_index(drop=True)


class RiskEventsBank:
    """The bank's half: asks for a period, keeps the flags it receives."""

    protocol = PROTOCOL

    def __init__(self, bank: BankParty, *, since: object, until: object) -> None:
        self.bank = bank
        self.since = _as_day(since, "since")
        self.until = _as_day(until, "until")
        _period({"since": self.since, "until": self.until})  # validate before any message
        self.flags: pd.DataFrame | None = None
        self.consented: list[str] | None = None

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start":
            return {"since": str(self.since.date()), "until": str(self.until.date())}
        if msg_type == "flags":
            flags, consented = self._parse(payload)
            self.flags, self.consented = flags, consented
            return {"received": int(len(flags))}
        raise UnexpectedMessageError(f"{PROTOCOL}: unexpected message {msg_type!r}")

    def _parse(self, payload: Any) -> tuple[pd.DataFrame, list[str]]:
        keys = ("since", "until", "ids", "types", "dates", "consented")
        if not isinstance(payload, dict) or set(payload) != set(keys):
            raise MalformedMessageError(f"{PROTOCOL}/flags: expected exactly {list(keys)}")
        ids, types, dates = payload["ids"], payload["types"], payload["dates"]
        if not all(isinstance(v, list) for v in (ids, types, dates, payload["consented"])):
            raise MalformedMessageError(f"{PROTOCOL}/flags: ids, types, dates must be lists")
        if not len(ids) == len(types) == len(dates):
            raise MalformedMessageError(f"{PROTOCOL}/flags: ids, types, dates differ in length")
        if not all(isinstance(i, str) and i for i in ids + payload["consented"]):
            raise MalformedMessageError(f"{PROTOCOL}/flags: ids must be non-empty text")
        if not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(EVENT_TYPES)
            for t in types
        ):
            raise MalformedMessageError(f"{PROTOCOL}/flags: unknown event type code")
        if payload["since"] != str(self.since.date()) or payload["until"] != str(self.until.date()):
            raise MalformedMessageError(f"{PROTOCOL}/flags: flags are for another period")
        parsed = [_as_day(d, "dates") for d in dates]
        if any(d < self.since or d > self.until for d in parsed):
            raise MalformedMessageError(f"{PROTOCOL}/flags: an event date lies outside the period")
        flags = pd.DataFrame(
            {
                "id": pd.Series(ids, dtype=object),
                "event_type": pd.Series([EVENT_TYPES[t] for t in types], dtype=object),
                "date": pd.Series(parsed, dtype="datetime64[ns]"),
            }
        )
        return flags, list(payload["consented"])


registry.register(
    PROTOCOL,
    center=RiskEventsCenter,
    bank=lambda bank, params: RiskEventsBank(bank, **params),
)


@dataclass(frozen=True)
class RiskEventFlags:
    """What the bank received: the flags and its currently consented monitoring book."""

    flags: pd.DataFrame
    consented: frozenset[str]
    since: pd.Timestamp
    until: pd.Timestamp
    transcript: dict[str, int]


def fetch_risk_events(session: Any, since: object, until: object) -> RiskEventFlags:
    """Run ``risk_events`` for ``[since, until]`` (dates, inclusive) and return the flags."""
    side = RiskEventsBank(session.bank, since=since, until=until)
    mark = session.transcript.mark()
    session.run(side)
    if side.flags is None or side.consented is None:
        raise JointCreditError(f"{PROTOCOL}: the protocol ended without flags")
    return RiskEventFlags(
        flags=side.flags,
        consented=frozenset(side.consented),
        since=side.since,
        until=side.until,
        transcript=session.transcript.since(mark).summary(PROTOCOL),
    )
