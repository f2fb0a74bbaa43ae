"""Okamoto-Uchiyama backend: correctness of every path, homomorphism, wire formats, key policy."""

from __future__ import annotations

import struct

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jointcredit.crypto.ou import (
    MIN_OU_BITS,
    OUEncryptor,
    OUPrivateKey,
    OUPublicKey,
    compress,
    decompress_ints,
    generate_ou_keypair,
    slots_per_ciphertext,
)
from jointcredit.errors import EncodingOverflowError, KeyPolicyError, MalformedMessageError

HYP = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def keys() -> tuple[OUPublicKey, OUPrivateKey]:
    return generate_ou_keypair(MIN_OU_BITS)


@pytest.fixture(scope="module")
def pub(keys):
    return keys[0]


@pytest.fixture(scope="module")
def priv(keys):
    return keys[1]


@pytest.fixture(scope="module")
def enc(pub):
    with OUEncryptor(pub, n_jobs=2, parallel_threshold=64) as e:
        yield e


@pytest.fixture(scope="module")
def crt_enc(priv):
    with OUEncryptor.for_private_key(priv, n_jobs=2, parallel_threshold=64) as e:
        yield e


def _textbook_decrypt(priv: OUPrivateKey, c: int) -> int:
    # independent of raw_decrypt's precomputation: m = L(c^(p-1)) / L(g^(p-1)) mod p
    p = priv._p
    p2 = p * p

    def L(x):
        return (x - 1) // p

    return int(
        L(gmpy2.powmod(c, p - 1, p2))
        * gmpy2.invert(L(gmpy2.powmod(priv.public_key.g, p - 1, p2)), p)
        % p
    )


# -- key policy ---------------------------------------------------------------------------------


def test_key_structure(pub, priv):
    p, q = priv._p, priv._q
    assert gmpy2.is_prime(p) and gmpy2.is_prime(q) and p != q
    assert p * p * q == pub.n and pub.n_bits >= MIN_OU_BITS
    assert pub.plaintext_bits == p.bit_length() - 1  # any m < 2^plaintext_bits is below p


def test_generate_refuses_small_keys():
    with pytest.raises(KeyPolicyError, match="2048"):
        generate_ou_keypair(1536)


def test_public_key_bytes_round_trip(pub):
    again = OUPublicKey.from_bytes(pub.to_bytes())
    assert again == pub and again.fingerprint() == pub.fingerprint()


def test_public_key_from_bytes_refuses_a_small_modulus():
    small = generate_small_key_bytes(1536)
    with pytest.raises(KeyPolicyError, match="2048"):
        OUPublicKey.from_bytes(small)


def generate_small_key_bytes(bits: int) -> bytes:
    # built by hand: generate_ou_keypair refuses to make one
    k = bits // 3
    p = gmpy2.next_prime(mpz(3) << (k - 2))
    q = gmpy2.next_prime(p + 1000)
    n = p * p * q
    fields = b"".join(
        struct.pack(">H", (int(v).bit_length() + 7) // 8)
        + int(v).to_bytes((int(v).bit_length() + 7) // 8, "big")
        for v in (n, 5, 7)
    )
    return b"JCOU\x01" + struct.pack(">H", k - 1) + fields


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b"JCPK\x01" + b[5:],  # a Paillier key is not an OU key
        lambda b: b[:-1],  # truncated
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b[:5] + struct.pack(">H", 4000) + b[7:],  # plaintext bound beyond p
    ],
    ids=["magic", "truncated", "trailing", "plaintext_bits"],
)
def test_public_key_from_bytes_refuses_malformed(pub, mutate):
    with pytest.raises(MalformedMessageError):
        OUPublicKey.from_bytes(mutate(pub.to_bytes()))


def test_public_key_from_bytes_refuses_an_even_modulus(pub):
    raw = bytearray(pub.to_bytes())
    # n is the first field after magic + plaintext_bits + its u16 length: flip its low bit
    n_len = struct.unpack(">H", raw[7:9])[0]
    raw[9 + n_len - 1] ^= 1
    with pytest.raises(MalformedMessageError, match="p\\^2 q"):
        OUPublicKey.from_bytes(bytes(raw))


def test_private_key_bytes_round_trip(priv, enc):
    again = OUPrivateKey.from_bytes(priv.to_bytes())
    assert again.public_key == priv.public_key
    assert again.decrypt_ints(enc.encrypt_ints([12345])) == [12345]


def test_private_key_must_match_public_key(pub, priv):
    other_pub, _ = generate_ou_keypair(MIN_OU_BITS)
    with pytest.raises(KeyPolicyError, match="does not match"):
        OUPrivateKey(priv._p, priv._q, other_pub)


def test_exponent_bits_policy(pub):
    with pytest.raises(KeyPolicyError, match="exponent_bits"):
        OUEncryptor(pub, exponent_bits=128)


# -- correctness ----------------------------------------------------------------------------------


@HYP
@given(data=st.lists(st.integers(min_value=0, max_value=2**681 - 1), min_size=1, max_size=40))
def test_public_encryptor_round_trip(pub, priv, enc, data):
    cts = enc.encrypt_ints(data)
    assert priv.decrypt_ints(cts) == data
    assert [_textbook_decrypt(priv, c) for c in cts[:3]] == data[:3]


