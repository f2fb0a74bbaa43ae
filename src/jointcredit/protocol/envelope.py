"""The versioned, authenticated envelope every jointcredit message travels in.

Layout (all integers big-endian)::

    magic "JCE" | version u8 | sender u8 | seq u64 | session_id 16 bytes
    | protocol (u8 length + utf-8) | msg_type (u8 length + utf-8)
    | payload (u32 length + bytes) | mac 32 bytes (HMAC-SHA256 over everything before it)

The header is readable without the key so that a transcript can show what crossed the wire;
payloads are authenticated, not encrypted, because confidentiality on the wire is the transport's
job (TLS in deployment) and because audits must be able to read what a party received.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum

from jointcredit.errors import MalformedMessageError

MAGIC = b"JCE"
ENVELOPE_VERSION = 1
SESSION_ID_BYTES = 16
MAC_BYTES = 32
_FIXED = struct.Struct(">3sBBQ16s")


class Role(IntEnum):
    """Who sent a message. The credit center drives; the bank answers."""

    CENTER = 1
    BANK = 2

    @property
    def peer(self) -> Role:
        return Role.BANK if self is Role.CENTER else Role.CENTER


@dataclass(frozen=True)
class Envelope:
    version: int
    sender: Role
    seq: int
    session_id: bytes
    protocol: str
    msg_type: str
    payload: bytes
    mac: bytes = b""

    def signed_part(self) -> bytes:
        protocol = self.protocol.encode()
        msg_type = self.msg_type.encode()
        if len(protocol) > 255 or len(msg_type) > 255:
            raise ValueError("protocol and message type names must be at most 255 bytes")
        return b"".join(
            [
                _FIXED.pack(MAGIC, self.version, int(self.sender), self.seq, self.session_id),
                bytes([len(protocol)]),
                protocol,
                bytes([len(msg_type)]),
                msg_type,
                struct.pack(">I", len(self.payload)),
                self.payload,
            ]
        )

    def to_bytes(self) -> bytes:
        return self.signed_part() + self.mac

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        data = bytes(data)
        try:
            magic, version, sender, seq, session_id = _FIXED.unpack_from(data, 0)
            if magic != MAGIC:
                raise MalformedMessageError("not a jointcredit envelope (bad magic)")
            pos = _FIXED.size
            n = data[pos]
            protocol = data[pos + 1 : pos + 1 + n].decode()
            pos += 1 + n
            n = data[pos]
            msg_type = data[pos + 1 : pos + 1 + n].decode()
            pos += 1 + n
            (length,) = struct.unpack_from(">I", data, pos)
            pos += 4
            payload = data[pos : pos + length]
            mac = data[pos + length :]
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise MalformedMessageError(f"envelope does not decode: {exc}") from exc
        if len(payload) != length or len(mac) != MAC_BYTES:
            raise MalformedMessageError("envelope truncated or has trailing bytes")
        if version != ENVELOPE_VERSION:
            raise MalformedMessageError(f"unsupported envelope version {version}")
        try:
            sender_role = Role(sender)
        except ValueError as exc:
            raise MalformedMessageError(f"unknown sender role {sender}") from exc
        return cls(version, sender_role, seq, session_id, protocol, msg_type, payload, mac)

    def sealed(self, key: bytes) -> Envelope:
        mac = hmac.new(key, self.signed_part(), hashlib.sha256).digest()
        return Envelope(
            self.version,
            self.sender,
            self.seq,
            self.session_id,
            self.protocol,
            self.msg_type,
            self.payload,
            mac,
        )

    def mac_is_valid(self, key: bytes) -> bool:
        expected = hmac.new(key, self.signed_part(), hashlib.sha256).digest()
        return hmac.compare_digest(expected, self.mac)


def peek_header(data: bytes) -> tuple[Role, str, str, int]:
    """(sender, protocol, msg_type, seq) of an envelope, without verifying it (for transcripts)."""
    env = Envelope.from_bytes(data)
    return env.sender, env.protocol, env.msg_type, env.seq
