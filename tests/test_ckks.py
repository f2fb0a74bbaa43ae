"""CKKS backend: parameter policy, owner/peer round trips, precision against numpy, rejection."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jointcredit.crypto.ckks import (
    MAX_COEFF_MODULUS_BITS_128,
    CKKSKeyOwner,
    CKKSParams,
    CKKSPeer,
    deserialize_vectors,
    serialize_vectors,
)
from jointcredit.errors import (
    CryptoError,
    EncodingOverflowError,
    KeyPolicyError,
    MalformedMessageError,
)

# measured ~1.4e-7 for one product of values in [-1, 1] at scale 2^40; 1e-5 leaves headroom
PRODUCT_ATOL = 1e-5


@pytest.fixture(scope="module")
def owner() -> CKKSKeyOwner:
    return CKKSKeyOwner(n_threads=1)


@pytest.fixture(scope="module")
def peer(owner) -> CKKSPeer:
    return CKKSPeer.from_public_bytes(owner.public_context_bytes())


def ship(src, dst, vectors):
    """What crosses the wire: bytes out of one party, vectors linked to the other's context."""
    return dst.deserialize_vectors(src.serialize_vectors(vectors))


# --- parameter policy ---------------------------------------------------------------------------


def test_default_params():
    p = CKKSParams().validate()
    assert p.slots == 4096 and p.depth == 2 and p.total_coeff_bits == 200
    assert p.max_abs == 2.0**19
    assert CKKSParams(coeff_mod_bit_sizes=[60, 40, 40, 60]) == p  # lists are normalised


@pytest.mark.parametrize(("n", "limit"), sorted(MAX_COEFF_MODULUS_BITS_128.items()))
def test_security_limit_exactly_and_one_bit_over(n, limit):
    low = n.bit_length() + 2  # smallest prime size allowed for this N (primes are 1 mod 2N)
    # build a chain summing to exactly `limit` with primes of at most 60 bits
    k = max(2, -(-limit // 60))
    bits = [limit // k + (i < limit % k) for i in range(k)]
    assert sum(bits) == limit and all(low <= b <= 60 for b in bits)
    scale = min(bits[0] - 1, 20)
    CKKSParams(n, tuple(bits), scale).validate()
    over = list(bits)
    over[0] += 1
    if over[0] > 60:
        over = [*bits, low]
    with pytest.raises(KeyPolicyError, match="coeff_mod_bit_sizes.*128-bit"):
        CKKSParams(n, tuple(over), scale).validate()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (CKKSParams(3000), "poly_modulus_degree"),
        (CKKSParams(8192, (60, 60, 60, 60)), "coeff_mod_bit_sizes"),
        (CKKSParams(8192, (61, 40, 60)), "coeff_mod_bit_sizes"),
        (CKKSParams(8192, (60,)), "coeff_mod_bit_sizes"),
        (CKKSParams(8192, (60, 40, 60), 60), "global_scale_bits"),
        (CKKSParams(8192, (30, 40, 30), 40), "global_scale_bits"),
    ],
)
def test_invalid_params_name_the_parameter(params, field):
    with pytest.raises(KeyPolicyError, match=field):
        params.validate()
    with pytest.raises(KeyPolicyError, match=field):
        CKKSKeyOwner(params)


# --- correctness and precision -----------------------------------------------------------------


def test_encrypt_decrypt_chunked(owner):
    x = np.random.default_rng(1).uniform(-100, 100, size=owner.slots + 123)
    vecs = owner.encrypt(x)
    assert [v.size() for v in vecs] == [owner.slots, 123]
    assert np.allclose(owner.decrypt(vecs, x.size), x, atol=1e-5)
    assert owner.decrypt(vecs, 10).shape == (10,)
    with pytest.raises(ValueError):
        owner.decrypt(vecs, x.size + 1)


def test_owner_to_peer_product_round_trip(owner, peer):
    rng = np.random.default_rng(2)
    n = owner.slots + 500
    x, w, b = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    at_peer = ship(owner, peer, owner.encrypt(x))
    res = peer.rerandomize(peer.add_plain(peer.mul_plain(at_peer, w), b))
    got = owner.decrypt(ship(peer, owner, res), n)
    assert np.max(np.abs(got - (x * w + b))) < PRODUCT_ATOL


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 9000),
    magnitude=st.sampled_from([1e-3, 1.0, 50.0]),
)
def test_products_match_numpy(owner, peer, seed, n, magnitude):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-magnitude, magnitude, n)
    w = rng.uniform(-1, 1, n)
    got = owner.decrypt(
        ship(peer, owner, peer.mul_plain(ship(owner, peer, owner.encrypt(x)), w)), n
    )
    # error scales with the magnitude of the encrypted operand (absolute error at scale 2^40)
    assert np.max(np.abs(got - x * w)) < PRODUCT_ATOL * max(1.0, magnitude)


