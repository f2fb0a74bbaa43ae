"""Model registry, champion / challenger and retraining, on the time-drift scenario."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from jointcredit.data.timeline import DRIFT_SCENARIO, make_sme_timeline
from jointcredit.errors import DataValidationError
from jointcredit.monitor import (
    CenterMonitor,
    ModelRegistry,
    PromotionRule,
    apply_outcomes,
    attach_center_monitor,
    detect_events,
    monitor_book,
    retrain_model,
    train_champion,
)
from jointcredit.monitor.book import MonitorRun
from jointcredit.protocol.envelope import Role
from jointcredit.report.metrics import auc
from jointcredit.scoring import ConsentRegistry, PreAuthorizationPolicy
from jointcredit.session import JointSession

SB = {"backend": "plain", "n_estimators": 30, "max_depth": 3, "n_jobs": 1}


# --- outcomes -------------------------------------------------------------------------------


def _table(ids):
    from jointcredit.data.loaders import load_party_table

    return load_party_table(
        pd.DataFrame({"id": ids, "x": np.arange(len(ids), dtype=float)}), id_kind="plain"
    )


def test_outcomes_label_the_cohort_observed_at_a_date() -> None:
    table = _table(["a", "b", "c", "d", "e"])
    outcomes = pd.DataFrame(
        {
            "id": ["a", "b", "c", "c", "e"],
            "default_date": ["2025-02-28", "2025-06-30", "2025-09-30", "2025-03-31", "2025-11-30"],
            "reported_date": ["2025-04-30", "2025-08-31", "2025-11-30", "2025-05-31", "2026-01-31"],
        }
    )
    labelled, excluded = apply_outcomes(
        table, outcomes, observed_at="2025-03-31", as_of="2025-12-31"
    )
    # a defaulted before observation: excluded; b after: bad; c's first default (March 31)
    # is on the observation date: excluded; d none: good; e reported after as_of: good.
    assert labelled.y.tolist() == [0, 1, 0, 0, 0]
    assert excluded.tolist() == [True, False, True, False, False]
    assert list(labelled.ids) == list(table.ids)
    assert labelled.schema.label_col == "default"


def test_outcomes_input_checks(tmp_path) -> None:
    table = _table(["a", "b"])
    with pytest.raises(DataValidationError) as err:
        apply_outcomes(table, pd.DataFrame({"id": ["a"]}), observed_at="2025-01-31")
    assert err.value.field == "default_date"
    bad = pd.DataFrame({"id": ["a", "b"], "default_date": ["2025-01-31", "soon"]})
    with pytest.raises(DataValidationError) as err:
        apply_outcomes(table, bad, observed_at="2025-01-31")
    assert err.value.field == "default_date" and "[1]" in err.value.reason
    with pytest.raises(DataValidationError) as err:
        apply_outcomes(table, tmp_path / "missing.csv", observed_at="2025-01-31")
    ok = pd.DataFrame({"id": ["a"], "default_date": ["2025-05-31"]})
    with pytest.raises(DataValidationError) as err:
        apply_outcomes(table, ok, observed_at="2025-03-31", as_of="2025-01-31")
    assert err.value.field == "as_of"


# --- promotion rule -------------------------------------------------------------------------


def _comparison(auc_champ, auc_chal, ks_champ=0.4, ks_chal=0.4, bads=50, win=0.9, shift=0.05):
    return {
        "champion": {"auc": auc_champ, "ks": ks_champ, "bads": bads},
        "challenger": {"auc": auc_chal, "ks": ks_chal, "bads": bads},
        "bootstrap_win": win,
        "score_stability": shift,
    }


def test_promotion_rule_requires_every_check() -> None:
    rule = PromotionRule()
    assert rule.decide(_comparison(0.75, 0.78))["promote"]
    for comparison, failed in (
        (_comparison(0.75, 0.752), "auc_gain"),
        (_comparison(0.75, 0.78, ks_chal=0.38), "ks_change"),
        (_comparison(0.75, 0.78, bads=12), "holdout_bads"),
        (_comparison(0.75, 0.78, win=0.6), "bootstrap_win"),
    ):
        decision = rule.decide(comparison)
        assert not decision["promote"]
        assert [c["check"] for c in decision["checks"] if not c["passed"]] == [failed]
        assert decision["reason"] == f"failed: {failed}"
    capped = PromotionRule(max_score_stability=0.1)
    assert not capped.decide(_comparison(0.75, 0.78, shift=0.3))["promote"]
    with pytest.raises(DataValidationError) as err:
        PromotionRule(min_bootstrap_win=1.5)
    assert err.value.field == "rule.min_bootstrap_win"


# --- the time-drift scenario: a 12-month cycle --------------------------------------------------


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    """Champion at month 0, 12 monitoring runs, retrain at month 11 (see docs/lifecycle.md)."""
    root = tmp_path_factory.mktemp("cycle")
    tl = make_sme_timeline(n_enterprises=8_000, n_bank_customers=4_000)
    dev = tl.base.bank[["id", "default_12m"]].rename(columns={"default_12m": "default"})
    session = JointSession.in_process(
        tl.bank_table(0, labels=dev), tl.center_table(0), keep_bytes=True
    )
    session.align()
    registry_dir = root / "registry"
    first = train_champion(registry_dir, session, params=SB, salt="test-lifecycle")

    # Month 0: the champion pre-authorizes; those enterprises form the monitored book.
    policy = PreAuthorizationPolicy()
    position = {e: i for i, e in enumerate(session.aligned_ids)}
    candidates = [e for e in tl.book_ids(0) if e in position]
    champion = ModelRegistry(registry_dir, create=False).load()
    pds = champion.predict_proba(session, np.array([position[e] for e in candidates]))[:, 1]
    decided = policy.decide(candidates, pds)
    book = decided.loc[decided["decision"] == "pre-authorize", "id"].tolist()
    consents = ConsentRegistry()
    for e in book:
        consents.grant(e, "bank-a", "monitoring", "2025-01-01", "2026-12-31")
    snaps = [(tl.month_dates[m], tl.center_frame(m)) for m in range(tl.n_months)]
    labels = [str(d.to_period("M")) for d in tl.month_dates]
    monitor = CenterMonitor(
        bank_id="bank-a",
        consents=consents,
        events=detect_events(snaps),
        snapshots={labels[m]: frame for m, (_, frame) in enumerate(snaps)},
    )
    attach_center_monitor(session.center, monitor)
    runs: list[MonitorRun] = []
    for m in range(tl.n_months):
        tl.refresh(session, m)
        monitor.clock = lambda m=m: datetime.combine(tl.month_dates[m].date(), datetime.max.time())
        live = set(tl.book_ids(m))
        runs.append(
            monitor_book(
                session,
                registry_dir,
                [e for e in book if e in live],
                as_of=tl.month_dates[m],
                since="2025-01-01" if m == 0 else None,
                policy=policy,
                previous=runs[-1] if runs else None,
                baseline=runs[0] if runs else None,
                center_months=(labels[m - 1], labels[m]) if m else None,
            )
        )

    obs, last = 3, tl.n_months - 1
    tl.refresh(session, obs)
    outcomes = tl.outcomes_known(last, include_development=True)
    path = root / "new_outcomes.csv"
    outcomes[["id", "default_date", "reported_date"]].to_csv(path, index=False)
    mark = session.transcript.mark()
    result = retrain_model(
        registry_dir, session, path, observed_at=tl.month_dates[obs], as_of=tl.month_dates[last]
    )
    retrain_part = session.transcript.since(mark)
    return {
        "tl": tl,
        "session": session,
        "registry_dir": registry_dir,
        "first": first,
        "runs": runs,
        "result": result,
        "outcomes": outcomes,
        "retrain_transcript": retrain_part,
    }


def test_challenger_with_new_outcomes_beats_the_stale_champion(cycle) -> None:
    result = cycle["result"]
    champ, chal = result["comparison"]["champion"], result["comparison"]["challenger"]
    print(json.dumps(result["comparison"], indent=1))
    assert chal["auc"] > champ["auc"] + PromotionRule().min_auc_gain
    assert result["comparison"]["bootstrap_win"] >= PromotionRule().min_bootstrap_win
    assert result["promoted"] and result["new_champion"] == result["challenger"] == "v0002"
    assert result["excluded"]["defaulted_before_observation"] > 0  # dev-vintage defaulters
    # the challenger is the warm-started one: the champion's trees plus new ones
    assert result["warm_started_from"] == "v0001"

    # The later holdout (simulation truth): features at month 11, defaults in the next year.
    tl, session = cycle["tl"], cycle["session"]
    registry = ModelRegistry(cycle["registry_dir"], create=False)
    tl.refresh(session, 11)
    aligned = session.aligned_ids
    truth = tl.outcome_labels(23, 11, window=12).set_index("id")["default"]
    hold = registry.holdout_mask(aligned)
    rows = np.array([i for i, e in enumerate(aligned) if hold[i] and e in truth.index])
    y = truth.loc[aligned[rows]].to_numpy()
    later = {
        v: auc(y, registry.load(v).predict_proba(session, rows)[:, 1]) for v in ("v0001", "v0002")
    }
    print("later holdout", int(y.sum()), "bads", later)
    assert y.sum() >= 30
    assert later["v0002"] > later["v0001"]


def test_registry_records_versions_parents_and_fingerprints(cycle) -> None:
    registry = ModelRegistry(cycle["registry_dir"], create=False)
    assert registry.versions() == ["v0001", "v0002"]
    assert registry.champion == "v0002"
    first, second = registry.meta("v0001"), registry.meta("v0002")
    assert first["parent"] is None and second["parent"] == "v0001"
    assert first["kind"] == second["kind"] == "secureboost"
    assert second["params"] == SB
    assert second["warm_start"] == f"warm start from {first['model_id']}"
    assert first["warm_started_from"] is None and second["warm_started_from"] == "v0001"
    champion, challenger = registry.load("v0001"), registry.load("v0002")
    assert challenger.n_estimators_ == champion.n_estimators_ + SB["n_estimators"]
    assert challenger.model_.trees[: champion.n_estimators_] == champion.model_.trees
    fp = second["fingerprints"]
    assert fp["observed_at"] == "2025-04-30" and fp["as_of"] == "2025-12-31"
    assert len(fp["train_ids"]) == len(fp["holdout_ids"]) == len(fp["outcomes"]) == 64
    assert fp["bank_schema"] == first["fingerprints"]["bank_schema"]
    assert [h["action"] for h in registry.history] == [
        "registered",
        "promoted",
        "registered",
        "promoted",
    ]
    # Fingerprints, not data: no enterprise id and no outcome date is stored anywhere.
    stored = "".join(
        p.read_text() for p in cycle["registry_dir"].rglob("*.json") if "center" not in p.parts
    )
    for e in cycle["outcomes"]["id"].head(100):
        assert e not in stored
    # Every version is evaluated on ids it never trained on: the holdout partition is fixed.
    assert fp["holdout_ids"] != first["fingerprints"]["holdout_ids"]  # other rows, same partition
    aligned = cycle["session"].aligned_ids
    assert registry.holdout_mask(aligned).mean() == pytest.approx(0.3, abs=0.03)
    again = ModelRegistry(cycle["registry_dir"], create=False)
    assert (again.holdout_mask(aligned) == registry.holdout_mask(aligned)).all()


def test_score_stability_flags_the_drift_month_and_not_the_stable_ones(cycle) -> None:
    runs, drift = cycle["runs"], DRIFT_SCENARIO["drift_month"]
    vs_prev = [r.score_stability["vs_previous"] for r in runs[1:]]
    vs_base = [r.score_stability["vs_baseline"] for r in runs[1:]]
    print("vs previous", np.round(vs_prev, 3), "vs baseline", np.round(vs_base, 3))
    assert [m for m, v in enumerate(vs_prev, start=1) if v >= 0.1] == [drift]
    assert all((v >= 0.1) == (m >= drift) for m, v in enumerate(vs_base, start=1))
    # The center's feature stability (computed at the center) agrees.
    center = [r.center_feature_stability["stability"].max() for r in runs[1:]]
    assert [m for m, v in enumerate(center, start=1) if v >= 0.1] == [drift]
    # Grade migration against the previous run is recorded.
    assert runs[drift].migration().to_numpy().sum() == len(runs[drift].table)


def test_retrain_transcript_carries_no_outcome_information(cycle) -> None:
    part = cycle["retrain_transcript"]
    blob = b"".join(part.payloads(Role.BANK)) + b"".join(part.payloads(Role.CENTER))
    dates = {str(pd.Timestamp(d).date()) for d in cycle["outcomes"]["default_date"]}
    for text in dates:
        assert text.encode() not in blob
    # The retrain ran joint training and joint scoring only (no new protocol of its own).
    assert {e.protocol for e in part.entries} == {"secureboost", "secureboost_predict"}


def test_monitoring_run_round_trips_through_its_state_folder(cycle, tmp_path) -> None:
    run = cycle["runs"][6]
    run.save(tmp_path / "run")
    again = MonitorRun.load(tmp_path / "run")
    assert again.summary() == run.summary()
    pd.testing.assert_frame_equal(
        again.table[["id", "status", "grade"]], run.table[["id", "status", "grade"]]
    )
    assert again.score_reference == run.score_reference


def test_retrain_refuses_without_champion_or_labels(tmp_path) -> None:
    tl = make_sme_timeline(n_enterprises=1200, n_bank_customers=600)
    session = JointSession.in_process(tl.bank_table(0), tl.center_table(0))
    session.align()
    with pytest.raises(DataValidationError) as err:
        retrain_model(tmp_path / "none", session)
    assert err.value.field == str(tmp_path / "none")
    ModelRegistry(tmp_path / "empty")
    with pytest.raises(DataValidationError) as err:
        retrain_model(tmp_path / "empty", session)
    assert err.value.field == "registry_dir"
    with pytest.raises(DataValidationError) as err:
        train_champion(tmp_path / "reg", session, params=SB)
    assert err.value.field == "outcomes"  # the bank table has no labels
    with pytest.raises(DataValidationError) as err:
        train_champion(tmp_path / "reg", session, outcomes=tl.outcomes_known(11))
    assert err.value.field == "observed_at"
    with pytest.raises(DataValidationError) as err:
        train_champion(tmp_path / "reg2", session, kind="forest")
    assert err.value.field == "kind"
    assert ModelRegistry(tmp_path / "reg2").versions() == []


def test_linear_models_go_through_the_same_lifecycle(tmp_path) -> None:
    tl = make_sme_timeline(n_enterprises=4000, n_bank_customers=2000)
    dev = tl.base.bank[["id", "default_12m"]].rename(columns={"default_12m": "default"})
    session = JointSession.in_process(tl.bank_table(0, labels=dev), tl.center_table(0))
    session.align()
    first = train_champion(
        tmp_path / "reg", session, kind="logistic", params={"backend": "plain"}, salt="lr"
    )
    tl.refresh(session, 3)

    def retrain(**options):
        return retrain_model(
            tmp_path / "reg",
            session,
            tl.outcomes_known(11, include_development=True),
            observed_at=tl.month_dates[3],
            as_of=tl.month_dates[11],
            rule=PromotionRule(min_holdout_bads=10),
            **options,
        )

    result = retrain()
    registry = ModelRegistry(tmp_path / "reg", create=False)
    assert registry.meta("v0002")["estimator"] == "HeteroLogisticRegression"
    assert result["challenger"] == "v0002" and first["version"] == "v0001"
    assert registry.champion == ("v0002" if result["promoted"] else "v0001")
    assert result["warm_started_from"] == "v0001"  # from the champion's coefficients
    assert registry.meta("v0002")["warm_start"].startswith("warm start from lr-")
    # --no-warm-start: the next challenger starts from scratch, still with the champion as parent
    champion = registry.champion
    cold = retrain(warm_start=False)
    assert cold["challenger"] == "v0003" and cold["warm_started_from"] is None
    meta = registry.meta("v0003")
    assert (
        meta["parent"] == champion and meta["warm_start"] == "trained from scratch (warm start off)"
    )
    with pytest.raises(DataValidationError) as err:
        retrain(warm_start="yes")
    assert err.value.field == "warm_start"
    # A fresh in-process session (new center party) gets the center's parts from the
    # registry's simulated center store, and the loaded champion scores there.
    fresh = JointSession.in_process(tl.bank_table(3), tl.center_table(3))
    fresh.align()
    registry.ensure_center_part(fresh, registry.champion)
    p = registry.load().predict_proba(fresh, np.arange(50))[:, 1]
    assert ((p > 0) & (p < 1)).all()


def test_monitoring_excludes_unaligned_and_unconsented_enterprises(cycle) -> None:
    tl, session = cycle["tl"], cycle["session"]
    aligned = set(session.aligned_ids)
    consented = set(cycle["runs"][0].table["id"])
    outside = next(e for e in tl.bank_frame(0)["id"] if e not in aligned)
    no_consent = next(e for e in session.aligned_ids if e not in consented)
    some = sorted(consented)[:40]
    run = monitor_book(
        session,
        cycle["registry_dir"],
        [*some, outside, no_consent],
        as_of=tl.month_dates[11],
        since=tl.month_dates[10] + pd.Timedelta(days=1),
    )
    assert run.excluded == {outside: "not_aligned", no_consent: "no_monitoring_consent"}
    assert sorted(run.table["id"]) == some
    assert set(run.table["status"]) <= {"green", "yellow", "red"}
    with pytest.raises(DataValidationError) as err:
        monitor_book(session, cycle["registry_dir"], some, as_of="2025-12-31", fetch_events=False)
    assert err.value.field == "require_consent"
    with pytest.raises(DataValidationError) as err:
        monitor_book(session, cycle["registry_dir"], [*some, some[0]], as_of="2025-12-31")
    assert err.value.field == "book.id"


def test_retrain_cli_warm_starts_by_default_and_records_the_parent(tmp_path, capsys) -> None:
    from jointcredit.cli import main

    tl = make_sme_timeline(n_enterprises=3000, n_bank_customers=1500)
    tl.bank_frame(3).to_csv(tmp_path / "bank.csv", index=False)  # no label column: outcomes
    tl.center_frame(3).to_csv(tmp_path / "center.csv", index=False)
    outcomes = tl.outcomes_known(11, include_development=True)
    outcomes[["id", "default_date", "reported_date"]].to_csv(tmp_path / "out.csv", index=False)
    params = json.dumps({"backend": "plain", "n_estimators": 4, "max_depth": 2, "n_jobs": 1})
    base = [
        "retrain", "--registry", str(tmp_path / "reg"), "--bank", str(tmp_path / "bank.csv"),
        "--center", str(tmp_path / "center.csv"), "--outcomes", str(tmp_path / "out.csv"),
        "--observed-at", str(tl.month_dates[3].date()), "--as-of", str(tl.month_dates[11].date()),
    ]  # fmt: skip
    assert main([*base, "--params", params]) == 0  # no champion yet: trains v0001
    assert main([*base, "--out", str(tmp_path / "decision.json")]) == 0
    champion = ModelRegistry(tmp_path / "reg", create=False).champion  # v0002 if promoted
    assert main([*base, "--no-warm-start"]) == 0
    registry = ModelRegistry(tmp_path / "reg", create=False)
    metas = [registry.meta(v) for v in ("v0001", "v0002", "v0003")]
    assert [m["warm_started_from"] for m in metas] == [None, "v0001", None]
    assert [m["parent"] for m in metas] == [None, "v0001", champion]
    assert metas[2]["warm_start"] == "trained from scratch (warm start off)"
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["warm_started_from"] == "v0001" and decision["challenger"] == "v0002"
    assert "warm start from" in capsys.readouterr().out
    # the warm-started challenger holds the champion's 4 trees and 4 new ones
    assert registry.load("v0002").n_estimators_ == 8 and registry.load("v0003").n_estimators_ == 4
