"""CKKS (approximate arithmetic on encrypted real vectors) via TenSEAL, for the two-party setting.

The key owner (the bank, in every protocol here) holds the secret context
(:class:`CKKSKeyOwner`); the other party gets a *public* context from
:meth:`CKKSKeyOwner.public_context_bytes` and works through :class:`CKKSPeer`: it deserializes
the owner's vectors, multiplies them by its own plaintext vectors, adds, re-randomizes and
serializes the results back. Samples go in slots (``N / 2`` per ciphertext) and long arrays are
chunked across several ciphertexts, so everything is vectorised over enterprises.

Parameters are checked against the HomomorphicEncryption.org standard for 128-bit security
(ternary secrets): the total coefficient-modulus size may not exceed 27 / 54 / 109 / 218 / 438 /
881 bits for N = 1024 ... 32768. A peer refuses any context that breaks this policy or carries
a secret key.

Sharp edges found in TenSEAL 0.3.18 (handled here):

* ``CKKSVector.scale()`` is broken (the C++ binding has no ``scale``); the scale is read from
  ``vector.ciphertext()[0].scale``.
* ``EncryptionParameters.coeff_modulus()`` only converts to Python after
  ``import tenseal.sealapi`` registered the ``seal::Modulus`` type, and ``parms.scheme()``
  returns a third enum type equal to neither ``tenseal.SCHEME_TYPE.CKKS`` nor
  ``tenseal.sealapi.SCHEME_TYPE.CKKS`` (compare ``.name``).
* A public context with symmetric encryption cannot encrypt, so a peer could not re-randomize;
  only asymmetric (public-key) contexts are created.
* ``matmul`` / ``mm`` (vector x matrix) need Galois keys and are ~100x slower than one
  ``mul_plain`` per column; per-slot products are the intended use.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts
import tenseal.sealapi  # noqa: F401  (registers seal::Modulus so coeff_modulus() converts)

from jointcredit.errors import (
    CryptoError,
    EncodingOverflowError,
    KeyPolicyError,
    MalformedMessageError,
)

__all__ = [
    "MAX_COEFF_MODULUS_BITS_128",
    "CKKSKeyOwner",
    "CKKSParams",
    "CKKSPeer",
    "SealEvaluator",
    "SealFile",
    "SeededEncryptor",
    "deserialize_vectors",
    "frame_serialized",
    "serialize_vectors",
    "tenseal_vector_bytes",
]

#: Largest total coefficient modulus (bits) for 128-bit classical security with a ternary secret,
#: per the HomomorphicEncryption.org security standard (also SEAL's default ``sec_level_type``).
MAX_COEFF_MODULUS_BITS_128: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

_VEC_MAGIC = b"JCKV\x01"
_PUBCTX_MAGIC = b"JCKP\x01"
_OWNER_MAGIC = b"JCKO\x01"


@dataclass(frozen=True)
class CKKSParams:
    """CKKS parameter set.

    ``coeff_mod_bit_sizes``: the first prime holds the integer part of results (values must stay
    below ``2^(first - global_scale_bits - 1)`` in magnitude, see :attr:`max_abs`), the middle
    primes are consumed one per multiplication (``depth``), the last is SEAL's special prime for
    key switching. The default (60, 40, 40, 60) at N = 8192 gives 4096 slots, depth 2, 200 of
    the 218 bits allowed, and ~1e-7 absolute error for a product of values in [-1, 1].
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    global_scale_bits: int = 40

    def __post_init__(self) -> None:
        # accept lists from callers / JSON while keeping the dataclass hashable
        object.__setattr__(
            self, "coeff_mod_bit_sizes", tuple(int(b) for b in self.coeff_mod_bit_sizes)
        )
        object.__setattr__(self, "poly_modulus_degree", int(self.poly_modulus_degree))
        object.__setattr__(self, "global_scale_bits", int(self.global_scale_bits))

    @property
    def slots(self) -> int:
        """Real values per ciphertext (``N / 2``)."""
        return self.poly_modulus_degree // 2

    @property
    def total_coeff_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def depth(self) -> int:
        """Number of multiplications (rescales) a fresh ciphertext supports."""
        return max(0, len(self.coeff_mod_bit_sizes) - 2)

    @property
    def max_abs(self) -> float:
        """Magnitude every encrypted value and every result must stay below (else it wraps)."""
        return float(2.0 ** (self.coeff_mod_bit_sizes[0] - self.global_scale_bits - 1))

    def validate(self) -> CKKSParams:
        """Check the 128-bit security policy and basic validity; return ``self``.

        Raises:
            KeyPolicyError: naming ``poly_modulus_degree``, ``coeff_mod_bit_sizes`` or
                ``global_scale_bits``.
        """
        n = self.poly_modulus_degree
        if n not in MAX_COEFF_MODULUS_BITS_128:
            raise KeyPolicyError(
                f"poly_modulus_degree: {n} is not one of {sorted(MAX_COEFF_MODULUS_BITS_128)}"
            )
        bits = self.coeff_mod_bit_sizes
        if len(bits) < 2:
            raise KeyPolicyError(
                "coeff_mod_bit_sizes: need at least a data prime and the special prime, "
                f"got {list(bits)}"
            )
        min_bits = int(math.log2(2 * n)) + 2  # primes must be 1 mod 2N
        for b in bits:
            if not min_bits <= b <= 60:
                raise KeyPolicyError(
                    f"coeff_mod_bit_sizes: each prime must have {min_bits}..60 bits for N={n}, "
                    f"got {b}"
                )
        limit = MAX_COEFF_MODULUS_BITS_128[n]
        if self.total_coeff_bits > limit:
            raise KeyPolicyError(
                f"coeff_mod_bit_sizes: total {self.total_coeff_bits} bits exceeds {limit}, the "
                f"128-bit security limit for poly_modulus_degree={n}"
            )
        if not 1 <= self.global_scale_bits < bits[0]:
            raise KeyPolicyError(
                f"global_scale_bits: {self.global_scale_bits} must be in 1..{bits[0] - 1} "
                f"(below the first prime's {bits[0]} bits)"
            )
        return self


