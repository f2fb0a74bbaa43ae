"""The credit center's ServerApp: serves the jobs of every registered bank, one thread per job.

The center never takes a job from a message: it polls each registered bank's node (the node id
comes from the center's own bank directory, matched against the public key the node
authenticated with), and runs whatever protocol step that bank's job runner asks for next, with
the center's half of the protocol, over a transport bound to that node only. A bank can therefore
neither address another bank's node nor reach another bank's state: each bank has its own
``CenterParty`` (aligned ids, the center's model parts) under ``WORKDIR/banks/NAME/``.

Flower layer and protocols meet in exactly one place, :meth:`CenterService._run_step`::

    registry.center_side(protocol, party).run(channel.bind(protocol))

where ``channel`` is a :class:`~jointcredit.protocol.session.CenterChannel` over a
:class:`~jointcredit.federation.transport.FlowerTransport`.

Failure handling: a bank that stops answering makes its job thread fail after the step timeout
(``PartyUnavailableError``, logged and audited); a refused or tampered message fails that step
(the bank is told); every other bank's job keeps running, and the main loop keeps polling.
"""

from __future__ import annotations

import importlib
import json
import logging
import pickle
import re
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from jointcredit.data import PartyTable, load_party_table
from jointcredit.data.loaders import read_id_frame
from jointcredit.errors import (
    DataValidationError,
    DeploymentError,
    JointCreditError,
    MalformedMessageError,
    PartyUnavailableError,
    RemotePartyError,
)
from jointcredit.federation import checkpoint
from jointcredit.federation import jobs as _jobs  # noqa: F401 - registers the echo protocol
from jointcredit.federation.transport import (
    CONTROL,
    TTL_MARGIN,
    FlowerTransport,
    SharedGrid,
    collect,
    push,
    reply_blob,
    request_reply,
)
from jointcredit.parties import CenterParty
from jointcredit.protocol import codec, registry
from jointcredit.protocol.channel import RecordingTransport, Transcript
from jointcredit.protocol.envelope import Role
from jointcredit.protocol.session import CenterChannel
from jointcredit.scoring.audit import AuditLog

_log = logging.getLogger(__name__)

BANK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
JOB_KIND = re.compile(r"^[a-z_]{1,32}$")
BANKS_FILE = "banks.json"
AUDIT_FILE = "governance/audit.jsonl"
CONSENTS_FILE = "governance/consents.jsonl"
#: Per-bank query budgets: ``{"default": {per_day, per_month, per_enterprise_per_month} | null,
#: "banks": {NAME: {...}}}``; without the file every bank gets the default limits.
BUDGETS_FILE = "governance/budgets.json"
BUDGET_LEDGER_FILE = "governance/budget_ledger.jsonl"
#: The center's dated risk-event records (``id, event_type, date``) for post-loan monitoring,
#: written by ``serve --center-events / --center-previous`` (:func:`import_risk_events`).
RISK_EVENTS_FILE = "governance/risk_events.csv"
ACTOR = "credit_center"


