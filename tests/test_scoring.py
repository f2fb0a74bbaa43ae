"""Encrypted pre-authorization scoring (protocol ``score``) and the end-to-end ``preauthorize``.

Crypto correctness: encrypted scores equal plaintext scores (LR, scorecard, SecureBoost).
Privacy: transcript audits in both directions. Governance: consent exclusions never reach the
encrypted path; budget exhaustion raises and is logged. Policy: grades and lines follow the
configuration. Bad input: typed errors naming the field.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import struct
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from jointcredit.crypto.ckks import (
    CKKSKeyOwner,
    SealFile,
    SeededEncryptor,
    deserialize_vectors,
    frame_serialized,
    serialize_vectors,
    tenseal_vector_bytes,
)
from jointcredit.data import CATEGORIES, load_party_table, make_sme_data
from jointcredit.errors import (
    BudgetExhaustedError,
    DataValidationError,
    DuplicateIdentifierError,
    MalformedMessageError,
    ProtocolError,
)
from jointcredit.learn.boosting import HeteroSecureBoost, save_center_part
from jointcredit.learn.linear import (
    HeteroLogisticRegression,
    HeteroScorecard,
    bank_scores,
    center_scores,
    save_center_model,
)
from jointcredit.protocol import codec
from jointcredit.protocol.envelope import Role
from jointcredit.scoring import (
    AuditLog,
    BudgetLimits,
    ConsentRegistry,
    CreditLinePolicy,
    GradeBands,
    PreAuthorizationPolicy,
    QueryBudget,
    ScoringGate,
    SizeIndicator,
)
from jointcredit.scoring.encrypted import (
    FLOOD_STD,
    SCORING_CKKS_PARAMS,
    CenterScoringPolicy,
    ScoreBank,
    boost_basis,
)
from jointcredit.scoring.preauth import NOT_AT_CENTER, preauthorize
from jointcredit.session import JointSession

PD_TOL = 1e-4
BANK = "bank-a"


def sigmoid(u):
    return 1.0 / (1.0 + np.exp(-np.asarray(u, dtype=np.float64)))


# --------------------------------------------------------------------------------------------
# fixtures: one synthetic city, three fitted joint models (trained in the plain reference mode:
# the scoring protocol is what is under test)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return make_sme_data(n_enterprises=2500, n_bank_customers=1100, seed=11)


@pytest.fixture(scope="module")
def session(data):
    bank = load_party_table(data.bank, id_col="id", label_col="default_12m", require_label=True)
    center = load_party_table(data.center, id_col="id")
    s = JointSession.in_process(bank, center, keep_bytes=True)
    s.align()
    return s


@pytest.fixture(scope="module")
def models(session):
    lr = HeteroLogisticRegression(backend="plain", max_epochs=4).fit(session)
    sc = HeteroScorecard(backend="plain", max_epochs=4).fit(session)
    sb = HeteroSecureBoost(
        backend="plain", n_estimators=6, max_depth=3, max_bin=16, n_jobs=1, random_state=0
    ).fit(session)
    return {"lr": lr, "scorecard": sc, "secureboost": sb}


@pytest.fixture(autouse=True)
def clean_services(session):
    session.center.services.clear()
    yield
    session.center.services.clear()


def plaintext_logits(session, model, rows):
    """Both halves evaluated in the clear, in the test only (reads both parties' data)."""
    if isinstance(model, HeteroSecureBoost):
        part = session.center.model_parts[model.model_id_]
        Xb = session.bank.aligned_features(rows)[model.model_.feature_names].to_numpy()
        Xc = session.center.aligned_features(rows)[part.feature_names].to_numpy()
        out = np.full(len(rows), model.model_.init_score)
        for t, tree in enumerate(model.model_.trees):
            leaves, bank_reach = model.model_.route(Xb, t)
            if t in part.trees:
                c_leaves, center_reach = part.reachability(Xc, t)
                assert c_leaves == leaves
                bank_reach = bank_reach & center_reach
            assert (bank_reach.sum(axis=1) == 1).all()
            values = np.array([tree[k]["value"] for k in leaves])
            out += values[np.argmax(bank_reach, axis=1)]
        return out
    part = session.center.model_parts[model.model_id_]
    return bank_scores(model.bank_model(), session.bank.aligned_features(rows)) + center_scores(
        part, session.center.aligned_features(rows)
    )


def run_side(session, model, **kw):
    side = ScoreBank(session.bank, model=model, **kw)
    try:
        session.run(side)
    finally:
        side.close()
    return side


# --------------------------------------------------------------------------------------------
# crypto correctness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lr", "scorecard", "secureboost"])
def test_encrypted_scores_equal_plaintext_scores(session, models, name):
    model = models[name]
    rows = np.arange(len(session.aligned_ids))
    expected = plaintext_logits(session, model, rows)
    side = run_side(session, model)
    assert np.array_equal(side.scored_rows, rows)
    assert np.abs(sigmoid(side.logits) - sigmoid(expected)).max() < PD_TOL
    # the flooding noise is there (the result is not the bare ciphertext arithmetic) but small
    assert 0 < np.abs(side.logits - expected).max() < 8 * FLOOD_STD
    # and the estimators' own (plaintext-routing) predictions agree
    if name == "secureboost":
        reference = model.decision_function(session, rows)
        assert np.abs(sigmoid(side.logits) - sigmoid(reference)).max() < PD_TOL


@pytest.mark.parametrize("name", ["lr", "secureboost"])
def test_plain_reference_backend_runs_the_same_code(session, models, name):
    model = models[name]
    session.center.services["scoring_policy"] = CenterScoringPolicy(allow_plain=True)
    rows = np.arange(0, len(session.aligned_ids), 3)
    plain = run_side(session, model, rows=rows, backend="plain", batch_rows=100)
    ckks = run_side(session, model, rows=rows, backend="ckks")
    assert np.abs(plain.logits - plaintext_logits(session, model, rows)).max() < 1e-9
    assert np.abs(sigmoid(plain.logits) - sigmoid(ckks.logits)).max() < PD_TOL


def test_center_refuses_the_plain_backend_by_default(session, models):
    with pytest.raises(ProtocolError, match="refuses the unencrypted backend"):
        run_side(session, models["lr"], rows=[0, 1, 2], backend="plain")


def random_tree(rng: np.random.Generator) -> dict[int, dict]:
    tree: dict[int, dict] = {}
    stack = [(0, 0)]
    while stack:
        k, depth = stack.pop()
        if depth == 3 or rng.random() < 0.2:
            tree[k] = {"kind": "leaf", "value": float(rng.normal())}
            continue
        tree[k] = {"kind": "center" if rng.random() < 0.5 else "bank"}
        stack += [(2 * k + 1, depth + 1), (2 * k + 2, depth + 1)]
    return tree


def center_reach(tree: dict[int, dict], goes_left: dict[int, bool], target: int) -> int:
    """The center's reachability of a node: bank splits pass, center splits follow goes_left."""
    ok, k = True, target
    while k:
        parent = (k - 1) // 2
        if tree[parent]["kind"] == "center":
            ok &= goes_left[parent] == (k == 2 * parent + 1)
        k = parent
    return int(ok)


def test_boost_basis_rebuilds_every_leaf_indicator():
    """R_leaf = C[leaf, 0] + sum_s C[leaf, s] E_s on random trees and random routes."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        tree = random_tree(rng)
        leaves, center, coef = boost_basis(tree)
        goes_left = {k: bool(rng.random() < 0.5) for k in tree}
        E = np.array([center_reach(tree, goes_left, 2 * s + 1) for s in center], dtype=float)
        for i, leaf in enumerate(leaves):
            assert coef[i, 0] + coef[i, 1:] @ E == center_reach(tree, goes_left, leaf)


def test_seeded_encryption_is_a_regular_tenseal_vector():
    owner = CKKSKeyOwner(SCORING_CKKS_PARAMS)
    seeded = SeededEncryptor(owner)
    try:
        assert seeded.ok
        x = np.random.default_rng(0).normal(size=4096)
        blob = seeded.encrypt(x)
        (vector,) = deserialize_vectors(owner, frame_serialized([blob]))
        assert np.abs(owner.decrypt([vector], x.size) - x).max() < 1e-6
        # half the size of a public-key encryption: the random half travels as a seed
        assert len(blob) < 0.6 * len(owner.encrypt(x)[0].serialize())
    finally:
        seeded.close()


def test_tenseal_vector_framing_is_pinned_to_tenseals_own():
    owner = CKKSKeyOwner(SCORING_CKKS_PARAMS)
    (vector,) = owner.encrypt(np.linspace(-2, 2, 300))
    seal = SealFile()
    try:
        raw = seal.dump(vector.ciphertext()[0])
    finally:
        seal.close()
    scale = vector.ciphertext()[0].scale
    assert tenseal_vector_bytes(raw, 300, scale) == vector.serialize()


def test_packed_secureboost_total_has_no_imaginary_leak(session, models):
    """Two split columns share a complex slot; the center cancels the imaginary part (which
    would show the bank a_s e_t - a_t e_s) with the conjugation key, so only noise is left."""
    import tenseal.sealapi as sealapi

    sb = models["secureboost"]
    mark = session.transcript.mark()
    side = ScoreBank(session.bank, model=sb, rows=np.arange(300))
    session.run(side)
    to_bank = session.transcript.since(mark).payloads(Role.CENTER, "score")
    owner = side.crypto.owner
    (vector,) = deserialize_vectors(owner, codec.unpack(to_bank[2])["scores"])
    seal_context = owner.context.seal_context().data
    plain = sealapi.Plaintext()
    sealapi.Decryptor(seal_context, owner.context.data.secret_key()).decrypt(
        vector.ciphertext()[0], plain
    )
    slots = np.asarray(sealapi.CKKSEncoder(seal_context).decode_complex(plain))[:300]
    local, _ = side.view.columns(session.bank.aligned_features(np.arange(300)))
    expected = plaintext_logits(session, sb, np.arange(300)) - local
    assert np.abs(slots.real / 2 - expected).max() < 1e-4
    assert np.abs(slots.imag).max() < 20 * FLOOD_STD  # flooding noise only
    assert np.abs(expected).max() > 0.1  # while the real part carries the center's share
    side.close()


def test_encryption_workers_give_the_same_scores(session, models, monkeypatch):
    from jointcredit.scoring import encrypted

    monkeypatch.setattr(encrypted._CkksOwner, "POOL_MIN_VECTORS", 1)
    rows = np.arange(len(session.aligned_ids))
    side = run_side(session, models["secureboost"], n_jobs=2, batch_rows=512)
    assert side.crypto._pool is None  # stopped at the end
    expected = plaintext_logits(session, models["secureboost"], rows)
    assert np.abs(sigmoid(side.logits) - sigmoid(expected)).max() < PD_TOL


def test_center_refuses_bad_key_material_before_charging(session, models, tmp_path):
    aligned = [str(i) for i in session.aligned_ids]
    gate, _, audit = make_gate(tmp_path, aligned[:20])
    session.center.services.update({"gate": gate, "bank_id": BANK})

    class BadKey(ScoreBank):
        def _start(self, payload):
            job = super()._start(payload)
            job["galois"] = b"not a key"
            return job

    side = BadKey(session.bank, model=models["secureboost"], rows=np.arange(20))
    with pytest.raises(MalformedMessageError, match="galois"):
        session.run(side)
    side.close()
    # refused before the gate: no job logged, nothing charged
    assert not [e for e in audit.entries() if e.action.startswith(("job_", "budget_"))]
    assert gate.budget.usage(BANK)["day"] == 0


# --------------------------------------------------------------------------------------------
# privacy: what crossed the wire
# --------------------------------------------------------------------------------------------


def encodings(value: float) -> list[bytes]:
    """A value as the other party might find it: floats, fixed point, text."""
    out = [struct.pack(f, value) for f in ("<d", ">d", "<f", ">f")]
    for bits in (16, 24, 32, 40):
        fixed = round(value * 2**bits)
        if abs(fixed) >= 2**32:  # smaller ints are row positions, counts... in any payload
            out += [fixed.to_bytes(8, e, signed=True) for e in ("little", "big")]
    out += [repr(value).encode(), f"{value:.6f}".encode(), f"{value:.4f}".encode()]
    return out


def distinctive(values, n: int = 200) -> list[float]:
    """Values whose encodings cannot occur by chance (no integers, short fractions, zeros)."""
    vals = np.unique(np.asarray(values, dtype=np.float64).ravel())
    vals = vals[np.isfinite(vals) & (np.abs(vals) > 1e-3)]
    vals = vals[vals * 2**16 != np.round(vals * 2**16)]  # not a short binary fraction
    busy = [v for v in vals.tolist() if b"\x00" not in struct.pack("<f", v)]
    return busy[:n]


#: Payload fields that carry CKKS material (checked to parse as such below).
CIPHER_FIELDS = ("vectors", "scores", "public")


def split_payloads(payloads: list[bytes]) -> tuple[bytes, bytes]:
    """(plaintext fields, ciphertext fields) of a party's payloads, each as one blob."""
    plain, cipher = [], []
    for raw in payloads:
        obj = codec.unpack(raw)
        if isinstance(obj, dict):
            cipher += [v for k, v in obj.items() if k in CIPHER_FIELDS and isinstance(v, bytes)]
            obj = {
                k: v for k, v in obj.items() if not (k in CIPHER_FIELDS and isinstance(v, bytes))
            }
        plain.append(codec.pack(obj))
    return b"\x00".join(plain), b"\x00".join(cipher)


def assert_absent(payloads: list[bytes], values: list[float]) -> None:
    """No encoding of ``values`` in the plaintext fields; not even the 8-byte float64 patterns
    in the ciphertexts (shorter patterns could occur in random bytes by chance)."""
    plain, cipher = split_payloads(payloads)
    for v in values:
        for p in encodings(v):
            assert p not in plain, f"{v!r} found in the other party's plaintext fields"
        for p in (struct.pack("<d", v), struct.pack(">d", v)):
            assert p not in cipher, f"{v!r} found in the other party's ciphertext fields"


def test_transcript_audit_linear_both_directions(data, models):
    # a fresh session with planted sentinels in both parties' tables
    center_df = data.center.copy()
    bank_df = data.bank.copy()
    common = sorted(set(center_df["id"]) & set(bank_df["id"]))[:3]
    center_sentinels = [4321.987654 + k for k in range(3)]
    bank_sentinels = [777.123457 + k for k in range(3)]
    for k, ent in enumerate(common):
        center_df.loc[center_df["id"] == ent, "tax_paid_12m_10k"] = center_sentinels[k]
        bank_df.loc[bank_df["id"] == ent, "avg_balance"] = bank_sentinels[k]
    s = JointSession.in_process(
        load_party_table(bank_df, id_col="id", label_col="default_12m", require_label=True),
        load_party_table(center_df, id_col="id"),
        keep_bytes=True,
    )
    s.align()
    lr = HeteroLogisticRegression(backend="plain", max_epochs=2).fit(s)
    mark = s.transcript.mark()
    side = run_side(s, lr)
    rows = side.scored_rows
    z_c = center_scores(s.center.model_parts[lr.model_id_], s.center.aligned_features(rows))
    u_b = bank_scores(lr.bank_model(), s.bank.aligned_features(rows))
    part = s.transcript.since(mark)
    to_bank = part.payloads(Role.CENTER, "score")
    to_center = part.payloads(Role.BANK, "score")
    # the center's raw features and its separate partial scores never reach the bank
    assert_absent(to_bank, center_sentinels)
    assert_absent(to_bank, distinctive(z_c))
    assert_absent(to_bank, distinctive(s.center.aligned_features(rows).to_numpy()))
    # the bank's features and partial scores never reach the center in plaintext
    assert_absent(to_center, bank_sentinels)
    assert_absent(to_center, distinctive(u_b))
    assert_absent(to_center, distinctive(s.bank.aligned_features(rows).to_numpy()))
    # what the bank does receive: one encrypted total per enterprise, category codes
    types = {e.msg_type for e in part.entries if e.sender is Role.CENTER}
    assert types == {"start", "admitted", "scores"}


def test_the_audit_catches_the_plain_reference_backend(session, models):
    """The audit is not vacuous: the unencrypted reference run shows the bank's partial scores."""
    session.center.services["scoring_policy"] = CenterScoringPolicy(allow_plain=True)
    lr = models["lr"]
    rows = np.arange(40)
    mark = session.transcript.mark()
    run_side(session, lr, rows=rows, backend="plain")
    to_center = session.transcript.since(mark).payloads(Role.BANK, "score")
    u_b = bank_scores(lr.bank_model(), session.bank.aligned_features(rows))
    with pytest.raises(AssertionError, match="found in the other party"):
        assert_absent(to_center, distinctive(u_b))


def test_transcript_audit_secureboost_both_directions(session, models):
    sb = models["secureboost"]
    mark = session.transcript.mark()
    side = run_side(session, sb)
    part = session.transcript.since(mark)
    to_bank = part.payloads(Role.CENTER, "score")
    to_center = part.payloads(Role.BANK, "score")
    center_part = session.center.model_parts[sb.model_id_]
    thresholds = [
        n["threshold"] for t in center_part.trees.values() for n in t.values() if "threshold" in n
    ]
    leaf_values = [n["value"] for t in sb.model_.trees for n in t.values() if n["kind"] == "leaf"]
    bank_thresholds = [
        n["threshold"] for t in sb.model_.trees for n in t.values() if n["kind"] == "bank"
    ]
    assert_absent(to_bank, distinctive(thresholds))  # center splits stay at the center
    assert_absent(to_center, distinctive(leaf_values))  # leaf values stay at the bank
    assert_absent(to_center, distinctive(bank_thresholds))
    X = session.bank.aligned_features(side.scored_rows)
    local, columns = side.view.columns(X)
    assert_absent(to_center, distinctive(columns))  # the bank's A_s columns
    assert_absent(to_center, distinctive(local))
    center_share = plaintext_logits(session, sb, side.scored_rows) - local
    assert_absent(to_bank, distinctive(center_share))  # what the center adds, per enterprise
    # the bank never receives per-split directions: only one encrypted total per enterprise
    admitted = codec.unpack(to_bank[1])
    assert set(admitted) == {"rows", "excluded_rows", "excluded_reasons", "noise_std", "categories"}
    scores = codec.unpack(to_bank[2])
    vectors = deserialize_vectors(side.crypto.owner, scores["scores"])
    assert sum(v.size() for v in vectors) == side.scored_rows.size


# --------------------------------------------------------------------------------------------
# governance: consent, budget, audit
# --------------------------------------------------------------------------------------------


def make_gate(tmp_path, ids, *, per_day=100_000):
    audit = AuditLog(tmp_path / "audit.jsonl")
    consents = ConsentRegistry(audit=audit)
    start = datetime.now() - timedelta(days=30)
    for i in ids:
        consents.grant(i, BANK, "pre_authorization", start, start + timedelta(days=400))
    budget = QueryBudget({BANK: BudgetLimits(per_day=per_day)}, default=None, audit=audit)
    return ScoringGate(consents, budget, audit), consents, audit


def test_unconsented_and_revoked_enterprises_never_reach_the_encrypted_path(
    session, models, tmp_path
):
    aligned = [str(i) for i in session.aligned_ids]
    bank_only = sorted(set(map(str, session.bank.table.ids)) - set(aligned))[:2]
    candidates = aligned[:40] + bank_only
    no_consent, revoked = aligned[3], aligned[7]
    gate, consents, audit = make_gate(tmp_path, [i for i in aligned[:40] if i != no_consent])
    consents.revoke(revoked, BANK, "pre_authorization")

    seen: list[np.ndarray] = []
    original = session.center.aligned_features

    def spy(rows=None):
        seen.append(np.asarray(rows))
        return original(rows)

    session.center.aligned_features = spy
    mark = session.transcript.mark()
    try:
        decisions, summary = preauthorize(
            session, models["scorecard"], candidates, gate=gate, bank_id=BANK
        )
    finally:
        del session.center.aligned_features
    assert summary["excluded"] == {NOT_AT_CENTER: 2, "no_consent": 1, "revoked": 1}
    assert summary["excluded_ids"][no_consent] == "no_consent"
    assert summary["excluded_ids"][revoked] == "revoked"
    assert all(summary["excluded_ids"][i] == NOT_AT_CENTER for i in bank_only)
    assert no_consent not in set(decisions["id"]) and revoked not in set(decisions["id"])
    assert len(decisions) == summary["scored"] == 38
    # the center never read the excluded enterprises' features
    excluded_rows = {aligned.index(no_consent), aligned.index(revoked)}
    assert seen and not excluded_rows & set(np.concatenate(seen).tolist())
    # the bank encrypted (and the center computed on) exactly the admitted enterprises
    part = session.transcript.since(mark)
    to_center = part.payloads(Role.BANK, "score")
    batch = codec.unpack(to_center[1])  # admitted.ok
    vectors = deserialize_vectors(CKKSKeyOwner(SCORING_CKKS_PARAMS), batch["vectors"])
    assert sum(v.size() for v in vectors) == 38
    # audit: admitted and completed, with counts and digests only
    actions = [e.action for e in audit.entries()]
    assert "job_admitted" in actions and "job_completed" in actions
    text = (tmp_path / "audit.jsonl").read_text()
    assert not any(i in text for i in aligned[:40])
    assert audit.verify()


def test_budget_exhaustion_raises_and_is_logged(session, models, tmp_path):
    aligned = [str(i) for i in session.aligned_ids]
    gate, _, audit = make_gate(tmp_path, aligned[:20], per_day=10)
    session.center.services.update({"gate": gate, "bank_id": BANK})
    side = ScoreBank(session.bank, model=models["lr"], rows=np.arange(20))
    mark = session.transcript.mark()
    with pytest.raises(BudgetExhaustedError):
        session.run(side)
    assert side.refused is not None and side.refused["reason"] == "budget_exhausted"
    assert side.logits is None
    types = [e.msg_type for e in session.transcript.since(mark).entries]
    assert "admitted" not in types and "scores" not in types  # no cryptography ran
    refused = [e for e in audit.entries() if e.action == "job_refused"]
    assert len(refused) == 1 and refused[0].details["reason"] == "budget_exhausted"
    assert audit.verify()
    with pytest.raises(BudgetExhaustedError):
        preauthorize(session, models["lr"], aligned[:20], gate=gate, bank_id=BANK)


# --------------------------------------------------------------------------------------------
# policy, reasons, output noise
# --------------------------------------------------------------------------------------------


def test_policy_grades_and_lines_follow_the_configuration(session, models):
    policy = PreAuthorizationPolicy(
        grades=GradeBands.by_score([660.0, 600.0], labels=["A", "B", "C"]),
        lines=CreditLinePolicy(
            base_lines={"A": 1_000_000, "B": 400_000, "C": 0},
            size_indicators={"monthly_inflow": SizeIndicator(reference=20.0)},
            min_factor=0.5,
            max_factor=1.5,
            cap=1_200_000,
            rounding=50_000,
            preauthorize_through="A",
            refer_through="B",
        ),
    )
    decisions, summary = preauthorize(session, models["scorecard"], policy=policy)
    factor = policy.scaling.factor
    offset = policy.scaling.offset
    logit = np.log(decisions["pd"] / (1 - decisions["pd"]))
    assert np.allclose(decisions["score"], offset - factor * logit)
    grade = np.where(decisions["score"] >= 660, "A", np.where(decisions["score"] >= 600, "B", "C"))
    assert (decisions["grade"].to_numpy() == grade).all()
    inflow = session.bank.table.X.set_index(pd.Index(session.bank.table.ids.astype(str)))
    inflow = inflow.loc[decisions["id"], "monthly_inflow"].fillna(0).clip(lower=0).to_numpy()
    size = np.clip(inflow / 20.0, 0.5, 1.5)
    base = decisions["grade"].map({"A": 1_000_000, "B": 400_000, "C": 0}).to_numpy()
    line = np.floor(np.minimum(base * size, 1_200_000) / 50_000 + 1e-9) * 50_000
    line = np.where(decisions["grade"] == "C", 0, line)
    assert (decisions["credit_line"].to_numpy() == line).all()
    assert set(decisions.loc[decisions["grade"] == "A", "decision"]) <= {"pre-authorize", "refer"}
    assert set(decisions.loc[decisions["grade"] == "C", "decision"]) <= {"decline"}
    assert (
        summary["by_grade"]
        == decisions["grade"].value_counts().reindex(["A", "B", "C"], fill_value=0).to_dict()
    )
    assert summary["total_credit_line"] == int(
        decisions.loc[decisions["decision"] == "pre-authorize", "credit_line"].sum()
    )


def test_reason_codes_name_bank_features_and_center_categories_only(session, models):
    decisions, _ = preauthorize(session, models["lr"], top_k=2)
    codes = [c for text in decisions["reasons"] for c in text.split(";") if c]
    assert codes, "some enterprise should have reasons"
    bank_feats = set(models["lr"].bank_features_)
    center_feats = set(session.center.feature_names)
    for code in codes:
        side, name = code.split(":", 1)
        assert (side == "bank" and name in bank_feats) or (side == "center" and name in CATEGORIES)
        assert name not in center_feats
    assert any(c.startswith("center:") for c in codes)
    # the center decides how many categories it names (here none)
    session.center.services["scoring_policy"] = CenterScoringPolicy(reason_top_k=0)
    decisions, _ = preauthorize(session, models["lr"], list(session.aligned_ids[:50]))
    assert not any("center:" in text for text in decisions["reasons"])


def test_noise_output_adds_calibrated_noise_and_the_center_can_impose_it(session, models):
    rows = np.arange(len(session.aligned_ids))
    exact = plaintext_logits(session, models["lr"], rows)
    side = run_side(session, models["lr"], output="noise", noise_std=0.5)
    assert side.noise_std == 0.5
    diff = side.logits - exact
    assert 0.4 < diff.std() < 0.6 and abs(diff.mean()) < 0.1
    session.center.services["scoring_policy"] = CenterScoringPolicy(min_noise_std=0.3)
    side = run_side(session, models["secureboost"])  # the bank asked for exact output
    assert side.noise_std == 0.3
    diff = side.logits - plaintext_logits(session, models["secureboost"], rows)
    assert 0.2 < diff.std() < 0.4


# --------------------------------------------------------------------------------------------
# bad input, persistence, CLI
# --------------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_typed_errors(session, models):
    ids = [str(i) for i in session.aligned_ids[:5]]
    with pytest.raises(DuplicateIdentifierError):
        preauthorize(session, models["lr"], ids + ids[:1])
    with pytest.raises(DataValidationError, match="not in the bank's table"):
        preauthorize(session, models["lr"], ids + ["91110000600037341L"])
    with pytest.raises(DataValidationError, match="noise_std"):
        ScoreBank(session.bank, model=models["lr"], output="noise", noise_std=0.0)
    with pytest.raises(DataValidationError, match="rows"):
        ScoreBank(session.bank, model=models["lr"], rows=[0, 0])
    with pytest.raises(DataValidationError, match="purpose"):
        ScoreBank(session.bank, model=models["lr"], purpose="marketing")

    class Liar(ScoreBank):  # claims center splits the center's part does not have
        def _start(self, payload):
            job = super()._start(payload)
            job["nodes"] = job["nodes"][1:]
            job["columns"] -= 1
            return job

    side = Liar(session.bank, model=models["secureboost"], rows=[0, 1])
    with pytest.raises(ProtocolError, match="center splits do not match"):
        session.run(side)

    class Truncating(ScoreBank):  # sends one vector too few
        def _next(self, b):
            reply = super()._next(b)
            if reply["vectors"] is not None:
                raw = deserialize_vectors(self.crypto.owner, reply["vectors"])
                reply["vectors"] = serialize_vectors(raw[:-1])
            return reply

    side = Truncating(session.bank, model=models["secureboost"], rows=np.arange(50))
    with pytest.raises(MalformedMessageError, match=r"expected \d+ column\(s\) of vectors"):
        session.run(side)
    side.close()


def test_bank_half_pickles_with_its_key(session, models):
    side = ScoreBank(session.bank, model=models["lr"], rows=[0, 1, 2])
    side.handle("start", {"version": 1, "n_aligned": len(session.aligned_ids)})
    clone = pickle.loads(pickle.dumps(side))
    x = np.array([0.25, -1.5, 3.0])
    blob = side.crypto.encrypt(x[:, None])
    assert np.abs(clone.crypto.decrypt(blob, 3) - x).max() < 1e-6
    side.close()
    clone.close()


def test_cli_score_end_to_end(data, session, models, tmp_path):
    from jointcredit.cli_score import add_score_commands

    sc = models["scorecard"]
    sc.save(tmp_path / "model" / "bank")
    save_center_model(session.center, sc.model_id_, tmp_path / "model" / "center")
    candidates = data.bank.drop(columns=["default_12m"]).head(300)
    candidates.to_csv(tmp_path / "candidates.csv", index=False)
    data.center.to_csv(tmp_path / "center.csv", index=False)
    at_center = [i for i in candidates["id"] if i in set(data.center["id"])]
    consent = pd.DataFrame(
        {"id": at_center[:-5], "bank": BANK, "purpose": "scoring",
         "granted_at": "2020-01-01", "expires_at": "2099-12-31"}
    )  # fmt: skip
    consent.to_csv(tmp_path / "consents.csv", index=False)
    parser = argparse.ArgumentParser(prog="jointcredit")
    add_score_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out" / "preauth.csv"
    args = parser.parse_args(
        ["score", "--model", str(tmp_path / "model"), "--bank", str(tmp_path / "candidates.csv"),
         "--center", str(tmp_path / "center.csv"), "--id-col", "id",
         "--consents", str(tmp_path / "consents.csv"), "--bank-id", BANK,
         "--whitelist", str(tmp_path / "out" / "whitelist.csv"), "--out", str(out)]
    )  # fmt: skip
    assert args.func(args) == 0
    decisions = pd.read_csv(out, dtype={"id": str})
    assert list(decisions.columns) == [
        "id", "pd", "score", "grade", "credit_line", "decision", "reasons"
    ]  # fmt: skip
    assert len(decisions) == len(at_center) - 5
    excluded = pd.read_csv(out.with_name("preauth.excluded.csv"), dtype=str)
    assert sorted(excluded["reason"].value_counts().items()) == sorted(
        {NOT_AT_CENTER: 300 - len(at_center), "no_consent": 5}.items()
    )
    summary = json.loads(out.with_name("preauth.summary.json").read_text())
    assert summary["scored"] == len(decisions) and summary["protocol"]["round_trips"] == 3
    # the scorecard's own scaling: scores are the scorecard's points
    expected = sc.offset_ - sc.factor_ * np.log(decisions["pd"] / (1 - decisions["pd"]))
    assert np.allclose(decisions["score"], expected, atol=1e-6)
    whitelist = pd.read_csv(tmp_path / "out" / "whitelist.csv")
    assert len(whitelist) == (decisions["decision"] == "pre-authorize").sum()
    assert AuditLog(out.with_name("preauth.audit.jsonl")).verify()
    assert math.isfinite(summary["total_credit_line"])


def test_secureboost_model_directory_round_trip(session, models, tmp_path):
    from jointcredit.scoring.preauth import load_joint_model

    sb = models["secureboost"]
    sb.save(tmp_path / "bank")
    (tmp_path / "center").mkdir()
    save_center_part(session.center, sb.model_id_, tmp_path / "center" / "part.json")
    part = session.center.model_parts.pop(sb.model_id_)
    try:
        loaded = load_joint_model(tmp_path, session)
        # a deployment builds the bank half from its own job file through the registry
        from jointcredit.protocol import registry

        built = registry.bank_side("score", session.bank, {"model_dir": str(tmp_path / "bank")})
        assert isinstance(built, ScoreBank) and built.view.model_id == sb.model_id_
        rows = np.arange(30)
        side = run_side(session, loaded, rows=rows)
        assert (
            np.abs(sigmoid(side.logits) - sigmoid(plaintext_logits(session, sb, rows))).max()
            < PD_TOL
        )
    finally:
        session.center.model_parts[sb.model_id_] = part