def _params_of(ctx: ts.Context) -> CKKSParams:
    """Read the parameter set back from a (deserialized) TenSEAL context."""
    try:
        parms = ctx.seal_context().data.key_context_data().parms()
        scheme = parms.scheme()
    except Exception as exc:  # TenSEAL raises assorted types for a half-initialised context
        raise MalformedMessageError(f"ckks context: cannot read parameters ({exc})") from exc
    # parms.scheme() is a third enum type (_tenseal_cpp.SCHEME_TYPE), equal to neither
    # tenseal.SCHEME_TYPE.CKKS nor tenseal.sealapi.SCHEME_TYPE.CKKS: compare names
    if getattr(scheme, "name", None) != "CKKS":
        raise KeyPolicyError(f"ckks context: scheme is {getattr(scheme, 'name', scheme)}, not CKKS")
    try:
        n = int(parms.poly_modulus_degree())
        bits = tuple(int(m.bit_count()) for m in parms.coeff_modulus())
        scale = float(ctx.global_scale)
    except Exception as exc:  # e.g. "no global scale"
        raise MalformedMessageError(f"ckks context: cannot read parameters ({exc})") from exc
    if not (scale > 1 and math.isfinite(scale)) or 2.0 ** round(math.log2(scale)) != scale:
        raise KeyPolicyError(f"global_scale_bits: global scale {scale} is not a power of two")
    return CKKSParams(n, bits, round(math.log2(scale))).validate()


def _can_encrypt(ctx: ts.Context) -> bool:
    try:
        return bool(ctx.has_public_key())
    except ValueError:  # symmetric contexts raise instead of answering
        return False


