"""Pre-authorization scoring: the policy the bank applies to joint-model PDs, and the credit
center's governance (consent registry, query budgets, tamper-evident audit log, and the gate
that applies all three before a job touches the center's data).

The encrypted scoring protocols live in :mod:`jointcredit.scoring.encrypted`; their center half
calls :meth:`ScoringGate.admit` before any cryptography and :meth:`ScoringGate.complete` after.
"""

from jointcredit.scoring.audit import (
    GENESIS_HASH,
    LOCAL_TZ,
    AuditEntry,
    AuditHead,
    AuditLog,
    id_digest,
)
from jointcredit.scoring.budget import BudgetLimits, Charge, QueryBudget
from jointcredit.scoring.consent import (
    EXPIRED,
    NO_CONSENT,
    NOT_YET_VALID,
    PURPOSES,
    REVOKED,
    ConsentRecord,
    ConsentRegistry,
    normalize_purpose,
)
from jointcredit.scoring.gate import Admission, ScoringGate
from jointcredit.scoring.policy import (
    DECISION_COLUMNS,
    DECISIONS,
    DECLINE,
    PRE_AUTHORIZE,
    REFER,
    CreditLinePolicy,
    GradeBands,
    PreAuthorizationPolicy,
    ScoreScaling,
    SizeIndicator,
    export_whitelist,
    reason_codes,
    sum_by_category,
    whitelist,
)

__all__ = [
    "DECISIONS",
    "DECISION_COLUMNS",
    "DECLINE",
    "EXPIRED",
    "GENESIS_HASH",
    "LOCAL_TZ",
    "NOT_YET_VALID",
    "NO_CONSENT",
    "PRE_AUTHORIZE",
    "PURPOSES",
    "REFER",
    "REVOKED",
    "Admission",
    "AuditEntry",
    "AuditHead",
    "AuditLog",
    "BudgetLimits",
    "Charge",
    "ConsentRecord",
    "ConsentRegistry",
    "CreditLinePolicy",
    "GradeBands",
    "PreAuthorizationPolicy",
    "QueryBudget",
    "ScoreScaling",
    "ScoringGate",
    "SizeIndicator",
    "export_whitelist",
    "id_digest",
    "normalize_purpose",
    "reason_codes",
    "sum_by_category",
    "whitelist",
]
