"""ECDH PSI: correctness against the plaintext intersection, reveal modes, peer-input rejection,
and a transcript audit that no raw or hashed ID of either party crosses the wire."""

from __future__ import annotations

import hashlib
import os
import pickle

import gmpy2
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcredit.data.schema import PartyTable, TableSchema
from jointcredit.data.uscc import normalize_ids
from jointcredit.errors import (
    CryptoError,
    DataValidationError,
    DuplicateIdentifierError,
    InvalidPeerInputError,
    MalformedMessageError,
    ProtocolError,
    RemotePartyError,
    UnexpectedMessageError,
)
from jointcredit.parties import BankParty
from jointcredit.protocol import codec, registry
from jointcredit.protocol.channel import InProcessTransport, RecordingTransport, Transcript
from jointcredit.protocol.envelope import Role
from jointcredit.protocol.session import BankEndpoint, CenterChannel
from jointcredit.psi import ecdh
from jointcredit.psi.ecdh import PsiBankSide, PsiCenterSide
from jointcredit.session import JointSession

P = 2**255 - 19
# Canonical encodings of the low-order points of Curve25519 and its twist (orders 1..8).
LOW_ORDER = [
    (0).to_bytes(32, "little"),
    (1).to_bytes(32, "little"),
    (325606250916557431795983626356110631294008115727848805560023387167927233504).to_bytes(
        32, "little"
    ),
    (39382357235489614581723060781553021112529911719440698176882885853963445705823).to_bytes(
        32, "little"
    ),
    (P - 1).to_bytes(32, "little"),
]


def table(ids, *, label: bool = False) -> PartyTable:
    ids = np.asarray(list(ids), dtype=object)
    schema = TableSchema(
        id_col="id", label_col="y" if label else None, feature_cols=("x",), id_kind="plain"
    )
    X = pd.DataFrame({"x": np.arange(len(ids), dtype=np.float64)})
    y = (np.arange(len(ids)) % 2) if label else None
    return PartyTable(ids=ids, X=X, y=y, schema=schema)


def align(bank_ids, center_ids, *, reveal_to: str = "both", keep_bytes: bool = False):
    session = JointSession.in_process(
        table(bank_ids, label=True), table(center_ids), keep_bytes=keep_bytes
    )
    session.align(reveal_to=reveal_to)
    return session


def norm(value: str) -> str:
    return value.strip().upper()


def honest_points(n: int) -> bytes:
    return ecdh.blind_ids([f"P{i}" for i in range(n)], ecdh.new_scalar(), os.urandom(32))


def split_points(blob: bytes) -> list[bytes]:
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


# --- hashing and blinding ----------------------------------------------------------------------


def test_hash_to_curve_is_deterministic_on_the_curve_and_salted():
    ids = [f"9111000060003{i:04d}L" for i in range(200)]
    salt = os.urandom(32)
    points = ecdh.hash_to_curve(ids, salt)
    assert points == ecdh.hash_to_curve(ids, salt)
    for i in range(len(ids)):
        u = int.from_bytes(points[32 * i : 32 * i + 32], "little")
        assert u < P
        # On the curve proper, never the twist: u^3 + A u^2 + u is a non-zero square mod p.
        assert gmpy2.jacobi((u * (u * (u + 486662) + 1)) % P, P) == 1
    other = ecdh.hash_to_curve(ids, os.urandom(32))
    assert all(points[32 * i : 32 * i + 32] != other[32 * i : 32 * i + 32] for i in range(200))


def test_blinding_commutes_so_doubly_blinded_values_match():
    ids = [f"ID{i}" for i in range(50)]
    salt, alpha, beta = os.urandom(32), ecdh.new_scalar(), ecdh.new_scalar()
    a_then_b = ecdh.reblind(ecdh.blind_ids(ids, alpha, salt), beta)
    b_then_a = ecdh.reblind(ecdh.blind_ids(ids, beta, salt), alpha)
    assert a_then_b == b_then_a
    assert ecdh.blind_ids(ids, alpha, salt) != ecdh.blind_ids(ids, beta, salt)