def _secure_normal(count: int, std: float) -> np.ndarray:
    # Box-Muller on OS randomness: noise meant to hide values from the key holder should not
    # come from a PRNG whose state its outputs might reveal
    u = np.frombuffer(os.urandom(16 * count), dtype=np.uint64).reshape(2, count) >> np.uint64(11)
    u1 = (u[0].astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = u[1].astype(np.float64) * 2.0**-53
    return std * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# --------------------------------------------------------------------------------------------
# vector (de)serialization
# --------------------------------------------------------------------------------------------


def serialize_vectors(vectors: Sequence[ts.CKKSVector]) -> bytes:
    """``b"JCKV\\x01" || u32 count || (u32 length || TenSEAL bytes)*``."""
    return frame_serialized([v.serialize() for v in vectors])


def frame_serialized(blobs: Sequence[bytes]) -> bytes:
    """:func:`serialize_vectors` of vectors already serialized (e.g. by a worker process)."""
    parts = [_VEC_MAGIC, struct.pack(">I", len(blobs))]
    for b in blobs:
        parts += [struct.pack(">I", len(b)), b]
    return b"".join(parts)


def deserialize_vectors(ctx: Any, data: bytes) -> list[ts.CKKSVector]:
    """Parse :func:`serialize_vectors` output, linking each vector to ``ctx``.

    ``ctx`` is a ``tenseal.Context``, a :class:`CKKSKeyOwner` or a :class:`CKKSPeer`.

    Raises:
        MalformedMessageError: framing errors, bytes TenSEAL cannot parse, a vector made under
            other parameters, or one longer than the slot count.
    """
    context = ctx.context if isinstance(ctx, _CKKSParty) else ctx
    if not isinstance(context, ts.Context):
        raise TypeError(f"ctx: expected a tenseal.Context or CKKS party, got {type(ctx)}")
    data = bytes(data)
    if not data.startswith(_VEC_MAGIC):
        raise MalformedMessageError("ckks vectors: bad magic or version")
    pos = len(_VEC_MAGIC)
    if len(data) < pos + 4:
        raise MalformedMessageError("ckks vectors: truncated count")
    (count,) = struct.unpack_from(">I", data, pos)
    pos += 4
    slots = context.seal_context().data.key_context_data().parms().poly_modulus_degree() // 2
    out = []
    for i in range(count):
        if len(data) < pos + 4:
            raise MalformedMessageError(f"ckks vectors[{i}]: truncated length")
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if len(data) < pos + length:
            raise MalformedMessageError(f"ckks vectors[{i}]: truncated body")
        try:
            v = ts.ckks_vector_from(context, data[pos : pos + length])
            size = v.size()
        except Exception as exc:  # ValueError (parse) / RuntimeError (wrong parameters)
            raise MalformedMessageError(f"ckks vectors[{i}]: {exc}") from exc
        if not 0 < size <= slots:
            raise MalformedMessageError(f"ckks vectors[{i}]: size {size} outside 1..{slots}")
        pos += length
        out.append(v)
    if pos != len(data):
        raise MalformedMessageError(f"ckks vectors: {len(data) - pos} trailing bytes")
    return out


# --------------------------------------------------------------------------------------------
# SEAL objects through TenSEAL's bindings (tenseal.sealapi)
# --------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def tenseal_vector_bytes(seal_bytes: bytes, size: int, scale: float) -> bytes:
    """A SEAL ciphertext as TenSEAL serializes a one-chunk ``CKKSVector`` (protobuf
    ``CKKSVectorProto``: 1 = sizes, 2 = ciphertexts, 3 = scale); tests pin it against TenSEAL."""
    sizes = _varint(size)
    return b"".join(
        [b"\x0a", _varint(len(sizes)), sizes, b"\x12", _varint(len(seal_bytes)), seal_bytes,
         b"\x19", struct.pack("<d", scale)]
    )  # fmt: skip


class SealFile:
    """TenSEAL's SEAL bindings (de)serialize only through a path: each call uses a fresh private
    temporary file (mode 0600, in ``/dev/shm`` when available) and removes it before returning.
    Only public material goes through it (ciphertexts, Galois keys), never the secret key."""

    def __init__(self) -> None:
        shm = "/dev/shm"
        self.folder = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None

    def _path(self) -> str:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="jointcredit-seal-", dir=self.folder)
        os.close(fd)
        return path

    def dump(self, obj: Any) -> bytes:
        path = self._path()
        try:
            obj.save(path)
            with open(path, "rb") as fh:
                return fh.read()
        finally:
            os.unlink(path)

    def load(self, obj: Any, seal_context: Any, data: bytes) -> Any:
        path = self._path()
        try:
            with open(path, "wb") as fh:
                fh.write(data)
            obj.load(seal_context, path)
            return obj
        finally:
            os.unlink(path)

    def close(self) -> None:
        pass  # nothing is kept between calls


# --------------------------------------------------------------------------------------------
# parties
# --------------------------------------------------------------------------------------------


