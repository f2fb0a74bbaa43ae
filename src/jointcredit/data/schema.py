"""What a party's table looks like: the schema, and the validated table itself.

Both the bank and the credit center hold a :class:`PartyTable` in the FATE layout: one id column,
an optional label column (only the bank has one), and numeric feature columns. Joint algorithms
only ever receive a ``PartyTable``, so they can rely on its invariants (normalised unique ids,
float64 features aligned with the ids, 0/1 labels) instead of re-checking raw input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jointcredit.errors import DataValidationError, DuplicateIdentifierError, SchemaMismatchError

#: Identifier kinds: ``"uscc"`` (validated Unified Social Credit Codes) or ``"plain"`` (any
#: non-empty string, for benchmark data such as the UCI default_credit split).
ID_KINDS = ("uscc", "plain")


@dataclass(frozen=True)
class TableSchema:
    """Column roles of one party's table.

    ``feature_cols`` is ordered: a model trained on one table can score another only if the
    features are the same and in the same order (see :meth:`check_compatible`).
    """

    id_col: str
    label_col: str | None
    feature_cols: tuple[str, ...]
    id_kind: str

    def __post_init__(self) -> None:
        if self.id_kind not in ID_KINDS:
            raise DataValidationError(
                "id_kind", f"unknown id kind {self.id_kind!r}; use {ID_KINDS}"
            )
        # Accept any sequence from callers but store a tuple, so the schema stays hashable.
        object.__setattr__(self, "feature_cols", tuple(self.feature_cols))

    def check_compatible(self, other: TableSchema) -> None:
        """Raise :class:`SchemaMismatchError` unless ``other`` can stand in for this schema.

        Use it when a table meets a model or protocol set up on ``self``, for example scoring
        or retraining on a new bank extract: the id kind and the ordered feature columns must
        agree. Id and label column names may differ, and ``other`` may lack a label (scoring
        tables have none). The error names the missing, unexpected or reordered columns.
        """
        if self.id_kind != other.id_kind:
            raise SchemaMismatchError(
                other.id_col,
                f"id kind {other.id_kind!r} does not match the expected {self.id_kind!r}",
            )
        if self.feature_cols == other.feature_cols:
            return
        mine, theirs = set(self.feature_cols), set(other.feature_cols)
        missing = [c for c in self.feature_cols if c not in theirs]
        extra = [c for c in other.feature_cols if c not in mine]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing column(s) {missing}")
            if extra:
                parts.append(f"unexpected column(s) {extra}")
            raise SchemaMismatchError(", ".join(missing + extra), "; ".join(parts))
        moved = [a for a, b in zip(self.feature_cols, other.feature_cols, strict=True) if a != b]
        raise SchemaMismatchError(
            ", ".join(moved),
            f"same feature columns in a different order (first difference at {moved[0]!r}); "
            f"expected order {list(self.feature_cols)}",
        )

    def check_alignable(self, other: TableSchema) -> None:
        """Raise :class:`SchemaMismatchError` unless two *parties'* tables can be aligned by id.

        Vertically partitioned parties hold different features, so only the id kind must agree
        (a USCC table cannot be intersected with a table of plain benchmark ids), and at most
        one party may hold the label (the credit center must never have one to share).
        """
        if self.id_kind != other.id_kind:
            raise SchemaMismatchError(
                "id_kind", f"cannot align {self.id_kind!r} ids with {other.id_kind!r} ids"
            )
        if self.label_col is not None and other.label_col is not None:
            raise SchemaMismatchError(
                f"{self.label_col}, {other.label_col}", "both parties hold a label column"
            )


@dataclass
class PartyTable:
    """A validated party table: normalised ids, float64 features and optional 0/1 labels.

    Build one with :func:`jointcredit.data.load_party_table`, which validates raw input. The
    constructor re-checks only the structural invariants (lengths, columns, dtypes), so code
    that slices tables cannot silently misalign ids and rows.
    """

    ids: np.ndarray
    X: pd.DataFrame
    y: np.ndarray | None
    schema: TableSchema

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=object)
        n = self.ids.shape[0]
        if self.ids.ndim != 1:
            raise DataValidationError(self.schema.id_col, "ids must be one-dimensional")
        if list(self.X.columns) != list(self.schema.feature_cols):
            raise SchemaMismatchError(
                "X", f"columns {list(self.X.columns)} differ from {list(self.schema.feature_cols)}"
            )
        if len(self.X) != n:
            raise DataValidationError("X", f"{len(self.X)} rows but {n} ids")
        if not isinstance(self.X.index, pd.RangeIndex) or self.X.index.start != 0:
            self.X = self.X.reset_index(drop=True)
        if self.y is not None:
            if self.schema.label_col is None:
                raise SchemaMismatchError("y", "labels given but the schema has no label column")
            self.y = np.asarray(self.y, dtype=np.int8)
            if self.y.shape != (n,):
                raise DataValidationError(self.schema.label_col, f"expected {n} labels")

    @property
    def n_rows(self) -> int:
        """Number of enterprises (rows) in the table."""
        return int(self.ids.shape[0])

    @property
    def feature_cols(self) -> tuple[str, ...]:
        """The ordered feature columns (shortcut for ``schema.feature_cols``)."""
        return self.schema.feature_cols

    def positions(self, ids_in_order: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row positions of the given (already normalised) ids, in the given order.

        Raises :class:`DataValidationError` naming the id column and listing ids that are not in
        this table, and :class:`DuplicateIdentifierError` if an id is requested twice.
        """
        wanted = [str(v) for v in ids_in_order]
        if len(set(wanted)) != len(wanted):
            dups = sorted(v for v, k in Counter(wanted).items() if k > 1)
            raise DuplicateIdentifierError(self.schema.id_col, dups)
        index = pd.Index(self.ids, dtype=object)
        if not index.is_unique:
            dups = sorted(index[index.duplicated()].unique())
            raise DuplicateIdentifierError(self.schema.id_col, dups)
        positions = index.get_indexer(pd.Index(wanted, dtype=object))
        if (positions < 0).any():
            missing = [v for v, p in zip(wanted, positions, strict=True) if p < 0]
            shown = ", ".join(repr(v) for v in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise DataValidationError(
                self.schema.id_col, f"{len(missing)} id(s) not in this table: {shown}{more}"
            )
        return positions.astype(np.int64)

    def subset(self, ids_in_order: Sequence[str] | np.ndarray) -> PartyTable:
        """A new table holding exactly the given ids, in that order (e.g. the PSI intersection).

        Every id must be present; a missing id is an error rather than a silently dropped row,
        because a dropped row would misalign the two parties' matrices.
        """
        pos = self.positions(ids_in_order)
        return PartyTable(
            ids=self.ids[pos].copy(),
            X=self.X.iloc[pos].reset_index(drop=True),
            y=None if self.y is None else self.y[pos].copy(),
            schema=self.schema,
        )

    def to_frame(self) -> pd.DataFrame:
        """The table in FATE layout: id column, label column (if any), then features."""
        frame = pd.DataFrame({self.schema.id_col: pd.Series(self.ids, dtype="str")})
        if self.y is not None and self.schema.label_col is not None:
            frame[self.schema.label_col] = self.y
        return pd.concat([frame, self.X], axis=1)