def test_process_pool_gives_the_same_points_and_global_positions(monkeypatch):
    monkeypatch.setattr(ecdh, "PARALLEL_MIN_POINTS", 10)
    ids = [f"ID{i}" for i in range(230)]
    salt, alpha, beta = os.urandom(32), ecdh.new_scalar(), ecdh.new_scalar()
    serial = ecdh.blind_ids(ids, alpha, salt, n_jobs=1)
    parallel = ecdh.blind_ids(ids, alpha, salt, n_jobs=2, chunk_size=40)
    assert parallel == serial
    assert ecdh.reblind(serial, beta, n_jobs=2, chunk_size=40) == ecdh.reblind(
        serial, beta, n_jobs=1
    )
    bad = bytearray(serial)
    for pos, point in ((5, LOW_ORDER[0]), (97, LOW_ORDER[2]), (229, LOW_ORDER[4])):
        bad[32 * pos : 32 * pos + 32] = point
    with pytest.raises(InvalidPeerInputError) as info:
        ecdh.reblind(bytes(bad), beta, n_jobs=2, chunk_size=40, field="blinded")
    assert info.value.positions == [5, 97, 229]
    assert "3 of 230" in str(info.value) and "blinded" in str(info.value)


def test_full_protocol_through_the_pool(monkeypatch):
    monkeypatch.setattr(ecdh, "PARALLEL_MIN_POINTS", 10)
    monkeypatch.setattr(ecdh, "DEFAULT_CHUNK_SIZE", 25)
    bank_ids = [f"E{i:04d}" for i in range(0, 160)]
    center_ids = [f"e{i:04d}" for i in range(100, 300)]
    session = align(bank_ids, center_ids)
    assert list(session.bank.aligned_ids) == [f"E{i:04d}" for i in range(100, 160)]
    assert list(session.center.aligned_ids) == [f"e{i:04d}" for i in range(100, 160)]


def test_an_id_hashing_to_a_low_order_point_is_refused_without_naming_it(monkeypatch):
    monkeypatch.setattr(ecdh, "_hash_to_u", lambda base, data: LOW_ORDER[1])
    with pytest.raises(CryptoError) as info:
        ecdh.blind_ids(["SECRETID"], ecdh.new_scalar(), os.urandom(32))
    assert "SECRETID" not in str(info.value)


# --- correctness -------------------------------------------------------------------------------

id_text = st.text(alphabet="ABCDEF0123", min_size=1, max_size=5)


@settings(max_examples=25, deadline=None)
@given(
    shared=st.sets(id_text, max_size=25),
    bank_only=st.sets(id_text, max_size=25),
    center_only=st.sets(id_text, max_size=25),
    variants=st.randoms(use_true_random=False),
)
def test_psi_equals_plaintext_intersection(shared, bank_only, center_only, variants):
    bank_ids = sorted(shared | bank_only)
    center_ids = sorted(shared | (center_only - bank_only))
    # The center spells some ids differently; normalisation must still match them.
    center_ids = [
        f" {c.lower()}\t" if variants.random() < 0.5 else c
        for c in variants.sample(center_ids, len(center_ids))
    ]
    session = align(bank_ids, center_ids)
    expected = sorted(set(bank_ids) & {norm(c) for c in center_ids})
    assert list(session.bank.aligned_ids) == expected
    assert [norm(c) for c in session.center.aligned_ids] == expected
    assert session.transcript.summary("psi")["round_trips"] == 2


def test_case_and_whitespace_variants_align_in_the_same_order():
    bank_ids = ["91110000600037341L", "918587832P12455XH0", "91440101MA59XXXX1A"]
    center_ids = [" 91110000600037341l", "918587832p12455xh0\u3000", "91440101MA59XXXX1B"]
    session = align(bank_ids, center_ids)
    assert list(session.bank.aligned_ids) == ["91110000600037341L", "918587832P12455XH0"]
    # Each party keeps its own spelling (so it can find its rows), in the shared order.
    assert list(session.center.aligned_ids) == [" 91110000600037341l", "918587832p12455xh0\u3000"]
    assert list(session.bank.aligned_features()["x"]) == [0.0, 1.0]
    assert list(session.center.aligned_features()["x"]) == [0.0, 1.0]


