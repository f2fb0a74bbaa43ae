"""Pieces every ``jointcredit`` subcommand shares: party-table arguments and progress output."""

from __future__ import annotations

import argparse
import sys
import time


def progress(message: str) -> None:
    """One progress line on stderr, so stdout stays the command's result."""
    print(f"[jointcredit {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def add_party_args(p: argparse.ArgumentParser, *, label: bool) -> None:
    p.add_argument("--bank", required=True, help="bank table (CSV): id, [label], features")
    p.add_argument("--center", required=True, help="credit-center table (CSV): id, features")
    p.add_argument("--id-col", default="id", help="name of the enterprise id column (default: id)")
    p.add_argument(
        "--id-kind",
        choices=("uscc", "plain"),
        default="uscc",
        help="uscc: validate 18-character Unified Social Credit Codes; plain: any string",
    )
    if label:
        p.add_argument("--label-col", default="y", help="bank label column, 1 = bad (default: y)")
