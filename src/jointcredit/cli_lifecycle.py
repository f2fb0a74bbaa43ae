"""``jointcredit retrain`` and ``jointcredit monitor``: the model lifecycle from the command line.

Both run the two parties in one process (as ``train`` does); in a deployment the same protocol
halves run over the credit center's Flower server.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jointcredit.cli_common import add_party_args, progress


def cmd_retrain(args: argparse.Namespace) -> int:
    from jointcredit import workflow
    from jointcredit.monitor.lifecycle import ModelRegistry, retrain_model, train_champion
    from jointcredit.session import JointSession

    bank, center = workflow.load_parties(
        args.bank, args.center, id_col=args.id_col, id_kind=args.id_kind, label_col=args.label_col
    )
    session = JointSession.in_process(bank, center)
    progress("aligning enterprise ids (PSI)")
    session.align()
    registry = Path(args.registry)
    has_champion = (registry / "registry.json").exists() and ModelRegistry(
        registry, create=False
    ).champion is not None
    params = json.loads(args.params) if args.params else None
    if not has_champion:
        progress(f"no champion in {registry}: training the first {args.kind} model")
        result = train_champion(
            registry, session, kind=args.kind, params=params, outcomes=args.outcomes,
            observed_at=args.observed_at, as_of=args.as_of,
        )  # fmt: skip
        print(f"registered {result['version']} as champion in {registry}")
    else:
        progress("training a challenger on the enlarged outcome set")
        result = retrain_model(
            registry, session, args.outcomes, observed_at=args.observed_at, as_of=args.as_of,
            params=params,
        )  # fmt: skip
        verdict = "PROMOTED" if result["promoted"] else "kept champion"
        cmp = result["comparison"]
        print(
            f"challenger {result['challenger']} vs champion {result['champion']}: {verdict} "
            f"(holdout AUC {cmp['challenger']['auc']:.4f} vs {cmp['champion']['auc']:.4f})"
        )
    if args.out:
        workflow.write_json(Path(args.out), result)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import pandas as pd

    from jointcredit import workflow
    from jointcredit.monitor.book import MonitorRun, monitor_book
    from jointcredit.session import JointSession

    bank, center = workflow.load_parties(
        args.bank, args.center, id_col=args.id_col, id_kind=args.id_kind
    )
    session = JointSession.in_process(bank, center)
    progress("aligning enterprise ids (PSI)")
    session.align()
    book = pd.read_csv(args.book, dtype=str)[args.id_col].tolist()
    previous = MonitorRun.load(Path(args.previous)) if args.previous else None
    progress(f"re-scoring {len(book)} enterprises of the book")
    run = monitor_book(
        session, Path(args.model), book, as_of=args.as_of, previous=previous,
        fetch_events=False, require_consent=False,
    )  # fmt: skip
    out = Path(args.out)
    run.save(out)
    counts = run.status_counts()
    print(
        f"book of {len(book)}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f"; score stability {run.score_stability}; wrote {out}"
    )  # fmt: skip
    return 0


def add_lifecycle_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="train a challenger on new loan outcomes; promote by rule")
    add_party_args(p, label=True)
    p.add_argument("--registry", "--model", required=True, help="model registry folder")
    p.add_argument("--outcomes", default=None, help="CSV: id, default_date[, reported_date]")
    p.add_argument("--observed-at", default=None, help="date the features were observed")
    p.add_argument("--as-of", default=None, help="date up to which outcomes are known")
    p.add_argument(
        "--kind", choices=("secureboost", "logistic", "scorecard"), default="secureboost"
    )
    p.add_argument("--params", default=None, help="JSON of hyper-parameters")
    p.add_argument("--out", default=None, help="write the decision as JSON here")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("monitor", help="re-score the pre-authorized book; red/yellow/green")
    add_party_args(p, label=False)
    p.add_argument("--model", required=True, help="model registry folder (its champion)")
    p.add_argument("--book", required=True, help="CSV with the book's enterprise ids")
    p.add_argument("--as-of", required=True, help="monitoring date")
    p.add_argument("--previous", default=None, help="folder of the previous monitoring run")
    p.add_argument("--out", required=True, help="folder for this run")
    p.set_defaults(func=cmd_monitor)
