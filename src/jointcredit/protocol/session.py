"""Authenticated two-party sessions: the credit center's channel and the bank's endpoint.

Session start (one round trip)::

    center -> bank   hello     {center's ephemeral X25519 public key}
    bank   -> center hello.ok  {bank's ephemeral X25519 public key}   MAC'd with the new key

Both derive ``key = HKDF-SHA256(X25519 shared secret, salt=session_id,
info="jointcredit/v1" || center_pub || bank_pub)``. The bank's MAC on ``hello.ok`` confirms the key
to the center. Every later message carries an HMAC-SHA256 under that key over its whole header
and payload, and a sequence number: request ``k`` from the center must be answered by reply ``k``
from the bank, and the bank accepts request ``k`` only right after ``k - 1``. A message that fails
any check is rejected with a typed error *before* it touches the receiving party's state.

Peer identity (which bank, which credit center) comes from the transport: TLS plus Flower's
SuperNode authentication in deployment. The session key adds end-to-end integrity, replay
protection and binding of every message to one session and one protocol.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jointcredit.errors import (
    AuthenticationError,
    JointCreditError,
    MalformedMessageError,
    ProtocolError,
    RemotePartyError,
    ReplayError,
    SessionMismatchError,
    UnexpectedMessageError,
)
from jointcredit.protocol import codec
from jointcredit.protocol.channel import Transport
from jointcredit.protocol.envelope import ENVELOPE_VERSION, SESSION_ID_BYTES, Envelope, Role

SESSION_PROTOCOL = "session"
HELLO = "hello"
ERROR = "error"
_HANDSHAKE_KEY = b"jointcredit/v1 handshake (integrity only, not secret)"
_INFO = b"jointcredit/v1"


def _derive_key(shared: bytes, session_id: bytes, center_pub: bytes, bank_pub: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=session_id,
        info=_INFO + center_pub + bank_pub,
    ).derive(shared)


def _load_peer_public(raw: object) -> X25519PublicKey:
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise MalformedMessageError("hello: public key must be 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def _exchange(private: X25519PrivateKey, peer: X25519PublicKey) -> bytes:
    try:
        return private.exchange(peer)
    except ValueError as exc:  # low-order point: the shared secret would be all zeros
        raise AuthenticationError("hello: peer public key is a low-order point") from exc


# --- the bank's half -------------------------------------------------------------------------


class BankSide(Protocol):
    """The bank's half of one joint protocol: answers the center's requests."""

    protocol: str

    def handle(self, msg_type: str, payload: Any) -> Any: ...


class BankEndpoint:
    """Receives the center's envelopes, verifies them, dispatches to protocol halves.

    Protocol halves are attached before a job (in-process: by the bank's estimator) or created on
    demand by ``factory(protocol)`` (deployment: from the bank's own job configuration). The
    endpoint and its attached halves pickle to the bank's own disk between Flower messages.
    """

    def __init__(self, factory: Callable[[str], BankSide] | None = None) -> None:
        self.factory = factory
        self.sides: dict[str, BankSide] = {}
        self._key: bytes | None = None
        self._session_id: bytes | None = None
        self._expected_seq = 0

    @property
    def session_id(self) -> bytes | None:
        return self._session_id

    def attach(self, side: BankSide) -> None:
        self.sides[side.protocol] = side

    def receive(self, request: bytes) -> bytes:
        env = Envelope.from_bytes(request)
        if env.sender is not Role.CENTER:
            raise SessionMismatchError(f"bank received a message sent by {env.sender.name}")
        if env.protocol == SESSION_PROTOCOL and env.msg_type == HELLO:
            return self._accept_hello(env)
        self._verify(env)
        # Verified: from here on the request counts, whatever the handler says.
        self._expected_seq = env.seq + 1
        try:
            side = self._side_for(env.protocol)
            reply_type, reply = (
                env.msg_type + ".ok",
                side.handle(env.msg_type, codec.unpack(env.payload)),
            )
        except JointCreditError as exc:
            reply_type, reply = ERROR, {"type": type(exc).__name__, "message": str(exc)}
        return self._seal(env, reply_type, codec.pack(reply))

    def _side_for(self, protocol: str) -> BankSide:
        side = self.sides.get(protocol)
        if side is None and self.factory is not None:
            side = self.factory(protocol)
            self.sides[protocol] = side
        if side is None:
            raise UnexpectedMessageError(f"bank has no handler for protocol {protocol!r}")
        return side

    def _accept_hello(self, env: Envelope) -> bytes:
        if not env.mac_is_valid(_HANDSHAKE_KEY):
            raise AuthenticationError("hello: envelope integrity check failed")
        if env.seq != 0 or len(env.session_id) != SESSION_ID_BYTES:
            raise SessionMismatchError("hello must open a session with sequence number 0")
        if env.session_id == self._session_id:
            raise ReplayError("hello replayed for a session that is already open")
        hello = codec.unpack(env.payload)
        center_pub = hello.get("public_key") if isinstance(hello, dict) else None
        peer = _load_peer_public(center_pub)
        private = X25519PrivateKey.generate()
        own_pub = private.public_key().public_bytes_raw()
        key = _derive_key(_exchange(private, peer), env.session_id, center_pub, own_pub)
        self._key, self._session_id, self._expected_seq = key, env.session_id, 1
        return self._seal(env, HELLO + ".ok", codec.pack({"public_key": own_pub}))

    def _verify(self, env: Envelope) -> None:
        if self._key is None:
            raise SessionMismatchError("no session open: the center must send hello first")
        if env.session_id != self._session_id:
            raise SessionMismatchError("message belongs to another session")
        if not env.mac_is_valid(self._key):
            raise AuthenticationError(
                f"{env.protocol}/{env.msg_type}: message authentication failed (tampered?)"
            )
        if env.seq != self._expected_seq:
            raise ReplayError(
                f"{env.protocol}/{env.msg_type}: sequence {env.seq}, expected {self._expected_seq}"
            )

    def _seal(self, request: Envelope, msg_type: str, payload: bytes) -> bytes:
        env = Envelope(
            ENVELOPE_VERSION,
            Role.BANK,
            request.seq,
            request.session_id,
            request.protocol,
            msg_type,
            payload,
        )
        return env.sealed(self._key).to_bytes()

    # Persistence for deployments where each message runs in a fresh process. The file is the
    # bank's own state (keys included) on the bank's own disk; it never crosses the wire.
    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    @staticmethod
    def load(path: str | os.PathLike) -> BankEndpoint:
        with open(path, "rb") as fh:
            endpoint = pickle.load(fh)  # noqa: S301 - the bank's own file, written by save()
        if not isinstance(endpoint, BankEndpoint):
            raise ProtocolError(f"{path}: not a saved bank endpoint")
        return endpoint


# --- the credit center's half ----------------------------------------------------------------


class CenterChannel:
    """The center's side of a session: sends requests, returns verified reply payloads."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._key: bytes | None = None
        self.session_id = os.urandom(SESSION_ID_BYTES)
        self._seq = 0

    def open(self) -> CenterChannel:
        private = X25519PrivateKey.generate()
        own_pub = private.public_key().public_bytes_raw()
        hello = Envelope(
            ENVELOPE_VERSION,
            Role.CENTER,
            0,
            self.session_id,
            SESSION_PROTOCOL,
            HELLO,
            codec.pack({"public_key": own_pub}),
        ).sealed(_HANDSHAKE_KEY)
        reply = Envelope.from_bytes(self.transport.exchange(hello.to_bytes()))
        self._check_reply_header(reply, hello)
        answer = codec.unpack(reply.payload)
        bank_pub = answer.get("public_key") if isinstance(answer, dict) else None
        peer = _load_peer_public(bank_pub)
        key = _derive_key(_exchange(private, peer), self.session_id, own_pub, bank_pub)
        if not reply.mac_is_valid(key):
            raise AuthenticationError("hello.ok: bank's key confirmation failed")
        self._key, self._seq = key, 1
        return self

    def request(self, protocol: str, msg_type: str, payload: Any = None) -> Any:
        """Send one request and return the bank's decoded reply (one round trip)."""
        if self._key is None:
            raise SessionMismatchError("session not open: call open() first")
        env = Envelope(
            ENVELOPE_VERSION,
            Role.CENTER,
            self._seq,
            self.session_id,
            protocol,
            msg_type,
            codec.pack(payload),
        ).sealed(self._key)
        reply = Envelope.from_bytes(self.transport.exchange(env.to_bytes()))
        self._check_reply_header(reply, env)
        if not reply.mac_is_valid(self._key):
            raise AuthenticationError(f"{protocol}/{reply.msg_type}: reply authentication failed")
        self._seq += 1
        body = codec.unpack(reply.payload)
        if reply.msg_type == ERROR:
            raise RemotePartyError(str(body.get("type")), str(body.get("message")))
        if reply.msg_type != msg_type + ".ok":
            raise UnexpectedMessageError(f"expected {msg_type}.ok, got {reply.msg_type}")
        return body

    def bind(self, protocol: str) -> ProtocolChannel:
        return ProtocolChannel(self, protocol)

    def _check_reply_header(self, reply: Envelope, request: Envelope) -> None:
        if reply.sender is not Role.BANK:
            raise SessionMismatchError(f"reply sent by {reply.sender.name}, expected BANK")
        if reply.session_id != request.session_id:
            raise SessionMismatchError("reply belongs to another session")
        if reply.protocol != request.protocol:
            raise SessionMismatchError(
                f"reply is for protocol {reply.protocol!r}, expected {request.protocol!r}"
            )
        if reply.seq != request.seq:
            raise ReplayError(f"reply sequence {reply.seq}, expected {request.seq}")


class ProtocolChannel:
    """A center channel bound to one protocol name: what a protocol's center half talks to."""

    def __init__(self, channel: CenterChannel, protocol: str) -> None:
        self.channel = channel
        self.protocol = protocol

    def request(self, msg_type: str, payload: Any = None) -> Any:
        return self.channel.request(self.protocol, msg_type, payload)
