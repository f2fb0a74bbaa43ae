"""SecureBoost: packing, lossless encrypted == reference trees, routing, privacy, rejections."""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcredit.data import load_party_table
from jointcredit.errors import (
    DataValidationError,
    EncodingOverflowError,
    KeyPolicyError,
    NotFittedError,
    ProtocolError,
    RemotePartyError,
    UnexpectedMessageError,
)
from jointcredit.learn import _hist
from jointcredit.learn._hist import GHPacking, HistogramEngine
from jointcredit.learn.boosting import (
    PROTOCOL,
    BankBoostModel,
    HeteroSecureBoost,
    SecureBoostBank,
    SecureBoostCenter,
    load_center_part,
    save_center_part,
)
from jointcredit.protocol import registry
from jointcredit.protocol.envelope import Role
from jointcredit.session import JointSession

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "default_credit"
CENTER_SENTINELS = [7391.204861, -5128.771133, 6620.318457]


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


def make_tables(n: int = 2000, seed: int = 0):
    """Bank: 3 features + label; center: 4 stronger features, one with missing values and one
    with planted sentinel values (to audit that raw center values never reach the bank)."""
    rng = np.random.default_rng(seed)
    ids = [f"E{i:06d}" for i in range(n)]
    xc = rng.normal(size=(n, 4))
    xb = rng.normal(size=(n, 3))
    xc[rng.random(n) < 0.15, 1] = np.nan
    logit = (
        1.4 * xc[:, 0]
        - np.nan_to_num(xc[:, 1], nan=1.0)
        + 0.8 * xb[:, 0]
        + 0.6 * (xc[:, 2] > 0)
        - 1
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    xc[:3, 3] = CENTER_SENTINELS
    bank = pd.DataFrame({"id": ids, "y": y, **{f"b{j}": xb[:, j] for j in range(3)}})
    center = pd.DataFrame({"id": ids, **{f"c{j}": xc[:, j] for j in range(4)}})
    return (
        load_party_table(bank, id_kind="plain", label_col="y"),
        load_party_table(center, id_kind="plain"),
    )


def open_session(tables, *, keep_bytes: bool = False) -> JointSession:
    bank, center = tables
    session = JointSession.in_process(bank, center, keep_bytes=keep_bytes)
    # Both tables hold the same ids in the same order; PSI is tested in its own module.
    session.bank.aligned_ids = bank.ids.copy()
    session.center.aligned_ids = center.ids.copy()
    return session


@pytest.fixture
def seeded_center(monkeypatch):
    """The center's private randomness (shuffles, column sampling) fixed for comparisons."""
    monkeypatch.setitem(
        registry._CENTER, PROTOCOL, lambda center: SecureBoostCenter(center, seed=7)
    )


SMALL = dict(n_estimators=3, max_depth=3, max_bin=16, learning_rate=0.3, min_child_samples=10)


@pytest.fixture(scope="module")
def paillier_keys():
    from jointcredit.crypto.paillier import generate_paillier_keypair

    return generate_paillier_keypair(2048)


# --------------------------------------------------------------------------------------------
# packing of (g, h)
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-1.0, 1.0, allow_nan=False),
            st.floats(0.0, 0.25, allow_nan=False),
            st.booleans(),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(8, 24),
)
def test_packed_sums_round_trip_including_negative_gradients(rows, frac_bits):
    g = np.array([r[0] for r in rows])
    h = np.array([r[1] for r in rows])
    pick = np.array([r[2] for r in rows])
    packing = GHPacking(frac_bits, 1.0, 0.25, max_terms=len(rows))
    gq, hq = packing.quantize(g, h)
    packed = packing.pack(gq, hq)
    subset_sum = sum(v for v, p in zip(packed, pick, strict=True) if p)
    G, H = packing.unpack_sums([subset_sum, sum(packed)], [int(pick.sum()), len(rows)])
    assert G.tolist() == [int(gq[pick].sum()), int(gq.sum())]
    assert H.tolist() == [int(hq[pick].sum()), int(hq.sum())]
    # fixed-point error per sample is at most half a unit
    assert np.all(np.abs(gq / packing.scale - g) <= 0.5 / packing.scale + 1e-15)


