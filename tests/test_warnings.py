"""Warning rules (red / yellow / green with reasons) and early warning on the drift scenario."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from jointcredit.data.timeline import make_sme_timeline
from jointcredit.errors import DataValidationError, DuplicateIdentifierError
from jointcredit.monitor import (
    CenterMonitor,
    WarningRules,
    attach_center_monitor,
    detect_events,
    evaluate_warnings,
    monitor_book,
    train_champion,
)
from jointcredit.scoring import ConsentRegistry, PreAuthorizationPolicy
from jointcredit.session import JointSession


def _frame(rows):
    return pd.DataFrame(rows, columns=["id", "pd", "grade"])


def test_each_rule_sets_the_documented_status_and_reason() -> None:
    current = _frame(
        [
            ("calm", 0.020, "A"),
            ("level_y", 0.12, "D"),
            ("level_r", 0.25, "E"),
            ("up_y", 0.045, "B"),  # 2.25x since baseline, +0.025
            ("up_r", 0.070, "C"),  # 3.5x since previous, +0.05
            ("tiny", 0.004, "A"),  # 4x, but only +0.003: not a warning
            ("drop_y", 0.030, "C"),  # A -> C: two notches
            ("drop_r", 0.030, "D"),  # A -> D: three notches
            ("one_notch", 0.030, "B"),
            ("ev_r", 0.020, "A"),
            ("ev_y", 0.020, "A"),
        ]
    )
    baseline = _frame(
        [
            ("calm", 0.020, "A"),
            ("up_y", 0.020, "A"),
            ("tiny", 0.001, "A"),
            ("drop_y", 0.025, "A"),
            ("drop_r", 0.026, "A"),
            ("one_notch", 0.025, "A"),
        ]
    )
    previous = _frame([("up_r", 0.020, "B"), ("calm", 0.019, "A")])
    events = pd.DataFrame(
        {
            "id": ["ev_r", "ev_y", "nobody"],
            "event_type": ["dishonest_debtor_listed", "headcount_drop", "enforcement_new"],
            "date": pd.to_datetime(["2025-06-30"] * 3),
        }
    )
    out = evaluate_warnings(current, previous=previous, baseline=baseline, events=events)
    status = dict(zip(out["id"], out["status"], strict=True))
    reasons = dict(zip(out["id"], out["reasons"], strict=True))
    assert status == {
        "calm": "green",
        "level_y": "yellow",
        "level_r": "red",
        "up_y": "yellow",
        "up_r": "red",
        "tiny": "green",
        "drop_y": "yellow",
        "drop_r": "red",
        "one_notch": "green",
        "ev_r": "red",
        "ev_y": "yellow",
    }
    assert reasons["level_r"] == "pd_level:0.250"
    assert reasons["up_y"] == "pd_up:2.2x_since_baseline"
    assert reasons["up_r"].startswith("pd_up:3.5x_since_previous")
    assert "grade_drop:A->D_since_baseline" in reasons["drop_r"]
    assert reasons["ev_r"] == "event:dishonest_debtor_listed@2025-06-30"
    assert reasons["calm"] == "" and reasons["one_notch"] == ""
    assert list(out["id"]) == list(current["id"])  # input order kept
    assert out.loc[out["id"] == "ev_r", "n_events"].item() == 1
    assert np.isnan(out.loc[out["id"] == "level_y", "pd_baseline"].item())


def test_the_most_severe_rule_wins_and_every_reason_is_listed() -> None:
    current = _frame([("x", 0.30, "E")])
    baseline = _frame([("x", 0.02, "A")])
    events = pd.DataFrame(
        {"id": ["x"], "event_type": ["tax_arrears"], "date": pd.to_datetime(["2025-03-31"])}
    )
    out = evaluate_warnings(current, baseline=baseline, events=events)
    assert out["status"].item() == "red"
    parts = out["reasons"].item().split(";")
    assert parts[-1] == "event:tax_arrears@2025-03-31"  # the yellow reason comes last
    assert {p.split(":")[0] for p in parts} == {"pd_level", "pd_up", "grade_drop", "event"}


def test_rules_are_configurable_and_round_trip() -> None:
    current = _frame([("x", 0.05, "B")])
    baseline = _frame([("x", 0.03, "A")])
    assert evaluate_warnings(current, baseline=baseline)["status"].item() == "green"
    strict = WarningRules(pd_ratio_yellow=1.5, pd_min_increase=0.01, grade_drop_yellow=1)
    assert evaluate_warnings(current, baseline=baseline, rules=strict)["status"].item() == "yellow"
    assert WarningRules.from_dict(strict.to_dict()) == strict
    events = pd.DataFrame(
        {"id": ["x"], "event_type": ["electricity_drop"], "date": pd.to_datetime(["2025-03-31"])}
    )
    ignore = WarningRules(yellow_events=("tax_arrears",))
    out = evaluate_warnings(current, events=events, rules=ignore)
    assert out["status"].item() == "green"
    assert out["reasons"].item() == "event:electricity_drop@2025-03-31"  # listed, not escalated


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pd_level_yellow": 0.3, "pd_level_red": 0.2}, "rules.pd_level_red"),
        ({"pd_ratio_yellow": 0.5}, "rules.pd_ratio_yellow"),
        ({"grade_drop_yellow": 0}, "rules.grade_drop_yellow"),
        ({"red_events": ("bankrupt",)}, "rules.red_events"),
        ({"yellow_events": ("enforcement_new",)}, "rules.yellow_events"),
        ({"red_events": "enforcement_new"}, "rules.red_events"),
    ],
)
def test_invalid_rules_are_refused(kwargs, field) -> None:
    with pytest.raises(DataValidationError) as err:
        WarningRules(**kwargs)
    assert err.value.field == field
    with pytest.raises(DataValidationError) as err:
        WarningRules.from_dict({"pd_levle_red": 0.2})
    assert err.value.field == "rules.pd_levle_red"


def test_bad_frames_are_refused() -> None:
    with pytest.raises(DataValidationError) as err:
        evaluate_warnings(_frame([("x", 1.2, "A")]))
    assert err.value.field == "current.pd"
    with pytest.raises(DataValidationError) as err:
        evaluate_warnings(_frame([("x", 0.1, "Z")]))
    assert err.value.field == "current.grade"
    with pytest.raises(DuplicateIdentifierError):
        evaluate_warnings(_frame([("x", 0.1, "A"), ("x", 0.2, "A")]))
    with pytest.raises(DataValidationError) as err:
        evaluate_warnings(_frame([("x", 0.1, "A")]), previous=pd.DataFrame({"id": ["x"]}))
    assert err.value.field == "previous.pd"
    with pytest.raises(DataValidationError) as err:
        evaluate_warnings(
            _frame([("x", 0.1, "A")]),
            events=pd.DataFrame({"id": ["x"], "event_type": ["fire"], "date": ["2025-01-01"]}),
        )
    assert err.value.field == "events.event_type"


# --- early warning on the time-drift scenario -------------------------------------------------

#: Shares documented in docs/lifecycle.md for this test's scenario (seed 2024, drift in month 5,
#: 8,000 enterprises / 4,000 bank customers, 20-tree SecureBoost). The test asserts bounds with
#: room for the generator's noise; docs give the measured values.
MIN_SHARE_DEFAULTERS_FLAGGED = 0.60
MAX_SHARE_NON_DEFAULTERS_FLAGGED = 0.40


def test_defaulters_are_flagged_before_their_default_month(tmp_path) -> None:
    tl = make_sme_timeline(n_enterprises=8000, n_bank_customers=4000)
    dev = tl.base.bank[["id", "default_12m"]].rename(columns={"default_12m": "default"})
    session = JointSession.in_process(tl.bank_table(0, labels=dev), tl.center_table(0))
    session.align()
    params = {"backend": "plain", "n_estimators": 20, "max_depth": 3, "n_jobs": 1}
    train_champion(tmp_path / "registry", session, params=params, salt="test-warnings")
    from jointcredit.monitor import ModelRegistry

    model = ModelRegistry(tmp_path / "registry", create=False).load()
    policy = PreAuthorizationPolicy()
    aligned = list(session.aligned_ids)
    position = {e: i for i, e in enumerate(aligned)}
    candidates = [e for e in tl.book_ids(0) if e in position]
    pds = model.predict_proba(session, np.array([position[e] for e in candidates]))[:, 1]
    decided = policy.decide(candidates, pds)
    book = decided.loc[decided["decision"] == "pre-authorize", "id"].tolist()

    consents = ConsentRegistry()
    for e in book:
        consents.grant(e, "bank-a", "monitoring", "2025-01-01", "2026-12-31")
    snaps = [(tl.month_dates[m], tl.center_frame(m)) for m in range(tl.n_months)]
    monitor = CenterMonitor(bank_id="bank-a", consents=consents, events=detect_events(snaps))
    attach_center_monitor(session.center, monitor)

    runs = []
    flagged: dict[str, list[int]] = {}
    for m in range(tl.n_months):
        tl.refresh(session, m)
        monitor.clock = lambda m=m: datetime.combine(tl.month_dates[m].date(), datetime.max.time())
        live = set(tl.book_ids(m))
        run = monitor_book(
            session,
            model,
            [e for e in book if e in live],
            as_of=tl.month_dates[m],
            since="2025-01-01" if m == 0 else None,
            policy=policy,
            previous=runs[-1] if runs else None,
            baseline=runs[0] if runs else None,
        )
        assert not run.excluded  # everyone in the book consented and is aligned
        runs.append(run)
        if m:
            for e in run.table.loc[run.table["status"] != "green", "id"]:
                flagged.setdefault(e, []).append(m)
    assert runs[0].status_counts()["red"] == 0  # a fresh pre-authorized book starts green

    default_month = tl.truth.set_index("id").loc[book, "default_month"]
    defaulters = default_month[(default_month >= 2) & (default_month <= tl.n_months)]
    early = [e for e, d in defaulters.items() if any(m < d for m in flagged.get(e, []))]
    never = default_month[default_month == 0].index
    false_alarms = [e for e in never if e in flagged]
    share = len(early) / len(defaulters)
    false_share = len(false_alarms) / len(never)
    print(
        f"defaulters {len(defaulters)}, flagged before default {len(early)} ({share:.3f}); "
        f"non-defaulters {len(never)}, ever flagged {len(false_alarms)} ({false_share:.3f})"
    )
    assert len(defaulters) >= 40
    assert share >= MIN_SHARE_DEFAULTERS_FLAGGED
    assert false_share <= MAX_SHARE_NON_DEFAULTERS_FLAGGED
    assert share >= 2 * false_share