def test_empty_intersection():
    session = align([f"B{i}" for i in range(40)], [f"C{i}" for i in range(60)])
    assert session.bank.aligned_ids.size == 0
    assert session.center.aligned_ids is not None and session.center.aligned_ids.size == 0


def test_a_party_with_no_ids():
    session = align([f"B{i}" for i in range(10)], [])
    assert session.bank.aligned_ids.size == 0 and session.center.aligned_ids.size == 0


def test_full_overlap_in_different_orders():
    ids = [f"E{i:05d}" for i in range(300)]
    rng = np.random.default_rng(1)
    session = align(rng.permutation(ids), rng.permutation(ids))
    assert list(session.bank.aligned_ids) == ids
    assert list(session.center.aligned_ids) == ids


def test_session_align_returns_bank_ids_and_enables_row_lookups():
    session = JointSession.in_process(table(["A", "B", "C"], label=True), table(["C", "A", "Z"]))
    aligned = session.align()
    assert list(aligned) == ["A", "C"] and list(session.aligned_ids) == ["A", "C"]
    assert list(session.bank.aligned_labels()) == [0, 0]
    assert list(session.center.aligned_features()["x"]) == [1.0, 0.0]
    assert "psi" in registry.protocols()


# --- reveal modes ------------------------------------------------------------------------------


def test_bank_only_mode_center_learns_only_the_bank_set_size():
    bank_ids = [f"B{i}" for i in range(30)] + ["S1", "S2"]
    center_ids = [f"C{i}" for i in range(50)] + ["S1", "S2"]
    session = JointSession.in_process(
        table(bank_ids, label=True), table(center_ids), keep_bytes=True
    )
    session.center.aligned_ids = np.array(["stale"], dtype=object)
    session.align(reveal_to="bank")
    assert list(session.bank.aligned_ids) == ["S1", "S2"]
    assert session.center.aligned_ids is None
    start_ok, match_ok = [codec.unpack(p) for p in session.transcript.payloads(Role.BANK, "psi")]
    assert match_ok == {}  # nothing about the intersection, not even its size
    assert start_ok["n"] == len(bank_ids) and start_ok["reveal_to"] == "bank"
    assert set(start_ok) == {"version", "reveal_to", "salt", "n", "blinded"}


def test_reveal_mode_is_validated():
    with pytest.raises(DataValidationError) as info:
        PsiBankSide(BankParty(table(["A"], label=True)), reveal_to="center")
    assert info.value.field == "reveal_to"


# --- privacy audit -----------------------------------------------------------------------------


def _encodings(value: str, salt: bytes) -> list[bytes]:
    raw = value.encode()
    return [
        raw,
        value.lower().encode(),
        value.encode("utf-16-le"),
        hashlib.sha256(raw).digest(),
        hashlib.sha256(raw).hexdigest().encode(),
        hashlib.sha512(raw).digest(),
        hashlib.sha512(raw).digest()[:16],
        ecdh.hash_to_curve([value], salt),  # the unblinded point H(id) itself
    ]


def test_transcript_never_carries_raw_or_hashed_ids():
    shared = [f"SHARED{i:012d}" for i in range(20)]
    bank_secret = [f"BANKONLY{i:010d}" for i in range(30)]
    center_secret = [f"CENTERONLY{i:08d}" for i in range(40)]
    session = align(shared + bank_secret, shared + center_secret, keep_bytes=True)
    to_center = b"".join(session.transcript.payloads(Role.BANK, "psi"))
    to_bank = b"".join(session.transcript.payloads(Role.CENTER, "psi"))
    start = codec.unpack(session.transcript.payloads(Role.CENTER, "psi")[0])
    start_ok = codec.unpack(session.transcript.payloads(Role.BANK, "psi")[0])
    salt = ecdh.session_salt(start["salt"], start_ok["salt"])
    for value in bank_secret + shared:
        for encoding in _encodings(value, salt):
            assert encoding not in to_center, value
    for value in center_secret + shared:
        for encoding in _encodings(value, salt):
            assert encoding not in to_bank, value
    assert list(session.bank.aligned_ids) == shared


