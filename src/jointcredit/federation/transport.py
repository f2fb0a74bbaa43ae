"""Carry jointcredit bytes in Flower messages: the only thing the Flower layer does.

Every Flower message between the credit center and a bank holds exactly one opaque blob, in an
``Array(dtype="bytes", stype="raw")`` (Flower chunks arrays at 5 MiB, so large ciphertext
payloads travel without hitting HTTP body limits). Two message types exist:

``query.envelope``
    the blob is one protocol envelope from the center; the reply is the bank's envelope. The
    envelope layer (``jointcredit.protocol.session``) authenticates and orders them; this module
    never looks inside.
``query.control``
    the blob is a codec-packed job-control request (which protocol step the bank wants next,
    how the previous one ended); see :mod:`jointcredit.federation.bank`.

A bank that refuses a message (an envelope failing authentication, no job running) answers with
an error record naming the error type and the reason; Flower-level errors (node offline, reply
expired, the ClientApp crashed) arrive as Flower ``Error`` replies. Both become typed
exceptions here: :class:`~jointcredit.errors.RemotePartyError` and
:class:`~jointcredit.errors.PartyUnavailableError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, RecordDict
from flwr.app.message import make_message
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid

from jointcredit.errors import (
    JointCreditError,
    MalformedMessageError,
    PartyUnavailableError,
    RemotePartyError,
)

ENVELOPE = "query.envelope"
CONTROL = "query.control"
MESSAGE_TYPES = (ENVELOPE, CONTROL)
RECORD = "jc"
BLOB = "blob"
ERROR_RECORD = "jc_error"
#: Default wait for one reply. Generous: a bank may spend minutes on an encrypted step.
DEFAULT_TIMEOUT = 600.0
#: A message outlives its wait a little, so a late reply is reported as late, not as missing.
TTL_MARGIN = 30.0
#: Largest blob accepted in either direction (Flower itself would take more; a protocol that
#: needs more than this should batch differently).
MAX_BLOB_BYTES = 512 * 1024 * 1024

# Flower error codes that mean "the other side is not there" rather than "it refused".
_UNAVAILABLE_CODES = {
    ErrorCode.NODE_UNAVAILABLE,
    ErrorCode.MESSAGE_UNAVAILABLE,
    ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
}

_log = logging.getLogger(__name__)


# --- records ---------------------------------------------------------------------------------


def blob_content(data: bytes) -> RecordDict:
    """The content of a Flower message carrying ``data`` unchanged."""
    data = bytes(data)
    if len(data) > MAX_BLOB_BYTES:
        raise MalformedMessageError(
            f"payload of {len(data)} bytes exceeds the {MAX_BLOB_BYTES}-byte limit per message"
        )
    array = Array(dtype="bytes", shape=(len(data),), stype="raw", data=data)
    return RecordDict({RECORD: ArrayRecord({BLOB: array})})


def error_content(exc: BaseException) -> RecordDict:
    """The content of a reply that refuses a request: the error's type name and message."""
    # A refusal relayed from another process keeps the original error's type name.
    type_name = getattr(exc, "type_name", type(exc).__name__)
    return RecordDict({ERROR_RECORD: ConfigRecord({"type": type_name, "message": str(exc)})})


def message_blob(message: Message) -> bytes:
    """The blob a message carries; raises if it carries a refusal or nothing usable."""
    content = message.content
    if ERROR_RECORD in content:
        record = content[ERROR_RECORD]
        raise RemotePartyError(str(record.get("type", "?")), str(record.get("message", "")))
    record = content.get(RECORD) if RECORD in content else None
    if not isinstance(record, ArrayRecord) or BLOB not in record:
        raise MalformedMessageError(f"Flower message has no {RECORD}/{BLOB} record")
    array = record[BLOB]
    if array.dtype != "bytes" or array.stype != "raw" or len(array.shape) != 1:
        raise MalformedMessageError(f"{RECORD}/{BLOB}: expected a raw bytes array")
    data = bytes(array.data)
    if len(data) != array.shape[0]:
        raise MalformedMessageError(f"{RECORD}/{BLOB}: length does not match its shape")
    return data


def answer(message: Message, handler: Callable[[str, bytes], bytes]) -> Message:
    """The reply to one Flower message: ``handler(message_type, blob) -> reply blob``.

    A library error raised by the handler (a failed MAC, no job running) becomes an error record
    that the center turns into :class:`RemotePartyError`; it is logged here, on the side that
    refused. Anything else is a bug and propagates, so Flower reports the ClientApp as failed.
    """
    message_type = message.metadata.message_type
    try:
        if message_type not in MESSAGE_TYPES:
            raise MalformedMessageError(f"unexpected Flower message type {message_type!r}")
        reply = handler(message_type, message_blob(message))
        return Message(blob_content(reply), reply_to=message)
    except JointCreditError as exc:
        _log.warning("refused %s message: %s: %s", message_type, type(exc).__name__, exc)
        return Message(error_content(exc), reply_to=message)


# --- the center's side -----------------------------------------------------------------------


