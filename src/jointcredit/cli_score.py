"""``jointcredit score``: the monthly pre-authorization run, both parties in one process.

    jointcredit score --model DIR --bank CANDIDATES.csv --center CENTER.csv --id-col id \\
        [--consents CONSENTS.csv --bank-id bank-a] [--policy policy.json] \\
        [--output noise --noise-std 0.1] --out preauth.csv

``DIR`` is what ``jointcredit train`` writes (bank part under ``DIR/bank``, center part under
``DIR/center``). The candidates are aligned with the center's table by PSI, passed through the
center's consent / budget gate, scored under CKKS and decided by the bank's policy. Outputs:

* ``--out``: one row per scored candidate: ``id, pd, score, grade, credit_line, decision,
  reasons``;
* ``<out stem>.excluded.csv``: ``id, reason`` for every candidate not scored;
* ``<out stem>.summary.json``: counts per grade and decision, total lines, exclusions by reason
  and the protocol's cost;
* ``--whitelist``: the pre-authorized enterprises only (best score first).

Wire it in with ``add_score_commands(subparsers)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def _progress(message: str) -> None:
    print(f"[jointcredit {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sibling(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.stem}{suffix}")


def _gate(args: argparse.Namespace, out: Path) -> Any:
    """The credit center's gate for this run (``None`` without a consent file)."""
    from jointcredit.scoring import AuditLog, BudgetLimits, ConsentRegistry, QueryBudget
    from jointcredit.scoring.gate import ScoringGate

    if args.consents is None:
        return None
    audit = AuditLog(args.audit or _sibling(out, ".audit.jsonl"))
    consents = ConsentRegistry.from_csv(args.consents, id_col=args.id_col, audit=audit)
    limits = BudgetLimits(per_day=args.budget_per_day, per_month=args.budget_per_month)
    budget = QueryBudget({args.bank_id: limits}, default=None, audit=audit)
    return ScoringGate(consents, budget, audit)


def cmd_score(args: argparse.Namespace) -> int:
    from jointcredit import workflow
    from jointcredit.scoring.encrypted import CenterScoringPolicy
    from jointcredit.scoring.policy import PreAuthorizationPolicy
    from jointcredit.scoring.preauth import excluded_frame, load_joint_model, preauthorize
    from jointcredit.session import JointSession

    out = Path(args.out)
    policy = PreAuthorizationPolicy.load(args.policy) if args.policy else None
    bank, center = workflow.load_parties(
        args.bank, args.center, id_col=args.id_col, id_kind=args.id_kind, label_col=args.label_col
    )
    session = JointSession.in_process(bank, center)
    _progress(f"aligning {bank.n_rows} candidates with {center.n_rows} enterprises (PSI)")
    workflow.align(session)
    model = load_joint_model(args.model, session)
    gate = _gate(args, out)
    if gate is None:
        _progress(
            "no --consents: the center scores every aligned candidate without a consent check"
        )
    session.center.services["scoring_policy"] = CenterScoringPolicy(
        min_noise_std=args.center_min_noise
    )
    _progress(f"scoring under CKKS ({args.output} output)")
    decisions, summary = preauthorize(
        session,
        model,
        [str(i) for i in bank.ids],
        policy,
        gate,
        bank_id=args.bank_id,
        purpose=args.purpose,
        output=args.output,
        noise_std=args.noise_std,
        n_jobs=args.n_jobs,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    decisions.to_csv(out, index=False, lineterminator="\n")
    excluded_frame(summary).to_csv(_sibling(out, ".excluded.csv"), index=False, lineterminator="\n")
    report = {k: v for k, v in summary.items() if k != "excluded_ids"}
    workflow.write_json(_sibling(out, ".summary.json"), report)
    if args.whitelist:
        from jointcredit.scoring.policy import export_whitelist

        export_whitelist(decisions, args.whitelist)
    proto = summary["protocol"]
    excluded = ", ".join(f"{k} {v}" for k, v in summary["excluded"].items()) or "none"
    print(
        f"scored {summary['scored']} of {summary['requested']} candidates "
        f"(excluded: {excluded}); pre-authorized {summary['pre_authorized']}, total lines "
        f"{summary['total_credit_line']:,} {summary['currency']}; "
        f"{proto['seconds']:.1f} s, {proto['round_trips']} round trips; wrote {out}"
    )
    return 0


def add_score_commands(subparsers: Any) -> None:
    """Add ``score`` to the ``jointcredit`` sub-commands."""
    p = subparsers.add_parser(
        "score", help="encrypted pre-authorization scoring of candidates with a joint model"
    )
    p.add_argument("--model", required=True, help="model directory written by `train`")
    p.add_argument("--bank", required=True, help="bank candidates (CSV): id + bank features")
    p.add_argument("--center", required=True, help="credit-center table (CSV): id, features")
    p.add_argument("--id-col", default="id", help="enterprise id column (default: id)")
    p.add_argument("--id-kind", choices=("uscc", "plain"), default="uscc")
    p.add_argument(
        "--label-col", default=None, help="a label column in CANDIDATES (kept out of the features)"
    )
    p.add_argument(
        "--consents", default=None, help="consents CSV: id, bank, purpose, granted_at, expires_at"
    )
    p.add_argument("--bank-id", default="bank", help="the bank's id in consents and budgets")
    p.add_argument("--purpose", default="pre_authorization")
    p.add_argument("--policy", default=None, help="pre-authorization policy JSON")
    p.add_argument("--output", choices=("exact", "noise"), default="exact")
    p.add_argument("--noise-std", type=float, default=0.0, help="logit units, with --output noise")
    p.add_argument(
        "--center-min-noise",
        type=float,
        default=0.0,
        help="least output noise the center imposes (logit units)",
    )
    p.add_argument("--audit", default=None, help="center audit log (default: <out>.audit.jsonl)")
    p.add_argument("--budget-per-day", type=int, default=100_000)
    p.add_argument("--budget-per-month", type=int, default=500_000)
    p.add_argument("--n-jobs", type=int, default=1, help="bank encryption processes")
    p.add_argument("--whitelist", default=None, help="also write the pre-authorized rows here")
    p.add_argument("--out", required=True, help="decisions CSV")
    p.set_defaults(func=cmd_score)
