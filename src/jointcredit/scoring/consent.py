"""Which enterprise authorised which bank to use its public credit data, for what, until when.

The credit center keeps this registry (企业授权). Training, scoring and monitoring jobs pass
their candidate ids through :meth:`ConsentRegistry.filter` before any cryptography runs, so an
enterprise without valid consent never enters a protocol; it is reported back as excluded with
the reason.

Storage is an append-only JSON-lines file of *events* (``grant`` and ``revoke``), replayed on
load. Nothing is ever rewritten, so the file is also the history of every consent. Events are
validated completely before the single durable append that records them; a failed call leaves
both the file and the in-memory state unchanged.

Revocation follows log order: a ``revoke`` at time *r* ends every grant already recorded for
that (enterprise, bank, purpose) that has not expired by *r*, including grants that start later.
A grant recorded after the revocation establishes consent again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.data.uscc import normalize_id, normalize_ids
from jointcredit.errors import ConsentError, DataValidationError, DuplicateIdentifierError
from jointcredit.scoring.audit import (
    AuditLog,
    append_json_lines,
    format_utc,
    id_digest,
    read_json_lines,
    to_utc,
    utc_now,
)

#: What an enterprise may authorise a bank to use its credit-center data for.
PURPOSES: tuple[str, ...] = ("pre_authorization", "post_loan_monitoring", "model_training")

#: Short names accepted on input (CSV files, CLI) for the purposes above.
PURPOSE_ALIASES: dict[str, str] = {
    "scoring": "pre_authorization",
    "preauthorization": "pre_authorization",
    "monitoring": "post_loan_monitoring",
    "training": "model_training",
}

# Reasons an id is excluded by :meth:`ConsentRegistry.filter`.
NO_CONSENT = "no_consent"
NOT_YET_VALID = "not_yet_valid"
EXPIRED = "expired"
REVOKED = "revoked"
VALID = "valid"

#: Columns of a consent CSV (``revoked_at`` is optional).
CSV_COLUMNS: tuple[str, ...] = ("id", "bank", "purpose", "granted_at", "expires_at")


def normalize_purpose(purpose: object, field: str = "purpose") -> str:
    """The canonical purpose name, or :class:`DataValidationError` naming ``field``."""
    text = str(purpose).strip().lower() if isinstance(purpose, str) else None
    if text in PURPOSES:
        return text
    if text in PURPOSE_ALIASES:
        return PURPOSE_ALIASES[text]
    raise DataValidationError(
        field, f"unknown purpose {purpose!r}; use one of {', '.join(PURPOSES)}"
    )


def _norm_text(value: object, field: str) -> str:
    text = normalize_id(value) if field != "bank_id" else str(value or "").strip()
    if not text:
        raise DataValidationError(field, "empty")
    return text


@dataclass(frozen=True)
class ConsentRecord:
    """One grant of consent, with its revocation time if it was revoked."""

    enterprise_id: str
    bank_id: str
    purpose: str
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def status_at(self, at: datetime) -> str:
        """``valid``, ``not_yet_valid``, ``expired`` or ``revoked`` at time ``at`` (UTC)."""
        if at < self.granted_at:
            return NOT_YET_VALID
        if at >= self.expires_at:
            return EXPIRED
        if self.revoked_at is not None and at >= self.revoked_at:
            return REVOKED
        return VALID


_Key = tuple[str, str, str]  # (bank_id, purpose, enterprise_id)

# When no grant is valid, the reason reported is the most informative one present.
_REASON_RANK = {REVOKED: 0, EXPIRED: 1, NOT_YET_VALID: 2}


class ConsentRegistry:
    """Consents held at the credit center; persisted to ``path`` if one is given.

    With ``path=None`` the registry lives in memory only (tests, or a center that reloads its
    consents from CSV at every start with ``--consents``). ``audit`` optionally receives one
    line per grant/revoke/import call with counts and an id digest.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, audit: AuditLog | None = None
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.audit = audit
        self._grants: dict[_Key, list[ConsentRecord]] = {}
        if self.path is not None:
            for number, event in enumerate(read_json_lines(self.path), start=1):
                try:
                    self._apply(self._parse_event(event))
                except DataValidationError as exc:
                    raise DataValidationError(
                        f"{self.path}:{number}", f"{exc.field}: {exc.reason}"
                    ) from None

    # --- changes ------------------------------------------------------------------------------

    def grant(
        self,
        enterprise_id: str,
        bank_id: str,
        purpose: str,
        granted_at: object,
        expires_at: object,
    ) -> ConsentRecord:
        """Record that ``enterprise_id`` lets ``bank_id`` use its data for ``purpose``.

        ``granted_at``/``expires_at``: datetimes (naive = China Standard Time) or ISO text; a
        bare date as ``expires_at`` includes that whole day.
        """
        event = self._grant_event(enterprise_id, bank_id, purpose, granted_at, expires_at)
        self._commit([event], "consent_granted")
        return self._grants[self._key(event)][-1]

    def revoke(self, enterprise_id: str, bank_id: str, purpose: str, at: object = None) -> int:
        """Revoke consent from ``at`` (default now); returns how many grants it ended.

        Raises :class:`ConsentError` if there is no unexpired grant to revoke, so a typo in an
        id does not silently "succeed".
        """
        event = self._revoke_event(enterprise_id, bank_id, purpose, at)
        affected = self._revocable(self._grants.get(self._key(event), []), event)
        if not affected:
            raise ConsentError(
                f"enterprise {event['enterprise_id']!r}: no unexpired consent for bank "
                f"{event['bank_id']!r} and purpose {event['purpose']!r} to revoke"
            )
        self._commit([event], "consent_revoked")
        return len(affected)

    def import_csv(self, csv_path: str | os.PathLike[str], *, id_col: str = "id") -> int:
        """Import consents from a CSV (``id, bank, purpose, granted_at, expires_at[, revoked_at]``).

        Every row is validated first and all problems are reported together (column, row
        numbers, reasons); only then are the new events appended in one durable write. Rows that
        repeat a grant already recorded are skipped, so re-importing a file is harmless.
        Returns the number of events recorded.
        """
        events = self._csv_events(Path(csv_path), id_col)
        return self._commit(
            self._new_events(events), "consents_imported", source=Path(csv_path).name
        )

    @classmethod
    def from_csv(
        cls,
        csv_path: str | os.PathLike[str],
        path: str | os.PathLike[str] | None = None,
        *,
        id_col: str = "id",
        audit: AuditLog | None = None,
    ) -> ConsentRegistry:
        """A registry (in memory unless ``path``) holding the consents of a CSV file."""
        registry = cls(path, audit=audit)
        registry.import_csv(csv_path, id_col=id_col)
        return registry

    # --- queries ------------------------------------------------------------------------------

    def status(self, enterprise_id: str, bank_id: str, purpose: str, at: object = None) -> str:
        """``valid`` or the reason it is not: ``no_consent``, ``not_yet_valid``, ``expired``,
        ``revoked``."""
        purpose = normalize_purpose(purpose)
        moment = utc_now() if at is None else to_utc(at, "at")
        bank = _norm_text(bank_id, "bank_id")
        return self._status(self._grants.get((bank, purpose, normalize_id(enterprise_id))), moment)

    def is_valid(self, enterprise_id: str, bank_id: str, purpose: str, at: object = None) -> bool:
        return self.status(enterprise_id, bank_id, purpose, at) == VALID

    def require(self, enterprise_id: str, bank_id: str, purpose: str, at: object = None) -> None:
        """Raise :class:`ConsentError` naming the enterprise and reason unless consent is valid."""
        status = self.status(enterprise_id, bank_id, purpose, at)
        if status != VALID:
            raise ConsentError(
                f"enterprise {normalize_id(enterprise_id)!r}: {status} for bank "
                f"{str(bank_id).strip()!r} and purpose {normalize_purpose(purpose)!r}"
            )

    def filter(
        self, ids: Sequence[object], bank_id: str, purpose: str, at: object = None
    ) -> tuple[list[str], dict[str, str]]:
        """Split ``ids`` into those with valid consent (input order, normalised) and the rest.

        Returns ``(allowed_ids, excluded)`` where ``excluded`` maps each other id to its reason.
        Duplicate ids are refused: a job lists each enterprise once.
        """
        purpose = normalize_purpose(purpose)
        bank = _norm_text(bank_id, "bank_id")
        moment = utc_now() if at is None else to_utc(at, "at")
        normalised = normalize_ids(list(ids))
        if (normalised == "").any():
            rows = np.flatnonzero(normalised == "")[:10].tolist()
            raise DataValidationError("ids", f"empty or missing id at position(s) {rows}")
        unique, counts = np.unique(normalised, return_counts=True)
        if (counts > 1).any():
            raise DuplicateIdentifierError("ids", unique[counts > 1].tolist())
        allowed: list[str] = []
        excluded: dict[str, str] = {}
        for enterprise in normalised.tolist():
            status = self._status(self._grants.get((bank, purpose, enterprise)), moment)
            if status == VALID:
                allowed.append(enterprise)
            else:
                excluded[enterprise] = status
        return allowed, excluded

    def records(
        self,
        enterprise_id: str | None = None,
        bank_id: str | None = None,
        purpose: str | None = None,
    ) -> list[ConsentRecord]:
        """Current grants (with revocations applied), optionally narrowed down."""
        ent = None if enterprise_id is None else normalize_id(enterprise_id)
        bank = None if bank_id is None else str(bank_id).strip()
        purp = None if purpose is None else normalize_purpose(purpose)
        return [
            record
            for (b, p, e), grants in self._grants.items()
            if (ent is None or e == ent)
            and (bank is None or b == bank)
            and (purp is None or p == purp)
            for record in grants
        ]

    def __len__(self) -> int:
        return sum(len(g) for g in self._grants.values())

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    def _status(grants: list[ConsentRecord] | None, moment: datetime) -> str:
        if not grants:
            return NO_CONSENT
        reasons = {g.status_at(moment) for g in grants}
        if VALID in reasons:
            return VALID
        return min(reasons, key=_REASON_RANK.__getitem__)

    def _grant_event(
        self,
        enterprise_id: object,
        bank_id: object,
        purpose: object,
        granted_at: object,
        expires_at: object,
    ) -> dict[str, Any]:
        granted = to_utc(granted_at, "granted_at")
        expires = to_utc(expires_at, "expires_at", end_of_day=True)
        if expires <= granted:
            raise DataValidationError(
                "expires_at", f"{format_utc(expires)} is not after granted_at {format_utc(granted)}"
            )
        return {
            "v": 1,
            "op": "grant",
            "enterprise_id": _norm_text(enterprise_id, "enterprise_id"),
            "bank_id": _norm_text(bank_id, "bank_id"),
            "purpose": normalize_purpose(purpose),
            "granted_at": format_utc(granted),
            "expires_at": format_utc(expires),
        }

    def _revoke_event(
        self, enterprise_id: object, bank_id: object, purpose: object, at: object
    ) -> dict[str, Any]:
        return {
            "v": 1,
            "op": "revoke",
            "enterprise_id": _norm_text(enterprise_id, "enterprise_id"),
            "bank_id": _norm_text(bank_id, "bank_id"),
            "purpose": normalize_purpose(purpose),
            "revoked_at": format_utc(utc_now() if at is None else to_utc(at, "revoked_at")),
        }

    def _parse_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Re-validate a stored event (the file may have been edited by hand)."""
        op = event.get("op")
        if op == "grant":
            return self._grant_event(
                event.get("enterprise_id"),
                event.get("bank_id"),
                event.get("purpose"),
                event.get("granted_at"),
                event.get("expires_at"),
            )
        if op == "revoke":
            return self._revoke_event(
                event.get("enterprise_id"),
                event.get("bank_id"),
                event.get("purpose"),
                event.get("revoked_at") or "",
            )
        raise DataValidationError("op", f"unknown consent event {op!r}")

    def _key(self, event: dict[str, Any]) -> _Key:
        return (event["bank_id"], event["purpose"], event["enterprise_id"])

    @staticmethod
    def _revocable(grants: list[ConsentRecord], event: dict[str, Any]) -> list[int]:
        revoked = to_utc(event["revoked_at"], "revoked_at")
        return [
            i
            for i, g in enumerate(grants)
            if g.expires_at > revoked and (g.revoked_at is None or g.revoked_at > revoked)
        ]

    @classmethod
    def _apply_to(cls, grants: list[ConsentRecord], event: dict[str, Any]) -> None:
        if event["op"] == "grant":
            grants.append(
                ConsentRecord(
                    enterprise_id=event["enterprise_id"],
                    bank_id=event["bank_id"],
                    purpose=event["purpose"],
                    granted_at=to_utc(event["granted_at"], "granted_at"),
                    expires_at=to_utc(event["expires_at"], "expires_at"),
                )
            )
            return
        revoked = to_utc(event["revoked_at"], "revoked_at")
        for i in cls._revocable(grants, event):
            g = grants[i]
            grants[i] = ConsentRecord(
                g.enterprise_id, g.bank_id, g.purpose, g.granted_at, g.expires_at, revoked
            )

    def _apply(self, event: dict[str, Any]) -> None:
        self._apply_to(self._grants.setdefault(self._key(event), []), event)

    def _new_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop grants already recorded identically and revocations that would change nothing."""
        seen = {
            (k, format_utc(g.granted_at), format_utc(g.expires_at))
            for k, grants in self._grants.items()
            for g in grants
        }
        fresh: list[dict[str, Any]] = []
        for event in events:
            key = self._key(event)
            if event["op"] == "grant":
                marker = (key, event["granted_at"], event["expires_at"])
                if marker in seen:
                    continue
                seen.add(marker)
            fresh.append(event)
        return fresh

    def _commit(self, events: list[dict[str, Any]], action: str, **extra: Any) -> int:
        """Write events durably, then apply them; on any error nothing changes.

        Events are first applied to copies of the grant lists they touch, so that a revocation
        with nothing left to revoke (possible inside an import) is dropped before anything is
        written. Returns the number of events recorded.
        """
        touched: dict[_Key, list[ConsentRecord]] = {}
        kept: list[dict[str, Any]] = []
        for event in events:
            key = self._key(event)
            if key not in touched:
                touched[key] = list(self._grants.get(key, []))
            if event["op"] == "revoke" and not self._revocable(touched[key], event):
                continue
            self._apply_to(touched[key], event)
            kept.append(event)
        if not kept:
            return 0
        if self.path is not None:
            stamp = format_utc(utc_now())
            append_json_lines(self.path, [{**e, "recorded_at": stamp} for e in kept])
        self._grants.update(touched)
        if self.audit is not None:
            ids = {e["enterprise_id"] for e in kept}
            self.audit.append(
                "credit_center",
                action,
                {
                    "grants": sum(e["op"] == "grant" for e in kept),
                    "revocations": sum(e["op"] == "revoke" for e in kept),
                    "enterprises": len(ids),
                    "banks": sorted({e["bank_id"] for e in kept})[:16],
                    "purposes": sorted({e["purpose"] for e in kept}),
                    "ids_digest": id_digest(ids),
                    **extra,
                },
            )
        return len(kept)

    def _csv_events(self, csv_path: Path, id_col: str) -> list[dict[str, Any]]:
        try:
            frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataValidationError(str(csv_path), "file not found") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataValidationError(str(csv_path), f"not a readable CSV ({exc})") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        required = (id_col, *CSV_COLUMNS[1:])
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise DataValidationError(
                missing[0], f"missing column(s) {missing} in {csv_path.name}; need {list(required)}"
            )
        has_revoked = "revoked_at" in frame.columns
        events: list[dict[str, Any]] = []
        problems: list[tuple[str, int, str]] = []
        for row, rec in enumerate(frame.to_dict("records")):
            try:
                events.append(
                    self._grant_event(
                        rec[id_col],
                        rec["bank"],
                        rec["purpose"],
                        rec["granted_at"],
                        rec["expires_at"],
                    )
                )
            except DataValidationError as exc:
                column = {"enterprise_id": id_col, "bank_id": "bank"}.get(exc.field, exc.field)
                problems.append((column, row, exc.reason))
                continue
            if has_revoked and str(rec["revoked_at"]).strip():
                try:
                    revoke = self._revoke_event(
                        rec[id_col], rec["bank"], rec["purpose"], rec["revoked_at"]
                    )
                except DataValidationError as exc:
                    problems.append(("revoked_at", row, exc.reason))
                    continue
                if to_utc(revoke["revoked_at"], "revoked_at") < to_utc(
                    events[-1]["granted_at"], "granted_at"
                ):
                    problems.append(("revoked_at", row, "before granted_at"))
                    continue
                events.append(revoke)
        if problems:
            shown = "; ".join(f"row {r} ({c}): {why}" for c, r, why in problems[:10])
            more = f"; ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise DataValidationError(
                problems[0][0],
                f"{len(problems)} invalid consent row(s) in {csv_path.name}: {shown}{more}",
            )
        return events


def consent_events(records: Iterable[ConsentRecord]) -> list[dict[str, Any]]:
    """Plain-dict view of records (e.g. for a report), timestamps as ISO UTC text."""
    return [
        {
            "enterprise_id": r.enterprise_id,
            "bank_id": r.bank_id,
            "purpose": r.purpose,
            "granted_at": format_utc(r.granted_at),
            "expires_at": format_utc(r.expires_at),
            "revoked_at": None if r.revoked_at is None else format_utc(r.revoked_at),
        }
        for r in records
    ]
