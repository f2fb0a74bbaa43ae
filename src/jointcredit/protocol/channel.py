"""Transports move envelope bytes; transcripts record what crossed.

A :class:`Transport` is the only thing a deployment has to provide: given the bytes of one
request envelope from the credit center, deliver them to the bank and return the bytes of the
bank's reply. The in-process transport calls the bank's endpoint directly; the Flower transport
(``jointcredit.federation``) carries the same bytes in Flower messages. Protocol code never sees
which one it runs over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from jointcredit.protocol.envelope import Envelope, Role


class Transport(Protocol):
    """Deliver one request (center -> bank) and return the reply (bank -> center)."""

    def exchange(self, request: bytes) -> bytes: ...


class InProcessTransport:
    """Both parties in one process: the bank endpoint's ``receive`` is called directly.

    The bytes still go through full envelope encoding and verification, so tests and benchmarks
    exercise exactly what a deployment sends.
    """

    def __init__(self, receive: Callable[[bytes], bytes]) -> None:
        self._receive = receive

    def exchange(self, request: bytes) -> bytes:
        return self._receive(bytes(request))


@dataclass(frozen=True)
class TranscriptEntry:
    """One message as it crossed the wire."""

    sender: Role
    protocol: str
    msg_type: str
    seq: int
    n_bytes: int
    raw: bytes | None

    @property
    def direction(self) -> str:
        return "center->bank" if self.sender is Role.CENTER else "bank->center"


@dataclass
class Transcript:
    """Every message in both directions: sizes always, raw bytes when ``keep_bytes``.

    Round trips are counted as request/reply pairs at the transport, which is what costs
    seconds in a real deployment.
    """

    keep_bytes: bool = False
    entries: list[TranscriptEntry] = field(default_factory=list)
    round_trips: int = 0

    def record(self, data: bytes) -> None:
        env = Envelope.from_bytes(data)
        self.entries.append(
            TranscriptEntry(
                env.sender,
                env.protocol,
                env.msg_type,
                env.seq,
                len(data),
                bytes(data) if self.keep_bytes else None,
            )
        )

    def sent_by(self, sender: Role, protocol: str | None = None) -> Iterator[TranscriptEntry]:
        for entry in self.entries:
            if entry.sender is sender and (protocol is None or entry.protocol == protocol):
                yield entry

    def bytes_sent(self, sender: Role, protocol: str | None = None) -> int:
        return sum(e.n_bytes for e in self.sent_by(sender, protocol))

    def payloads(self, sender: Role, protocol: str | None = None) -> list[bytes]:
        """Raw payload bytes a party sent (requires ``keep_bytes=True``), for privacy audits."""
        if not self.keep_bytes:
            raise ValueError("transcript was recorded without keep_bytes=True")
        return [Envelope.from_bytes(e.raw).payload for e in self.sent_by(sender, protocol)]

    def round_trips_of(self, protocol: str) -> int:
        return sum(1 for e in self.sent_by(Role.CENTER, protocol))

    def summary(self, protocol: str | None = None) -> dict[str, int]:
        return {
            "bytes_center_to_bank": self.bytes_sent(Role.CENTER, protocol),
            "bytes_bank_to_center": self.bytes_sent(Role.BANK, protocol),
            "round_trips": (
                self.round_trips if protocol is None else self.round_trips_of(protocol)
            ),
            "messages": sum(1 for e in self.entries if protocol is None or e.protocol == protocol),
        }

    def message_types(self) -> Counter[tuple[str, str, str]]:
        return Counter((e.direction, e.protocol, e.msg_type) for e in self.entries)

    def mark(self) -> int:
        """Position to measure a later slice from (see :meth:`since`)."""
        return len(self.entries)

    def since(self, mark: int) -> Transcript:
        part = Transcript(keep_bytes=self.keep_bytes, entries=self.entries[mark:])
        part.round_trips = sum(1 for e in part.entries if e.sender is Role.CENTER)
        return part


class RecordingTransport:
    """Wrap any transport and record both directions into a :class:`Transcript`."""

    def __init__(self, inner: Transport, transcript: Transcript) -> None:
        self.inner = inner
        self.transcript = transcript

    def exchange(self, request: bytes) -> bytes:
        self.transcript.record(request)
        reply = self.inner.exchange(request)
        self.transcript.record(reply)
        self.transcript.round_trips += 1
        return reply
