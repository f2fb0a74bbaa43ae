"""Which center half runs which protocol, and how a bank half is built from a job's parameters.

The in-process session and the Flower ServerApp/ClientApp both look protocols up here, so a
protocol written once runs over any transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from jointcredit.errors import UnexpectedMessageError
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol.session import BankSide, ProtocolChannel


class CenterSide(Protocol):
    """The credit center's half of a protocol: it drives, issuing requests to the bank."""

    protocol: str

    def run(self, channel: ProtocolChannel) -> Any: ...


CenterFactory = Callable[[CenterParty], CenterSide]
BankFactory = Callable[[BankParty, dict], BankSide]

_CENTER: dict[str, CenterFactory] = {}
_BANK: dict[str, BankFactory] = {}


def register(protocol: str, *, center: CenterFactory, bank: BankFactory | None = None) -> None:
    """Register a protocol's center half and (for deployments) its bank-half factory."""
    _CENTER[protocol] = center
    if bank is not None:
        _BANK[protocol] = bank


def center_side(protocol: str, center: CenterParty) -> CenterSide:
    _load_builtin_protocols()
    try:
        return _CENTER[protocol](center)
    except KeyError:
        raise UnexpectedMessageError(f"unknown protocol {protocol!r}") from None


def bank_side(protocol: str, bank: BankParty, params: dict) -> BankSide:
    _load_builtin_protocols()
    try:
        return _BANK[protocol](bank, params)
    except KeyError:
        raise UnexpectedMessageError(f"unknown protocol {protocol!r}") from None


def protocols() -> list[str]:
    _load_builtin_protocols()
    return sorted(_CENTER)


def _load_builtin_protocols() -> None:
    # Importing the modules registers their protocols; done lazily to avoid import cycles.
    import importlib

    for module in (
        "jointcredit.psi.ecdh",
        "jointcredit.learn.binning",
        "jointcredit.learn.linear",
        "jointcredit.learn.boosting",
        "jointcredit.scoring.encrypted",
        "jointcredit.monitor.events",
        "jointcredit.monitor.center_stability",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
