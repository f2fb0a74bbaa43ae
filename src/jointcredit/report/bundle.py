"""The evaluation bundle: what a trained model directory keeps so a report can be rendered later.

``jointcredit train`` and the demo write ``DIR/evaluation.json`` next to the model files;
``jointcredit report --model DIR`` reads it. It lives at the bank (the party holding labels and
scores) and holds, for the held-out test rows of the bank's own customers:

============================  ===================================================================
key                           content
============================  ===================================================================
``format``                    ``"jointcredit.evaluation/1"``
``created``                   UTC timestamp
``model``                     ``{"type", "model_id", "backend", "parameters"}``
``data``                      dataset description, ``n_train``, ``n_test``, split seed and size
``labels``                    test labels, 1 = bad
``scores``                    P(bad) per test row: ``federated`` (required), ``bank_only`` and
                              ``centralized`` (optional; the latter is the INSECURE plaintext
                              reference, possible only in in-process runs)
``references``                how each reference score was produced (library, parameters)
``iv_table``                  per feature: party, feature, category, title, n_bins, iv, strength
                              (from :class:`~jointcredit.learn.binning.FederatedBinning`) or null
``importance``                per feature: party, feature, importance, measure, source
``catalogue``                 credit-center catalogue entries of the features shown (names,
                              categories, Chinese and English titles) — metadata, never values
``transcript``                bytes each way, round trips and message counts, in total and per
                              protocol and message type
``notes``                     free text (e.g. which party released what for the report)
============================  ===================================================================

No raw feature values, split thresholds, bin cut points or enterprise ids are stored.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.errors import DataValidationError

BUNDLE_FILE = "evaluation.json"
FORMAT = "jointcredit.evaluation/1"
SCORE_KINDS = ("federated", "bank_only", "centralized")


# --- writing ------------------------------------------------------------------------------------


def _labels(y: Any) -> list[int]:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.size == 0:
        raise DataValidationError("y_test", "expected a non-empty 1-D array of labels")
    if not np.isin(arr, (0, 1)).all():
        raise DataValidationError("y_test", "labels must be 0 (good) or 1 (bad)")
    if arr.min() == arr.max():
        raise DataValidationError("y_test", "both classes must be present in the test rows")
    return [int(v) for v in arr]


def _score_list(name: str, s: Any, n: int) -> list[float]:
    arr = np.asarray(s, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 2:
        arr = arr[:, 1]  # predict_proba output: column 1 is P(bad)
    if arr.shape != (n,):
        raise DataValidationError(f"scores.{name}", f"expected {n} scores, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataValidationError(f"scores.{name}", "scores contain NaN or infinite values")
    return [float(v) for v in arr]


def _records(table: Any, what: str) -> list[dict[str, Any]] | None:
    if table is None:
        return None
    if isinstance(table, pd.DataFrame):
        records = table.to_dict(orient="records")
    elif isinstance(table, Sequence):
        records = [dict(r) for r in table]
    else:
        raise DataValidationError(what, "expected a DataFrame or a list of records")
    return [{str(k): _plain(v) for k, v in r.items()} for r in records]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    return value


def catalogue_entries(features: Sequence[str]) -> dict[str, dict[str, str]]:
    """Catalogue metadata (category and titles) of the credit-center features given."""
    from jointcredit.data.catalogue import CATEGORY_TITLES, CENTER_CATALOGUE

    out = {}
    for f in features:
        info = CENTER_CATALOGUE.get(f)
        if info is None:
            continue
        cat_zh, cat_en = CATEGORY_TITLES.get(info.category, (info.category, info.category))
        out[f] = {
            "category": info.category,
            "category_zh": cat_zh,
            "category_en": cat_en,
            "title_zh": info.title_zh,
            "title_en": info.title_en,
        }
    return out


def transcript_summary(transcript: Any) -> dict[str, Any]:
    """Bytes, round trips and message counts of a :class:`Transcript`, per protocol and type."""
    from jointcredit.protocol.envelope import Role

    protocols = list(dict.fromkeys(e.protocol for e in transcript.entries))
    by_type: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in transcript.entries:
        key = (e.protocol, e.msg_type, e.direction)
        item = by_type.setdefault(
            key,
            {"protocol": e.protocol, "msg_type": e.msg_type, "direction": e.direction,
             "messages": 0, "bytes": 0},
        )  # fmt: skip
        item["messages"] += 1
        item["bytes"] += e.n_bytes
    return {
        "total": transcript.summary(),
        "by_protocol": {p: transcript.summary(p) for p in protocols},
        "by_message_type": list(by_type.values()),
        "center_sent_bytes": transcript.bytes_sent(Role.CENTER),
        "bank_sent_bytes": transcript.bytes_sent(Role.BANK),
    }


def make_bundle(
    *,
    model_type: str,
    y_test: Any,
    scores: Mapping[str, Any],
    model_id: str | None = None,
    backend: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    references: Mapping[str, Any] | None = None,
    iv_table: Any = None,
    importance: Any = None,
    catalogue: Mapping[str, Mapping[str, str]] | None = None,
    transcript: Any = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The bundle as a JSON-ready dict, validated (see :func:`save_evaluation_bundle`)."""
    labels = _labels(y_test)
    n = len(labels)
    unknown = sorted(set(scores) - set(SCORE_KINDS))
    if unknown:
        raise DataValidationError("scores", f"unknown score kind(s) {unknown}; use {SCORE_KINDS}")
    if scores.get("federated") is None:
        raise DataValidationError("scores.federated", "the federated model's scores are required")
    score_lists = {k: _score_list(k, v, n) for k, v in scores.items() if v is not None}
    iv = _records(iv_table, "iv_table")
    imp = _records(importance, "importance")
    shown = {r["feature"] for r in (iv or []) + (imp or []) if r.get("party") == "center"}
    if catalogue is None:
        catalogue = catalogue_entries(sorted(shown))
    if transcript is not None and not isinstance(transcript, Mapping):
        transcript = transcript_summary(transcript)
    return {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "type": model_type,
            "model_id": model_id,
            "backend": backend,
            "parameters": _plain(dict(parameters or {})),
        },
        "data": _plain(dict(data or {})) | {"n_test": n, "test_bads": int(sum(labels))},
        "labels": labels,
        "scores": score_lists,
        "references": _plain(dict(references or {})),
        "iv_table": iv,
        "importance": imp,
        "catalogue": _plain(dict(catalogue)),
        "transcript": _plain(dict(transcript)) if transcript is not None else None,
        "notes": [str(s) for s in notes],
    }


