"""Typed errors raised by jointcredit.

Every error names what was wrong (a field, a column, a message) and why, so that a bank modeler
or a credit-center operator can fix the input without reading a traceback. All derive from
:class:`JointCreditError`; catch that to handle any library error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class JointCreditError(Exception):
    """Base class of every error raised on purpose by jointcredit."""


# --- input data -------------------------------------------------------------------------------


class DataValidationError(JointCreditError, ValueError):
    """A party's table is not usable as given (schema, types, missing values...)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class InvalidRow:
    """One offending row: 0-based row number in the input, the raw value and why it failed."""

    row: int
    value: object
    reason: str


class InvalidIdentifierError(DataValidationError):
    """One or more enterprise IDs are invalid (e.g. a USCC with a wrong check character).

    ``rows`` lists every offending row, not only the first, so a whole file can be fixed at once.
    """

    def __init__(self, field: str, rows: Sequence[InvalidRow]) -> None:
        self.rows = list(rows)
        shown = "; ".join(f"row {r.row}: {r.value!r} ({r.reason})" for r in self.rows[:10])
        more = f"; ... and {len(self.rows) - 10} more" if len(self.rows) > 10 else ""
        super().__init__(field, f"{len(self.rows)} invalid identifier(s): {shown}{more}")


class DuplicateIdentifierError(DataValidationError):
    """The same enterprise ID appears more than once in one party's table."""

    def __init__(self, field: str, duplicates: Sequence[object]) -> None:
        self.duplicates = list(duplicates)
        shown = ", ".join(repr(d) for d in self.duplicates[:10])
        super().__init__(field, f"{len(self.duplicates)} duplicated id(s): {shown}")


class SchemaMismatchError(DataValidationError):
    """The two parties (or a model and a table) disagree about columns."""


# --- cryptography -----------------------------------------------------------------------------


class CryptoError(JointCreditError):
    """A cryptographic operation was refused or failed."""


class KeyPolicyError(CryptoError, ValueError):
    """A key or parameter set is weaker than the library's security policy allows."""


class EncodingOverflowError(CryptoError, ValueError):
    """A value does not fit the fixed-point / packed encoding without wrapping around."""


class InvalidPeerInputError(CryptoError, ValueError):
    """The peer sent cryptographic material that must be rejected (e.g. a low-order point)."""


# --- protocol / messaging ---------------------------------------------------------------------


class ProtocolError(JointCreditError):
    """A message could not be accepted; the receiving party's state is unchanged."""


class AuthenticationError(ProtocolError):
    """A message's MAC does not verify (tampered, or sent under another key)."""


class ReplayError(ProtocolError):
    """A message arrived with a sequence number that was already seen or is out of order."""


class SessionMismatchError(ProtocolError):
    """A message belongs to another session, protocol or was sent by the wrong role."""


class UnexpectedMessageError(ProtocolError):
    """A well-formed message of a type the receiving party does not expect now."""


class MalformedMessageError(ProtocolError):
    """Bytes that do not decode as an envelope or payload of this library."""


# --- scoring / governance ---------------------------------------------------------------------


class ConsentError(JointCreditError):
    """An enterprise has not authorised (or has revoked) the requested use of its data."""


class BudgetExhaustedError(JointCreditError):
    """A bank has used up its query budget at the credit center."""


class AuditLogTamperedError(JointCreditError):
    """The audit log's hash chain does not verify."""


class NotFittedError(JointCreditError, AttributeError):
    """An estimator was used before ``fit``."""


class RemotePartyError(ProtocolError):
    """The other party refused a request; carries the remote error's type name and message."""

    def __init__(self, remote_type: str, message: str) -> None:
        self.remote_type = remote_type
        self.remote_message = message
        super().__init__(f"the other party refused the request: {remote_type}: {message}")


# --- deployment -------------------------------------------------------------------------------


class DeploymentError(JointCreditError):
    """The federated deployment cannot do what was asked (configuration, processes, network)."""


class PartyUnavailableError(DeploymentError):
    """The other party did not answer in time, is offline, or its node was refused."""
