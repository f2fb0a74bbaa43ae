"""``jointcredit serve | bank ... | join | run``: the deployment commands.

The lead wires these into ``jointcredit.cli`` with :func:`add_federation_commands`; until then
``python -m jointcredit.cli_federation <command> ...`` runs them standalone. Each command
function returns an exit status; library errors propagate as typed exceptions (the main CLI
turns them into a one-line message and status 2).

Credit center::

    jointcredit serve --data CENTER.csv --workdir DIR [--host 0.0.0.0 --port 9443]
        [--consents CONSENTS.csv] [--center-events EVENTS.csv | --center-previous PREV.csv ...
         --center-as-of YYYY-MM-DD]                      # post-loan monitoring
    jointcredit bank register BANK_KEY.pub --name NAME --workdir DIR
    jointcredit bank list --workdir DIR

Bank::

    jointcredit bank keygen BANK_KEY                      # writes BANK_KEY and BANK_KEY.pub
    jointcredit join --server HOST:PORT --ca CA.pem --key BANK_KEY --data BANK.csv --workdir DIR
    jointcredit run --workdir DIR --job align|train|score|echo [--model ...]
    jointcredit run --workdir DIR --job train --resume JOB_ID   # after a disconnect
    jointcredit run --workdir DIR --job monitor --model MODEL_FILE --book BOOK.csv \
        --as-of YYYY-MM-DD [--previous JOB_ID|DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from jointcredit.errors import DataValidationError, JointCreditError


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "alembic", "flwr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _interrupt_on_terminate() -> None:
    """Treat SIGTERM like Ctrl-C, so context managers stop every child process on the way out."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _params(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataValidationError("params", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DataValidationError("params", "must be a JSON object")
    return value


