"""Credit-center governance: audit log, consent registry, query budgets and the scoring gate."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jointcredit.errors import (
    AuditLogTamperedError,
    BudgetExhaustedError,
    ConsentError,
    DataValidationError,
    DuplicateIdentifierError,
    KeyPolicyError,
)
from jointcredit.scoring import (
    AuditHead,
    AuditLog,
    BudgetLimits,
    ConsentRegistry,
    QueryBudget,
    ScoringGate,
    id_digest,
)
from jointcredit.scoring.audit import GENESIS_HASH, read_json_lines

UTC = timezone.utc
T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
KEY = b"operator-audit-key-0123456789"


def _ids(n: int, prefix: str = "E") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def _log(tmp_path: Path, n: int = 5, **kwargs) -> AuditLog:
    clock = iter(T0 + timedelta(seconds=i) for i in range(10_000))
    log = AuditLog(tmp_path / "audit.jsonl", clock=lambda: next(clock), **kwargs)
    for i in range(n):
        log.append(
            "credit_center", "job_admitted", {"bank": "bank-a", "allowed": i, "job_id": f"j{i}"}
        )
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# --- audit log ----------------------------------------------------------------------------------


def test_audit_log_chains_and_verifies(tmp_path) -> None:
    log = _log(tmp_path)
    assert log.verify() is True
    entries = log.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev == GENESIS_HASH
    assert all(b.prev == a.hash for a, b in zip(entries, entries[1:], strict=False))
    assert entries[2].details == {"bank": "bank-a", "allowed": 2, "job_id": "j2"}
    assert entries[0].ts == "2025-03-01T02:00:00.000000Z"
    assert log.head() == AuditHead(5, entries[-1].hash)


def test_editing_a_line_is_detected(tmp_path) -> None:
    log = _log(tmp_path)
    lines = _lines(log.path)
    lines[2] = lines[2].replace('"allowed":2', '"allowed":9')
    _write_lines(log.path, lines)
    with pytest.raises(AuditLogTamperedError) as err:
        log.verify()
    assert err.value.line == 3 and "line 3" in str(err.value)


def test_editing_a_line_and_its_hash_breaks_the_next_link(tmp_path) -> None:
    log = _log(tmp_path)
    lines = _lines(log.path)
    record = json.loads(lines[1])
    record["details"]["allowed"] = 99
    body = {k: v for k, v in record.items() if k != "hash"}
    record["hash"] = log._digest(body)
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    _write_lines(log.path, lines)
    with pytest.raises(AuditLogTamperedError) as err:
        log.verify()
    assert err.value.line == 3


def test_whitespace_only_edit_is_detected(tmp_path) -> None:
    log = _log(tmp_path)
    lines = _lines(log.path)
    lines[0] = lines[0].replace(",", ", ", 1)
    _write_lines(log.path, lines)
    with pytest.raises(AuditLogTamperedError) as err:
        log.verify()
    assert err.value.line == 1


@pytest.mark.parametrize("how", ["delete_middle", "delete_first", "swap", "duplicate"])
def test_deleting_or_reordering_lines_is_detected(tmp_path, how: str) -> None:
    log = _log(tmp_path)
    lines = _lines(log.path)
    if how == "delete_middle":
        del lines[2]
    elif how == "delete_first":
        del lines[0]
    elif how == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines.insert(3, lines[2])
    _write_lines(log.path, lines)
    with pytest.raises(AuditLogTamperedError) as err:
        log.verify()
    assert err.value.line <= 4


def test_cutting_the_tail_needs_an_anchor_to_be_detected(tmp_path) -> None:
    log = _log(tmp_path)
    anchor = log.head()
    _write_lines(log.path, _lines(log.path)[:-1])
    assert log.verify() is True  # a bare hash chain cannot see a clean cut at the end
    with pytest.raises(AuditLogTamperedError) as err:
        log.verify(anchor=anchor)
    assert "anchored" in str(err.value)


def test_hmac_log_resists_a_recomputed_chain(tmp_path) -> None:
    log = _log(tmp_path, key=KEY)
    assert log.verify() is True
    assert all(e.alg == "hmac-sha256" for e in log.entries())
    # An attacker without the key rewrites line 2 and recomputes every hash with another key.
    forged = AuditLog(tmp_path / "forged.jsonl", key=b"attacker-guess-000000000")
    records = [json.loads(line) for line in _lines(log.path)]
    records[1]["details"]["allowed"] = 42
    prev = GENESIS_HASH
    for rec in records:
        rec["prev"] = prev
        rec["hash"] = forged._digest({k: v for k, v in rec.items() if k != "hash"})
        prev = rec["hash"]
    _write_lines(log.path, [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records])
    with pytest.raises(AuditLogTamperedError) as err:
        log.verify()
    assert err.value.line == 1
    with pytest.raises(DataValidationError) as verr:
        AuditLog(log.path).verify()  # an HMAC log cannot be checked without the key
    assert verr.value.field == "key"


def test_hmac_key_policy() -> None:
    with pytest.raises(KeyPolicyError):
        AuditLog("unused.jsonl", key=b"short")


@pytest.mark.parametrize(
    ("details", "field"),
    [
        ({"ids": [f"E{i}" for i in range(100)]}, "details.ids"),
        ({"scores": np.arange(3.0)}, "details.scores"),
        ({"frame": pd.DataFrame({"x": [1]})}, "details.frame"),
        ({"pd": float("nan")}, "details.pd"),
        ({"nested": {"raw": b"\x00"}}, "details.nested.raw"),
    ],
)
def test_audit_refuses_bulk_or_raw_details_and_writes_nothing(
    tmp_path, details: dict, field: str
) -> None:
    log = _log(tmp_path, n=2)
    before = log.path.read_bytes()
    with pytest.raises(DataValidationError) as err:
        log.append("credit_center", "scored", details)
    assert err.value.field == field
    assert log.path.read_bytes() == before


def test_torn_last_line_is_reported_then_repaired_on_append(tmp_path) -> None:
    log = _log(tmp_path, n=3)
    with open(log.path, "ab") as f:
        f.write(b'{"action":"job_adm')  # a crash in the middle of a write
    with pytest.raises(AuditLogTamperedError) as err:
        log.verify()
    assert err.value.line == 4
    log.append("credit_center", "job_admitted", {"allowed": 1})
    assert log.verify() is True
    assert [e.seq for e in log.entries()] == [1, 2, 3, 4]
    assert (tmp_path / "audit.jsonl.torn").read_bytes() == b'{"action":"job_adm\n'


def test_id_digest_is_order_independent() -> None:
    assert id_digest(["b", "a", "c"]) == id_digest(["c", "b", "a"])
    assert id_digest(["a", "b"]) != id_digest(["a", "b", "c"])
    assert len(id_digest([])) == 64


# --- consent registry ---------------------------------------------------------------------------


def test_consent_validity_window_and_revocation(tmp_path) -> None:
    reg = ConsentRegistry(tmp_path / "consents.jsonl")
    reg.grant("E1", "bank-a", "pre_authorization", "2025-01-01", "2025-12-31")
    assert (
        reg.status("E1", "bank-a", "pre_authorization", "2024-12-31T12:00:00+08:00")
        == "not_yet_valid"
    )
    assert reg.is_valid("E1", "bank-a", "pre_authorization", "2025-06-01")
    # A bare expiry date includes that whole day (Beijing time).
    assert reg.is_valid("E1", "bank-a", "pre_authorization", "2025-12-31T23:59:00+08:00")
    assert reg.status("E1", "bank-a", "pre_authorization", "2026-01-01T00:00:00+08:00") == "expired"
    # Consent is per bank and per purpose.
    assert reg.status("E1", "bank-b", "pre_authorization", "2025-06-01") == "no_consent"
    assert reg.status("E1", "bank-a", "model_training", "2025-06-01") == "no_consent"

    assert reg.revoke("E1", "bank-a", "scoring", at="2025-07-01") == 1  # alias of pre_authorization
    assert reg.is_valid("E1", "bank-a", "pre_authorization", "2025-06-30")
    assert reg.status("E1", "bank-a", "pre_authorization", "2025-07-02") == "revoked"
    with pytest.raises(ConsentError, match="revoked"):
        reg.require("E1", "bank-a", "pre_authorization", "2025-07-02")

    reg.grant("E1", "bank-a", "pre_authorization", "2025-09-01", "2026-08-31")  # consents again
    assert reg.is_valid("E1", "bank-a", "pre_authorization", "2025-09-02")
    assert reg.status("E1", "bank-a", "pre_authorization", "2025-08-01") == "revoked"


def test_consent_filter_keeps_order_and_explains_exclusions() -> None:
    reg = ConsentRegistry()
    for e in ("E1", "E2", "E3", "E4"):
        reg.grant(e, "bank-a", "pre_authorization", "2025-01-01", "2025-12-31")
    reg.grant("E5", "bank-b", "pre_authorization", "2025-01-01", "2025-12-31")
    reg.grant("E6", "bank-a", "model_training", "2025-01-01", "2025-12-31")
    reg.revoke("E2", "bank-a", "pre_authorization", at="2025-02-01")
    reg.grant("E7", "bank-a", "pre_authorization", "2024-01-01", "2024-12-31")
    allowed, excluded = reg.filter(
        ["e4", " E1", "E2", "E5", "E6", "E7", "E9", "E3"],
        "bank-a",
        "pre_authorization",
        "2025-03-01",
    )
    assert allowed == ["E4", "E1", "E3"]  # normalised ids, input order
    assert excluded == {
        "E2": "revoked",
        "E5": "no_consent",
        "E6": "no_consent",
        "E7": "expired",
        "E9": "no_consent",
    }
    with pytest.raises(DuplicateIdentifierError):
        reg.filter(["E1", "e1"], "bank-a", "pre_authorization")


def test_consent_persists_append_only_and_reloads(tmp_path) -> None:
    path = tmp_path / "consents.jsonl"
    reg = ConsentRegistry(path)
    reg.grant("E1", "bank-a", "pre_authorization", "2025-01-01", "2025-12-31")
    first = path.read_bytes()
    reg.grant("E2", "bank-a", "post_loan_monitoring", "2025-01-01", "2025-12-31")
    reg.revoke("E1", "bank-a", "pre_authorization", at="2025-05-01")
    assert path.read_bytes().startswith(first)  # nothing rewritten
    assert [r["op"] for r in read_json_lines(path)] == ["grant", "grant", "revoke"]

    again = ConsentRegistry(path)
    assert again.status("E1", "bank-a", "pre_authorization", "2025-06-01") == "revoked"
    assert again.is_valid("E2", "bank-a", "monitoring", "2025-06-01")
    assert len(again) == 2


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("E1", "bank-a", "marketing", "2025-01-01", "2025-12-31"), "purpose"),
        (("", "bank-a", "pre_authorization", "2025-01-01", "2025-12-31"), "enterprise_id"),
        (("E1", " ", "pre_authorization", "2025-01-01", "2025-12-31"), "bank_id"),
        (("E1", "bank-a", "pre_authorization", "2025-01-01", "2024-12-31"), "expires_at"),
        (("E1", "bank-a", "pre_authorization", "January 2025", "2025-12-31"), "granted_at"),
    ],
)
def test_invalid_grant_names_the_field_and_writes_nothing(
    tmp_path, args: tuple, field: str
) -> None:
    path = tmp_path / "consents.jsonl"
    reg = ConsentRegistry(path)
    reg.grant("E0", "bank-a", "pre_authorization", "2025-01-01", "2025-12-31")
    before = path.read_bytes()
    with pytest.raises(DataValidationError) as err:
        reg.grant(*args)
    assert err.value.field == field
    assert path.read_bytes() == before and len(reg) == 1


def test_revoking_nothing_is_an_error(tmp_path) -> None:
    reg = ConsentRegistry(tmp_path / "c.jsonl")
    with pytest.raises(ConsentError, match="no unexpired consent"):
        reg.revoke("E1", "bank-a", "pre_authorization", at="2025-01-01")
    assert not (tmp_path / "c.jsonl").exists()


def _consent_csv(
    path: Path, rows: list[str], header: str = "id,bank,purpose,granted_at,expires_at"
) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_consent_csv_import_is_validated_and_idempotent(tmp_path) -> None:
    csv = _consent_csv(
        tmp_path / "consents.csv",
        [
            "91110000600037341L,bank-a,scoring,2025-01-01,2025-12-31",
            "918587832P12455XH0,bank-a,training,2025-01-01T00:00:00Z,2026-01-01T00:00:00Z",
            "e3,bank-a,post_loan_monitoring,2025-01-01,2025-06-30",
        ],
    )
    reg = ConsentRegistry.from_csv(csv, tmp_path / "consents.jsonl")
    assert len(reg) == 3
    assert reg.is_valid("91110000600037341L", "bank-a", "pre_authorization", "2025-03-01")
    assert reg.is_valid("918587832p12455xh0", "bank-a", "model_training", "2025-03-01")
    assert reg.is_valid("E3", "bank-a", "post_loan_monitoring", "2025-03-01")
    size = (tmp_path / "consents.jsonl").stat().st_size
    assert reg.import_csv(csv) == 0  # re-import adds nothing
    assert (tmp_path / "consents.jsonl").stat().st_size == size


def test_bad_consent_csv_reports_every_row_and_imports_nothing(tmp_path) -> None:
    csv = _consent_csv(
        tmp_path / "bad.csv",
        [
            "E1,bank-a,scoring,2025-01-01,2025-12-31",
            "E2,bank-a,marketing,2025-01-01,2025-12-31",
            "E3,bank-a,scoring,2025-01-01,not-a-date",
            ",bank-a,scoring,2025-01-01,2025-12-31",
        ],
    )
    reg = ConsentRegistry(tmp_path / "consents.jsonl")
    with pytest.raises(DataValidationError) as err:
        reg.import_csv(csv)
    assert err.value.field == "purpose"
    assert "3 invalid consent row(s)" in err.value.reason
    assert (
        "row 1" in err.value.reason and "row 2" in err.value.reason and "row 3" in err.value.reason
    )
    assert len(reg) == 0 and not (tmp_path / "consents.jsonl").exists()

    missing = _consent_csv(
        tmp_path / "m.csv", ["E1,bank-a,scoring,2025-01-01"], "id,bank,purpose,granted_at"
    )
    with pytest.raises(DataValidationError) as err:
        reg.import_csv(missing)
    assert err.value.field == "expires_at"


def test_consent_csv_with_revocations(tmp_path) -> None:
    csv = _consent_csv(
        tmp_path / "c.csv",
        [
            "E1,bank-a,scoring,2025-01-01,2025-12-31,2025-04-01",
            "E2,bank-a,scoring,2025-01-01,2025-12-31,",
        ],
        "id,bank,purpose,granted_at,expires_at,revoked_at",
    )
    reg = ConsentRegistry.from_csv(csv)
    allowed, excluded = reg.filter(["E1", "E2"], "bank-a", "pre_authorization", "2025-05-01")
    assert allowed == ["E2"] and excluded == {"E1": "revoked"}


def test_consent_store_survives_a_torn_append(tmp_path) -> None:
    path = tmp_path / "consents.jsonl"
    reg = ConsentRegistry(path)
    reg.grant("E1", "bank-a", "pre_authorization", "2025-01-01", "2025-12-31")
    with open(path, "ab") as f:
        f.write(b'{"op":"grant","enterprise_id":"E2"')  # crash mid-append
    reloaded = ConsentRegistry(path)
    assert len(reloaded) == 1
    reloaded.grant("E3", "bank-a", "pre_authorization", "2025-01-01", "2025-12-31")
    assert len(ConsentRegistry(path)) == 2

    with open(path, "ab") as f:
        f.write(b"garbage in the middle\n")
    with pytest.raises(DataValidationError) as err:
        ConsentRegistry(path)
    assert err.value.field == f"{path}:3"


# --- query budgets ------------------------------------------------------------------------------


def test_budget_charges_and_refuses_without_partial_charge(tmp_path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    budget = QueryBudget({"bank-a": BudgetLimits(per_day=100, per_month=250)}, audit=audit)
    budget.charge("bank-a", 60, at=T0)
    with pytest.raises(BudgetExhaustedError, match="daily budget"):
        budget.charge("bank-a", 41, at=T0)
    assert budget.usage("bank-a", T0) == {"day": 60, "month": 60}  # nothing charged
    budget.charge("bank-a", 40, at=T0)
    assert budget.remaining("bank-a", T0) == {"day": 0, "month": 150}
    # A new (Beijing) day: 16:30 UTC on 1 March is 00:30 on 2 March.
    next_day = datetime(2025, 3, 1, 16, 30, tzinfo=UTC)
    budget.charge("bank-a", 100, at=next_day)
    with pytest.raises(BudgetExhaustedError, match="monthly budget"):
        budget.charge("bank-a", 51, at=next_day + timedelta(days=1))
    budget.charge("bank-a", 50, at=next_day + timedelta(days=1))

    actions = [e.action for e in audit.entries()]
    assert actions.count("budget_refused") == 2 and actions.count("budget_charged") == 4
    refused = [e for e in audit.entries() if e.action == "budget_refused"]
    assert refused[0].details["requested"] == 41 and refused[0].details["bank"] == "bank-a"
    assert audit.verify()


def test_per_enterprise_budget(tmp_path) -> None:
    budget = QueryBudget(
        default=BudgetLimits(per_day=None, per_month=None, per_enterprise_per_month=2)
    )
    budget.charge("bank-a", ids=["E1", "E2"], at=T0)
    budget.charge("bank-a", ids=["E1"], at=T0)
    with pytest.raises(BudgetExhaustedError, match="1 enterprise") as err:
        budget.charge("bank-a", ids=["E1", "E3"], at=T0)
    assert "E1" not in str(err.value)  # counts only, never ids, in the message
    budget.charge("bank-a", ids=["E3"], at=T0)  # E3 was not charged by the refused call
    budget.charge("bank-b", ids=["E1"], at=T0)  # budgets are per bank
    budget.charge("bank-a", ids=["E1"], at=T0 + timedelta(days=31))  # and per month


def test_budget_ledger_persists_and_reloads(tmp_path) -> None:
    path = tmp_path / "budget.jsonl"
    limits = {"bank-a": BudgetLimits(per_day=10, per_month=None)}
    budget = QueryBudget(limits, path=path)
    budget.charge("bank-a", ids=_ids(6), at=T0)
    with pytest.raises(BudgetExhaustedError):
        budget.charge("bank-a", 5, at=T0)
    reloaded = QueryBudget(limits, path=path)
    assert reloaded.usage("bank-a", T0)["day"] == 6
    with pytest.raises(BudgetExhaustedError):
        reloaded.charge("bank-a", 5, at=T0)
    assert len(read_json_lines(path)) == 1  # refused charges are not in the ledger
    assert read_json_lines(path)[0]["ids"] == _ids(6)


def test_unknown_bank_without_default_has_no_budget() -> None:
    budget = QueryBudget({"bank-a": BudgetLimits()}, default=None)
    with pytest.raises(BudgetExhaustedError, match="no query budget"):
        budget.charge("bank-x", 1, at=T0)
    assert budget.remaining("bank-x", T0) == {"day": 0, "month": 0}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"per_day": -1}, "per_day"),
        ({"per_month": 1.5}, "per_month"),
        ({"per_enterprise_per_month": "3"}, "per_enterprise_per_month"),
    ],
)
def test_invalid_limits_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(DataValidationError) as err:
        BudgetLimits(**kwargs)
    assert err.value.field == field


def test_invalid_charge_arguments() -> None:
    budget = QueryBudget()
    for kwargs, field in (
        ({"n": -1}, "n"),
        ({"n": 2, "ids": ["E1"]}, "n"),
        ({}, "n"),
        ({"n": 1, "at": "yesterday"}, "at"),
    ):
        with pytest.raises(DataValidationError) as err:
            budget.charge("bank-a", **kwargs)
        assert err.value.field == field
    with pytest.raises(DuplicateIdentifierError):
        budget.charge("bank-a", ids=["E1", "E1"])


# --- the scoring gate ---------------------------------------------------------------------------


@pytest.fixture
def center(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    consents = ConsentRegistry(tmp_path / "consents.jsonl")
    ids = _ids(20)
    for e in ids[:15]:
        consents.grant(e, "bank-a", "pre_authorization", date(2025, 1, 1), date(2025, 12, 31))
    consents.revoke(ids[3], "bank-a", "pre_authorization", at="2025-02-01")
    consents.revoke(ids[4], "bank-a", "pre_authorization", at="2025-02-01")
    consents.grant(ids[15], "bank-a", "model_training", date(2025, 1, 1), date(2025, 12, 31))
    budget = QueryBudget(
        {"bank-a": BudgetLimits(per_day=20, per_month=100)}, path=tmp_path / "budget.jsonl"
    )
    return ScoringGate(consents, budget, audit), ids


def test_gate_excludes_unconsented_and_revoked_before_scoring(center) -> None:
    gate, ids = center
    reached_crypto: list[str] = []

    def scoring_protocol(allowed: list[str]) -> int:  # stands in for the encrypted protocol
        reached_crypto.extend(allowed)
        return len(allowed)

    admission = gate.admit("bank-a", ids, at=T0, model_id="lr-1", session_id="s-42")
    allowed, excluded = admission
    gate.complete(admission, scored=scoring_protocol(allowed))

    assert allowed == [e for i, e in enumerate(ids[:15]) if i not in (3, 4)]
    assert excluded[ids[3]] == excluded[ids[4]] == "revoked"
    assert {excluded[e] for e in ids[15:]} == {"no_consent"}
    assert not set(reached_crypto) & set(excluded)
    assert gate.budget.usage("bank-a", T0)["day"] == 13  # only consented ids are charged

    entries = gate.audit.entries()
    job = next(e for e in entries if e.action == "job_admitted")
    assert job.details["requested"] == 20 and job.details["allowed"] == 13
    assert job.details["excluded"] == {"no_consent": 5, "revoked": 2}
    assert job.details["model_id"] == "lr-1" and job.details["session_id"] == "s-42"
    assert job.details["allowed_ids_digest"] == id_digest(allowed)
    done = entries[-1]
    assert done.action == "job_completed" and done.details["scored"] == 13
    assert done.details["job_id"] == admission.job_id
    text = gate.audit.path.read_text()
    assert not any(e in text for e in ids)  # the log never holds raw enterprise ids


def test_gate_budget_exhaustion_raises_is_logged_and_charges_nothing(center) -> None:
    gate, ids = center
    gate.admit("bank-a", ids[:10], at=T0)  # 10 consented (two revoked -> 8 charged)
    used = gate.budget.usage("bank-a", T0)
    assert used["day"] == 8
    more = _ids(15, "F")
    for e in more:
        gate.consents.grant(e, "bank-a", "pre_authorization", "2025-01-01", "2025-12-31")
    with pytest.raises(BudgetExhaustedError):
        gate.admit("bank-a", more, at=T0)
    assert gate.budget.usage("bank-a", T0) == used
    last = gate.audit.entries()[-1]
    assert last.action == "job_refused"
    assert last.details["reason"] == "budget_exhausted" and last.details["allowed"] == 15
    assert gate.audit.verify()


def test_gate_audit_line_edit_is_detected(center) -> None:
    gate, ids = center
    gate.admit("bank-a", ids, at=T0)
    gate.admit("bank-a", ids[:5], at=T0)
    lines = _lines(gate.audit.path)
    lines[0] = lines[0].replace('"allowed":13', '"allowed":3')
    assert '"allowed":3' in lines[0]
    _write_lines(gate.audit.path, lines)
    with pytest.raises(AuditLogTamperedError) as err:
        gate.audit.verify()
    assert err.value.line == 1


def test_gate_rejects_bad_input_before_charging_or_logging(center) -> None:
    gate, ids = center
    for bad, exc in (
        ([ids[0], ids[0]], DuplicateIdentifierError),
        ([ids[0], ""], DataValidationError),
    ):
        with pytest.raises(exc):
            gate.admit("bank-a", bad, at=T0)
    with pytest.raises(DataValidationError) as err:
        gate.admit("bank-a", ids, purpose="marketing", at=T0)
    assert err.value.field == "purpose"
    assert gate.audit.entries() == [] and gate.budget.usage("bank-a", T0)["day"] == 0
    admission = gate.admit("bank-a", ids[:2], at=T0)
    with pytest.raises(DataValidationError) as err:
        gate.complete(admission, scored=3)
    assert err.value.field == "scored"


def test_gate_uses_the_purpose_of_the_job(center) -> None:
    gate, ids = center
    allowed, excluded = gate.admit("bank-a", ids, purpose="training", at=T0)
    assert allowed == [ids[15]] and len(excluded) == 19


# --- model development needs model_training consent ---------------------------------------------


@pytest.fixture(scope="module")
def dev_data():
    from jointcredit.data import make_sme_data

    return make_sme_data(n_enterprises=1500, n_bank_customers=600, overlap=0.9, seed=13)


def _gated_session(tmp_path: Path, data, *, missing: int = 0):
    """A session whose center runs with a gate, as ``serve --consents`` configures it: every
    aligned enterprise but the first ``missing`` has model_training consent for bank-a."""
    from jointcredit.data import load_party_table
    from jointcredit.scoring.gate import SERVICE_BANK_ID, SERVICE_GATE
    from jointcredit.session import JointSession

    session = JointSession.in_process(
        load_party_table(data.bank, label_col=data.label_col), load_party_table(data.center)
    )
    session.align()
    consents = ConsentRegistry()
    for e in session.center.require_aligned()[missing:]:
        consents.grant(e, "bank-a", "training", date(2025, 1, 1), date(2099, 12, 31))
        consents.grant(e, "bank-b", "pre_authorization", date(2025, 1, 1), date(2099, 12, 31))
    budget = QueryBudget({}, default=BudgetLimits(per_day=1), path=tmp_path / "budget.jsonl")
    gate = ScoringGate(consents, budget, AuditLog(tmp_path / "audit.jsonl"))
    session.center.services.update({SERVICE_GATE: gate, SERVICE_BANK_ID: "bank-a"})
    return session, gate


def _estimators():
    from jointcredit.learn import FederatedBinning, HeteroLogisticRegression, HeteroSecureBoost

    return {
        "binning": lambda: FederatedBinning(backend="plain", max_bins=5),
        "hetero_lr": lambda: HeteroLogisticRegression(
            backend="plain", max_epochs=1, batch_size=450
        ),
        "secureboost": lambda: HeteroSecureBoost(
            n_estimators=2, max_depth=2, max_bin=8, min_child_samples=10, backend="plain"
        ),
    }


@pytest.mark.parametrize("protocol", ["binning", "hetero_lr", "secureboost"])
def test_training_on_an_enterprise_without_training_consent_is_refused(
    tmp_path, dev_data, protocol
) -> None:
    session, gate = _gated_session(tmp_path, dev_data, missing=1)
    n = len(session.aligned_ids)
    with pytest.raises(ConsentError, match=rf"{protocol}: 1 of {n} enterprises .*no_consent: 1"):
        _estimators()[protocol]().fit(session)
    (refused,) = gate.audit.entries()
    assert refused.action == "use_refused"
    assert refused.details["protocol"] == protocol
    assert refused.details["purpose"] == "model_training"
    assert refused.details["excluded"] == {"no_consent": 1}
    assert refused.details["allowed"] == n - 1  # bank-b's consents and other purposes: no


def test_consented_training_and_evaluation_are_admitted_and_audited(tmp_path, dev_data) -> None:
    session, gate = _gated_session(tmp_path, dev_data)
    n = len(session.aligned_ids)
    rows = np.arange(n)
    models = {name: make().fit(session) for name, make in _estimators().items()}
    for name in ("hetero_lr", "secureboost"):
        proba = models[name].predict_proba(session, rows[:200])
        assert proba.shape[0] == 200
    actions = [
        (e.action, e.details["protocol"], e.details["requested"]) for e in gate.audit.entries()
    ]
    assert ("use_admitted", "binning", n) in actions
    assert ("use_admitted", "hetero_lr", n) in actions
    assert ("use_admitted", "hetero_lr_predict", 200) in actions
    assert ("use_admitted", "secureboost_predict", 200) in actions
    assert all(action == "use_admitted" for action, _, _ in actions)
    assert gate.audit.verify() is True
    # model development is not a scoring query: nothing was charged (the limit is 1 a day)
    gate.budget.charge("bank-a", ids=["E1"], purpose="pre_authorization")
    with pytest.raises(BudgetExhaustedError):
        gate.budget.charge("bank-a", ids=["E2"], purpose="pre_authorization")


def test_evaluation_scoring_needs_training_consent_too(tmp_path, dev_data) -> None:
    from jointcredit.learn import HeteroLogisticRegression

    session, gate = _gated_session(tmp_path, dev_data)
    model = HeteroLogisticRegression(backend="plain", max_epochs=1, batch_size=450).fit(session)
    first = session.center.require_aligned()[0]
    gate.consents.revoke(first, "bank-a", "model_training", at=datetime.now(UTC))
    with pytest.raises(ConsentError, match="hetero_lr_predict: 1 of 10 .*revoked: 1"):
        model.predict_proba(session, np.arange(10))
    assert gate.audit.entries()[-1].action == "use_refused"


def test_rescoring_the_book_runs_under_monitoring_consent(tmp_path, dev_data) -> None:
    """A model's prediction protocol re-scores the book under post_loan_monitoring consent;
    pre-authorization scoring is the score protocol's (budgeted) job, never this one's."""
    from jointcredit.learn import HeteroLogisticRegression
    from jointcredit.learn.linear import HeteroLRPredictBank

    session, gate = _gated_session(tmp_path, dev_data)
    model = HeteroLogisticRegression(backend="plain", max_epochs=1, batch_size=450).fit(session)
    book = session.center.require_aligned()[:30]
    for e in book[:20]:
        gate.consents.grant(e, "bank-a", "monitoring", date(2025, 1, 1), date(2099, 12, 31))
    proba = model.predict_proba(session, np.arange(20), purpose="post_loan_monitoring")
    assert proba.shape == (20, 2)
    last = gate.audit.entries()[-1]
    assert (last.action, last.details["purpose"]) == ("use_admitted", "post_loan_monitoring")
    with pytest.raises(ConsentError, match="10 of 30 .*post_loan_monitoring"):
        model.predict_proba(session, np.arange(30), purpose="monitoring")
    with pytest.raises(DataValidationError, match="purpose"):
        model.predict_proba(session, np.arange(5), purpose="pre_authorization")

    class Escalating(HeteroLRPredictBank):  # a bank that edits the purpose on the wire
        def handle(self, msg_type, payload):
            reply = super().handle(msg_type, payload)
            if msg_type == "start":
                reply["purpose"] = "pre_authorization"
            return reply

    side = Escalating(session.bank, model=model.bank_model(), rows=np.arange(5), backend="plain")
    with pytest.raises(DataValidationError, match="hetero_lr_predict/start.ok purpose"):
        session.run(side)
