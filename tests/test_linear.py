"""Hetero logistic regression and the scorecard.

Crypto correctness (each backend's primitives decrypt to the plaintext result; encrypted training
matches the plain reference mode), privacy (a transcript audit with planted sentinels: the
center's feature values and per-enterprise partial predictors never reach the bank, the bank's
labels and partial scores never reach the center, in any encoding), early stopping, scoring,
persistence and typed errors on bad input.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jointcredit.learn.linear as lin
from jointcredit.data import load_party_table
from jointcredit.errors import (
    DataValidationError,
    JointCreditError,
    MalformedMessageError,
    ProtocolError,
)
from jointcredit.learn.linear import (
    HeteroLogisticRegression,
    HeteroScorecard,
    center_basis,
    center_scores,
    load_bank_model,
    load_center_model,
    loss_coefficients,
    residual_coefficients,
    save_center_model,
    train_and_evaluate,
)
from jointcredit.parties import CenterParty, NotAlignedError
from jointcredit.protocol import codec
from jointcredit.protocol.envelope import Role
from jointcredit.session import JointSession

N = 900
SENTINEL = 123.456789  # planted in the center's "capital" column for the first 20 enterprises
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "default_credit"


def _tables(n: int = N, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"E{i:06d}" for i in range(n + 100)]
    m = n + 100
    capital = rng.normal(100.0, 20.0, m)
    capital[:20] = SENTINEL
    tax = rng.gamma(2.0, 1.0, m)
    grade = rng.integers(0, 5, m).astype(float)
    arrears = rng.poisson(0.5, m).astype(float)
    arrears[rng.random(m) < 0.1] = np.nan
    staff = rng.normal(size=m)
    balance = rng.normal(size=m)
    flow = 0.5 * balance + rng.normal(size=m)
    logit = -0.6 + 0.9 * (grade - 2) / 1.4 - 0.5 * staff + 0.6 * balance - 0.3 * (tax - 2)
    y = (rng.random(m) < 1 / (1 + np.exp(-logit))).astype(int)  # ~ 40 % bad: balanced labels
    center = pd.DataFrame(
        {"id": ids, "capital": capital, "tax": tax, "grade": grade, "arrears": arrears,
         "staff": staff}
    )  # fmt: skip
    bank = pd.DataFrame(
        {"id": ids[:n], "y": y[:n], "balance": balance[:n], "flow": flow[:n],
         "age": rng.uniform(1, 20, n)}
    )  # fmt: skip
    return bank, center


def _align_directly(s: JointSession) -> JointSession:
    """Skip PSI (tested on its own): both parties take the shared ids in the bank's order."""
    ids = pd.Index(s.bank.table.ids)
    common = ids[ids.isin(s.center.table.ids)].to_numpy(dtype=object)
    s.bank.aligned_ids = common
    s.center.aligned_ids = common.copy()
    return s


def _session(n: int = N, *, keep_bytes: bool = False, aligned: bool = True) -> JointSession:
    bank, center = _tables(n)
    s = JointSession.in_process(
        load_party_table(bank, label_col="y", id_kind="plain"),
        load_party_table(center, id_kind="plain"),
        keep_bytes=keep_bytes,
    )
    return _align_directly(s) if aligned else s


FAST = {"max_epochs": 2, "batch_size": 450, "learning_rate": 0.1}


