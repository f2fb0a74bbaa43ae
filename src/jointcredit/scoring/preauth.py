"""End-to-end pre-authorization: candidates -> consent / budget gate -> encrypted scores -> PD ->
policy decisions, with a summary of who was excluded and why.

The bank calls :func:`preauthorize` with an aligned session, its half of a fitted joint model
and its candidates. The credit center's half of protocol ``"score"``
(:mod:`jointcredit.scoring.encrypted`) runs its :class:`~jointcredit.scoring.gate.ScoringGate`
before any cryptography, so enterprises without valid consent never reach the encrypted path;
the bank hears back which ones were excluded and why. The bank then turns each PD into a score,
a grade, a credit line and a decision with its :class:`~jointcredit.scoring.policy.
PreAuthorizationPolicy`, and composes reason codes from its own features and the credit-center
*categories* the center named.

Exclusion reasons reported to the bank:

* ``not_at_credit_center``: the candidate is not in the PSI intersection (the bank learns this
  from alignment, no message needed);
* ``no_consent``, ``revoked``, ``expired``, ``not_yet_valid``: from the center's consent registry;
* budget exhaustion refuses the whole job: :class:`~jointcredit.errors.BudgetExhaustedError` is
  raised (the center logged ``job_refused``; the bank's half records the refusal).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.data.uscc import normalize_ids
from jointcredit.errors import DataValidationError, DuplicateIdentifierError, ProtocolError
from jointcredit.protocol import codec
from jointcredit.scoring.encrypted import (
    PROTOCOL,
    SERVICE_BANK_ID,
    SERVICE_GATE,
    ScoreBank,
    bank_view,
    linear_feature_contributions,
)
from jointcredit.scoring.policy import (
    REASON_SEPARATOR,
    PreAuthorizationPolicy,
    ScoreScaling,
    reason_codes,
)

__all__ = [
    "NOT_AT_CENTER",
    "EXCLUSION_COLUMNS",
    "default_policy",
    "excluded_frame",
    "load_bank_model",
    "load_center_part",
    "load_joint_model",
    "preauthorize",
]

#: Reason for a candidate outside the PSI intersection.
NOT_AT_CENTER = "not_at_credit_center"
#: Columns of the excluded-candidates table (``summary["excluded_ids"]`` as a frame).
EXCLUSION_COLUMNS = ("id", "reason")


# --------------------------------------------------------------------------------------------
# the policy a model implies
# --------------------------------------------------------------------------------------------


def default_policy(model: Any) -> PreAuthorizationPolicy:
    """The default policy; for a scorecard, with the scorecard's own PDO / base score / odds so
    the policy's scores are the scorecard's points."""
    pdo, base, odds = (getattr(model, a, None) for a in ("pdo", "base_score", "base_odds"))
    if hasattr(model, "factor_") and None not in (pdo, base, odds):
        return PreAuthorizationPolicy(
            scaling=ScoreScaling(pdo=pdo, base_score=base, base_odds=odds)
        )
    return PreAuthorizationPolicy()


# --------------------------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------------------------


def _candidate_ids(session: Any, candidates: Any) -> list[str]:
    """Candidate ids in input order: ids, aligned row positions, or a frame with an ``id``."""
    if isinstance(candidates, pd.DataFrame):
        if "id" not in candidates.columns:
            raise DataValidationError("candidates", "a candidate frame needs an 'id' column")
        candidates = candidates["id"].tolist()
    if candidates is None:
        return [str(i) for i in session.bank.require_aligned()]
    arr = np.asarray(list(candidates), dtype=object)
    if arr.size and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in arr.tolist()
    ):
        aligned = session.bank.require_aligned()
        rows = np.asarray(arr, dtype=np.int64)
        if rows.min() < 0 or rows.max() >= len(aligned):
            raise DataValidationError("candidates", "row positions outside the intersection")
        arr = np.asarray(aligned, dtype=object)[rows]
    ids = normalize_ids(arr.tolist())
    if (ids == "").any():
        raise DataValidationError("candidates", "empty or missing candidate id")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DuplicateIdentifierError("candidates", unique[counts > 1].tolist())
    return [str(i) for i in ids]


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(u, dtype=np.float64)))


# --------------------------------------------------------------------------------------------
# reason codes (bank side)
# --------------------------------------------------------------------------------------------


def _bank_contributions(view: Any, X: pd.DataFrame) -> pd.DataFrame | None:
    if view.kind != "linear":
        return None  # SecureBoost: per-feature attribution would need the center's routing

    from jointcredit.learn.linear import bank_scores

    return linear_feature_contributions(view.model, X, bank_scores)


def _reasons(
    bank_contrib: pd.DataFrame | None, center: list[list[str]], n: int, top_k: int
) -> list[str]:
    """``bank:<feature>`` codes ranked by the bank's own contributions, then the
    ``center:<category>`` codes in the center's order (the center sends ranks, not values, so
    the two lists cannot be merged by size)."""
    bank = (
        reason_codes(bank_contrib, None, top_k=top_k, scale="logit")
        if bank_contrib is not None and bank_contrib.shape[1]
        else [""] * n
    )
    out = []
    for i in range(n):
        parts = [c for c in bank[i].split(REASON_SEPARATOR) if c]
        parts += [f"center:{c}" for c in (center[i] if i < len(center) else [])]
        out.append(REASON_SEPARATOR.join(parts))
    return out


# --------------------------------------------------------------------------------------------
# the end-to-end call
# --------------------------------------------------------------------------------------------


def preauthorize(
    session: Any,
    model: Any,
    candidate_rows_or_ids: Any = None,
    policy: PreAuthorizationPolicy | None = None,
    gate: Any = None,
    *,
    bank_id: str | None = None,
    purpose: str = "pre_authorization",
    output: str = "exact",
    noise_std: float = 0.0,
    top_k: int = 3,
    backend: str = "ckks",
    n_jobs: int = 1,
    batch_rows: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score candidates with a joint model under encryption and apply the pre-authorization
    policy.

    Args:
        session: an aligned session (``session.align()`` done).
        model: the bank's half of a fitted joint model: ``HeteroLogisticRegression``,
            ``HeteroScorecard`` or ``HeteroSecureBoost`` (fitted or loaded).
        candidate_rows_or_ids: enterprise ids (or a frame with an ``id`` column, or row
            positions in the intersection); default every aligned enterprise. Ids the bank's
            table does not hold raise :class:`DataValidationError`.
        policy: the bank's policy (default :func:`default_policy`).
        gate: in-process convenience for demos and tests: installs this
            :class:`~jointcredit.scoring.gate.ScoringGate` as the credit center's gate (as the
            center's operator would; ``bank_id`` likewise). In a deployment the center
            configures its own.
        output: ``"exact"`` or ``"noise"`` (the center adds ``noise_std`` logit units of
            Gaussian noise to its contribution; see docs/protocols/scoring.md).
        top_k: bank reason codes per enterprise (the center decides how many categories).
        backend, n_jobs, batch_rows: see :class:`~jointcredit.scoring.encrypted.ScoreBank`.

    Returns:
        ``(decisions, summary)``. ``decisions`` has one row per scored candidate, in input order:
        ``id, pd, score, grade, credit_line, decision, reasons``. ``summary`` is JSON-ready: the
        policy summary (per grade / decision counts, total lines) plus ``requested``,
        ``scored``, ``excluded`` (count per reason), ``excluded_ids`` (id -> reason) and
        ``protocol`` (bytes, round trips, seconds, output policy).

    Raises:
        BudgetExhaustedError: the center refused the job (nothing was scored).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise DataValidationError("top_k", f"must be a non-negative integer, got {top_k!r}")
    policy = default_policy(model) if policy is None else policy
    if not isinstance(policy, PreAuthorizationPolicy):
        raise DataValidationError("policy", "expected a PreAuthorizationPolicy")
    ids = _candidate_ids(session, candidate_rows_or_ids)
    bank_table = session.bank.table
    bank_index = pd.Index(np.asarray(bank_table.ids, dtype=object).astype(str))
    unknown = [i for i in ids if i not in bank_index]
    if unknown:
        raise DataValidationError(
            "candidates", f"{len(unknown)} id(s) not in the bank's table, e.g. {unknown[:3]}"
        )
    aligned = pd.Index(np.asarray(session.bank.require_aligned(), dtype=object).astype(str))
    positions = aligned.get_indexer(ids)
    excluded: dict[str, str] = {
        i: NOT_AT_CENTER for i, p in zip(ids, positions, strict=True) if p < 0
    }
    rows = positions[positions >= 0].astype(np.int64)

    if gate is not None:
        session.center.services[SERVICE_GATE] = gate
    if bank_id is not None:
        session.center.services[SERVICE_BANK_ID] = bank_id

    side = ScoreBank(
        session.bank,
        model=model,
        rows=rows,
        purpose=purpose,
        output=output,
        noise_std=noise_std,
        backend=backend,
        n_jobs=n_jobs,
        batch_rows=batch_rows,
    )
    mark = session.transcript.mark()
    start = time.perf_counter()
    try:
        session.run(side)
    finally:
        side.close()
    seconds = time.perf_counter() - start
    if side.refused is not None:  # pragma: no cover - the center raises after refusing
        raise ProtocolError(f"score: the center refused the job: {side.refused['message']}")
    if side.state != "done" or side.logits is None:
        raise ProtocolError("score: the protocol ended before the scores arrived")

    aligned_ids = np.asarray(session.bank.require_aligned(), dtype=object)
    for row, reason in side.excluded.items():
        excluded[str(aligned_ids[row])] = reason
    scored_ids = [str(i) for i in aligned_ids[side.scored_rows]]
    pd_values = _sigmoid(side.logits)
    X_bank = session.bank.aligned_features(side.scored_rows)
    reasons = _reasons(
        _bank_contributions(side.view, X_bank) if top_k else None,
        side.center_reasons,
        len(scored_ids),
        max(top_k, 1),
    )
    indicators = list(policy.lines.size_indicators)
    present = [c for c in indicators if c in X_bank.columns]
    # a bank without any of the policy's size columns gets unscaled base lines; a bank with
    # some of them has a configuration error, which decide() reports by column
    features = X_bank.assign(id=scored_ids) if present else None
    decisions = policy.decide(scored_ids, pd_values, features, reasons)
    order = {i: k for k, i in enumerate(ids)}
    decisions = (
        decisions.assign(_order=decisions["id"].map(order))
        .sort_values("_order", kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )

    cost = session.transcript.since(mark).summary(PROTOCOL)
    summary = policy.summary(decisions)
    summary.update(
        {
            "requested": len(ids),
            "scored": len(scored_ids),
            "excluded": dict(sorted(Counter(excluded.values()).items())),
            "excluded_ids": {i: excluded[i] for i in ids if i in excluded},
            "size_factor_applied": bool(present),
            "protocol": {
                "model_id": side.view.model_id,
                "model_kind": side.view.kind,
                "backend": backend,
                "output": output,
                "noise_std": side.noise_std,
                "seconds": round(seconds, 3),
                "round_trips": cost["round_trips"],
                "bytes_bank_to_center": cost["bytes_bank_to_center"],
                "bytes_center_to_bank": cost["bytes_center_to_bank"],
            },
        }
    )
    return decisions, summary


def excluded_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """``summary["excluded_ids"]`` as a two-column frame (``id``, ``reason``)."""
    items = summary.get("excluded_ids", {})
    return pd.DataFrame(
        {
            "id": pd.Series(list(items), dtype=object),
            "reason": pd.Series(list(items.values()), dtype=object),
        },
        columns=list(EXCLUSION_COLUMNS),
    )


# --------------------------------------------------------------------------------------------
# model directories (what `jointcredit train` writes: DIR/bank and DIR/center)
# --------------------------------------------------------------------------------------------


def load_bank_model(directory: str | os.PathLike[str]) -> Any:
    """The bank's half of a saved joint model from ``directory`` (``DIR/bank``).

    Knows the files the estimators write: ``bank_model.json`` (hetero LR / scorecard,
    :meth:`HeteroLogisticRegression.save`) and ``secureboost_bank.json``
    (:meth:`HeteroSecureBoost.save`).
    """
    path = Path(directory)
    if (path / "bank_model.json").is_file():
        from jointcredit.learn.linear import load_bank_model as load_linear

        return load_linear(path / "bank_model.json")
    if (path / "secureboost_bank.json").is_file():
        from jointcredit.learn.boosting import HeteroSecureBoost

        return HeteroSecureBoost.load(path)
    if path.is_file():
        return load_bank_model(path.parent)
    raise DataValidationError(
        str(path), "no bank model here (expected bank_model.json or secureboost_bank.json)"
    )


def load_center_part(center: Any, directory: str | os.PathLike[str], model_id: str) -> str:
    """Load the credit center's half of model ``model_id`` from ``directory`` (``DIR/center``)
    into ``center.model_parts``; the center does this on its own disk.

    Reads the linear module's ``save_center_model`` JSON, the boosting module's
    ``save_center_part`` JSON, and ``<model_id>.bin`` (a codec-packed part, as ``jointcredit
    train`` writes for parts without their own format).
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise DataValidationError(str(folder), "no center model directory")
    for file in sorted(folder.iterdir()):
        if not file.is_file():
            continue
        part: Any = None
        if file.suffix == ".json":
            try:
                data = json.loads(file.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or str(data.get("model_id")) != model_id:
                continue
            if data.get("format") == "jointcredit.secureboost.center/1":
                from jointcredit.learn.boosting import load_center_part as load_boost

                return load_boost(center, file)
            if data.get("kind") == "hetero_lr":
                from jointcredit.learn.linear import load_center_model

                return load_center_model(center, file)
        elif file.name == f"{model_id}.bin":
            try:
                part = codec.unpack(file.read_bytes())
            except Exception as exc:  # noqa: BLE001 - report which file is damaged
                raise DataValidationError(
                    str(file), f"cannot read the center part ({exc})"
                ) from exc
            if not isinstance(part, dict) or part.get("kind") != "hetero_lr":
                raise DataValidationError(str(file), "not a center part this release can score")
            center.model_parts[model_id] = part
            return model_id
    raise DataValidationError(str(folder), f"no center part for model {model_id!r}")


def load_joint_model(directory: str | os.PathLike[str], session: Any) -> Any:
    """Load ``DIR/bank`` for the bank and (in-process) ``DIR/center`` into the session's center;
    returns the bank's model."""
    root = Path(directory)
    model = load_bank_model(root / "bank")
    load_center_part(session.center, root / "center", bank_view(model).model_id)
    return model