def test_blinded_lists_are_shuffled():
    bank = BankParty(table([f"B{i}" for i in range(200)], label=True))
    side = PsiBankSide(bank)
    center_salt = os.urandom(32)
    reply = side.handle("start", {"version": 1, "salt": center_salt})
    salt = ecdh.session_salt(center_salt, reply["salt"])
    in_table_order = ecdh.blind_ids(side._ids, side._scalar, salt)
    as_sent = reply["blinded"]
    assert sorted(split_points(as_sent)) == sorted(split_points(in_table_order))
    assert as_sent != in_table_order


# --- bad input ---------------------------------------------------------------------------------


def test_normalisation_matches_the_loader():
    raw = [
        " 91110000600037341l\t",
        "\uff19\uff11\uff14\uff14\uff10101MA59XXXX1a",  # full-width digits from a Chinese IME
        "918587832p12455xh0\u3000",  # ideographic space
        25115.0,
        "abc",
        "ﬁrm-1",  # NFKC expands the ligature
    ]
    assert list(ecdh.prepare_ids(raw)) == list(normalize_ids(raw))
    assert ecdh.prepare_ids(raw)[1] == "91440101MA59XXXX1A"


def test_duplicates_after_normalisation_are_rejected_before_any_message():
    with pytest.raises(DuplicateIdentifierError) as info:
        ecdh.prepare_ids(["a1", " A1", "B2", "b2", "C"], field="uscc")
    assert info.value.field == "uscc" and info.value.duplicates == ["A1", "B2"]
    with pytest.raises(DataValidationError, match="empty id"):
        ecdh.prepare_ids(["A", "  "])

    session = JointSession.in_process(table(["A", "B"], label=True), table(["x", " X", "A"]))
    with pytest.raises(DuplicateIdentifierError):
        session.align()
    session = JointSession.in_process(table(["A", "a "], label=True), table(["A"]))
    with pytest.raises(DuplicateIdentifierError):
        session.align()
    assert session.transcript.summary("psi")["messages"] == 0


def test_deployment_factory_withholds_bank_ids_from_errors():
    bank = BankParty(table(["SECRETID", "secretid"], label=True))
    with pytest.raises(DataValidationError) as info:
        registry.bank_side("psi", bank, {})
    assert not isinstance(info.value, DuplicateIdentifierError)
    assert "SECRETID" not in str(info.value).upper()
    side = registry.bank_side("psi", BankParty(table(["A"], label=True)), {"reveal_to": "bank"})
    assert isinstance(side, PsiBankSide) and side.reveal_to == "bank"


def test_low_order_points_are_rejected_naming_positions():
    points = bytearray(honest_points(10))
    points[3 * 32 : 4 * 32] = LOW_ORDER[1]
    points[7 * 32 : 8 * 32] = LOW_ORDER[3]
    with pytest.raises(InvalidPeerInputError) as info:
        ecdh.reblind(bytes(points), ecdh.new_scalar(), field="psi/match.blinded")
    assert info.value.positions == [3, 7] and info.value.field == "psi/match.blinded"
    assert "2 of 10 low-order" in str(info.value)
    for point in LOW_ORDER:
        with pytest.raises(InvalidPeerInputError):
            ecdh.reblind(point, ecdh.new_scalar())


def test_non_canonical_and_malformed_points_are_rejected():
    good = honest_points(4)
    top_bit = bytearray(good)
    top_bit[2 * 32 + 31] |= 0x80
    with pytest.raises(InvalidPeerInputError, match="non-canonical") as info:
        ecdh.check_points(bytes(top_bit))
    assert info.value.positions == [2]
    for value in (P, P + 5, 2**255 - 1):
        with pytest.raises(InvalidPeerInputError, match="non-canonical"):
            ecdh.check_points(good + value.to_bytes(32, "little"))
    with pytest.raises(MalformedMessageError):
        ecdh.check_points(good[:-1])
    with pytest.raises(MalformedMessageError):
        ecdh.check_points(list(good))