class _Recorder:
    """Record what each party computed locally (to look for it on the wire afterwards)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.z: list[np.ndarray] = []
        self.u_bank: list[np.ndarray] = []
        real_basis, real_coeffs = lin.center_basis, lin.residual_coefficients

        def basis(z, window, degree):
            self.z.append(np.array(z, dtype=np.float64))
            return real_basis(z, window, degree)

        def coeffs(u, y, window, degree):
            self.u_bank.append(np.array(u, dtype=np.float64))
            return real_coeffs(u, y, window, degree)

        monkeypatch.setattr(lin, "center_basis", basis)
        monkeypatch.setattr(lin, "residual_coefficients", coeffs)


@pytest.fixture(scope="module")
def runs():
    """One small training per backend, with full transcripts and recorded local values."""
    out = {}
    mp = pytest.MonkeyPatch()
    try:
        for backend in ("plain", "ckks", "paillier"):
            rec = _Recorder(mp)
            s = _session(keep_bytes=True)
            model = HeteroLogisticRegression(backend=backend, **FAST).fit(s)
            out[backend] = (model, s, rec)
            mp.undo()
    finally:
        mp.undo()
    return out


# --- the sigmoid approximation ---------------------------------------------------------------


def test_chebyshev_coefficients_reproduce_residual_and_loss_inside_the_window():
    rng = np.random.default_rng(3)
    u_b = rng.normal(-1.0, 2.0, 2000)
    y = (rng.random(2000) < 0.3).astype(float)
    z = rng.uniform(-3.0, 3.0, 2000)
    basis = center_basis(z, 6.0, 6)
    r = np.einsum("ik,ik->i", residual_coefficients(u_b, y, 6.0, 6), basis)
    exact = 1 / (1 + np.exp(-(u_b + z))) - y
    # degree 6 on a window of half-width 6: |error| about 0.01 on average, 0.04 at most
    # (interpolation bound), and unbiased, which is what the summed gradients care about
    assert np.max(np.abs(r - exact)) < 0.05 and np.mean(np.abs(r - exact)) < 0.015
    assert abs(np.mean(r - exact)) < 0.002
    loss = np.einsum("ik,ik->i", loss_coefficients(u_b, y, 6.0, 6), basis)
    exact_loss = np.logaddexp(0, u_b + z) - y * (u_b + z)
    assert abs(loss.mean() - exact_loss.mean()) < 1e-3
    # beyond the window the center's share is clipped: the residual saturates, keeps its sign
    far = np.einsum("ik,ik->i", residual_coefficients(u_b, y, 6.0, 6), center_basis(z + 50, 6.0, 6))
    assert np.all(far > -1.05) and np.all(far[y == 0] > 0)


# --- backend primitives decrypt to the plaintext results -------------------------------------


@pytest.mark.parametrize("variant", ["ckks", "ckks_prefetch", "paillier"])
def test_backend_primitives_decrypt_to_plaintext_results(variant):
    # ckks_prefetch: the center's masks are encrypted ahead in its worker process
    backend = variant.split("_")[0]
    rng = np.random.default_rng(7)
    # 13 center columns fold as 8 + 4 + 1, 6 bank columns + ones as 4 + 2 + 1 (CKKS)
    n, degree, d_c, d_b = 300, 4, 13, 6
    coeffs = rng.normal(0, 0.2, (n, degree + 1))
    basis = center_basis(rng.normal(0, 2, n), 6.0, degree)
    X_c = rng.normal(size=(n, d_c))
    X_b = rng.normal(size=(n, d_b))
    bank = lin._bank_crypto(backend, degree=degree)
    center = lin._center_crypto(backend, bank.public(), degree=degree)
    if variant == "ckks_prefetch":
        center.enable_prefetch()  # the center's masks, encrypted ahead in its worker
        bank.enable_offload()  # about half of the bank's columns, encrypted in its worker
        deadline = time.monotonic() + 30
        while not (bank._offload.ready and center._pool.ready) and time.monotonic() < deadline:
            time.sleep(0.05)  # until their workers are up, both parties encrypt everything
        assert bank._offload.ready and center._pool.ready
    try:
        enc_c = center.load_matrix(bank.encrypt_matrix(coeffs, basis=True), n, degree + 1)
        feats = lin._load_features(center, bank.encrypt_features(X_b), n, d_b)
        r = center.residual(enc_c, basis)
        r_plain = np.einsum("ik,ik->i", coeffs, basis)
        # CKKS: every returned slot carries flooding noise (std 2^-10) and a slot sum adds 4096
        # of them (std ~0.06); Paillier is exact up to the fixed-point rounding
        tol = 0.35 if backend == "ckks" else 1e-3  # basis values are rounded to 2^-16

        for attempt in range(3 if variant == "ckks_prefetch" else 1):
            if attempt:
                time.sleep(1.0)  # lets the worker stock masks: later rounds use them
            wire, secret = center.center_gradient(r, X_c)
            masked = bank.open_masked(wire, d_c)
            # the bank's view is masked: far from the true sums
            assert np.all(np.abs(np.asarray(masked, dtype=float) - X_c.T @ r_plain) > 100)
            np.testing.assert_allclose(center.unmask(masked, secret), X_c.T @ r_plain, atol=tol)

        for _ in range(2 if variant == "ckks_prefetch" else 1):
            grad_x, grad_0 = bank.open_bank_gradient(center.bank_gradient(r, feats), X_b)
            np.testing.assert_allclose(grad_x, X_b.T @ r_plain, atol=tol)
            assert grad_0 == pytest.approx(r_plain.sum(), abs=tol)
        if variant == "ckks_prefetch":
            assert center._pool.made_by_worker > 0  # the worker's encryptions were used
            assert bank._offload.submitted > 0  # and the bank's worker encrypted columns

        assert bank.open_total(center.total(enc_c, basis)) == pytest.approx(r_plain.sum(), abs=tol)

        u_b = rng.normal(-1, 2, n)
        z = rng.normal(0, 1, n)
        enc_u = center.load_matrix(bank.encrypt_matrix(u_b[:, None]), n, 1)
        np.testing.assert_allclose(
            bank.decrypt_vector(center.add_to(enc_u, z), n), u_b + z, atol=0.02
        )
    finally:
        for side in (bank, center):
            if hasattr(side, "close"):
                side.close()


def test_ckks_center_over_several_chunks_with_a_zero_column_and_cached_plaintexts():
    """Two ciphertexts per column (n > slots), zero center columns (SEAL refuses products with
    a zero plaintext): one inside a folded group of 4, one alone in its group, and feature
    plaintexts cached per batch key across calls."""
    rng = np.random.default_rng(8)
    n, degree = 5000, 3
    coeffs = rng.normal(0, 0.2, (n, degree + 1))
    basis = center_basis(rng.normal(0, 2, n), 6.0, degree)
    zero = np.zeros(n)
    X_c = np.column_stack([rng.normal(size=n), zero, rng.normal(size=(n, 2)), zero])
    X_b = rng.normal(size=(n, 2))
    bank = lin._bank_crypto("ckks", degree=degree)
    center = lin._center_crypto("ckks", bank.public(), degree=degree)
    try:
        enc_c = center.load_matrix(bank.encrypt_matrix(coeffs, basis=True), n, degree + 1)
        assert len(enc_c[0]) == 2
        r = center.residual(enc_c, basis)
        r_plain = np.einsum("ik,ik->i", coeffs, basis)
        for X in (X_c, X_c, 2 * X_c):  # the third call has another key: no stale plaintexts
            key = "twice" if X is X_c else "other"
            wire, secret = center.center_gradient(r, X, key=key)
            got = center.unmask(bank.open_masked(wire, 5), secret)
            np.testing.assert_allclose(got, X.T @ r_plain, atol=0.5)
        assert set(center._plains) == {("twice", 1), ("other", 1)}
        feats = lin._load_features(center, bank.encrypt_features(X_b), n, 2)
        grad_x, grad_0 = bank.open_bank_gradient(center.bank_gradient(r, feats), X_b)
        np.testing.assert_allclose(grad_x, X_b.T @ r_plain, atol=0.5)
        assert grad_0 == pytest.approx(r_plain.sum(), abs=0.5)
        # the coefficient vectors must be fresh: a ciphertext with a level used is refused
        from jointcredit.crypto.ckks import frame_serialized

        used = center.seal.mod_switch(enc_c[0][0], 1)
        with pytest.raises(MalformedMessageError, match="fresh"):
            center.load_matrix(frame_serialized([center.seal.dump(used)]), 100, 1)
    finally:
        bank.close()
        center.close()


# --- end to end: encrypted = plain reference -------------------------------------------------


@pytest.mark.parametrize(("backend", "atol"), [("ckks", 0.02), ("paillier", 1e-4)])
def test_encrypted_training_matches_the_plain_reference(runs, backend, atol):
    plain, enc = runs["plain"][0], runs[backend][0]
    np.testing.assert_allclose(enc.coef_, plain.coef_, atol=atol)
    np.testing.assert_allclose(enc.center_coef_, plain.center_coef_, atol=atol)
    assert enc.intercept_ == pytest.approx(plain.intercept_, abs=atol)
    assert enc.fit_stats_["round_trips"] == plain.fit_stats_["round_trips"]
    # training moved the weights away from zero: the comparison is not vacuous
    assert np.abs(plain.center_coef_).max() > 0.2 and np.abs(plain.coef_).max() > 0.2


def test_one_round_trip_per_mini_batch(runs):
    model, s, _ = runs["plain"]
    n_batches = math.ceil(len(s.aligned_ids) / FAST["batch_size"])
    # start + one per batch and epoch + finish + report
    assert model.fit_stats_["round_trips"] == 1 + FAST["max_epochs"] * n_batches + 2
    kinds = {m for (_, proto, m) in s.transcript.message_types() if proto == "hetero_lr"}
    assert kinds == {"start", "step", "finish", "report", "start.ok", "step.ok", "finish.ok",
                     "report.ok"}  # fmt: skip


# --- privacy: transcript audit ----------------------------------------------------------------


def _encodings8(values: np.ndarray) -> set[bytes]:
    """8-byte encodings of each value: float64 LE/BE and int64 fixed point (LE/BE)."""
    out: set[bytes] = set()
    for v in np.asarray(values, dtype=np.float64).ravel():
        if abs(v) < 1e-3:  # zeros (e.g. z before the first update) are in every byte stream
            continue
        out.add(struct.pack("<d", v))
        out.add(struct.pack(">d", v))
        for frac in (24, 32, 40):
            q = int(round(v * 2**frac))
            if abs(q) >= 2**40:  # shorter ones are mostly zero bytes: meaningless to search
                out.add(q.to_bytes(8, "little", signed=True))
                out.add(q.to_bytes(8, "big", signed=True))
    return out


def _numeric_leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numeric_leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numeric_leaves(v)
    elif isinstance(obj, np.ndarray):
        yield obj


@pytest.mark.parametrize("backend", ["ckks", "paillier"])
def test_transcript_audit_sentinels_never_cross_in_the_clear(runs, backend):
    model, s, rec = runs[backend]
    to_bank = s.transcript.payloads(Role.CENTER, "hetero_lr")
    to_center = s.transcript.payloads(Role.BANK, "hetero_lr")
    blob_bank, blob_center = b"".join(to_bank), b"".join(to_center)

    # the center's planted feature value, raw and standardised, and its per-enterprise partial
    # predictor z at every step
    stats = s.center.model_parts[model.model_id_]["standardize"]
    j = s.center.model_parts[model.model_id_]["features"].index("capital")
    standardised = (SENTINEL - stats["mean"][j]) / stats["scale"][j]
    patterns = _encodings8(np.array([SENTINEL, standardised]))
    assert len(rec.z) >= 4
    for z in rec.z:
        patterns |= _encodings8(z[:16])
    for p in patterns:
        assert p not in blob_bank
    for text in (repr(SENTINEL), f"{SENTINEL:.6f}", repr(standardised)):
        assert text.encode() not in blob_bank

    # the bank's labels (balanced, so no long zero runs) and its partial scores u_b
    y = s.bank.aligned_labels()
    for encoded in (y.astype(np.int8).tobytes()[:128], y.astype(np.float64).tobytes()[:256],
                    np.packbits(y.astype(bool)).tobytes()[:32]):  # fmt: skip
        assert encoded not in blob_center
    for u in rec.u_bank:
        for p in _encodings8(u[:16]):
            assert p not in blob_center

    # structurally: no per-row floats in any message to the center (only row positions)
    n = len(s.aligned_ids)
    for payload in to_center:
        for arr in _numeric_leaves(codec.unpack(payload)):
            if arr.ndim >= 1 and arr.shape[0] >= 128:
                assert arr.dtype.kind in "iu", f"per-row array of dtype {arr.dtype} sent"
                assert arr.max() < n
    # and the center's masked gradient came back to it as masked values only
    for payload in to_bank:
        for arr in _numeric_leaves(codec.unpack(payload)):
            assert arr.size < 128


def test_ckks_training_keys_are_the_context_and_three_rotation_keys_only(runs):
    """No full Galois key set (~35 MB): the center gets the rotations folding needs, ~4 MB."""
    _, s, _ = runs["ckks"]
    start = codec.unpack(s.transcript.payloads(Role.BANK, "hetero_lr")[0])
    from jointcredit.crypto.ckks import CKKSPeer, SealEvaluator

    public = start["public"]
    peer = CKKSPeer.from_public_bytes(public["context"])
    assert not peer.galois_keys and len(public["context"]) < 5_000_000
    assert len(public["rotations"]) < 6_000_000
    seal = SealEvaluator(peer)
    try:
        seal.load_rotation_keys(public["rotations"], lin.rotation_steps(peer.slots))
        assert lin.rotation_steps(peer.slots) == [2048, 1024, 512]
        with pytest.raises(MalformedMessageError, match="none for steps"):
            seal.load_rotation_keys(public["rotations"], [256])
    finally:
        seal.close()


def test_ckks_center_refuses_bad_rotation_keys():
    bank = lin._bank_crypto("ckks")
    public = bank.public()
    try:
        for bad in (
            {"context": public["context"]},  # missing
            {**public, "rotations": "keys"},  # not bytes
            {**public, "rotations": b"x" * 100},  # not SEAL keys
            {**public, "rotations": b"x" * 13_000_000},  # oversized
            {**public, "rotations": bank.owner.rotation_keys([2048, 1024])},  # one step short
        ):
            with pytest.raises(MalformedMessageError):
                lin._center_crypto("ckks", bad)
    finally:
        bank.close()


def test_block_layout_folds_to_per_column_sums():
    """Plain check of the packing arithmetic: rotate P_j by j * L, add, sum each block."""
    rng = np.random.default_rng(4)
    slots, n = 64, 150  # three chunks, the last partial
    for B in (1, 2, 4, 8):
        M, r = rng.normal(size=(n, B)), rng.normal(size=n)
        P = lin.block_layout(M, slots)
        r_pad = np.concatenate([r, np.zeros(P.shape[0] - n)])
        folded = np.zeros(slots)
        for c in range(P.shape[0] // slots):
            part = slice(c * slots, (c + 1) * slots)
            for j in range(B):
                folded += np.roll(P[part, j] * r_pad[part], -j * (slots // B))
        np.testing.assert_allclose(lin.block_sums(folded, B), M.T @ r, atol=1e-9)
    assert lin.block_groups(13) == [(0, 8), (8, 4), (12, 1)]
    assert lin.block_groups(11) == [(0, 8), (8, 2), (10, 1)]
    assert lin.block_groups(16) == [(0, 8), (8, 8)] and lin.block_groups(0) == []


# --- scoring -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["plain", "ckks", "paillier"])
def test_joint_scores_equal_the_sum_of_both_parts(runs, backend):
    model, s, _ = runs[backend]
    rows = np.arange(200)
    mark = s.transcript.mark()
    p = model.predict_proba(s, rows)
    part = s.center.model_parts[model.model_id_]
    u = lin.bank_scores(model.bank_model(), s.bank.aligned_features(rows)) + center_scores(
        part, s.center.aligned_features(rows)
    )
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-u)), atol=0.01)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert s.transcript.since(mark).round_trips == 2
    if backend != "plain":  # the center saw only ciphertexts of the bank's partial scores
        u_b = lin.bank_scores(model.bank_model(), s.bank.aligned_features(rows))
        blob = b"".join(s.transcript.since(mark).payloads(Role.BANK, "hetero_lr_predict"))
        for pattern in _encodings8(u_b[:50]):
            assert pattern not in blob


def test_early_stopping_rolls_back_to_the_best_epoch():
    s = _session()
    # tol larger than any improvement: epoch 0 stays best and patience 2 stops after epoch 2
    model = HeteroLogisticRegression(
        backend="plain", validation_fraction=0.2, patience=2, tol=1e3, max_epochs=10,
        batch_size=450, learning_rate=0.1,
    ).fit(s)  # fmt: skip
    assert model.best_epoch_ == 0 and model.n_epochs_ == 3
    assert [h["epoch"] for h in model.history_] == [0, 1, 2]
    one = HeteroLogisticRegression(
        backend="plain", validation_fraction=0.2, max_epochs=1, batch_size=450,
        learning_rate=0.1,
    ).fit(s)  # fmt: skip
    np.testing.assert_allclose(model.coef_, one.coef_)
    np.testing.assert_allclose(model.center_coef_, one.center_coef_)
    assert model.history_[0]["validation_loss"] == pytest.approx(one.history_[0]["validation_loss"])
    assert 0.3 < model.history_[0]["validation_loss"] < 0.8


# --- persistence ---------------------------------------------------------------------------------


def test_saved_parts_rebuild_the_model_and_the_bank_file_holds_no_center_weights(runs, tmp_path):
    model, s, _ = runs["plain"]
    bank_file = model.save(tmp_path)
    center_file = save_center_model(s.center, model.model_id_, tmp_path)
    text = bank_file.read_text("utf-8")
    for w in model.center_coef_:
        assert repr(float(w)) not in text and f"{w:.6f}" not in text
    assert "standardize" in json.loads(text) and json.loads(text)["center_features"]
    # a fresh center process loads its part from its own disk; the bank reloads its part
    fresh = CenterParty(s.center.table, aligned_ids=s.center.aligned_ids)
    assert load_center_model(fresh, center_file) == model.model_id_
    s.center = fresh
    again = load_bank_model(bank_file)
    np.testing.assert_allclose(
        again.predict_proba(s, np.arange(50)), model.predict_proba(s, np.arange(50)), atol=1e-12
    )


def test_bank_side_survives_pickling_between_messages():
    """Deployments keep the bank's half on disk between Flower messages."""
    s = _session()
    endpoint = s.endpoint
    real = endpoint.receive

    def receive(request: bytes) -> bytes:
        reply = real(request)
        endpoint.sides = pickle.loads(pickle.dumps(endpoint.sides))
        return reply

    endpoint.receive = receive
    s.channel.transport.inner._receive = receive
    model = HeteroLogisticRegression(backend="ckks", max_epochs=1, batch_size=450).fit(s)
    assert np.isfinite(model.coef_).all() and model.n_epochs_ == 1


