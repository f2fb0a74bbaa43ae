"""Homomorphic-encryption backends behind small interfaces.

* :mod:`~jointcredit.crypto.paillier` - Paillier on gmpy2, interoperable with ``phe``, with the
  fast Damgard-Jurik-Nielsen encryption path (:class:`FastEncryptor`) and homomorphic packing
  of many small sums into one ciphertext (:func:`compress` / :func:`decompress_ints`).
* :mod:`~jointcredit.crypto.ckks` - CKKS vectors via TenSEAL for the key owner
  (:class:`CKKSKeyOwner`) and the peer (:class:`CKKSPeer`), with a 128-bit parameter policy.
* :mod:`~jointcredit.crypto.encoding` - fixed-point encoding and slot packing with overflow
  bounds.

See ``docs/crypto.md`` for parameters, the security policy and measured costs.
"""

from jointcredit.crypto.ckks import (
    MAX_COEFF_MODULUS_BITS_128,
    CKKSKeyOwner,
    CKKSParams,
    CKKSPeer,
    deserialize_vectors,
    serialize_vectors,
)
from jointcredit.crypto.encoding import (
    PACKING_MARGIN_BITS,
    FixedPoint,
    SlotPacker,
    shift_nonnegative,
    unshift_sums,
)
from jointcredit.crypto.paillier import (
    DEFAULT_EXPONENT_BITS,
    MIN_EXPONENT_BITS,
    MIN_PAILLIER_BITS,
    FastEncryptor,
    PaillierPrivateKey,
    PaillierPublicKey,
    compress,
    decompress_ints,
    generate_paillier_keypair,
    slots_per_ciphertext,
)

__all__ = [
    "DEFAULT_EXPONENT_BITS",
    "MAX_COEFF_MODULUS_BITS_128",
    "MIN_EXPONENT_BITS",
    "MIN_PAILLIER_BITS",
    "PACKING_MARGIN_BITS",
    "CKKSKeyOwner",
    "CKKSParams",
    "CKKSPeer",
    "FastEncryptor",
    "FixedPoint",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "SlotPacker",
    "compress",
    "decompress_ints",
    "deserialize_vectors",
    "generate_paillier_keypair",
    "serialize_vectors",
    "shift_nonnegative",
    "slots_per_ciphertext",
    "unshift_sums",
]
