"""Paillier backend: phe interoperability, fast encryption, homomorphic ops, wire formats, policy."""

from __future__ import annotations

import os
import signal
import struct

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phe import paillier as phe_paillier

from jointcredit.crypto.paillier import (
    MIN_PAILLIER_BITS,
    FastEncryptor,
    PaillierPrivateKey,
    PaillierPublicKey,
    compress,
    decompress_ints,
    generate_paillier_keypair,
    slots_per_ciphertext,
)
from jointcredit.errors import (
    CryptoError,
    EncodingOverflowError,
    KeyPolicyError,
    MalformedMessageError,
)

HYP = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def keys() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return generate_paillier_keypair(2048)


@pytest.fixture(scope="module")
def pub(keys):
    return keys[0]


@pytest.fixture(scope="module")
def priv(keys):
    return keys[1]


@pytest.fixture(scope="module")
def enc(pub):
    # small windows keep the module fast; the arithmetic is the same for every window size
    return FastEncryptor(pub, window_bits=6, n_jobs=1)


@pytest.fixture(scope="module")
def crt_enc(priv):
    return FastEncryptor.for_private_key(priv, window_bits=6, n_jobs=1)


def phe_decrypt(priv: PaillierPrivateKey, c: mpz) -> int:
    # phe's raw_decrypt rejects mpz (isinstance(c, int) check): hand it a Python int
    return priv.phe.decrypt(phe_paillier.EncryptedNumber(priv.public_key.phe, int(c)))


def signed_values(pub: PaillierPublicKey):
    # phe decodes residues above n - n//3 as negatives and raises between n//3 and 2n//3
    bound = int(pub.n) // 3 - 1
    return st.integers(min_value=-bound, max_value=bound)


# --- key policy ---------------------------------------------------------------------------------


def test_generate_refuses_small_keys():
    with pytest.raises(KeyPolicyError, match="2048"):
        generate_paillier_keypair(1024)
    with pytest.raises(ValueError, match="even"):
        generate_paillier_keypair(2049)


def test_wrapping_a_small_phe_key_is_refused():
    small_pub, _ = phe_paillier.generate_paillier_keypair(n_length=1024)
    with pytest.raises(KeyPolicyError):
        PaillierPublicKey(small_pub)


def test_public_key_bytes_round_trip(pub):
    b = pub.to_bytes()
    again = PaillierPublicKey.from_bytes(b)
    assert again == pub and again.n_bits == pub.n_bits == MIN_PAILLIER_BITS
    assert again.nsquare == pub.nsquare


def test_public_key_from_bytes_refuses_small_modulus():
    small_pub, _ = phe_paillier.generate_paillier_keypair(n_length=1024)
    nb = small_pub.n.to_bytes(128, "big")
    with pytest.raises(KeyPolicyError, match="2048"):
        PaillierPublicKey.from_bytes(b"JCPK\x01" + struct.pack(">H", len(nb)) + nb)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b"XXXX" + b[4:],  # magic
        lambda b: b[:-1],  # truncated
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b[:5],  # no length
        lambda b: b[:-1] + bytes([b[-1] & 0xFE]),  # even modulus
    ],
)
def test_public_key_from_bytes_refuses_malformed(pub, mutate):
    with pytest.raises(MalformedMessageError):
        PaillierPublicKey.from_bytes(mutate(pub.to_bytes()))


