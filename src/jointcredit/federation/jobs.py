"""Bank jobs: what ``jointcredit run --job ...`` does, as bank-side code over any session.

A job is a function ``job(session, params, outdir) -> dict`` written against the session
interface estimators already use (``session.bank``, ``session.run(side)``, ``session.align()``),
so the same function runs in process (``JointSession``, tests, the equivalence check) and in a
deployment (:class:`~jointcredit.federation.bank.FederatedSession`). The returned dict is the
job's summary; files go to ``outdir`` (the bank's ``results/JOB_ID``).

=========  ==================================================================================
job        protocols it asks the credit center to run, in order
=========  ==================================================================================
align      ``psi``
train      ``psi`` (unless ``align=False``), then whatever the estimator's ``fit`` and
           ``predict_proba`` run (e.g. ``secureboost`` ...); metrics on the bank's test split
score      the fitted model's prediction protocol on the aligned rows; pre-authorization list
monitor    ``risk_events`` (unless ``events=False``), then the model's prediction protocol on
           the consented, aligned book: red / yellow / green, migration, stability
protocol   one registered protocol by name, its bank half built from ``params``
echo       ``echo``: N round trips of S bytes (latency measurement, no data involved)
=========  ==================================================================================

The ``echo`` protocol is registered here; it carries only filler bytes.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.errors import (
    DataValidationError,
    MalformedMessageError,
    ProtocolError,
    UnexpectedMessageError,
)
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.session import ProtocolChannel

# --- echo: a protocol for measuring round trips ---------------------------------------------

ECHO = "echo"
MAX_ECHO_ROUNDS = 10_000
MAX_ECHO_BYTES = 64 * 1024 * 1024


class EchoCenter:
    """Sends ``rounds`` requests of ``size`` filler bytes; checks each comes back unchanged."""

    protocol = ECHO

    def __init__(self, center: CenterParty) -> None:
        self.center = center

    def run(self, channel: ProtocolChannel) -> int:
        params = channel.request("start")
        if not isinstance(params, dict):
            raise MalformedMessageError("echo/start.ok: expected a dict")
        rounds, size = params.get("rounds"), params.get("size")
        if not isinstance(rounds, int) or not 1 <= rounds <= MAX_ECHO_ROUNDS:
            raise MalformedMessageError(f"echo/start.ok: rounds must be in [1, {MAX_ECHO_ROUNDS}]")
        if not isinstance(size, int) or not 0 <= size <= MAX_ECHO_BYTES:
            raise MalformedMessageError(f"echo/start.ok: size must be in [0, {MAX_ECHO_BYTES}]")
        for i in range(rounds):
            payload = (i % 251).to_bytes(1, "big") * size
            if channel.request("ping", payload) != payload:
                raise ProtocolError(f"echo: round {i} came back altered")
        return rounds


class EchoBank:
    """Answers ``start`` with the job's rounds and size, then returns every ping unchanged."""

    protocol = ECHO

    def __init__(self, bank: BankParty, rounds: int = 10, size: int = 64) -> None:
        if not isinstance(rounds, int) or not 1 <= rounds <= MAX_ECHO_ROUNDS:
            raise DataValidationError("rounds", f"must be an integer in [1, {MAX_ECHO_ROUNDS}]")
        if not isinstance(size, int) or not 0 <= size <= MAX_ECHO_BYTES:
            raise DataValidationError("size", f"must be an integer in [0, {MAX_ECHO_BYTES}]")
        self.rounds = rounds
        self.size = size
        self.pings = 0

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start":
            return {"rounds": self.rounds, "size": self.size}
        if msg_type == "ping":
            if not isinstance(payload, bytes) or len(payload) != self.size:
                raise MalformedMessageError(f"echo/ping: expected {self.size} bytes")
            self.pings += 1
            return payload
        raise UnexpectedMessageError(f"echo: unexpected message {msg_type!r}")