def test_worst_case_sums_fit_their_slots():
    n = 21_000
    packing = GHPacking(16, 1.0, 0.25, max_terms=n)
    for g in (-1.0, 1.0):
        gq, hq = packing.quantize(np.full(n, g), np.full(n, 0.25))
        total = sum(packing.pack(gq, hq))
        assert total.bit_length() <= packing.slot_bits
        G, H = packing.unpack_sums([total], [n])
        assert G[0] == n * round(g * 2**16) and H[0] == n * 2**14


def test_packing_refuses_values_and_counts_outside_the_bound():
    packing = GHPacking(16, 1.0, 0.25, max_terms=4)
    with pytest.raises(EncodingOverflowError, match="g"):
        packing.quantize(np.array([1.5]), np.array([0.1]))
    with pytest.raises(EncodingOverflowError, match="hessian"):
        packing.quantize(np.array([0.5]), np.array([-0.1]))
    with pytest.raises(EncodingOverflowError, match="NaN"):
        packing.quantize(np.array([np.nan]), np.array([0.1]))
    gq, hq = packing.quantize(np.zeros(5), np.zeros(5))
    with pytest.raises(EncodingOverflowError, match="5 samples"):
        packing.pack(gq, hq)
    with pytest.raises(EncodingOverflowError):
        packing.unpack_sums([0], [5])
    # a g slot larger than the count allows means a corrupted or forged sum
    with pytest.raises(EncodingOverflowError):
        packing.unpack_sums([(3 * packing.offset) << packing.h_bits], [1])


def test_packed_gradients_survive_paillier_sums_and_compression(paillier_keys):
    from jointcredit.crypto.paillier import FastEncryptor, decompress_ints

    pub, priv = paillier_keys
    rng = np.random.default_rng(3)
    g = rng.uniform(-1, 1, 200)
    h = rng.uniform(0, 0.25, 200)
    packing = GHPacking(16, 1.0, 0.25, max_terms=200)
    gq, hq = packing.quantize(g, h)
    with FastEncryptor(pub, n_jobs=1) as enc:
        cts = enc.encrypt_ints(packing.pack(gq, hq))
    groups = [np.arange(0, 70), np.arange(70, 200), np.arange(200)]
    sums = [
        _hist.bin_sums(cts, idx, np.zeros(idx.size, np.int64), 1, -1, pub.nsquare)[0]
        for idx in groups
    ]
    per = (pub.n_bits - 2) // packing.slot_bits
    packed = _hist.compress_records(sums, packing.slot_bits, per, pub.nsquare)
    records = decompress_ints(priv, packed, packing.slot_bits, len(sums))
    G, H = packing.unpack_sums(records, [idx.size for idx in groups])
    assert G.tolist() == [int(gq[idx].sum()) for idx in groups]
    assert H.tolist() == [int(hq[idx].sum()) for idx in groups]


# --------------------------------------------------------------------------------------------
# the center's histogram engine: processes == in-process, Paillier == plain
# --------------------------------------------------------------------------------------------


def test_histogram_engine_workers_match_in_process(paillier_keys):
    pub, priv = paillier_keys
    rng = np.random.default_rng(5)
    n, f = 300, 3
    values = rng.integers(0, 2**40, n).tolist()
    bins = rng.integers(0, 5, size=(n, f)).astype(np.int16)
    nodes = [np.arange(n), np.sort(rng.choice(n, 120, replace=False))]
    n_slots = np.full(f, 5)
    skips = [np.array([-1, 2, -1]), np.full(f, -1)]
    from jointcredit.crypto.paillier import FastEncryptor

    with FastEncryptor(pub, n_jobs=1) as enc:
        cts = enc.encrypt_ints(values)
    blob = pub.ciphertexts_to_bytes(cts)
    results = []
    for jobs in (1, 2):
        with HistogramEngine(jobs, pub.nsquare) as engine:
            engine.load_tree(cts, blob, pub.ciphertext_width, bins)
            built = engine.build(nodes, n_slots, skips)
            packed = engine.compress([built[0][0], built[1][1]], 48, 40)
        results.append((built, packed))
    assert results[0] == results[1]
    built = results[0][0]
    assert built[0][1][2] is None  # skipped bin left for the caller to derive
    for node, pos in enumerate(nodes):
        for j in range(f):
            for b in range(5):
                ct = built[node][j][b]
                if ct is None:
                    continue
                expected = sum(values[i] for i in pos if bins[i, j] == b)
                assert priv.raw_decrypt(ct) == expected