# --- scorecard -------------------------------------------------------------------------------------


def test_scorecard_points_add_up_to_the_score():
    s = _session()
    card = HeteroScorecard(
        backend="plain", pdo=20, base_score=600, base_odds=50, min_iv=0.01, max_epochs=3,
        batch_size=450, learning_rate=0.1, binning_params={"max_bins": 5},
    ).fit(s)  # fmt: skip
    assert card.factor_ == pytest.approx(20 / math.log(2))
    assert card.offset_ == pytest.approx(600 - 20 / math.log(2) * math.log(50))
    rows = np.arange(100)
    score = card.score(s, rows)
    # bank points from its own table, center points from the center's own part
    Xb = s.bank.aligned_features(rows)
    bank_points = np.zeros(rows.size)
    for f in card.bank_features_:
        table = card.points_table_[card.points_table_["feature"] == f]["points"].to_numpy()
        bank_points += table[card._prep_["bins"][f].assign(Xb[f].to_numpy())]
    part = s.center.model_parts[card.model_id_]
    Xc = s.center.aligned_features(rows)
    center_points = np.zeros(rows.size)
    for f in part["features"]:
        spec = lin.BinSpec.from_dict(part["bins"][f])
        center_points += np.asarray(part["points"][f])[spec.assign(Xc[f].to_numpy())]
    np.testing.assert_allclose(card.base_points_ + bank_points + center_points, score, atol=1e-6)
    # higher score = safer: P(bad) falls as the score rises
    pd_ = card.predict_proba(s, rows)[:, 1]
    assert np.all(np.diff(pd_[np.argsort(score)]) <= 1e-12)
    # the report names center features by catalogue name, with IV, but has no bins for them
    report = card.feature_report_
    assert set(report[report["party"] == "center"]["feature"]) == set(card.center_features_)
    assert set(card.points_table_["feature"]) <= set(card.bank_features_)
    bank_model = json.dumps(card.bank_model())
    for f in part["features"]:
        for c in part["bins"][f]["cuts"]:
            if c not in (0.0, 1.0, 2.0, 3.0):
                assert repr(float(c)) not in bank_model


