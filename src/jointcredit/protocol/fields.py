"""Checking the shape of a received payload before reading it (every protocol's first step)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jointcredit.errors import MalformedMessageError


def require_fields(payload: Any, where: str, keys: Sequence[str]) -> dict:
    """``payload`` if it is a dict holding every key of ``keys``; else a malformed-message error.

    Extra keys are allowed, so a newer peer can add optional fields without breaking an older
    one; the caller validates each value it reads.
    """
    if not isinstance(payload, dict):
        raise MalformedMessageError(f"{where}: payload must be a dict")
    missing = [k for k in keys if k not in payload]
    if missing:
        raise MalformedMessageError(f"{where}: missing field(s) {missing}")
    return payload
