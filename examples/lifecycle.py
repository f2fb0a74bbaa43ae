"""A 12-month model lifecycle on the drift scenario, in one process (see docs/lifecycle.md).

    /tmp/venv/bin/python examples/lifecycle.py --out lifecycle-demo

Month 0: align, train the champion (joint SecureBoost) on the development vintage, pre-authorize
the book and record the baseline monitoring run. Months 1-11: both parties refresh their data,
the bank re-scores its book, receives the center's risk-event flags and the center's feature
stability, and gets red / yellow / green warnings. Month 11: retrain on the outcomes known by
then (a challenger warm-started from the champion: its trees plus new ones) and let the
promotion rule decide; for comparison, a challenger trained from scratch on the same rows is
scored as well (in a copy of the registry). Writes ``summary.json``, one folder per monitoring
run, the model registry, and ``score_distribution.png``.

Both parties live in this process for the simulation; every exchange between them still goes
through the protocols and is recorded in the session transcript.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.data.timeline import DRIFT_SCENARIO, make_sme_timeline
from jointcredit.monitor import (
    CenterMonitor,
    MonitorRun,
    attach_center_monitor,
    detect_events,
    monitor_book,
    retrain_model,
    train_champion,
)
from jointcredit.report.metrics import auc
from jointcredit.scoring import ConsentRegistry, PreAuthorizationPolicy
from jointcredit.session import JointSession

BANK = "bank-a"
MODEL_PARAMS = {"backend": "plain", "n_estimators": 30, "max_depth": 3, "n_jobs": 1}


def run_cycle(
    out: Path,
    *,
    n_enterprises: int = 12_000,
    n_bank_customers: int = 6_000,
    seed: int = DRIFT_SCENARIO["seed"],
    drift_month: int | None = DRIFT_SCENARIO["drift_month"],
    retrain_obs_month: int = 3,
    consent_share: float = 0.95,
    model_params: dict[str, Any] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Run the whole cycle; return the figures docs/lifecycle.md reports."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("registry", "registry-scratch", "runs"):  # this example's earlier output
        shutil.rmtree(out / stale, ignore_errors=True)
    t0 = time.perf_counter()
    tl = make_sme_timeline(
        seed=seed,
        drift_month=drift_month,
        n_enterprises=n_enterprises,
        n_bank_customers=n_bank_customers,
    )
    n_months = tl.n_months
    last = n_months - 1
    months = [str(d.to_period("M")) for d in tl.month_dates]

    # --- the credit center's side: consents, event records, monthly snapshots -------------
    dev = tl.base.bank[["id", "default_12m"]].rename(columns={"default_12m": "default"})
    session = JointSession.in_process(tl.bank_table(0, labels=dev), tl.center_table(0))
    session.align()
    aligned = set(session.aligned_ids)
    rng = np.random.default_rng(seed)
    candidates = [e for e in tl.book_ids(0) if e in aligned]
    consents = ConsentRegistry()
    start = tl.month_dates[0].to_period("M").to_timestamp()
    snapshots = [(tl.month_dates[m], tl.center_frame(m)) for m in range(n_months)]
    events = detect_events(snapshots)
    monitor = CenterMonitor(
        bank_id=BANK,
        consents=consents,
        events=events,
        snapshots={months[m]: frame for m, (_, frame) in enumerate(snapshots)},
        clock=lambda: tl.month_dates[0],
    )
    attach_center_monitor(session.center, monitor)

    # --- month 0: champion on the development vintage -------------------------------------
    registry_dir = out / "registry"
    params = dict(model_params or MODEL_PARAMS)
    champ = train_champion(
        registry_dir, session, kind="secureboost", params=params, salt="lifecycle-example"
    )
    log(f"champion {champ['version']}: holdout AUC {champ['metrics']['holdout']['auc']:.4f}")
    model = registry_dir  # monitor_book loads the champion from the registry
    policy = PreAuthorizationPolicy()

    # --- month 0: pre-authorize; the enterprises that take the line consent to monitoring ----
    pds = registry_load(registry_dir).predict_proba(session, _rows(session, candidates))[:, 1]
    decisions = policy.decide(candidates, pds)
    book0 = decisions.loc[decisions["decision"] == "pre-authorize", "id"].tolist()
    for e in book0:
        if rng.random() < consent_share:
            consents.grant(e, BANK, "post_loan_monitoring", start, start + pd.DateOffset(years=2))
    log(
        f"timeline: {len(tl.truth)} enterprises, {len(candidates)} aligned live customers, "
        f"{len(book0)} pre-authorized; {len(events)} center events over {n_months} months"
    )

    runs: list[MonitorRun] = []
    stability_rows = []
    for m in range(n_months):
        tl.refresh(session, m)
        monitor.clock = lambda m=m: tl.month_dates[m] + pd.Timedelta(hours=23)
        book = [e for e in tl.book_ids(m) if e in set(book0)]
        run = monitor_book(
            session,
            model,
            book,
            as_of=tl.month_dates[m],
            since=None if m else tl.month_dates[0].to_period("M").to_timestamp(),
            policy=policy,
            previous=runs[-1] if runs else None,
            baseline=runs[0] if runs else None,
            center_months=(months[m - 1], months[m]) if m else None,
        )
        run.save(out / "runs" / months[m])
        runs.append(run)
        cfs = run.center_feature_stability
        stability_rows.append(
            {
                "month": m,
                "label": months[m],
                "score_vs_previous": run.score_stability["vs_previous"],
                "score_vs_baseline": run.score_stability["vs_baseline"],
                "max_center_feature": None if cfs is None else float(cfs["stability"].max()),
                "max_center_feature_name": None if cfs is None else str(cfs["feature"].iloc[0]),
                "max_bank_feature_vs_previous": None
                if m == 0
                else float(run.bank_feature_stability["vs_previous"].max()),
                **{f"n_{k}": v for k, v in run.status_counts().items()},
            }
        )
        log(
            f"{months[m]}: {len(run.table)} monitored, status {run.status_counts()}, score "
            f"stability vs previous {_fmt(run.score_stability['vs_previous'])} "
            f"vs baseline {_fmt(run.score_stability['vs_baseline'])}"
        )

    # --- early warning before default -------------------------------------------------------
    early = _early_warning(tl, runs, book0)
    log(f"early warning: {early}")

    # --- month 11: retrain on the outcomes known by then -----------------------------------
    obs = retrain_obs_month
    tl.refresh(session, obs)
    outcomes = tl.outcomes_known(last, include_development=True)
    outcomes_path = out / "new_outcomes.csv"
    outcomes[["id", "default_date", "reported_date"]].to_csv(outcomes_path, index=False)
    scratch_dir = out / "registry-scratch"  # the same registry, for a from-scratch challenger
    shutil.copytree(registry_dir, scratch_dir)
    retrains = {}
    for name, directory, warm in (("warm", registry_dir, True), ("scratch", scratch_dir, False)):
        retrains[name] = retrain_model(
            directory,
            session,
            outcomes_path,
            observed_at=tl.month_dates[obs],
            as_of=tl.month_dates[last],
            warm_start=warm,
        )
        r = retrains[name]
        log(
            f"retrain ({r['warm_start']}): champion {r['champion']} AUC "
            f"{r['comparison']['champion']['auc']:.4f} vs challenger {r['challenger']} AUC "
            f"{r['comparison']['challenger']['auc']:.4f} -> promoted: {r['promoted']}"
        )
    retrain = retrains["warm"]

    # later holdout (simulation truth): features at the last month, defaults in the next 12
    later = _later_holdout(tl, session, registry_dir, retrain, last)
    scratch = _later_holdout(tl, session, scratch_dir, retrains["scratch"], last)
    later["scratch_challenger_auc"] = scratch["challenger_auc"]
    log(f"later holdout: {later}")

    stability = pd.DataFrame(stability_rows)
    stability.to_csv(out / "stability.csv", index=False)
    _plot(runs, months, tl.drift_month, out / "score_distribution.png")
    summary = {
        "scenario": {"seed": seed, "drift_month": drift_month, "lag": tl.lag,
                     "n_enterprises": n_enterprises, "n_bank_customers": n_bank_customers},
        "champion": champ,
        "early_warning": early,
        "stability": stability_rows,
        "retrain": retrain,
        "retrain_from_scratch": retrains["scratch"],
        "later_holdout": later,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def registry_load(registry_dir: Path) -> Any:
    from jointcredit.monitor import ModelRegistry

    return ModelRegistry(registry_dir, create=False).load()


def _rows(session: Any, ids: list[str]) -> np.ndarray:
    position = {e: i for i, e in enumerate(session.aligned_ids)}
    return np.array([position[e] for e in ids], dtype=np.int64)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _early_warning(tl: Any, runs: list[MonitorRun], book0: list[str]) -> dict[str, Any]:
    """Share of later defaulters flagged yellow/red at a run before their default month."""
    truth = tl.truth.set_index("id")
    flagged_at: dict[str, list[int]] = {}
    for m, run in enumerate(runs):
        if m == 0:
            continue  # the origination run has nothing to compare with
        hot = run.table.loc[run.table["status"] != "green", "id"]
        for e in hot:
            flagged_at.setdefault(str(e), []).append(m)
    last = len(runs) - 1
    d = truth.loc[book0, "default_month"]
    defaulters = d[(d >= 2) & (d <= last + 1)]
    early = [e for e, dm in defaulters.items() if any(m < dm for m in flagged_at.get(e, []))]
    never = d[d == 0].index
    false_alarms = [e for e in never if flagged_at.get(e)]
    return {
        "defaulters": int(len(defaulters)),
        "flagged_before_default": int(len(early)),
        "share_flagged_before_default": round(len(early) / max(1, len(defaulters)), 4),
        "non_defaulters": int(len(never)),
        "non_defaulters_flagged": int(len(false_alarms)),
        "share_non_defaulters_flagged": round(len(false_alarms) / max(1, len(never)), 4),
    }


def _later_holdout(
    tl: Any, session: Any, registry_dir: Path, retrain: dict[str, Any], month: int
) -> dict[str, Any]:
    from jointcredit.monitor import ModelRegistry

    registry = ModelRegistry(registry_dir, create=False)
    tl.refresh(session, month)
    aligned = session.aligned_ids
    hold = registry.holdout_mask(aligned)
    labels = tl.outcome_labels(month + 12, month, window=12)
    lab = labels.set_index("id")["default"]
    rows = np.array([i for i, e in enumerate(aligned) if hold[i] and e in lab.index])
    y = lab.loc[aligned[rows]].to_numpy()
    out: dict[str, Any] = {"n": int(rows.size), "bads": int(y.sum())}
    for name in ("champion", "challenger"):
        version = retrain[name]
        registry.ensure_center_part(session, version)
        p = registry.load(version).predict_proba(session, rows)[:, 1]
        out[f"{name}_auc"] = round(float(auc(y, p)), 4)
    return out


def _plot(runs: list[MonitorRun], months: list[str], drift: int | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    data = [run.table["score"].to_numpy() for run in runs]
    parts = ax1.violinplot(data, positions=range(len(runs)), showmedians=True, widths=0.8)
    for i, body in enumerate(parts["bodies"]):
        body.set_alpha(0.6 if drift is None or i < drift else 0.9)
    ax1.set_xticks(range(len(runs)), months, rotation=45, ha="right")
    ax1.set_ylabel("score (higher = safer)")
    ax1.set_title("Score distribution of the monitored book by month")
    if drift is not None:
        ax1.axvline(drift - 0.5, color="crimson", ls="--", lw=1)
        ax1.text(drift - 0.45, ax1.get_ylim()[1], " drift", color="crimson", va="top")
    prev = [
        np.nan if r.score_stability["vs_previous"] is None else r.score_stability["vs_previous"]
        for r in runs
    ]  # noqa: E501
    base = [
        np.nan if r.score_stability["vs_baseline"] is None else r.score_stability["vs_baseline"]
        for r in runs
    ]  # noqa: E501
    ax2.plot(range(len(runs)), prev, "o-", label="vs previous month")
    ax2.plot(range(len(runs)), base, "s-", label="vs month 0")
    ax2.axhline(0.1, color="orange", ls=":", lw=1, label="0.1 monitor")
    ax2.axhline(0.25, color="crimson", ls=":", lw=1, label="0.25 redevelop")
    ax2.set_xticks(range(len(runs)), months, rotation=45, ha="right")
    ax2.set_title("Population stability of the score")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lifecycle-demo")
    parser.add_argument("--n-enterprises", type=int, default=12_000)
    parser.add_argument("--n-bank-customers", type=int, default=6_000)
    parser.add_argument("--seed", type=int, default=DRIFT_SCENARIO["seed"])
    parser.add_argument("--plot", default=None, help="also copy the plot here")
    args = parser.parse_args()
    summary = run_cycle(
        Path(args.out),
        n_enterprises=args.n_enterprises,
        n_bank_customers=args.n_bank_customers,
        seed=args.seed,
    )
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(args.out) / "score_distribution.png", args.plot)
    print(json.dumps({k: summary[k] for k in ("early_warning", "later_holdout", "seconds")}))


if __name__ == "__main__":
    main()