def push(
    grid: Grid, node_id: int, message_type: str, data: bytes, *, ttl: float, group_id: str = ""
) -> str:
    """Queue one message for a node at the SuperLink; return its id."""
    # Metadata is spelled out rather than taken from Flower's process-global task identity, so
    # a center and a bank may share one process (tests) and a fake grid needs no task.
    metadata = Metadata(
        run_id=grid.run.run_id,
        message_id="",
        src_node_id=SUPERLINK_NODE_ID,
        dst_node_id=int(node_id),
        reply_to_message_id="",
        group_id=group_id,
        created_at=time.time(),
        ttl=ttl,
        message_type=message_type,
    )
    message = make_message(metadata=metadata, content=blob_content(data))
    ids = list(grid.push_messages([message]))
    if len(ids) != 1 or not ids[0]:
        # HTTP 413 comes back as [] and a malformed message as [None] (DESIGN §6).
        raise PartyUnavailableError(
            f"node {node_id}: the SuperLink did not accept a {message_type} message of "
            f"{len(data)} bytes"
        )
    return str(ids[0])


def collect(grid: Grid, message_ids: Iterable[str]) -> dict[str, Message]:
    """Replies available now for the given message ids, keyed by the id they answer."""
    wanted = list(message_ids)
    if not wanted:
        return {}
    return {reply.metadata.reply_to_message_id: reply for reply in grid.pull_messages(wanted)}


def wait_reply(grid: Grid, node_id: int, message_id: str, *, timeout: float, what: str) -> Message:
    """Poll for the reply to one message, briefly at first and then less often, until timeout."""
    deadline = time.monotonic() + timeout
    pause = 0.003
    while True:
        reply = collect(grid, [message_id]).get(message_id)
        if reply is not None:
            return reply
        if time.monotonic() >= deadline:
            raise PartyUnavailableError(
                f"node {node_id} did not answer {what} within {timeout:.0f} s "
                "(bank offline, disconnected or stuck)"
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)


def reply_blob(reply: Message, node_id: int, what: str) -> bytes:
    """The blob of a reply, or the typed error the reply stands for."""
    if reply.has_error():
        error = reply.error
        if error.code in _UNAVAILABLE_CODES:
            raise PartyUnavailableError(f"node {node_id}, {what}: {error.reason}")
        raise RemotePartyError(f"FlowerError{error.code}", str(error.reason))
    return message_blob(reply)


def request_reply(
    grid: Grid,
    node_id: int,
    message_type: str,
    data: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    group_id: str = "",
) -> bytes:
    """One round trip: send ``data`` to a node and return the blob it answers with."""
    message_id = push(
        grid, node_id, message_type, data, ttl=timeout + TTL_MARGIN, group_id=group_id
    )
    reply = wait_reply(grid, node_id, message_id, timeout=timeout, what=message_type)
    return reply_blob(reply, node_id, message_type)


class FlowerTransport:
    """A protocol transport (``exchange(bytes) -> bytes``) to one bank's node through a Grid.

    The node id is chosen by the credit center from its own registry of banks, never taken from
    a message, so a job can only ever reach the bank that asked for it.
    """

    def __init__(
        self,
        grid: Grid,
        node_id: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        message_type: str = ENVELOPE,
        group_id: str = "",
    ) -> None:
        if message_type not in MESSAGE_TYPES:
            raise ValueError(f"message_type must be one of {MESSAGE_TYPES}")
        self.grid = grid
        self.node_id = int(node_id)
        self.timeout = float(timeout)
        self.message_type = message_type
        self.group_id = group_id

    def exchange(self, request: bytes) -> bytes:
        return request_reply(
            self.grid,
            self.node_id,
            self.message_type,
            request,
            timeout=self.timeout,
            group_id=self.group_id,
        )


class SharedGrid(Grid):
    """A Grid several job threads can use at once: every call holds one lock.

    Flower's HTTP grid keeps one HTTP client; the center runs one thread per active bank job, so
    calls are serialised here. Each call is one short HTTP request; waiting happens outside.
    """

    def __init__(self, inner: Grid) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    def set_run(self, run) -> None:  # noqa: ANN001 - flwr's Run
        with self._lock:
            self._inner.set_run(run)

    @property
    def run(self):  # noqa: ANN201 - flwr's Run
        return self._inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        return Message(
            content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl, group_id=group_id
        )

    def get_node_ids(self) -> list[int]:
        with self._lock:
            return list(self._inner.get_node_ids())

    def get_nodes(self) -> list:
        with self._lock:
            return list(self._inner.get_nodes())

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        with self._lock:
            return list(self._inner.push_messages(list(messages)))

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        with self._lock:
            return list(self._inner.pull_messages(list(message_ids)))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        if timeout is None:
            raise ValueError("always pass a timeout")
        ids = self.push_messages(messages)
        deadline = time.monotonic() + timeout
        replies: dict[str, Message] = {}
        while len(replies) < len(ids) and time.monotonic() < deadline:
            replies.update(collect(self, [i for i in ids if i not in replies]))
            time.sleep(0.01)
        return list(replies.values())