@HYP
@given(data=st.lists(st.integers(min_value=-(2**680), max_value=2**680), min_size=1, max_size=40))
def test_crt_encryptor_round_trip_signed(priv, crt_enc, data):
    assert priv.decrypt_ints(crt_enc.encrypt_ints(data), signed=True) == data


def test_parallel_batches_decrypt(priv, enc, crt_enc):
    # 600 values >= parallel_threshold: split over two forked workers
    values = list(range(-300, 300))
    for e in (enc, crt_enc):
        assert priv.decrypt_ints(e.encrypt_ints(np.array(values)), signed=True, n_jobs=2) == values
        blob = e.encrypt_to_bytes(values)
        assert len(blob) == 600 * e.public_key.ciphertext_width
        cts = e.public_key.ciphertexts_from_bytes(blob)
        assert priv.decrypt_ints(cts, signed=True) == values
        assert len(set(cts)) == 600  # the workers do not share randomness


def test_encryptor_pickles_without_its_pool(priv, crt_enc):
    import pickle

    crt_enc.encrypt_ints(list(range(100)))  # the pool exists
    clone = pickle.loads(pickle.dumps(crt_enc))
    assert priv.decrypt_ints(clone.encrypt_ints([1, 2, 3])) == [1, 2, 3]
    clone.close()


def test_encryption_is_randomized(enc, priv):
    a, b = enc.encrypt_ints([7, 7])
    assert a != b and priv.decrypt_ints([a, b]) == [7, 7]


def test_encrypt_rejects_bad_values(enc, pub):
    with pytest.raises(EncodingOverflowError, match="values\\[1\\]"):
        enc.encrypt_ints([1, 2**pub.plaintext_bits])
    with pytest.raises(EncodingOverflowError, match="values\\[0\\]"):
        enc.encrypt_ints([-(2 ** (pub.plaintext_bits - 1))])
    with pytest.raises(TypeError, match="values\\[1\\]"):
        enc.encrypt_ints([1, 2.5])
    with pytest.raises(TypeError, match="dtype"):
        enc.encrypt_ints(np.array([1.0]))


@HYP
@given(
    a=st.integers(min_value=0, max_value=2**300),
    b=st.integers(min_value=0, max_value=2**300),
    k=st.integers(min_value=0, max_value=2**40),
)
def test_homomorphic_ops(pub, priv, enc, a, b, k):
    ca, cb = enc.encrypt_ints([a, b])
    assert priv.decrypt_ints([pub.raw_add(ca, cb)]) == [a + b]
    assert priv.decrypt_ints([pub.raw_mul_const(ca, k)]) == [a * k]
    assert priv.decrypt_ints([pub.raw_add(ca, pub.raw_neg(cb))], signed=True) == [a - b]


def test_rerandomize_keeps_the_plaintext_and_changes_the_ciphertext(enc, priv):
    cts = enc.encrypt_ints([5, 6, 7])
    fresh = enc.rerandomize(cts)
    assert all(a != b for a, b in zip(cts, fresh, strict=True))
    assert priv.decrypt_ints(fresh) == [5, 6, 7]


def test_ciphertext_bytes_round_trip_and_rejection(pub, enc):
    cts = enc.encrypt_ints([1, 2, 3])
    blob = pub.ciphertexts_to_bytes(cts)
    assert len(blob) == 3 * pub.ciphertext_width
    assert pub.ciphertexts_from_bytes(blob) == cts
    with pytest.raises(MalformedMessageError, match="multiple"):
        pub.ciphertexts_from_bytes(blob[:-1])
    with pytest.raises(MalformedMessageError, match="ciphertexts\\[1\\]"):
        pub.ciphertexts_from_bytes(blob[: pub.ciphertext_width] + b"\xff" * pub.ciphertext_width)
    with pytest.raises(MalformedMessageError, match="ciphertexts\\[0\\]"):
        pub.ciphertexts_to_bytes([pub.n])


def test_compress_round_trip_and_histogram_sums(pub, priv, enc):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**40, size=50).tolist()
    per = slots_per_ciphertext(pub, 48)
    packed = compress(pub, enc.encrypt_ints(values), 48)
    assert len(packed) == -(-50 // per)
    assert decompress_ints(priv, packed, 48, 50) == values
    # sums of ciphertexts compress like the sums of their plaintexts
    more = rng.integers(0, 2**40, size=50).tolist()
    sums = [
        pub.raw_add(a, b)
        for a, b in zip(enc.encrypt_ints(values), enc.encrypt_ints(more), strict=True)
    ]
    assert decompress_ints(priv, compress(pub, sums, 48), 48, 50) == [
        a + b for a, b in zip(values, more, strict=True)
    ]


def test_decompress_detects_a_negative_slot(pub, priv, enc):
    packed = compress(pub, enc.encrypt_ints([-1, 5]), 32)
    with pytest.raises(EncodingOverflowError, match="packed_cts\\[0\\]"):
        decompress_ints(priv, packed, 32, 2)


def test_slots_per_ciphertext_bounds(pub):
    assert slots_per_ciphertext(pub, 64) == (pub.plaintext_bits - 2) // 64
    with pytest.raises(EncodingOverflowError, match="slot_bits"):
        slots_per_ciphertext(pub, pub.plaintext_bits)