def _run_gone(exc: BaseException) -> bool:
    """The SuperLink no longer accepts this run's token (the run was stopped or finished)."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) in (401, 403)


def check_bank_name(name: str) -> str:
    if not isinstance(name, str) or not BANK_NAME.match(name):
        raise DataValidationError(
            "name", f"{name!r}: use 1-64 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    return name


# --- which node is which bank ----------------------------------------------------------------


@dataclass(frozen=True)
class BankRecord:
    name: str
    node_id: int
    public_key_pem: str  # the key the node authenticates with (SubjectPublicKeyInfo PEM)


class BankDirectory:
    """The center's registry of banks: ``WORKDIR/banks.json`` (name -> node id, public key).

    Written by ``jointcredit bank register``; re-read by the running service, so registering a
    bank does not need a restart.
    """

    def __init__(self, workdir: str | Path) -> None:
        self.path = Path(workdir) / BANKS_FILE

    def load(self) -> dict[str, BankRecord]:
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        return {
            name: BankRecord(name, int(item["node_id"]), str(item["public_key_pem"]))
            for name, item in raw.items()
        }

    def save(self, banks: dict[str, BankRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            b.name: {"node_id": b.node_id, "public_key_pem": b.public_key_pem}
            for b in sorted(banks.values(), key=lambda b: b.name)
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path)

    def add(self, record: BankRecord) -> None:
        check_bank_name(record.name)
        banks = self.load()
        if record.name in banks:
            raise DataValidationError("name", f"bank {record.name!r} is already registered")
        if any(b.node_id == record.node_id for b in banks.values()):
            raise DataValidationError(
                "public_key", "this key is already registered to another bank"
            )
        banks[record.name] = record
        self.save(banks)

    def remove(self, name: str) -> BankRecord:
        banks = self.load()
        if name not in banks:
            raise DataValidationError("name", f"no bank named {name!r} is registered")
        record = banks.pop(name)
        self.save(banks)
        return record

    def online(self, nodes: Iterable[Any]) -> dict[str, int]:
        """Registered banks whose node is online, by name -> node id.

        A node counts only if both its id and the public key it authenticated with match the
        registration: a node registered behind the center's back (e.g. through Flower's control
        API) is ignored.
        """
        by_node = {b.node_id: b for b in self.load().values()}
        found: dict[str, int] = {}
        for node in nodes:
            record = by_node.get(int(node.node_id))
            if record is None:
                continue
            key = bytes(getattr(node, "public_key", b"") or b"")
            if key and _normalise_pem(key) != _normalise_pem(record.public_key_pem.encode()):
                _log.warning(
                    "node %s does not present the key registered for %s", node.node_id, record.name
                )
                continue
            found[record.name] = int(node.node_id)
        return found


def _normalise_pem(data: bytes) -> bytes:
    return b"".join(data.split())


def load_budget_limits(path: Path) -> tuple[Any, dict[str, Any]]:
    """``(default limits, {bank: limits})`` from the center's budgets file (see BUDGETS_FILE)."""
    from jointcredit.scoring.budget import BudgetLimits

    if not path.exists():
        return BudgetLimits(), {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataValidationError(str(path), f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("banks", {}), dict):
        raise DataValidationError(str(path), "expected {'default': {...}, 'banks': {NAME: {...}}}")
    default = raw.get("default", {})
    return (
        None if default is None else BudgetLimits.from_dict(default),
        {check_bank_name(b): BudgetLimits.from_dict(v) for b, v in raw.get("banks", {}).items()},
    )


def read_risk_events(path: str | Path) -> Any:
    """The center's event records (``id, event_type, date``) as written by
    :func:`import_risk_events`; :class:`~jointcredit.monitor.events.CenterMonitor` validates
    them."""
    return read_id_frame(path, "id", "center_events")


def import_risk_events(
    workdir: str | Path,
    *,
    events: str | Path | None = None,
    previous: Iterable[str | Path] = (),
    current: str | Path | None = None,
    as_of: str | None = None,
    rules: dict[str, Any] | None = None,
    id_col: str = "id",
) -> int:
    """Write the center's risk-event records for post-loan monitoring; returns their number.

    Either dated records (``events``: CSV ``id, event_type, date``) or the events detected
    (:func:`~jointcredit.monitor.events.detect_events`) between the center's monthly tables:
    ``previous`` (oldest first, one month apart) and ``current`` (the table dated ``as_of``;
    the earlier ones count back in month ends). Runs at the center, on its own data; banks only
    ever receive flags through the ``risk_events`` protocol, filtered by their consent.
    """
    import pandas as pd

    from jointcredit.monitor.events import EVENT_COLUMNS, CenterMonitor, EventRules, detect_events
    from jointcredit.scoring.consent import ConsentRegistry

    previous = [Path(p) for p in previous]
    if events is not None and previous:
        raise DataValidationError(
            "center_events", "give dated event records or previous monthly tables, not both"
        )
    if events is not None:
        frame = read_id_frame(events, id_col, "center_events")
    elif previous:
        if current is None or not as_of:
            raise DataValidationError(
                "center_as_of", "events from monthly tables need the date of the current table"
            )
        day = pd.Timestamp(as_of).normalize()
        tables = [read_id_frame(p, id_col, "center_previous") for p in previous]
        tables.append(read_id_frame(current, id_col, "data"))
        dates = [day - pd.offsets.MonthEnd(len(tables) - 1 - i) for i in range(len(tables))]
        dates[-1] = day
        rule = EventRules.from_dict(rules) if rules else None
        frame = detect_events(list(zip(dates, tables, strict=True)), rule)
    else:
        raise DataValidationError("center_events", "nothing to import")
    # Validate now (types, dates) rather than at a bank's first monitoring job.
    checked = CenterMonitor(
        bank_id="import", consents=ConsentRegistry(None), events=frame[list(EVENT_COLUMNS)]
    ).events
    path = Path(workdir) / RISK_EVENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    out = checked.assign(date=pd.to_datetime(checked["date"]).dt.strftime("%Y-%m-%d"))
    out.to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(path)
    return int(len(out))


# --- per-bank state at the center ------------------------------------------------------------


class CenterStore:
    """The center's per-bank party state, on the center's own disk (never sent anywhere)."""

    def __init__(self, workdir: str | Path, table: PartyTable) -> None:
        self.root = Path(workdir) / "banks"
        self.table = table
        self._lock = threading.Lock()

    def bank_dir(self, name: str) -> Path:
        path = self.root / check_bank_name(name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def party(self, name: str) -> CenterParty:
        party = CenterParty(self.table)
        path = self.bank_dir(name) / "party.pkl"
        if path.exists():
            with open(path, "rb") as fh:
                state = pickle.load(fh)  # noqa: S301 - the center's own file
            party.aligned_ids = state.get("aligned_ids")
            party.model_parts = dict(state.get("model_parts", {}))
        return party

    def save(self, name: str, party: CenterParty) -> None:
        path = self.bank_dir(name) / "party.pkl"
        state = {"aligned_ids": party.aligned_ids, "model_parts": party.model_parts}
        tmp = path.with_suffix(".tmp")
        with self._lock, open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    def write_job(self, name: str, record: dict) -> None:
        path = self.bank_dir(name) / "jobs" / f"{record['job_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


# --- the service -----------------------------------------------------------------------------


@dataclass
class ServiceConfig:
    """How the center serves. ``hold``: how long a bank may hold a poll open waiting for a job
    (a long poll: jobs start immediately, idle banks cost one message per ``hold`` seconds)."""

    workdir: Path
    data: Path
    id_col: str = "id"
    id_kind: str = "uscc"
    hold: float = 10.0
    step_timeout: float = 600.0
    poll_backoff: float = 5.0
    allowed_protocols: tuple[str, ...] | None = None
    plugins: tuple[str, ...] = ()

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> ServiceConfig:
        """Build from a Flower run config (``flwr run ... -c workdir=... data=...``)."""
        try:
            workdir, data = run_config["workdir"], run_config["data"]
        except KeyError as exc:
            raise DeploymentError(f"run config lacks {exc.args[0]!r}") from None
        allowed = str(run_config.get("protocols", "")).strip()
        plugins = str(run_config.get("plugins", "")).strip()
        return cls(
            workdir=Path(str(workdir)),
            data=Path(str(data)),
            id_col=str(run_config.get("id-col", "id")),
            id_kind=str(run_config.get("id-kind", "uscc")),
            hold=float(run_config.get("hold", 10.0)),
            step_timeout=float(run_config.get("step-timeout", 600.0)),
            allowed_protocols=tuple(allowed.split(",")) if allowed else None,
            plugins=tuple(plugins.split(",")) if plugins else (),
        )


class CenterService:
    """Polls registered banks, runs their jobs' protocol steps, records what happened."""

    def __init__(self, config: ServiceConfig, table: PartyTable | None = None) -> None:
        self.config = config
        for module in config.plugins:
            importlib.import_module(module)
        if table is None:
            table = load_party_table(config.data, id_col=config.id_col, id_kind=config.id_kind)
        self.directory = BankDirectory(config.workdir)
        self.store = CenterStore(config.workdir, table)
        self.audit = AuditLog(Path(config.workdir) / AUDIT_FILE)
        self.jobs: dict[str, threading.Thread] = {}
        self.finished: list[dict] = []  # job records, for tests and the operator's status view
        #: Grows with every :meth:`serve` (every service run); sent with each poll so a bank can
        #: tell a poll of this service from a stale one of a service it replaced.
        self.epoch = 0
        self._stop = threading.Event()

    # main loop ----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def serve(
        self, grid: Grid, stop: threading.Event | None = None, *, refresh: float = 2.0
    ) -> None:
        """Serve until ``stop`` (or :meth:`stop`) is set."""
        stop = stop or self._stop
        grid = grid if isinstance(grid, SharedGrid) else SharedGrid(grid)
        # Wall-clock nanoseconds, so it also grows across restarts of the center's process.
        self.epoch = epoch = max(time.time_ns(), self.epoch + 1)
        outstanding: dict[str, tuple[str, int, float]] = {}  # bank -> (message id, node, sent)
        not_before: dict[str, float] = {}
        online: dict[str, int] = {}
        last_refresh = 0.0
        _log.info("credit center serving from %s", self.config.workdir)
        while not stop.is_set() and not self._stop.is_set():
            now = time.monotonic()
            if now - last_refresh >= refresh:
                try:
                    online = self.directory.online(grid.get_nodes())
                except Exception as exc:  # noqa: BLE001 - keep serving through a SuperLink hiccup
                    if _run_gone(exc):
                        _log.warning("the service run ended (stopped from outside?): %s", exc)
                        break
                    _log.warning("could not list nodes: %s", exc)
                last_refresh = now
            for name, node_id in online.items():
                busy = name in outstanding or (name in self.jobs and self.jobs[name].is_alive())
                if busy or now < not_before.get(name, 0.0):
                    continue
                request = codec.pack({"op": "poll", "hold": self.config.hold, "epoch": epoch})
                try:
                    message_id = push(
                        grid, node_id, CONTROL, request, ttl=self.config.hold + TTL_MARGIN
                    )
                except JointCreditError as exc:
                    _log.warning("bank %s: poll not sent: %s", name, exc)
                    not_before[name] = now + self.config.poll_backoff
                    continue
                outstanding[name] = (message_id, node_id, now)
            self._collect_polls(grid, outstanding, not_before, epoch)
            time.sleep(0.02)
        for thread in list(self.jobs.values()):
            thread.join(timeout=5)

    def _collect_polls(
        self,
        grid: Grid,
        outstanding: dict[str, tuple[str, int, float]],
        not_before: dict[str, float],
        epoch: int,
    ) -> None:
        if not outstanding:
            return
        try:
            replies = collect(grid, [m for m, _, _ in outstanding.values()])
        except Exception as exc:  # noqa: BLE001
            if _run_gone(exc):
                outstanding.clear()
                return
            _log.warning("could not pull replies: %s", exc)
            return
        now = time.monotonic()
        for name, (message_id, node_id, sent) in list(outstanding.items()):
            reply = replies.get(message_id)
            if reply is None:
                if now - sent > self.config.hold + TTL_MARGIN:
                    _log.warning("bank %s: poll expired without reply", name)
                    del outstanding[name]
                    not_before[name] = now + self.config.poll_backoff
                continue
            del outstanding[name]
            try:
                answer = codec.unpack(reply_blob(reply, node_id, "poll"))
            except JointCreditError as exc:
                _log.warning("bank %s: poll failed: %s", name, exc)
                not_before[name] = now + self.config.poll_backoff
                continue
            if isinstance(answer, dict) and answer.get("state") == "step":
                self._start_job(grid, name, node_id, answer, epoch)

    # one job ------------------------------------------------------------------------------

    def _start_job(self, grid: Grid, name: str, node_id: int, step: dict, epoch: int) -> None:
        thread = threading.Thread(
            target=self._run_job,
            args=(grid, name, node_id, step, epoch),
            name=f"job-{name}",
            daemon=True,
        )
        self.jobs[name] = thread
        thread.start()

    def _control(self, grid: Grid, node_id: int, request: dict) -> dict:
        blob = request_reply(
            grid, node_id, CONTROL, codec.pack(request), timeout=self.config.hold + TTL_MARGIN
        )
        answer = codec.unpack(blob)
        if not isinstance(answer, dict) or "state" not in answer:
            raise MalformedMessageError("control reply: expected a dict with 'state'")
        return answer

    def _run_job(self, grid: Grid, name: str, node_id: int, step: dict, epoch: int) -> None:
        # The job id and kind come from the bank: they name files here, so check them first.
        job_id, kind = step.get("job_id"), step.get("kind")
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            _log.warning("bank %s: refused a job with a malformed id", name)
            return
        if not isinstance(kind, str) or not JOB_KIND.match(kind):
            kind = "unknown"
        record: dict[str, Any] = {
            "job_id": job_id,
            "bank": name,
            "node_id": node_id,
            "kind": kind,
            "steps": [],
            "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._audit("job_started", name, job_id=job_id, kind=record["kind"], node_id=node_id)
        start = time.perf_counter()
        party = self.store.party(name)
        transcript = Transcript()
        transport = RecordingTransport(
            FlowerTransport(grid, node_id, timeout=self.config.step_timeout, group_id=job_id[:32]),
            transcript,
        )
        channel: CenterChannel | None = None
        setup_error: JointCreditError | None = None
        try:
            party.services.update(self.services_for(name))
        except JointCreditError as exc:  # e.g. a broken governance file: every step says so
            setup_error = exc
        try:
            while True:
                if step.get("job_id") != job_id:
                    raise MalformedMessageError("control reply belongs to another job")
                if channel is None:
                    channel = CenterChannel(transport).open()
                outcome = self._run_step(name, party, channel, step, setup_error)
                record["steps"].append(outcome)
                if outcome["status"] != "ok":
                    channel = None  # the session may be out of step: start a fresh one
                self.store.save(name, party)
                request = {
                    "op": "poll",
                    "hold": self.config.hold,
                    "epoch": epoch,
                    "job_id": job_id,
                    "outcome": outcome,
                }
                answer = self._control(grid, node_id, request)
                busy_since = time.monotonic()
                while answer["state"] == "busy":  # the bank computes locally between steps
                    if time.monotonic() - busy_since > self.config.step_timeout:
                        raise PartyUnavailableError(
                            f"the bank computed for more than {self.config.step_timeout:.0f} s "
                            "between steps"
                        )
                    answer = self._control(
                        grid,
                        node_id,
                        {"op": "poll", "hold": self.config.hold, "epoch": epoch, "job_id": job_id},
                    )
                if answer["state"] == "step":
                    step = answer
                    continue
                if answer["state"] == "done":
                    record["status"] = str(answer.get("status", "?"))
                    record["bank_summary"] = answer.get("summary", {})
                else:
                    record["status"] = "failed"
                    record["error"] = {
                        "type": "DeploymentError",
                        "message": "the bank's job ended without reporting",
                    }
                break
        except (JointCreditError, OSError) as exc:
            record["status"] = "failed"
            record["error"] = {"type": type(exc).__name__, "message": str(exc)}
            _log.error("bank %s, job %s failed: %s: %s", name, job_id, type(exc).__name__, exc)
        except Exception as exc:  # noqa: BLE001 - one bank's failure must not stop the service
            record["status"] = "failed"
            record["error"] = {"type": "InternalError", "message": repr(exc)}
            _log.error("bank %s, job %s crashed:\n%s", name, job_id, traceback.format_exc())
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["round_trips"] = transcript.round_trips
        record["bytes_center_to_bank"] = transcript.bytes_sent(Role.CENTER)
        record["bytes_bank_to_center"] = transcript.bytes_sent(Role.BANK)
        self.store.write_job(name, record)
        self.finished.append(record)
        self._audit(
            "job_finished" if record["status"] == "ok" else "job_failed",
            name,
            job_id=job_id,
            status=record["status"],
            steps=len(record["steps"]),
            round_trips=record["round_trips"],
            seconds=record["seconds"],
            error=(record.get("error") or {}).get("type"),
        )

    def services_for(self, name: str) -> dict[str, Any]:
        """The center-local services this bank's protocol halves get (see ``CenterParty``).

        ``name`` is the bank the center registered for the node that authenticated; the
        consent filter and the query budget of the scoring gate use it, never a name a bank
        puts in a message. The gate is configured when the center holds a consent registry
        (``serve --consents``): consents, budgets and the audit log are re-read per job, so
        changes apply without a restart. So is post-loan monitoring (:meth:`center_monitor`),
        whose consent check uses the same name.
        """
        from jointcredit.scoring.encrypted import SERVICE_BANK_ID, SERVICE_GATE

        services: dict[str, Any] = {SERVICE_BANK_ID: check_bank_name(name)}
        gate = self.scoring_gate()
        if gate is not None:
            services[SERVICE_GATE] = gate
        monitor = self.center_monitor(name)
        if monitor is not None:
            from jointcredit.monitor.events import SERVICE_KEY

            services[SERVICE_KEY] = monitor
        return services

    def center_monitor(self, name: str) -> Any:
        """Post-loan monitoring for bank ``name`` (the authenticated one), or None.

        Configured when the center holds a consent registry: the ``risk_events`` protocol then
        sends this bank the flags of :data:`RISK_EVENTS_FILE` only for enterprises whose
        ``post_loan_monitoring`` consent names this bank. Re-read per job, like the gate.
        """
        from jointcredit.monitor.events import CenterMonitor
        from jointcredit.scoring.consent import ConsentRegistry

        workdir = Path(self.config.workdir)
        if not (workdir / CONSENTS_FILE).exists():
            return None
        consents = ConsentRegistry(workdir / CONSENTS_FILE, audit=self.audit)
        kwargs: dict[str, Any] = {}
        if (workdir / RISK_EVENTS_FILE).exists():
            kwargs["events"] = read_risk_events(workdir / RISK_EVENTS_FILE)
        return CenterMonitor(
            bank_id=check_bank_name(name), consents=consents, audit=self.audit, actor=ACTOR,
            **kwargs,
        )  # fmt: skip

    def scoring_gate(self) -> Any:
        """The center's consent / budget / audit gate, or None without a consent registry."""
        from jointcredit.scoring.budget import QueryBudget
        from jointcredit.scoring.consent import ConsentRegistry
        from jointcredit.scoring.gate import ScoringGate

        workdir = Path(self.config.workdir)
        if not (workdir / CONSENTS_FILE).exists():
            return None
        default, limits = load_budget_limits(workdir / BUDGETS_FILE)
        budget = QueryBudget(
            limits, default=default, path=workdir / BUDGET_LEDGER_FILE, audit=self.audit
        )
        consents = ConsentRegistry(workdir / CONSENTS_FILE, audit=self.audit)
        return ScoringGate(consents, budget, self.audit, actor=ACTOR)

    def _run_step(
        self,
        name: str,
        party: CenterParty,
        channel: CenterChannel,
        step: dict,
        setup_error: JointCreditError | None = None,
    ) -> dict:
        protocol = str(step.get("protocol", ""))
        index = step.get("index")
        outcome: dict[str, Any] = {"index": index, "protocol": protocol}
        start = time.perf_counter()
        try:
            if setup_error is not None:
                raise setup_error
            allowed = self.config.allowed_protocols
            if protocol not in registry.protocols() or (
                allowed is not None and protocol not in allowed
            ):
                raise DeploymentError(f"protocol {protocol!r} is not served by this credit center")
            center_half = registry.center_side(protocol, party)
            try:
                center_half.run(channel.bind(protocol))
            except Exception:
                # Keep what the step finished (e.g. complete trees), so the bank can resume.
                try:
                    if checkpoint.keep_center(party, center_half):
                        self.store.save(name, party)
                except Exception:  # noqa: BLE001 - the step's own error is the one to report
                    _log.exception("bank %s: could not keep a checkpoint", name)
                raise
            outcome["status"] = "ok"
        except PartyUnavailableError:
            raise  # nobody to tell; the job ends here
        except RemotePartyError as exc:
            outcome["status"] = "failed"
            outcome["error"] = {"type": exc.remote_type, "message": exc.remote_message}
        except JointCreditError as exc:
            outcome["status"] = "failed"
            outcome["error"] = {"type": type(exc).__name__, "message": str(exc)}
            _log.warning("bank %s: step %s (%s) failed: %s", name, index, protocol, exc)
        except Exception:  # noqa: BLE001 - a bug in a center half; details stay in our log
            outcome["status"] = "failed"
            outcome["error"] = {
                "type": "InternalError",
                "message": "the credit center failed to run this step",
            }
            _log.error(
                "bank %s: step %s (%s) crashed:\n%s", name, index, protocol, traceback.format_exc()
            )
        outcome["seconds"] = round(time.perf_counter() - start, 3)
        self._audit("step_finished", name, protocol=protocol, index=index, status=outcome["status"])
        return outcome

    def _audit(self, action: str, bank: str, **details: Any) -> None:
        try:
            self.audit.append(ACTOR, action, {"bank": bank, **details})
        except JointCreditError as exc:
            _log.error("audit log: %s", exc)


# --- the Flower app --------------------------------------------------------------------------

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Serve banks until the run is stopped (``flwr stop``) or the stop file appears."""
    config = ServiceConfig.from_run_config(dict(context.run_config))
    service = CenterService(config)
    stop = threading.Event()
    stop_file = Path(config.workdir) / "run" / "stop"

    def watch() -> None:
        while not stop.wait(1.0):
            if stop_file.exists():
                stop.set()

    threading.Thread(target=watch, daemon=True).start()
    service.serve(grid, stop)