class _CKKSParty:
    """Operations both parties can run on ciphertexts (no secret key needed)."""

    context: ts.Context
    params: CKKSParams

    @property
    def slots(self) -> int:
        return self.params.slots

    @property
    def can_encrypt(self) -> bool:
        return _can_encrypt(self.context)

    def _as_vector(self, values: Any, what: str) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"{what}: expected a 1-D array, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise EncodingOverflowError(f"{what}: NaN or infinite values cannot be encrypted")
        if arr.size and np.max(np.abs(arr)) >= self.params.max_abs:
            raise EncodingOverflowError(
                f"{what}: |value| {np.max(np.abs(arr)):.6g} >= {self.params.max_abs:.6g}, the "
                f"largest magnitude these parameters decrypt without wrapping"
            )
        return arr

    def encrypt(self, values: Any) -> list[ts.CKKSVector]:
        """Encrypt a 1-D float array, ``slots`` values per ciphertext (the last may be shorter)."""
        if not self.can_encrypt:
            raise CryptoError("encrypt: this context has no public key")
        arr = self._as_vector(values, "values")
        s = self.slots
        return [
            ts.ckks_vector(self.context, arr[i : i + s].tolist()) for i in range(0, arr.size, s)
        ]

    def serialize_vectors(self, vectors: Sequence[ts.CKKSVector]) -> bytes:
        return serialize_vectors(vectors)

    def deserialize_vectors(self, data: bytes) -> list[ts.CKKSVector]:
        return deserialize_vectors(self.context, data)

    def _split_like(
        self, vectors: Sequence[ts.CKKSVector], plain: Any, what: str
    ) -> list[list[float]]:
        arr = np.asarray(plain, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"{what}: expected a 1-D array, got shape {arr.shape}")
        sizes = [v.size() for v in vectors]
        if arr.size != sum(sizes):
            raise ValueError(
                f"{what}: length {arr.size} does not match the encrypted length {sum(sizes)}"
            )
        if not np.all(np.isfinite(arr)):
            raise EncodingOverflowError(f"{what}: NaN or infinite values")
        bounds = np.cumsum([0, *sizes])
        return [arr[bounds[i] : bounds[i + 1]].tolist() for i in range(len(sizes))]

    def mul_plain(self, vectors: Sequence[ts.CKKSVector], plain: Any) -> list[ts.CKKSVector]:
        """Slot-wise product with a plaintext array of the same total length (uses one level)."""
        chunks = self._split_like(vectors, plain, "plain")
        return [v * c for v, c in zip(vectors, chunks, strict=True)]

    def add_plain(self, vectors: Sequence[ts.CKKSVector], plain: Any) -> list[ts.CKKSVector]:
        """Slot-wise sum with a plaintext array of the same total length."""
        chunks = self._split_like(vectors, plain, "plain")
        return [v + c for v, c in zip(vectors, chunks, strict=True)]

    def add(self, a: Sequence[ts.CKKSVector], b: Sequence[ts.CKKSVector]) -> list[ts.CKKSVector]:
        """Slot-wise sum of two equally chunked encrypted arrays."""
        if len(a) != len(b) or any(x.size() != y.size() for x, y in zip(a, b, strict=True)):
            raise ValueError("add: the two encrypted arrays are chunked differently")
        return [x + y for x, y in zip(a, b, strict=True)]

    def sum_arrays(self, arrays: Sequence[Sequence[ts.CKKSVector]]) -> list[ts.CKKSVector]:
        """Slot-wise sum of several equally chunked encrypted arrays (e.g. over features)."""
        if not arrays:
            raise ValueError("sum_arrays: nothing to sum")
        acc = list(arrays[0])
        for other in arrays[1:]:
            acc = self.add(acc, other)
        return acc

    def rerandomize(
        self, vectors: Sequence[ts.CKKSVector], noise_std: float = 0.0
    ) -> list[ts.CKKSVector]:
        """Add a fresh encryption of zero (plus optional Gaussian noise) to each vector.

        Call it on results before sending them to the key owner. Without it a product
        ``Enc(x) * w`` is a deterministic function of the owner's own ciphertext and ``w``, so
        the owner, who knows its ciphertext, learns more about ``w`` than the decrypted slots.
        ``noise_std > 0`` additionally floods the decryption error (which depends on ``w``)
        with noise of that standard deviation, at the cost of that much absolute error.
        """
        if not self.can_encrypt:
            raise CryptoError("rerandomize: this context has no public key")
        if noise_std < 0 or not math.isfinite(noise_std):
            raise ValueError(f"noise_std: must be a finite value >= 0, got {noise_std}")
        out = []
        for v in vectors:
            size = v.size()
            fill = _secure_normal(size, noise_std) if noise_std > 0 else np.zeros(size)
            # encrypt at the vector's current scale so the addition needs no rescaling
            scale = v.ciphertext()[0].scale
            out.append(v + ts.ckks_vector(self.context, fill.tolist(), scale=scale))
        return out


