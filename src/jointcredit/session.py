"""The bank modeler's handle on a two-party connection.

``JointSession`` is what estimators' ``fit(session)`` take. The in-process session holds both
parties in one Python process (tests, benchmarks, ``jointcredit demo``): messages still go
through envelopes, MACs and the codec, and every byte is recorded in ``session.transcript``. The
Flower deployment runs the same protocol halves with a different transport.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jointcredit.data.schema import PartyTable
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.channel import InProcessTransport, RecordingTransport, Transcript
from jointcredit.protocol.session import BankEndpoint, BankSide, CenterChannel


class JointSession:
    """An open, authenticated session between a bank and a credit center in one process."""

    def __init__(self, bank: BankParty, center: CenterParty, *, keep_bytes: bool = False) -> None:
        self.bank = bank
        self.center = center
        self.transcript = Transcript(keep_bytes=keep_bytes)
        self.endpoint = BankEndpoint(factory=self._no_factory)
        transport = RecordingTransport(InProcessTransport(self.endpoint.receive), self.transcript)
        self.channel = CenterChannel(transport).open()
        self.timings: dict[str, float] = {}

    @classmethod
    def in_process(
        cls, bank: PartyTable, center: PartyTable, *, keep_bytes: bool = False
    ) -> JointSession:
        return cls(BankParty(bank), CenterParty(center), keep_bytes=keep_bytes)

    @staticmethod
    def _no_factory(protocol: str) -> BankSide:
        from jointcredit.errors import UnexpectedMessageError

        raise UnexpectedMessageError(f"no bank half attached for protocol {protocol!r}")

    def run(self, side: BankSide) -> Any:
        """Run one protocol: attach the bank's half, let the center's half drive it to the end.

        Returns what the center half returns (its own result, e.g. the id of its model part).
        """
        self.endpoint.attach(side)
        center_half = registry.center_side(side.protocol, self.center)
        start = time.perf_counter()
        try:
            return center_half.run(self.channel.bind(side.protocol))
        finally:
            self.timings[side.protocol] = time.perf_counter() - start

    def align(self, *, reveal_to: str = "both") -> np.ndarray:
        """Private set intersection of the two parties' IDs; returns the bank's aligned IDs."""
        from jointcredit.psi.ecdh import PsiBankSide

        self.run(PsiBankSide(self.bank, reveal_to=reveal_to))
        return self.bank.require_aligned()

    @property
    def aligned_ids(self) -> np.ndarray:
        return self.bank.require_aligned()
