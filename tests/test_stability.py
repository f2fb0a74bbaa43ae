"""Population stability: the index itself, its bands, and the center-side protocol."""

from __future__ import annotations

import math
import struct
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcredit.data.timeline import DRIFT_SCENARIO, make_sme_timeline
from jointcredit.errors import DataValidationError, UnexpectedMessageError
from jointcredit.monitor import (
    CenterMonitor,
    StabilityReference,
    attach_center_monitor,
    center_feature_stability,
    feature_stability,
    population_stability,
    stability_band,
    stability_reference,
    stability_table,
)
from jointcredit.protocol.envelope import Role
from jointcredit.scoring import AuditLog, ConsentRegistry
from jointcredit.session import JointSession

# --- the index ------------------------------------------------------------------------------


def test_identical_populations_are_perfectly_stable() -> None:
    x = np.random.default_rng(0).normal(size=2000)
    assert population_stability(x, x.copy()) == 0.0


def test_matches_the_formula_on_given_cut_points() -> None:
    expected = np.array([1, 1, 2, 2, 3, 3, 4, 4], dtype=float)  # 25 % per bin
    actual = np.array([1, 2, 2, 3, 3, 3, 4, 4], dtype=float)  # 12.5, 25, 37.5, 25 %
    e = np.array([0.25, 0.25, 0.25, 0.25])
    a = np.array([0.125, 0.25, 0.375, 0.25])
    want = float(np.sum((a - e) * np.log(a / e)))
    assert population_stability(expected, actual, bins=[1.5, 2.5, 3.5]) == pytest.approx(want)
    # Right-closed bins: a value equal to a cut point belongs to the lower bin.
    assert population_stability(expected, actual, bins=[1, 2, 3]) == pytest.approx(want)


def test_quantile_bins_detect_a_shift_and_grow_with_it() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=20_000)
    small = population_stability(ref, rng.normal(0.1, 1, 20_000))
    large = population_stability(ref, rng.normal(0.6, 1, 20_000))
    assert small < 0.1 < large
    assert stability_band(small) == "stable"


def test_missing_values_and_special_codes_have_their_own_bins() -> None:
    ref = np.array([np.nan] * 10 + [-1.0] * 10 + list(np.linspace(0, 1, 80)))
    more_missing = np.array([np.nan] * 40 + [-1.0] * 10 + list(np.linspace(0, 1, 50)))
    # Same regular values in the same proportions among themselves would hide this shift if
    # NaN were dropped; with its own bin, it shows.
    assert population_stability(ref, more_missing, special_values=[-1.0]) > 0.25
    table = stability_table(ref, more_missing, special_values=[-1.0])
    assert list(table["bin"][-2:]) == ["=-1", "NaN"]
    assert table["expected_share"].iloc[-1] == pytest.approx(0.1)
    assert table["actual_share"].iloc[-1] == pytest.approx(0.4)
    # Special code -1 is not mixed with the measurements 0..1 in the regular bins.
    assert table["expected_share"].iloc[-2] == pytest.approx(0.1)


def test_bands_follow_the_documented_limits() -> None:
    assert stability_band(0.0) == "stable"
    assert stability_band(0.0999) == "stable"
    assert stability_band(0.1) == "monitor"
    assert stability_band(0.25) == "monitor"
    assert stability_band(0.2501) == "redevelop"
    for bad in (-0.1, math.nan, math.inf, "0.2", True):
        with pytest.raises(DataValidationError) as err:
            stability_band(bad)  # type: ignore[arg-type]
        assert err.value.field == "value"


@pytest.mark.parametrize(
    ("expected", "actual", "kwargs", "field"),
    [
        ([], [1.0], {}, "expected"),
        ([1.0], [], {}, "actual"),
        ([1.0, np.inf], [1.0], {}, "expected"),
        (np.ones((3, 2)), [1.0], {}, "expected"),
        (["a", "b"], [1.0], {}, "expected"),
        ([1.0, 2.0], [1.0], {"bins": 1}, "bins"),
        ([1.0, 2.0], [1.0], {"bins": [2.0, 1.0]}, "bins"),
        ([1.0, 2.0], [1.0], {"bins": [np.nan]}, "bins"),
        ([1.0, 2.0], [1.0], {"special_values": [np.nan]}, "special_values[0]"),
        ([1.0, 2.0], [1.0], {"eps": 0.0}, "eps"),
    ],
)
def test_bad_input_is_rejected_naming_the_field(expected, actual, kwargs, field) -> None:
    with pytest.raises(DataValidationError) as err:
        population_stability(expected, actual, **kwargs)
    assert err.value.field == field