class CKKSKeyOwner(_CKKSParty):
    """The party that holds the CKKS secret key (decrypts results).

    Args:
        params: parameter set (validated against the 128-bit policy).
        galois_keys: generate rotation keys (needed only for ``sum``/``dot``/``matmul``
            inside a ciphertext; they make the public context ~35 MB instead of ~0.5 MB).
        n_threads: TenSEAL worker threads (default: all cores).
    """

    def __init__(
        self,
        params: CKKSParams | None = None,
        galois_keys: bool = False,
        *,
        n_threads: int | None = None,
        _context: ts.Context | None = None,
    ) -> None:
        if _context is not None:
            self.context = _context
            self.params = _params_of(_context)
        else:
            self.params = (params if params is not None else CKKSParams()).validate()
            self.context = ts.context(
                ts.SCHEME_TYPE.CKKS,
                poly_modulus_degree=self.params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(self.params.coeff_mod_bit_sizes),
                n_threads=n_threads,
            )
            self.context.global_scale = 2.0**self.params.global_scale_bits
            if galois_keys:
                self.context.generate_galois_keys()
        self.galois_keys = bool(self.context.has_galois_keys())

    def __repr__(self) -> str:
        return f"CKKSKeyOwner({self.params}, galois_keys={self.galois_keys})"

    def public_context_bytes(self, *, relin_keys: bool = False) -> bytes:
        """The context the peer needs: public key, no secret key.

        Galois keys are included iff the owner was created with ``galois_keys=True``;
        relinearization keys (~1.4 MB at N = 8192) only on request, since products with
        plaintexts (all the protocols here) do not need them.
        """
        body = self.context.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=self.galois_keys,
            save_relin_keys=relin_keys,
        )
        return _PUBCTX_MAGIC + body

    def decrypt(self, vectors: Sequence[ts.CKKSVector], length: int) -> np.ndarray:
        """Decrypt chunked vectors and return the first ``length`` values as float64."""
        total = sum(v.size() for v in vectors)
        if not 0 <= length <= total:
            raise ValueError(f"length: {length} outside 0..{total} (encrypted length)")
        # pass the key explicitly: vectors still linked to another (public) context, e.g. in a
        # single-process test, would otherwise fail to decrypt
        sk = self.context.secret_key()
        parts = [np.asarray(v.decrypt(sk), dtype=np.float64) for v in vectors]
        out = np.concatenate(parts) if parts else np.zeros(0)
        return out[:length]

    def rotation_keys(self, steps: Sequence[int]) -> bytes:
        """Galois keys for slot rotations by exactly ``steps`` (SEAL's serialization).

        A peer that needs a few fixed rotations gets only these: each is one key-switching key
        (~1.4 MB at N = 8192), where TenSEAL's full set is ~35 MB.
        """
        import tenseal.sealapi as sealapi

        steps = [int(s) for s in steps]
        if not steps or any(not 0 < s < self.slots for s in steps):
            raise ValueError(f"steps: rotations must lie in 1..{self.slots - 1}, got {steps}")
        seal_context = self.context.seal_context().data
        elements = seal_context.key_context_data().galois_tool().get_elts_from_steps(steps)
        keys = sealapi.GaloisKeys()
        sealapi.KeyGenerator(seal_context, self.context.data.secret_key()).create_galois_keys(
            elements, keys
        )
        return SealFile().dump(keys)

    def to_bytes(self) -> bytes:
        """Serialize the full context *including the secret key* for the owner's own storage."""
        body = self.context.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=self.galois_keys,
            save_relin_keys=True,
        )
        return _OWNER_MAGIC + body

    @classmethod
    def from_bytes(cls, data: bytes, *, n_threads: int | None = None) -> CKKSKeyOwner:
        """Inverse of :meth:`to_bytes` (re-validates the parameters)."""
        data = bytes(data)
        if not data.startswith(_OWNER_MAGIC):
            raise MalformedMessageError("ckks owner context: bad magic or version")
        ctx = _load_context(data[len(_OWNER_MAGIC) :], n_threads)
        if not ctx.is_private():
            raise KeyPolicyError("ckks owner context: no secret key in these bytes")
        return cls(_context=ctx)