# --- quality (plain reference mode; the encrypted runs match it, see above) ---------------------


def _split(s: JointSession, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    y = s.bank.aligned_labels()
    return train_test_split(np.arange(y.size), test_size=0.3, stratify=y, random_state=seed)


@pytest.mark.skipif(not DATA.is_dir(), reason="default_credit data not available")
def test_quality_on_default_credit():
    s = JointSession.in_process(
        load_party_table(DATA / "bank.csv", label_col="y", id_kind="plain"),
        load_party_table(DATA / "center.csv", id_kind="plain"),
    )
    _align_directly(s)
    train, test = _split(s)
    result = train_and_evaluate(s, train, test, backend="plain")
    fed, cen, bank = result["federated"], result["centralized"], result["bank_only"]
    assert fed["auc"] >= cen["auc"] - 0.005
    assert fed["auc"] > bank["auc"] + 0.02


def test_quality_on_synthetic_sme_data():
    from jointcredit.data import make_sme_data

    d = make_sme_data(n_enterprises=12_000, n_bank_customers=8_000, seed=5)
    s = JointSession.in_process(
        load_party_table(d.bank, label_col=d.label_col), load_party_table(d.center)
    )
    _align_directly(s)
    train, test = _split(s)
    result = train_and_evaluate(s, train, test, backend="plain")
    assert result["federated"]["auc"] >= result["centralized"]["auc"] - 0.005
    assert result["federated"]["auc"] > result["bank_only"]["auc"]


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"backend": "rsa"}, "backend"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"l2": -1.0}, "l2"),
        ({"batch_size": 10}, "batch_size"),
        ({"batch_size": 10**6}, "batch_size"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"validation_fraction": 0.6}, "validation_fraction"),
        ({"patience": 0}, "patience"),
        ({"sigmoid_degree": 0}, "sigmoid_degree"),
        ({"sigmoid_window": -1.0}, "sigmoid_window"),
        ({"bank_features": ["nope"]}, "bank_features"),
        ({"validation_fraction": 0.01}, "validation_fraction"),
    ],
)
def test_bad_hyperparameters_raise_typed_errors(params, field):
    s = _session()
    with pytest.raises(JointCreditError) as info:
        HeteroLogisticRegression(**{"backend": "plain", **params}).fit(s)
    err = info.value
    assert field in (getattr(err, "field", "") or str(err))


