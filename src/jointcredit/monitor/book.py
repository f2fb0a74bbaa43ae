"""One monitoring run over the pre-authorized book: re-score, migrate, check stability, warn.

:func:`monitor_book` is what ``jointcredit monitor`` runs each month, at the bank, over an open
session with the credit center:

1. **Consent and events** (protocol ``risk_events``): the center sends the flags of the period
   for the enterprises that authorised this bank for ``post_loan_monitoring``, and the list of
   those enterprises. Book enterprises without that consent are excluded before any scoring
   (reason ``no_monitoring_consent``), as are those outside the aligned intersection
   (``not_aligned``).
2. **Re-scoring** of the consented book with the joint model (the model's prediction protocol,
   or any ``scorer(session, rows) -> PD``, e.g. the encrypted scoring of
   :mod:`jointcredit.scoring`), then score and grade with the bank's
   :class:`~jointcredit.scoring.PreAuthorizationPolicy`.
3. **Migration and stability**: grade migration against the previous run; population
   stability of the score and of every bank feature against the previous run and the baseline
   run (only bin edges and shares of earlier runs are kept, never their values); optionally
   the stability of the center's features, computed at the center (``feature_stability``).
4. **Warnings**: :func:`~jointcredit.monitor.warnings.evaluate_warnings` gives red / yellow /
   green with reasons per enterprise.

:class:`MonitorRun` holds the result; :meth:`MonitorRun.save` / :meth:`MonitorRun.load` keep it
in the bank's state folder so the next run can compare with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.data.uscc import normalize_ids
from jointcredit.errors import DataValidationError, DuplicateIdentifierError
from jointcredit.monitor.center_stability import center_feature_stability
from jointcredit.monitor.events import EVENT_COLUMNS, fetch_risk_events
from jointcredit.monitor.stability import (
    StabilityReference,
    stability_band,
    stability_reference,
)
from jointcredit.monitor.warnings import STATUSES, WarningRules, evaluate_warnings
from jointcredit.scoring.policy import PreAuthorizationPolicy

__all__ = ["MonitorRun", "monitor_book"]

NOT_ALIGNED = "not_aligned"
NO_MONITORING_CONSENT = "no_monitoring_consent"

Scorer = Callable[[Any, np.ndarray], np.ndarray]


@dataclass
class MonitorRun:
    """Result of one monitoring run (the bank's own data; nothing here is sent anywhere)."""

    as_of: pd.Timestamp
    since: pd.Timestamp
    table: pd.DataFrame
    excluded: dict[str, str]
    events: pd.DataFrame
    score_stability: dict[str, float | None]
    bank_feature_stability: pd.DataFrame
    center_feature_stability: pd.DataFrame | None
    score_reference: StabilityReference
    bank_feature_references: dict[str, StabilityReference]
    model_id: str | None = None
    transcript: dict[str, int] = field(default_factory=dict)

    def status_counts(self) -> dict[str, int]:
        return {s: int((self.table["status"] == s).sum()) for s in STATUSES}

    def migration(self) -> pd.DataFrame:
        """Grade migration matrix: rows = grade at the previous run, columns = grade now."""
        known = self.table.dropna(subset=["grade_previous"])
        if known.empty:
            return pd.DataFrame()
        return pd.crosstab(known["grade_previous"], known["grade"])

    def summary(self) -> dict[str, Any]:
        """JSON-ready overview (counts, stability values and bands, no per-enterprise data)."""

        def band(v: float | None) -> str | None:
            return None if v is None else stability_band(v)

        return {
            "as_of": str(self.as_of.date()),
            "since": str(self.since.date()),
            "model_id": self.model_id,
            "monitored": int(len(self.table)),
            "excluded": _count(self.excluded.values()),
            "status": self.status_counts(),
            "grades": {str(k): int(v) for k, v in self.table["grade"].value_counts().items()},
            "events": _count(self.events["event_type"]) if len(self.events) else {},
            "score_stability": {
                k: {"value": v, "band": band(v)} for k, v in self.score_stability.items()
            },
            "bank_features_not_stable": self.bank_feature_stability.loc[
                self.bank_feature_stability["band_previous"].fillna("stable") != "stable",
                "feature",
            ].tolist()
            if len(self.bank_feature_stability)
            else [],
            "center_features_not_stable": []
            if self.center_feature_stability is None
            else self.center_feature_stability.loc[
                self.center_feature_stability["band"] != "stable", "feature"
            ].tolist(),
            "transcript": dict(self.transcript),
        }

    # --- persistence (the bank's own state folder) --------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(d / "book.csv", index=False, lineterminator="\n")
        self.events.to_csv(d / "events.csv", index=False, lineterminator="\n")
        self.bank_feature_stability.to_csv(
            d / "bank_feature_stability.csv", index=False, lineterminator="\n"
        )
        if self.center_feature_stability is not None:
            self.center_feature_stability.to_csv(
                d / "center_feature_stability.csv", index=False, lineterminator="\n"
            )
        state = {
            "summary": self.summary(),
            "excluded": self.excluded,
            "score_stability": self.score_stability,
            "score_reference": self.score_reference.to_dict(),
            "bank_feature_references": {
                k: v.to_dict() for k, v in self.bank_feature_references.items()
            },
        }
        tmp = d / ".state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, d / "state.json")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> MonitorRun:
        d = Path(directory)
        try:
            state = json.loads((d / "state.json").read_text(encoding="utf-8"))
            table = pd.read_csv(d / "book.csv", dtype={"id": str})
            events = pd.read_csv(d / "events.csv", dtype={"id": str}, parse_dates=["date"])
            bank_fs = pd.read_csv(d / "bank_feature_stability.csv")
        except FileNotFoundError as exc:
            raise DataValidationError(str(d), f"not a saved monitoring run ({exc})") from None
        table = _texts_as_objects(table)
        table["reasons"] = table["reasons"].fillna("")
        events = _texts_as_objects(events)
        center_path = d / "center_feature_stability.csv"
        return cls(
            as_of=pd.Timestamp(state["summary"]["as_of"]),
            since=pd.Timestamp(state["summary"]["since"]),
            table=table,
            excluded=dict(state["excluded"]),
            events=events,
            score_stability=dict(state["score_stability"]),
            bank_feature_stability=bank_fs,
            center_feature_stability=pd.read_csv(center_path) if center_path.exists() else None,
            score_reference=StabilityReference.from_dict(state["score_reference"]),
            bank_feature_references={
                k: StabilityReference.from_dict(v)
                for k, v in state["bank_feature_references"].items()
            },
            model_id=state["summary"].get("model_id"),
            transcript=dict(state["summary"].get("transcript", {})),
        )


def _texts_as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as plain objects, as :func:`monitor_book` builds them."""
    text = [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c].dtype)]
    return frame.astype(dict.fromkeys(text, object))


def _count(values: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in pd.Series(list(values), dtype=object).value_counts().items()}


def _book(book_ids: Sequence[object] | pd.DataFrame | np.ndarray) -> list[str]:
    if isinstance(book_ids, pd.DataFrame):
        if "id" not in book_ids.columns:
            raise DataValidationError("book.id", "the book needs an id column")
        book_ids = book_ids["id"].to_numpy(dtype=object)
    ids = normalize_ids(list(book_ids))
    if ids.size == 0:
        raise DataValidationError("book", "the book is empty")
    if (ids == "").any():
        raise DataValidationError("book.id", "empty id in the book")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DuplicateIdentifierError("book.id", unique[counts > 1].tolist())
    return ids.tolist()


def _load_model(model: Any) -> Any:
    if isinstance(model, str | os.PathLike):
        from jointcredit.monitor.lifecycle import ModelRegistry

        return ModelRegistry(model, create=False).load()
    if not hasattr(model, "predict_proba"):
        raise DataValidationError("model", "needs a fitted joint estimator or a registry folder")
    return model


def monitor_book(
    session: Any,
    model: Any,
    book_ids: Sequence[object] | pd.DataFrame | np.ndarray,
    *,
    as_of: object,
    since: object | None = None,
    policy: PreAuthorizationPolicy | None = None,
    rules: WarningRules | None = None,
    previous: MonitorRun | None = None,
    baseline: MonitorRun | None = None,
    fetch_events: bool = True,
    require_consent: bool = True,
    center_months: tuple[str, str] | None = None,
    center_population: str = "book",
    stability_bins: int = 10,
    scorer: Scorer | None = None,
) -> MonitorRun:
    """Monitor the bank's book as of ``as_of`` (see the module docstring).

    ``model``: a fitted joint estimator or a model registry folder (its champion).
    ``book_ids``: ids (or a frame with an ``id`` column) of the pre-authorized book.
    ``since``: start of the event period (default: the day after ``previous.as_of``, else the
    first day of ``as_of``'s month). ``center_months``: ``(reference, current)`` month labels
    for the center's feature stability (skipped if None). ``require_consent`` needs
    ``fetch_events`` (the consent list comes with the flags).
    """
    if require_consent and not fetch_events:
        raise DataValidationError(
            "require_consent", "the monitoring consent list arrives with the risk events"
        )
    policy = policy or PreAuthorizationPolicy()
    rules = rules or WarningRules()
    model = _load_model(model)
    as_of_day = pd.Timestamp(as_of).normalize()
    if since is None:
        since_day = (
            previous.as_of + pd.Timedelta(days=1)
            if previous is not None
            else as_of_day.to_period("M").to_timestamp()
        )
    else:
        since_day = pd.Timestamp(since).normalize()
    book = _book(book_ids)
    mark = session.transcript.mark()

    excluded: dict[str, str] = {}
    aligned = session.bank.require_aligned()
    position = {str(e): i for i, e in enumerate(aligned)}
    for e in book:
        if e not in position:
            excluded[e] = NOT_ALIGNED
    events = pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    if fetch_events:
        received = fetch_risk_events(session, since_day, as_of_day)
        in_book = set(book)
        events = received.flags[received.flags["id"].isin(in_book)].reset_index(drop=True)
        if require_consent:
            for e in book:
                if e not in excluded and e not in received.consented:
                    excluded[e] = NO_MONITORING_CONSENT
    monitored = [e for e in book if e not in excluded]
    if not monitored:
        raise DataValidationError("book", "no enterprise of the book can be monitored")
    rows = np.array([position[e] for e in monitored], dtype=np.int64)

    if scorer is not None:
        pds = np.asarray(scorer(session, rows), dtype=np.float64).reshape(-1)
    else:
        pds = np.asarray(
            model.predict_proba(session, rows, purpose="post_loan_monitoring")[:, 1],
            dtype=np.float64,
        )
    if pds.size != rows.size:
        raise DataValidationError("scorer", f"{pds.size} PDs for {rows.size} enterprises")
    scores = np.asarray(policy.scaling.pd_to_score(pds), dtype=np.float64).reshape(-1)
    grades = policy.grades.assign(score=scores, pd=pds)
    current = pd.DataFrame({"id": monitored, "pd": pds, "grade": list(grades)})

    warned = evaluate_warnings(
        current,
        previous=None if previous is None else previous.table[["id", "pd", "grade"]],
        baseline=None if baseline is None else baseline.table[["id", "pd", "grade"]],
        events=events,
        rules=rules,
        grades=policy.grades.labels,
    )
    warned.insert(4, "score", scores)
    grade_rank = {g: i for i, g in enumerate(policy.grades.labels)}
    warned["grade_change"] = [
        None if not isinstance(p, str) else grade_rank[p] - grade_rank[g]
        for p, g in zip(warned["grade_previous"], warned["grade"], strict=True)
    ]

    score_ref = stability_reference(scores, stability_bins)
    score_stability: dict[str, float | None] = {
        "vs_previous": None if previous is None else previous.score_reference.compare(scores),
        "vs_baseline": None if baseline is None else baseline.score_reference.compare(scores),
    }
    bank_X = session.bank.aligned_features(rows)
    bank_refs = {
        col: stability_reference(bank_X[col].to_numpy(dtype=np.float64), stability_bins)
        for col in bank_X.columns
    }
    bank_fs = _bank_stability(bank_X, previous, baseline)
    center_fs = None
    if center_months is not None:
        reference, current_month = center_months
        center_fs = center_feature_stability(
            session, reference, current_month, bins=stability_bins, population=center_population
        )
    return MonitorRun(
        as_of=as_of_day,
        since=since_day,
        table=warned,
        excluded=excluded,
        events=events,
        score_stability=score_stability,
        bank_feature_stability=bank_fs,
        center_feature_stability=center_fs,
        score_reference=score_ref,
        bank_feature_references=bank_refs,
        model_id=getattr(model, "model_id_", None),
        transcript=session.transcript.since(mark).summary(),
    )


def _bank_stability(
    X: pd.DataFrame, previous: MonitorRun | None, baseline: MonitorRun | None
) -> pd.DataFrame:
    rows = []
    for col in X.columns:
        values = X[col].to_numpy(dtype=np.float64)
        row: dict[str, Any] = {"feature": col}
        for tag, run in (("previous", previous), ("baseline", baseline)):
            ref = None if run is None else run.bank_feature_references.get(col)
            value = None if ref is None else ref.compare(values)
            row[f"vs_{tag}"] = value
            row[f"band_{tag}"] = None if value is None else stability_band(value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    key = "vs_previous" if previous is not None else "vs_baseline"
    if frame[key].notna().any():
        frame = frame.sort_values(key, ascending=False, kind="stable", na_position="last")
    return frame.reset_index(drop=True)