class CKKSPeer(_CKKSParty):
    """The other party's view: a public context (no secret key), built only from bytes."""

    def __init__(self, context: ts.Context) -> None:
        if context.is_private():
            raise KeyPolicyError("ckks context: carries a secret key; a peer must not hold it")
        self.context = context
        self.params = _params_of(context)
        self.galois_keys = bool(context.has_galois_keys())

    def __repr__(self) -> str:
        return f"CKKSPeer({self.params}, galois_keys={self.galois_keys})"

    @classmethod
    def from_public_bytes(cls, data: bytes, *, n_threads: int | None = None) -> CKKSPeer:
        """Load the owner's :meth:`CKKSKeyOwner.public_context_bytes`.

        Raises:
            MalformedMessageError: not a public context of this library / TenSEAL cannot parse.
            KeyPolicyError: the context carries a secret key, is not CKKS, or violates the
                128-bit parameter policy.
        """
        data = bytes(data)
        if not data.startswith(_PUBCTX_MAGIC):
            raise MalformedMessageError("ckks public context: bad magic or version")
        ctx = _load_context(data[len(_PUBCTX_MAGIC) :], n_threads)
        return cls(ctx)


def _load_context(body: bytes, n_threads: int | None) -> ts.Context:
    try:
        ctx = ts.context_from(body, n_threads=n_threads)
    except Exception as exc:
        raise MalformedMessageError(f"ckks context: cannot parse ({exc})") from exc
    # the flags are part of the serialized state; a peer relies on them being on
    ctx.auto_rescale = True
    ctx.auto_relin = True
    ctx.auto_mod_switch = True
    return ctx


class SeededEncryptor:
    """Secret-key CKKS encryption with a seeded second component, for the key owner only.

    The bank holds the secret key, so it may encrypt symmetrically: SEAL then replaces the
    uniformly random half of each ciphertext by the seed it was drawn from. Measured here: half
    the bytes (114 kB instead of 235 kB per ciphertext at N = 8192) and ~40 % less CPU than
    TenSEAL's public-key encryption; the receiver's TenSEAL expands the seed when it loads the
    vector. Values may be complex (two real columns per slot). The output is a TenSEAL vector
    serialization, so the center reads it with :func:`jointcredit.crypto.ckks.
    deserialize_vectors` like any other vector. On creation the encryptor checks a round trip
    through TenSEAL; if that fails (another TenSEAL version) ``ok`` is false and callers fall
    back to the owner's public-key encryption (real values only).
    """

    def __init__(self, owner: CKKSKeyOwner) -> None:
        import tenseal.sealapi as sealapi

        self._sealapi = sealapi
        self.owner = owner
        seal_context = owner.context.seal_context().data
        self._encoder = sealapi.CKKSEncoder(seal_context)
        self._encryptor = sealapi.Encryptor(seal_context, owner.context.data.secret_key())
        self._scale = float(2.0**owner.params.global_scale_bits)
        self._file = SealFile()
        self.ok = self._self_test()

    def _self_test(self) -> bool:
        probe = np.linspace(-1.0, 1.0, 7)
        try:
            (vector,) = deserialize_vectors(self.owner, frame_serialized([self.encrypt(probe)]))
            back = self.owner.decrypt([vector], probe.size)
        except Exception:  # noqa: BLE001 - any failure means "use the public-key path"
            return False
        return bool(np.allclose(back, probe, atol=1e-6))

    def encrypt(self, values: np.ndarray) -> bytes:
        """One serialized vector of at most ``slots`` real or complex values."""
        plain = self._sealapi.Plaintext()
        self._encoder.encode(np.asarray(values).tolist(), self._scale, plain)
        body = self._file.dump(self._encryptor.encrypt_symmetric(plain))
        return tenseal_vector_bytes(body, len(values), self._scale)

    def conjugation_key(self) -> bytes:
        """The Galois key of complex conjugation only (no rotation keys), serialized."""
        sealapi = self._sealapi
        seal_context = self.owner.context.seal_context().data
        keys = sealapi.GaloisKeys()
        generator = sealapi.KeyGenerator(seal_context, self.owner.context.data.secret_key())
        generator.create_galois_keys([2 * self.owner.params.poly_modulus_degree - 1], keys)
        return self._file.dump(keys)

    def close(self) -> None:
        self._file.close()


