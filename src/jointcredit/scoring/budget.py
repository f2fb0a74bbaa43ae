"""Per-bank query budgets at the credit center.

Every enterprise a bank scores uses the center's data once. Budgets cap how much a bank can
draw (per day and per month) and how often the same enterprise can be scored (per month), which
also limits the repeated-query attack in which a bank varies its own inputs to learn the
center's contribution for one enterprise (see docs/governance.md).

A charge is all or nothing: if any limit would be exceeded, :class:`BudgetExhaustedError` is
raised, nothing is charged, and (with an audit log) the refused attempt is logged. Charges are
kept in an append-only JSON-lines ledger, durable before :meth:`QueryBudget.charge` returns.
Unlike the audit log, the ledger keeps the enterprise ids of each charge: it is the center's
internal record of what it scored for whom, the audit log only carries their digest.

Days and months are calendar periods in :data:`~jointcredit.scoring.audit.LOCAL_TZ` (China
Standard Time) by default, because that is how operators and banks read "per day".
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import numpy as np

from jointcredit.data.uscc import normalize_ids
from jointcredit.errors import BudgetExhaustedError, DataValidationError, DuplicateIdentifierError
from jointcredit.scoring.audit import (
    LOCAL_TZ,
    AuditLog,
    append_json_lines,
    format_utc,
    id_digest,
    read_json_lines,
    to_utc,
    utc_now,
)


@dataclass(frozen=True)
class BudgetLimits:
    """How much one bank may draw. ``None`` means no limit of that kind.

    ``per_day`` / ``per_month``: enterprises scored (one enterprise scored twice counts twice).
    ``per_enterprise_per_month``: times the same enterprise may be scored by this bank in a
    calendar month; enforced for charges that name their ids.
    """

    per_day: int | None = 100_000
    per_month: int | None = 500_000
    per_enterprise_per_month: int | None = 10

    def __post_init__(self) -> None:
        for name in ("per_day", "per_month", "per_enterprise_per_month"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise DataValidationError(
                    name, f"must be a non-negative integer or None, got {value!r}"
                )

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetLimits:
        unknown = set(data) - {"per_day", "per_month", "per_enterprise_per_month"}
        if unknown:
            raise DataValidationError(sorted(unknown)[0], "unknown budget limit")
        return cls(**dict(data))


@dataclass(frozen=True)
class Charge:
    """A recorded charge: who, when, how many, which purpose and the digest of its id set."""

    bank_id: str
    at: datetime
    n: int
    purpose: str | None
    ids_digest: str | None


class QueryBudget:
    """Budgets of every bank, with a ledger of charges at ``path`` (in memory if None).

    ``limits`` gives per-bank limits; banks not listed get ``default`` (``None``: such banks
    have no budget at all and every charge is refused).
    """

    def __init__(
        self,
        limits: Mapping[str, BudgetLimits] | None = None,
        *,
        default: BudgetLimits | None = BudgetLimits(),  # noqa: B008 - frozen, safe to share
        path: str | os.PathLike[str] | None = None,
        audit: AuditLog | None = None,
        tz: tzinfo = LOCAL_TZ,
    ) -> None:
        self.limits = {str(k).strip(): v for k, v in (limits or {}).items()}
        for bank, lim in self.limits.items():
            if not bank:
                raise DataValidationError("limits", "empty bank id")
            if not isinstance(lim, BudgetLimits):
                raise DataValidationError(f"limits.{bank}", "expected a BudgetLimits")
        self.default = default
        self.path = Path(path) if path is not None else None
        self.audit = audit
        self.tz = tz
        self._used: Counter[tuple[str, str]] = Counter()  # (bank, "D2025-01-31"/"M2025-01")
        self._per_enterprise: dict[tuple[str, str], Counter[str]] = {}
        if self.path is not None:
            for number, record in enumerate(read_json_lines(self.path), start=1):
                try:
                    self._apply(
                        str(record["bank_id"]),
                        to_utc(record["at"], "at"),
                        int(record["n"]),
                        record.get("ids"),
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise DataValidationError(
                        f"{self.path}:{number}", f"not a budget charge ({exc})"
                    ) from None

    def limits_for(self, bank_id: str) -> BudgetLimits | None:
        return self.limits.get(str(bank_id).strip(), self.default)

    # --- periods ------------------------------------------------------------------------------

    def _periods(self, at: datetime) -> tuple[str, str]:
        local = at.astimezone(self.tz)
        return f"D{local:%Y-%m-%d}", f"M{local:%Y-%m}"

    def usage(self, bank_id: str, at: object = None) -> dict[str, int]:
        """Enterprises charged to ``bank_id`` in the day and the month containing ``at``."""
        day, month = self._periods(self._moment(at))
        bank = str(bank_id).strip()
        return {"day": self._used[(bank, day)], "month": self._used[(bank, month)]}

    def remaining(self, bank_id: str, at: object = None) -> dict[str, int | None]:
        """What is left today and this month (``None``: unlimited; 0 for an unknown bank
        without a default budget)."""
        limits = self.limits_for(bank_id)
        used = self.usage(bank_id, at)
        if limits is None:
            return {"day": 0, "month": 0}
        return {
            "day": None if limits.per_day is None else max(0, limits.per_day - used["day"]),
            "month": None if limits.per_month is None else max(0, limits.per_month - used["month"]),
        }

    # --- charging -----------------------------------------------------------------------------

    def charge(
        self,
        bank_id: str,
        n: int | None = None,
        at: object = None,
        *,
        ids: Sequence[object] | None = None,
        purpose: str | None = None,
    ) -> Charge:
        """Charge ``n`` enterprises (or the enterprises ``ids``) to ``bank_id`` at ``at``.

        Raises :class:`BudgetExhaustedError` if any limit would be exceeded (nothing charged,
        the attempt logged to the audit log), :class:`DataValidationError` for bad arguments.
        """
        bank = str(bank_id).strip()
        if not bank:
            raise DataValidationError("bank_id", "empty")
        moment = self._moment(at)
        id_list = None if ids is None else self._check_ids(ids)
        if n is None:
            if id_list is None:
                raise DataValidationError("n", "give the number of enterprises or their ids")
            n = len(id_list)
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise DataValidationError("n", f"must be a non-negative integer, got {n!r}")
        n = int(n)
        if id_list is not None and n != len(id_list):
            raise DataValidationError("n", f"{n} does not match the {len(id_list)} ids given")
        digest = None if id_list is None else id_digest(id_list)

        problem = self._over_limit(bank, moment, n, id_list)
        if problem is not None:
            if self.audit is not None:
                self.audit.append(
                    "credit_center",
                    "budget_refused",
                    {
                        "bank": bank,
                        "requested": n,
                        "purpose": purpose,
                        "reason": problem,
                        "ids_digest": digest,
                        "at": moment,
                    },
                )
            error = BudgetExhaustedError(f"bank {bank!r}: {problem}")
            error.bank_id = bank  # type: ignore[attr-defined]
            error.requested = n  # type: ignore[attr-defined]
            raise error

        if n and self.path is not None:
            append_json_lines(
                self.path,
                [
                    {
                        "v": 1,
                        "bank_id": bank,
                        "at": format_utc(moment),
                        "n": n,
                        "purpose": purpose,
                        "ids": id_list,
                    }
                ],
            )
        if n:
            self._apply(bank, moment, n, id_list)
            if self.audit is not None:
                used = self.usage(bank, moment)
                self.audit.append(
                    "credit_center",
                    "budget_charged",
                    {
                        "bank": bank,
                        "charged": n,
                        "purpose": purpose,
                        "ids_digest": digest,
                        "used_day": used["day"],
                        "used_month": used["month"],
                        "at": moment,
                    },
                )
        return Charge(bank, moment, n, purpose, digest)

    def _over_limit(self, bank: str, moment: datetime, n: int, ids: list[str] | None) -> str | None:
        limits = self.limits_for(bank)
        if limits is None:
            return "no query budget is configured for this bank" if n else None
        day, month = self._periods(moment)
        for label, limit, used in (
            (f"daily budget for {day[1:]}", limits.per_day, self._used[(bank, day)]),
            (f"monthly budget for {month[1:]}", limits.per_month, self._used[(bank, month)]),
        ):
            if limit is not None and used + n > limit:
                return f"{label} exhausted: limit {limit}, used {used}, requested {n}"
        if ids and limits.per_enterprise_per_month is not None:
            seen = self._per_enterprise.get((bank, month), Counter())
            cap = limits.per_enterprise_per_month
            over = sum(1 for i in ids if seen[i] + 1 > cap)
            if over:
                # Count only: the message may travel to the bank and into the audit log.
                return (
                    f"per-enterprise budget for {month[1:]} exhausted for {over} enterprise(s): "
                    f"each may be scored at most {cap} time(s) a month"
                )
        return None

    def _apply(self, bank: str, moment: datetime, n: int, ids: list[str] | None) -> None:
        day, month = self._periods(moment)
        self._used[(bank, day)] += n
        self._used[(bank, month)] += n
        if ids:
            self._per_enterprise.setdefault((bank, month), Counter()).update(ids)

    @staticmethod
    def _moment(at: object) -> datetime:
        return utc_now() if at is None else to_utc(at, "at")

    @staticmethod
    def _check_ids(ids: Sequence[object]) -> list[str]:
        normalised = normalize_ids(list(ids))
        if (normalised == "").any():
            raise DataValidationError("ids", "empty or missing id")
        unique, counts = np.unique(normalised, return_counts=True)
        if (counts > 1).any():
            raise DuplicateIdentifierError("ids", unique[counts > 1].tolist())
        return normalised.tolist()
