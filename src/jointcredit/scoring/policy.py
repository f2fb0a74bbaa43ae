"""The bank's pre-authorization policy: PD -> score -> grade -> credit line -> decision.

Everything here runs at the bank, on the PDs the joint model returns. Conventions:

* **Odds are good:bad.** ``Factor = PDO / ln 2``, ``Offset = BaseScore - Factor * ln(BaseOdds)``,
  ``Score = Offset - Factor * logit(PD)`` with ``logit(PD) = ln(PD / (1 - PD)) = -ln(good:bad)``.
  So a higher score means lower risk, ``BaseScore`` is the score at good:bad odds ``BaseOdds``
  (600 at 19:1, i.e. PD 5 %, by default), and every ``PDO`` points double the good:bad odds.
* Grades run from best (first label) to worst; a cut-off that equals a score (or PD) puts it in
  the better grade.
* Credit lines are in CNY; size indicators are read in the units of the bank's own columns.

See docs/preauthorization.md for the defaults and the formulas.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas  # spelled out where a parameter is called ``pd`` (probability of default)
import pandas as pd

from jointcredit.errors import DataValidationError, DuplicateIdentifierError

#: PDs are clipped into [PD_CLIP, 1 - PD_CLIP] before scaling, so a saturated sigmoid still
#: gives a finite score.
PD_CLIP = 1e-12

PRE_AUTHORIZE = "pre-authorize"
REFER = "refer"
DECLINE = "decline"
DECISIONS: tuple[str, ...] = (PRE_AUTHORIZE, REFER, DECLINE)

#: Columns of :meth:`PreAuthorizationPolicy.decide`'s result, in order.
DECISION_COLUMNS: tuple[str, ...] = (
    "id", "pd", "score", "grade", "credit_line", "decision", "reasons"
)  # fmt: skip

#: Separator between reason codes in one enterprise's ``reasons`` text.
REASON_SEPARATOR = ";"


# --- small validators ---------------------------------------------------------------------------


def _real(
    value: object, field: str, *, positive: bool = False, minimum: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataValidationError(field, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise DataValidationError(field, f"must be finite, got {value!r}")
    if positive and number <= 0:
        raise DataValidationError(field, f"must be positive, got {value!r}")
    if minimum is not None and number < minimum:
        raise DataValidationError(field, f"must be at least {minimum}, got {value!r}")
    return number


def _reject_unknown(data: Mapping[str, Any], allowed: Sequence[str], section: str) -> None:
    if not isinstance(data, Mapping):
        raise DataValidationError(section, f"must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        where = f"{section}.{unknown[0]}" if section else unknown[0]
        raise DataValidationError(where, f"unknown setting; allowed: {', '.join(allowed)}")


# --- score scaling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreScaling:
    """Points-to-double-the-odds scaling with good:bad odds (higher score = lower risk)."""

    pdo: float = 50.0
    base_score: float = 600.0
    base_odds: float = 19.0  # good:bad odds at base_score; 19:1 is PD 5 %

    #: Direction of ``base_odds``: good:bad, never bad:good.
    odds: ClassVar[str] = "good:bad"

    def __post_init__(self) -> None:
        object.__setattr__(self, "pdo", _real(self.pdo, "scaling.pdo", positive=True))
        object.__setattr__(self, "base_score", _real(self.base_score, "scaling.base_score"))
        object.__setattr__(
            self, "base_odds", _real(self.base_odds, "scaling.base_odds", positive=True)
        )

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * math.log(self.base_odds)

    def logit_to_score(self, logit: Any) -> Any:
        """Score of a logit(PD); the score is affine in the logit, so contributions add up."""
        return self.offset - self.factor * _as_float_array(logit, "logit")

    def score_to_logit(self, score: Any) -> Any:
        return (self.offset - _as_float_array(score, "score")) / self.factor

    def points(self, logit_contribution: Any) -> Any:
        """Score points of a contribution to logit(PD) (the intercept's also gets ``offset``)."""
        return -self.factor * _as_float_array(logit_contribution, "logit_contribution")

    def pd_to_score(self, pd: Any) -> Any:
        """Score of a probability of default (array or scalar in, same out)."""
        p = _as_float_array(pd, "pd")
        if np.any((p < 0) | (p > 1)):
            raise DataValidationError("pd", "probabilities of default must lie in [0, 1]")
        p = np.clip(p, PD_CLIP, 1.0 - PD_CLIP)
        return _unwrap(self.offset - self.factor * (np.log(p) - np.log1p(-p)))

    def score_to_pd(self, score: Any) -> Any:
        """Inverse of :meth:`pd_to_score` (up to the PD clipping)."""
        z = np.asarray(self.score_to_logit(score), dtype=np.float64)
        # Stable logistic: never exponentiate a large positive number.
        e = np.exp(-np.abs(z))
        return _unwrap(np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pdo": self.pdo,
            "base_score": self.base_score,
            "base_odds": self.base_odds,
            "odds": self.odds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreScaling:
        _reject_unknown(data, ("pdo", "base_score", "base_odds", "odds"), "scaling")
        if "odds" in data and data["odds"] != cls.odds:
            raise DataValidationError(
                "scaling.odds", f"only {cls.odds!r} odds are supported, got {data['odds']!r}"
            )
        return cls(**{k: v for k, v in data.items() if k != "odds"})


def _as_float_array(values: Any, field: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataValidationError(field, "must be numeric") from None
    if not np.all(np.isfinite(arr)):
        raise DataValidationError(field, "contains NaN or infinite values")
    return arr


def _unwrap(arr: np.ndarray) -> Any:
    return float(arr) if np.ndim(arr) == 0 else arr


# --- grades -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradeBands:
    """Risk grades from best to worst, cut by score or by PD.

    ``basis="score"``: ``cutoffs`` are the minimum scores of every grade but the last, strictly
    decreasing (score >= cutoffs[0] is the first grade). ``basis="pd"``: ``cutoffs`` are the
    maximum PDs of every grade but the last, strictly increasing in (0, 1) (PD <= cutoffs[0] is
    the first grade).
    """

    labels: tuple[str, ...] = ("A", "B", "C", "D", "E")
    cutoffs: tuple[float, ...] = (680.0, 640.0, 600.0, 560.0)
    basis: Literal["score", "pd"] = "score"

    def __post_init__(self) -> None:
        if isinstance(self.labels, str) or not isinstance(self.labels, Sequence):
            raise DataValidationError("grades.labels", "must be a list of grade names")
        labels = tuple(self.labels)
        if len(labels) < 2:
            raise DataValidationError("grades.labels", "at least two grades are needed")
        if any(not isinstance(g, str) or not g.strip() for g in labels):
            raise DataValidationError("grades.labels", "grade names must be non-empty text")
        if len(set(labels)) != len(labels):
            raise DataValidationError("grades.labels", f"grade names repeat: {list(labels)}")
        if self.basis not in ("score", "pd"):
            raise DataValidationError(
                "grades.basis", f"must be 'score' or 'pd', got {self.basis!r}"
            )
        if isinstance(self.cutoffs, str) or not isinstance(self.cutoffs, Sequence):
            raise DataValidationError("grades.cutoffs", "must be a list of numbers")
        cutoffs = tuple(_real(c, f"grades.cutoffs[{i}]") for i, c in enumerate(self.cutoffs))
        if len(cutoffs) != len(labels) - 1:
            raise DataValidationError(
                "grades.cutoffs",
                f"{len(labels)} grades need {len(labels) - 1} cut-offs, got {len(cutoffs)}",
            )
        steps = np.diff(cutoffs)
        if self.basis == "score" and np.any(steps >= 0):
            raise DataValidationError(
                "grades.cutoffs",
                f"score cut-offs must strictly decrease (best grade first): {list(cutoffs)}",
            )
        if self.basis == "pd":
            if np.any(steps <= 0):
                raise DataValidationError(
                    "grades.cutoffs",
                    f"PD cut-offs must strictly increase (best grade first): {list(cutoffs)}",
                )
            if cutoffs[0] <= 0 or cutoffs[-1] >= 1:
                raise DataValidationError(
                    "grades.cutoffs", "PD cut-offs must lie strictly between 0 and 1"
                )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "cutoffs", cutoffs)

    @classmethod
    def by_score(cls, cutoffs: Sequence[float], labels: Sequence[str] | None = None) -> GradeBands:
        labels = labels if labels is not None else _letters(len(cutoffs) + 1)
        return cls(tuple(labels), tuple(cutoffs), "score")

    @classmethod
    def by_pd(cls, cutoffs: Sequence[float], labels: Sequence[str] | None = None) -> GradeBands:
        labels = labels if labels is not None else _letters(len(cutoffs) + 1)
        return cls(tuple(labels), tuple(cutoffs), "pd")

    def rank(self, grade: str) -> int:
        """0 for the best grade; :class:`DataValidationError` for an unknown grade."""
        try:
            return self.labels.index(grade)
        except ValueError:
            raise DataValidationError(
                "grade", f"unknown grade {grade!r}; grades are {list(self.labels)}"
            ) from None

    def assign(self, score: Any = None, pd: Any = None) -> np.ndarray:
        """Grade of each enterprise (object array of labels), from its score or PD per ``basis``."""
        if self.basis == "score":
            if score is None:
                raise DataValidationError("score", "score-based grades need scores")
            values = _as_float_array(score, "score")
            index = np.searchsorted(-np.asarray(self.cutoffs), -values, side="left")
        else:
            if pd is None:
                raise DataValidationError("pd", "PD-based grades need PDs")
            values = _as_float_array(pd, "pd")
            index = np.searchsorted(np.asarray(self.cutoffs), values, side="left")
        return np.asarray(self.labels, dtype=object)[index]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "basis": self.basis, "cutoffs": list(self.cutoffs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradeBands:
        _reject_unknown(data, ("labels", "basis", "cutoffs"), "grades")
        return cls(**data)


def _letters(n: int) -> tuple[str, ...]:
    if n > 26:
        raise DataValidationError("grades.labels", "give labels explicitly for more than 26 grades")
    return tuple(chr(ord("A") + i) for i in range(n))


# --- credit lines -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeIndicator:
    """A bank column that measures an enterprise's size, and the value that counts as 1x.

    ``reference`` is in the column's own units (the synthetic data and many bank extracts use
    10,000 CNY, 万元).
    """

    reference: float
    weight: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return {"reference": self.reference, "weight": self.weight}


def _default_base_lines() -> dict[str, float]:
    return {"A": 2_000_000, "B": 1_500_000, "C": 1_000_000, "D": 500_000, "E": 0}


def _default_indicators() -> dict[str, SizeIndicator]:
    # Amounts in 10,000 CNY: 300,000 CNY monthly inflow and 150,000 CNY average balance are 1x.
    return {
        "monthly_inflow": SizeIndicator(reference=30.0, weight=0.5),
        "avg_balance": SizeIndicator(reference=15.0, weight=0.5),
    }


@dataclass(frozen=True)
class CreditLinePolicy:
    """Credit line per grade, scaled by the enterprise's size at the bank, capped and rounded.

    ``size_factor = clip(sum_k w_k * max(x_k, 0) / reference_k / sum_k w_k, min_factor,
    max_factor)`` (a missing x_k counts as 0); ``line = floor(min(base_line[grade] * size_factor,
    cap) / rounding) * rounding``. Grades up to ``preauthorize_through`` are pre-authorized, grades
    after it up to ``refer_through`` are referred to a credit officer with an indicative line, and
    worse grades (or a score below ``min_score``) are declined with line 0.
    """

    base_lines: Mapping[str, float] = field(default_factory=_default_base_lines)
    size_indicators: Mapping[str, SizeIndicator] = field(default_factory=_default_indicators)
    min_factor: float = 0.25
    max_factor: float = 2.0
    cap: float = 3_000_000
    rounding: int = 10_000
    preauthorize_through: str = "C"
    refer_through: str = "D"
    min_score: float | None = None
    currency: str = "CNY"

    def __post_init__(self) -> None:
        if not isinstance(self.base_lines, Mapping) or not self.base_lines:
            raise DataValidationError("lines.base_lines", "must map every grade to a line")
        object.__setattr__(
            self,
            "base_lines",
            {
                str(g): _real(v, f"lines.base_lines.{g}", minimum=0.0)
                for g, v in self.base_lines.items()
            },
        )
        if not isinstance(self.size_indicators, Mapping):
            raise DataValidationError(
                "lines.size_indicators", "must map bank columns to indicators"
            )
        indicators: dict[str, SizeIndicator] = {}
        for name, ind in self.size_indicators.items():
            where = f"lines.size_indicators.{name}"
            if isinstance(ind, Mapping):
                _reject_unknown(ind, ("reference", "weight"), where)
                if "reference" not in ind:
                    raise DataValidationError(f"{where}.reference", "missing")
                ind = SizeIndicator(**ind)
            if not isinstance(ind, SizeIndicator):
                raise DataValidationError(where, "expected {'reference': ..., 'weight': ...}")
            indicators[str(name)] = SizeIndicator(
                _real(ind.reference, f"{where}.reference", positive=True),
                _real(ind.weight, f"{where}.weight", positive=True),
            )
        object.__setattr__(self, "size_indicators", indicators)
        lo = _real(self.min_factor, "lines.min_factor", minimum=0.0)
        hi = _real(self.max_factor, "lines.max_factor", positive=True)
        if lo > hi:
            raise DataValidationError("lines.min_factor", f"{lo} is above max_factor {hi}")
        object.__setattr__(self, "min_factor", lo)
        object.__setattr__(self, "max_factor", hi)
        object.__setattr__(self, "cap", _real(self.cap, "lines.cap", positive=True))
        rounding = self.rounding
        if isinstance(rounding, bool) or not isinstance(rounding, int | np.integer) or rounding < 1:
            raise DataValidationError(
                "lines.rounding", f"must be a positive whole number of CNY, got {rounding!r}"
            )
        object.__setattr__(self, "rounding", int(rounding))
        if self.min_score is not None:
            object.__setattr__(self, "min_score", _real(self.min_score, "lines.min_score"))
        for name in ("preauthorize_through", "refer_through", "currency"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise DataValidationError(f"lines.{name}", "must be non-empty text")

    def size_factor(self, bank_features: pd.DataFrame | None, n: int) -> np.ndarray:
        """Per-enterprise size factor (1.0 for everyone without bank features or indicators)."""
        if bank_features is None or not self.size_indicators:
            return np.ones(n)
        total = np.zeros(n)
        weights = 0.0
        for name, ind in self.size_indicators.items():
            if name not in bank_features.columns:
                raise DataValidationError(name, "size indicator column missing from bank_features")
            try:
                x = pd.to_numeric(bank_features[name], errors="raise").to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise DataValidationError(name, "size indicator must be numeric") from None
            if np.isinf(x).any():
                raise DataValidationError(name, "infinite size indicator")
            total += ind.weight * np.nan_to_num(np.maximum(x, 0.0), nan=0.0) / ind.reference
            weights += ind.weight
        return np.clip(total / weights, self.min_factor, self.max_factor)

    def line(self, grades: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """Credit lines (int64 CNY) for grades and size factors, before the decision rule."""
        base = np.array([self.base_lines[g] for g in grades], dtype=np.float64)
        raw = np.minimum(base * factor, self.cap)
        # The small epsilon keeps 290,000.0000000001 and 289,999.9999999999 in the same step.
        steps = np.floor(raw / self.rounding + 1e-9)
        return (steps * self.rounding).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_lines": dict(self.base_lines),
            "size_indicators": {k: v.to_dict() for k, v in self.size_indicators.items()},
            "min_factor": self.min_factor,
            "max_factor": self.max_factor,
            "cap": self.cap,
            "rounding": self.rounding,
            "preauthorize_through": self.preauthorize_through,
            "refer_through": self.refer_through,
            "min_score": self.min_score,
            "currency": self.currency,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CreditLinePolicy:
        _reject_unknown(data, tuple(cls.__dataclass_fields__), "lines")
        return cls(**data)


# --- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreAuthorizationPolicy:
    """Score scaling, grade bands and credit-line rules, validated together."""

    scaling: ScoreScaling = field(default_factory=ScoreScaling)
    grades: GradeBands = field(default_factory=GradeBands)
    lines: CreditLinePolicy = field(default_factory=CreditLinePolicy)

    VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        for name, kind in (
            ("scaling", ScoreScaling),
            ("grades", GradeBands),
            ("lines", CreditLinePolicy),
        ):
            if not isinstance(getattr(self, name), kind):
                raise DataValidationError(name, f"expected a {kind.__name__}")
        labels = self.grades.labels
        missing = [g for g in labels if g not in self.lines.base_lines]
        if missing:
            raise DataValidationError(
                f"lines.base_lines.{missing[0]}", "no base line for this grade"
            )
        extra = [g for g in self.lines.base_lines if g not in labels]
        if extra:
            raise DataValidationError(
                f"lines.base_lines.{extra[0]}", f"not a grade; grades are {list(labels)}"
            )
        for name in ("preauthorize_through", "refer_through"):
            if getattr(self.lines, name) not in labels:
                raise DataValidationError(
                    f"lines.{name}",
                    f"{getattr(self.lines, name)!r} is not a grade; grades are {list(labels)}",
                )
        pre = labels.index(self.lines.preauthorize_through)
        if labels.index(self.lines.refer_through) < pre:
            raise DataValidationError(
                "lines.refer_through", "must be the pre-authorization grade or a worse one"
            )
        for g in labels[: pre + 1]:
            if self.lines.base_lines[g] <= 0:
                raise DataValidationError(
                    f"lines.base_lines.{g}", "a pre-authorized grade needs a positive line"
                )

    # --- deciding ---------------------------------------------------------------------------

    def decide(
        self,
        ids: Sequence[object],
        pd: Any,
        bank_features: pandas.DataFrame | None = None,
        reasons: Sequence[str] | None = None,
    ) -> pandas.DataFrame:
        """Score, grade, size and decide every candidate.

        ``bank_features``: the bank's size indicator columns; rows are matched through an
        ``id`` column if it has one, otherwise by position. ``reasons``: one reason-code text
        per enterprise (see :func:`reason_codes`). Returns the columns of
        :data:`DECISION_COLUMNS`, in the order of ``ids``. ``decision`` is ``pre-authorize``,
        ``refer`` (indicative line; a pre-authorized grade whose line rounds to 0 is also
        referred) or ``decline`` (line 0).
        """
        id_list = [str(i) for i in ids]
        n = len(id_list)
        if any(not i.strip() for i in id_list):
            raise DataValidationError("ids", "empty id")
        if len(set(id_list)) != n:
            counts = pandas.Series(id_list).value_counts()
            raise DuplicateIdentifierError("ids", counts[counts > 1].index.tolist())
        pds = _as_float_array(pd, "pd").reshape(-1)
        if pds.size != n:
            raise DataValidationError("pd", f"{pds.size} PDs for {n} ids")
        if reasons is None:
            reason_text = [""] * n
        else:
            reason_text = [str(r) for r in reasons]
            if len(reason_text) != n:
                raise DataValidationError("reasons", f"{len(reason_text)} reason texts for {n} ids")

        scores = np.asarray(self.scaling.pd_to_score(pds), dtype=np.float64).reshape(-1)
        grades = self.grades.assign(score=scores, pd=pds)
        factor = self.lines.size_factor(_rows_for(bank_features, id_list), n)
        lines = self.lines.line(grades, factor)

        rank = np.array([self.grades.labels.index(g) for g in grades], dtype=np.int64)
        pre_rank = self.grades.rank(self.lines.preauthorize_through)
        refer_rank = self.grades.rank(self.lines.refer_through)
        declined = rank > refer_rank
        if self.lines.min_score is not None:
            declined |= scores < self.lines.min_score
        preauth = (rank <= pre_rank) & ~declined & (lines > 0)
        decision = np.where(declined, DECLINE, np.where(preauth, PRE_AUTHORIZE, REFER))
        lines = np.where(declined, 0, lines)
        return pandas.DataFrame(
            {
                "id": pandas.Series(id_list, dtype=object),
                "pd": pds,
                "score": scores,
                "grade": pandas.Series(grades, dtype=object),
                "credit_line": lines.astype(np.int64),
                "decision": pandas.Series(decision, dtype=object),
                "reasons": pandas.Series(reason_text, dtype=object),
            },
            columns=list(DECISION_COLUMNS),
        )

    def whitelist(self, decisions: pd.DataFrame) -> pd.DataFrame:
        """The pre-authorized enterprises, best score first."""
        return whitelist(decisions)

    def export_whitelist(self, decisions: pd.DataFrame, path: str | os.PathLike[str]) -> int:
        """Write the whitelist as CSV (atomically); returns the number of rows written."""
        return export_whitelist(decisions, path)

    def summary(self, decisions: pd.DataFrame) -> dict[str, Any]:
        """Counts per grade and decision, pre-authorized count and total lines (JSON-ready)."""
        _check_decisions(decisions)
        grades = decisions["grade"].astype(object)
        unknown = sorted(set(grades) - set(self.grades.labels))
        if unknown:
            raise DataValidationError("grade", f"grades not in this policy: {unknown}")
        pre = decisions[decisions["decision"] == PRE_AUTHORIZE]
        return {
            "n": int(len(decisions)),
            "by_grade": {g: int((grades == g).sum()) for g in self.grades.labels},
            "by_decision": {d: int((decisions["decision"] == d).sum()) for d in DECISIONS},
            "pre_authorized": int(len(pre)),
            "pre_authorized_by_grade": {
                g: int((pre["grade"] == g).sum()) for g in self.grades.labels
            },
            "total_credit_line": int(pre["credit_line"].sum()),
            "credit_line_by_grade": {
                g: int(pre.loc[pre["grade"] == g, "credit_line"].sum()) for g in self.grades.labels
            },
            "currency": self.lines.currency,
        }

    # --- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.VERSION,
            "scaling": self.scaling.to_dict(),
            "grades": self.grades.to_dict(),
            "lines": self.lines.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreAuthorizationPolicy:
        """Build from a JSON object; omitted sections take their defaults, unknown keys fail."""
        _reject_unknown(data, ("version", "scaling", "grades", "lines"), "")
        if data.get("version", cls.VERSION) != cls.VERSION:
            raise DataValidationError("version", f"unsupported policy version {data['version']!r}")
        return cls(
            scaling=ScoreScaling.from_dict(data.get("scaling", {})),
            grades=GradeBands.from_dict(data.get("grades", {})),
            lines=CreditLinePolicy.from_dict(data.get("lines", {})),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        _atomic_write(
            Path(path), lambda f: json.dump(self.to_dict(), f, indent=2, ensure_ascii=False)
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PreAuthorizationPolicy:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataValidationError(str(path), "policy file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataValidationError(str(path), f"not valid JSON ({exc})") from None
        return cls.from_dict(data)


def _rows_for(bank_features: pd.DataFrame | None, ids: list[str]) -> pd.DataFrame | None:
    if bank_features is None:
        return None
    if not isinstance(bank_features, pd.DataFrame):
        raise DataValidationError("bank_features", "must be a DataFrame")
    if "id" not in bank_features.columns:
        if len(bank_features) != len(ids):
            raise DataValidationError(
                "bank_features", f"{len(bank_features)} rows for {len(ids)} ids and no 'id' column"
            )
        return bank_features.reset_index(drop=True)
    keyed = bank_features.assign(id=bank_features["id"].astype(str))
    dup = keyed["id"].duplicated()
    if dup.any():
        raise DuplicateIdentifierError("bank_features.id", keyed.loc[dup, "id"].unique().tolist())
    keyed = keyed.set_index("id")
    absent = [i for i in ids if i not in keyed.index]
    if absent:
        raise DataValidationError(
            "bank_features", f"no row for {len(absent)} candidate id(s), e.g. {absent[:3]}"
        )
    return keyed.loc[ids].reset_index(drop=True)


def _check_decisions(decisions: pd.DataFrame) -> None:
    if not isinstance(decisions, pd.DataFrame):
        raise DataValidationError("decisions", "must be the DataFrame returned by decide()")
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise DataValidationError(missing[0], "column missing from decisions")


def whitelist(decisions: pd.DataFrame) -> pd.DataFrame:
    """The pre-authorized rows of ``decisions`` (all columns but ``decision``), best score first."""
    _check_decisions(decisions)
    chosen = decisions[decisions["decision"] == PRE_AUTHORIZE]
    chosen = chosen.sort_values("score", ascending=False, kind="stable")
    return chosen[[c for c in DECISION_COLUMNS if c != "decision"]].reset_index(drop=True)


def export_whitelist(decisions: pd.DataFrame, path: str | os.PathLike[str]) -> int:
    """Write :func:`whitelist` as UTF-8 CSV via a temporary file, so a failed write leaves any
    previous file intact. Returns the number of enterprises written."""
    rows = whitelist(decisions)
    _atomic_write(Path(path), lambda f: rows.to_csv(f, index=False, lineterminator="\n"))
    return len(rows)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- reason codes -------------------------------------------------------------------------------


def _default_categories() -> tuple[str, ...]:
    from jointcredit.data.catalogue import CATEGORIES

    return CATEGORIES


def reason_codes(
    bank_contributions: pd.DataFrame | None,
    center_category_contributions: pd.DataFrame | None = None,
    top_k: int = 3,
    *,
    scale: Literal["points", "logit"] = "points",
    center_categories: Sequence[str] | None = (),
) -> list[str]:
    """Per enterprise, the inputs that pushed its score down most, worst first.

    ``bank_contributions``: one column per bank feature; ``center_category_contributions``: one
    column per credit-center *category* (e.g. ``judicial``, ``tax``); rows are enterprises in the
    same order in both. Values are contributions relative to a neutral reference (e.g. a
    scorecard's attribute points minus the feature's average, or beta_j * WOE_j), in score
    points (``scale="points"``: negative lowers the score) or in logit(PD) (``scale="logit"``:
    positive raises the PD). Only inputs that lowered the score are named, at most ``top_k``.

    Codes are ``bank:<feature>`` and ``center:<category>``, joined by ``;``. Center columns must
    be catalogue categories (``center_categories``: the allowed names, ``()`` for the built-in
    catalogue, ``None`` to skip the check), so no single center feature is ever named.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise DataValidationError("top_k", f"must be a positive integer, got {top_k!r}")
    if scale not in ("points", "logit"):
        raise DataValidationError("scale", f"must be 'points' or 'logit', got {scale!r}")
    parts: list[tuple[str, pd.DataFrame]] = []
    if bank_contributions is not None:
        parts.append(("bank", bank_contributions))
    if center_category_contributions is not None:
        allowed = _default_categories() if center_categories == () else center_categories
        if allowed is not None:
            unknown = [c for c in center_category_contributions.columns if c not in set(allowed)]
            if unknown:
                raise DataValidationError(
                    str(unknown[0]),
                    "not a credit-center category; reason codes name categories "
                    f"({', '.join(allowed)}), never single center features",
                )
        parts.append(("center", center_category_contributions))
    if not parts:
        raise DataValidationError("bank_contributions", "give bank and/or center contributions")
    lengths = {len(frame) for _, frame in parts}
    if len(lengths) != 1:
        raise DataValidationError(
            "center_category_contributions", "bank and center contributions differ in row count"
        )
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for prefix, frame in parts:
        if not isinstance(frame, pd.DataFrame):
            raise DataValidationError(f"{prefix}_contributions", "must be a DataFrame")
        for col in frame.columns:
            try:
                values = pd.to_numeric(frame[col], errors="raise").to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise DataValidationError(str(col), "contributions must be numeric") from None
            if not np.isfinite(values).all():
                raise DataValidationError(str(col), "NaN or infinite contribution")
            names.append(f"{prefix}:{col}")
            blocks.append(values)
    n = lengths.pop()
    if not names or n == 0:
        return [""] * n
    impact = np.column_stack(blocks)  # how much each input lowered the score
    if scale == "points":
        impact = -impact
    k = min(top_k, impact.shape[1])
    order = np.argsort(-impact, axis=1, kind="stable")[:, :k]
    hurt = np.take_along_axis(impact, order, axis=1) > 0
    name_arr = np.asarray(names, dtype=object)
    return [
        REASON_SEPARATOR.join(name_arr[row_order[row_hurt]])
        for row_order, row_hurt in zip(order, hurt, strict=True)
    ]


def sum_by_category(
    center_contributions: pd.DataFrame,
    category_of: Mapping[str, str] | Callable[[str], str] | None = None,
) -> pd.DataFrame:
    """Add the credit center's per-feature contributions up into per-category columns.

    Runs at the credit center, on its own side of the model, before anything is encrypted or
    ranked: only the category totals (or, better, only the resulting codes) should leave it.
    ``category_of`` maps a feature to its category (default: the built-in catalogue).
    """
    if category_of is None:
        from jointcredit.data.catalogue import category_of as lookup
    elif isinstance(category_of, Mapping):
        mapping = dict(category_of)

        def lookup(name: str) -> str:
            return mapping[name]
    else:
        lookup = category_of
    groups: dict[str, list[str]] = {}
    for col in center_contributions.columns:
        try:
            groups.setdefault(lookup(str(col)), []).append(col)
        except KeyError:
            raise DataValidationError(str(col), "feature has no catalogue category") from None
    return pd.DataFrame(
        {cat: center_contributions[cols].sum(axis=1).to_numpy() for cat, cols in groups.items()}
    )
