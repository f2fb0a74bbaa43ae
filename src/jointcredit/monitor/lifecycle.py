"""Model lifecycle at the bank: a versioned model registry, champion / challenger, retraining.

**Registry folder** (the bank's own disk)::

    REGISTRY/registry.json            champion, holdout partition, history of decisions
    REGISTRY/versions/v0001/meta.json kind, params, parent, data fingerprints, metrics, ...
    REGISTRY/versions/v0001/bank/     the bank's part of the model (estimator.save)
    REGISTRY/center/<model_id>/       in-process simulations only: what the credit center keeps
                                      of each model on *its* disk (a deployment never has this)

Fingerprints are hashes of id lists and of the feature schema, never data: the registry proves
which rows and columns a version was trained and evaluated on without holding them.

**Common holdout.** The registry fixes, once, a salted hash partition of enterprise ids:
``holdout_share`` (30 %) of all ids are holdout ids forever. Every version trains only on the
other ids and every comparison evaluates on the holdout ids of the current labelled data, so a
champion is never evaluated on rows it was trained on, whichever outcome set comes next.

**Champion / challenger.** :func:`compare_models` scores both jointly on the holdout rows
(AUC, KS, the population stability of the challenger's score distribution against the
champion's) and a stratified bootstrap gives the share of resamples in which the challenger's
AUC is higher. :class:`PromotionRule` promotes only if *every* check passes (defaults): AUC gain
>= 0.005, KS no more than 0.01 lower, bootstrap win share >= 0.75, at least 30 bads in the
holdout, and (optional, off by default) score stability below a limit. The first model of a
registry becomes champion without a comparison; the history records that.

**Retraining** (:func:`retrain_model`) relabels the bank's table with the enlarged outcome set
(:func:`apply_outcomes`), trains a challenger of the champion's kind and parameters, compares,
registers it with the champion as parent and promotes it if the rule says so.

**Warm start** (``warm_start=True``, the default; ``jointcredit retrain --no-warm-start`` turns it
off): when the challenger has the champion's kind, it is fitted with ``init_model=champion``.
SecureBoost keeps the champion's trees and adds ``n_estimators`` new ones, boosting from the
champion's joint raw scores on the new rows; hetero LR and the scorecard start from the
champion's coefficients and keep its feature transform (standardisation, or bins and WOE) on
both sides, then run ``max_epochs`` more epochs. The center finds its half of the champion by
model id. The version's ``warm_started_from`` names the champion version (``None`` when trained
from scratch) and ``warm_start`` says what was done; ``parent`` is always the champion it was
compared with.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.data.schema import PartyTable, TableSchema
from jointcredit.data.uscc import normalize_ids
from jointcredit.errors import DataValidationError, JointCreditError, NotFittedError
from jointcredit.monitor.stability import (
    StabilityReference,
    population_stability,
    stability_band,
    stability_reference,
)
from jointcredit.report.metrics import auc, ks
from jointcredit.scoring.audit import id_digest
from jointcredit.scoring.policy import ScoreScaling

__all__ = [
    "MODEL_KINDS",
    "ModelRegistry",
    "PromotionRule",
    "apply_outcomes",
    "compare_models",
    "retrain_model",
    "train_champion",
]

MODEL_KINDS: tuple[str, ...] = ("secureboost", "logistic", "scorecard")
REGISTRY_FILE = "registry.json"
FORMAT = 1
LABEL_COL = "default"
EXCLUDED_DEFAULTED = "defaulted_before_observation"


# --- model kinds ------------------------------------------------------------------------------


class _Kind:
    """How the registry makes, saves, loads and (for simulations) persists center parts."""

    def __init__(self, name: str) -> None:
        if name not in MODEL_KINDS:
            raise DataValidationError("kind", f"unknown model kind {name!r}; use {MODEL_KINDS}")
        self.name = name

    def make(self, params: Mapping[str, Any]) -> Any:
        if self.name == "secureboost":
            from jointcredit.learn.boosting import HeteroSecureBoost

            return HeteroSecureBoost(**dict(params))
        from jointcredit.learn.linear import HeteroLogisticRegression, HeteroScorecard

        cls = HeteroScorecard if self.name == "scorecard" else HeteroLogisticRegression
        return cls(**dict(params))

    def save(self, estimator: Any, directory: Path) -> None:
        estimator.save(directory)

    def load(self, directory: Path) -> Any:
        if self.name == "secureboost":
            from jointcredit.learn.boosting import HeteroSecureBoost

            return HeteroSecureBoost.load(directory)
        from jointcredit.learn.linear import load_bank_model

        return load_bank_model(directory / "bank_model.json")

    def save_center(self, center: Any, model_id: str, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.name == "secureboost":
            from jointcredit.learn.boosting import save_center_part

            save_center_part(center, model_id, directory / "center_part.json")
        else:
            from jointcredit.learn.linear import save_center_model

            save_center_model(center, model_id, directory)

    def load_center(self, center: Any, directory: Path) -> str:
        if self.name == "secureboost":
            from jointcredit.learn.boosting import load_center_part

            return load_center_part(center, directory / "center_part.json")
        from jointcredit.learn.linear import load_center_model

        return load_center_model(center, directory / "center_model.json")


def _model_id(estimator: Any) -> str:
    model_id = getattr(estimator, "model_id_", None)
    if not isinstance(model_id, str) or not model_id:
        raise NotFittedError(f"{type(estimator).__name__} has no model_id_: fit it first")
    return model_id


def _fit(estimator: Any, session: Any, rows: np.ndarray, parent: Any | None) -> tuple[str, bool]:
    """Fit, warm-starting from ``parent`` when the estimator supports it.

    Returns what was done (for the version's record) and whether it was a warm start.
    """
    params = inspect.signature(estimator.fit).parameters
    if parent is not None and "init_model" in params:
        estimator.fit(session, rows, init_model=parent)
        return f"warm start from {_model_id(parent)}", True
    estimator.fit(session, rows)
    if parent is None:
        return "trained from scratch (no parent)", False
    return (
        f"{type(estimator).__name__} has no warm start (fit(init_model=...)); trained from scratch",
        False,
    )


# --- the registry ---------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataValidationError(str(path), "not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataValidationError(str(path), f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataValidationError(str(path), "not a JSON object")
    return data


def schema_fingerprint(feature_names: Sequence[str]) -> str:
    """SHA-256 of the ordered feature names (a schema, not data)."""
    text = json.dumps(list(feature_names), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(b"jointcredit/schema/v1\n" + text.encode("utf-8")).hexdigest()


class ModelRegistry:
    """A folder of model versions with one champion (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        create: bool = True,
        holdout_share: float = 0.3,
        salt: str | None = None,
    ) -> None:
        self.root = Path(root)
        self._file = self.root / REGISTRY_FILE
        if self._file.exists():
            self._state = _read_json(self._file)
            if self._state.get("format") != FORMAT:
                raise DataValidationError(str(self._file), "unsupported registry format")
        elif create:
            if not (isinstance(holdout_share, float) and 0.05 <= holdout_share <= 0.5):
                raise DataValidationError(
                    "holdout_share", f"must be within [0.05, 0.5], got {holdout_share!r}"
                )
            if salt is not None and (not isinstance(salt, str) or not salt.strip()):
                raise DataValidationError("salt", "must be non-empty text or None (random)")
            self._state = {
                "format": FORMAT,
                "created_at": _now(),
                "holdout_share": holdout_share,
                # The partition's secret: random unless a reproducible run fixes it.
                "salt": secrets.token_hex(16) if salt is None else salt.encode().hex(),
                "champion": None,
                "history": [],
            }
            _write_json(self._file, self._state)
        else:
            raise DataValidationError(str(self.root), "no model registry here")

    # --- queries ---------------------------------------------------------------------------

    @property
    def champion(self) -> str | None:
        return self._state["champion"]

    @property
    def holdout_share(self) -> float:
        return float(self._state["holdout_share"])

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self._state["history"])

    def versions(self) -> list[str]:
        base = self.root / "versions"
        if not base.exists():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "meta.json").exists())

    def meta(self, version: str | None = None) -> dict[str, Any]:
        version = self._resolve(version)
        return _read_json(self.root / "versions" / version / "meta.json")

    def load(self, version: str | None = None) -> Any:
        """The bank's part of a version as a fitted estimator (default: the champion)."""
        meta = self.meta(version)
        return _Kind(meta["kind"]).load(self.root / "versions" / meta["version"] / "bank")

    def holdout_mask(self, ids: Sequence[object] | np.ndarray) -> np.ndarray:
        """True for ids in the registry's permanent holdout partition."""
        salt = bytes.fromhex(self._state["salt"])
        out = np.empty(len(ids), dtype=bool)
        for i, text in enumerate(normalize_ids(list(ids)).tolist()):
            digest = hashlib.sha256(salt + text.encode("utf-8")).digest()
            out[i] = int.from_bytes(digest[:8], "big") / 2.0**64 < self.holdout_share
        return out

    # --- changes ---------------------------------------------------------------------------

    def add(
        self,
        estimator: Any,
        *,
        kind: str,
        params: Mapping[str, Any],
        parent: str | None,
        fingerprints: Mapping[str, Any],
        metrics: Mapping[str, Any],
        warm_start: str,
        warm_started_from: str | None = None,
        notes: str = "",
    ) -> str:
        """Save a fitted estimator as the next version; returns its name (``v0001``, ...)."""
        spec = _Kind(kind)
        for name, value in (("parent", parent), ("warm_started_from", warm_started_from)):
            if value is not None and value not in self.versions():
                raise DataValidationError(name, f"no version {value!r} in {self.root}")
        existing = self.versions()
        version = f"v{len(existing) + 1:04d}"
        final = self.root / "versions" / version
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root))
        try:
            spec.save(estimator, staging / "bank")
            meta = {
                "version": version,
                "created_at": _now(),
                "kind": kind,
                "estimator": type(estimator).__name__,
                "model_id": _model_id(estimator),
                "params": dict(params),
                "parent": parent,
                "warm_start": warm_start,
                "warm_started_from": warm_started_from,
                "fingerprints": dict(fingerprints),
                "metrics": dict(metrics),
                "notes": notes,
            }
            _write_json(staging / "meta.json", meta)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final)  # a version appears complete or not at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._log("registered", version, f"parent {parent}" if parent else "first version")
        return version

    def promote(self, version: str, reason: str) -> None:
        version = self._resolve(version)
        previous = self.champion
        self._state["champion"] = version
        self._log("promoted", version, f"{reason} (previous champion: {previous})")

    def keep(self, champion: str, challenger: str, reason: str) -> None:
        self._log("kept_champion", champion, f"challenger {challenger} not promoted: {reason}")

    def _log(self, action: str, version: str, reason: str) -> None:
        self._state["history"].append(
            {"at": _now(), "action": action, "version": version, "reason": reason}
        )
        _write_json(self._file, self._state)

    def _resolve(self, version: str | None) -> str:
        if version is None:
            if self.champion is None:
                raise DataValidationError("version", "the registry has no champion yet")
            return self.champion
        if version not in self.versions():
            raise DataValidationError("version", f"no version {version!r} in {self.root}")
        return version

    # --- center parts, in-process simulations only -------------------------------------------

    def save_center_part(self, session: Any, version: str) -> None:
        """Copy the center's part of ``version`` to ``REGISTRY/center`` (in-process only).

        Stands in for the credit center persisting its part on its own disk, so that a later
        in-process session can score the version. A deployment never does this.
        """
        meta = self.meta(version)
        center = getattr(session, "center", None)
        if center is None:
            return
        target = self.root / "center" / meta["model_id"]
        _Kind(meta["kind"]).save_center(center, meta["model_id"], target)

    def ensure_center_part(self, session: Any, version: str) -> None:
        """Load the center's part of ``version`` into an in-process session if it lacks it."""
        meta = self.meta(version)
        center = getattr(session, "center", None)
        if center is None or meta["model_id"] in center.model_parts:
            return
        source = self.root / "center" / meta["model_id"]
        if not source.exists():
            raise DataValidationError(
                "version",
                f"the credit center holds no part of {version} ({meta['model_id']}) in this "
                "session, and the registry has no simulated copy of it",
            )
        _Kind(meta["kind"]).load_center(center, source)


