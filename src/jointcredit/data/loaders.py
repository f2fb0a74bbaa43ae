"""Load and validate one party's table (CSV file or DataFrame) into a :class:`PartyTable`.

All checks run before any conversion, and every failure is a typed error from
:mod:`jointcredit.errors` naming the offending column, so a bank modeler learns about a broken
extract here rather than halfway through an encrypted protocol. The caller's DataFrame is never
modified: ids, labels and features are copied into new arrays.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from jointcredit.data.schema import ID_KINDS, PartyTable, TableSchema
from jointcredit.data.uscc import normalize_id, normalize_ids, uscc_problem, valid_uscc_mask
from jointcredit.errors import (
    DataValidationError,
    DuplicateIdentifierError,
    InvalidIdentifierError,
    InvalidRow,
    SchemaMismatchError,
)

_MAX_LISTED = 10


def load_party_table(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    id_col: str = "id",
    label_col: str | None = None,
    id_kind: str = "uscc",
    feature_cols: Sequence[str] | None = None,
    allowed_legacy_ids: Collection[str] = (),
    require_label: bool = False,
) -> PartyTable:
    """Read a party's table in FATE layout and validate it.

    Parameters
    ----------
    source:
        Path to a UTF-8 CSV file (a byte-order mark is fine) or a DataFrame (left untouched).
    id_col:
        Column holding enterprise ids. Ids are normalised (NFKC, stripped, upper-cased; see
        :func:`~jointcredit.data.uscc.normalize_id`) before validation and duplicate detection.
    label_col:
        Column holding the 0/1 default label (bank side only); ``None`` for no label.
    id_kind:
        ``"uscc"``: every id must be a valid Unified Social Credit Code (GB 32100-2015).
        ``"plain"``: any non-empty string (benchmark data).
    feature_cols:
        Feature columns in the order models will use; default: every other column in file order.
    allowed_legacy_ids:
        Opt-in allow-list of ids accepted even though they fail USCC validation (codes from
        pilot registrations before the national standard). Compared after normalisation.
    require_label:
        Raise if no label column is configured (training tables must have one).

    Raises
    ------
    InvalidIdentifierError
        Empty, missing or (for ``"uscc"``) invalid ids; lists every bad row with its 0-based
        row number, raw value and reason.
    DuplicateIdentifierError
        The same normalised id occurs more than once.
    SchemaMismatchError
        Requested feature columns are absent, or the frame has duplicated column names.
    DataValidationError
        Unknown ``id_kind``, missing id/label column, missing or non-0/1 labels, non-numeric or
        infinite feature values, empty table. Numeric features may contain NaN: a missing value
        is information (e.g. no utility account matched) and models handle it explicitly.
    """
    if id_kind not in ID_KINDS:
        raise DataValidationError("id_kind", f"unknown id kind {id_kind!r}; use one of {ID_KINDS}")
    if require_label and label_col is None:
        raise DataValidationError("label_col", "a label column is required for this table")

    frame = _read(source, id_col)
    features = _check_columns(frame, id_col, label_col, feature_cols)
    if len(frame) == 0:
        raise DataValidationError("rows", "the table has no rows")

    ids = _validated_ids(frame[id_col], id_col, id_kind, allowed_legacy_ids)
    y = None if label_col is None else _validated_labels(frame[label_col], label_col)
    X = pd.DataFrame(
        {col: _validated_feature(frame[col], col) for col in features},
        columns=list(features),
        index=pd.RangeIndex(len(frame)),
    )
    schema = TableSchema(
        id_col=id_col, label_col=label_col, feature_cols=tuple(features), id_kind=id_kind
    )
    return PartyTable(ids=ids, X=X, y=y, schema=schema)


# --- reading ----------------------------------------------------------------------------------


def read_id_frame(path: str | os.PathLike[str], id_col: str, what: str) -> pd.DataFrame:
    """A CSV keyed by enterprise id (a book, event records, a monthly snapshot), with its id
    column normalised and renamed ``id``; unreadable input is a ``DataValidationError`` naming
    ``what``."""
    try:
        frame = pd.read_csv(path, dtype={id_col: str}, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataValidationError(what, f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError(what, f"{path}: not a readable CSV ({exc})") from None
    if id_col not in frame.columns:
        raise DataValidationError(what, f"{path}: no {id_col!r} column")
    ids = normalize_ids(frame[id_col].to_numpy(dtype=object))
    return frame.drop(columns=[id_col]).assign(id=ids)


def _read(source: str | os.PathLike[str] | pd.DataFrame, id_col: str) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        if not all(isinstance(c, str) for c in source.columns):
            # Column roles are names; integer column labels (e.g. from numpy) become strings.
            # rename() returns a new frame, so the caller's frame keeps its labels.
            return source.rename(columns=str)
        return source
    if not isinstance(source, str | os.PathLike):
        raise DataValidationError(
            "source", f"expected a CSV path or a DataFrame, got {type(source).__name__}"
        )
    try:
        # Ids are read as text: all-digit ids would otherwise become integers (losing leading
        # zeros) and an id column with gaps would become float ("25115.0").
        return pd.read_csv(source, dtype={id_col: str}, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            "source",
            f"{os.fspath(source)!s} is not UTF-8 ({exc.reason} at byte {exc.start}); "
            "exports from Excel on Chinese Windows are often GBK: re-save as UTF-8",
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError("source", f"{os.fspath(source)!s} is empty") from exc


def _check_columns(
    frame: pd.DataFrame, id_col: str, label_col: str | None, feature_cols: Sequence[str] | None
) -> list[str]:
    """Check column roles; return the ordered feature columns."""
    columns = [str(c) for c in frame.columns]
    dup_cols = sorted(c for c, k in Counter(columns).items() if k > 1)
    if dup_cols:
        raise SchemaMismatchError(", ".join(dup_cols), "column name(s) appear more than once")
    if id_col not in columns:
        raise DataValidationError(id_col, f"id column not found; columns are {columns}")
    if label_col is not None:
        if label_col == id_col:
            raise DataValidationError(label_col, "the label column cannot be the id column")
        if label_col not in columns:
            raise DataValidationError(label_col, f"label column not found; columns are {columns}")
    roles = {id_col, label_col}
    if feature_cols is None:
        return [c for c in columns if c not in roles]
    features = [str(c) for c in feature_cols]
    clash = [c for c in features if c in roles]
    if clash:
        raise DataValidationError(", ".join(clash), "used both as a feature and as id/label")
    dups = sorted(c for c, k in Counter(features).items() if k > 1)
    if dups:
        raise SchemaMismatchError(", ".join(dups), "listed more than once in feature_cols")
    missing = [c for c in features if c not in columns]
    if missing:
        raise SchemaMismatchError(
            ", ".join(missing), f"feature column(s) not found; columns are {columns}"
        )
    return features


# --- ids --------------------------------------------------------------------------------------


def _validated_ids(
    raw: pd.Series, id_col: str, id_kind: str, allowed_legacy_ids: Collection[str]
) -> np.ndarray:
    allowed = {normalize_id(v) for v in allowed_legacy_ids}
    values = raw.to_numpy(dtype=object)
    normalised = normalize_ids(values)
    suspect = normalised == ""
    if id_kind == "uscc":
        suspect |= ~valid_uscc_mask(normalised)
    bad: list[InvalidRow] = []
    for row in np.flatnonzero(suspect):
        norm = normalised[row]
        if norm == "":
            bad.append(InvalidRow(int(row), values[row], "empty or missing id"))
        elif norm not in allowed:
            bad.append(InvalidRow(int(row), values[row], uscc_problem(norm) or "invalid"))
    if bad:
        raise InvalidIdentifierError(id_col, bad)

    counts = Counter(normalised.tolist())
    if len(counts) != len(normalised):
        duplicates = sorted(v for v, k in counts.items() if k > 1)
        raise DuplicateIdentifierError(id_col, duplicates)
    return normalised


# --- labels -----------------------------------------------------------------------------------


def _validated_labels(raw: pd.Series, label_col: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(raw.dtype):
        if raw.isna().any():
            rows = _rows(raw.isna().to_numpy())
            raise DataValidationError(label_col, f"missing label(s) at row(s) {rows}")
        return raw.to_numpy(dtype=np.int8)
    if not pd.api.types.is_numeric_dtype(raw.dtype):
        example = next((v for v in raw if not pd.isna(v)), None)
        raise DataValidationError(
            label_col,
            f"labels must be numeric 0/1, column has dtype {raw.dtype} (e.g. {example!r})",
        )
    values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(values)
    if missing.any():
        raise DataValidationError(
            label_col, f"{int(missing.sum())} missing label(s) at row(s) {_rows(missing)}"
        )
    wrong = (values != 0.0) & (values != 1.0)
    if wrong.any():
        shown = sorted({float(v) for v in values[wrong]})[:_MAX_LISTED]
        raise DataValidationError(
            label_col,
            f"labels must be 0 (good) or 1 (bad); found {shown} at row(s) {_rows(wrong)}",
        )
    return values.astype(np.int8)


# --- features ---------------------------------------------------------------------------------


def _validated_feature(raw: pd.Series, col: str) -> np.ndarray:
    """Return the column as float64, NaN kept; reject text, dates and infinities."""
    dtype = raw.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        # Text that is entirely numeric (a frame read with dtype=str) is accepted; anything
        # else is reported with the first offending value so the extract can be fixed.
        coerced = pd.to_numeric(raw, errors="coerce")
        offending = coerced.isna() & raw.notna()
        if offending.any():
            row = int(np.flatnonzero(offending.to_numpy())[0])
            raise DataValidationError(
                col,
                f"non-numeric value {raw.iloc[row]!r} at row {row} "
                f"({int(offending.sum())} such row(s)); features must be numeric codes",
            )
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        example = next((v for v in raw if not pd.isna(v)), None)
        raise DataValidationError(
            col, f"non-numeric dtype {dtype} (e.g. {example!r}); features must be numeric codes"
        )
    infinite = np.isinf(values)
    if infinite.any():
        raise DataValidationError(
            col, f"infinite value(s) at row(s) {_rows(infinite)}; use NaN for missing"
        )
    return values


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:_MAX_LISTED])
    return shown + (f", ... ({len(rows)} in total)" if len(rows) > _MAX_LISTED else "")
