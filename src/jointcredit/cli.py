"""The ``jointcredit`` command line.

Every command validates its input before any cryptography runs; a typed error exits with
status 2 and a one-line message naming the field and the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jointcredit import __version__
from jointcredit.cli_common import add_party_args, progress
from jointcredit.errors import JointCreditError

# --- align -----------------------------------------------------------------------------------


def cmd_align(args: argparse.Namespace) -> int:
    from jointcredit import workflow
    from jointcredit.session import JointSession

    bank, center = workflow.load_parties(
        args.bank, args.center, id_col=args.id_col, id_kind=args.id_kind
    )
    progress(f"loaded bank ({bank.n_rows} rows) and center ({center.n_rows} rows); running PSI")
    session = JointSession.in_process(bank, center)
    result = workflow.align(session)
    out = Path(args.out)
    workflow.write_json(out / "alignment.json", result)
    import pandas as pd

    pd.DataFrame({args.id_col: session.aligned_ids}).to_csv(out / "intersection.csv", index=False)
    print(
        f"intersection: {result['intersection_size']} of {result['bank_rows']} bank rows "
        f"({result['seconds']:.1f} s, {result['round_trips']} round trips); wrote {out}"
    )
    return 0


# --- train -----------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from jointcredit import workflow
    from jointcredit.session import JointSession

    bank, center = workflow.load_parties(
        args.bank, args.center, id_col=args.id_col, id_kind=args.id_kind, label_col=args.label_col
    )
    session = JointSession.in_process(bank, center)
    progress("aligning enterprise ids (PSI)")
    alignment = workflow.align(session)
    train_rows, test_rows = workflow.split_rows(
        session.bank.aligned_labels(), test_size=args.test_size, seed=args.seed
    )
    progress(f"training {args.model} on {len(train_rows)} rows, testing on {len(test_rows)}")
    result = workflow.train(session, args.model, train_rows, test_rows, backend=args.backend)
    out = Path(args.out)
    metrics = result["metrics"]
    metrics["alignment"] = alignment
    workflow.write_json(out / "metrics.json", metrics)
    model = result["model"]
    if model is not None and hasattr(model, "save"):
        model.save(out / "bank")
        _save_center_parts(session, out / "center")
        from jointcredit.report.bundle import write_evaluation

        progress("writing the evaluation bundle for `jointcredit report`")
        write_evaluation(out, session, model, args.model, train_rows, test_rows)
    fed, cen, bo = metrics["federated"], metrics["centralized"], metrics["bank_only"]
    print(
        f"{args.model}: federated AUC {fed['auc']:.4f} KS {fed['ks']:.4f} | "
        f"centralized (insecure reference) AUC {cen['auc']:.4f} | bank only AUC {bo['auc']:.4f} | "
        f"{fed['train_seconds']:.1f} s, {fed['round_trips']} round trips; wrote {out}"
    )
    return 0


def _save_center_parts(session, directory: Path) -> None:
    """In-process runs also persist the center's model parts, as the center would on its disk."""
    from jointcredit.learn.boosting import CenterBoostPart, save_center_part
    from jointcredit.learn.linear import save_center_model

    directory.mkdir(parents=True, exist_ok=True)
    for model_id, part in session.center.model_parts.items():
        if isinstance(part, CenterBoostPart):
            save_center_part(session.center, model_id, directory / f"{model_id}.json")
        elif isinstance(part, dict) and part.get("kind") == "hetero_lr":
            save_center_model(session.center, model_id, directory, filename=f"{model_id}.json")


# --- demo ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from jointcredit.demo import run_demo

    run_demo(out=Path(args.out), seed=args.seed, quick=args.quick, progress=progress)
    return 0


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jointcredit",
        description="Joint credit-risk modeling between a credit center and a bank.",
    )
    parser.add_argument("--version", action="version", version=f"jointcredit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("align", help="private set intersection of the two parties' ids")
    add_party_args(p, label=False)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("train", help="align, split, train a joint model, compare with references")
    add_party_args(p, label=True)
    p.add_argument("--model", choices=("logistic", "scorecard", "secureboost"), default="scorecard")
    p.add_argument(
        "--backend",
        choices=("ckks", "paillier", "ou", "plain"),
        default=None,
        help="encryption backend (default: the model's own; 'ou' is SecureBoost only)",
    )
    p.add_argument("--test-size", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the whole path on built-in synthetic SME data")
    p.add_argument("--out", default="jointcredit-demo", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smaller data, for a fast look")
    p.set_defaults(func=cmd_demo)

    _optional_commands(sub)
    return parser


def _optional_commands(sub: argparse._SubParsersAction) -> None:
    """Command groups that live in their own modules (one concern each)."""
    from jointcredit.cli_bench import add_bench_commands
    from jointcredit.cli_federation import add_federation_commands
    from jointcredit.cli_lifecycle import add_lifecycle_commands
    from jointcredit.cli_score import add_score_commands

    for add in (add_score_commands, add_federation_commands, add_bench_commands,
                add_lifecycle_commands):  # fmt: skip
        add(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except JointCreditError as exc:
        print(f"jointcredit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"jointcredit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