def test_unaligned_session_and_bad_rows_raise():
    s = _session(aligned=False)
    with pytest.raises(NotAlignedError):
        HeteroLogisticRegression(backend="plain").fit(s)
    s.align()  # the real PSI, once
    with pytest.raises(DataValidationError) as info:
        HeteroLogisticRegression(backend="plain").fit(s, rows=np.array([0, 1, 10**6]))
    assert info.value.field == "rows"
    with pytest.raises(JointCreditError):
        HeteroLogisticRegression(backend="plain").predict_proba(s)  # not fitted
    with pytest.raises(JointCreditError, match="center_features"):
        HeteroLogisticRegression(backend="plain", center_features=["nope"]).fit(s)


def test_the_center_refuses_batches_below_its_minimum():
    """The center enforces its own floor, whatever a (modified) bank asks for."""
    s = _session()

    class TinyBatches(lin.HeteroLRBank):
        def _layout(self, rows, y):
            return [rows[:16], rows[16:]], None

    side = TinyBatches(s.bank, backend="plain")
    with pytest.raises(ProtocolError, match="batch"):
        s.run(side)


def test_a_step_out_of_order_is_refused_without_changing_state():
    s = _session()
    side = lin.HeteroLRBank(s.bank, backend="plain", max_epochs=1, batch_size=450)
    side.handle("start", {"n_aligned": len(s.aligned_ids), "features": ["capital", "tax"]})
    w = side.w.copy()
    with pytest.raises(ProtocolError, match="out of order"):
        side.handle(
            "step",
            {"epoch": 0, "batch": 1, "center_gradient": None, "bank_gradient": None,
             "validation": None},
        )  # fmt: skip
    np.testing.assert_array_equal(side.w, w)
    assert side.state == "training"