def test_bank_rejects_low_order_points_and_keeps_its_state():
    bank = BankParty(table(["A", "B", "C"], label=True))
    side = PsiBankSide(bank)
    center_salt = os.urandom(32)
    start_ok = side.handle("start", {"version": 1, "salt": center_salt})
    salt = ecdh.session_salt(center_salt, start_ok["salt"])
    alpha = ecdh.new_scalar()
    honest = {
        "blinded": ecdh.blind_ids(["B", "C", "D"], alpha, salt),
        "double": ecdh.reblind(start_ok["blinded"], alpha, out_bytes=ecdh.MATCH_BYTES),
    }
    rogue = dict(honest, blinded=LOW_ORDER[0] + honest["blinded"][32:])
    with pytest.raises(InvalidPeerInputError) as info:
        side.handle("match", rogue)
    assert info.value.positions == [0]
    assert bank.aligned_ids is None
    with pytest.raises(MalformedMessageError):
        side.handle("match", dict(honest, double=honest["double"][:-1]))
    with pytest.raises(InvalidPeerInputError, match="repeated"):
        side.handle("match", dict(honest, blinded=honest["blinded"][:32] * 3))
    # Nothing was changed by the rejected messages: the honest one still completes.
    reply = side.handle("match", honest)
    assert list(bank.aligned_ids) == ["B", "C"] and reply["size"] == 2
    with pytest.raises(UnexpectedMessageError):
        side.handle("match", honest)  # secrets are gone after the protocol ends
    with pytest.raises(UnexpectedMessageError):
        side.handle("finish", {})


def test_rogue_center_gets_a_typed_remote_error():
    session = JointSession.in_process(table(["A", "B"], label=True), table(["A"]))
    session.endpoint.attach(PsiBankSide(session.bank))
    channel = session.channel.bind("psi")
    start_ok = channel.request("start", {"version": 1, "salt": os.urandom(32)})
    with pytest.raises(RemotePartyError) as info:
        channel.request(
            "match",
            {"blinded": LOW_ORDER[2] * 2, "double": b"\0" * (16 * start_ok["n"])},
        )
    assert info.value.remote_type == "InvalidPeerInputError"
    assert "2 of 2 low-order" in info.value.remote_message
    assert session.bank.aligned_ids is None


class LowOrderBank(PsiBankSide):
    def _start(self, payload):
        reply = super()._start(payload)
        reply["blinded"] = LOW_ORDER[4] + reply["blinded"][32:]
        return reply


class LyingBank(PsiBankSide):
    def _match(self, payload):
        reply = super()._match(payload)
        reply["positions"] = reply["positions"][:-1]
        reply["size"] -= 1
        return reply


class OutOfRangeBank(PsiBankSide):
    def _match(self, payload):
        reply = super()._match(payload)
        reply["positions"] = reply["positions"] + 1000
        return reply


def test_center_rejects_a_rogue_bank_and_keeps_its_state():
    for rogue, error in (
        (LowOrderBank, InvalidPeerInputError),
        (LyingBank, ProtocolError),
        (OutOfRangeBank, MalformedMessageError),
    ):
        session = JointSession.in_process(table(["A", "B", "C"], label=True), table(["B", "C"]))
        with pytest.raises(error):
            session.run(rogue(session.bank))
        assert session.center.aligned_ids is None, rogue.__name__


def test_bank_half_survives_pickling_between_messages():
    """Deployments save the bank endpoint to disk between Flower messages."""
    state = {"endpoint": BankEndpoint()}
    bank = BankParty(table(["A", "B", "C", "D"], label=True))
    state["endpoint"].attach(PsiBankSide(bank))

    def receive(request: bytes) -> bytes:
        endpoint = pickle.loads(pickle.dumps(state["endpoint"]))
        reply = endpoint.receive(request)
        state["endpoint"] = endpoint
        return reply

    transport = RecordingTransport(InProcessTransport(receive), Transcript())
    channel = CenterChannel(transport).open()
    center = JointSession.in_process(table(["Z"], label=True), table(["D", "B", "Q"])).center
    result = PsiCenterSide(center).run(channel.bind("psi"))
    assert list(result) == ["B", "D"]
    assert list(state["endpoint"].sides["psi"].bank.aligned_ids) == ["B", "D"]
