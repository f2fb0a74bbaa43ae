"""The credit center's single entry point before any joint job touches its data.

A scoring protocol's center half calls :meth:`ScoringGate.admit` with the aligned candidate ids
before it encrypts or computes anything:

1. consent: ids without valid consent for this bank and purpose are dropped and reported back
   with the reason (they never enter the cryptographic path);
2. budget: the remaining ids are charged to the bank's query budget, all or nothing;
3. audit: one hash-chained line records the job (bank, purpose, counts, model id, id digest).

Only then does the protocol score ``admission.allowed_ids``; afterwards it calls
:meth:`ScoringGate.complete` so the log also shows what was actually delivered.
If the audit line cannot be written the exception propagates and the job must not run
(fail closed); the budget may then have been charged, which errs on the bank's side of caution.

Model development (federated binning, hetero LR / scorecard and SecureBoost training, and the
evaluation scoring of those models) goes through :func:`require_training_consent` instead:
every row must have ``model_training`` consent, or the step is refused whole (a model trained
on a silently filtered set would not be the model the bank asked for); nothing is charged to the
query budget, which counts scoring queries.
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
from jointcredit.errors import (
    BudgetExhaustedError,
    ConsentError,
    DataValidationError,
    DuplicateIdentifierError,
)
from jointcredit.scoring.audit import AuditEntry, AuditLog, id_digest, to_utc, utc_now
from jointcredit.scoring.budget import QueryBudget
from jointcredit.scoring.consent import ConsentRegistry, normalize_purpose

#: ``CenterParty.services`` keys: the center's gate (absent: no governance, e.g. in-process
#: sessions) and the authenticated name of the bank a job runs for.
SERVICE_GATE = "gate"
SERVICE_BANK_ID = "bank_id"
#: The consent purpose of model development with the center's data.
TRAINING_PURPOSE = "model_training"
#: Purposes a model's own prediction protocol may run under: evaluating the model, and
#: re-scoring the pre-authorized book for post-loan monitoring. Pre-authorization scoring goes
#: through the ``score`` protocol and its query budget.
PREDICT_PURPOSES = (TRAINING_PURPOSE, "post_loan_monitoring")


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

    def require_all(
        self,
        bank_id: str,
        ids: Sequence[object],
        *,
        purpose: str,
        protocol: str,
        at: object = None,
    ) -> None:
        """Refuse unless *every* id has valid consent for ``purpose`` (nothing is charged).

        Audited as ``use_admitted`` or ``use_refused`` (counts per reason, the id-set digest,
        never ids); a refusal raises :class:`ConsentError` naming the counts.
        """
        bank = str(bank_id).strip()
        if not bank:
            raise DataValidationError("bank_id", "empty")
        purpose = normalize_purpose(purpose)
        moment = utc_now() if at is None else to_utc(at, "at")
        allowed, excluded = self.consents.filter(list(ids), bank, purpose, moment)
        counts = dict(sorted(Counter(excluded.values()).items()))
        details: dict[str, Any] = {
            "bank": bank,
            "purpose": purpose,
            "protocol": protocol,
            "requested": len(allowed) + len(excluded),
            "allowed": len(allowed),
            "excluded": counts,
            "ids_digest": id_digest(allowed + sorted(excluded)),
        }
        if excluded:
            self.audit.append(self.actor, "use_refused", details)
            raise ConsentError(
                f"{protocol}: {len(excluded)} of {details['requested']} enterprises have no valid "
                f"{purpose} consent for {bank} ({', '.join(f'{k}: {v}' for k, v in counts.items())})"
            )
        self.audit.append(self.actor, "use_admitted", details)


def require_training_consent(
    center: Any, rows: np.ndarray, protocol: str, purpose: str = TRAINING_PURPOSE
) -> None:
    """The center's check before a model-development step reads its data for ``rows``.

    Applies when the center runs with a consent registry (``jointcredit serve --consents``
    puts the gate in the center's services); sessions without one (in-process experiments on
    the center's own premises) are not gated. A prediction protocol passes the purpose the
    bank declared, one of :data:`PREDICT_PURPOSES`. See :meth:`ScoringGate.require_all`.
    """
    gate = center.services.get(SERVICE_GATE)
    if gate is None:
        return
    ids = center.require_aligned()[np.asarray(rows, dtype=np.int64)]
    gate.require_all(
        str(center.services.get(SERVICE_BANK_ID, "bank")),
        ids.tolist(),
        purpose=purpose,
        protocol=protocol,
    )


def predict_purpose(value: Any, where: str) -> str:
    """The purpose a prediction protocol's bank declared (absent: model training)."""
    if value is None:
        return TRAINING_PURPOSE
    purpose = normalize_purpose(value) if isinstance(value, str) else None
    if purpose not in PREDICT_PURPOSES:
        raise DataValidationError(
            where, f"a model's prediction runs for one of {PREDICT_PURPOSES}, not {value!r}"
        )
    return purpose