registry.register(ECHO, center=EchoCenter, bank=lambda bank, params: EchoBank(bank, **params))


# --- estimators ----------------------------------------------------------------------------

#: Short model names for ``--model``; anything else must be given as ``module:Class``.
ESTIMATORS = {
    "secureboost": "jointcredit.learn.boosting:HeteroSecureBoost",
    "logistic": "jointcredit.learn.linear:HeteroLogisticRegression",
    "scorecard": "jointcredit.learn.linear:HeteroScorecard",
}


def resolve_estimator(model: str) -> type:
    """The estimator class for a short name or a ``module:Class`` reference."""
    spec = ESTIMATORS.get(model, model)
    if ":" not in spec:
        raise DataValidationError(
            "model", f"unknown model {model!r}; use one of {sorted(ESTIMATORS)} or module:Class"
        )
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise DataValidationError(
            "model", f"{model!r}: module {exc.name!r} is not installed"
        ) from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise DataValidationError("model", f"{model!r}: {spec} is not a class")
    return cls


# --- jobs -----------------------------------------------------------------------------------

Job = Callable[[Any, dict, Path], dict]
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
#: The parameters a job ran with (``results/JOB_ID/job.json``), so it can be resumed.
JOB_FILE = "job.json"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def align_job(session: Any, params: dict, outdir: Path) -> dict:
    """PSI; writes ``intersection.csv`` (the bank's own ids of the intersection, aligned order)."""
    reveal_to = params.get("reveal_to", "both")
    start = time.perf_counter()
    ids = session.align(reveal_to=reveal_to)
    outdir.mkdir(parents=True, exist_ok=True)
    id_col = session.bank.table.schema.id_col
    pd.DataFrame({id_col: ids}).to_csv(outdir / "intersection.csv", index=False)
    return {
        "intersection_size": int(len(ids)),
        "bank_rows": int(session.bank.table.n_rows),
        "align_seconds": round(time.perf_counter() - start, 3),
    }


def train_job(session: Any, params: dict, outdir: Path) -> dict:
    """Align, split (stratified, seeded), fit the estimator, evaluate on the bank's test rows.

    ``params``: ``model`` (name or module:Class), ``hyperparameters`` (dict), ``test_size``
    (0.3), ``seed`` (42), ``align`` (True). Writes ``metrics.json`` and ``model.pkl`` (the
    bank's fitted estimator: its own model part only) to ``outdir``.
    """
    from jointcredit.report.metrics import summary
    from jointcredit.workflow import split_rows

    resume = params.get("resume")
    source: Path | None = None
    if resume is not None:
        # Same job again, from the failed job's own parameters and checkpoint.
        if not isinstance(resume, str) or not JOB_ID.match(resume):
            raise DataValidationError("resume", f"{resume!r} is not a job id")
        source = outdir.parent / resume
        try:
            params = json.loads((source / JOB_FILE).read_text(encoding="utf-8"))["params"]
        except (OSError, ValueError, KeyError):
            raise DataValidationError("resume", f"job {resume} left no train parameters") from None
    _write_json(outdir / JOB_FILE, {"kind": "train", "params": params, "resumes": resume})
    model = params.get("model")
    if not isinstance(model, str):
        raise DataValidationError("model", "a train job needs --model")
    cls = resolve_estimator(model)
    result: dict[str, Any] = {"model": model}
    if params.get("align", True):
        result.update(align_job(session, {"reveal_to": "both"}, outdir))
    y = session.bank.aligned_labels()
    train_rows, test_rows = split_rows(
        y, test_size=float(params.get("test_size", 0.3)), seed=int(params.get("seed", 42))
    )
    start = time.perf_counter()
    hyperparameters = dict(params.get("hyperparameters", {}))
    if source is None:
        estimator = cls(**hyperparameters).fit(session, rows=train_rows)
    else:
        estimator = _resume_fit(session, cls, hyperparameters, source, train_rows, result)
        result["resumed"]["job_id"] = resume
    result["train_seconds"] = round(time.perf_counter() - start, 3)
    proba = np.asarray(estimator.predict_proba(session, rows=test_rows))[:, 1]
    result["test"] = summary(y[test_rows], proba)
    result["n_train"], result["n_test"] = int(train_rows.size), int(test_rows.size)
    outdir.mkdir(parents=True, exist_ok=True)
    with open(outdir / "model.pkl", "wb") as fh:
        pickle.dump(estimator, fh, protocol=pickle.HIGHEST_PROTOCOL)
    np.save(outdir / "test_proba.npy", proba)
    _write_json(outdir / "metrics.json", result)
    return result