def save_evaluation_bundle(directory: str | os.PathLike, **fields: Any) -> Path:
    """Write ``directory/evaluation.json`` (see the module docstring); returns its path.

    Keyword arguments (those of :func:`make_bundle`): ``model_type`` and ``y_test`` (test labels,
    1 = bad) and ``scores`` are required. ``scores`` maps ``"federated"`` (required),
    ``"bank_only"`` and ``"centralized"`` to P(bad) per test row (a ``predict_proba`` array is
    accepted). Optional: ``model_id``, ``backend``, ``parameters``, ``data``, ``references``,
    ``iv_table`` (DataFrame or records), ``importance`` (records: party, feature, importance,
    measure, source), ``catalogue`` (default: looked up for the center features shown),
    ``transcript`` (a :class:`~jointcredit.protocol.channel.Transcript` or its summary) and
    ``notes``. Everything is validated before anything is written.

    :func:`collect_evaluation` builds these arguments from a fitted model and its session;
    :func:`write_evaluation` does both.
    """
    bundle = make_bundle(**fields)
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    target = path / BUNDLE_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(bundle, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


# --- reading ------------------------------------------------------------------------------------


def load_evaluation_bundle(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a bundle (a model directory or the JSON file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / BUNDLE_FILE
    if not p.is_file():
        raise DataValidationError(
            "model", f"{p} not found: train with `jointcredit train` (or the demo) first, which "
            "writes evaluation.json into the model directory"
        )  # fmt: skip
    try:
        bundle = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataValidationError(str(p), f"not a readable evaluation bundle ({exc})") from exc
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise DataValidationError(str(p), f"format must be {FORMAT!r}")
    labels = _labels(bundle.get("labels"))
    scores = bundle.get("scores")
    if not isinstance(scores, dict) or "federated" not in scores:
        raise DataValidationError(f"{p}: scores", "the federated scores are missing")
    for k, v in scores.items():
        _score_list(k, v, len(labels))
    return bundle


# --- collecting from a fitted model ---------------------------------------------------------------


def _importance_secureboost(session: Any, est: Any) -> tuple[list[dict[str, Any]], list[str]]:
    from collections import Counter

    model = est.model_
    bank = Counter(
        n["feature"] for tree in model.trees for n in tree.values() if n["kind"] == "bank"
    )
    center_total = sum(1 for tree in model.trees for n in tree.values() if n["kind"] == "center")
    rows = [
        {"party": "bank", "feature": f, "importance": float(c), "measure": "split count",
         "source": "bank's model part"}
        for f, c in bank.items()
    ]  # fmt: skip
    notes = []
    part = getattr(session.center, "model_parts", {}).get(model.model_id)
    if part is not None and hasattr(part, "trees"):
        center = Counter(
            n["feature"] for nodes in part.trees.values() for n in nodes.values()
            if n.get("kind") == "center"
        )  # fmt: skip
        rows += [
            {"party": "center", "feature": f, "importance": float(c), "measure": "split count",
             "source": "credit center (aggregate split counts it released; no thresholds)"}
            for f, c in center.items()
        ]  # fmt: skip
        notes.append(
            "Center feature importance = number of splits on each center feature, released by the "
            "credit center from its model part; thresholds stay at the center."
        )
    elif center_total:
        rows.append(
            {"party": "center", "feature": "(undisclosed center features)",
             "importance": float(center_total), "measure": "split count",
             "source": "bank's view: which nodes split at the center"}
        )  # fmt: skip
    return sorted(rows, key=lambda r: -r["importance"]), notes


def _importance_linear(est: Any) -> tuple[list[dict[str, Any]], list[str]]:
    scale = "WOE coefficient |b|" if hasattr(est, "points_table_") else "|standardised coefficient|"
    rows = [
        {"party": "bank", "feature": str(f), "importance": abs(float(v)), "coef": float(v),
         "measure": scale, "source": "bank's model part"}
        for f, v in getattr(est, "coef_", pd.Series(dtype=float)).items()
    ]  # fmt: skip
    notes = []
    center = getattr(est, "center_coef_", None)
    if center is not None:
        rows += [
            {"party": "center", "feature": str(f), "importance": abs(float(v)), "coef": float(v),
             "measure": scale, "source": "coefficients the credit center revealed for the report"}
            for f, v in center.items()
        ]  # fmt: skip
        notes.append("Center coefficients were revealed by the credit center for this report.")
    return sorted(rows, key=lambda r: -r["importance"]), notes


def _fit_scores(
    make: Any, X_train: pd.DataFrame, y_train: np.ndarray, X_test: pd.DataFrame
) -> np.ndarray:
    import lightgbm as lgb

    model = make()
    if not isinstance(model, lgb.LGBMClassifier):
        fill = X_train.median(numeric_only=True)
        X_train, X_test = X_train.fillna(fill).fillna(0.0), X_test.fillna(fill).fillna(0.0)
    model.fit(X_train, y_train)
    return model.predict_proba(X_test)[:, 1]


def collect_evaluation(
    session: Any,
    estimator: Any,
    model_type: str,
    train_rows: Any,
    test_rows: Any,
    *,
    binning: Any = "auto",
    data: Mapping[str, Any] | None = None,
    references: bool = True,
) -> dict[str, Any]:
    """Everything :func:`save_evaluation_bundle` needs, from a fitted joint model.

    Scores the test rows jointly (``estimator.predict_proba(session, test_rows)``), and, when
    ``references`` (in-process sessions only), fits the plaintext references: bank only, and
    centralized on the joined features (INSECURE: it reads the center's data). ``binning`` is a
    fitted :class:`FederatedBinning`, ``"auto"`` (use the scorecard's, else run the binning
    protocol on the training rows for the IV table) or ``None`` (no IV table).
    """
    from jointcredit.learn.plaintext import logistic_classifier

    train_rows = np.asarray(train_rows, dtype=np.int64)
    test_rows = np.asarray(test_rows, dtype=np.int64)
    mark = session.transcript.mark()
    y_test = session.bank.aligned_labels(test_rows)
    p_fed = estimator.predict_proba(session, test_rows)[:, 1]
    scores: dict[str, Any] = {"federated": p_fed}
    refs: dict[str, Any] = {}
    notes: list[str] = []
    backend = getattr(estimator, "backend", None) or getattr(estimator, "hyperparameters", {}).get(
        "backend"
    )
    if model_type == "secureboost":
        parameters = dict(estimator.hyperparameters)
        importance, more = _importance_secureboost(session, estimator)
    else:
        parameters = {
            k: v
            for k, v in vars(estimator).items()
            if not k.endswith("_") and not k.startswith("_")
        }
        parameters.pop("binning", None)
        importance, more = _importance_linear(estimator)
    notes += more
    if references:
        y_train = session.bank.aligned_labels(train_rows)
        xb_tr, xb_te = (
            session.bank.aligned_features(train_rows),
            session.bank.aligned_features(test_rows),
        )
        xc_tr, xc_te = (
            session.center.aligned_features(train_rows),
            session.center.aligned_features(test_rows),
        )
        joined_tr = pd.concat([xb_tr, xc_tr.add_prefix("center__")], axis=1)
        joined_te = pd.concat([xb_te, xc_te.add_prefix("center__")], axis=1)
        if model_type == "secureboost":
            import lightgbm as lgb

            from jointcredit.learn.boosting import BoostParams, lightgbm_reference_params

            known = {k: v for k, v in parameters.items() if k in BoostParams.__dataclass_fields__}
            lgb_params = lightgbm_reference_params(**known)

            def make() -> Any:
                return lgb.LGBMClassifier(**lgb_params)

            desc = {"library": "lightgbm", "params": lgb_params}
        else:
            make = logistic_classifier
            desc = {"library": "scikit-learn", "model": "StandardScaler + LogisticRegression(C=1)",
                    "missing_values": "training medians"}  # fmt: skip
        scores["bank_only"] = _fit_scores(make, xb_tr, y_train, xb_te)
        scores["centralized"] = _fit_scores(make, joined_tr, y_train, joined_te)
        refs = {
            "bank_only": {**desc, "features": "bank features only"},
            "centralized": {**desc, "features": "bank + center features joined in the clear",
                            "warning": "INSECURE reference: needs both parties' raw data"},
        }  # fmt: skip
    iv_table = None
    if binning == "auto":
        binning = getattr(estimator, "binning_", None)
        if binning is None:
            from jointcredit.learn.binning import FederatedBinning

            plain = backend == "plain"
            binning = FederatedBinning(backend="plain" if plain else "paillier").fit(
                session, train_rows
            )
            notes.append(
                "The IV table comes from a federated binning run on the training rows for this "
                "report"
                + (" (plain reference mode)." if plain else " (labels Paillier-encrypted).")
            )
    if binning is not None:
        iv_table = binning.iv_table_
    transcript = transcript_summary(session.transcript)
    if mark:
        notes.append("Bytes cover the whole session: alignment, training, binning and scoring.")
    return {
        "model_type": model_type,
        "y_test": y_test,
        "scores": scores,
        "model_id": getattr(estimator, "model_id_", None),
        "backend": backend,
        "parameters": parameters,
        "data": dict(data or {}) | {"n_train": int(train_rows.size)},
        "references": refs,
        "iv_table": iv_table,
        "importance": importance,
        "transcript": transcript,
        "notes": notes,
    }


def write_evaluation(
    directory: str | os.PathLike,
    session: Any,
    estimator: Any,
    model_type: str,
    train_rows: Any,
    test_rows: Any,
    **kwargs: Any,
) -> Path:
    """:func:`collect_evaluation` then :func:`save_evaluation_bundle` (what ``train`` calls)."""
    return save_evaluation_bundle(
        directory,
        **collect_evaluation(session, estimator, model_type, train_rows, test_rows, **kwargs),
    )