# --------------------------------------------------------------------------------------------
# lossless: the encrypted run builds exactly the reference-mode trees
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"subsample": 0.7, "colsample_bytree": 0.75, "bank_only_trees": 1, "reg_lambda": 2.0},
        {"speculative_gradients": True, "subsample": 0.8, "n_estimators": 4},
    ],
    ids=["default", "sampled", "speculative"],
)
def test_encrypted_trees_equal_reference_mode(seeded_center, extra):
    _assert_backend_equals_reference("paillier", extra)


def test_ou_backend_trees_equal_reference_mode(seeded_center):
    _assert_backend_equals_reference("ou", {})


def _assert_backend_equals_reference(encrypted: str, extra: dict) -> None:
    fits = {}
    for backend in ("plain", encrypted):
        session = open_session(make_tables())
        model = HeteroSecureBoost(**{**SMALL, **extra}, backend=backend, random_state=11)
        model.fit(session, np.arange(1500))
        fits[backend] = (model, session.center.model_parts[model.model_id_])
    (plain, plain_center), (enc, enc_center) = fits["plain"], fits[encrypted]
    assert enc.n_estimators_ == plain.n_estimators_ == extra.get("n_estimators", 3)
    kinds = []
    for t_plain, t_enc in zip(plain.model_.trees, enc.model_.trees, strict=True):
        assert t_plain.keys() == t_enc.keys()
        for k in t_plain:
            a, b = t_plain[k], t_enc[k]
            kinds.append(a["kind"])
            if a["kind"] == "leaf":
                # float sums at the bank: equal up to fixed-point error (here: identical)
                assert b["kind"] == "leaf" and math.isclose(a["value"], b["value"], abs_tol=1e-9)
            else:
                assert a == b  # same kind, bank feature, threshold, missing direction
    assert plain_center.trees == enc_center.trees  # same center features and bins (thresholds)
    assert "center" in kinds and "bank" in kinds and "leaf" in kinds
    np.testing.assert_allclose(plain.train_raw_scores_, enc.train_raw_scores_, atol=1e-9)


# --------------------------------------------------------------------------------------------
# routing for evaluation, round trips, persistence
# --------------------------------------------------------------------------------------------