# --- commands --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from jointcredit.federation.deploy import CenterDeployment, CenterSettings

    _setup_logging(args.verbose)
    rules = _params(args.event_rules) if args.event_rules else None
    settings = CenterSettings(
        workdir=Path(args.workdir),
        data=Path(args.data),
        host=args.host,
        port=args.port,
        id_col=args.id_col,
        id_kind=args.id_kind,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ssl_ca_certfile=args.ssl_ca_certfile,
        hold=args.hold,
        step_timeout=args.step_timeout,
        plugins=tuple(args.plugin or ()),
        protocols=tuple(args.protocols.split(",")) if args.protocols else None,
        consents=Path(args.consents) if args.consents else None,
        center_events=Path(args.center_events) if args.center_events else None,
        center_previous=tuple(Path(p) for p in args.center_previous),
        center_as_of=args.center_as_of,
        event_rules=rules,
        control_local_only=not args.control_from_anywhere,
    )
    _interrupt_on_terminate()
    try:
        with CenterDeployment(settings) as center:
            assert center.tls is not None
            print(
                f"credit center serving on {center.address}; give banks {center.tls.ca_cert} "
                f"and register their keys with `jointcredit bank register`",
                flush=True,
            )
            while center.superlink is not None and center.superlink.alive():
                time.sleep(1.0)
            print(f"the SuperLink exited:\n{center.superlink.log_tail()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0


def cmd_bank_register(args: argparse.Namespace) -> int:
    from jointcredit.federation.deploy import register_bank

    record = register_bank(args.workdir, args.public_key, args.name)
    state = f"node {record.node_id}" if record.node_id else "authorised at the next `serve`"
    print(f"bank {record.name!r} registered ({state})")
    return 0


def cmd_bank_unregister(args: argparse.Namespace) -> int:
    from jointcredit.federation.deploy import unregister_bank

    record = unregister_bank(args.workdir, args.name)
    print(f"bank {record.name!r} unregistered")
    return 0


def cmd_bank_list(args: argparse.Namespace) -> int:
    from jointcredit.federation.server_app import BankDirectory

    for record in BankDirectory(args.workdir).load().values():
        print(f"{record.name}\tnode {record.node_id or '-'}")
    return 0


def cmd_bank_keygen(args: argparse.Namespace) -> int:
    from jointcredit.federation.deploy import generate_node_key

    private, public = generate_node_key(args.path)
    print(f"wrote {private} (keep it) and {public} (send it to the credit center)")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from jointcredit.federation.deploy import BankDeployment, BankSettings

    _setup_logging(args.verbose)
    settings = BankSettings(
        workdir=Path(args.workdir),
        server=args.server,
        ca_cert=Path(args.ca),
        key=Path(args.key),
        data=Path(args.data),
        id_col=args.id_col,
        label_col=args.label_col,
        id_kind=args.id_kind,
        isolation=args.isolation,
        fast_poll=not args.stock_poll,
    )
    _interrupt_on_terminate()
    try:
        with BankDeployment(settings) as node:
            print(
                f"bank node started for {args.server}; submit jobs with `jointcredit run`",
                flush=True,
            )
            while node.alive():
                time.sleep(0.5)
            assert node.supernode is not None
            if node.supernode.alive():
                print("the ClientApp worker stopped (see the log above)", file=sys.stderr)
            else:
                print(f"the SuperNode exited:\n{node.supernode.log_tail()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0


def cmd_run(args: argparse.Namespace) -> int:
    import importlib

    from jointcredit.federation.jobs import JOB_ID, run_bank_job

    _setup_logging(args.verbose)
    for module in args.plugin or ():
        importlib.import_module(module)
    params = _params(args.params)
    if args.job == "monitor":
        # A monitor job takes a fitted model: --model names its file, like --model-file.
        model_file = args.model_file or args.model
        if model_file:
            params.setdefault("model_file", str(Path(model_file).resolve()))
        for key in ("book", "previous", "baseline"):
            value = getattr(args, key)
            if value:
                is_job_id = key != "book" and JOB_ID.match(value)
                params.setdefault(key, value if is_job_id else str(Path(value).resolve()))
        if args.as_of:
            params.setdefault("as_of", args.as_of)
        if args.since:
            params.setdefault("since", args.since)
    elif args.model:
        params.setdefault("model", args.model)
    if args.model_file:
        params.setdefault("model_file", args.model_file)
    if args.protocol:
        params.setdefault("protocol", args.protocol)
    if args.resume:
        if args.job != "train":
            raise DataValidationError("resume", "only train jobs can be resumed")
        params["resume"] = args.resume
    if args.job == "echo":
        params.setdefault("rounds", args.rounds)
        params.setdefault("size", args.size)
    summary = run_bank_job(
        args.workdir, args.job, params, start_timeout=args.start_timeout, step_timeout=args.timeout
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0 if summary.get("status") == "ok" else 1


# --- parsers ---------------------------------------------------------------------------------


def add_federation_commands(subparsers: Any) -> None:
    """Add ``serve``, ``bank``, ``join`` and ``run`` to an argparse sub-parser collection."""
    p = subparsers.add_parser("serve", help="credit center: run the federated server")
    p.add_argument("--data", required=True, help="the center's table (CSV)")
    p.add_argument("--workdir", required=True, help="state, certificates, logs")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=9443)
    p.add_argument("--id-col", default="id")
    p.add_argument("--id-kind", choices=("uscc", "plain"), default="uscc")
    p.add_argument("--consents", help="consent CSV to import into the governance registry")
    p.add_argument(
        "--center-events",
        help="monitoring: dated risk-event records (id, event_type, date) for the "
        "post_loan_monitoring flags",
    )
    p.add_argument(
        "--center-previous",
        action="append",
        default=[],
        metavar="CSV",
        help="monitoring: the center's table at an earlier month end (repeat, oldest first); "
        "the events are the changes up to --data, dated --center-as-of",
    )
    p.add_argument("--center-as-of", help="monitoring: the date of the --data table")
    p.add_argument("--event-rules", help="monitoring: JSON of EventRules thresholds")
    p.add_argument("--ssl-certfile", type=Path, help="server certificate (default: created)")
    p.add_argument("--ssl-keyfile", type=Path)
    p.add_argument("--ssl-ca-certfile", type=Path)
    p.add_argument("--hold", type=float, default=10.0, help="long-poll seconds per idle bank")
    p.add_argument("--step-timeout", type=float, default=600.0, help="seconds per round trip")
    p.add_argument("--protocols", help="comma-separated protocols to serve (default: all)")
    p.add_argument("--plugin", action="append", help="module registering extra protocols")
    p.add_argument(
        "--control-from-anywhere",
        action="store_true",
        help="let any client that reaches the port use Flower's Control API (default: this host "
        "only; banks' nodes always reach the Fleet API)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_serve)

    bank = subparsers.add_parser("bank", help="manage bank keys and registrations")
    bank_sub = bank.add_subparsers(dest="bank_command", required=True)
    p = bank_sub.add_parser("register", help="credit center: authorise a bank's node key")
    p.add_argument("public_key", help="the bank's KEY.pub (OpenSSH format)")
    p.add_argument("--name", required=True)
    p.add_argument("--workdir", required=True, help="the center's workdir")
    p.set_defaults(func=cmd_bank_register)
    p = bank_sub.add_parser("unregister", help="credit center: withdraw a bank's authorisation")
    p.add_argument("--name", required=True)
    p.add_argument("--workdir", required=True)
    p.set_defaults(func=cmd_bank_unregister)
    p = bank_sub.add_parser("list", help="credit center: registered banks")
    p.add_argument("--workdir", required=True)
    p.set_defaults(func=cmd_bank_list)
    p = bank_sub.add_parser("keygen", help="bank: create the node key pair")
    p.add_argument("path", help="private key path; the public key goes to PATH.pub")
    p.set_defaults(func=cmd_bank_keygen)

    p = subparsers.add_parser("join", help="bank: connect this bank's node to the credit center")
    p.add_argument("--server", required=True, help="HOST:PORT of the credit center")
    p.add_argument("--ca", required=True, help="the center's CA certificate (ca.pem)")
    p.add_argument("--key", required=True, help="this bank's private node key")
    p.add_argument("--data", required=True, help="the bank's table (CSV)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--id-col", default="id")
    p.add_argument("--label-col", default=None)
    p.add_argument("--id-kind", choices=("uscc", "plain"), default="uscc")
    p.add_argument(
        "--isolation",
        choices=("process", "subprocess"),
        default="process",
        help="process: one long-lived ClientApp worker (fast); subprocess: Flower's default",
    )
    p.add_argument(
        "--stock-poll", action="store_true", help="keep Flower's fixed 3 s SuperNode polling"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_join)

    p = subparsers.add_parser("run", help="bank: run a job with the credit center")
    p.add_argument("--workdir", required=True, help="the workdir given to `join`")
    p.add_argument(
        "--job", required=True, choices=("align", "train", "score", "monitor", "echo", "protocol")
    )
    p.add_argument("--model", help="train: estimator name or module:Class; monitor: the model file")
    p.add_argument("--model-file", help="score, monitor: model.pkl from a train job")
    p.add_argument("--book", help="monitor: CSV with the ids of the pre-authorized book")
    p.add_argument("--as-of", help="monitor: monitoring date (YYYY-MM-DD)")
    p.add_argument("--since", help="monitor: first day of the event period")
    p.add_argument("--previous", help="monitor: job id or folder of the previous monitor job")
    p.add_argument("--baseline", help="monitor: job id or folder of the baseline monitor job")
    p.add_argument("--protocol", help="protocol job: registered protocol name")
    p.add_argument("--params", help="job parameters as a JSON object")
    p.add_argument(
        "--resume",
        metavar="JOB_ID",
        help="train: continue a failed training job from the trees both parties finished",
    )
    p.add_argument("--rounds", type=int, default=10, help="echo: round trips")
    p.add_argument("--size", type=int, default=64, help="echo: bytes per message")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per protocol step")
    p.add_argument("--plugin", action="append", help="module registering extra protocols")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jointcredit", description=__doc__.split("\n")[0])
    add_federation_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except JointCreditError as exc:
        print(f"jointcredit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
