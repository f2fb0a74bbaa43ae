"""``jointcredit retrain`` and ``jointcredit monitor``: the model lifecycle from the command line.

Both run the two parties in one process (as ``train`` does); in a deployment the same protocol
halves run over the credit center's Flower server.

    jointcredit retrain --registry REG --bank BANK.csv --center CENTER.csv \
        --outcomes NEW_OUTCOMES.csv --observed-at 2025-04-30 --as-of 2025-12-31 \
        [--no-warm-start] [--out decision.json]

    jointcredit monitor --model REG --bank BANK.csv --center CENTER.csv --book BOOK.csv \
        --as-of 2025-06-30 --out runs/2025-06 [--previous runs/2025-05] \
        [--consents CONSENTS.csv --bank-id bank-a --center-previous CENTER_2025-05.csv ...]

With ``--consents`` the center's side of ``monitor`` is configured as well: risk events are
detected from the center's monthly tables (``--center-previous``, oldest first, one month apart,
ending the month before ``--as-of``; ``--center`` is the current one) or read from dated records
(``--center-events``), and flags reach the bank only for enterprises whose
``post_loan_monitoring`` consent for ``--bank-id`` is valid; book enterprises without that
consent are not re-scored. Without ``--consents`` the book is re-scored without events or a
consent check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jointcredit.cli_common import add_party_args, progress


def _has_column(path: str, column: str) -> bool:
    import pandas as pd

    try:
        return column in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    except (OSError, ValueError):
        return True  # let the table loader report the problem with the file


def cmd_retrain(args: argparse.Namespace) -> int:
    from jointcredit import workflow
    from jointcredit.monitor.lifecycle import ModelRegistry, retrain_model, train_champion
    from jointcredit.session import JointSession

    label_col = args.label_col
    if args.outcomes is not None and not _has_column(args.bank, label_col):
        label_col = None  # the outcomes file labels the table
    bank, center = workflow.load_parties(
        args.bank, args.center, id_col=args.id_col, id_kind=args.id_kind, label_col=label_col
    )
    session = JointSession.in_process(bank, center)
    progress("aligning enterprise ids (PSI)")
    session.align()
    registry = Path(args.registry)
    has_champion = (registry / "registry.json").exists() and ModelRegistry(
        registry, create=False
    ).champion is not None
    if args.warm_start is not None and not has_champion:
        progress("--warm-start / --no-warm-start apply to challengers only: no champion yet")
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
            params=params, warm_start=args.warm_start is not False,
        )  # fmt: skip
        verdict = "PROMOTED" if result["promoted"] else "kept champion"
        cmp = result["comparison"]
        print(
            f"challenger {result['challenger']} vs champion {result['champion']}: {verdict} "
            f"(holdout AUC {cmp['challenger']['auc']:.4f} vs {cmp['champion']['auc']:.4f}; "
            f"{result['warm_start']})"
        )
    if args.out:
        workflow.write_json(Path(args.out), result)
    return 0


def _read_ids_csv(path: str, id_col: str, what: str) -> Any:
    from jointcredit.data.loaders import read_id_frame

    return read_id_frame(path, id_col, what)


def _center_monitor(args: argparse.Namespace, out: Path) -> Any:
    """The credit center's monitoring configuration for this run (None without --consents)."""
    from datetime import datetime, timezone

    import pandas as pd

    from jointcredit.errors import DataValidationError
    from jointcredit.monitor.events import CenterMonitor, EventRules, detect_events
    from jointcredit.scoring import AuditLog, ConsentRegistry
    from jointcredit.scoring.audit import to_utc

    if args.consents is None:
        if args.center_previous or args.center_events:
            raise DataValidationError("consents", "risk events need the monitoring consents")
        return None
    audit = AuditLog(args.audit or out / "center_audit.jsonl")
    consents = ConsentRegistry.from_csv(args.consents, id_col=args.id_col, audit=audit)
    as_of = pd.Timestamp(args.as_of).normalize()
    if args.center_events:
        events = _read_ids_csv(args.center_events, args.id_col, "center_events")
    else:
        history = [_read_ids_csv(p, args.id_col, "center_previous") for p in args.center_previous]
        current = _read_ids_csv(args.center, args.id_col, "center")
        frames = [*history, current]
        # monthly tables, newest last: month ends counting back from the monitoring date
        dates = [as_of - pd.offsets.MonthEnd(len(frames) - 1 - i) for i in range(len(frames))]
        dates[-1] = as_of
        rules = EventRules.from_dict(json.loads(args.event_rules)) if args.event_rules else None
        events = detect_events(list(zip(dates, frames, strict=True)), rules)
    # consent is checked "now": the end of the monitoring day, or the present if that is earlier
    end_of_day = to_utc(as_of.date(), "as_of", end_of_day=True)
    now = min(datetime.now(timezone.utc), end_of_day)
    return CenterMonitor(
        bank_id=args.bank_id, consents=consents, events=events, audit=audit, clock=lambda: now
    )