def test_prediction_routing_reproduces_training_scores_and_counts_round_trips():
    session = open_session(make_tables())
    model = HeteroSecureBoost(**SMALL, backend="plain", random_state=1).fit(
        session, np.arange(1600)
    )
    raw = model.decision_function(session, model.train_rows_)
    np.testing.assert_allclose(raw, model.train_raw_scores_, rtol=0, atol=1e-12)
    proba = model.predict_proba(session, np.arange(1600, 2000))
    assert proba.shape == (400, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    from jointcredit.report.metrics import auc

    assert auc(session.bank.aligned_labels(np.arange(1600, 2000)), proba[:, 1]) > 0.75
    # one start + per tree: one message per level (+ a finish when the last level's center
    # splits must be returned); never more than depth + 1 per tree
    trips = model.round_trips_
    levels = sum(
        1
        for e in session.transcript.entries
        if e.protocol == PROTOCOL and e.msg_type == "level" and e.sender is Role.CENTER
    )
    finishes = sum(
        1
        for e in session.transcript.entries
        if e.protocol == PROTOCOL and e.msg_type == "finish" and e.sender is Role.CENTER
    )
    assert trips == 1 + levels + finishes
    assert levels == SMALL["n_estimators"] * SMALL["max_depth"]
    assert trips <= 1 + SMALL["n_estimators"] * (SMALL["max_depth"] + 1)
    assert session.transcript.round_trips_of("secureboost_predict") == 4  # two predictions


def _count(session, msg_type):
    return sum(
        1
        for e in session.transcript.entries
        if e.protocol == PROTOCOL and e.msg_type == msg_type and e.sender is Role.CENTER
    )


@pytest.mark.parametrize("early_stopping", [False, True])
def test_speculative_gradients_save_round_trips_and_build_the_same_model(early_stopping):
    params = dict(n_estimators=8, max_depth=2, max_bin=16, min_child_samples=10, backend="plain")
    if early_stopping:
        params.update(learning_rate=1.0, validation_fraction=0.3, early_stopping_rounds=1)
    fits = {}
    for speculative in (False, True):
        session = open_session(make_tables(n=1500, seed=8))
        model = HeteroSecureBoost(**params, speculative_gradients=speculative, random_state=4)
        fits[speculative] = (model.fit(session), session)
    (base, s_base), (spec, s_spec) = fits[False], fits[True]
    assert spec.model_.trees == base.model_.trees
    assert spec.evals_result_ == base.evals_result_
    np.testing.assert_array_equal(spec.train_raw_scores_, base.train_raw_scores_)
    np.testing.assert_array_equal(
        spec.decision_function(s_spec, np.arange(1500)),
        base.decision_function(s_base, np.arange(1500)),
    )
    assert _count(s_base, "finish") >= 2  # center splits on last levels cost extra trips...
    assert _count(s_spec, "finish") <= 1  # ...except on the very last tree
    assert spec.round_trips_ < base.round_trips_
    if early_stopping:
        assert spec.n_estimators_ < 8


def test_model_parts_are_saved_separately(tmp_path):
    session = open_session(make_tables())
    model = HeteroSecureBoost(**SMALL, backend="plain", random_state=2).fit(
        session, np.arange(1500)
    )
    before = model.decision_function(session, np.arange(1500, 2000))
    bank_file = model.save(tmp_path / "bank")
    center_file = save_center_part(session.center, model.model_id_, tmp_path / "center.json")
    part = session.center.model_parts[model.model_id_]
    thresholds = [
        n["threshold"] for s in part.trees.values() for n in s.values() if n["kind"] == "center"
    ]
    assert thresholds
    text = bank_file.read_text()
    for thr in thresholds:
        assert repr(thr) not in text and f"{thr:.6f}" not in text
    assert not any(f'"c{j}"' in text for j in range(4))  # no center feature names either
    # fresh parties: load both parts and score again
    session2 = open_session(make_tables())
    assert load_center_part(session2.center, center_file) == model.model_id_
    loaded = HeteroSecureBoost.load(tmp_path / "bank")
    np.testing.assert_allclose(loaded.decision_function(session2, np.arange(1500, 2000)), before)
    with pytest.raises(NotFittedError):
        HeteroSecureBoost().predict_proba(session2)


def test_early_stopping_on_bank_held_validation_truncates_both_parts():
    session = open_session(make_tables(n=1500, seed=4))
    model = HeteroSecureBoost(
        n_estimators=40,
        max_depth=3,
        learning_rate=1.0,
        max_bin=16,
        min_child_samples=5,
        validation_fraction=0.3,
        early_stopping_rounds=2,
        backend="plain",
        random_state=3,
    ).fit(session)
    losses = model.evals_result_["valid_logloss"]
    assert model.n_estimators_ == model.best_iteration_ + 1 < 40
    assert losses[model.best_iteration_] == min(losses)
    assert len(losses) == model.best_iteration_ + 3  # stopped two rounds after the best
    part = session.center.model_parts[model.model_id_]
    assert max(part.trees) < model.n_estimators_
    assert model.valid_rows_.size == pytest.approx(0.3 * 1500, abs=2)


def test_goss_warns_about_label_leakage_and_trains():
    session = open_session(make_tables())
    with pytest.warns(UserWarning, match="GOSS"):
        model = HeteroSecureBoost(**SMALL, sampling="goss", backend="plain").fit(session)
    assert model.n_estimators_ == SMALL["n_estimators"]


def test_synthetic_sme_data_with_psi_alignment():
    from jointcredit.data import LABEL_COL, make_sme_data

    data = make_sme_data(n_enterprises=3000, n_bank_customers=2500, seed=3)
    bank = load_party_table(data.bank, label_col=LABEL_COL)
    center = load_party_table(data.center)
    session = JointSession.in_process(bank, center)
    aligned = session.align()
    model = HeteroSecureBoost(n_estimators=5, max_depth=3, backend="plain", random_state=0)
    model.fit(session, np.arange(int(0.7 * aligned.size)))
    p = model.predict_proba(session)[:, 1]
    assert p.shape == (aligned.size,) and np.all((p > 0) & (p < 1))
    assert any(n["kind"] == "center" for t in model.model_.trees for n in t.values())


# --------------------------------------------------------------------------------------------
# privacy audit of the transcript
# --------------------------------------------------------------------------------------------


def _encodings(value: float) -> list[bytes]:
    out = [struct.pack("<d", value), struct.pack(">d", value), repr(value).encode()]
    out += [f"{value:.6f}".encode()]
    if np.isfinite(np.float32(value)) and value != 0:
        out += [struct.pack("<f", value), struct.pack(">f", value)]
    return out


def _int_encodings(value: int) -> list[bytes]:
    width = max(8, (value.bit_length() + 7) // 8)
    return [value.to_bytes(width, "big"), value.to_bytes(width, "little")]


def _found(patterns: list[bytes], payloads: list[bytes]) -> list[bytes]:
    return [p for p in patterns if any(p in blob for blob in payloads)]


def _audit_run(backend: str):
    tables = make_tables()
    session = open_session(tables, keep_bytes=True)
    model = HeteroSecureBoost(**SMALL, backend=backend, random_state=5).fit(
        session, np.arange(1500)
    )
    model.predict_proba(session, np.arange(1500, 2000))
    bank_table, center_table = tables
    to_bank = session.transcript.payloads(Role.CENTER)
    to_center = session.transcript.payloads(Role.BANK)
    # what the bank must never see: raw center values (incl. planted sentinels), thresholds
    center_patterns = []
    for v in CENTER_SENTINELS + center_table.X.iloc[3:8, 0].tolist():
        center_patterns += _encodings(float(v))
    part = session.center.model_parts[model.model_id_]
    for nodes in part.trees.values():
        for node in nodes.values():
            if node["kind"] == "center" and np.isfinite(node["threshold"]):
                center_patterns += _encodings(node["threshold"])
    col = center_table.X["c3"].to_numpy()
    center_patterns += [col.astype("<f8").tobytes()[:64], col.astype("<f4").tobytes()[:32]]
    # what the center must never see in the clear: labels, gradients, packed fixed-point ints
    y = bank_table.y[:1500].astype(np.float64)
    p0 = y.mean()
    g0 = p0 - y
    h0 = np.full_like(g0, p0 * (1 - p0))
    packing = GHPacking(16, 1.0, 0.25, max_terms=1500)
    gq, hq = packing.quantize(g0, h0)
    packed = packing.pack(gq, hq)
    label_patterns = [
        bank_table.y[:1500].astype(np.int8).tobytes()[:64],
        bank_table.y[:1500].astype(np.int64).tobytes()[:64],
        y.tobytes()[:64],
        g0.tobytes()[:64],
        g0.astype(np.float32).tobytes()[:32],
    ]
    for v in sorted(set(g0.tolist())) + [float(h0[0])]:
        label_patterns += _encodings(v)[:4]
    fixed_point = [b for v in sorted(set(packed))[:2] for b in _int_encodings(int(v))]
    leaves = [n["value"] for t in model.model_.trees for n in t.values() if n["kind"] == "leaf"]
    leaf_patterns = [b for v in leaves[:6] for b in _encodings(v)[:3]]
    return to_bank, to_center, center_patterns, label_patterns, fixed_point, leaf_patterns


@pytest.mark.parametrize("backend", ["paillier", "ou"])
def test_transcript_audit_encrypted_run_leaks_nothing_planted(backend):
    to_bank, to_center, center_p, label_p, fixed_p, leaf_p = _audit_run(backend)
    assert to_bank and to_center
    assert _found(center_p, to_bank) == []  # center features / thresholds never reach the bank
    assert _found(label_p, to_center) == []  # labels and gradients never reach the center
    assert _found(fixed_p, to_center) == []  # nor their fixed-point encodings
    assert _found(leaf_p, to_center) == []  # leaf values stay at the bank


def test_transcript_audit_detects_the_plain_reference_mode():
    # the same audit flags the reference mode, which sends packed gradients in the clear:
    # evidence that the encrypted run's clean bill is not a blind detector
    _, to_center, _, _, fixed_p, _ = _audit_run("plain")
    assert _found(fixed_p, to_center)


# --------------------------------------------------------------------------------------------
# rejections
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["paillier", "ou"])
def test_key_below_2048_bits_is_refused_before_any_message(backend):
    session = open_session(make_tables())
    with pytest.raises(KeyPolicyError, match="2048"):
        HeteroSecureBoost(**SMALL, key_bits=1024, backend=backend).fit(session)
    assert session.transcript.round_trips_of(PROTOCOL) == 0


def test_center_refuses_a_small_public_key_from_the_bank():
    from phe import paillier as phe_paillier

    small_pub, _ = phe_paillier.generate_paillier_keypair(n_length=1024)
    n_bytes = small_pub.n.to_bytes(128, "big")

    class WeakKeyBank(SecureBoostBank):
        def _start(self):
            reply = super()._start()
            reply["public_key"] = b"JCPK\x01" + struct.pack(">H", len(n_bytes)) + n_bytes
            return reply

    session = open_session(make_tables())
    side = WeakKeyBank(session.bank, **SMALL, backend="paillier")
    with pytest.raises(KeyPolicyError):
        session.run(side)
    side.cipher.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_estimators", 0),
        ("n_estimators", 2.5),
        ("max_depth", 0),
        ("max_depth", 13),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("max_bin", 1),
        ("max_bin", 256),
        ("reg_lambda", -1.0),
        ("min_child_samples", 0),
        ("subsample", 0.0),
        ("subsample", 1.5),
        ("sampling", "bagging"),
        ("colsample_bytree", 0.0),
        ("validation_fraction", 1.0),
        ("early_stopping_rounds", 3),  # without a validation split
        ("backend", "rsa"),
        ("frac_bits", 4),
        ("n_jobs", 0),
        ("max_bins", 32),  # unknown name
    ],
)
def test_bad_hyperparameters_are_rejected_with_the_field_named(field, value):
    session = open_session(make_tables(n=300))
    with pytest.raises(DataValidationError) as info:
        HeteroSecureBoost(**{field: value}).fit(session)
    assert info.value.field == field
    assert session.transcript.round_trips_of(PROTOCOL) == 0