# --- outcomes -------------------------------------------------------------------------------


def _read_outcomes(outcomes: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    if isinstance(outcomes, str | os.PathLike):
        try:
            outcomes = pd.read_csv(outcomes, dtype={"id": str}, encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataValidationError(str(outcomes), "outcomes file not found") from None
    if not isinstance(outcomes, pd.DataFrame):
        raise DataValidationError("outcomes", "must be a DataFrame or a CSV path")
    for col in ("id", "default_date"):
        if col not in outcomes.columns:
            raise DataValidationError(col, "column missing from the outcomes")
    frame = pd.DataFrame({"id": normalize_ids(outcomes["id"].to_numpy(dtype=object))})
    if (frame["id"] == "").any():
        raise DataValidationError("id", "empty id in the outcomes")
    for col in ("default_date", "reported_date"):
        if col not in outcomes.columns:
            continue
        parsed = pd.to_datetime(outcomes[col], errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            raise DataValidationError(
                col, f"missing or unparsable date at row(s) {bad[:10].tolist()}"
            )
        frame[col] = parsed.dt.normalize().to_numpy()
    # An enterprise defaults once: its first recorded default counts.
    return (
        frame.sort_values("default_date", kind="stable")
        .drop_duplicates("id")
        .reset_index(drop=True)
    )


def apply_outcomes(
    table: PartyTable,
    outcomes: pd.DataFrame | str | os.PathLike[str],
    *,
    observed_at: object,
    as_of: object | None = None,
) -> tuple[PartyTable, np.ndarray]:
    """Label the bank's table (observed at ``observed_at``) from its known defaults.

    ``outcomes``: ``id, default_date[, reported_date]`` (CSV or frame). A row is bad (1) when
    its enterprise defaulted after ``observed_at`` (and, with ``as_of``, the default was
    reported by then); good (0) otherwise. Rows that had already defaulted at ``observed_at``
    are kept in the table (its ids must stay aligned) but returned in the ``excluded`` mask:
    they were not performing at observation and belong to no cohort.
    """
    observed = pd.Timestamp(observed_at).normalize()
    frame = _read_outcomes(outcomes)
    if as_of is not None:
        limit = pd.Timestamp(as_of).normalize()
        if limit < observed:
            raise DataValidationError("as_of", "must not be before observed_at")
        known_col = "reported_date" if "reported_date" in frame.columns else "default_date"
        frame = frame[frame[known_col] <= limit]
    dates = frame.set_index("id")["default_date"]
    default_at = dates.reindex(pd.Index(table.ids.astype(str))).to_numpy()
    has = ~pd.isna(default_at)
    before = np.zeros(len(has), dtype=bool)
    after = np.zeros(len(has), dtype=bool)
    before[has] = pd.DatetimeIndex(default_at[has]) <= observed
    after[has] = pd.DatetimeIndex(default_at[has]) > observed
    y = after.astype(np.int8)
    schema = TableSchema(
        id_col=table.schema.id_col,
        label_col=table.schema.label_col or LABEL_COL,
        feature_cols=table.schema.feature_cols,
        id_kind=table.schema.id_kind,
    )
    return PartyTable(table.ids.copy(), table.X, y, schema), before


def _outcomes_digest(outcomes: Any) -> str | None:
    if outcomes is None:
        return None
    frame = _read_outcomes(outcomes)
    text = frame.astype(str).to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(b"jointcredit/outcomes/v1\n" + text.encode("utf-8")).hexdigest()


# --- comparison and promotion ---------------------------------------------------------------


@dataclass(frozen=True)
class PromotionRule:
    """Promote the challenger only if every check passes (see the module docstring)."""

    min_auc_gain: float = 0.005
    max_ks_loss: float = 0.01
    min_bootstrap_win: float = 0.75
    min_holdout_bads: int = 30
    max_score_stability: float | None = None
    n_bootstrap: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_auc_gain", "max_ks_loss"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise DataValidationError(f"rule.{name}", f"must be a finite number: {v!r}")
        if not 0.0 <= float(self.min_bootstrap_win) <= 1.0:
            raise DataValidationError("rule.min_bootstrap_win", "must be within [0, 1]")
        for name in ("min_holdout_bads", "n_bootstrap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DataValidationError(f"rule.{name}", f"must be a positive integer: {v!r}")
        if self.max_score_stability is not None and not self.max_score_stability > 0:
            raise DataValidationError("rule.max_score_stability", "must be positive or None")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def decide(self, comparison: Mapping[str, Any]) -> dict[str, Any]:
        """``{"promote": bool, "checks": [...]}`` for a :func:`compare_models` result."""
        champ, chal = comparison["champion"], comparison["challenger"]
        checks = [
            (
                "holdout_bads",
                chal["bads"],
                self.min_holdout_bads,
                chal["bads"] >= self.min_holdout_bads,
            ),
            (
                "auc_gain",
                chal["auc"] - champ["auc"],
                self.min_auc_gain,
                chal["auc"] - champ["auc"] >= self.min_auc_gain,
            ),
            (
                "ks_change",
                chal["ks"] - champ["ks"],
                -self.max_ks_loss,
                chal["ks"] - champ["ks"] >= -self.max_ks_loss,
            ),
            (
                "bootstrap_win",
                comparison["bootstrap_win"],
                self.min_bootstrap_win,
                comparison["bootstrap_win"] >= self.min_bootstrap_win,
            ),
        ]
        if self.max_score_stability is not None:
            value = comparison["score_stability"]
            checks.append(
                (
                    "score_stability",
                    value,
                    self.max_score_stability,
                    value <= self.max_score_stability,
                )
            )
        rows = [
            {"check": name, "value": float(value), "threshold": float(limit), "passed": bool(ok)}
            for name, value, limit, ok in checks
        ]
        failed = [r["check"] for r in rows if not r["passed"]]
        reason = "all checks passed" if not failed else "failed: " + ", ".join(failed)
        return {"promote": not failed, "checks": rows, "reason": reason}


def _bootstrap_win(y: np.ndarray, a: np.ndarray, b: np.ndarray, n: int, seed: int) -> float:
    """Share of stratified resamples in which ``b`` has the higher AUC than ``a``."""
    rng = np.random.default_rng(seed)
    bads, goods = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    wins = 0
    for _ in range(n):
        idx = np.concatenate(
            [rng.choice(bads, bads.size, replace=True), rng.choice(goods, goods.size, replace=True)]
        )
        wins += auc(y[idx], b[idx]) > auc(y[idx], a[idx])
    return wins / n


def _metrics(y: np.ndarray, pd_: np.ndarray, scaling: ScoreScaling, bins: int) -> dict[str, Any]:
    score = np.asarray(scaling.pd_to_score(pd_), dtype=np.float64)
    return {
        "auc": float(auc(y, pd_)),
        "ks": float(ks(y, pd_)),
        "n": int(y.size),
        "bads": int(y.sum()),
        "mean_pd": float(pd_.mean()),
        "score_reference": stability_reference(score, bins).to_dict(),
    }


def compare_models(
    session: Any,
    champion: Any,
    challenger: Any,
    rows: np.ndarray,
    *,
    scaling: ScoreScaling | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    bins: int = 10,
) -> dict[str, Any]:
    """Score both models jointly on the same aligned ``rows``; compare on the bank's labels."""
    scaling = scaling or ScoreScaling()
    rows = np.asarray(rows, dtype=np.int64)
    y = np.asarray(session.bank.aligned_labels(rows), dtype=np.int64)
    if y.size == 0 or y.min() == y.max():
        raise DataValidationError("holdout", "the holdout rows need both goods and bads")
    p_champ = np.asarray(champion.predict_proba(session, rows)[:, 1], dtype=np.float64)
    p_chal = np.asarray(challenger.predict_proba(session, rows)[:, 1], dtype=np.float64)
    s_champ = np.asarray(scaling.pd_to_score(p_champ), dtype=np.float64)
    s_chal = np.asarray(scaling.pd_to_score(p_chal), dtype=np.float64)
    shift = population_stability(s_champ, s_chal, bins)
    return {
        "champion": _metrics(y, p_champ, scaling, bins),
        "challenger": _metrics(y, p_chal, scaling, bins),
        "score_stability": float(shift),
        "score_stability_band": stability_band(shift),
        "bootstrap_win": float(_bootstrap_win(y, p_champ, p_chal, n_bootstrap, seed)),
    }


# --- the two entry points -------------------------------------------------------------------


def _labelled(
    session: Any, outcomes: Any, observed_at: object | None, as_of: object | None
) -> np.ndarray:
    """Relabel the session's bank table from ``outcomes``; return the excluded-row mask."""
    bank = session.bank
    if outcomes is None:
        if bank.table.y is None:
            raise DataValidationError("outcomes", "the bank's table has no labels: give outcomes")
        return np.zeros(bank.table.n_rows, dtype=bool)
    if observed_at is None:
        raise DataValidationError("observed_at", "needed with outcomes: the date of the features")
    table, excluded = apply_outcomes(bank.table, outcomes, observed_at=observed_at, as_of=as_of)
    bank.table = table  # the bank's own table: same ids and rows, new labels
    return excluded


def _partition(
    session: Any, registry: ModelRegistry, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    aligned = session.bank.require_aligned()
    positions = session.bank.table.positions(aligned)
    skip = excluded[positions]
    holdout = registry.holdout_mask(aligned)
    rows = np.arange(aligned.size)
    train_rows = rows[~holdout & ~skip]
    holdout_rows = rows[holdout & ~skip]
    return train_rows, holdout_rows, {EXCLUDED_DEFAULTED: int(skip.sum())}


def _fingerprints(
    session: Any,
    train_rows: np.ndarray,
    holdout_rows: np.ndarray,
    outcomes: Any,
    observed_at: object | None,
    as_of: object | None,
) -> dict[str, Any]:
    aligned = session.bank.require_aligned()
    y_train = session.bank.aligned_labels(train_rows)
    y_hold = session.bank.aligned_labels(holdout_rows)
    features = list(session.bank.table.feature_cols)
    return {
        "train_ids": id_digest(aligned[train_rows]),
        "n_train": int(train_rows.size),
        "train_bads": int(np.sum(y_train)),
        "holdout_ids": id_digest(aligned[holdout_rows]),
        "n_holdout": int(holdout_rows.size),
        "holdout_bads": int(np.sum(y_hold)),
        "bank_schema": schema_fingerprint(features),
        "bank_features": features,
        "outcomes": _outcomes_digest(outcomes),
        "observed_at": None if observed_at is None else str(pd.Timestamp(observed_at).date()),
        "as_of": None if as_of is None else str(pd.Timestamp(as_of).date()),
    }


def _check_train(session: Any, train_rows: np.ndarray, min_bads: int = 10) -> None:
    if train_rows.size == 0:
        raise DataValidationError("outcomes", "no training rows outside the holdout partition")
    bads = int(np.sum(session.bank.aligned_labels(train_rows)))
    if bads < min_bads or bads == train_rows.size:
        raise DataValidationError(
            "outcomes", f"{bads} bads among {train_rows.size} training rows; need >= {min_bads}"
        )


def train_champion(
    registry_dir: str | os.PathLike[str],
    session: Any,
    *,
    kind: str = "secureboost",
    params: Mapping[str, Any] | None = None,
    outcomes: Any = None,
    observed_at: object | None = None,
    as_of: object | None = None,
    scaling: ScoreScaling | None = None,
    holdout_share: float = 0.3,
    salt: str | None = None,
    keep_center_copy: bool = True,
    notes: str = "",
) -> dict[str, Any]:
    """Train the first model of a registry on its training partition and make it champion.

    Labels: the session's bank table, or ``outcomes`` (see :func:`apply_outcomes`). Returns
    ``{"version", "metrics", "fingerprints", "seconds", "transcript"}``.
    """
    registry = ModelRegistry(registry_dir, holdout_share=holdout_share, salt=salt)
    if registry.champion is not None:
        raise DataValidationError(
            "registry_dir", f"already has champion {registry.champion}; use retrain_model"
        )
    spec = _Kind(kind)
    params = dict(params or {})
    excluded = _labelled(session, outcomes, observed_at, as_of)
    train_rows, holdout_rows, excluded_counts = _partition(session, registry, excluded)
    _check_train(session, train_rows)
    mark = session.transcript.mark()
    start = time.perf_counter()
    estimator = spec.make(params)
    note, _ = _fit(estimator, session, train_rows, None)
    y = np.asarray(session.bank.aligned_labels(holdout_rows), dtype=np.int64)
    p = np.asarray(estimator.predict_proba(session, holdout_rows)[:, 1], dtype=np.float64)
    metrics = {"holdout": _metrics(y, p, scaling or ScoreScaling(), 10)}
    seconds = time.perf_counter() - start
    fingerprints = _fingerprints(session, train_rows, holdout_rows, outcomes, observed_at, as_of)
    fingerprints["excluded"] = excluded_counts
    version = registry.add(
        estimator,
        kind=kind,
        params=params,
        parent=None,
        fingerprints=fingerprints,
        metrics=metrics,
        warm_start=note,
        notes=notes,
    )
    if keep_center_copy:
        registry.save_center_part(session, version)
    registry.promote(version, "first model of the registry")
    return {
        "version": version,
        "model_id": _model_id(estimator),
        "metrics": metrics,
        "fingerprints": fingerprints,
        "seconds": round(seconds, 3),
        "transcript": session.transcript.since(mark).summary(),
    }


def retrain_model(
    registry_dir: str | os.PathLike[str],
    session: Any,
    outcomes: pd.DataFrame | str | os.PathLike[str] | None = None,
    *,
    observed_at: object | None = None,
    as_of: object | None = None,
    kind: str | None = None,
    params: Mapping[str, Any] | None = None,
    rule: PromotionRule | None = None,
    scaling: ScoreScaling | None = None,
    keep_center_copy: bool = True,
    warm_start: bool = True,
    notes: str = "",
) -> dict[str, Any]:
    """Train a challenger on the enlarged outcome set, compare it with the champion, decide.

    ``session``: an aligned session whose bank table holds the features observed at
    ``observed_at`` (and whose center serves its features of the same date). ``outcomes``: the
    bank's known defaults (``id, default_date[, reported_date]``; CSV path or frame), applied
    with :func:`apply_outcomes`; without it the bank table's labels are used. ``kind`` /
    ``params`` default to the champion's. ``warm_start``: fit the challenger with
    ``init_model=champion`` when it has the champion's kind (see the module docstring).
    Returns a JSON-ready dict: ``champion``,
    ``challenger``, ``promoted``, ``decision`` (every check with value and threshold),
    ``comparison`` (AUC, KS, bads, score stability, bootstrap win share), ``warm_start``,
    ``n_train``, ``n_holdout``, ``excluded``, ``seconds``, ``transcript``.
    """
    if not isinstance(warm_start, bool):
        raise DataValidationError("warm_start", f"must be True or False, got {warm_start!r}")
    registry = ModelRegistry(registry_dir, create=False)
    champion_version = registry.champion
    if champion_version is None:
        raise DataValidationError("registry_dir", "no champion yet: use train_champion first")
    champ_meta = registry.meta(champion_version)
    kind = kind or champ_meta["kind"]
    params = dict(champ_meta["params"] if params is None else params)
    rule = rule or PromotionRule()
    scaling = scaling or ScoreScaling()

    excluded = _labelled(session, outcomes, observed_at, as_of)
    train_rows, holdout_rows, excluded_counts = _partition(session, registry, excluded)
    _check_train(session, train_rows)
    registry.ensure_center_part(session, champion_version)
    champion = registry.load(champion_version)

    mark = session.transcript.mark()
    start = time.perf_counter()
    challenger = _Kind(kind).make(params)
    if warm_start and kind == champ_meta["kind"]:
        note, warm = _fit(challenger, session, train_rows, champion)
    else:
        note, warm = _fit(challenger, session, train_rows, None)
        note = (
            "trained from scratch (warm start off)"
            if not warm_start
            else f"trained from scratch: a {kind} model cannot continue a {champ_meta['kind']} one"
        )
    comparison = compare_models(
        session,
        champion,
        challenger,
        holdout_rows,
        scaling=scaling,
        n_bootstrap=rule.n_bootstrap,
        seed=rule.seed,
    )
    decision = rule.decide(comparison)
    seconds = time.perf_counter() - start
    fingerprints = _fingerprints(session, train_rows, holdout_rows, outcomes, observed_at, as_of)
    fingerprints["excluded"] = excluded_counts
    version = registry.add(
        challenger,
        kind=kind,
        params=params,
        parent=champion_version,
        warm_started_from=champion_version if warm else None,
        fingerprints=fingerprints,
        metrics={
            "holdout": comparison["challenger"],
            "champion_on_same_holdout": comparison["champion"],
            "score_stability_vs_champion": comparison["score_stability"],
            "bootstrap_win": comparison["bootstrap_win"],
            "decision": decision,
        },
        warm_start=note,
        notes=notes,
    )
    if keep_center_copy:
        registry.save_center_part(session, version)
    if decision["promote"]:
        registry.promote(version, decision["reason"])
    else:
        registry.keep(champion_version, version, decision["reason"])

    def brief(m: Mapping[str, Any]) -> dict[str, Any]:
        return {k: m[k] for k in ("auc", "ks", "n", "bads", "mean_pd")}

    return {
        "champion": champion_version,
        "challenger": version,
        "promoted": bool(decision["promote"]),
        "new_champion": registry.champion,
        "decision": decision,
        "comparison": {
            "champion": brief(comparison["champion"]),
            "challenger": brief(comparison["challenger"]),
            "score_stability": comparison["score_stability"],
            "score_stability_band": comparison["score_stability_band"],
            "bootstrap_win": comparison["bootstrap_win"],
        },
        "rule": rule.to_dict(),
        "warm_start": note,
        "warm_started_from": champion_version if warm else None,
        "n_train": int(train_rows.size),
        "n_holdout": int(holdout_rows.size),
        "train_bads": fingerprints["train_bads"],
        "excluded": excluded_counts,
        "seconds": round(seconds, 3),
        "transcript": session.transcript.since(mark).summary(),
    }


def score_reference(meta: Mapping[str, Any]) -> StabilityReference:
    """The holdout score distribution recorded for a version (for later stability checks)."""
    try:
        return StabilityReference.from_dict(meta["metrics"]["holdout"]["score_reference"])
    except KeyError:
        raise JointCreditError("the version records no score reference") from None