def test_sum_of_per_feature_products(owner, peer):
    # X^T r pattern of the hetero-LR protocol: residual r encrypted once, per-feature products
    # with the peer's plaintext columns summed slot-wise, the key owner sums slots in the clear
    rng = np.random.default_rng(3)
    n, d = 3000, 20
    X = rng.uniform(-1, 1, (n, d))
    r = rng.uniform(-1, 1, n)
    enc_r = ship(owner, peer, owner.encrypt(r))
    prods = [peer.mul_plain(enc_r, X[:, j]) for j in range(d)]
    per_slot = [owner.decrypt(ship(peer, owner, p), n) for p in prods]
    grad = np.array([v.sum() for v in per_slot])
    assert np.allclose(grad, X.T @ r, atol=n * PRODUCT_ATOL)
    total = owner.decrypt(ship(peer, owner, peer.sum_arrays(prods)), n)
    assert np.max(np.abs(total - (X * r[:, None]).sum(axis=1))) < d * PRODUCT_ATOL


def test_depth_two_products(owner, peer):
    rng = np.random.default_rng(4)
    x, w = rng.uniform(-1, 1, 100), rng.uniform(-1, 1, 100)
    v = peer.mul_plain(peer.mul_plain(ship(owner, peer, owner.encrypt(x)), w), w)
    assert np.max(np.abs(owner.decrypt(v, 100) - x * w * w)) < PRODUCT_ATOL


def test_add_encrypted_arrays(owner, peer):
    a, b = np.arange(10.0), np.ones(10)
    s = peer.add(ship(owner, peer, owner.encrypt(a)), ship(owner, peer, owner.encrypt(b)))
    assert np.allclose(owner.decrypt(s, 10), a + b, atol=1e-5)
    with pytest.raises(ValueError, match="chunked differently"):
        peer.add(owner.encrypt(a), owner.encrypt(np.ones(11)))


def test_peer_can_encrypt_under_owner_key(owner, peer):
    v = peer.encrypt(np.array([1.5, -2.5]))
    assert np.allclose(owner.decrypt(ship(peer, owner, v), 2), [1.5, -2.5], atol=1e-5)


def test_rerandomize_changes_ciphertext_not_value(owner, peer):
    x = np.linspace(-1, 1, 50)
    v = ship(owner, peer, owner.encrypt(x))
    prod = peer.mul_plain(v, x)
    rr = peer.rerandomize(prod)
    assert peer.serialize_vectors(rr) != peer.serialize_vectors(prod)
    assert np.max(np.abs(owner.decrypt(rr, 50) - x * x)) < PRODUCT_ATOL


def test_rerandomize_noise_flooding_has_requested_std(owner, peer):
    x = np.zeros(owner.slots)
    noisy = peer.rerandomize(ship(owner, peer, owner.encrypt(x)), noise_std=1e-2)
    got = owner.decrypt(noisy, x.size)
    assert 0.008 < got.std() < 0.012 and abs(got.mean()) < 1e-3
    with pytest.raises(ValueError):
        peer.rerandomize(noisy, noise_std=-1.0)


def test_owner_persistence_round_trip(owner):
    x = np.array([0.25, -3.0, 7.0])
    vecs = owner.encrypt(x)
    again = CKKSKeyOwner.from_bytes(owner.to_bytes())
    assert again.params == owner.params
    assert np.allclose(
        again.decrypt(again.deserialize_vectors(owner.serialize_vectors(vecs)), 3), x, atol=1e-5
    )


def test_module_level_vector_helpers(owner, peer):
    vecs = owner.encrypt(np.ones(5))
    assert len(deserialize_vectors(peer, serialize_vectors(vecs))) == 1
    assert len(deserialize_vectors(peer.context, serialize_vectors(vecs))) == 1
    with pytest.raises(TypeError):
        deserialize_vectors(object(), serialize_vectors(vecs))


# --- what the peer gets and refuses --------------------------------------------------------------


def test_public_context_has_no_secret_key(owner, peer):
    assert not peer.context.is_private()
    assert not hasattr(peer, "decrypt")
    (v,) = ship(owner, peer, owner.encrypt(np.ones(3)))
    with pytest.raises(ValueError, match="secret"):
        v.decrypt()
    assert peer.params == owner.params
    assert not peer.galois_keys


def test_peer_refuses_context_with_secret_key(owner):
    leaked = b"JCKP\x01" + owner.context.serialize(save_secret_key=True)
    with pytest.raises(KeyPolicyError, match="secret key"):
        CKKSPeer.from_public_bytes(leaked)