def test_public_key_from_bytes_refuses_modulus_with_small_factor(pub):
    n = int(pub.n) | 1
    bad = (n // 9973) * 9973
    if bad % 2 == 0:
        bad += 9973
    nb = bad.to_bytes(256, "big")
    with pytest.raises(MalformedMessageError, match="small prime factor"):
        PaillierPublicKey.from_bytes(b"JCPK\x01" + struct.pack(">H", len(nb)) + nb)


def test_private_key_bytes_round_trip(priv, enc):
    again = PaillierPrivateKey.from_bytes(priv.to_bytes())
    assert again.public_key == priv.public_key
    assert again.decrypt_ints(enc.encrypt_ints([-5, 7])) == [-5, 7]


def test_private_key_from_bytes_refuses_garbage(priv):
    with pytest.raises(MalformedMessageError):
        PaillierPrivateKey.from_bytes(b"nonsense")
    with pytest.raises(MalformedMessageError):
        PaillierPrivateKey.from_bytes(priv.to_bytes()[:-3])
    p = int(priv._p)
    pb = (p + 1).to_bytes(128, "big")  # even: not a prime
    with pytest.raises(KeyPolicyError):
        PaillierPrivateKey.from_bytes(
            b"JCSK\x01" + struct.pack(">H", 128) + pb + struct.pack(">H", 128) + pb
        )


def test_exponent_bits_policy(pub):
    with pytest.raises(KeyPolicyError, match="exponent_bits"):
        FastEncryptor(pub, exponent_bits=128, n_jobs=1)
    with pytest.raises(KeyPolicyError, match="exponent_bits"):
        FastEncryptor(pub, exponent_bits=pub.n_bits + 1, n_jobs=1)


# --- correctness of the fast path -----------------------------------------------------------


@HYP
@given(data=st.data())
def test_fast_ciphertexts_decrypt_with_phe(pub, priv, enc, data):
    values = data.draw(st.lists(signed_values(pub), min_size=1, max_size=8))
    cts = enc.encrypt_ints(values)
    assert all(0 < c < pub.nsquare for c in cts)
    assert [phe_decrypt(priv, c) for c in cts] == values
    assert priv.decrypt_ints(cts) == values


@HYP
@given(data=st.data())
def test_crt_ciphertexts_decrypt_with_phe(pub, priv, crt_enc, data):
    values = data.draw(st.lists(signed_values(pub), min_size=1, max_size=8))
    cts = crt_enc.encrypt_ints(values)
    assert [phe_decrypt(priv, c) for c in cts] == values


def test_default_parameters_decrypt(pub, priv):
    # the production defaults (448-bit exponent, 10-bit windows) and the CRT variant
    for e in (FastEncryptor(pub, n_jobs=1), FastEncryptor.for_private_key(priv, n_jobs=1)):
        vals = [0, 1, -1, 2**63 - 1, -(2**63), int(pub.n) // 3 - 1]
        assert [phe_decrypt(priv, c) for c in e.encrypt_ints(vals)] == vals
        assert e.exponent_bits == 448


def test_phe_ciphertexts_decrypt_with_our_key(pub, priv):
    for v in (0, 12345, -987654321):
        assert priv.decrypt_ints([mpz(pub.phe.encrypt(v).ciphertext())]) == [v]


def test_textbook_raw_encrypt(pub, priv):
    assert priv.decrypt_ints([pub.raw_encrypt(-42)]) == [-42]


def test_encryption_is_randomized(enc, priv):
    a, b = enc.encrypt_ints([7, 7])
    assert a != b
    assert priv.decrypt_ints([a, b]) == [7, 7]


def test_encrypt_accepts_numpy_and_object_arrays(enc, priv):
    arr = np.array([-3, 0, 2**62], dtype=np.int64)
    assert priv.decrypt_ints(enc.encrypt_ints(arr)) == [-3, 0, 2**62]
    obj = np.array([2**200, -(2**300), 5], dtype=object)
    assert priv.decrypt_ints(enc.encrypt_ints(obj)) == [2**200, -(2**300), 5]
    assert priv.decrypt_ints(enc.encrypt_ints(np.array([1, 2], dtype=np.uint8))) == [1, 2]


def test_encrypt_rejects_bad_values(enc, pub):
    with pytest.raises(TypeError):
        enc.encrypt_ints(np.array([1.5]))
    with pytest.raises(TypeError):
        enc.encrypt_ints([1, 2.0])
    with pytest.raises(TypeError):
        enc.encrypt_ints([True])
    with pytest.raises(EncodingOverflowError, match=r"values\[1\]"):
        enc.encrypt_ints([1, int(pub.n)])
    with pytest.raises(EncodingOverflowError):
        enc.encrypt_ints([-int(pub.n)])


def test_unsigned_decryption_returns_residues(enc, priv, pub):
    (c,) = enc.encrypt_ints([-1])
    assert priv.decrypt_ints([c], signed=False) == [int(pub.n) - 1]


def test_random_residues_and_rerandomize(enc, priv, pub):
    zs = enc.random_residues(3)
    assert priv.decrypt_ints(zs) == [0, 0, 0]
    cts = enc.encrypt_ints([11, -22])
    again = enc.rerandomize(cts)
    assert again != cts
    assert priv.decrypt_ints(again) == [11, -22]
    with pytest.raises(MalformedMessageError):
        enc.rerandomize([pub.nsquare])


@pytest.mark.parametrize(
    ("parallel", "start_method"),
    [("threads", None), ("processes", None), ("processes", "forkserver")],
)
def test_parallel_batches_decrypt(pub, priv, parallel, start_method):
    values = list(range(-150, 150))
    with FastEncryptor(
        pub,
        window_bits=6,
        n_jobs=2,
        parallel_threshold=64,
        parallel=parallel,
        start_method=start_method,
    ) as e:
        cts = e.encrypt_ints(values)
        assert priv.decrypt_ints(cts) == values
        blob = e.encrypt_to_bytes(values)  # serialized in the workers
        assert priv.decrypt_ints(pub.ciphertexts_from_bytes(blob)) == values
        assert priv.decrypt_ints(e.rerandomize(cts[:100])) == values[:100]
        assert priv.decrypt_ints(e.random_residues(100)) == [0] * 100


def test_dead_worker_raises_crypto_error(pub):
    e = FastEncryptor(pub, window_bits=6, n_jobs=2, parallel_threshold=64, parallel="processes")
    try:
        e.warm_up()
        pid = next(iter(e._pool._processes))  # a worker this test started
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(CryptoError, match="worker processes"):
            e.encrypt_ints(list(range(200)))
    finally:
        e.close()


def test_unknown_parallel_options(pub):
    with pytest.raises(ValueError, match="start_method"):
        FastEncryptor(pub, n_jobs=2, start_method="teleport")
    with pytest.raises(ValueError, match="parallel"):
        FastEncryptor(pub, n_jobs=2, parallel="gpu")


def test_threaded_decryption(priv, enc):
    values = list(range(-20, 20))
    assert priv.decrypt_ints(enc.encrypt_ints(values), n_jobs=2) == values


@pytest.mark.parametrize("parallel", ["threads", "processes"])
def test_parallel_crt_batches_decrypt(priv, parallel):
    values = [(-1) ** i * i * 2**40 for i in range(200)]
    with FastEncryptor.for_private_key(
        priv, window_bits=6, n_jobs=2, parallel_threshold=64, parallel=parallel
    ) as e:
        assert e.uses_crt
        assert priv.decrypt_ints(e.encrypt_ints(values)) == values
        blob = e.encrypt_to_bytes(values)
        assert len(blob) == len(values) * priv.public_key.ciphertext_width
        assert priv.decrypt_ints(priv.public_key.ciphertexts_from_bytes(blob)) == values


# --- homomorphic operations -------------------------------------------------------------------


@HYP
@given(data=st.data())
def test_homomorphic_ops(pub, priv, enc, data):
    small = st.integers(min_value=-(2**200), max_value=2**200)
    a, b = data.draw(small), data.draw(small)
    k = data.draw(st.integers(min_value=-(2**64), max_value=2**64))
    ca, cb = enc.encrypt_ints([a, b])
    got = priv.decrypt_ints(
        [
            pub.raw_add(ca, cb),
            pub.raw_mul_const(ca, k),
            pub.raw_add_plain(ca, b),
            pub.raw_neg(ca),
            pub.raw_sum([ca, cb, ca]),
        ]
    )
    assert got == [a + b, k * a, a + b, -a, 2 * a + b]


def test_raw_sum_of_nothing_is_zero(pub, priv):
    assert priv.decrypt_ints([pub.raw_sum([])]) == [0]


def test_raw_add_plain_rejects_oversized(pub, enc):
    (c,) = enc.encrypt_ints([1])
    with pytest.raises(EncodingOverflowError):
        pub.raw_add_plain(c, int(pub.n) * 2)


# --- wire format ---------------------------------------------------------------------------------


def test_ciphertext_bytes_round_trip(pub, priv, enc):
    cts = enc.encrypt_ints([1, -2, 3])
    blob = pub.ciphertexts_to_bytes(cts)
    assert len(blob) == 3 * pub.ciphertext_width == 3 * pub.n_bits // 4
    back = pub.ciphertexts_from_bytes(blob, check_units=True)
    assert back == cts and priv.decrypt_ints(back) == [1, -2, 3]
    assert pub.ciphertexts_from_bytes(b"") == []


def test_ciphertext_bytes_rejects_malformed(pub, priv, enc):
    w = pub.ciphertext_width
    blob = pub.ciphertexts_to_bytes(enc.encrypt_ints([1, 2]))
    with pytest.raises(MalformedMessageError, match="multiple"):
        pub.ciphertexts_from_bytes(blob[:-1])
    with pytest.raises(MalformedMessageError, match=r"ciphertexts\[1\]"):
        pub.ciphertexts_from_bytes(blob[:w] + b"\x00" * w)  # zero
    with pytest.raises(MalformedMessageError):
        pub.ciphertexts_from_bytes(b"\xff" * w)  # >= n^2
    non_unit = int(priv._p) * 12345
    with pytest.raises(MalformedMessageError, match="unit"):
        pub.ciphertexts_from_bytes(non_unit.to_bytes(w, "big"), check_units=True)
    with pytest.raises(MalformedMessageError):
        pub.ciphertexts_to_bytes([pub.nsquare])


# --- compression (many small sums per ciphertext) -------------------------------------------------


@HYP
@given(data=st.data())
def test_compress_round_trip(pub, priv, enc, data):
    slot_bits = data.draw(st.sampled_from([8, 37, 64, 100]))
    per = slots_per_ciphertext(pub, slot_bits)
    count = data.draw(st.integers(min_value=1, max_value=per + 3))
    values = data.draw(
        st.lists(
            st.integers(min_value=0, max_value=2**slot_bits - 1), min_size=count, max_size=count
        )
    )
    packed = compress(pub, enc.encrypt_ints(values), slot_bits)
    assert len(packed) == -(-count // per)
    assert decompress_ints(priv, packed, slot_bits, count) == values


def test_compress_histogram_sums(pub, priv, enc):
    # bins of encrypted per-sample values, summed homomorphically then compressed
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 2**20, size=60).tolist()
    bins = rng.integers(0, 12, size=60)
    cts = enc.encrypt_ints(vals)
    sums = [pub.raw_sum([c for c, b in zip(cts, bins, strict=True) if b == k]) for k in range(12)]
    expect = [sum(v for v, b in zip(vals, bins, strict=True) if b == k) for k in range(12)]
    assert decompress_ints(priv, compress(pub, sums, 32), 32, 12) == expect


def test_slots_per_ciphertext_bounds(pub):
    assert slots_per_ciphertext(pub, 64) == (pub.n_bits - 2) // 64
    with pytest.raises(EncodingOverflowError):
        slots_per_ciphertext(pub, 0)
    with pytest.raises(EncodingOverflowError):
        slots_per_ciphertext(pub, pub.n_bits)


def test_decompress_detects_negative_slot(pub, priv, enc):
    packed = compress(pub, enc.encrypt_ints([-1, 5]), 16)
    with pytest.raises(EncodingOverflowError, match="negative or overflowed"):
        decompress_ints(priv, packed, 16, 2)


def test_decompress_detects_overflowing_top_slot(pub, priv, enc):
    packed = compress(pub, enc.encrypt_ints([2**16, 5]), 16)
    with pytest.raises(EncodingOverflowError):
        decompress_ints(priv, packed, 16, 2)


def test_decompress_count_mismatch(pub, priv, enc):
    packed = compress(pub, enc.encrypt_ints([1, 2, 3]), 16)
    with pytest.raises(ValueError, match="need"):
        decompress_ints(priv, packed, 16, 200)


def test_private_key_matches_public_key(pub):
    other_pub, other_priv = phe_paillier.generate_paillier_keypair(n_length=2048)
    with pytest.raises(KeyPolicyError):
        PaillierPrivateKey(other_priv, pub)
    assert gmpy2.is_prime(int(other_priv.p))