class SealEvaluator:
    """Level-aware SEAL arithmetic on a party's context, for hot loops.

    TenSEAL's ``CKKSVector`` encodes its plaintext operand again and rescales after every
    product, and encrypts only at the top level. A protocol loop that reuses plaintexts (the
    center's feature columns, batch after batch), sums several products before one rescale, or
    returns results at the last level (one prime left) does much less work here. Measured at
    N = 8192 with (60, 40, 40, 60) bits: product with a ready plaintext 0.3 ms instead of
    2.3 ms plus one 1 ms rescale per *sum*; a public-key encryption at the last level 3.9 ms
    instead of 6.2 ms, 131 kB instead of 331 kB serialized.

    Ciphertexts are SEAL objects; :meth:`ciphertexts` takes them out of TenSEAL vectors and
    :meth:`dump` serializes a result as a TenSEAL vector, so the other party reads it with
    :func:`deserialize_vectors` as usual. Levels count from 0 (fresh: every data prime) to
    :attr:`last` (one prime left).
    """

    def __init__(self, party: _CKKSParty) -> None:
        import tenseal.sealapi as sealapi

        self._sealapi = sealapi
        self.params = party.params
        self.slots = party.slots
        context = party.context
        self.seal_context = context.seal_context().data
        self._evaluator = sealapi.Evaluator(self.seal_context)
        self._encoder = sealapi.CKKSEncoder(self.seal_context)
        self._encryptor = (
            sealapi.Encryptor(self.seal_context, context.data.public_key())
            if party.can_encrypt
            else None
        )
        self._relin_keys = context.data.relin_keys() if context.has_relin_keys() else None
        chain = []
        data = self.seal_context.first_context_data()
        while data is not None:
            chain.append(data.parms_id())
            data = data.next_context_data()
        self._chain = chain
        self._level_of = {tuple(p): i for i, p in enumerate(chain)}
        self.last = len(chain) - 1
        self.scale = float(2.0**self.params.global_scale_bits)
        self._file = SealFile()

    # -- moving between TenSEAL vectors, SEAL ciphertexts and bytes ----------------------------

    @staticmethod
    def ciphertexts(vectors: Sequence[ts.CKKSVector]) -> list[Any]:
        """The SEAL ciphertext of each (one-chunk) TenSEAL vector."""
        return [v.ciphertext()[0] for v in vectors]

    def dump(self, ct: Any, size: int | None = None) -> bytes:
        """``ct`` serialized as a TenSEAL vector of ``size`` values (default: every slot)."""
        size = self.slots if size is None else int(size)
        return tenseal_vector_bytes(self._file.dump(ct), size, ct.scale)

    def dump_raw(self, ct: Any) -> bytes:
        """SEAL's own serialization (for this library's worker processes)."""
        return self._file.dump(ct)

    def load_raw(self, data: bytes) -> Any:
        """Inverse of :meth:`dump_raw`; SEAL checks the ciphertext belongs to this context."""
        try:
            return self._file.load(self._sealapi.Ciphertext(), self.seal_context, bytes(data))
        except Exception as exc:  # SEAL raises assorted types for foreign or broken bytes
            raise MalformedMessageError(f"ckks ciphertext: cannot load ({exc})") from exc

    # -- arithmetic ------------------------------------------------------------------------------

    def level(self, ct: Any) -> int:
        return self._level_of[tuple(ct.parms_id())]

    def encode(self, values: Any, level: int, scale: float | None = None) -> Any:
        """A plaintext of real ``values`` (zero-padded to the slots) at ``level`` and ``scale``."""
        plain = self._sealapi.Plaintext()
        scale = self.scale if scale is None else float(scale)
        self._encoder.encode(np.asarray(values, dtype=np.float64).tolist(), self._chain[level],
                             scale, plain)  # fmt: skip
        return plain

    def multiply_plain(self, ct: Any, plain: Any) -> Any:
        """``ct * plain`` slot-wise, not rescaled (the scales multiply)."""
        out = self._sealapi.Ciphertext()
        self._evaluator.multiply_plain(ct, plain, out)
        return out

    def multiply(self, a: Any, b: Any) -> Any:
        """``a * b`` slot-wise, relinearized, not rescaled (needs the relinearization keys)."""
        if self._relin_keys is None:
            raise CryptoError("multiply: this context has no relinearization keys")
        level = max(self.level(a), self.level(b))
        a, b = self.mod_switch(a, level), self.mod_switch(b, level)
        out = self._sealapi.Ciphertext()
        self._evaluator.multiply(a, b, out)
        self._evaluator.relinearize_inplace(out, self._relin_keys)
        return out

    def add(self, a: Any, b: Any) -> Any:
        """``a + b`` as a new ciphertext."""
        out = self._sealapi.Ciphertext()
        self._evaluator.add(a, b, out)
        return out

    def add_into(self, acc: Any | None, ct: Any) -> Any:
        """``acc + ct`` computed in ``acc``, which changes (``ct`` itself when ``acc`` is None:
        use it only on ciphertexts this loop made)."""
        if acc is None:
            return ct
        self._evaluator.add_inplace(acc, ct)
        return acc

    def add_plain(self, ct: Any, plain: Any) -> Any:
        out = self._sealapi.Ciphertext()
        self._evaluator.add_plain(ct, plain, out)
        return out

    def rescale(self, ct: Any) -> Any:
        """Divide by the level's last prime and drop it (after a product)."""
        out = self._sealapi.Ciphertext()
        self._evaluator.rescale_to_next(ct, out)
        return out

    def load_rotation_keys(self, data: bytes, steps: Sequence[int]) -> None:
        """Accept the owner's :meth:`CKKSKeyOwner.rotation_keys`, which must cover ``steps``.

        Raises:
            MalformedMessageError: bytes SEAL cannot load under this context, or keys missing
                for one of ``steps``.
        """
        if not isinstance(data, bytes):
            raise MalformedMessageError("rotation keys: expected bytes")
        try:
            keys = self._file.load(self._sealapi.GaloisKeys(), self.seal_context, data)
        except Exception as exc:  # SEAL refuses keys of other parameters / garbage
            raise MalformedMessageError(f"rotation keys: cannot load ({exc})") from exc
        tool = self.seal_context.key_context_data().galois_tool()
        missing = [s for s in steps if not keys.has_key(tool.get_elt_from_step(int(s)))]
        if missing:
            raise MalformedMessageError(f"rotation keys: none for steps {missing}")
        self._galois_keys = keys

    def rotate(self, ct: Any, steps: int) -> Any:
        """Slots moved left by ``steps`` (cyclically): ``out[i] = ct[(i + steps) % slots]``."""
        keys = getattr(self, "_galois_keys", None)
        if keys is None:
            raise CryptoError("rotate: no rotation keys loaded")
        out = self._sealapi.Ciphertext()
        self._evaluator.rotate_vector(ct, int(steps), keys, out)
        return out

    def rescaled_scale(self, scale: float, level: int) -> float:
        """The scale :meth:`rescale` gives a ciphertext of ``scale`` at ``level``."""
        data = self.seal_context.get_context_data(self._chain[level])
        return scale / float(data.parms().coeff_modulus()[-1].value())

    def mod_switch(self, ct: Any, level: int) -> Any:
        """Drop primes down to ``level`` without changing the scale (smaller, cheaper)."""
        if self.level(ct) == level:
            return ct
        out = self._sealapi.Ciphertext()
        self._evaluator.mod_switch_to(ct, self._chain[level], out)
        return out

    def encrypt(self, values: Any, level: int, scale: float | None = None) -> Any:
        """A fresh public-key encryption of ``values`` made directly at ``level``."""
        if self._encryptor is None:
            raise CryptoError("encrypt: this context has no public key")
        out = self._sealapi.Ciphertext()
        self._encryptor.encrypt(self.encode(values, level, scale), out)
        return out

    def close(self) -> None:
        self._file.close()
