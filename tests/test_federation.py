"""The Flower layer without a SuperLink: records, transport errors, the bank relay and runner,
and the credit center's service driving real jobs over an in-process loopback grid.

The loopback grid serialises every message with Flower's own object encoding (deflate and
inflate, as the SuperLink stores them) and hands it to the bank's real ClientApp in a thread,
so everything but the HTTP hops runs as in a deployment: envelopes, the relay's Unix socket,
the job runner, the center's polling and job threads. The real multi-process deployment is in
test_deployment.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    Metadata,
    RecordDict,
)
from flwr.app.message import make_message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from jointcredit.data import load_party_table, make_sme_data
from jointcredit.errors import (
    DataValidationError,
    DeploymentError,
    MalformedMessageError,
    PartyUnavailableError,
    RemotePartyError,
)
from jointcredit.federation import bank as bank_mod
from jointcredit.federation import client_app, deploy, fastnode, guardlink, jobs, transport
from jointcredit.federation.server_app import (
    BankDirectory,
    BankRecord,
    CenterService,
    ServiceConfig,
)
from jointcredit.protocol import codec
from jointcredit.protocol.envelope import Envelope
from jointcredit.session import JointSession

# --- a loopback grid -------------------------------------------------------------------------


def _new_message(
    content: RecordDict, node_id: int, message_type: str, message_id: str = ""
) -> Message:
    """An instruction message, without Flower's process-global task identity."""
    metadata = Metadata(
        run_id=7,
        message_id=message_id,
        src_node_id=1,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id="",
        created_at=time.time(),
        ttl=60.0,
        message_type=message_type,
    )
    return make_message(metadata=metadata, content=content)


def _through_flower(message: Message) -> Message:
    """The message as the other side would see it after Flower stored and delivered it."""
    message.metadata.__dict__["_message_id"] = message.object_id
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}
    copy = inflate_object_from_contents(message.object_id, contents)
    copy.metadata.__dict__["_message_id"] = message.object_id
    return copy


class LoopbackGrid(Grid):
    """Delivers pushed messages to in-process ClientApps, one thread per message.

    ``tamper(node_id, message_type, blob) -> blob`` may rewrite a request on the way;
    ``silent`` holds node ids that stop answering (a bank that hangs); ``down`` holds node ids
    whose messages come back as Flower's "node unavailable" error (a bank that disconnected).
    """

    def __init__(self) -> None:
        self.nodes: dict[int, tuple[Context, str]] = {}
        self.replies: dict[str, Message] = {}
        self.lock = threading.Lock()
        self.tamper = None
        self.silent: set[int] = set()
        self.down: set[int] = set()  # nodes the SuperLink reports offline (heartbeat lapsed)
        self.delivered: list[tuple[int, str]] = []
        self._run = SimpleNamespace(run_id=7)

    def add_node(self, node_id: int, workdir: Path, public_key_pem: str) -> None:
        context = Context(
            run_id=7,
            node_id=node_id,
            node_config={"data-path": str(workdir)},
            state=RecordDict(),
            run_config={},
        )
        self.nodes[node_id] = (context, public_key_pem)

    # Grid API
    def set_run(self, run) -> None:  # noqa: ANN001
        self._run = run

    @property
    def run(self):  # noqa: ANN201
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def get_nodes(self) -> list:
        return [
            SimpleNamespace(node_id=nid, public_key=pem.encode())
            for nid, (_, pem) in self.nodes.items()
        ]

    def push_messages(self, messages) -> list[str]:  # noqa: ANN001
        ids = []
        for message in messages:
            delivered = _through_flower(message)
            ids.append(delivered.metadata.message_id)
            threading.Thread(target=self._deliver, args=(delivered,), daemon=True).start()
        return ids

    def _deliver(self, message: Message) -> None:
        node_id = message.metadata.dst_node_id
        if node_id in self.silent or node_id not in self.nodes:
            return
        message_type = message.metadata.message_type
        if self.tamper is not None:
            blob = transport.message_blob(message)
            changed = self.tamper(node_id, message_type, blob)
            if changed != blob:
                message = _new_message(
                    transport.blob_content(changed),
                    node_id,
                    message_type,
                    message.metadata.message_id,
                )
        if node_id in self.down:
            offline = Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node is offline")
            with self.lock:
                self.replies[message.metadata.message_id] = Message(offline, reply_to=message)
            return
        with self.lock:
            self.delivered.append((node_id, message_type))
        reply = client_app.app(message, self.nodes[node_id][0])
        if node_id in self.silent:
            return
        reply = _through_flower(reply)
        with self.lock:
            self.replies[message.metadata.message_id] = reply

    def pull_messages(self, message_ids) -> list[Message]:  # noqa: ANN001
        with self.lock:
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        raise NotImplementedError


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables():
    data = make_sme_data(n_enterprises=800, n_bank_customers=200, overlap=0.8, seed=11)
    other = make_sme_data(n_enterprises=800, n_bank_customers=150, overlap=0.6, seed=11)
    center = load_party_table(data.center)
    bank_a = load_party_table(data.bank, label_col=data.label_col)
    # Bank B: other customers of the same city (same seed, so the same center) plus strangers.
    bank_b = load_party_table(other.bank.sample(frac=1.0, random_state=5), label_col=data.label_col)
    return center, bank_a, bank_b


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class Federation:
    """A center service and banks over a loopback grid, all in this process."""

    def __init__(self, tmp: Path, center_table, banks: dict, **config) -> None:
        # Unix socket paths must stay short: work in a short temporary directory.
        self.root = tmp
        self.grid = LoopbackGrid()
        self.center_dir = tmp / "c"
        directory = BankDirectory(self.center_dir)
        self.bank_dirs = {}
        for i, name in enumerate(banks, start=101):
            workdir = tmp / name
            workdir.mkdir(parents=True, exist_ok=True)
            pem = _pem()
            directory.add(BankRecord(name, i, pem))
            self.grid.add_node(i, workdir, pem)
            self.bank_dirs[name] = workdir
        self.tables = banks
        defaults = {"hold": 0.3, "step_timeout": 20.0, "poll_backoff": 0.2}
        defaults.update(config)
        self.service = CenterService(
            ServiceConfig(workdir=self.center_dir, data=Path("unused.csv"), **defaults),
            table=center_table,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.service.serve, args=(self.grid, self.stop), kwargs={"refresh": 0.05}
        )
        self.thread.start()

    def run(self, name: str, kind: str, params: dict | None = None, **options) -> dict:
        options.setdefault("start_timeout", 20.0)
        options.setdefault("step_timeout", 20.0)
        options.setdefault("finish_timeout", 5.0)
        return jobs.run_bank_job(
            self.bank_dirs[name], kind, params, table=self.tables[name], **options
        )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.fixture