def _resume_fit(
    session: Any, cls: type, hyperparameters: dict, source: Path, rows: np.ndarray, result: dict
) -> Any:
    """Continue a failed training job from the trees / epochs both parties finished."""
    from jointcredit.federation.checkpoint import CHECKPOINT_DIR, resume_estimator
    from jointcredit.learn.boosting import BoostParams, HeteroSecureBoost

    parent, kept = resume_estimator(session, cls, hyperparameters, source / CHECKPOINT_DIR)
    if issubclass(cls, HeteroSecureBoost):
        unit, budget = "trees", "n_estimators"
        total = BoostParams.validate(**hyperparameters).n_estimators
    else:
        unit, budget = "epochs", "max_epochs"
        total = int(hyperparameters.get("max_epochs", cls().max_epochs))
    remaining = total - kept
    result["resumed"] = {f"{unit}_kept": kept, f"{unit}_trained": max(remaining, 0)}
    if remaining <= 0:
        return parent
    estimator = cls(**{**hyperparameters, budget: remaining})
    return estimator.fit(session, rows=rows, init_model=parent)


def score_job(session: Any, params: dict, outdir: Path) -> dict:
    """Score the aligned enterprises with a fitted model; write the pre-authorization list.

    Scoring runs the encrypted ``score`` protocol (:func:`~jointcredit.scoring.preauth.
    preauthorize`), whose credit-center half applies the center's consent and budget gate
    before any cryptography; in a deployment the center charges and checks the bank it
    registered for the node that asked, whatever the bank claims.

    ``params``: ``model_file`` (a ``model.pkl`` from a train job), ``policy`` (optional JSON
    of :class:`~jointcredit.scoring.policy.PreAuthorizationPolicy`), ``purpose``
    (``pre_authorization``), ``output`` (``exact`` or ``noise``), ``noise_std``. Writes
    ``decisions.csv``, ``whitelist.csv`` and ``excluded.csv`` (ids the center did not score, with
    the reason).
    """
    from jointcredit.scoring.policy import PreAuthorizationPolicy
    from jointcredit.scoring.preauth import default_policy, excluded_frame, preauthorize

    model_file = params.get("model_file")
    if not model_file or not Path(model_file).is_file():
        raise DataValidationError(
            "model_file", f"{model_file!r} is not a model file from a train job"
        )
    with open(model_file, "rb") as fh:
        estimator = pickle.load(fh)  # noqa: S301 - the bank's own model file
    policy = (
        PreAuthorizationPolicy.load(params["policy"])
        if params.get("policy")
        else default_policy(estimator)
    )
    decisions, summary = preauthorize(
        session,
        estimator,
        None,
        policy,
        purpose=str(params.get("purpose", "pre_authorization")),
        output=str(params.get("output", "exact")),
        noise_std=float(params.get("noise_std", 0.0)),
    )
    outdir.mkdir(parents=True, exist_ok=True)
    decisions.to_csv(outdir / "decisions.csv", index=False)
    excluded_frame(summary).to_csv(outdir / "excluded.csv", index=False)
    written = policy.export_whitelist(decisions, outdir / "whitelist.csv")
    return {
        "requested": summary["requested"],
        "scored": summary["scored"],
        "excluded": summary["excluded"],
        "pre_authorized": int(written),
        "policy": {k: v for k, v in summary.items() if k not in ("excluded_ids", "protocol")},
        "protocol": summary["protocol"],
    }