def test_bad_rows_are_rejected_by_the_bank():
    session = open_session(make_tables(n=300))
    with pytest.raises(RemotePartyError, match="rows"):
        HeteroSecureBoost(**SMALL, backend="plain").fit(session, [0, 1, 5000])


def test_bank_half_rejects_out_of_order_and_malformed_messages():
    session = open_session(make_tables(n=400))
    side = SecureBoostBank(session.bank, **SMALL, backend="plain")
    with pytest.raises(UnexpectedMessageError):
        side.handle("level", {})
    side.handle("start", None)
    state = pickle.loads(pickle.dumps(side))  # picklable between messages (deployment)
    assert state.state == "training"
    from jointcredit.errors import MalformedMessageError

    with pytest.raises(MalformedMessageError):
        side.handle("level", {"tree": 0, "depth": 0, "members": [], "nodes": [[5, None, b""]]})
    with pytest.raises(ProtocolError):
        side.handle("level", {"tree": 3, "depth": 0, "members": [], "nodes": []})
    assert side.depth == 0 and side.open_nodes == [0] and side.tree == {}


def test_bank_model_file_format_is_checked(tmp_path):
    (tmp_path / "secureboost_bank.json").write_text('{"format": "other"}')
    with pytest.raises(DataValidationError):
        HeteroSecureBoost.load(tmp_path)
    assert (
        BankBoostModel("m", ["a"], 0.0, [{0: {"kind": "leaf", "value": 0.1}}]).center_trees() == []
    )