def short_tmp():
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="jcf"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- records and transport -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 6 * 1024 * 1024 + 3])
def test_blob_survives_flower_serialisation(size):
    data = os.urandom(size)
    grid = SimpleNamespace(run=SimpleNamespace(run_id=1))
    sent = []
    grid.push_messages = lambda messages: sent.extend(messages) or ["id"]
    transport.push(grid, 5, transport.ENVELOPE, data, ttl=10.0)
    delivered = _through_flower(sent[0])
    assert delivered.metadata.dst_node_id == 5
    assert delivered.metadata.message_type == transport.ENVELOPE
    assert transport.message_blob(delivered) == data


def test_malformed_records_are_rejected():
    empty = _new_message(RecordDict({}), 1, "query.envelope")
    with pytest.raises(MalformedMessageError, match="no jc/blob"):
        transport.message_blob(empty)
    floats = Array(dtype="float64", shape=(2,), stype="raw", data=b"\0" * 16)
    wrong = _new_message(RecordDict({"jc": ArrayRecord({"blob": floats})}), 1, "query.envelope")
    with pytest.raises(MalformedMessageError, match="raw bytes"):
        transport.message_blob(wrong)


def test_refusal_record_becomes_remote_party_error():
    refusal = _new_message(
        RecordDict(
            {"jc_error": ConfigRecord({"type": "AuthenticationError", "message": "bad mac"})}
        ),
        1,
        "query.envelope",
    )
    with pytest.raises(RemotePartyError) as info:
        transport.message_blob(refusal)
    assert info.value.remote_type == "AuthenticationError"
    assert "bad mac" in info.value.remote_message


class _StubGrid(SimpleNamespace):
    def __init__(self, push_result, reply=None):
        super().__init__(run=SimpleNamespace(run_id=1), pushed=[])
        self.push_result, self.reply = push_result, reply

    def push_messages(self, messages):
        self.pushed.extend(messages)
        return self.push_result

    def pull_messages(self, ids):
        if self.reply is None:
            return []
        return [self.reply(self.pushed[-1])]


def test_unanswered_request_times_out_with_party_unavailable():
    grid = _StubGrid(["m1"])
    start = time.monotonic()
    with pytest.raises(PartyUnavailableError, match="did not answer"):
        transport.FlowerTransport(grid, 3, timeout=0.3).exchange(b"x")
    assert time.monotonic() - start < 5
    # The message lives a little longer than the wait, so a late reply is not lost silently.
    assert grid.pushed[0].metadata.ttl > 0.3


@pytest.mark.parametrize("result", [[], [None]])
def test_push_refused_by_superlink_is_an_error(result):
    with pytest.raises(PartyUnavailableError, match="did not accept"):
        transport.FlowerTransport(_StubGrid(result), 3, timeout=1).exchange(b"x")


def test_flower_error_replies_are_typed():
    def offline(message):
        return Message(
            Error(code=ErrorCode.NODE_UNAVAILABLE, reason="no heartbeat"), reply_to=message
        )

    def crashed(message):
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="boom"), reply_to=message
        )

    def with_id(fn):
        def reply(message):
            message.metadata.__dict__["_message_id"] = "m1"
            out = fn(message)
            return out

        return reply

    with pytest.raises(PartyUnavailableError, match="no heartbeat"):
        transport.FlowerTransport(_StubGrid(["m1"], with_id(offline)), 3, timeout=2).exchange(b"x")
    with pytest.raises(RemotePartyError, match="boom"):
        transport.FlowerTransport(_StubGrid(["m1"], with_id(crashed)), 3, timeout=2).exchange(b"x")


# --- the bank relay --------------------------------------------------------------------------


def test_relay_without_a_job(short_tmp):
    poll = codec.pack({"op": "poll", "hold": 0.0})
    assert codec.unpack(bank_mod.relay(short_tmp, transport.CONTROL, poll)) == {"state": "idle"}
    with pytest.raises(DeploymentError, match="no job is running"):
        bank_mod.relay(short_tmp, transport.ENVELOPE, b"anything")
    with pytest.raises(MalformedMessageError, match="hold"):
        bank_mod.relay(short_tmp, transport.CONTROL, codec.pack({"op": "poll", "hold": 1e6}))


def test_runner_refuses_a_client_without_the_key(short_tmp, tables):
    from jointcredit.parties import BankParty

    _, bank_a, _ = tables
    with bank_mod.BankRunner(BankParty(bank_a), short_tmp, kind="echo"):
        key_file = short_tmp / "run" / "bank.key"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        key_file.write_bytes(b"wrong key wrong key wrong key !!")
        poll = codec.pack({"op": "poll", "hold": 0.0})
        with pytest.raises(DeploymentError, match="not reachable"):
            bank_mod.relay(short_tmp, transport.CONTROL, poll)


def test_second_job_in_same_workdir_is_refused(short_tmp, tables):
    from jointcredit.parties import BankParty

    _, bank_a, _ = tables
    with (
        bank_mod.BankRunner(BankParty(bank_a), short_tmp, kind="echo"),
        pytest.raises(DeploymentError, match="already running"),
    ):
        bank_mod.BankRunner(BankParty(bank_a), short_tmp, kind="echo").start()


def test_job_without_center_times_out(short_tmp, tables):
    _, bank_a, _ = tables
    summary = jobs.run_bank_job(short_tmp, "echo", {"rounds": 1}, table=bank_a, start_timeout=0.5)
    assert summary["status"] == "failed"
    assert summary["error"]["type"] == "PartyUnavailableError"
    assert "did not pick up" in summary["error"]["message"]
    assert not (short_tmp / "run" / "bank.sock").exists()
    saved = json.loads((Path(summary["results_dir"]) / "result.json").read_text())
    assert saved["status"] == "failed"


def _poll(workdir: Path, hold: float = 0.0, **fields) -> dict:
    """One control poll through the relay, as the center's service sends it."""
    blob = codec.pack({"op": "poll", "hold": hold, **fields})
    return codec.unpack(bank_mod.relay(workdir, transport.CONTROL, blob))


