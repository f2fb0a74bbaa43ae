"""``jointcredit bench`` and ``jointcredit report``.

``add_bench_commands(subparsers)`` adds both to the main CLI; ``bench_main`` is the same
``bench`` command for ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

SUITE_CHOICES = ("quality", "speed", "scaling", "primitives", "all")
MODEL_CHOICES = ("logistic", "scorecard", "secureboost")


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--suite",
        action="append",
        choices=SUITE_CHOICES,
        help="suite to run (repeatable; default: all)",
    )
    p.add_argument(
        "--data-dir",
        action="extend",
        nargs="+",
        default=[],
        metavar="DIR",
        help="FATE-layout vertical split(s) for the quality and speed suites: DIR/bank.csv "
        "(id, y, x...) and DIR/center.csv (id, x...), e.g. ../shared/data/default_credit",
    )
    p.add_argument(
        "--no-synthetic",
        action="store_true",
        help="skip the synthetic SME data (by default it runs alongside every --data-dir)",
    )
    p.add_argument("--quick", action="store_true", help="CI-sized data and models")
    p.add_argument("--seed", type=int, default=42, help="data, split and model seed (default 42)")
    p.add_argument(
        "--repeats", type=int, default=None, help="timing repeats (default: 1 with --quick, else 3)"
    )
    p.add_argument(
        "--models",
        nargs="+",
        choices=MODEL_CHOICES,
        default=None,
        help="model types to run (default: every one that is installed)",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="force one backend (e.g. plain, paillier, ckks) instead of each model's own",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--out", required=True, help="output directory")


def cmd_bench(args: argparse.Namespace) -> int:
    from jointcredit.bench import SUITE_NAMES, BenchContext, has_errors, run
    from jointcredit.bench.runner import stderr_progress
    from jointcredit.errors import DataValidationError

    chosen = args.suite or ["all"]
    names = list(SUITE_NAMES) if "all" in chosen else list(dict.fromkeys(chosen))
    data_dirs = [Path(d) for d in args.data_dir]
    for d in data_dirs:
        if not (d / "bank.csv").is_file() or not (d / "center.csv").is_file():
            raise DataValidationError("data_dir", f"{d} must hold bank.csv and center.csv")
    if args.no_synthetic and not data_dirs:
        raise DataValidationError("data_dir", "--no-synthetic needs at least one --data-dir")
    if args.repeats is not None and args.repeats < 1:
        raise DataValidationError("repeats", f"must be at least 1, got {args.repeats}")
    ctx = BenchContext(
        out_dir=Path(args.out),
        quick=args.quick,
        seed=args.seed,
        repeats=args.repeats,
        data_dirs=data_dirs,
        synthetic=not args.no_synthetic,
        models=tuple(args.models) if args.models else None,
        backend=args.backend,
        progress=stderr_progress,
    )
    argv = getattr(args, "command_line", None) or [Path(sys.argv[0]).name, *sys.argv[1:]]
    command = " ".join(shlex.quote(str(a)) for a in argv)
    results = run(names, ctx, command=command, write_plots=not args.no_plots)
    for name, suite in results["suites"].items():
        recs = suite.get("records", [])
        counts = {
            s: sum(1 for r in recs if r.get("status") == s)
            for s in ("ok", "not_available", "error")
        }
        print(
            f"{name}: {suite['status']} in {suite['seconds']:.0f} s "
            f"({counts['ok']} ok, {counts['not_available']} not available, {counts['error']} errors)"
        )
    print(f"wrote {Path(args.out) / 'results.json'} and results.md")
    return 1 if has_errors(results) else 0


def cmd_report(args: argparse.Namespace) -> int:
    from jointcredit.report.html import build_report

    out = Path(args.out) if args.out else Path(args.model) / "report.html"
    path = build_report(Path(args.model), out, title=args.title)
    print(f"wrote {path}")
    return 0


def add_bench_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and ``report`` to the ``jointcredit`` CLI's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="reproducible benchmarks: quality, speed, scaling, primitives",
        description="Run benchmark suites; writes results.json, results.md and plots/*.png.",
    )
    _add_bench_args(p)
    p.set_defaults(func=cmd_bench)

    p = subparsers.add_parser(
        "report",
        help="self-contained HTML model report from a trained model directory",
        description="Render DIR/evaluation.json (written by `jointcredit train` / the demo) "
        "as one HTML file with embedded plots.",
    )
    p.add_argument("--model", required=True, help="model directory holding evaluation.json")
    p.add_argument("--out", default=None, help="output HTML file (default: DIR/report.html)")
    p.add_argument("--title", default=None, help="report title")
    p.set_defaults(func=cmd_report)


def bench_main(argv: list[str] | None = None) -> int:
    """``python benchmarks/run_all.py ...``: the ``bench`` command without the rest of the CLI."""
    from jointcredit.errors import JointCreditError

    parser = argparse.ArgumentParser(
        prog="run_all.py", description="jointcredit benchmark suites (same as `jointcredit bench`)"
    )
    _add_bench_args(parser)
    args = parser.parse_args(argv)
    if argv is not None:
        args.command_line = ["benchmarks/run_all.py", *argv]
    try:
        return cmd_bench(args)
    except JointCreditError as exc:
        print(f"run_all.py: error: {exc}", file=sys.stderr)
        return 2
