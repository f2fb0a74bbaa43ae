"""Stability of the credit center's features, computed at the center: protocol
``feature_stability``.

The bank wants to know whether the center's inputs to its model have drifted, but must never
see them. The center therefore computes :func:`~jointcredit.monitor.stability.population_stability`
of each of its own features between two of its monthly snapshots, **locally**, and sends the
bank only one number (and its band) per feature, plus the population sizes.

Population: ``"book"`` (default) is the bank's monitored book as the center knows it: the
enterprises with valid ``post_loan_monitoring`` consent for this bank now (see
:mod:`jointcredit.monitor.events`); ``"all"`` is every enterprise in both snapshots (the city).
The center refuses populations smaller than :attr:`CenterMonitor.min_population`, because an
index over a handful of enterprises says something about individuals. Special codes from the
catalogue and missing values get their own bins.

Protocol ``feature_stability`` (two round trips)::

    center -> bank  start     {}
    bank -> center  start.ok  {reference, current, bins, population}   month labels "YYYY-MM"
    center:         stability of every center feature over the population, locally; audit line
    center -> bank  result    {features, values, n_reference, n_current}
    bank -> center  result.ok {received}
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.errors import (
    DataValidationError,
    JointCreditError,
    MalformedMessageError,
    UnexpectedMessageError,
)
from jointcredit.monitor.events import MONITORING_PURPOSE, CenterMonitor, center_monitor
from jointcredit.monitor.stability import feature_stability, stability_band
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.session import ProtocolChannel
from jointcredit.scoring.audit import id_digest

__all__ = [
    "PROTOCOL",
    "FeatureStabilityBank",
    "FeatureStabilityCenter",
    "center_feature_stability",
]

PROTOCOL = "feature_stability"
POPULATIONS = ("book", "all")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_MAX_BINS = 50


def _month_label(value: Any, field: str) -> str:
    if isinstance(value, pd.Timestamp | pd.Period):
        value = str(pd.Period(value, freq="M"))
    if not isinstance(value, str) or not _MONTH.match(value):
        raise DataValidationError(field, f"must be a month 'YYYY-MM', got {value!r}")
    return value


def _special_codes(columns: list[str]) -> dict[str, tuple[float, ...]]:
    from jointcredit.data.catalogue import CENTER_CATALOGUE

    return {c: tuple(CENTER_CATALOGUE[c].special_codes) for c in columns if c in CENTER_CATALOGUE}


class FeatureStabilityCenter:
    """The center's half: computes the indices on its own snapshots, sends only the values."""

    protocol = PROTOCOL

    def __init__(self, center: CenterParty) -> None:
        self.center = center

    def run(self, channel: ProtocolChannel) -> dict[str, Any]:
        monitor = center_monitor(self.center)
        job = self._validate(channel.request("start", {}), monitor)
        reference = monitor.snapshots[job["reference"]]
        current = monitor.snapshots[job["current"]]
        ref, cur, population = self._population(monitor, reference, current, job["population"])
        features = [c for c in reference.columns if c != "id" and c in current.columns]
        table = feature_stability(
            ref, cur, features, bins=job["bins"], special_values=_special_codes(features)
        )
        monitor.log(
            "feature_stability_delivered",
            {
                "bank": monitor.bank_id,
                "purpose": MONITORING_PURPOSE,
                "reference": job["reference"],
                "current": job["current"],
                "population": job["population"],
                "n": int(len(population)),
                "population_digest": id_digest(population),
                "features": len(features),
            },
        )
        reply = channel.request(
            "result",
            {
                "features": table["feature"].tolist(),
                "values": [float(v) for v in table["stability"]],
                "n_reference": int(len(ref)),
                "n_current": int(len(cur)),
            },
        )
        if not isinstance(reply, dict) or reply.get("received") != len(table):
            raise MalformedMessageError(f"{PROTOCOL}: the bank did not acknowledge the result")
        return {"features": len(table), "n": int(len(population))}

    @staticmethod
    def _validate(payload: Any, monitor: CenterMonitor) -> dict[str, Any]:
        keys = {"reference", "current", "bins", "population"}
        if not isinstance(payload, dict) or set(payload) != keys:
            raise MalformedMessageError(f"{PROTOCOL}/start: expected exactly {sorted(keys)}")
        job = {
            "reference": _month_label(payload["reference"], "reference"),
            "current": _month_label(payload["current"], "current"),
            "bins": payload["bins"],
            "population": payload["population"],
        }
        for name in ("reference", "current"):
            if job[name] not in monitor.snapshots:
                raise DataValidationError(name, f"the center holds no snapshot for {job[name]}")
        bins = job["bins"]
        if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= _MAX_BINS:
            raise DataValidationError("bins", f"must be an integer in 2..{_MAX_BINS}: {bins!r}")
        if job["population"] not in POPULATIONS:
            raise DataValidationError("population", f"must be one of {POPULATIONS}")
        return job

    @staticmethod
    def _population(
        monitor: CenterMonitor, reference: pd.DataFrame, current: pd.DataFrame, population: str
    ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        ref = reference.assign(id=reference["id"].astype(str))
        cur = current.assign(id=current["id"].astype(str))
        common = sorted(set(ref["id"]) & set(cur["id"]))
        if population == "book":
            common = sorted(set(common) & set(monitor.consented_now()))
        if len(common) < monitor.min_population:
            raise DataValidationError(
                "population",
                f"{len(common)} enterprises; the center computes stability over at least "
                f"{monitor.min_population}",
            )
        keep = set(common)
        return ref[ref["id"].isin(keep)], cur[cur["id"].isin(keep)], common


class FeatureStabilityBank:
    """The bank's half: names two months, receives one index per center feature."""

    protocol = PROTOCOL

    def __init__(
        self,
        bank: BankParty,
        *,
        reference: Any,
        current: Any,
        bins: int = 10,
        population: str = "book",
    ) -> None:
        self.bank = bank
        self.reference = _month_label(reference, "reference")
        self.current = _month_label(current, "current")
        if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= _MAX_BINS:
            raise DataValidationError("bins", f"must be an integer in 2..{_MAX_BINS}: {bins!r}")
        if population not in POPULATIONS:
            raise DataValidationError("population", f"must be one of {POPULATIONS}")
        self.bins = bins
        self.population = population
        self.result: pd.DataFrame | None = None

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start":
            return {
                "reference": self.reference,
                "current": self.current,
                "bins": self.bins,
                "population": self.population,
            }
        if msg_type == "result":
            self.result = self._parse(payload)
            return {"received": int(len(self.result))}
        raise UnexpectedMessageError(f"{PROTOCOL}: unexpected message {msg_type!r}")

    @staticmethod
    def _parse(payload: Any) -> pd.DataFrame:
        keys = {"features", "values", "n_reference", "n_current"}
        if not isinstance(payload, dict) or set(payload) != keys:
            raise MalformedMessageError(f"{PROTOCOL}/result: expected exactly {sorted(keys)}")
        names, values = payload["features"], payload["values"]
        if not isinstance(names, list) or not isinstance(values, list) or len(names) != len(values):
            raise MalformedMessageError(f"{PROTOCOL}/result: features and values must pair up")
        if not all(isinstance(n, str) and n for n in names):
            raise MalformedMessageError(f"{PROTOCOL}/result: feature names must be text")
        if not all(
            isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in values
        ):
            raise MalformedMessageError(f"{PROTOCOL}/result: values must be finite and >= 0")
        for key in ("n_reference", "n_current"):
            n = payload[key]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise MalformedMessageError(f"{PROTOCOL}/result: {key} must be a positive count")
        return pd.DataFrame(
            {
                "feature": pd.Series(names, dtype=object),
                "stability": np.asarray(values, dtype=np.float64),
                "band": pd.Series([stability_band(float(v)) for v in values], dtype=object),
                "n_reference": payload["n_reference"],
                "n_current": payload["n_current"],
            }
        )


registry.register(
    PROTOCOL,
    center=FeatureStabilityCenter,
    bank=lambda bank, params: FeatureStabilityBank(bank, **params),
)


def center_feature_stability(
    session: Any, reference: Any, current: Any, *, bins: int = 10, population: str = "book"
) -> pd.DataFrame:
    """Run ``feature_stability``: one index per center feature, most unstable first."""
    side = FeatureStabilityBank(
        session.bank, reference=reference, current=current, bins=bins, population=population
    )
    session.run(side)
    if side.result is None:
        raise JointCreditError(f"{PROTOCOL}: the protocol ended without a result")
    return side.result