def test_peer_refuses_policy_violations():
    # SEAL accepts this chain, the policy does not: the scale is as wide as the first prime
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[30, 40, 30])
    ctx.global_scale = 2.0**40
    body = ctx.serialize(save_secret_key=False)
    with pytest.raises(KeyPolicyError, match="global_scale_bits"):
        CKKSPeer.from_public_bytes(b"JCKP\x01" + body)
    ctx.global_scale = 2.0**20 + 1
    with pytest.raises(KeyPolicyError, match="power of two"):
        CKKSPeer.from_public_bytes(b"JCKP\x01" + ctx.serialize(save_secret_key=False))


def test_peer_refuses_bfv_context():
    ctx = ts.context(ts.SCHEME_TYPE.BFV, 4096, plain_modulus=1032193)
    with pytest.raises(KeyPolicyError, match="not CKKS"):
        CKKSPeer.from_public_bytes(b"JCKP\x01" + ctx.serialize(save_secret_key=False))


@pytest.mark.parametrize("blob", [b"", b"JCKP\x01garbage", b"JCKX\x01" + b"\x00" * 10])
def test_peer_refuses_malformed_context(blob):
    with pytest.raises(MalformedMessageError):
        CKKSPeer.from_public_bytes(blob)


def test_owner_from_bytes_refuses_public_or_garbage(owner):
    with pytest.raises(MalformedMessageError):
        CKKSKeyOwner.from_bytes(b"JCKO\x01nonsense")
    public_body = owner.public_context_bytes()[5:]
    with pytest.raises(KeyPolicyError, match="no secret key"):
        CKKSKeyOwner.from_bytes(b"JCKO\x01" + public_body)


def test_malformed_vector_blobs_are_refused(owner, peer):
    good = owner.serialize_vectors(owner.encrypt(np.ones(4)))
    for bad in (
        b"",
        b"XXXX\x01" + good[5:],
        good[:7],
        good[:-10],
        good + b"\x00",
        good[:9] + b"\x00" * (len(good) - 9),
    ):
        with pytest.raises(MalformedMessageError):
            peer.deserialize_vectors(bad)


def test_vectors_from_other_parameters_are_refused(peer):
    other = CKKSKeyOwner(CKKSParams(4096, (40, 20, 40), 20), n_threads=1)
    with pytest.raises(MalformedMessageError):
        peer.deserialize_vectors(other.serialize_vectors(other.encrypt(np.ones(3))))


def test_encrypt_rejects_bad_values(owner, peer):
    with pytest.raises(EncodingOverflowError, match="NaN"):
        owner.encrypt(np.array([1.0, np.nan]))
    with pytest.raises(EncodingOverflowError, match="wrapping"):
        owner.encrypt(np.array([owner.params.max_abs]))
    with pytest.raises(ValueError, match="1-D"):
        owner.encrypt(np.ones((2, 2)))
    v = ship(owner, peer, owner.encrypt(np.ones(5)))
    with pytest.raises(ValueError, match="length"):
        peer.mul_plain(v, np.ones(6))
    with pytest.raises(EncodingOverflowError):
        peer.mul_plain(v, np.array([1, 2, np.inf, 4, 5]))


def test_symmetric_context_peer_cannot_encrypt():
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        8192,
        coeff_mod_bit_sizes=[60, 40, 40, 60],
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    ctx.global_scale = 2.0**40
    peer = CKKSPeer.from_public_bytes(b"JCKP\x01" + ctx.serialize(save_secret_key=False))
    assert not peer.can_encrypt
    with pytest.raises(CryptoError):
        peer.encrypt(np.ones(2))
    with pytest.raises(CryptoError):
        peer.rerandomize([])


def test_galois_keys_only_when_requested():
    small = CKKSParams(4096, (40, 20, 40), 20)
    with_keys = CKKSKeyOwner(small, galois_keys=True, n_threads=1)
    without = CKKSKeyOwner(small, n_threads=1)
    b_with, b_without = with_keys.public_context_bytes(), without.public_context_bytes()
    assert len(b_with) > 3 * len(b_without)
    assert CKKSPeer.from_public_bytes(b_with).galois_keys
    assert not CKKSPeer.from_public_bytes(b_without).galois_keys
    assert len(without.public_context_bytes(relin_keys=True)) > len(b_without)


# --- SealEvaluator: the level-aware SEAL path used by hetero LR --------------------------------