def test_reference_keeps_only_edges_and_shares_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    ref_values, cur = rng.gamma(2.0, size=5000), rng.gamma(2.4, size=3000)
    reference = stability_reference(ref_values, 10)
    again = StabilityReference.from_dict(reference.to_dict())
    assert again == reference
    assert again.compare(cur) == pytest.approx(population_stability(ref_values, cur))
    assert set(reference.to_dict()) == {"edges", "special_values", "shares", "n"}
    with pytest.raises(DataValidationError) as err:
        StabilityReference.from_dict({**reference.to_dict(), "values": [1.0]})
    assert err.value.field == "values"
    with pytest.raises(DataValidationError) as err:
        StabilityReference(edges=(1.0,), special_values=(), shares=(0.5, 0.4, 0.0), n=3)
    assert err.value.field == "shares"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.integers(2, 12),
)
def test_index_is_nonnegative_and_the_sum_of_its_table(expected, actual, bins) -> None:
    value = population_stability(expected, actual, bins)
    assert value >= 0.0
    table = stability_table(expected, actual, bins)
    assert table["contribution"].sum() == pytest.approx(value, abs=1e-12)
    assert table["expected_share"].sum() == pytest.approx(1.0)
    assert table["actual_share"].sum() == pytest.approx(1.0)


# --- the time-drift scenario: stability flags the drifted month -------------------------------


@pytest.fixture(scope="module")
def timeline():
    return make_sme_timeline(n_enterprises=3000, n_bank_customers=1500)


def test_feature_stability_flags_the_drift_month_and_not_the_stable_ones(timeline) -> None:
    drift = DRIFT_SCENARIO["drift_month"]
    assert timeline.drift_month == drift
    for party in ("bank", "center"):
        frame = getattr(timeline, f"{party}_frame")
        worst = []
        for m in range(1, timeline.n_months):
            table = feature_stability(frame(m - 1), frame(m))
            worst.append(float(table["stability"].max()))
        flagged = [m for m, v in enumerate(worst, start=1) if v >= 0.1]
        assert flagged == [drift], (party, worst)
        # Against month 0, every month from the drift on stays shifted; none before it is.
        base = [feature_stability(frame(0), frame(m))["stability"].max() for m in range(1, 12)]
        assert all((v >= 0.1) == (m >= drift) for m, v in enumerate(base, start=1)), base


def test_without_drift_every_month_is_stable() -> None:
    calm = make_sme_timeline(drift_month=None, n_enterprises=3000, n_bank_customers=1500)
    for m in range(1, calm.n_months):
        for frame in (calm.center_frame, calm.bank_frame):
            assert feature_stability(frame(m - 1), frame(m))["stability"].max() < 0.1
    for m in (6, 11):
        assert (
            feature_stability(calm.center_frame(0), calm.center_frame(m))["stability"].max() < 0.1
        )
        bank = feature_stability(calm.bank_frame(0), calm.bank_frame(m))
        # A closed book ages: account age grows by one month per month, the only feature that
        # moves against month 0 without any drift (documented in docs/lifecycle.md).
        moved = bank.loc[bank["stability"] >= 0.1, "feature"].tolist()
        assert moved in ([], ["account_age_months"])
        assert bank.loc[bank["feature"] != "account_age_months", "stability"].max() < 0.1


# --- protocol ``feature_stability``: computed at the center, only values shared ---------------

BANK = "bank-a"
SENTINEL = 734_519.0625  # exactly representable in float32 too


def _monitor_session(timeline, tmp_path, *, consent_ids=None, min_population=50):
    session = JointSession.in_process(
        timeline.bank_table(0), timeline.center_table(0), keep_bytes=True
    )
    session.align()
    consents = ConsentRegistry()
    ids = list(session.aligned_ids) if consent_ids is None else consent_ids
    for e in ids:
        consents.grant(e, BANK, "monitoring", "2025-01-01", "2026-12-31")
    labels = [str(d.to_period("M")) for d in timeline.month_dates]
    snapshots = {label: timeline.center_frame(m) for m, label in enumerate(labels)}
    # A value that exists only at the center: it must never appear in a message.
    snap = snapshots[labels[8]]
    snapshots[labels[8]] = snap.assign(
        enforcement_amount_3y_10k=np.where(
            snap.index == 7, SENTINEL, snap["enforcement_amount_3y_10k"]
        )
    )
    audit = AuditLog(tmp_path / "audit.jsonl")
    monitor = CenterMonitor(
        bank_id=BANK,
        consents=consents,
        snapshots=snapshots,
        audit=audit,
        clock=lambda: datetime(2025, 12, 31, 12),
        min_population=min_population,
    )
    attach_center_monitor(session.center, monitor)
    return session, labels, audit


