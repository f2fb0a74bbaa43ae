"""Center risk events: detection from monthly snapshots and protocol ``risk_events``.

The privacy property under test: flags reach a bank only for enterprises that authorised *that*
bank for ``post_loan_monitoring`` (valid at the event date and when sent), and carry only id,
event type and date.
"""

from __future__ import annotations

import json
import struct
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from jointcredit.data.timeline import make_sme_timeline
from jointcredit.errors import DataValidationError, MalformedMessageError, UnexpectedMessageError
from jointcredit.monitor import (
    EVENT_TYPES,
    CenterMonitor,
    EventRules,
    RiskEventsBank,
    attach_center_monitor,
    detect_events,
    fetch_risk_events,
)
from jointcredit.protocol.envelope import Role
from jointcredit.scoring import AuditLog, ConsentRegistry
from jointcredit.session import JointSession

# --- detection ------------------------------------------------------------------------------


def _snapshot(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    cols = (
        "enforcement_count_3y",
        "dishonest_debtor_flag",
        "consumption_restriction_flag",
        "tax_arrears_months_12m",
        "insured_headcount",
        "electricity_trend_6m",
    )
    base = dict.fromkeys(cols, 0.0) | {"insured_headcount": 10.0, "electricity_trend_6m": 1.0}
    return pd.DataFrame([{"id": k, **base, **v} for k, v in rows.items()])


def test_each_event_type_is_detected_once_at_the_right_month() -> None:
    months = pd.date_range("2025-01-31", periods=6, freq="ME")
    series = {
        "ENF": [{}, {}, {"enforcement_count_3y": 1}, {"enforcement_count_3y": 1},
                {"enforcement_count_3y": 2}, {"enforcement_count_3y": 2}],
        "DIS": [{}, {"dishonest_debtor_flag": 1}] + [{"dishonest_debtor_flag": 1}] * 4,
        "RES": [{}] * 3 + [{"consumption_restriction_flag": 1}] * 3,
        "TAX": [{"tax_arrears_months_12m": v} for v in (0, 1, 2, 3, 4, 5)],
        "HC": [{"insured_headcount": v} for v in (10, 10, 9, 8, 6, 6)],
        "SMALL": [{"insured_headcount": v} for v in (4, 4, 1, 1, 1, 1)],
        "EL": [{"electricity_trend_6m": v} for v in (1.0, 1.0, 0.9, 0.8, 0.65, 0.6)],
        "METER": [{"electricity_trend_6m": v} for v in (1.0, -1.0, -1.0, np.nan, 1.0, -1.0)],
        "CALM": [{}] * 6,
    }  # fmt: skip
    snaps = [(d, _snapshot({k: v[t] for k, v in series.items()})) for t, d in enumerate(months)]
    events = detect_events(snaps)
    got = {(r.id, r.event_type, r.date.strftime("%m")) for r in events.itertuples()}
    assert got == {
        ("ENF", "enforcement_new", "03"),
        ("ENF", "enforcement_new", "05"),
        ("DIS", "dishonest_debtor_listed", "02"),
        ("RES", "consumption_restricted", "04"),
        ("TAX", "tax_arrears", "04"),  # reached 3 months, reported once
        ("HC", "headcount_drop", "05"),  # 6 <= 0.7 * 10 (three months earlier), first time
        ("EL", "electricity_drop", "05"),  # 0.65 <= 0.7 * 1.0, first time
    }
    # SMALL is below the minimum headcount; METER's special codes and NaN never count.
    stricter = detect_events(snaps, EventRules(tax_arrears_months=5, lookback=1))
    assert ("TAX", "tax_arrears") in {(r.id, r.event_type) for r in stricter.itertuples()}
    assert set(stricter.loc[stricter["id"] == "TAX", "date"].dt.month) == {6}


def test_detection_input_checks() -> None:
    a = _snapshot({"X": {}})
    with pytest.raises(DataValidationError) as err:
        detect_events([("2025-02-28", a), ("2025-01-31", a)])
    assert err.value.field == "snapshots"
    with pytest.raises(DataValidationError) as err:
        detect_events([("2025-01-31", a), ("2025-02-28", a.drop(columns="insured_headcount"))])
    assert err.value.field == "insured_headcount"
    with pytest.raises(DataValidationError) as err:
        EventRules(headcount_drop=1.5)
    assert err.value.field == "rules.headcount_drop"
    with pytest.raises(DataValidationError) as err:
        EventRules.from_dict({"lookbak": 2})
    assert err.value.field == "rules.lookbak"
    assert detect_events([("2025-01-31", a)]).empty


# --- protocol ------------------------------------------------------------------------------

SENTINEL = 861_203.8125


@pytest.fixture(scope="module")
def world():
    tl = make_sme_timeline(n_enterprises=3000, n_bank_customers=1500)
    snaps = [(tl.month_dates[m], tl.center_frame(m)) for m in range(tl.n_months)]
    events = detect_events(snaps)
    return tl, events


def _session(tl, keep_bytes: bool = True) -> JointSession:
    bank = tl.bank_table(0)
    center = tl.center_frame(0)
    # A center-only value planted in the table: it must never reach the bank.
    center.loc[center.index[3], "enforcement_amount_3y_10k"] = SENTINEL
    from jointcredit.data.loaders import load_party_table

    session = JointSession.in_process(bank, load_party_table(center), keep_bytes=keep_bytes)
    session.align()
    return session


def _plan(tl, events):
    """Consents covering every case; returns the registry and who should get what."""
    in_both = set(tl.bank_frame(0)["id"]) & set(tl.center_frame(0)["id"])
    flagged = sorted(set(events["id"]) & in_both)
    rng = np.random.default_rng(5)
    rng.shuffle(flagged)
    groups = np.array_split(np.array(flagged, dtype=object), 6)
    valid, other_bank, other_purpose, revoked, late, expired = (list(g) for g in groups)
    consents = ConsentRegistry()
    for e in valid:
        consents.grant(e, "bank-a", "post_loan_monitoring", "2025-01-01", "2026-12-31")
    for e in other_bank:  # consent given to another bank only
        consents.grant(e, "bank-b", "post_loan_monitoring", "2025-01-01", "2026-12-31")
    for e in other_purpose:  # bank-a may score them, not monitor them
        consents.grant(e, "bank-a", "pre_authorization", "2025-01-01", "2026-12-31")
    for e in revoked:
        consents.grant(e, "bank-a", "monitoring", "2025-01-01", "2026-12-31")
        consents.revoke(e, "bank-a", "monitoring", at="2025-11-15")
    for e in late:  # consent starts after some of their events
        consents.grant(e, "bank-a", "monitoring", "2025-07-01", "2026-12-31")
    for e in expired:
        consents.grant(e, "bank-a", "monitoring", "2025-01-01", "2025-06-30")
    return consents, {
        "valid": valid,
        "other_bank": other_bank,
        "other_purpose": other_purpose,
        "revoked": revoked,
        "late": late,
        "expired": expired,
    }


def _expected(events, groups, since, until):
    window = events[(events["date"] >= since) & (events["date"] <= until)]
    ok_valid = window["id"].isin(set(groups["valid"]))
    ok_late = window["id"].isin(set(groups["late"])) & (
        window["date"] >= pd.Timestamp("2025-07-01")
    )
    return window[ok_valid | ok_late]


def _encodings(value: float) -> list[bytes]:
    return [
        struct.pack("<d", value),
        struct.pack(">d", value),
        struct.pack("<f", value),
        struct.pack(">f", value),
        repr(value).encode(),
        int(value * 2**16).to_bytes(8, "little", signed=True),
    ]


def test_flags_reach_only_enterprises_consented_for_monitoring_by_this_bank(world, tmp_path):
    tl, events = world
    session = _session(tl)
    consents, groups = _plan(tl, events)
    audit = AuditLog(tmp_path / "audit.jsonl")
    monitor = CenterMonitor(
        bank_id="bank-a",
        consents=consents,
        events=events,
        audit=audit,
        clock=lambda: datetime(2025, 12, 31, 12),
    )
    attach_center_monitor(session.center, monitor)
    since, until = pd.Timestamp("2025-01-01"), pd.Timestamp("2025-12-31")
    got = fetch_risk_events(session, since, until)

    want = _expected(events, groups, since, until)
    key = ["id", "event_type", "date"]
    assert len(want) > 20
    pd.testing.assert_frame_equal(
        got.flags.sort_values(key).reset_index(drop=True)[key],
        want.sort_values(key).reset_index(drop=True)[key].astype({"date": "datetime64[ns]"}),
        check_dtype=False,
    )
    assert got.consented == frozenset(groups["valid"]) | frozenset(groups["late"])
    assert set(got.flags["event_type"]) <= set(EVENT_TYPES)
    assert got.transcript["round_trips"] == 2

    # Transcript audit: nothing about anyone else, and no center values, ever left the center.
    blob = b"".join(session.transcript.payloads(Role.CENTER, "risk_events"))
    for name in ("other_bank", "other_purpose", "revoked", "expired"):
        for e in groups[name]:
            assert e.encode() not in blob, (name, e)
    for e in set(events["id"]) - {e for g in groups.values() for e in g}:
        assert e.encode() not in blob  # flagged but no consent at all
    for enc in _encodings(SENTINEL):
        assert enc not in blob
    # The bank only ever sent the period it asked for.
    bank_blob = b"".join(session.transcript.payloads(Role.BANK, "risk_events"))
    assert b"2025-01-01" in bank_blob and len(bank_blob) < 200

    # The center's audit line has counts and a digest, no ids.
    (line,) = [e for e in audit.entries() if e.action == "risk_events_delivered"]
    assert line.details["flags"] == len(want)
    assert line.details["consented"] == len(got.consented)
    assert line.details["withheld_no_consent"] == int(
        ((events["date"] >= since) & (events["date"] <= until)).sum() - len(want)
    )
    raw = (tmp_path / "audit.jsonl").read_text()
    assert not any(e in raw for g in groups.values() for e in g)


def test_revocation_stops_delivery_of_older_events(world):
    tl, events = world
    session = _session(tl, keep_bytes=False)
    consents, groups = _plan(tl, events)
    monitor = CenterMonitor(
        bank_id="bank-a", consents=consents, events=events, clock=lambda: datetime(2025, 10, 1)
    )
    attach_center_monitor(session.center, monitor)
    before = fetch_risk_events(session, "2025-01-01", "2025-09-30")
    revoked_events = events[
        events["id"].isin(set(groups["revoked"])) & (events["date"] <= "2025-09-30")
    ]
    assert len(revoked_events) > 0
    assert set(revoked_events["id"]) <= set(before.flags["id"])  # consent still valid on Oct 1
    monitor.clock = lambda: datetime(2025, 12, 1)  # after the revocation on Nov 15
    after = fetch_risk_events(session, "2025-01-01", "2025-09-30")
    assert not set(groups["revoked"]) & set(after.flags["id"])
    assert not set(groups["revoked"]) & after.consented


def test_each_bank_receives_only_its_own_consented_flags(world):
    tl, events = world
    consents, groups = _plan(tl, events)
    received = {}
    for bank in ("bank-a", "bank-b"):
        session = _session(tl, keep_bytes=False)
        attach_center_monitor(
            session.center,
            CenterMonitor(
                bank_id=bank, consents=consents, events=events, clock=lambda: datetime(2025, 12, 31)
            ),
        )
        received[bank] = set(fetch_risk_events(session, "2025-01-01", "2025-12-31").flags["id"])
    assert received["bank-b"] <= set(groups["other_bank"])
    assert received["bank-b"]
    assert not received["bank-a"] & received["bank-b"]


def test_bad_requests_are_refused_before_anything_is_sent(world):
    tl, events = world
    session = _session(tl, keep_bytes=False)
    mark = session.transcript.mark()
    with pytest.raises(DataValidationError) as err:
        fetch_risk_events(session, "2025-06-30", "2025-01-01")
    assert err.value.field == "until"
    with pytest.raises(DataValidationError) as err:
        fetch_risk_events(session, "2024-01-01", "2025-12-31")
    assert err.value.field == "until"
    with pytest.raises(DataValidationError) as err:
        fetch_risk_events(session, "not a date", "2025-12-31")
    assert err.value.field == "since"
    assert session.transcript.mark() == mark
    # A center that has no monitoring configured for this bank refuses.
    with pytest.raises(UnexpectedMessageError):
        fetch_risk_events(session, "2025-01-01", "2025-01-31")


def test_bank_half_rejects_malformed_flags():
    side = RiskEventsBank(None, since="2025-01-01", until="2025-01-31")  # type: ignore[arg-type]
    good = {
        "since": "2025-01-01",
        "until": "2025-01-31",
        "ids": ["A"],
        "types": [0],
        "dates": ["2025-01-31"],
        "consented": ["A"],
    }
    assert side.handle("flags", good) == {"received": 1}
    for change in (
        {"types": [99]},
        {"types": [True]},
        {"dates": ["2025-02-15"]},  # outside the period asked for
        {"ids": ["A", "B"]},
        {"until": "2025-02-28"},
        {"extra": 1},
        {"consented": [""]},
    ):
        with pytest.raises(MalformedMessageError):
            side.handle("flags", {**good, **change})
    with pytest.raises(UnexpectedMessageError):
        side.handle("level", {})


def test_center_monitor_validates_its_configuration():
    with pytest.raises(DataValidationError) as err:
        CenterMonitor(bank_id=" ", consents=ConsentRegistry())
    assert err.value.field == "bank_id"
    with pytest.raises(DataValidationError) as err:
        CenterMonitor(
            bank_id="bank-a",
            consents=ConsentRegistry(),
            events=pd.DataFrame({"id": ["A"], "event_type": ["bankrupt"], "date": ["2025-01-01"]}),
        )
    assert err.value.field == "event_type"
    with pytest.raises(DataValidationError) as err:
        CenterMonitor(bank_id="bank-a", consents=ConsentRegistry(), min_population=0)
    assert err.value.field == "min_population"


# --- the command line: ``jointcredit monitor`` with the center's monitoring configuration -------


def _monitor_cli_setup(tl, tmp_path, month: int):
    """A champion registry, the parties' CSVs at ``month`` and a consent file (see the test)."""
    from jointcredit.monitor import train_champion

    dev = tl.base.bank[["id", "default_12m"]].rename(columns={"default_12m": "default"})
    session = JointSession.in_process(tl.bank_table(0, labels=dev), tl.center_table(0))
    session.align()
    params = {"backend": "plain", "n_estimators": 8, "max_depth": 3, "n_jobs": 1}
    train_champion(tmp_path / "registry", session, params=params, salt="cli-events")
    paths = {"bank": tmp_path / "bank.csv", "center": tmp_path / "center.csv"}
    tl.bank_frame(month).to_csv(paths["bank"], index=False)
    tl.center_frame(month).to_csv(paths["center"], index=False)
    history = []
    for m in range(month - 4, month):  # four earlier month ends: the drop rules look 3 back
        history.append(tmp_path / f"center_{m}.csv")
        tl.center_frame(m).to_csv(history[-1], index=False)
    frames = [(tl.month_dates[m], tl.center_frame(m)) for m in range(month - 4, month + 1)]
    events = detect_events(frames)
    events = events[events["date"] == tl.month_dates[month]]
    aligned = set(session.aligned_ids)
    book = sorted(e for e in tl.book_ids(month) if e in aligned)
    flagged = sorted(set(events["id"]) & set(book))
    quiet = [e for e in book if e not in set(flagged)]
    groups = {
        "valid": flagged[0::3] + quiet[0::2],
        "other_bank": flagged[1::3],
        "other_purpose": flagged[2::3] + quiet[1::4],
    }
    rows = [(e, "bank-a", "post_loan_monitoring") for e in groups["valid"]]
    rows += [(e, "bank-b", "post_loan_monitoring") for e in groups["other_bank"]]
    rows += [(e, "bank-a", "pre_authorization") for e in groups["other_purpose"]]
    consents = pd.DataFrame(rows, columns=["id", "bank", "purpose"])
    consents["granted_at"], consents["expires_at"] = "2025-01-01", "2026-12-31"
    paths["consents"] = tmp_path / "consents.csv"
    consents.to_csv(paths["consents"], index=False)
    paths["book"] = tmp_path / "book.csv"
    pd.DataFrame({"id": book}).to_csv(paths["book"], index=False)
    return paths, history, events, book, groups


def test_monitor_cli_fetches_events_only_for_consented_enterprises(world, tmp_path):
    from jointcredit.cli import main

    tl, _ = world
    month = 5  # the drift month of the documented scenario: plenty of events
    paths, history, events, book, groups = _monitor_cli_setup(tl, tmp_path, month)
    out = tmp_path / "run"
    argv = [
        "monitor", "--model", str(tmp_path / "registry"), "--bank", str(paths["bank"]),
        "--center", str(paths["center"]), "--book", str(paths["book"]),
        "--as-of", str(tl.month_dates[month].date()), "--out", str(out),
        "--consents", str(paths["consents"]), "--bank-id", "bank-a",
    ]  # fmt: skip
    for path in history:
        argv += ["--center-previous", str(path)]
    assert main(argv) == 0

    valid = set(groups["valid"])
    got = pd.read_csv(out / "events.csv", dtype=str)
    want = events[events["id"].isin(valid)]
    assert len(want) >= 5 and len(events) > len(want)  # some flags are withheld
    assert sorted(zip(got["id"], got["event_type"], strict=True)) == sorted(
        zip(want["id"], want["event_type"], strict=True)
    )
    assert set(got["date"]) == {str(tl.month_dates[month].date())}
    # Only the consented part of the book was re-scored; the rest is excluded with the reason.
    table = pd.read_csv(out / "book.csv", dtype={"id": str})
    assert set(table["id"]) == valid
    state = json.loads((out / "state.json").read_text())
    assert state["excluded"] == dict.fromkeys(sorted(set(book) - valid), "no_monitoring_consent")
    flagged = set(table.loc[table["n_events"] > 0, "id"])
    assert flagged == set(want["id"])
    # The center's audit line counts what it withheld and names nobody.
    audit = AuditLog(out / "center_audit.jsonl")
    (line,) = [e for e in audit.entries() if e.action == "risk_events_delivered"]
    assert line.details["flags"] == len(want)
    assert line.details["withheld_no_consent"] == len(events) - len(want)
    raw = (out / "center_audit.jsonl").read_text()
    assert not any(e in raw for e in book)


def test_monitor_cli_refuses_center_events_without_consents(tmp_path, capsys):
    from jointcredit.cli import main

    argv = [
        "monitor", "--model", str(tmp_path / "none"), "--bank", str(tmp_path / "b.csv"),
        "--center", str(tmp_path / "c.csv"), "--book", str(tmp_path / "book.csv"),
        "--as-of", "2025-06-30", "--out", str(tmp_path / "run"),
        "--center-previous", str(tmp_path / "c0.csv"),
    ]  # fmt: skip
    assert main(argv) == 2
    assert "consents" in capsys.readouterr().err
