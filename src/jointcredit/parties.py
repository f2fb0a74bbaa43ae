"""The two parties' local state: their own table, the aligned rows, their model parts.

Nothing here crosses the wire. A protocol's center half reads a :class:`CenterParty`; its bank
half reads a :class:`BankParty`. After alignment both hold the same ``aligned_ids`` in the same
order, so protocols refer to rows by position in that list (row indices are not secret: both
parties know the intersection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.data.schema import PartyTable
from jointcredit.errors import JointCreditError


class NotAlignedError(JointCreditError):
    """A joint protocol was started before the parties aligned their enterprise IDs."""


def _aligned_positions(table: PartyTable, aligned_ids: np.ndarray) -> np.ndarray:
    index = pd.Index(table.ids)
    positions = index.get_indexer(aligned_ids)
    if (positions < 0).any():
        raise NotAlignedError("aligned ids are not all present in the party's table")
    return positions


@dataclass
class _Party:
    table: PartyTable
    aligned_ids: np.ndarray | None = None
    model_parts: dict[str, Any] = field(default_factory=dict)

    def require_aligned(self) -> np.ndarray:
        if self.aligned_ids is None:
            raise NotAlignedError("run alignment (PSI) before any joint protocol")
        return self.aligned_ids

    def aligned_features(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        """Feature rows of the intersection, in aligned order (optionally a subset by position)."""
        positions = _aligned_positions(self.table, self.require_aligned())
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= positions.size):
                raise JointCreditError("row positions outside the aligned intersection")
            positions = positions[rows]
        return self.table.X.iloc[positions].reset_index(drop=True)

    @property
    def feature_names(self) -> list[str]:
        return list(self.table.X.columns)


@dataclass
class CenterParty(_Party):
    """The credit center: public credit features of every enterprise; never labels."""

    #: Center-local services its protocol halves may use (e.g. ``"monitor"``: consent registry,
    #: event records and monthly snapshots for post-loan monitoring). Configured by the center's
    #: operator for the bank it serves; never sent and not part of the persisted party state.
    services: dict[str, Any] = field(default_factory=dict)


@dataclass
class BankParty(_Party):
    """The bank: its customers' features and (for training) their default labels."""

    def aligned_labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        if self.table.y is None:
            raise JointCreditError("the bank's table has no label column")
        positions = _aligned_positions(self.table, self.require_aligned())
        if rows is not None:
            positions = positions[np.asarray(rows, dtype=np.int64)]
        return np.asarray(self.table.y)[positions]