# --------------------------------------------------------------------------------------------
# quality on the benchmark data (skips when the shared data folder is absent)
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (DATA / "bank.csv").exists(), reason="default_credit data not present")
def test_reference_mode_matches_lightgbm_on_default_credit():
    import lightgbm as lgb
    from sklearn.model_selection import train_test_split

    from jointcredit.learn.boosting import lightgbm_reference_params
    from jointcredit.report.metrics import auc

    bank = load_party_table(DATA / "bank.csv", id_kind="plain", label_col="y")
    center = load_party_table(DATA / "center.csv", id_kind="plain")
    center = center.subset(bank.ids)
    session = open_session((bank, center))
    y = bank.y
    train, test = train_test_split(np.arange(y.size), test_size=0.3, stratify=y, random_state=42)
    train, test = np.sort(train), np.sort(test)
    params = dict(n_estimators=30, max_depth=3, max_bin=32, learning_rate=0.3)
    model = HeteroSecureBoost(**params, backend="plain").fit(session, train)
    fed = auc(y[test], model.predict_proba(session, test)[:, 1])
    joined = np.hstack([bank.X.to_numpy(), center.X.to_numpy()])
    ref = lgb.LGBMClassifier(**lightgbm_reference_params(**params))
    central = auc(y[test], ref.fit(joined[train], y[train]).predict_proba(joined[test])[:, 1])
    bank_only = auc(
        y[test],
        lgb.LGBMClassifier(**lightgbm_reference_params(**params))
        .fit(bank.X.to_numpy()[train], y[train])
        .predict_proba(bank.X.to_numpy()[test])[:, 1],
    )
    assert abs(fed - central) < 0.003
    assert fed > bank_only + 0.02