def cmd_monitor(args: argparse.Namespace) -> int:
    from jointcredit import workflow
    from jointcredit.errors import DataValidationError
    from jointcredit.monitor.book import MonitorRun, monitor_book
    from jointcredit.monitor.events import attach_center_monitor
    from jointcredit.monitor.lifecycle import ModelRegistry
    from jointcredit.session import JointSession

    out = Path(args.out)
    monitor = _center_monitor(args, out)  # the center's configuration first: fail early
    bank, center = workflow.load_parties(
        args.bank, args.center, id_col=args.id_col, id_kind=args.id_kind
    )
    session = JointSession.in_process(bank, center)
    progress("aligning enterprise ids (PSI)")
    session.align()
    registry = ModelRegistry(args.model, create=False)
    if registry.champion is None:
        raise DataValidationError("model", f"{args.model}: the registry has no champion yet")
    # in one process the center reads its part of the champion from the simulated center store
    registry.ensure_center_part(session, registry.champion)
    book = _read_ids_csv(args.book, args.id_col, "book")["id"].tolist()
    previous = MonitorRun.load(Path(args.previous)) if args.previous else None
    if monitor is None:
        progress("no --consents: re-scoring the whole book without risk events or consent check")
    else:
        attach_center_monitor(session.center, monitor)
        progress(f"center: {len(monitor.events)} risk events on record; fetching the flags")
    progress(f"re-scoring {len(book)} enterprises of the book")
    run = monitor_book(
        session, Path(args.model), book, as_of=args.as_of, previous=previous,
        fetch_events=monitor is not None, require_consent=monitor is not None,
    )  # fmt: skip
    run.save(out)
    counts = run.status_counts()
    excluded = len(run.excluded)
    print(
        f"book of {len(book)}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f"; {len(run.events)} risk-event flags; {excluded} excluded"
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
    p.add_argument(
        "--warm-start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start the challenger from the champion (more trees / its coefficients); "
        "default on when the kinds match",
    )
    p.add_argument("--out", default=None, help="write the decision as JSON here")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("monitor", help="re-score the pre-authorized book; red/yellow/green")
    add_party_args(p, label=False)
    p.add_argument("--model", required=True, help="model registry folder (its champion)")
    p.add_argument("--book", required=True, help="CSV with the book's enterprise ids")
    p.add_argument("--as-of", required=True, help="monitoring date")
    p.add_argument("--previous", default=None, help="folder of the previous monitoring run")
    p.add_argument(
        "--consents",
        default=None,
        help="center: consents CSV (id, bank, purpose, granted_at, expires_at[, revoked_at]); "
        "turns on risk events and the post_loan_monitoring consent check",
    )
    p.add_argument("--bank-id", default="bank", help="center: the bank's id in the consents")
    p.add_argument(
        "--center-previous",
        action="append",
        default=[],
        metavar="CSV",
        help="center: its table at an earlier month end (repeat, oldest first; the last one is "
        "the month before --as-of); events are the changes up to --center",
    )
    p.add_argument(
        "--center-events",
        default=None,
        help="center: dated event records (id, event_type, date) instead of --center-previous",
    )
    p.add_argument("--event-rules", default=None, help="center: JSON of EventRules thresholds")
    p.add_argument(
        "--audit", default=None, help="center audit log (default: <out>/center_audit.jsonl)"
    )
    p.add_argument("--out", required=True, help="folder for this run")
    p.set_defaults(func=cmd_monitor)