@pytest.fixture(scope="module")
def training_pair():
    """An owner whose public context carries relinearization keys, and the peer's evaluator."""
    from jointcredit.crypto.ckks import SealEvaluator

    key_owner = CKKSKeyOwner(n_threads=1)
    peer = CKKSPeer.from_public_bytes(key_owner.public_context_bytes(relin_keys=True))
    seal = SealEvaluator(peer)
    yield key_owner, seal
    seal.close()


def _to_owner(key_owner, seal, cts, size=None):
    from jointcredit.crypto.ckks import frame_serialized

    vectors = deserialize_vectors(key_owner, frame_serialized([seal.dump(c, size) for c in cts]))
    return [key_owner.decrypt([v], v.size()) for v in vectors]


def test_seal_evaluator_products_sums_and_levels_decrypt_to_numpy(training_pair):
    key_owner, seal = training_pair
    rng = np.random.default_rng(11)
    n = key_owner.slots
    a, b, x, y = (rng.uniform(-1, 1, n) for _ in range(4))
    enc_a, enc_b = (seal.ciphertexts(key_owner.encrypt(v))[0] for v in (a, b))
    assert seal.level(enc_a) == 0
    # two plaintext products summed, then one rescale: one level used
    total = seal.add_into(
        seal.multiply_plain(enc_a, seal.encode(x, 0)), seal.multiply_plain(enc_b, seal.encode(y, 0))
    )
    total = seal.rescale(total)
    assert seal.level(total) == 1
    assert total.scale == pytest.approx(seal.rescaled_scale(seal.scale**2, 0), rel=1e-12)
    # ciphertext x ciphertext across levels (a is switched down), relinearized and rescaled
    product = seal.rescale(seal.multiply(enc_a, total))
    assert seal.level(product) == seal.last
    # a fresh encryption made directly at the last level adds to it
    shift = rng.uniform(-1, 1, n)
    shifted = seal.add(product, seal.encrypt(shift, seal.last, product.scale))
    (got_total, got_product, got_shifted) = _to_owner(key_owner, seal, [total, product, shifted])
    np.testing.assert_allclose(got_total, a * x + b * y, atol=PRODUCT_ATOL)
    np.testing.assert_allclose(got_product, a * (a * x + b * y), atol=PRODUCT_ATOL)
    np.testing.assert_allclose(got_shifted, a * (a * x + b * y) + shift, atol=PRODUCT_ATOL)
    # add() leaves its operands alone; mod_switch keeps the value and drops primes
    (again,) = _to_owner(key_owner, seal, [product])
    np.testing.assert_allclose(again, got_product, atol=1e-9)
    low = seal.mod_switch(total, seal.last)
    assert seal.level(low) == seal.last and low.scale == total.scale
    (got_low,) = _to_owner(key_owner, seal, [low], size=100)
    np.testing.assert_allclose(got_low, (a * x + b * y)[:100], atol=PRODUCT_ATOL)
    # last-level results are the small ones: one prime instead of three
    assert len(seal.dump(low)) < 0.5 * len(key_owner.encrypt(a)[0].serialize())


def test_seal_evaluator_raw_round_trip_and_rejection(training_pair):
    key_owner, seal = training_pair
    ct = seal.encrypt(np.linspace(-1, 1, 50), seal.last)
    back = seal.load_raw(seal.dump_raw(ct))
    (values,) = _to_owner(key_owner, seal, [back], size=50)
    np.testing.assert_allclose(values, np.linspace(-1, 1, 50), atol=1e-6)
    raw = seal.dump_raw(ct)
    for bad in (b"", b"garbage" * 10, raw[: len(raw) // 2]):
        with pytest.raises(MalformedMessageError, match="cannot load"):
            seal.load_raw(bad)
    # a ciphertext under other parameters is refused by SEAL's own validity check (at level 0:
    # the last levels of both chains hold the same single 60-bit prime, so they coincide)
    from jointcredit.crypto.ckks import SealEvaluator

    other = CKKSKeyOwner(CKKSParams(8192, (60, 30, 30, 60), 30), n_threads=1)
    foreign = SealEvaluator(CKKSPeer.from_public_bytes(other.public_context_bytes()))
    try:
        with pytest.raises(MalformedMessageError):
            seal.load_raw(foreign.dump_raw(foreign.encrypt(np.ones(4), 0)))
    finally:
        foreign.close()


def test_seal_evaluator_needs_keys_it_does_not_have(owner, peer):
    from jointcredit.crypto.ckks import SealEvaluator

    seal = SealEvaluator(peer)  # public context without relinearization keys
    try:
        enc = seal.ciphertexts(owner.encrypt(np.ones(8)))[0]
        with pytest.raises(CryptoError, match="relinearization"):
            seal.multiply(enc, enc)
    finally:
        seal.close()
