"""Paillier encryption on gmpy2 integers, interoperable with ``phe``, with a fast encryption path.

Keys are thin wrappers around :mod:`phe`'s key objects (``.phe``) so that every ciphertext made
here decrypts with phe's own private key and vice versa. All arithmetic runs on gmpy2 ``mpz``
values: converting to Python ``int`` and back on every operation (what phe does) costs more than
the operation itself for ciphertext additions.

Why a separate encryption path: phe computes ``r^n mod n^2`` with a full 2048-bit exponent for
every value (~9-10 ms), which is >99 % of its encryption cost. :class:`FastEncryptor` uses the
Damgard-Jurik-Nielsen variant instead: the randomness is ``h_s^a mod n^2`` where
``h_s = (-x^2)^n mod n^2`` is fixed per encryptor and ``a`` is a short random exponent
(448 bits by default), evaluated with a precomputed fixed-base window table, i.e. about 45
modular multiplications per value. See ``docs/crypto.md`` for the security argument and the
measured figures.

Ciphertexts are plain ``mpz`` values ``0 < c < n^2``; plaintexts are residues mod ``n``
(negative numbers are encoded as ``n - |m|``).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import struct
import sys
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe import paillier as phe_paillier

from jointcredit.crypto.encoding import PACKING_MARGIN_BITS
from jointcredit.errors import (
    CryptoError,
    EncodingOverflowError,
    KeyPolicyError,
    MalformedMessageError,
)

__all__ = [
    "DEFAULT_EXPONENT_BITS",
    "DEFAULT_WINDOW_BITS",
    "MAX_PAILLIER_BITS",
    "MIN_EXPONENT_BITS",
    "MIN_PAILLIER_BITS",
    "PACKING_MARGIN_BITS",
    "FastEncryptor",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "compress",
    "decompress_ints",
    "generate_paillier_keypair",
    "slots_per_ciphertext",
]

#: Smallest modulus accepted anywhere (generation, deserialization): 2048-bit RSA-type moduli
#: give ~112-bit security (NIST SP 800-57); anything smaller is refused, not warned about.
MIN_PAILLIER_BITS = 2048
#: Largest modulus accepted from bytes: bounds the CPU and memory a peer can make us spend.
MAX_PAILLIER_BITS = 8192
#: Short-exponent size for :class:`FastEncryptor` (see docs/crypto.md, "Fast encryption").
DEFAULT_EXPONENT_BITS = 448
#: Below 2 x 128 bits, generic (Pollard-lambda / baby-step giant-step) attacks on the exponent
#: cost less than 2^128 group operations; refuse.
MIN_EXPONENT_BITS = 256
#: 10-bit windows: 45 multiplications per encryption with a 23 MB table (measured best trade-off
#: between table build time / memory and per-encryption cost on the development machine).
DEFAULT_WINDOW_BITS = 10

_PUB_MAGIC = b"JCPK\x01"
_PRIV_MAGIC = b"JCSK\x01"
_MPZ_TYPE = type(mpz(0))


def _check_n_bits(n_bits: int, what: str = "n_bits") -> None:
    if n_bits < MIN_PAILLIER_BITS:
        raise KeyPolicyError(
            f"{what}: a {n_bits}-bit Paillier modulus is below the {MIN_PAILLIER_BITS}-bit minimum"
        )
    if n_bits > MAX_PAILLIER_BITS:
        raise KeyPolicyError(
            f"{what}: a {n_bits}-bit Paillier modulus is above the {MAX_PAILLIER_BITS}-bit maximum"
        )


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------


class PaillierPublicKey:
    """A Paillier public key (``g = n + 1``) backed by a :class:`phe.paillier.PaillierPublicKey`.

    ``n`` and ``nsquare`` are gmpy2 ``mpz``; ``n_bits`` is ``n.bit_length()``. Construction
    enforces the key policy (``n_bits >= MIN_PAILLIER_BITS``).
    """

    __slots__ = ("phe", "n", "nsquare", "n_bits", "_half_n", "_ct_width", "__weakref__")

    def __init__(self, phe_key: phe_paillier.PaillierPublicKey) -> None:
        if not isinstance(phe_key, phe_paillier.PaillierPublicKey):
            raise TypeError(
                f"phe_key: expected phe.paillier.PaillierPublicKey, got {type(phe_key)}"
            )
        n = mpz(phe_key.n)
        _check_n_bits(int(n.bit_length()), "public_key.n")
        self.phe = phe_key
        self.n = n
        self.nsquare = n * n
        self.n_bits = int(n.bit_length())
        self._half_n = n // 2
        # n^2 < 2^(2 n_bits): a fixed width lets a receiver split a ciphertext blob without
        # per-item length prefixes and refuse anything that is not a multiple of it.
        self._ct_width = (2 * self.n_bits + 7) // 8

    @classmethod
    def from_n(cls, n: int) -> PaillierPublicKey:
        """Wrap a modulus (checked against the key policy)."""
        return cls(phe_paillier.PaillierPublicKey(int(n)))

    # -- equality / repr -----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(int(self.n))

    def __repr__(self) -> str:
        return f"PaillierPublicKey(n_bits={self.n_bits}, fingerprint={self.fingerprint()})"

    def fingerprint(self) -> str:
        """Short hex digest of ``n``, for logs and key-mismatch messages."""
        return hashlib.sha256(int(self.n).to_bytes((self.n_bits + 7) // 8, "big")).hexdigest()[:16]

    # -- serialization -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """``b"JCPK\\x01" || u16 len || n`` (big-endian)."""
        nb = int(self.n).to_bytes((self.n_bits + 7) // 8, "big")
        return _PUB_MAGIC + struct.pack(">H", len(nb)) + nb

    @classmethod
    def from_bytes(cls, data: bytes) -> PaillierPublicKey:
        """Parse a peer's public key.

        Raises:
            MalformedMessageError: wrong magic/version, truncated or trailing bytes, or a
                modulus that cannot be a Paillier modulus (even, a perfect square, a small
                factor).
            KeyPolicyError: a modulus below ``MIN_PAILLIER_BITS`` (or above the maximum).
        """
        data = bytes(data)
        if not data.startswith(_PUB_MAGIC):
            raise MalformedMessageError("paillier public key: bad magic or version")
        body = data[len(_PUB_MAGIC) :]
        if len(body) < 2:
            raise MalformedMessageError("paillier public key: truncated length field")
        (length,) = struct.unpack(">H", body[:2])
        if len(body) != 2 + length:
            raise MalformedMessageError(
                f"paillier public key: expected {length} modulus bytes, got {len(body) - 2}"
            )
        n = mpz.from_bytes(body[2:], "big")
        _check_n_bits(int(n.bit_length()), "public_key.n")
        _sanity_check_modulus(n)
        return cls.from_n(int(n))

    # -- homomorphic operations on raw ciphertexts ---------------------------------------------

    def encode_plaintext(self, m: int) -> mpz:
        """Residue of ``m`` mod n; refuses ``|m| >= n`` (it would silently wrap)."""
        m = mpz(m)
        if not (-self.n < m < self.n):
            raise EncodingOverflowError(
                f"plaintext: |{int(m).bit_length()}-bit value| does not fit a {self.n_bits}-bit modulus"
            )
        return m % self.n

    def raw_encrypt(self, m: int, r: int | None = None) -> mpz:
        """Textbook Paillier ``(1 + m n) r^n mod n^2`` (slow: a full 2048-bit exponentiation).

        Kept as the reference the fast path is checked against; use :class:`FastEncryptor`.
        """
        m = self.encode_plaintext(m)
        if r is None:
            r = mpz(_randbelow_unit(self.n))
        rn = gmpy2.powmod(mpz(r), self.n, self.nsquare)
        return (1 + m * self.n) * rn % self.nsquare

    def raw_add(self, c1: mpz, c2: mpz) -> mpz:
        """Ciphertext of the sum of the two plaintexts."""
        return c1 * c2 % self.nsquare

    def raw_sum(self, cts: Iterable[mpz]) -> mpz:
        """Ciphertext of the sum of all plaintexts.

        An empty sequence gives ``1``, the deterministic (non-randomized) encryption of zero;
        re-randomize before sending it anywhere.
        """
        nsq = self.nsquare
        acc = mpz(1)
        for c in cts:
            acc = acc * c % nsq
        return acc

    def raw_add_plain(self, c: mpz, m: int) -> mpz:
        """Ciphertext of ``plaintext(c) + m``; deterministic given ``c`` (re-randomize if needed)."""
        m = self.encode_plaintext(m)
        # (1 + m n) c = c + n (m c mod n)  (mod n^2): one small product instead of a 4096-bit one
        n = self.n
        out = c + n * (m * (c % n) % n)
        return out - self.nsquare if out >= self.nsquare else out

    def raw_mul_const(self, c: mpz, k: int) -> mpz:
        """Ciphertext of ``k * plaintext(c)``; a negative ``k`` uses the modular inverse of ``c``."""
        k = int(k)
        if k >= 0:
            return gmpy2.powmod(c, k, self.nsquare)
        # c^(-|k|) keeps the exponent short; powmod(c, k mod n) would cost a 2048-bit exponent
        return gmpy2.powmod(gmpy2.invert(c, self.nsquare), -k, self.nsquare)

    def raw_neg(self, c: mpz) -> mpz:
        """Ciphertext of ``-plaintext(c)``."""
        return gmpy2.invert(c, self.nsquare)

    def validate_ciphertext(self, c: Any, *, check_unit: bool = False) -> mpz:
        """Return ``c`` as mpz if ``0 < c < n^2`` (and, optionally, ``gcd(c, n) == 1``)."""
        if not isinstance(c, (int, _MPZ_TYPE)) or isinstance(c, bool):
            raise MalformedMessageError(f"ciphertext: expected an integer, got {type(c).__name__}")
        c = mpz(c)
        if not (0 < c < self.nsquare):
            raise MalformedMessageError("ciphertext: value outside (0, n^2)")
        if check_unit and gmpy2.gcd(c, self.n) != 1:
            raise MalformedMessageError("ciphertext: not a unit mod n (shares a factor with n)")
        return c

    # -- wire format ---------------------------------------------------------------------------

    @property
    def ciphertext_width(self) -> int:
        """Bytes per ciphertext in :meth:`ciphertexts_to_bytes` (``n_bits / 4``)."""
        return self._ct_width

    def ciphertexts_to_bytes(self, cts: Sequence[mpz]) -> bytes:
        """Concatenate ciphertexts as fixed-width big-endian integers (no header)."""
        w = self._ct_width
        nsq = self.nsquare
        parts = []
        for i, c in enumerate(cts):
            c = mpz(c)
            if not (0 < c < nsq):
                raise MalformedMessageError(f"ciphertexts[{i}]: value outside (0, n^2)")
            parts.append(c.to_bytes(w, "big"))
        return b"".join(parts)

    def ciphertexts_from_bytes(self, data: bytes, *, check_units: bool = False) -> list[mpz]:
        """Inverse of :meth:`ciphertexts_to_bytes`; validates length and ``0 < c < n^2``.

        ``check_units`` additionally requires ``gcd(c, n) == 1`` (costs ~10 us per value); a
        non-unit ciphertext would reveal a factor of ``n``, so only the key holder's peer could
        have produced it maliciously.
        """
        w = self._ct_width
        if len(data) % w:
            raise MalformedMessageError(
                f"ciphertext blob: {len(data)} bytes is not a multiple of the {w}-byte width"
            )
        mv = memoryview(data)
        nsq = self.nsquare
        n = self.n
        out = []
        for i in range(0, len(data), w):
            c = mpz.from_bytes(mv[i : i + w], "big")
            if not (0 < c < nsq):
                raise MalformedMessageError(f"ciphertexts[{i // w}]: value outside (0, n^2)")
            if check_units and gmpy2.gcd(c, n) != 1:
                raise MalformedMessageError(f"ciphertexts[{i // w}]: not a unit mod n")
            out.append(c)
        return out


class PaillierPrivateKey:
    """The key holder's Paillier private key (primes ``p``, ``q``), backed by phe's key object.

    Decryption uses the CRT over ``p^2`` and ``q^2`` with gmpy2 throughout (phe's own
    ``raw_decrypt`` converts every intermediate to Python ``int`` and rejects ``mpz`` inputs).
    """

    __slots__ = ("phe", "public_key", "_p", "_q", "_p2", "_q2", "_hp", "_hq", "_p_inv_q")

    def __init__(
        self, phe_key: phe_paillier.PaillierPrivateKey, public_key: PaillierPublicKey | None = None
    ) -> None:
        if not isinstance(phe_key, phe_paillier.PaillierPrivateKey):
            raise TypeError(
                f"phe_key: expected phe.paillier.PaillierPrivateKey, got {type(phe_key)}"
            )
        pub = public_key if public_key is not None else PaillierPublicKey(phe_key.public_key)
        if pub.n != phe_key.public_key.n:
            raise KeyPolicyError("private key: does not match the given public key")
        self.phe = phe_key
        self.public_key = pub
        p, q = mpz(phe_key.p), mpz(phe_key.q)
        self._p, self._q = p, q
        self._p2, self._q2 = p * p, q * q
        n = pub.n
        # h_p = L_p(g^(p-1) mod p^2)^-1 mod p with g = n + 1 (Paillier's CRT decryption)
        self._hp = gmpy2.invert((gmpy2.powmod(n + 1, p - 1, self._p2) - 1) // p, p)
        self._hq = gmpy2.invert((gmpy2.powmod(n + 1, q - 1, self._q2) - 1) // q, q)
        self._p_inv_q = gmpy2.invert(p, q)

    def __repr__(self) -> str:
        return f"PaillierPrivateKey(n_bits={self.public_key.n_bits})"

    @classmethod
    def from_primes(cls, p: int, q: int) -> PaillierPrivateKey:
        """Build from the two primes (checked for primality and the key policy)."""
        p, q = mpz(p), mpz(q)
        if p == q or not gmpy2.is_prime(p, 30) or not gmpy2.is_prime(q, 30):
            raise KeyPolicyError("private key: p and q must be two distinct primes")
        pub = PaillierPublicKey.from_n(int(p * q))
        return cls(phe_paillier.PaillierPrivateKey(pub.phe, int(p), int(q)), pub)

    def raw_decrypt(self, c: int | mpz) -> int:
        """Plaintext residue in ``[0, n)`` of a raw ciphertext."""
        c = mpz(c)
        p, q = self._p, self._q
        p2, q2 = self._p2, self._q2
        mp = (gmpy2.powmod(c % p2, p - 1, p2) - 1) // p * self._hp % p
        mq = (gmpy2.powmod(c % q2, q - 1, q2) - 1) // q * self._hq % q
        return int(mp + (mq - mp) * self._p_inv_q % q * p)

    def decrypt_ints(
        self, cts: Iterable[int | mpz], signed: bool = True, n_jobs: int = 1
    ) -> list[int]:
        """Decrypt raw ciphertexts; ``signed`` maps residues above ``n / 2`` to negatives.

        ``n_jobs > 1`` decrypts in that many threads (gmpy2 releases the GIL in them).
        """
        n = int(self.public_key.n)
        half = n // 2
        items = list(cts)
        if n_jobs > 1 and len(items) >= 2 * n_jobs:
            bounds = [len(items) * i // n_jobs for i in range(n_jobs + 1)]
            chunks = [items[bounds[i] : bounds[i + 1]] for i in range(n_jobs)]
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                out = [m for part in pool.map(self._decrypt_chunk, chunks) for m in part]
        else:
            out = [self.raw_decrypt(c) for c in items]
        if signed:
            out = [m - n if m > half else m for m in out]
        return out

    def _decrypt_chunk(self, cts: list[int | mpz]) -> list[int]:
        with gmpy2.context(gmpy2.get_context(), allow_release_gil=True):
            return [self.raw_decrypt(c) for c in cts]

    def to_bytes(self) -> bytes:
        """Serialize ``p`` and ``q`` for the key holder's own (protected) storage; never send it."""
        pb = int(self._p).to_bytes((int(self._p.bit_length()) + 7) // 8, "big")
        qb = int(self._q).to_bytes((int(self._q.bit_length()) + 7) // 8, "big")
        return _PRIV_MAGIC + struct.pack(">H", len(pb)) + pb + struct.pack(">H", len(qb)) + qb

    @classmethod
    def from_bytes(cls, data: bytes) -> PaillierPrivateKey:
        """Inverse of :meth:`to_bytes` (checks primality and the key policy)."""
        data = bytes(data)
        if not data.startswith(_PRIV_MAGIC):
            raise MalformedMessageError("paillier private key: bad magic or version")
        body = data[len(_PRIV_MAGIC) :]
        try:
            (lp,) = struct.unpack(">H", body[:2])
            pb = body[2 : 2 + lp]
            (lq,) = struct.unpack(">H", body[2 + lp : 4 + lp])
            qb = body[4 + lp : 4 + lp + lq]
        except struct.error as exc:
            raise MalformedMessageError("paillier private key: truncated") from exc
        if len(pb) != lp or len(qb) != lq or len(body) != 4 + lp + lq:
            raise MalformedMessageError("paillier private key: truncated or trailing bytes")
        return cls.from_primes(int.from_bytes(pb, "big"), int.from_bytes(qb, "big"))


def generate_paillier_keypair(
    n_bits: int = MIN_PAILLIER_BITS,
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """Generate a Paillier key pair with phe (primes from the OS CSPRNG via ``SystemRandom``).

    Raises:
        KeyPolicyError: ``n_bits < MIN_PAILLIER_BITS`` (or above ``MAX_PAILLIER_BITS``).
        ValueError: odd ``n_bits`` (phe draws two ``n_bits / 2``-bit primes and would loop
            forever looking for an odd-length product).
    """
    n_bits = int(n_bits)
    _check_n_bits(n_bits)
    if n_bits % 2:
        raise ValueError(f"n_bits: must be even, got {n_bits}")
    phe_pub, phe_priv = phe_paillier.generate_paillier_keypair(n_length=n_bits)
    pub = PaillierPublicKey(phe_pub)
    return pub, PaillierPrivateKey(phe_priv, pub)


def _sanity_check_modulus(n: mpz) -> None:
    # Cheap structural checks on a peer's modulus; they cannot prove n = p q with p, q prime
    # (no such cheap proof exists) but they catch garbage and accidental small/degenerate keys.
    if n % 2 == 0:
        raise MalformedMessageError("paillier public key: modulus is even")
    if gmpy2.is_square(n):
        raise MalformedMessageError("paillier public key: modulus is a perfect square")
    if gmpy2.gcd(n, _SMALL_PRIMORIAL) != 1:
        raise MalformedMessageError("paillier public key: modulus has a small prime factor")
    if gmpy2.is_prime(n, 5):
        raise MalformedMessageError("paillier public key: modulus is prime")


def _small_primorial(limit: int) -> mpz:
    acc = mpz(1)
    p = mpz(2)
    while p < limit:
        acc *= p
        p = gmpy2.next_prime(p)
    return acc


_SMALL_PRIMORIAL = _small_primorial(10_000)


def _randbelow_unit(n: mpz) -> int:
    # uniform in [1, n) with gcd(r, n) = 1 (the gcd test essentially never fails for a real key)
    nbytes = (int(n.bit_length()) + 7) // 8 + 16  # 128 extra bits: negligible modulo bias
    while True:
        r = int.from_bytes(os.urandom(nbytes), "big") % int(n)
        if r and gmpy2.gcd(r, n) == 1:
            return r


# --------------------------------------------------------------------------------------------
# value conversion
# --------------------------------------------------------------------------------------------


def _as_residues(values: Any, n: mpz) -> list[mpz]:
    """Validate ``-n < v < n`` integers and return their residues mod ``n`` as mpz."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iu":
            items: Sequence[Any] = values.ravel().tolist()
        elif values.dtype.kind == "O":
            items = values.ravel().tolist()
        else:
            raise TypeError(
                f"values: expected an integer array (encode floats with FixedPoint first), "
                f"got dtype {values.dtype}"
            )
    else:
        items = list(values)
    out = []
    for i, v in enumerate(items):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, _MPZ_TYPE)):
            raise TypeError(f"values[{i}]: expected an integer, got {type(v).__name__}")
        m = mpz(int(v)) if isinstance(v, np.integer) else mpz(v)
        if not (-n < m < n):
            raise EncodingOverflowError(
                f"values[{i}]: a {int(m.bit_length())}-bit value does not fit the "
                f"{int(n.bit_length())}-bit plaintext space"
            )
        out.append(m % n if m < 0 else m)
    return out


# --------------------------------------------------------------------------------------------
# fast encryption: DJN short-exponent randomness with fixed-base window tables
# --------------------------------------------------------------------------------------------


def _build_rows(base: mpz, mod: mpz, window_bits: int, n_windows: int) -> list[list[mpz]]:
    """``rows[j][d] = base^(d * 2^(window_bits * j)) mod mod`` for every digit ``d``."""
    size = 1 << window_bits
    rows = []
    b = base % mod
    for _ in range(n_windows):
        row = [mpz(1)] * size
        acc = mpz(1)
        for d in range(1, size):
            acc = acc * b % mod
            row[d] = acc
        rows.append(row)
        b = acc * b % mod  # base^(2^window_bits) for the next window
    return rows


class _Tables:
    """Everything a process needs to produce ``h_s^a`` (and ciphertexts) for one key."""

    def __init__(self, spec: tuple) -> None:
        # spec is small and picklable, so a spawned worker rebuilds the tables from it
        mode, n, hs, exponent_bits, window_bits, p, q = spec
        self.spec = spec
        self.mode = mode
        self.n = mpz(n)
        self.n2 = self.n * self.n
        self.w = window_bits
        self.k = -(-exponent_bits // window_bits)
        # the top window is masked so that a is uniform on [0, 2^exponent_bits) exactly
        top = exponent_bits - window_bits * (self.k - 1)
        self.top_mask = (1 << top) - 1
        self.mask = (1 << window_bits) - 1
        hs = mpz(hs)
        if mode == "crt":
            self.p2 = mpz(p) ** 2
            self.q2 = mpz(q) ** 2
            self.p2_inv_q2 = gmpy2.invert(self.p2, self.q2)
            self.rows_p = _build_rows(hs, self.p2, window_bits, self.k)
            self.rows_q = _build_rows(hs, self.q2, window_bits, self.k)
        else:
            self.rows = _build_rows(hs, self.n2, window_bits, self.k)

    def _digits(self, count: int) -> list[list[int]]:
        # os.urandom (the OS CSPRNG) and not numpy/random: forked workers would otherwise
        # share a PRNG state and reuse randomness.
        raw = np.frombuffer(os.urandom(2 * count * self.k), dtype=np.uint16).reshape(self.k, count)
        digs = raw & self.mask
        digs[-1] &= self.top_mask
        return digs.tolist()

    def residues(self, count: int) -> list[mpz]:
        """``count`` independent ``h_s^a mod n^2`` with fresh short exponents ``a``."""
        if count == 0:
            return []
        digits = self._digits(count)
        # window-major loops: one list comprehension per window keeps interpreter overhead
        # (measured ~1 us per multiplication with nested loops) well below the arithmetic
        if self.mode == "crt":
            p2, q2 = self.p2, self.q2
            rp, rq = self.rows_p[0], self.rows_q[0]
            acc_p = [rp[d] for d in digits[0]]
            acc_q = [rq[d] for d in digits[0]]
            for j in range(1, self.k):
                rp, rq, dj = self.rows_p[j], self.rows_q[j], digits[j]
                acc_p = [a * rp[d] % p2 for a, d in zip(acc_p, dj, strict=True)]
                acc_q = [a * rq[d] % q2 for a, d in zip(acc_q, dj, strict=True)]
            inv = self.p2_inv_q2
            return [a + p2 * ((b - a) * inv % q2) for a, b in zip(acc_p, acc_q, strict=True)]
        n2 = self.n2
        row = self.rows[0]
        acc = [row[d] for d in digits[0]]
        for j in range(1, self.k):
            row, dj = self.rows[j], digits[j]
            acc = [a * row[d] % n2 for a, d in zip(acc, dj, strict=True)]
        return acc

    def encrypt(self, residues_mod_n: list[mpz]) -> list[mpz]:
        n, n2 = self.n, self.n2
        rs = self.residues(len(residues_mod_n))
        out = []
        for m, r in zip(residues_mod_n, rs, strict=True):
            if m:
                # (1 + m n) r = r + n (m r mod n)  (mod n^2)
                c = r + n * (m * (r % n) % n)
                out.append(c - n2 if c >= n2 else c)
            else:
                out.append(r)
        return out

    def rerandomize(self, cts: list[mpz]) -> list[mpz]:
        n2 = self.n2
        return [c * r % n2 for c, r in zip(cts, self.residues(len(cts)), strict=True)]


# Worker-side registry. With the "fork" start method the parent registers its tables here
# before the pool starts, so children inherit them (no rebuild); spawned / forkserver children
# rebuild them once from the small spec in the pool initializer.
_WORKER_TABLES: dict[str, _Tables] = {}

PARALLEL_MODES = ("threads", "processes")


def _dispatch(tables: _Tables, op: str, payload: Any) -> Any:
    if op == "encrypt":
        return tables.encrypt(payload)
    if op == "encrypt_bytes":
        # serialized in the worker: pickling 4096-bit mpz values back costs more than the
        # parallelism gains (measured: 2 processes slower than 1 core without this)
        width = (2 * int(tables.n.bit_length()) + 7) // 8
        return b"".join(c.to_bytes(width, "big") for c in tables.encrypt(payload))
    if op == "rerandomize":
        return tables.rerandomize(payload)
    return tables.residues(payload)


def _worker_init(token: str, spec: tuple) -> None:
    if token not in _WORKER_TABLES:
        _WORKER_TABLES[token] = _Tables(spec)


def _worker_run(token: str, op: str, payload: Any) -> list[mpz]:
    return _dispatch(_WORKER_TABLES[token], op, payload)


def _thread_run(tables: _Tables, op: str, payload: Any) -> list[mpz]:
    # gmpy2 keeps the GIL during arithmetic unless the (thread-local) context allows releasing
    # it; with it released, the 4096-bit multiplications of two threads run in parallel
    with gmpy2.context(gmpy2.get_context(), allow_release_gil=True):
        return _dispatch(tables, op, payload)


def _shutdown_pool(pool: Executor, token: str) -> None:
    pool.shutdown(wait=True, cancel_futures=True)
    _WORKER_TABLES.pop(token, None)


class FastEncryptor:
    """Fast Paillier encryption with Damgard-Jurik-Nielsen short-exponent randomness.

    At construction the encryptor picks a random unit ``x`` mod ``n`` and fixes
    ``h_s = (-x^2)^n mod n^2`` (an n-th residue; ``x`` and ``h_s`` stay private to this
    object). A ciphertext of ``m`` is ``(1 + m n) * h_s^a mod n^2`` with ``a`` uniform on
    ``[0, 2^exponent_bits)``, evaluated from a fixed-base table with ``window_bits``-bit windows:
    ``ceil(exponent_bits / window_bits)`` modular multiplications per value. Ciphertexts are
    ordinary Paillier ciphertexts: phe's private key decrypts them.

    Batches of at least ``parallel_threshold`` values are split across ``n_jobs`` workers, kept
    for the encryptor's lifetime (call :meth:`close` or use it as a context manager):

    * ``parallel="threads"`` (default): threads sharing the table, with gmpy2 allowed to release
      the GIL during arithmetic. No start-up cost, nothing pickled, safe in any process.
    * ``parallel="processes"``: a process pool. ``start_method`` defaults to ``"fork"`` on
      Linux (workers inherit the table; they only run gmpy2 arithmetic, so threads of TenSEAL /
      LightGBM / gRPC in the parent do not matter) and ``"spawn"`` elsewhere. With ``"spawn"``
      or ``"forkserver"`` each worker rebuilds the table once (~0.3 s) and, as always with
      those methods, a calling *script* needs an ``if __name__ == "__main__":`` guard.

    Raises:
        KeyPolicyError: ``exponent_bits`` below ``MIN_EXPONENT_BITS`` or above ``n_bits``.
    """

    def __init__(
        self,
        public_key: PaillierPublicKey,
        *,
        exponent_bits: int = DEFAULT_EXPONENT_BITS,
        window_bits: int = DEFAULT_WINDOW_BITS,
        n_jobs: int = 2,
        parallel_threshold: int = 4096,
        parallel: str = "threads",
        start_method: str | None = None,
        _private_key: PaillierPrivateKey | None = None,
    ) -> None:
        if not isinstance(public_key, PaillierPublicKey):
            raise TypeError(f"public_key: expected PaillierPublicKey, got {type(public_key)}")
        exponent_bits = int(exponent_bits)
        if exponent_bits < MIN_EXPONENT_BITS:
            raise KeyPolicyError(
                f"exponent_bits: {exponent_bits} is below the {MIN_EXPONENT_BITS}-bit minimum"
            )
        if exponent_bits > public_key.n_bits:
            raise KeyPolicyError(
                f"exponent_bits: {exponent_bits} exceeds the modulus size {public_key.n_bits}"
            )
        if not 1 <= int(window_bits) <= 16:
            raise ValueError(f"window_bits: must be in 1..16, got {window_bits}")
        if int(n_jobs) < 1:
            raise ValueError(f"n_jobs: must be >= 1, got {n_jobs}")
        if parallel not in PARALLEL_MODES:
            raise ValueError(f"parallel: must be one of {PARALLEL_MODES}, got {parallel!r}")
        self.parallel = parallel
        self.public_key = public_key
        self.exponent_bits = exponent_bits
        self.window_bits = int(window_bits)
        self.n_jobs = int(n_jobs)
        self.parallel_threshold = max(1, int(parallel_threshold))
        if start_method is None:
            # fork on Linux: workers inherit the table (pool start ~0.02 s instead of ~0.5-1 s)
            # and it works in scripts without a __main__ guard; the children only run gmpy2
            # arithmetic, so locks held by the parent's other threads are never touched.
            start_method = "fork" if sys.platform.startswith("linux") else "spawn"
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"start_method: {start_method!r} is not available here")
        self.start_method = start_method
        n = public_key.n
        x = mpz(_randbelow_unit(n))
        h = (-x * x) % n
        hs = gmpy2.powmod(h, n, public_key.nsquare)
        if _private_key is not None:
            spec = (
                "crt",
                int(n),
                int(hs),
                exponent_bits,
                self.window_bits,
                int(_private_key._p),
                int(_private_key._q),
            )
        else:
            spec = ("n2", int(n), int(hs), exponent_bits, self.window_bits, 0, 0)
        self._tables = _Tables(spec)
        self._pool: Executor | None = None
        self._token = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def for_private_key(cls, private_key: PaillierPrivateKey, **kwargs: Any) -> FastEncryptor:
        """Encryptor for the key holder: evaluates ``h_s^a`` mod ``p^2`` and ``q^2`` and joins
        them by the CRT (half-size multiplications; ~1.5x faster, measured).

        The CRT tables contain ``p^2`` and ``q^2``: never hand this object (or its worker
        processes) to anyone but the key holder.
        """
        return cls(private_key.public_key, _private_key=private_key, **kwargs)

    @property
    def uses_crt(self) -> bool:
        return self._tables.mode == "crt"

    # -- pool management -------------------------------------------------------------------------

    def _get_pool(self) -> Executor:
        with self._lock:
            if self._pool is None:
                if self.parallel == "threads":
                    self._pool = ThreadPoolExecutor(
                        max_workers=self.n_jobs, thread_name_prefix="jointcredit-paillier"
                    )
                else:
                    if self.start_method == "fork":
                        _WORKER_TABLES[self._token] = self._tables
                    self._pool = ProcessPoolExecutor(
                        max_workers=self.n_jobs,
                        mp_context=multiprocessing.get_context(self.start_method),
                        initializer=_worker_init,
                        initargs=(self._token, self._tables.spec),
                    )
                self._finalizer = weakref.finalize(self, _shutdown_pool, self._pool, self._token)
            return self._pool

    def _map(self, op: str, payloads: list[Any]) -> Iterator[list[mpz]]:
        pool = self._get_pool()
        k = len(payloads)
        if self.parallel == "threads":
            return pool.map(_thread_run, [self._tables] * k, [op] * k, payloads)
        return pool.map(_worker_run, [self._token] * k, [op] * k, payloads)

    def warm_up(self) -> None:
        """Start the workers now (processes: and build their tables) instead of on first use."""
        if self.n_jobs > 1:
            list(self._map("residues", [1] * self.n_jobs))

    def close(self) -> None:
        """Shut the worker pool down (idempotent)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._pool = None

    def __enter__(self) -> FastEncryptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, op: str, items: list[Any], count: int) -> Any:
        if self.n_jobs == 1 or count < self.parallel_threshold:
            return _dispatch(self._tables, op, count if op == "residues" else items)
        # several chunks per worker so that a worker slowed down by a busy core does not hold
        # the whole batch back
        n_chunks = min(4 * self.n_jobs, max(1, count // 512))
        bounds = [count * i // n_chunks for i in range(n_chunks + 1)]
        if op == "residues":
            payloads: list[Any] = [bounds[i + 1] - bounds[i] for i in range(n_chunks)]
        else:
            payloads = [items[bounds[i] : bounds[i + 1]] for i in range(n_chunks)]
        out: Any = b"" if op == "encrypt_bytes" else []
        try:
            for part in self._map(op, payloads):
                out += part
        except BrokenProcessPool as exc:
            self.close()
            raise CryptoError(
                f"FastEncryptor: worker processes ({self.start_method}) died. With 'spawn' or "
                "'forkserver' the calling script needs an `if __name__ == '__main__':` guard; "
                "otherwise use start_method='fork', parallel='threads' or n_jobs=1"
            ) from exc
        return out

    # -- public operations -------------------------------------------------------------------------

    def encrypt_ints(self, values: Any) -> list[mpz]:
        """Encrypt integers ``-n < v < n`` (Python ints, numpy integer or object arrays).

        Negative values are encoded as ``n - |v|``; decrypt with ``signed=True`` to get them
        back. Raises :class:`EncodingOverflowError` for ``|v| >= n``.
        """
        residues = _as_residues(values, self.public_key.n)
        return self._run("encrypt", residues, len(residues))

    def encrypt_to_bytes(self, values: Any) -> bytes:
        """:meth:`encrypt_ints` serialized as :meth:`PaillierPublicKey.ciphertexts_to_bytes`.

        With ``parallel="processes"`` the workers serialize, which is what makes two processes
        faster than one core (returning mpz values through pickle is not).
        """
        residues = _as_residues(values, self.public_key.n)
        return self._run("encrypt_bytes", residues, len(residues))

    def encrypt_int(self, value: int) -> mpz:
        """Encrypt one integer (in the calling thread)."""
        return self._tables.encrypt(_as_residues([value], self.public_key.n))[0]

    def random_residues(self, count: int) -> list[mpz]:
        """``count`` fresh random n-th residues ``h_s^a`` (encryptions of zero)."""
        return self._run("residues", [], int(count))

    def rerandomize(self, cts: Sequence[mpz]) -> list[mpz]:
        """Multiply each ciphertext by a fresh encryption of zero.

        Use it before sending ciphertexts derived from the peer's own ciphertexts (sums,
        compressed histograms): otherwise the key holder can test which of its ciphertexts
        were combined, since the combination is deterministic.
        """
        items = [self.public_key.validate_ciphertext(c) for c in cts]
        return self._run("rerandomize", items, len(items))


# --------------------------------------------------------------------------------------------
# homomorphic compression of many small non-negative values into one plaintext
# --------------------------------------------------------------------------------------------


def slots_per_ciphertext(public_key: PaillierPublicKey, slot_bits: int) -> int:
    """How many ``slot_bits``-bit slots :func:`compress` puts in one ciphertext."""
    capacity = public_key.n_bits - PACKING_MARGIN_BITS
    if not 1 <= slot_bits <= capacity:
        raise EncodingOverflowError(
            f"slot_bits: {slot_bits} must be in 1..{capacity} for a {public_key.n_bits}-bit key"
        )
    return capacity // slot_bits


def compress(public_key: PaillierPublicKey, cts: Sequence[mpz], slot_bits: int) -> list[mpz]:
    """Pack many ciphertexts of small non-negative values into few ciphertexts (Horner).

    Each output is ``c_0^(2^(s(k-1))) * ... * c_(k-1)`` i.e. the plaintext
    ``sum_j m_j 2^(s (k-1-j))``: the *first* value of a group lands in the most significant
    slot. ``k = slots_per_ciphertext(public_key, slot_bits)`` except for the last group.

    Every plaintext must be in ``[0, 2^slot_bits)``; callers shift signed sums by a known offset
    first (see :mod:`jointcredit.crypto.encoding`). A bad slot is detected by
    :func:`decompress_ints` only when the packed total goes negative (wraps to ~n) or spills
    past the top slot; otherwise a negative slot silently borrows from, and a too-large one
    carries into, its neighbour. Size slots from bounds (``SlotPacker.for_bounds``), not data.
    Outputs are deterministic functions of the inputs: re-randomize
    (:meth:`FastEncryptor.rerandomize`) before sending.
    """
    return _horner(cts, slot_bits, slots_per_ciphertext(public_key, slot_bits), public_key.nsquare)


def _horner(cts: Sequence[Any], slot_bits: int, per: int, mod: Any) -> list[mpz]:
    """Groups of ``per`` ciphertexts packed as ``c <- c^(2^slot_bits) * c_i mod mod`` (any
    additive scheme whose ciphertexts multiply mod ``mod``)."""
    shift = mpz(1) << slot_bits
    out = []
    for start in range(0, len(cts), per):
        group = cts[start : start + per]
        acc = mpz(group[0])
        for c in group[1:]:
            acc = gmpy2.powmod(acc, shift, mod) * c % mod
        out.append(acc)
    return out


def _split_slots(plaintexts: Sequence[int], slot_bits: int, per: int, count: int) -> list[int]:
    """Inverse of :func:`_horner` on the decrypted values, with the overflow check."""
    mask = (1 << slot_bits) - 1
    out: list[int] = []
    for i, m in enumerate(plaintexts):
        k = min(per, count - i * per)
        if m.bit_length() > k * slot_bits:
            raise EncodingOverflowError(
                f"packed_cts[{i}]: plaintext has {m.bit_length()} bits, more than {k} slots of "
                f"{slot_bits} bits (a slot value was negative or overflowed)"
            )
        out.extend((m >> (slot_bits * (k - 1 - j))) & mask for j in range(k))
    return out


def _check_packed_count(n_packed: int, per: int, slot_bits: int, count: int) -> None:
    expected = math.ceil(count / per) if count else 0
    if n_packed != expected:
        raise ValueError(
            f"packed_cts: {count} values of {slot_bits} bits need {expected} ciphertexts, "
            f"got {n_packed}"
        )


def decompress_ints(
    private_key: PaillierPrivateKey, packed_cts: Sequence[mpz], slot_bits: int, count: int
) -> list[int]:
    """Decrypt :func:`compress` output back into ``count`` non-negative slot values.

    Raises:
        ValueError: ``len(packed_cts)`` does not match ``count``.
        EncodingOverflowError: a packed plaintext is wider than its slots (the packed total
            was negative or the top slot overflowed); not every bad slot is detectable.
    """
    per = slots_per_ciphertext(private_key.public_key, slot_bits)
    _check_packed_count(len(packed_cts), per, slot_bits, count)
    plain = [private_key.raw_decrypt(c) for c in packed_cts]
    return _split_slots(plain, slot_bits, per, count)
