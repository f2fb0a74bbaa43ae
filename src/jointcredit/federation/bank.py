"""The bank's side of a deployment: the job runner and the relay its Flower node uses.

A bank job (align, train, score) is bank-side Python: an estimator's ``fit`` calls
``session.run(side)`` once per joint protocol, exactly as in process. In a deployment the job runs
in the bank's ``jointcredit run`` process with a :class:`FederatedSession`. The credit center
drives every protocol, so it has to learn what to run next: it polls the bank's node, and the
node's ClientApp relays the poll to the job runner over a local socket::

    credit center                 bank node (ClientApp)           bank job runner
    query.control {poll}   --->   relay(socket)   ----------->    waits for the next step
                           <---   {state: step, protocol} <---    session.run(side) published it
    query.envelope ...     <-->   relay(socket)   <---------->    BankEndpoint (in memory)
    query.control {poll, outcome of the step}  -------------->    session.run(side) returns
                           <---   {state: step ...} or {state: done, summary}

Why a runner process rather than state pickled between ClientApp invocations: the bank half,
its keys and the bank's table stay in one process's memory for the whole job, whatever Flower's
isolation mode (a fresh ClientApp process per message, or a long-lived worker); nothing but
envelopes leaves it. The socket is a Unix socket in the bank's own work directory (mode 0700),
and the relay must also prove knowledge of a per-job key (``multiprocessing.connection``'s
HMAC challenge) before the runner reads a byte.

The relay answers a poll even when no job runs (``{"state": "idle"}``), after waiting up to
the poll's ``hold`` seconds for one to start: the center's poll then doubles as a long poll and a
job starts without waiting for the next poll cycle.

Service hand-over. A poll may outlive the center's service that sent it: the service run is
stopped (``flwr stop``, a restart) while its long poll waits in the bank's relay, a job starts,
and the step goes out in the reply to a poll nobody reads any more. Two rules keep such a job
alive:

* every poll carries the sending service's ``epoch`` (a number that grows with every service
  start); the runner ignores polls from an epoch older than one it has already seen, so a
  stale poll never takes or disturbs a step a newer service drives;
* a step counts as *started* only once the center's first protocol message for it arrived
  (the session ``hello`` does not count: it touches no bank half). When a fresh poll shows the
  center does not know about a step it was handed (no ``job_id``/outcome), an unstarted step is
  simply offered again; only a step whose bank half already answered is reported abandoned.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

import numpy as np

from jointcredit.errors import (
    DeploymentError,
    JointCreditError,
    MalformedMessageError,
    PartyUnavailableError,
    ProtocolError,
    RemotePartyError,
    UnexpectedMessageError,
)
from jointcredit.federation.transport import CONTROL, ENVELOPE, MAX_BLOB_BYTES
from jointcredit.parties import BankParty
from jointcredit.protocol import codec
from jointcredit.protocol.channel import Transcript
from jointcredit.protocol.envelope import Envelope, Role
from jointcredit.protocol.session import SESSION_PROTOCOL, BankEndpoint, BankSide

RUN_DIR = "run"
SOCKET_FILE = "bank.sock"
KEY_FILE = "bank.key"
LOCK_FILE = "job.lock"
#: Longest a poll may be held open by the bank (the center asks for less).
MAX_HOLD = 30.0
#: How often one step is offered again after the service it was handed to lost it unstarted
#: (a hand-over needs one; more means the center keeps failing before it starts the step).
MAX_REOFFERS = 3
_OK, _ERR = b"\x00", b"\x01"
_OP_POLL, _OP_ENVELOPE = b"P", b"E"
# Unix socket paths are limited to 107 bytes on Linux.
_MAX_SOCKET_PATH = 100

_log = logging.getLogger(__name__)


def run_dir(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / RUN_DIR


# --- the relay (runs in the ClientApp, in whatever process Flower gives it) ------------------


def relay(workdir: str | os.PathLike, message_type: str, blob: bytes) -> bytes:
    """Forward one Flower message's blob to the bank's job runner and return its answer.

    ``workdir`` is the node's data path. A control poll with no job running is answered
    ``idle`` (after holding up to the poll's ``hold`` seconds for a job to start); an envelope
    with no job running is refused with :class:`DeploymentError`.
    """
    directory = run_dir(workdir)
    if message_type == CONTROL:
        request = codec.unpack(blob)
        hold = _hold_of(request)
        deadline = time.monotonic() + hold
        while not (directory / SOCKET_FILE).exists():
            if time.monotonic() >= deadline:
                return codec.pack({"state": "idle"})
            time.sleep(0.05)
        return _call_runner(directory, _OP_POLL + blob)
    if message_type == ENVELOPE:
        if not (directory / SOCKET_FILE).exists():
            raise DeploymentError("no job is running at this bank (envelope refused)")
        return _call_runner(directory, _OP_ENVELOPE + blob)
    raise MalformedMessageError(f"unexpected Flower message type {message_type!r}")


def _hold_of(request: Any) -> float:
    if not isinstance(request, dict) or request.get("op") != "poll":
        raise MalformedMessageError("control message: expected {'op': 'poll', ...}")
    hold = request.get("hold", 0.0)
    if not isinstance(hold, (int, float)) or not 0 <= hold <= MAX_HOLD:
        raise MalformedMessageError(f"control message: hold must be in [0, {MAX_HOLD}] seconds")
    return float(hold)


def _epoch_of(request: dict) -> int | None:
    """The sending service's epoch; None from a center that does not send one."""
    epoch = request.get("epoch")
    if epoch is None:
        return None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise MalformedMessageError("control message: epoch must be a non-negative integer")
    return epoch


def _touches_bank_half(envelope: bytes) -> bool:
    """False for the session handshake, which only sets up keys (no protocol state changes)."""
    try:
        return Envelope.from_bytes(envelope).protocol != SESSION_PROTOCOL
    except JointCreditError:
        return True  # the endpoint refuses it; count it, to be safe


def _call_runner(directory: Path, frame: bytes) -> bytes:
    try:
        key = (directory / KEY_FILE).read_bytes()
        with contextlib.closing(
            Client(str(directory / SOCKET_FILE), "AF_UNIX", authkey=key)
        ) as conn:
            conn.send_bytes(frame)
            answer = conn.recv_bytes(MAX_BLOB_BYTES + 1024)
    except (OSError, EOFError, AuthenticationError) as exc:
        # The runner ended between our check and the call (or its key changed): no job.
        raise DeploymentError(f"the bank's job runner is not reachable: {exc}") from exc
    if answer[:1] == _OK:
        return answer[1:]
    error = codec.unpack(answer[1:])
    raise RunnerRefusal(str(error.get("type")), str(error.get("message")))


class RunnerRefusal(JointCreditError):
    """The job runner refused a message; re-raised in the relay under the runner's type name."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        super().__init__(message)


# --- the job runner (the bank's `jointcredit run` process) ----------------------------------


class FederatedSession:
    """The bank modeler's session in a deployment; estimators use it like ``JointSession``.

    ``run(side)`` publishes the protocol as the job's next step, waits for the credit center to
    drive it to the end, and returns ``None`` (the center's own result stays at the center).
    ``transcript`` records every envelope the bank received and sent.
    """

    def __init__(self, runner: BankRunner) -> None:
        self._runner = runner
        self.job_id = runner.job_id
        self.bank = runner.bank
        self.transcript = runner.transcript
        self.timings: dict[str, float] = {}

    @property
    def center(self) -> Any:
        raise DeploymentError("the credit center's party is not reachable from the bank")

    @property
    def results_dir(self) -> Path:
        """Where this job's files go (``WORKDIR/results/JOB_ID``)."""
        return self._runner.workdir / "results" / self.job_id

    def run(self, side: BankSide) -> None:
        from jointcredit.federation import checkpoint

        start = time.perf_counter()
        try:
            self._runner.run_step(side)
        except JointCreditError:
            # Keep what the step finished (e.g. committed trees) for `run --resume JOB_ID`.
            try:
                checkpoint.keep_bank(self.results_dir / checkpoint.CHECKPOINT_DIR, side)
            except Exception:  # noqa: BLE001 - the step's own error is the one to report
                _log.exception("job %s: could not keep a checkpoint", self.job_id)
            raise
        finally:
            self.timings[side.protocol] = self.timings.get(side.protocol, 0.0) + (
                time.perf_counter() - start
            )

    def align(self, *, reveal_to: str = "both") -> np.ndarray:
        from jointcredit.psi.ecdh import PsiBankSide

        self.run(PsiBankSide(self.bank, reveal_to=reveal_to))
        return self.bank.require_aligned()

    @property
    def aligned_ids(self) -> np.ndarray:
        return self.bank.require_aligned()


class BankRunner:
    """Hosts one job's bank halves and answers the center's polls and envelopes for it.

    Use as a context manager around the job::

        with BankRunner(bank, workdir, kind="align") as runner:
            runner.session.align()
            runner.finish("ok", {"intersection": ...})
    """

    def __init__(
        self,
        bank: BankParty,
        workdir: str | os.PathLike,
        *,
        kind: str,
        start_timeout: float = 120.0,
        step_timeout: float = 3600.0,
        finish_timeout: float = 60.0,
    ) -> None:
        self.bank = bank
        self.workdir = Path(workdir)
        self.kind = kind
        self.job_id = uuid.uuid4().hex
        self.start_timeout = start_timeout
        self.step_timeout = step_timeout
        self.finish_timeout = finish_timeout
        self.transcript = Transcript()
        self.endpoint = BankEndpoint()
        self.session = FederatedSession(self)
        self._cond = threading.Condition()
        self._index = 0
        self._pending: dict | None = None  # published step, not yet fetched by the center
        self._pending_since = 0.0
        self._in_flight: int | None = None  # step index the center is driving
        self._handed: dict | None = None  # the step in flight, as handed out
        self._started = False  # the center's first protocol message for it arrived
        self._step_reoffers = 0  # of the step in flight
        self._epoch = -1  # newest service epoch seen
        self.reoffers = 0  # steps offered again after a hand-over (for logs and tests)
        self._outcome: dict | None = None
        self._done: dict | None = None
        self._done_fetched = threading.Event()
        self._fetched_any = False
        self._fetched_at = 0.0
        self._closed = False
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._lock_fh: Any = None

    # lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> BankRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> BankRunner:
        directory = run_dir(self.workdir)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        socket_path = directory / SOCKET_FILE
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            raise DeploymentError(
                f"workdir path too long for a local socket ({len(str(socket_path))} > "
                f"{_MAX_SOCKET_PATH} characters): use a shorter --workdir"
            )
        self._lock_fh = open(directory / LOCK_FILE, "w")  # noqa: SIM115 - held for the job
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise DeploymentError(f"a job is already running in {self.workdir}") from None
        socket_path.unlink(missing_ok=True)
        key = secrets.token_bytes(32)
        key_path = directory / KEY_FILE
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        self._listener = Listener(str(socket_path), "AF_UNIX", authkey=key)
        self._thread = threading.Thread(target=self._serve, name="bank-runner", daemon=True)
        self._thread.start()
        _log.info("job %s (%s) waiting for the credit center", self.job_id, self.kind)
        return self

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        directory = run_dir(self.workdir)
        (directory / SOCKET_FILE).unlink(missing_ok=True)
        (directory / KEY_FILE).unlink(missing_ok=True)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    # the job's side ------------------------------------------------------------------------

    def run_step(self, side: BankSide) -> None:
        """Publish ``side.protocol`` as the next step and block until the center finished it."""
        with self._cond:
            if self._in_flight is not None or self._pending is not None:
                raise ProtocolError("a protocol step is already running in this job")
            self.endpoint.attach(side)
            self._index += 1
            index = self._index
            self._pending = {"protocol": side.protocol, "index": index}
            self._step_reoffers = 0
            self._pending_since = time.monotonic()
            self._outcome = None
            self._cond.notify_all()
            while self._outcome is None and not self._closed:
                waiting_pickup = self._pending is not None
                if waiting_pickup:
                    limit, since, what = self.start_timeout, self._pending_since, "pick up"
                else:
                    limit, since, what = self.step_timeout, self._fetched_at, "finish"
                remaining = since + limit - time.monotonic()
                if remaining <= 0:
                    self._pending = None
                    self._in_flight = None
                    raise PartyUnavailableError(
                        f"the credit center did not {what} step {index} ({side.protocol}) "
                        f"within {limit:.0f} s"
                    )
                self._cond.wait(min(remaining, 1.0))
            if self._closed and self._outcome is None:
                raise DeploymentError("job runner closed while a step was running")
            outcome, self._outcome = self._outcome, None
        if outcome.get("status") != "ok":
            error = outcome.get("error") or {}
            kind = str(error.get("type", "ProtocolError"))
            message = str(error.get("message", "the step failed at the credit center"))
            if kind == "PartyUnavailableError":
                raise PartyUnavailableError(message)
            raise RemotePartyError(kind, message)

    def finish(self, status: str, summary: dict | None = None) -> bool:
        """Tell the center the job ended; wait (bounded) until it has heard. True if it did."""
        with self._cond:
            self._done = {
                "state": "done",
                "job_id": self.job_id,
                "status": status,
                "summary": summary or {},
            }
            self._cond.notify_all()
        if not self._fetched_any:
            return False  # the center never joined; nobody to tell
        return self._done_fetched.wait(self.finish_timeout)

    # the center's side (through the relay) --------------------------------------------------

    def _serve(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                return  # listener closed
            except Exception as exc:  # noqa: BLE001 - a client failing the key challenge
                _log.warning("refused a local connection to the job runner: %s", exc)
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        with contextlib.closing(conn):
            try:
                frame = conn.recv_bytes(MAX_BLOB_BYTES + 1024)
                op, blob = frame[:1], frame[1:]
                if op == _OP_POLL:
                    reply = self._on_poll(codec.unpack(blob))
                elif op == _OP_ENVELOPE:
                    reply = self._on_envelope(blob)
                else:
                    raise MalformedMessageError("unknown relay operation")
                conn.send_bytes(_OK + reply)
            except JointCreditError as exc:
                _log.warning(
                    "job %s: refused a message: %s: %s", self.job_id, type(exc).__name__, exc
                )
                error = codec.pack({"type": type(exc).__name__, "message": str(exc)})
                with contextlib.suppress(OSError):
                    conn.send_bytes(_ERR + error)
            except (OSError, EOFError) as exc:
                _log.warning("job %s: relay connection failed: %s", self.job_id, exc)

    def _on_envelope(self, request: bytes) -> bytes:
        # Verification (MAC, sequence, session) happens in the endpoint; a failure raises before
        # any bank half sees the payload and is reported back as a refusal.
        if _touches_bank_half(request):
            with self._cond:
                if self._in_flight is not None:
                    self._started = True
        self.transcript.record(request)
        reply = self.endpoint.receive(request)
        self.transcript.record(reply)
        self.transcript.round_trips += 1
        return reply

    def _on_poll(self, request: Any) -> bytes:
        hold = _hold_of(request)
        outcome = request.get("outcome")
        job_id = request.get("job_id")
        epoch = _epoch_of(request)
        with self._cond:
            if epoch is not None:
                if epoch < self._epoch:
                    # From a service that has been replaced since (its reply goes nowhere).
                    _log.info("job %s: ignored a poll from a replaced service", self.job_id)
                    return codec.pack({"state": "idle"})
                self._epoch = epoch
            if self._in_flight is not None:
                if outcome is not None and job_id == self.job_id:
                    if not isinstance(outcome, dict) or outcome.get("index") != self._in_flight:
                        raise UnexpectedMessageError("poll: outcome is for another step")
                    self._outcome = dict(outcome)
                elif not self._started and self._step_reoffers < MAX_REOFFERS:
                    # The step went out in the reply to a poll that no running service read
                    # (the service run was handed over, or the poll expired at the center):
                    # nothing of it ran, so this poll gets it instead.
                    self._pending = self._handed
                    self._pending_since = time.monotonic()
                    self._step_reoffers += 1
                    self.reoffers += 1
                    _log.warning(
                        "job %s: step %s was handed to a service that is gone; offering it again",
                        self.job_id,
                        self._in_flight,
                    )
                else:
                    # The center lost track of a step it was driving (restarted, timed out).
                    self._outcome = {
                        "status": "failed",
                        "error": {
                            "type": "PartyUnavailableError",
                            "message": "the credit center abandoned the running step",
                        },
                    }
                self._in_flight = None
                self._handed = None
                self._cond.notify_all()
            deadline = time.monotonic() + hold
            while self._pending is None and self._done is None and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._pending is not None:
                step = self._pending
                self._pending = None
                self._in_flight = step["index"]
                self._handed = step
                self._started = False
                self._fetched_any = True
                self._fetched_at = time.monotonic()
                return codec.pack(
                    {"state": "step", "job_id": self.job_id, "kind": self.kind, **step}
                )
            if self._done is not None:
                self._done_fetched.set()
                return codec.pack(self._done)
            return codec.pack(
                {"state": "busy" if not self._closed else "idle", "job_id": self.job_id}
            )


def run_job(
    bank: BankParty,
    workdir: str | os.PathLike,
    kind: str,
    job: Callable[[FederatedSession], dict],
    **runner_options: Any,
) -> dict:
    """Run ``job(session)`` as one deployment job and return its summary (status, timings...).

    The summary always has ``job_id``, ``kind``, ``status`` ("ok" or "failed"), ``seconds``,
    ``round_trips``, and ``error`` when failed; the job function's own dict is merged in.
    """
    start = time.perf_counter()
    with BankRunner(bank, workdir, kind=kind, **runner_options) as runner:
        summary: dict[str, Any] = {"job_id": runner.job_id, "kind": kind}
        try:
            summary.update(job(runner.session))
            summary["status"] = "ok"
        except JointCreditError as exc:
            summary["status"] = "failed"
            summary["error"] = {"type": type(exc).__name__, "message": str(exc)}
            _log.error("job %s failed: %s: %s", runner.job_id, type(exc).__name__, exc)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        summary["round_trips"] = runner.transcript.round_trips
        summary["bytes_center_to_bank"] = runner.transcript.bytes_sent(Role.CENTER)
        summary["bytes_bank_to_center"] = runner.transcript.bytes_sent(Role.BANK)
        public = {k: summary[k] for k in ("status", "seconds", "round_trips") if k in summary}
        summary["center_notified"] = runner.finish(summary["status"], public)
    return summary