def _step_in_thread(runner, side) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def body():
        try:
            runner.run_step(side)
            result["ok"] = True
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            result["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, result


def test_runner_hand_over_rules(short_tmp, tables):
    """A step handed to a poll of a service that is gone is offered again if nothing of it ran;
    polls from a replaced service never disturb the step a newer service drives; a step whose
    bank half already answered is reported abandoned."""
    from jointcredit.parties import BankParty
    from jointcredit.protocol.channel import InProcessTransport
    from jointcredit.protocol.session import CenterChannel

    _, bank_a, _ = tables
    with bank_mod.BankRunner(
        BankParty(bank_a), short_tmp, kind="echo", start_timeout=10, step_timeout=10
    ) as runner:
        envelope = InProcessTransport(
            lambda blob: bank_mod.relay(short_tmp, transport.ENVELOPE, blob)
        )
        # Step 1 goes to the old service (epoch 5), which dies after the session hello only.
        thread, result = _step_in_thread(runner, jobs.EchoBank(runner.bank, rounds=1))
        first = _poll(short_tmp, hold=5, epoch=5)
        assert first["state"] == "step" and first["index"] == 1
        CenterChannel(envelope).open()
        # The new service (epoch 9) does not know the step: it is offered again, not failed.
        again = _poll(short_tmp, hold=5, epoch=9)
        assert again["state"] == "step" and again["index"] == 1
        assert runner.reoffers == 1 and "error" not in result
        # A late poll of the replaced service is answered idle and changes nothing.
        assert _poll(short_tmp, hold=0.5, epoch=5) == {"state": "idle"}
        channel = CenterChannel(envelope).open().bind("echo")
        assert channel.request("start") == {"rounds": 1, "size": 64}
        assert channel.request("ping", b"p" * 64) == b"p" * 64
        outcome = {"index": 1, "protocol": "echo", "status": "ok"}
        _poll(short_tmp, epoch=9, job_id=runner.job_id, outcome=outcome)
        thread.join(10)
        assert result == {"ok": True}

        # Step 2: its bank half answered before the center lost track of it: abandoned.
        thread, result = _step_in_thread(runner, jobs.EchoBank(runner.bank, rounds=1))
        assert _poll(short_tmp, hold=5, epoch=9)["index"] == 2
        channel = CenterChannel(envelope).open().bind("echo")
        channel.request("start")
        _poll(short_tmp, hold=0.2, epoch=12)
        thread.join(10)
        assert isinstance(result.get("error"), PartyUnavailableError)
        assert "abandoned the running step" in str(result["error"])
        assert runner.reoffers == 1

        # Step 3: a center that keeps losing the step before starting it is not retried forever.
        thread, result = _step_in_thread(runner, jobs.EchoBank(runner.bank, rounds=1))
        for _ in range(bank_mod.MAX_REOFFERS + 1):
            assert _poll(short_tmp, hold=5, epoch=12)["index"] == 3
        _poll(short_tmp, hold=0.2, epoch=12)
        thread.join(10)
        assert "abandoned the running step" in str(result.get("error"))
        assert runner.reoffers == 1 + bank_mod.MAX_REOFFERS
        with pytest.raises(bank_mod.RunnerRefusal, match="epoch") as refused:
            _poll(short_tmp, epoch=-1)
        assert refused.value.type_name == "MalformedMessageError"


def test_job_caught_in_a_service_hand_over_is_served_by_the_new_service(short_tmp, tables):
    """The deployment race: the stopped service's long poll, still held in the bank's relay,
    takes the first step of a job submitted during the hand-over; the new service serves it."""
    center, bank_a, _ = tables
    workdir = short_tmp / "a"
    workdir.mkdir()
    done: dict = {}
    job = threading.Thread(
        target=lambda: done.update(
            jobs.run_bank_job(
                workdir, "echo", {"rounds": 3}, table=bank_a, start_timeout=20, step_timeout=20
            )
        ),
        daemon=True,
    )
    job.start()
    stale = _poll(workdir, hold=10, epoch=1)  # its reply goes nowhere: that run was stopped
    assert stale["state"] == "step"
    fed = Federation(short_tmp, center, {"a": bank_a})
    try:
        job.join(30)
    finally:
        fed.close()
    assert done["status"] == "ok", done
    assert done["round_trips"] == 1 + 4
    assert [r["status"] for r in fed.service.finished] == ["ok"]


# --- the center's service over the loopback grid ---------------------------------------------


def test_echo_and_alignment_match_in_process(short_tmp, tables):
    center, bank_a, _ = tables
    fed = Federation(short_tmp, center, {"a": bank_a})
    try:
        echo = fed.run("a", "echo", {"rounds": 5, "size": 300})
        assert echo["status"] == "ok", echo
        assert echo["round_trips"] == 1 + 6  # handshake + start + 5 pings
        aligned = fed.run("a", "align")
        assert aligned["status"] == "ok", aligned
    finally:
        fed.close()

    reference = JointSession.in_process(bank_a, center)
    expected = reference.align()
    got = np.loadtxt(
        Path(aligned["results_dir"]) / "intersection.csv", dtype=str, skiprows=1, ndmin=1
    )
    assert list(got) == list(expected)
    assert aligned["intersection_size"] == len(expected)
    # The center keeps the bank's alignment, under that bank's directory only.
    center_party = fed.service.store.party("a")
    assert list(center_party.aligned_ids) == list(reference.center.aligned_ids)
    # The bank's state survives for the next job.
    assert list(jobs.load_bank_party(fed.bank_dirs["a"], bank_a).aligned_ids) == list(expected)
    records = {r["kind"]: r for r in fed.service.finished}
    assert records["align"]["status"] == "ok"
    assert [s["protocol"] for s in records["align"]["steps"]] == ["psi"]
    assert records["align"]["round_trips"] == aligned["round_trips"] == 3
    audit = [json.loads(line) for line in (fed.center_dir / "governance/audit.jsonl").open()]
    assert {"job_started", "step_finished", "job_finished"} <= {e["action"] for e in audit}


def test_two_banks_concurrently_get_their_own_results(short_tmp, tables):
    center, bank_a, bank_b = tables
    fed = Federation(short_tmp, center, {"a": bank_a, "b": bank_b})
    results = {}
    try:
        threads = [
            threading.Thread(target=lambda n=n: results.__setitem__(n, fed.run(n, "align")))
            for n in ("a", "b")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        fed.close()
    for name, table in (("a", bank_a), ("b", bank_b)):
        assert results[name]["status"] == "ok", results[name]
        expected = JointSession.in_process(table, center).align()
        assert list(fed.service.store.party(name).aligned_ids) == list(expected)
        assert results[name]["intersection_size"] == len(expected)
    assert results["a"]["intersection_size"] != results["b"]["intersection_size"]
    # Each bank's node only ever received its own job's messages.
    by_node = {}
    for node_id, _ in fed.grid.delivered:
        by_node[node_id] = by_node.get(node_id, 0) + 1
    assert set(by_node) == {101, 102}


def test_tampered_envelope_is_refused_and_service_continues(short_tmp, tables, caplog):
    center, bank_a, _ = tables
    fed = Federation(short_tmp, center, {"a": bank_a})

    def flip_a_payload_byte(node_id, message_type, blob):
        if message_type == transport.ENVELOPE and Envelope.from_bytes(blob).msg_type == "ping":
            return blob[:-40] + bytes([blob[-40] ^ 1]) + blob[-39:]
        return blob

    try:
        fed.grid.tamper = flip_a_payload_byte
        with caplog.at_level("WARNING"):
            failed = fed.run("a", "echo", {"rounds": 2})
        assert failed["status"] == "failed"
        assert failed["error"]["type"] == "RemotePartyError"
        assert "AuthenticationError" in failed["error"]["message"]
        assert any("AuthenticationError" in r.message for r in caplog.records)
        fed.grid.tamper = None
        again = fed.run("a", "echo", {"rounds": 2})
        assert again["status"] == "ok", again
    finally:
        fed.close()
    statuses = [r["status"] for r in fed.service.finished]
    assert statuses == ["failed", "ok"]


def test_bank_that_disconnects_fails_its_job_only(short_tmp, tables):
    center, bank_a, bank_b = tables
    fed = Federation(short_tmp, center, {"a": bank_a, "b": bank_b}, step_timeout=1.5)
    try:
        pings = {"n": 0}

        def vanish_after_two_pings(node_id, message_type, blob):
            is_ping = (
                message_type == transport.ENVELOPE and Envelope.from_bytes(blob).msg_type == "ping"
            )
            if node_id == 101 and is_ping:
                pings["n"] += 1
                if pings["n"] == 2:
                    fed.grid.silent.add(101)
            return blob

        fed.grid.tamper = vanish_after_two_pings
        lost = fed.run("a", "echo", {"rounds": 5}, step_timeout=4.0)
        assert lost["status"] == "failed"
        assert lost["error"]["type"] == "PartyUnavailableError"
        other = fed.run("b", "align")
        assert other["status"] == "ok", other
    finally:
        fed.close()
    by_bank = {r["bank"]: r for r in fed.service.finished}
    assert by_bank["a"]["status"] == "failed"
    assert by_bank["a"]["error"]["type"] == "PartyUnavailableError"
    assert "did not answer" in by_bank["a"]["error"]["message"]
    assert by_bank["b"]["status"] == "ok"


def test_train_then_score_match_in_process(short_tmp, tables):
    center, bank_a, _ = tables
    params = {
        "model": "secureboost",
        "seed": 1,
        "hyperparameters": {
            "n_estimators": 2,
            "max_depth": 2,
            "max_bin": 8,
            "min_child_samples": 5,
            "backend": "plain",
            "random_state": 3,
        },
    }
    fed = Federation(short_tmp, center, {"a": bank_a})
    try:
        trained = fed.run("a", "train", params)
        assert trained["status"] == "ok", trained
        model_file = Path(trained["results_dir"]) / "model.pkl"
        scored = fed.run("a", "score", {"model_file": str(model_file)})
        assert scored["status"] == "ok", scored
    finally:
        fed.close()
    session = JointSession.in_process(bank_a, center)
    reference = jobs.train_job(session, params, short_tmp / "ref")
    np.testing.assert_allclose(
        np.load(Path(trained["results_dir"]) / "test_proba.npy"),
        np.load(short_tmp / "ref" / "test_proba.npy"),
        rtol=0,
        atol=1e-12,
    )
    assert trained["test"] == reference["test"]
    # Scoring used the center's model part kept from the training job (a new session).
    expected = jobs.score_job(
        session, {"model_file": str(short_tmp / "ref" / "model.pkl")}, short_tmp / "refscore"
    )
    assert scored["scored"] == expected["scored"] == trained["intersection_size"]
    # Encrypted scoring (CKKS, with the center's noise flooding of 2^-16 logit units): the same
    # enterprises in the same order, PDs equal to far below any policy's resolution.
    got = pd.read_csv(Path(scored["results_dir"]) / "decisions.csv", dtype={"id": str})
    want = pd.read_csv(short_tmp / "refscore" / "decisions.csv", dtype={"id": str})
    assert list(got["id"]) == list(want["id"])
    np.testing.assert_allclose(got["pd"], want["pd"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["score"], want["score"], rtol=0, atol=0.05)
    assert (got["decision"] != want["decision"]).sum() <= 1  # a PD right at a cut-off may flip


def _interrupt_then_resume(
    fed: Any, params: dict, protocol: str, msg_type: str, field: str, value: int
) -> tuple[dict, dict]:
    """Run bank a's train job, take its node offline at the first ``protocol``/``msg_type``
    message whose ``field`` equals ``value``, bring it back, and resume the failed job.
    Returns (the failed job's summary, the resumed job's summary); closes ``fed``."""

    def disconnect(node_id, message_type, blob):
        if message_type == transport.ENVELOPE:
            env = Envelope.from_bytes(blob)
            ours = (env.protocol, env.msg_type) == (protocol, msg_type)
            if ours and codec.unpack(env.payload)[field] == value:
                fed.grid.down.add(node_id)
        return blob

    lost: dict = {}
    try:
        fed.grid.tamper = disconnect
        job = threading.Thread(target=lambda: lost.update(fed.run("a", "train", params)))
        job.start()
        deadline = time.monotonic() + 30
        while not fed.service.finished and time.monotonic() < deadline:
            time.sleep(0.05)
        fed.grid.tamper = None
        fed.grid.down.clear()  # the bank's node reconnects
        job.join(30)
        resumed = fed.run("a", "train", {"resume": lost["job_id"]})
    finally:
        fed.close()
    return lost, resumed


def test_interrupted_training_resumes_from_its_checkpoint(short_tmp, tables):
    """The bank's node disconnects while the center grows tree 2 of 4: the center records a
    clear error, both parties keep the two finished trees, and the resumed job trains only the
    last two and ends with the model of an uninterrupted run (same seeds)."""
    import pickle

    from jointcredit.federation import checkpoint

    center, bank_a, _ = tables
    params = {
        "model": "secureboost",
        "seed": 1,
        "hyperparameters": {
            "n_estimators": 4,
            "max_depth": 2,
            "max_bin": 8,
            "min_child_samples": 5,
            "backend": "plain",
            "random_state": 3,
        },
    }
    fed = Federation(short_tmp, center, {"a": bank_a})

    lost, resumed = _interrupt_then_resume(fed, params, "secureboost", "level", "tree", 2)
    failed = fed.service.finished[0]
    assert failed["status"] == "failed" and failed["kind"] == "train"
    assert failed["error"]["type"] == "PartyUnavailableError"
    assert "node is offline" in failed["error"]["message"]
    assert lost["status"] == "failed" and lost["error"]["type"] == "PartyUnavailableError"
    kept = json.loads((Path(lost["results_dir"]) / "checkpoint" / "checkpoint.json").read_text())
    assert kept["n_trees"] == 2
    center_part = fed.service.store.party("a").model_parts[checkpoint.center_key(kept["model_id"])]
    assert sorted(center_part.trees) == [0, 1]

    assert resumed["status"] == "ok", resumed
    assert resumed["resumed"] == {"job_id": lost["job_id"], "trees_kept": 2, "trees_trained": 2}
    steps = [s["protocol"] for s in fed.service.finished[-1]["steps"]]
    assert steps == ["psi", "resume", "secureboost_predict", "secureboost", "secureboost_predict"]

    reference = jobs.train_job(
        JointSession.in_process(bank_a, center), params, short_tmp / "reference"
    )
    np.testing.assert_allclose(
        np.load(Path(resumed["results_dir"]) / "test_proba.npy"),
        np.load(short_tmp / "reference" / "test_proba.npy"),
        rtol=0,
        atol=1e-12,
    )
    assert resumed["test"]["auc"] == pytest.approx(reference["test"]["auc"], abs=1e-12)
    with open(Path(resumed["results_dir"]) / "model.pkl", "rb") as fh:
        got = pickle.load(fh).model_
    with open(short_tmp / "reference" / "model.pkl", "rb") as fh:
        want = pickle.load(fh).model_
    assert len(got.trees) == len(want.trees) == 4

    def shape(tree):
        return {k: {f: v for f, v in n.items() if f != "value"} for k, n in tree.items()}

    for g, w in zip(got.trees, want.trees, strict=True):
        assert shape(g) == shape(w)
        for k, node in w.items():
            if "value" in node:
                assert g[k]["value"] == pytest.approx(node["value"], abs=1e-12)


@pytest.mark.parametrize("model", ["logistic", "scorecard"])
def test_interrupted_lr_training_resumes_from_its_last_epoch(short_tmp, model):
    """Hetero LR: the bank's node disconnects when epoch 3 of 4 starts. Both parties keep the
    coefficients of epochs 1-2; the resumed job agrees on epoch 2, starts from exactly the
    coefficients an uninterrupted 2-epoch run ends with, and trains only the last 2 epochs."""
    import pickle

    from jointcredit.federation import checkpoint

    data = make_sme_data(n_enterprises=1200, n_bank_customers=700, overlap=0.9, seed=4)
    center = load_party_table(data.center)
    bank = load_party_table(data.bank, label_col=data.label_col)
    hyper = {"backend": "plain", "max_epochs": 4, "batch_size": 256, "random_state": 2}
    params = {"model": model, "seed": 1, "hyperparameters": hyper}
    fed = Federation(short_tmp, center, {"a": bank})

    lost, resumed = _interrupt_then_resume(fed, params, "hetero_lr", "step", "epoch", 2)
    failed = fed.service.finished[0]
    assert failed["status"] == "failed" and failed["error"]["type"] == "PartyUnavailableError"
    kept = json.loads((Path(lost["results_dir"]) / "checkpoint" / "checkpoint.json").read_text())
    assert kept == {"protocol": "hetero_lr", "model_id": kept["model_id"], "n_epochs": 2}
    center_kept = fed.service.store.party("a").model_parts[checkpoint.center_key(kept["model_id"])]
    assert center_kept["first_epoch"] == 1 and len(center_kept["coefs"]) == 2

    assert resumed["status"] == "ok", resumed
    assert resumed["resumed"] == {"job_id": lost["job_id"], "epochs_kept": 2, "epochs_trained": 2}
    steps = [s["protocol"] for s in fed.service.finished[-1]["steps"]]
    assert steps[:3] == ["psi", "resume", "hetero_lr"] and steps.count("hetero_lr") == 1
    with open(Path(resumed["results_dir"]) / "model.pkl", "rb") as fh:
        got = pickle.load(fh)
    assert got.n_epochs_ == 2 and got.epochs_ == 4  # 2 new epochs on top of the kept 2

    # the parent both sides agreed on is exactly the uninterrupted run after 2 epochs
    jobs.train_job(
        JointSession.in_process(bank, center),
        {**params, "hyperparameters": {**hyper, "max_epochs": 2}},
        short_tmp / "two",
    )
    with open(short_tmp / "two" / "model.pkl", "rb") as fh:
        ref2 = pickle.load(fh)
    parent = fed.service.store.party("a").model_parts[got.init_model_id_]
    np.testing.assert_allclose(parent["coef"], ref2.center_coef_.to_numpy(), rtol=0, atol=1e-8)
    assert parent["epochs"] == 2
    # and the two new epochs moved the model on from the parent (Adam restarts on a resume, so
    # the result is not the uninterrupted run's; docs/deployment.md says so)
    assert np.abs(got.center_coef_.to_numpy() - np.asarray(parent["coef"])).max() > 1e-3
    assert np.abs(got.coef_.to_numpy() - ref2.coef_.to_numpy()).max() > 1e-3


def test_scoring_gate_uses_the_authenticated_bank(short_tmp, tables):
    """Consent and budget are those of the bank the center registered for the node that asked:
    bank b cannot score enterprises consented to bank a, nor draw on a's budget."""
    center = tables[0]
    data = make_sme_data(n_enterprises=800, n_bank_customers=200, overlap=0.8, seed=11)
    # Two banks with overlapping customer books (both classes present in each).
    bank_a = load_party_table(data.bank.iloc[:130], label_col=data.label_col)
    bank_b = load_party_table(data.bank.iloc[70:], label_col=data.label_col)
    fed = Federation(short_tmp, center, {"a": bank_a, "b": bank_b})
    governance = fed.center_dir / "governance"
    params = {
        "model": "secureboost",
        "hyperparameters": {
            "n_estimators": 2, "max_depth": 2, "max_bin": 8, "min_child_samples": 5,
            "backend": "plain", "random_state": 3,
        },
    }  # fmt: skip
    try:
        models = {}
        for name in ("a", "b"):
            trained = fed.run(name, "train", params)
            assert trained["status"] == "ok", trained
            models[name] = str(Path(trained["results_dir"]) / "model.pkl")
        b_ids = list(jobs.load_bank_party(fed.bank_dirs["b"], bank_b).aligned_ids)
        # Every enterprise consents to bank a; ten of b's customers consent to bank b.
        grants = [(i, "a") for i in center.ids] + [(i, "b") for i in b_ids[:10]]
        pd.DataFrame(
            {
                "id": [i for i, _ in grants],
                "bank": [b for _, b in grants],
                "purpose": "pre_authorization",
                "granted_at": "2020-01-01",
                "expires_at": "2099-12-31",
            }
        ).to_csv(short_tmp / "consents.csv", index=False)
        from jointcredit.scoring.consent import ConsentRegistry

        ConsentRegistry(governance / "consents.jsonl").import_csv(short_tmp / "consents.csv")
        budgets = {"default": None, "banks": {"a": {"per_day": 10_000}, "b": {"per_day": 5}}}
        (governance / "budgets.json").write_text(json.dumps(budgets))

        refused = fed.run("b", "score", {"model_file": models["b"]})
        scored_a = fed.run("a", "score", {"model_file": models["a"]})
        budgets["banks"]["b"]["per_day"] = 100
        (governance / "budgets.json").write_text(json.dumps(budgets))
        scored_b = fed.run("b", "score", {"model_file": models["b"]})
    finally:
        fed.close()
    # b's ten consented enterprises exceed its own budget of five; a's budget is not b's.
    assert refused["status"] == "failed"
    assert "BudgetExhaustedError" in refused["error"]["message"] + refused["error"]["type"]
    assert scored_a["status"] == "ok", scored_a
    assert scored_a["scored"] == scored_a["requested"] > 10
    # With budget, b scores its own ten consents only; a's consents do not count for b.
    assert scored_b["status"] == "ok", scored_b
    assert scored_b["scored"] == 10
    assert scored_b["excluded"] == {"no_consent": len(b_ids) - 10}
    excluded = pd.read_csv(Path(scored_b["results_dir"]) / "excluded.csv", dtype=str)
    assert set(excluded["id"]) == set(b_ids[10:])
    audit = [json.loads(line) for line in (governance / "audit.jsonl").open()]
    admitted = [e["details"] for e in audit if e["action"] == "job_admitted"]
    assert [(d["bank"], d["allowed"]) for d in admitted] == [("a", scored_a["scored"]), ("b", 10)]
    refusals = [e["details"] for e in audit if e["action"] == "job_refused"]
    assert [(d["bank"], d["reason"]) for d in refusals] == [("b", "budget_exhausted")]
    ledger = [json.loads(line) for line in (governance / "budget_ledger.jsonl").open()]
    assert sorted((c["bank_id"], c["n"]) for c in ledger) == [("a", scored_a["scored"]), ("b", 10)]


def test_broken_governance_fails_the_job_with_its_reason(short_tmp, tables):
    center, bank_a, _ = tables
    fed = Federation(short_tmp, center, {"a": bank_a})
    governance = fed.center_dir / "governance"
    governance.mkdir(parents=True, exist_ok=True)
    (governance / "consents.jsonl").write_text("")
    (governance / "budgets.json").write_text('{"banks": {"a": {"per_week": 5}}}')
    try:
        failed = fed.run("a", "echo", {"rounds": 1})
    finally:
        fed.close()
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "RemotePartyError"
    assert "per_week" in failed["error"]["message"]
    assert fed.service.finished[0]["steps"][0]["error"]["type"] == "DataValidationError"


def test_protocol_not_served_fails_the_step(short_tmp, tables):
    center, bank_a, _ = tables
    fed = Federation(short_tmp, center, {"a": bank_a}, allowed_protocols=("psi",))
    try:
        refused = fed.run("a", "echo", {"rounds": 1})
    finally:
        fed.close()
    assert refused["status"] == "failed"
    assert "not served" in refused["error"]["message"]


# --- which node is which bank ----------------------------------------------------------------


def test_directory_matches_node_id_and_key(tmp_path):
    directory = BankDirectory(tmp_path)
    pem_a, pem_b = _pem(), _pem()
    directory.add(BankRecord("bank-a", 11, pem_a))
    directory.add(BankRecord("bank-b", 12, pem_b))
    with pytest.raises(DataValidationError, match="already registered"):
        directory.add(BankRecord("bank-a", 13, _pem()))
    with pytest.raises(DataValidationError, match="name"):
        directory.add(BankRecord("../etc", 14, _pem()))
    nodes = [
        SimpleNamespace(node_id=11, public_key=pem_a.encode()),
        SimpleNamespace(node_id=12, public_key=pem_a.encode()),  # b's id, a's key: refused
        SimpleNamespace(node_id=99, public_key=_pem().encode()),  # never registered here
    ]
    assert directory.online(nodes) == {"bank-a": 11}


# --- keys, certificates, polling -------------------------------------------------------------


def test_tls_files_and_node_keys(tmp_path):
    files = deploy.ensure_tls(tmp_path / "tls", ["127.0.0.1", "center.example"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "center.example" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert oct(files.server_key.stat().st_mode & 0o777) == "0o600"
    # A second call keeps the existing files (banks already hold this CA).
    assert (
        deploy.ensure_tls(tmp_path / "tls", ["127.0.0.1"]).ca_cert.read_bytes()
        == files.ca_cert.read_bytes()
    )

    private, public = deploy.generate_node_key(tmp_path / "bank_key")
    key = serialization.load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    pem = deploy.public_key_pem(public)
    expected = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pem.encode() == expected
    with pytest.raises(DeploymentError, match="already exists"):
        deploy.generate_node_key(tmp_path / "bank_key")
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(DataValidationError, match="OpenSSH"):
        deploy.public_key_pem(tmp_path / "bad.pub")


def test_fast_poll_pacer_backs_off_and_idles_like_flower():
    now = {"t": 0.0}
    pacer = fastnode._Pacer(clock=lambda: now["t"])
    # Never had a message: Flower's own 3 s idle sleep.
    assert pacer.duration(3) == 3
    pacer.message_arrived()
    sleeps = [pacer.duration(3) for _ in range(6)]
    assert sleeps == [0.02, 0.04, 0.08, 0.16, 0.25, 0.25]
    # Waiting for the ClientApp's reply: 5 ms, growing to 100 ms while the reply takes long.
    waits = [pacer.duration(0.5) for _ in range(12)]
    assert waits[0] == fastnode.REPLY_WAIT and waits[-1] == fastnode.REPLY_WAIT_CAP
    assert waits == sorted(waits)
    pacer.message_arrived()
    assert pacer.duration(0.5) == fastnode.REPLY_WAIT
    assert pacer.duration(1.7) == 1.7  # anything else untouched
    now["t"] = 61.0  # a minute without messages: idle again
    assert pacer.duration(3) == 3


def test_fast_poll_installs_only_where_hooks_exist():
    import time as real_time

    module = SimpleNamespace(time=real_time, pull_objects=lambda *a, **k: k)
    assert not fastnode.install(module)  # no pull loop to pace
    pulled = []
    module = SimpleNamespace(
        time=real_time,
        _pull_and_store_message=lambda: pulled.append(1) or 5,
        pull_objects=lambda *a, **k: k,
    )
    pacer = fastnode._Pacer()
    assert fastnode.install(module, pacer)
    assert module._pull_and_store_message() == 5 and pacer.last_message > -1
    assert module.pull_objects([])["initial_backoff"] == fastnode.OBJECT_BACKOFF
    assert module.time is not real_time and module.time.monotonic is real_time.monotonic


def test_control_api_guard_lets_remote_clients_reach_the_fleet_api_only():
    import asyncio

    async def flower(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = guardlink.LocalOnlyMiddleware(flower, allow=["10.1.2.3"])

    def status(path: str, host: str) -> int:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "method": "POST", "path": path, "client": (host, 40000)}
        asyncio.run(guard(scope, receive, send))
        return sent[0]["status"]

    remote = "203.0.113.9"
    assert status("/v1/fleet/pull-messages", remote) == 200  # banks' nodes
    assert status("/v1/control/stop-run", remote) == 403
    assert status("/v1/control/register-node", remote) == 403
    assert status("/v1/runtime/acquire-task", remote) == 403
    assert status("/v1/fleetx", remote) == 403
    for local in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "10.1.2.3"):
        assert status("/v1/control/stop-run", local) == 200, local
    assert status("/v1/control/stop-run", "testclient") == 403  # not an address: refused


def test_control_api_guard_hooks_into_the_installed_superlink():
    from flwr.superlink import main as superlink_main

    # The hook the launcher patches exists in the installed Flower...
    assert callable(superlink_main._get_middleware) and callable(superlink_main.create_app)
    # ...and the guard becomes the outermost middleware, ahead of Flower's own.
    fake = SimpleNamespace(_get_middleware=lambda: ["flower's"], create_app=object())
    assert guardlink.install(fake, ["10.0.0.1"])
    first, rest = fake._get_middleware()[0], fake._get_middleware()[1:]
    assert first.cls is guardlink.LocalOnlyMiddleware and first.kwargs == {"allow": ["10.0.0.1"]}
    assert rest == ["flower's"]
    assert not guardlink.install(SimpleNamespace(create_app=object()), [])


def test_bank_worker_keeps_serving_after_a_lost_task(monkeypatch):
    """A reply the SuperLink refuses (its run was stopped meanwhile: ObjectPushError) or any
    other failure of one task must not end the worker that answers for the bank's node."""
    from flwr.common.constant import SubStatus
    from flwr.supercore.inflatable.inflatable_utils import ObjectPushError

    from jointcredit.federation import worker

    stop = threading.Event()
    tokens = iter(["t1", "t2", "t3"])

    class OneTaskAtATime:
        def __init__(self, *args, **kwargs):
            pass

        def next(self, _stop):
            token = next(tokens, None)
            if token is None:
                stop.set()
                return None
            return token, 1, 7

        def close(self):
            pass

    failures = [ObjectPushError("obj", 7, "session"), ValueError("unexpected")]
    pushed, outputs = [], []

    def push(client, reply, context):
        pushed.append(reply)
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(worker, "_Acquirer", OneTaskAtATime)
    monkeypatch.setattr(worker, "_client", lambda *a, **k: SimpleNamespace(close=lambda: None))
    monkeypatch.setattr(worker, "_pull_client_input", lambda client: ("message", "context"))
    monkeypatch.setattr(worker, "push_message", push)
    monkeypatch.setattr(worker, "_push_output", lambda c, ctx, status, d: outputs.append(status))
    bank_worker = worker.ClientAppWorker("127.0.0.1:1", lambda message, context: "reply")
    bank_worker.serve(stop)
    assert pushed == ["reply"] * 3
    assert bank_worker.handled == 1
    assert outputs == [SubStatus.FAILED, SubStatus.FAILED, SubStatus.COMPLETED]


def test_unknown_job_and_model_are_named():
    with pytest.raises(DataValidationError, match="unknown job"):
        jobs.run_bank_job("/nonexistent", "dance")
    with pytest.raises(DataValidationError, match="unknown model"):
        jobs.resolve_estimator("forest")
    with pytest.raises(DataValidationError, match="not installed"):
        jobs.resolve_estimator("no_such_module_" + uuid.uuid4().hex + ":X")


# --- post-loan monitoring over the loopback grid ---------------------------------------------


def test_monitor_job_gets_events_only_for_its_own_consents(short_tmp, tables):
    """Two banks with overlapping books run ``monitor`` jobs: each receives risk-event flags and
    the consent list only for enterprises whose ``post_loan_monitoring`` consent names the bank
    the center registered for its node. Enterprises in b's book that consented to a only are
    excluded from b's run and never appear in anything b's node received."""
    from jointcredit.federation.server_app import import_risk_events
    from jointcredit.scoring.consent import ConsentRegistry

    center = tables[0]
    data = make_sme_data(n_enterprises=800, n_bank_customers=200, overlap=0.8, seed=11)
    bank_a = load_party_table(data.bank.iloc[:130], label_col=data.label_col)
    bank_b = load_party_table(data.bank.iloc[70:], label_col=data.label_col)
    fed = Federation(short_tmp, center, {"a": bank_a, "b": bank_b})
    params = {
        "model": "secureboost",
        "hyperparameters": {
            "n_estimators": 2, "max_depth": 2, "max_bin": 8, "min_child_samples": 5,
            "backend": "plain", "random_state": 3,
        },
    }  # fmt: skip
    flags_to: dict[int, list] = {101: [], 102: []}

    def record_flags(node_id, message_type, blob):
        if message_type == transport.ENVELOPE:
            env = Envelope.from_bytes(blob)
            if env.protocol == "risk_events" and env.msg_type == "flags":
                flags_to[node_id].append(codec.unpack(env.payload))
        return blob

    try:
        models, aligned = {}, {}
        for name, table in (("a", bank_a), ("b", bank_b)):
            trained = fed.run(name, "train", params)
            assert trained["status"] == "ok", trained
            models[name] = str(Path(trained["results_dir"]) / "model.pkl")
            aligned[name] = list(jobs.load_bank_party(fed.bank_dirs[name], table).aligned_ids)
            book = short_tmp / f"book_{name}.csv"
            pd.DataFrame({"id": table.ids}).to_csv(book, index=False)  # incl. non-aligned ids
        shared = sorted(set(aligned["a"]) & set(aligned["b"]))
        b_only = sorted(set(aligned["b"]) - set(aligned["a"]))
        a_only_consent = shared[:6]  # in b's book, but consented to bank a only
        consent = {
            "a": set(aligned["a"][:30]) | set(shared[:6]),
            "b": set(b_only[:12] + shared[6:10]),
        }
        assert a_only_consent and not set(a_only_consent) & consent["b"]
        grants = [(i, n) for n in ("a", "b") for i in sorted(consent[n])]
        # Pre-authorization consents do not count for monitoring.
        grants_pre = [(i, "b") for i in a_only_consent]
        pd.DataFrame(
            {
                "id": [i for i, _ in grants + grants_pre],
                "bank": [b for _, b in grants + grants_pre],
                "purpose": ["post_loan_monitoring"] * len(grants)
                + ["pre_authorization"] * len(grants_pre),
                "granted_at": "2020-01-01",
                "expires_at": "2099-12-31",
            }
        ).to_csv(short_tmp / "consents.csv", index=False)
        ConsentRegistry(fed.center_dir / "governance" / "consents.jsonl").import_csv(
            short_tmp / "consents.csv"
        )
        events = (
            [(i, "dishonest_debtor_listed", "2025-06-15") for i in shared[:10]]
            + [(i, "tax_arrears", "2025-06-30") for i in b_only[:12]]
            + [(i, "enforcement_new", "2025-06-01") for i in aligned["a"][:30]]
            + [(b_only[0], "enforcement_new", "2025-03-01")]  # before the period
        )
        pd.DataFrame(events, columns=["id", "event_type", "date"]).to_csv(
            short_tmp / "events.csv", index=False
        )
        assert import_risk_events(fed.center_dir, events=short_tmp / "events.csv") == len(events)

        fed.grid.tamper = record_flags
        runs = {}
        for name in ("a", "b"):
            job = {"model_file": models[name], "book": str(short_tmp / f"book_{name}.csv")}
            runs[name] = fed.run(name, "monitor", {**job, "as_of": "2025-06-30"})
            assert runs[name]["status"] == "ok", runs[name]
        again = fed.run(
            "b",
            "monitor",
            {**job, "as_of": "2025-07-31", "previous": runs["b"]["job_id"]},
        )
        assert again["status"] == "ok", again
    finally:
        fed.close()

    in_period = {e[0] for e in events if e[2] >= "2025-06-01"}
    for name, table in (("a", bank_a), ("b", bank_b)):
        out = Path(runs[name]["results_dir"])
        for f in ("book.csv", "events.csv", "bank_feature_stability.csv", "state.json"):
            assert (out / f).is_file(), f
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == runs[name]["book_status"]
        assert summary["events"] == runs[name]["events"]
        assert sum(summary["status"].values()) == summary["monitored"] > 0
        got = pd.read_csv(out / "events.csv", dtype={"id": str})
        assert set(got["id"]) == consent[name] & in_period
        assert set(got["date"]) <= {"2025-06-01", "2025-06-15", "2025-06-30"}
        monitored = pd.read_csv(out / "book.csv", dtype={"id": str})
        assert set(monitored["id"]) == consent[name] & set(aligned[name])
        assert set(monitored["status"]) <= {"green", "yellow", "red"}
        flagged = monitored[monitored["id"].isin(set(shared[:10]))]
        assert len(flagged) and (flagged["status"] == "red").all()
        assert flagged["reasons"].str.contains("dishonest_debtor_listed").all()
        excluded = json.loads((out / "state.json").read_text())["excluded"]
        assert {i for i, r in excluded.items() if r == "not_aligned"} == set(table.ids) - set(
            aligned[name]
        )
        assert {i for i, r in excluded.items() if r == "no_monitoring_consent"} == set(
            aligned[name]
        ) - consent[name]
    assert set(a_only_consent) <= set(json.loads(
        (Path(runs["b"]["results_dir"]) / "state.json").read_text()
    )["excluded"])  # fmt: skip
    # What each node received: its own consents only, never the other bank's.
    for node, name, other in ((101, "a", "b"), (102, "b", "a")):
        assert flags_to[node], "no flags message reached the bank"
        for payload in flags_to[node]:
            assert set(payload["ids"]) <= consent[name]
            assert set(payload["consented"]) == consent[name]
            assert not (set(payload["ids"]) | set(payload["consented"])) & (
                consent[other] - consent[name]
            )
    # The second run compares with the first: grade migration and score stability.
    second = pd.read_csv(Path(again["results_dir"]) / "book.csv", dtype={"id": str})
    assert second["grade_previous"].notna().all()
    assert again["score_stability"]["vs_previous"]["value"] is not None
    assert again["events"] == {}  # nothing dated in July
    audit = [json.loads(line) for line in (fed.center_dir / "governance/audit.jsonl").open()]
    delivered = [e["details"] for e in audit if e["action"] == "risk_events_delivered"]

    def n_flags(name):
        return sum(1 for i, _, day in events if i in consent[name] and day >= "2025-06-01")

    assert [(d["bank"], d["flags"]) for d in delivered] == [
        ("a", n_flags("a")),
        ("b", n_flags("b")),
        ("b", 0),
    ]


def test_risk_events_import_from_monthly_tables(tmp_path):
    """``serve --center-previous ... --center-as-of``: the events are those detect_events finds
    between the center's monthly tables, dated by month end; bad input is refused by field."""
    from jointcredit.federation.server_app import (
        RISK_EVENTS_FILE,
        import_risk_events,
        read_risk_events,
    )
    from jointcredit.monitor.events import detect_events

    ids = ["E1", "E2", "E3"]
    base = {
        "id": ids,
        "enforcement_count_3y": [0, 0, 0],
        "dishonest_debtor_flag": [0, 0, 0],
        "consumption_restriction_flag": [0, 0, 0],
        "tax_arrears_months_12m": [0, 0, 0],
        "insured_headcount": [10, 10, 10],
        "electricity_trend_6m": [1.0, 1.0, 1.0],
    }
    may = pd.DataFrame(base)
    june = pd.DataFrame(
        {**base, "enforcement_count_3y": [0, 2, 0], "dishonest_debtor_flag": [0, 0, 1]}
    )
    may.to_csv(tmp_path / "may.csv", index=False)
    june.to_csv(tmp_path / "june.csv", index=False)
    n = import_risk_events(
        tmp_path, previous=[tmp_path / "may.csv"], current=tmp_path / "june.csv", as_of="2025-06-30"
    )
    got = read_risk_events(tmp_path / RISK_EVENTS_FILE)
    want = detect_events([("2025-05-31", may), ("2025-06-30", june)])
    assert n == len(got) == len(want) == 2
    assert sorted(zip(got["id"], got["event_type"], got["date"], strict=True)) == [
        ("E2", "enforcement_new", "2025-06-30"),
        ("E3", "dishonest_debtor_listed", "2025-06-30"),
    ]
    with pytest.raises(DataValidationError) as exc:
        import_risk_events(tmp_path, previous=[tmp_path / "may.csv"], current=tmp_path / "june.csv")
    assert exc.value.field == "center_as_of"
    pd.DataFrame({"id": ["E1"], "event_type": ["bankrupt"], "date": ["2025-06-01"]}).to_csv(
        tmp_path / "bad.csv", index=False
    )
    with pytest.raises(DataValidationError) as exc:
        import_risk_events(tmp_path, events=tmp_path / "bad.csv")
    assert exc.value.field == "event_type"


@pytest.mark.parametrize(
    ("ask", "match"),
    [
        ("not a dict", "only secureboost and hetero_lr"),
        ({"kind": "scorecard"}, "only secureboost and hetero_lr"),
        ({"kind": "secureboost", "model_id": "ab" * 15, "n_trees": 2}, "32 hex digits"),
        ({"kind": "secureboost", "model_id": "ab" * 16, "n_trees": True}, "n_trees must be"),
        ({"kind": "secureboost", "model_id": "ab" * 16, "n_trees": 0}, "n_trees must be"),
        ({"kind": "hetero_lr", "model_id": "ab" * 16, "n_epochs": 2}, "a hetero LR model id"),
        ({"kind": "hetero_lr", "model_id": "lr-0123456789ab", "n_epochs": -1}, "n_epochs must"),
    ],
)
def test_resume_requests_are_checked_before_any_checkpoint_is_read(ask, match):
    from jointcredit.federation import checkpoint

    class Untouchable(dict):  # the center's party state: must not be read for a bad request
        def get(self, *args):
            raise AssertionError("checkpoint read before the request was checked")

    center = SimpleNamespace(model_parts=Untouchable())
    channel = SimpleNamespace(request=lambda msg_type, payload=None: ask)
    with pytest.raises(MalformedMessageError, match=match):
        checkpoint.ResumeCenter(center).run(channel)