# --- warm start (init_model) ---------------------------------------------------------------------


def test_warm_start_with_zero_epochs_reproduces_the_champion(tmp_path):
    s = _session(keep_bytes=True)
    champ = HeteroLogisticRegression(backend="plain", **FAST).fit(s, np.arange(600))
    loaded = load_bank_model(champ.save(tmp_path))  # the bank's file: no center weights in it
    mark = s.transcript.mark()
    again = HeteroLogisticRegression(backend="plain", max_epochs=0, batch_size=450).fit(
        s, np.arange(300, 900), init_model=loaded
    )
    assert again.model_id_ != champ.model_id_ and again.init_model_id_ == champ.model_id_
    assert again.n_epochs_ == 0 and again.best_epoch_ == 0
    np.testing.assert_allclose(again.coef_, champ.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(again.center_coef_, champ.center_coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        again.predict_proba(s)[:, 1], champ.predict_proba(s)[:, 1], rtol=0, atol=1e-12
    )
    # The center continued from its own part, found by id: same standardisation, parent noted.
    part, parent = s.center.model_parts[again.model_id_], s.center.model_parts[champ.model_id_]
    assert part["standardize"] == parent["standardize"]
    assert part["parent_model_id"] == champ.model_id_
    # The bank only named the champion; the center's statistics never crossed.
    sent = b"".join(s.transcript.since(mark).payloads(Role.BANK, "hetero_lr"))
    assert champ.model_id_.encode() in sent
    for v in parent["standardize"]["mean"] + parent["standardize"]["scale"]:
        assert struct.pack("<d", v) not in sent and repr(v).encode() not in sent


def test_warm_start_starts_from_the_champion_and_runs_encrypted():
    s = _session()
    champ = HeteroLogisticRegression(backend="plain", **FAST).fit(s)
    p_champ = champ.predict_proba(s)[:, 1]
    # a step size too small to move: the warm start stays at the champion, a cold start does not
    tiny = {"max_epochs": 1, "batch_size": 450, "learning_rate": 1e-6}
    warm = HeteroLogisticRegression(backend="plain", **tiny).fit(s, init_model=champ)
    cold = HeteroLogisticRegression(backend="plain", **tiny).fit(s)
    assert np.abs(warm.predict_proba(s)[:, 1] - p_champ).max() < 1e-4
    assert np.abs(cold.predict_proba(s)[:, 1] - p_champ).max() > 0.1
    # one more epoch at the usual rate, encrypted, matches the plain reference mode
    fits = {
        b: HeteroLogisticRegression(backend=b, max_epochs=1, batch_size=450, learning_rate=0.1).fit(
            s, init_model=champ
        )
        for b in ("plain", "ckks")
    }
    np.testing.assert_allclose(fits["ckks"].coef_, fits["plain"].coef_, atol=0.02)
    np.testing.assert_allclose(fits["ckks"].center_coef_, fits["plain"].center_coef_, atol=0.02)
    assert fits["plain"].n_epochs_ == 1 and fits["plain"].best_epoch_ == 1
    assert np.abs(fits["plain"].coef_.to_numpy() - champ.coef_.to_numpy()).max() > 1e-3


def test_scorecard_warm_start_keeps_the_champions_bins(tmp_path):
    s = _session()
    params = dict(backend="plain", min_iv=0.01, batch_size=450, learning_rate=0.1)
    card = HeteroScorecard(**params, max_epochs=3, binning_params={"max_bins": 5}).fit(
        s, np.arange(600)
    )
    loaded = load_bank_model(card.save(tmp_path))
    again = HeteroScorecard(**params, max_epochs=0).fit(s, np.arange(300, 900), init_model=loaded)
    np.testing.assert_allclose(again.score(s), card.score(s), rtol=0, atol=1e-9)
    part, parent = s.center.model_parts[again.model_id_], s.center.model_parts[card.model_id_]
    assert part["bins"] == parent["bins"] and part["woe"] == parent["woe"]
    np.testing.assert_allclose(
        [p for f in part["features"] for p in part["points"][f]],
        [p for f in parent["features"] for p in parent["points"][f]],
        atol=1e-9,
    )
    assert again.bank_model()["center_iv"] == card.bank_model()["center_iv"]
    report = again.feature_report_.set_index("feature")
    assert set(report.index) == set(card.bank_features_) | set(card.center_features_)
    with pytest.raises(DataValidationError) as info:
        HeteroScorecard(**params, binning=card.binning_).fit(s, init_model=card)
    assert info.value.field == "binning"


def test_incompatible_warm_start_models_are_refused():
    s = _session()
    champ = HeteroLogisticRegression(backend="plain", **FAST).fit(s)
    cases = [
        (HeteroScorecard(backend="plain"), champ, "init_model"),  # another model class
        (HeteroLogisticRegression(backend="plain"), HeteroLogisticRegression(), "init_model"),
        (HeteroLogisticRegression(backend="plain", bank_features=["flow"]), champ, "bank_features"),
        (HeteroLogisticRegression(backend="plain", center_features=["tax"]), champ,
         "center_features"),
    ]  # fmt: skip
    for est, init, field in cases:
        with pytest.raises(DataValidationError) as info:
            est.fit(s, init_model=init)
        assert info.value.field == field
    with pytest.raises(DataValidationError) as info:
        HeteroLogisticRegression(backend="plain", max_epochs=0).fit(s)  # 0 epochs: warm only
    assert info.value.field == "max_epochs"
    # The bank's table lost a feature the champion uses.
    bank, center = _tables()
    short = JointSession.in_process(
        load_party_table(bank.drop(columns="flow"), label_col="y", id_kind="plain"),
        load_party_table(center, id_kind="plain"),
    )
    _align_directly(short)
    short.center.model_parts.update(s.center.model_parts)
    with pytest.raises(DataValidationError) as info:
        HeteroLogisticRegression(backend="plain", **FAST).fit(short, init_model=champ)
    assert info.value.field == "bank_features"
    # The credit center holds no part of the champion (another center, or it was deleted).
    s.center.model_parts.pop(champ.model_id_)
    with pytest.raises(DataValidationError) as info:
        HeteroLogisticRegression(backend="plain", **FAST).fit(s, init_model=champ)
    assert info.value.field == "init_model" and champ.model_id_ in info.value.reason