def _encodings(value: float) -> list[bytes]:
    return [
        struct.pack("<d", value),
        struct.pack(">d", value),
        struct.pack("<f", value),
        struct.pack(">f", value),
        repr(value).encode(),
        str(int(value)).encode(),
        int(value * 2**16).to_bytes(8, "little", signed=True),
        int(value * 2**16).to_bytes(8, "big", signed=True),
    ]


def test_center_feature_stability_protocol(timeline, tmp_path) -> None:
    session, labels, audit = _monitor_session(timeline, tmp_path)
    drift = timeline.drift_month
    result = center_feature_stability(session, labels[drift - 1], labels[drift])
    assert result["band"].iloc[0] != "stable"
    stable = center_feature_stability(session, labels[1], labels[2])
    assert (stable["band"] == "stable").all()

    # The values equal what the center computes locally on the consented book.
    book = set(session.aligned_ids)
    ref = timeline.center_frame(drift - 1)
    cur = timeline.center_frame(drift)
    local = feature_stability(ref[ref["id"].isin(book)], cur[cur["id"].isin(book)])
    merged = result.merge(local, on="feature", suffixes=("", "_local"))
    assert len(merged) == len(local) == len(ref.columns) - 1
    # (the center uses catalogue special codes, so compare the features without any)
    from jointcredit.data.catalogue import CENTER_CATALOGUE

    plain = [f for f in merged["feature"] if not CENTER_CATALOGUE[f].special_codes]
    sub = merged.set_index("feature").loc[plain]
    np.testing.assert_allclose(sub["stability"], sub["stability_local"], rtol=1e-12)

    # Transcript audit: the center sent names, index values and counts, nothing else.
    center_msgs = session.transcript.payloads(Role.CENTER, "feature_stability")
    blob = b"".join(center_msgs)
    for enc in _encodings(SENTINEL):
        assert enc not in blob
    for e in list(session.aligned_ids)[:200]:
        assert e.encode() not in blob
    assert session.transcript.round_trips_of("feature_stability") == 4  # 2 runs x 2
    actions = [entry.action for entry in audit.entries()]
    assert actions.count("feature_stability_delivered") == 2
    assert audit.verify()


def test_sentinel_month_is_computed_but_never_sent(timeline, tmp_path) -> None:
    session, labels, _ = _monitor_session(timeline, tmp_path)
    mark = session.transcript.mark()
    center_feature_stability(session, labels[7], labels[8])
    part = session.transcript.since(mark)
    blob = b"".join(part.payloads(Role.CENTER, "feature_stability"))
    for enc in _encodings(SENTINEL):
        assert enc not in blob


def test_center_refuses_small_populations_and_unknown_months(timeline, tmp_path) -> None:
    # The center half raises at the center (a deployment reports the failed step to the bank).
    session, labels, audit = _monitor_session(timeline, tmp_path, consent_ids=[])
    with pytest.raises(DataValidationError) as err:
        center_feature_stability(session, labels[0], labels[1])
    assert err.value.field == "population"
    assert "feature_stability_delivered" not in [e.action for e in audit.entries()]
    # The whole city is a large enough population without any consent.
    assert len(center_feature_stability(session, labels[0], labels[1], population="all")) > 0
    with pytest.raises(DataValidationError) as err:
        center_feature_stability(session, "2030-01", labels[1])
    assert err.value.field == "reference"
    # The bank's half checks its own request before sending anything.
    mark = session.transcript.mark()
    with pytest.raises(DataValidationError) as err:
        center_feature_stability(session, "2025-13", labels[1])
    assert err.value.field == "reference"
    with pytest.raises(DataValidationError) as err:
        center_feature_stability(session, labels[0], labels[1], bins=1)
    assert err.value.field == "bins"
    assert session.transcript.mark() == mark


def test_center_without_monitoring_configured_refuses(timeline) -> None:
    session = JointSession.in_process(timeline.bank_table(0), timeline.center_table(0))
    session.align()
    with pytest.raises(UnexpectedMessageError) as err:
        center_feature_stability(session, "2025-01", "2025-02")
    assert "not configured" in str(err.value)


def test_feature_stability_input_checks() -> None:
    a = pd.DataFrame({"id": ["x", "y"], "f": [1.0, 2.0]})
    with pytest.raises(DataValidationError) as err:
        feature_stability(a, a.drop(columns="f"))
    assert err.value.field == "f"
    with pytest.raises(DataValidationError) as err:
        feature_stability(a, [1, 2])  # type: ignore[arg-type]
    assert err.value.field == "current"