def _load_model_file(model_file: Any) -> Any:
    """The bank's fitted estimator: a ``model.pkl`` from a train job or a registry folder."""
    if not model_file or not Path(model_file).exists():
        raise DataValidationError(
            "model_file", f"{model_file!r} is not a model file from a train job"
        )
    if Path(model_file).is_dir():
        from jointcredit.monitor.lifecycle import ModelRegistry

        return ModelRegistry(model_file, create=False).load()  # its champion
    with open(model_file, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - the bank's own model file


def monitor_job(session: Any, params: dict, outdir: Path) -> dict:
    """Monitor the pre-authorized book (:func:`~jointcredit.monitor.book.monitor_book`).

    The credit center's half of ``risk_events`` sends flags only for enterprises whose
    ``post_loan_monitoring`` consent names the bank it registered for the node that asked
    (whatever the bank claims), and the list of those enterprises; the rest of the book is
    excluded before re-scoring. Over the deployment the model's center part is the one the
    center kept from the train job.

    ``params``: ``model_file`` (``model.pkl`` of a train job, or a model registry folder),
    ``book`` (CSV with the bank's id column), ``as_of`` (date), ``since`` (start of the event
    period), ``previous`` / ``baseline`` (folder or job id of an earlier monitor job),
    ``policy`` (JSON of a PreAuthorizationPolicy), ``rules`` (WarningRules as a dict),
    ``events`` (True: fetch flags and apply the consent list), ``align`` (False: PSI first).
    Writes what ``jointcredit monitor`` writes (``book.csv``: status with reasons, score,
    grade and migration per enterprise; ``events.csv``; ``bank_feature_stability.csv``;
    ``state.json``, the reference for the next run) plus ``summary.json``.
    """
    from jointcredit.monitor.book import MonitorRun, monitor_book
    from jointcredit.monitor.warnings import WarningRules
    from jointcredit.scoring.policy import PreAuthorizationPolicy

    _write_json(outdir / JOB_FILE, {"kind": "monitor", "params": params})
    estimator = _load_model_file(params.get("model_file"))
    book_file, as_of = params.get("book"), params.get("as_of")
    if not book_file or not Path(book_file).is_file():
        raise DataValidationError("book", f"{book_file!r} is not a CSV of the book's ids")
    if not as_of:
        raise DataValidationError("as_of", "a monitor job needs the monitoring date")
    id_col = session.bank.table.schema.id_col
    try:
        book = pd.read_csv(book_file, dtype=str, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError("book", f"{book_file}: not a readable CSV ({exc})") from None
    column = id_col if id_col in book.columns else "id"
    if column not in book.columns:
        raise DataValidationError("book", f"{book_file}: no {id_col!r} column")

    def earlier(key: str) -> MonitorRun | None:
        ref = params.get(key)
        if not ref:
            return None
        path = outdir.parent / ref if JOB_ID.match(str(ref)) else Path(ref)
        return MonitorRun.load(path)

    fetch = bool(params.get("events", True))
    result: dict[str, Any] = {}
    if params.get("align", False):
        result.update(align_job(session, {"reveal_to": "both"}, outdir))
    run = monitor_book(
        session,
        estimator,
        book[column].tolist(),
        as_of=as_of,
        since=params.get("since"),
        policy=PreAuthorizationPolicy.load(params["policy"]) if params.get("policy") else None,
        rules=WarningRules.from_dict(params["rules"]) if params.get("rules") else None,
        previous=earlier("previous"),
        baseline=earlier("baseline"),
        fetch_events=fetch,
        require_consent=fetch,
    )
    run.save(outdir)
    summary = run.summary()
    _write_json(outdir / "summary.json", summary)
    result.update(summary)
    # "status" is the job's own (ok / failed): the book's red / yellow / green counts go here.
    result["book_status"] = result.pop("status")
    result["book"] = int(len(book))
    return result


def protocol_job(session: Any, params: dict, outdir: Path) -> dict:
    """Run one registered protocol; its bank half is built from ``params['params']``."""
    name = params.get("protocol")
    if not isinstance(name, str):
        raise DataValidationError("protocol", "a protocol job needs --protocol")
    side = registry.bank_side(name, session.bank, dict(params.get("params", {})))
    session.run(side)
    return {"protocol": name}


def echo_job(session: Any, params: dict, outdir: Path) -> dict:
    """``rounds`` round trips of ``size`` bytes each way through the whole stack."""
    rounds, size = int(params.get("rounds", 10)), int(params.get("size", 64))
    side = EchoBank(session.bank, rounds=rounds, size=size)
    start = time.perf_counter()
    session.run(side)
    seconds = time.perf_counter() - start
    if side.pings != rounds:
        raise ProtocolError(f"echo: {side.pings} pings answered, expected {rounds}")
    # rounds + 1 envelopes: start plus the pings.
    return {
        "rounds": rounds,
        "size": size,
        "echo_seconds": round(seconds, 4),
        "per_round_trip": round(seconds / (rounds + 1), 4),
    }


JOBS: dict[str, Job] = {
    "align": align_job,
    "train": train_job,
    "score": score_job,
    "monitor": monitor_job,
    "protocol": protocol_job,
    "echo": echo_job,
}


# --- running one job at a bank ----------------------------------------------------------------

STATE_FILE = "state/party.pkl"


def load_bank_party(workdir: str | os.PathLike, table: Any) -> BankParty:
    """The bank's party with the state earlier jobs left (aligned ids, model parts)."""
    party = BankParty(table)
    path = Path(workdir) / STATE_FILE
    if path.exists():
        with open(path, "rb") as fh:
            state = pickle.load(fh)  # noqa: S301 - the bank's own file
        party.aligned_ids = state.get("aligned_ids")
        party.model_parts = dict(state.get("model_parts", {}))
    return party


def save_bank_party(workdir: str | os.PathLike, party: BankParty) -> None:
    path = Path(workdir) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(
            {"aligned_ids": party.aligned_ids, "model_parts": party.model_parts},
            fh,
            protocol=pickle.HIGHEST_PROTOCOL,
        )
    tmp.replace(path)


def run_bank_job(
    workdir: str | os.PathLike,
    kind: str,
    params: dict | None = None,
    *,
    table: Any = None,
    **runner_options: Any,
) -> dict:
    """Run one job at the bank whose ``jointcredit join`` work directory is ``workdir``.

    Blocks until the credit center has driven every step (or a timeout). Writes the job's files
    and ``result.json`` to ``workdir/results/JOB_ID/`` and returns the summary.
    """
    from jointcredit.data import load_party_table
    from jointcredit.federation.bank import run_job
    from jointcredit.federation.deploy import load_bank_config

    if kind not in JOBS:
        raise DataValidationError("job", f"unknown job {kind!r}; choose one of {sorted(JOBS)}")
    workdir = Path(workdir).resolve()
    params = dict(params or {})
    if table is None:
        config = load_bank_config(workdir)
        table = load_party_table(
            config["data"],
            id_col=config.get("id_col", "id"),
            label_col=config.get("label_col"),
            id_kind=config.get("id_kind", "uscc"),
        )
    party = load_bank_party(workdir, table)
    job = JOBS[kind]
    results: dict[str, Path] = {}

    def body(session: Any) -> dict:
        outdir = workdir / "results" / session.job_id
        results["dir"] = outdir
        return job(session, params, outdir)

    summary = run_job(party, workdir, kind, body, **runner_options)
    save_bank_party(workdir, party)
    outdir = results.get("dir", workdir / "results" / summary["job_id"])
    summary["results_dir"] = str(outdir)
    _write_json(outdir / "result.json", summary)
    return summary
