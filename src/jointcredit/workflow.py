"""End-to-end jobs shared by the CLI, the demo and the benchmarks.

Each function is one step a bank modeler runs: load both parties' tables, align them with PSI,
split the intersection, train a joint model and compare it with the plaintext references.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from jointcredit.data import PartyTable, load_party_table
from jointcredit.errors import DataValidationError
from jointcredit.session import JointSession

MODELS = ("logistic", "scorecard", "secureboost")
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def load_parties(
    bank: str | os.PathLike | pd.DataFrame,
    center: str | os.PathLike | pd.DataFrame,
    *,
    id_col: str = "id",
    id_kind: str = "uscc",
    label_col: str | None = None,
) -> tuple[PartyTable, PartyTable]:
    """Validate and load both tables before any cryptography runs."""
    bank_table = load_party_table(
        bank,
        id_col=id_col,
        label_col=label_col,
        id_kind=id_kind,
        require_label=label_col is not None,
    )
    center_table = load_party_table(center, id_col=id_col, id_kind=id_kind)
    return bank_table, center_table


def align(session: JointSession) -> dict[str, Any]:
    """Run PSI and report what it cost (the ``alignment.json`` of ``jointcredit align``)."""
    mark = session.transcript.mark()
    start = time.perf_counter()
    ids = session.align()
    seconds = time.perf_counter() - start
    cost = session.transcript.since(mark).summary()
    return {
        "intersection_size": int(len(ids)),
        "bank_rows": int(session.bank.table.n_rows),
        "center_rows": int(session.center.table.n_rows),
        "bytes_bank_to_center": cost["bytes_bank_to_center"],
        "bytes_center_to_bank": cost["bytes_center_to_bank"],
        "round_trips": cost["round_trips"],
        "seconds": round(seconds, 3),
    }


def split_rows(
    y: np.ndarray, *, test_size: float = 0.3, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test split of aligned row positions (held by the bank)."""
    if not 0.0 < test_size < 1.0:
        raise DataValidationError("test_size", f"must be in (0, 1), got {test_size}")
    y = np.asarray(y)
    if np.unique(y).size < 2:
        raise DataValidationError("label", "the aligned rows hold only one class; cannot split")
    rows = np.arange(y.size)
    train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=y)
    return np.sort(train), np.sort(test)


def train(
    session: JointSession,
    model: str,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    *,
    backend: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one joint model and evaluate it against ``centralized`` and ``bank_only``.

    Returns ``{"metrics": ..., "model": fitted estimator}``; ``metrics`` follows the
    ``metrics.json`` schema documented in docs/cli.md.
    """
    params = dict(params or {})
    if model in ("logistic", "scorecard"):
        from jointcredit.learn.linear import train_and_evaluate

        if backend is not None:
            params["backend"] = backend
        result = train_and_evaluate(session, train_rows, test_rows, model=model, **params)
    elif model == "secureboost":
        from jointcredit.learn.boosting import train_and_evaluate

        if backend is not None:
            params["backend"] = backend
        result = train_and_evaluate(session, train_rows, test_rows, **params)
    else:
        raise DataValidationError("model", f"unknown model {model!r}; choose one of {MODELS}")
    metrics = {
        "model": model,
        "n_train": int(len(train_rows)),
        "n_test": int(len(test_rows)),
        "federated": result["federated"],
        "centralized": result["centralized"],
        "bank_only": result["bank_only"],
    }
    return {"metrics": metrics, "model": result.get("estimator")}


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
