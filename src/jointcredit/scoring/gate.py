"""The credit center's single entry point before any joint job touches its data.

A scoring (or training, or monitoring) protocol's center half calls :meth:`ScoringGate.admit`
with the aligned candidate ids before it encrypts or computes anything:

1. consent: ids without valid consent for this bank and purpose are dropped and reported back
   with the reason (they never enter the cryptographic path);
2. budget: the remaining ids are charged to the bank's query budget, all or nothing;
3. audit: one hash-chained line records the job (bank, purpose, counts, model id, id digest).

Only then does the protocol score ``admission.allowed_ids``; afterwards it calls
:meth:`ScoringGate.complete` so the log also shows what was actually delivered.
If the audit line cannot be written the exception propagates and the job must not run
(fail closed); the budget may then have been charged, which errs on the bank's side of caution.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from jointcredit.data.uscc import normalize_ids
from jointcredit.errors import BudgetExhaustedError, DataValidationError, DuplicateIdentifierError
from jointcredit.scoring.audit import AuditEntry, AuditLog, id_digest, to_utc, utc_now
from jointcredit.scoring.budget import QueryBudget
from jointcredit.scoring.consent import ConsentRegistry, normalize_purpose


@dataclass(frozen=True)
class Admission:
    """What the gate let through for one job."""

    job_id: str
    bank_id: str
    purpose: str
    at: datetime
    allowed_ids: list[str]
    excluded: dict[str, str]  # id -> reason (no_consent, revoked, expired, not_yet_valid)
    model_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def excluded_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.excluded.values()).items()))

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as ``allowed_ids, excluded = gate.admit(...)``."""
        yield self.allowed_ids
        yield self.excluded


class ScoringGate:
    """Consent filter, budget charge and audit line for a job, in one call."""

    def __init__(
        self,
        consents: ConsentRegistry,
        budget: QueryBudget,
        audit: AuditLog,
        *,
        actor: str = "credit_center",
    ) -> None:
        self.consents = consents
        self.budget = budget
        self.audit = audit
        self.actor = actor

    def admit(
        self,
        bank_id: str,
        ids: Sequence[object],
        *,
        purpose: str = "pre_authorization",
        at: object = None,
        model_id: str | None = None,
        job_id: str | None = None,
        **extra: str | int | float | bool | None,
    ) -> Admission:
        """Filter ``ids`` by consent, charge the bank for the rest, log the job.

        Raises :class:`BudgetExhaustedError` (logged as ``job_refused``, nothing charged) when
        the bank's budget cannot cover the consented ids; :class:`DataValidationError` /
        :class:`DuplicateIdentifierError` for bad input, before anything is charged or logged.
        ``extra`` holds further scalar job facts for the log (session id, round trips, ...).
        """
        bank = str(bank_id).strip()
        if not bank:
            raise DataValidationError("bank_id", "empty")
        purpose = normalize_purpose(purpose)
        moment = utc_now() if at is None else to_utc(at, "at")
        candidates = normalize_ids(list(ids))
        if (candidates == "").any():
            raise DataValidationError("ids", "empty or missing id")
        unique, counts = np.unique(candidates, return_counts=True)
        if (counts > 1).any():
            raise DuplicateIdentifierError("ids", unique[counts > 1].tolist())
        job = job_id or uuid.uuid4().hex

        allowed, excluded = self.consents.filter(candidates.tolist(), bank, purpose, moment)
        admission = Admission(job, bank, purpose, moment, allowed, excluded, model_id, dict(extra))
        details: dict[str, Any] = {
            "job_id": job,
            "bank": bank,
            "purpose": purpose,
            "model_id": model_id,
            "requested": len(candidates),
            "allowed": len(allowed),
            "excluded": admission.excluded_counts,
            "allowed_ids_digest": id_digest(allowed),
            **extra,
        }
        try:
            self.budget.charge(bank, at=moment, ids=allowed, purpose=purpose)
        except BudgetExhaustedError as exc:
            self.audit.append(
                self.actor,
                "job_refused",
                {**details, "reason": "budget_exhausted", "message": str(exc)},
            )
            raise
        self.audit.append(self.actor, "job_admitted", details)
        return admission

    def complete(
        self, admission: Admission, *, scored: int, **facts: str | int | float | bool | None
    ) -> AuditEntry:
        """Log that the job delivered results for ``scored`` enterprises (counts only)."""
        if isinstance(scored, bool) or not isinstance(scored, int) or scored < 0:
            raise DataValidationError("scored", f"must be a non-negative integer, got {scored!r}")
        if scored > len(admission.allowed_ids):
            raise DataValidationError(
                "scored", f"{scored} is more than the {len(admission.allowed_ids)} admitted ids"
            )
        return self.audit.append(
            self.actor,
            "job_completed",
            {
                "job_id": admission.job_id,
                "bank": admission.bank_id,
                "purpose": admission.purpose,
                "model_id": admission.model_id,
                "scored": scored,
                **facts,
            },
        )