# --------------------------------------------------------------------------------------------
# warm start: continue boosting from a champion (init_model)
# --------------------------------------------------------------------------------------------


def test_warm_start_continues_exactly_like_one_uninterrupted_training(seeded_center, tmp_path):
    rows = np.arange(1500)
    s_full = open_session(make_tables())
    full = HeteroSecureBoost(**{**SMALL, "n_estimators": 5}, backend="plain", random_state=11)
    full.fit(s_full, rows)
    s = open_session(make_tables(), keep_bytes=True)
    champ = HeteroSecureBoost(**SMALL, backend="plain", random_state=11).fit(s, rows)
    champ.save(tmp_path)
    loaded = HeteroSecureBoost.load(tmp_path)  # the champion as the bank keeps it: its part only
    mark = s.transcript.mark()
    more = HeteroSecureBoost(**{**SMALL, "n_estimators": 2}, backend="plain", random_state=11)
    more.fit(s, rows, init_model=loaded)
    warm_start = s.transcript.since(mark)
    # the champion's trees, untouched, then two new ones: the same five trees as one run
    assert more.n_estimators_ == 5 and more.init_model_id_ == champ.model_id_
    assert more.model_.trees[:3] == champ.model_.trees
    assert more.model_.trees == full.model_.trees
    assert more.model_.init_score == champ.model_.init_score
    center = s.center.model_parts[more.model_id_]
    assert center.trees == s_full.center.model_parts[full.model_id_].trees
    assert {t: center.trees[t] for t in range(3)} == s.center.model_parts[champ.model_id_].trees
    np.testing.assert_array_equal(more.train_raw_scores_, full.train_raw_scores_)
    np.testing.assert_array_equal(
        more.decision_function(s, np.arange(2000)), full.decision_function(s_full, np.arange(2000))
    )
    # the base margin came through the joint evaluation routing (one prediction): the bank
    # received reachability bits, never a center feature name or threshold
    assert warm_start.round_trips_of("secureboost_predict") == 2
    to_bank = b"".join(warm_start.payloads(Role.CENTER))
    thresholds = [
        n["threshold"] for t in center.trees.values() for n in t.values() if n["kind"] == "center"
    ]
    assert thresholds
    for thr in thresholds:
        assert struct.pack("<d", thr) not in to_bank and repr(thr).encode() not in to_bank
    assert not any(f"c{j}".encode() in to_bank for j in range(4))


def test_encrypted_warm_start_equals_the_reference_mode_continuation(seeded_center):
    rows = np.arange(1500)
    s = open_session(make_tables())
    champ = HeteroSecureBoost(**SMALL, backend="plain", random_state=11).fit(s, rows)
    fits = {}
    for backend in ("plain", "paillier"):
        est = HeteroSecureBoost(**{**SMALL, "n_estimators": 2}, backend=backend, random_state=11)
        fits[backend] = est.fit(s, rows, init_model=champ)
    plain, enc = fits["plain"], fits["paillier"]
    assert enc.model_.trees[:3] == plain.model_.trees[:3] == champ.model_.trees
    for t_plain, t_enc in zip(plain.model_.trees[3:], enc.model_.trees[3:], strict=True):
        assert t_plain.keys() == t_enc.keys()
        for k, a in t_plain.items():
            if a["kind"] == "leaf":
                assert math.isclose(a["value"], t_enc[k]["value"], abs_tol=1e-9)
            else:
                assert a == t_enc[k]
    assert s.center.model_parts[plain.model_id_].trees == s.center.model_parts[enc.model_id_].trees
    np.testing.assert_allclose(plain.train_raw_scores_, enc.train_raw_scores_, atol=1e-9)


def test_warm_start_early_stopping_never_drops_the_champions_trees():
    s = open_session(make_tables(n=1500, seed=4))
    champ = HeteroSecureBoost(**SMALL, backend="plain", random_state=3).fit(s)
    more = HeteroSecureBoost(
        n_estimators=20, max_depth=3, learning_rate=1.0, max_bin=16, min_child_samples=5,
        validation_fraction=0.3, early_stopping_rounds=1, backend="plain", random_state=3,
    ).fit(s, init_model=champ)  # fmt: skip
    losses = more.evals_result_["valid_logloss"]  # one per new tree
    assert 3 < more.n_estimators_ < 23 and more.n_estimators_ == more.best_iteration_ + 1
    assert len(losses) == more.n_estimators_ - 3 + 1  # stopped one round after the best
    assert more.model_.trees[:3] == champ.model_.trees
    assert max(s.center.model_parts[more.model_id_].trees) < more.n_estimators_


def test_incompatible_warm_start_models_are_refused():
    from jointcredit.learn.linear import HeteroLogisticRegression

    tables = make_tables(n=600)
    s = open_session(tables)
    champ = HeteroSecureBoost(**SMALL, backend="plain").fit(s)
    lr = HeteroLogisticRegression(backend="plain", max_epochs=1, batch_size=300).fit(s)
    for init in (lr, HeteroSecureBoost()):
        with pytest.raises(DataValidationError) as info:
            HeteroSecureBoost(**SMALL, backend="plain").fit(s, init_model=init)
        assert info.value.field == "init_model"
    # another bank feature set: refused before any message
    bank, center = tables
    other = load_party_table(
        pd.DataFrame({"id": bank.ids, "y": bank.y, "b0": bank.X["b0"], "b9": bank.X["b1"]}),
        id_kind="plain",
        label_col="y",
    )
    s2 = open_session((other, center))
    s2.center.model_parts.update(s.center.model_parts)
    with pytest.raises(DataValidationError) as info:
        HeteroSecureBoost(**SMALL, backend="plain").fit(s2, init_model=champ)
    assert info.value.field == "feature_names"
    assert s2.transcript.round_trips_of(PROTOCOL) == 0
    # the credit center no longer holds its part of the champion
    s.center.model_parts.pop(champ.model_id_)
    with pytest.raises(DataValidationError) as info:
        HeteroSecureBoost(**SMALL, backend="plain").fit(s, init_model=champ)
    assert info.value.field == "init_model" and champ.model_id_ in info.value.reason
