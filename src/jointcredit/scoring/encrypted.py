"""Encrypted pre-authorization scoring: protocol ``"score"``, both halves side by side.

The bank holds the CKKS secret key and its half of a fitted joint model; the credit center holds
its features, its half of the model and its governance services (consent, budget, audit).
Enterprises sit in CKKS slots, 4096 per ciphertext. ``docs/protocols/scoring.md`` lists every
message and what each side sees; in short::

    center -> bank  start        {version, n_aligned}
    bank -> center  start.ok     {model_id, kind, rows (candidates), purpose, output, noise_std,
                                  backend, public context, galois (SecureBoost: conjugation key
                                  only), columns, nodes (SecureBoost: the center splits),
                                  batch_rows}
                    the center checks the keys, then runs its ScoringGate on the candidates'
                    ids (consent filter, budget charge, audit line) before any cryptography
    center -> bank  refused      {reason, message}       (budget exhausted; the center raises)
    center -> bank  admitted     {rows, excluded_rows, excluded_reasons, noise_std, categories}
    bank -> center  admitted.ok  {batch 0: Enc(bank columns) of the admitted rows only}
    center -> bank  scores       {batch k: Enc(total logit), center reason-category codes}
    bank -> center  scores.ok    {batch k+1 | done}

What the center computes on the bank's ciphertexts:

* **linear / scorecard** (``kind="linear"``): the bank encrypts its partial predictor
  ``u_b = b0 + X_b w_b`` (one column); the center adds its own ``z_c = X_c w_c`` in plaintext:
  ``Enc(u_b) + z_c``. The bank decrypts only the total ``u = logit(PD)``.
* **SecureBoost** (``kind="secureboost"``): write each tree's output as
  ``f_t(i) = sum_l v_l B_l(i) R_l(i)`` with ``B_l`` the bank's reachability of leaf ``l`` (center
  splits pass through) and ``R_l`` the center's (bank splits pass through). Each ``R_l`` is a
  +-1 combination of the constant 1 and the indicators ``E_s = R_left(s)`` of the center splits
  ``s`` (left child: ``E_s``; right child: ``R_s - E_s``; a bank split copies its parent's ``R``).
  So ``f_t(i) = A_0(i) + sum_s E_s(i) A_s(i)`` where every ``A`` is known to the bank alone. The
  bank keeps ``A_0`` in plaintext and encrypts the columns ``A_s``, two per complex slot
  (``A_s + i A_t``); the center multiplies by ``E_s - i E_t``, sums over splits and trees, and
  adds the complex conjugate of the sum (one Galois key, no rotation keys) so that only
  ``2 sum_s E_s A_s`` is left; the bank decrypts and adds its plaintext part.

The bank encrypts with its secret key (seeded ciphertexts: half the bytes); the center needs only
the public key. Every result is re-randomised with a fresh public-key encryption of Gaussian
noise: ``flood_std`` (tiny; hides the CKKS error that depends on the center's plaintexts) and,
under the ``noise`` output policy, ``noise_std`` logit units of calibrated noise on the center's
contribution.

A ``backend="plain"`` reference mode runs the same code with encryption replaced by identity;
it sends partial scores in the clear, so the center refuses it unless its policy allows it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.crypto.ckks import (
    CKKSKeyOwner,
    CKKSParams,
    CKKSPeer,
    SealFile,
    SeededEncryptor,
    frame_serialized,
    tenseal_vector_bytes,
)
from jointcredit.errors import (
    BudgetExhaustedError,
    CryptoError,
    DataValidationError,
    EncodingOverflowError,
    KeyPolicyError,
    MalformedMessageError,
    ProtocolError,
    UnexpectedMessageError,
)
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.fields import require_fields
from jointcredit.protocol.session import ProtocolChannel
from jointcredit.scoring.gate import SERVICE_BANK_ID, SERVICE_GATE  # noqa: F401 (re-exported)

__all__ = [
    "BACKENDS",
    "FLOOD_STD",
    "KINDS",
    "OUTPUT_MODES",
    "PROTOCOL",
    "SCORING_CKKS_PARAMS",
    "CenterScoringPolicy",
    "ScoreBank",
    "ScoreCenter",
    "boost_basis",
    "center_split_indicators",
    "linear_feature_contributions",
    "top_categories",
]

PROTOCOL = "score"
WIRE_VERSION = 1
KINDS = ("linear", "secureboost")
BACKENDS = ("ckks", "plain")
OUTPUT_MODES = ("exact", "noise")

#: N = 8192 with 160 of the 218 bits the 128-bit standard allows: one data prime for the
#: integer part, one 40-bit prime for the single plaintext multiplication, the special prime.
#: Values and results stay below 2^19; the product of a fresh ciphertext (scale 2^40) and a
#: plaintext (2^40) is summed at scale 2^80 and decrypted without rescaling.
SCORING_CKKS_PARAMS = CKKSParams(8192, (60, 40, 60), 40)

#: Gaussian noise (logit units) the center adds to every CKKS result even for exact output: it
#: floods the decryption error, which depends on the center's plaintexts (below 5e-9 for a
#: 30-tree model), by a factor ~10^4; its effect on a PD is below 0.25 * 4 * FLOOD_STD = 6e-5.
FLOOD_STD = 2.0**-16
#: Largest output noise (logit units) either party may ask for.
MAX_NOISE_STD = 8.0
#: Reason-code slot meaning "no category".
NO_CODE = 255
#: Enterprises x encrypted slots per message (~60 MB of seeded ciphertexts at ~28 bytes a slot).
DEFAULT_BATCH_SLOTS = 2**21

#: Keys of ``CenterParty.services`` the center half reads (configured by the center's operator).
SERVICE_POLICY = "scoring_policy"  # a CenterScoringPolicy
SERVICE_CATEGORY_OF = "category_of"  # feature -> catalogue category (default: the catalogue)


# ============================================================================================
# the center's policy
# ============================================================================================


@dataclass(frozen=True)
class CenterScoringPolicy:
    """The credit center's rules for scoring jobs (kept in ``center.services["scoring_policy"]``).

    ``min_noise_std``: the least output noise (logit units) the center adds to its contribution,
    whatever the bank asks for; 0 lets the bank have exact scores. ``flood_std``: CKKS noise
    flooding on every result (see :data:`FLOOD_STD`). ``reason_top_k``: how many credit-center
    *categories* the center names per enterprise (0: none); a category is named only if it raised
    logit(PD) by at least ``reason_min_logit``. ``allow_plain``: accept the unencrypted
    reference backend (tests only: it shows each side the other's partial scores).
    """

    min_noise_std: float = 0.0
    flood_std: float = FLOOD_STD
    reason_top_k: int = 2
    reason_min_logit: float = 0.05
    allow_plain: bool = False

    def __post_init__(self) -> None:
        for name in ("min_noise_std", "flood_std", "reason_min_logit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DataValidationError(f"scoring_policy.{name}", f"must be a number: {value!r}")
            if not math.isfinite(value) or value < 0:
                raise DataValidationError(f"scoring_policy.{name}", f"must be >= 0: {value!r}")
        if self.min_noise_std > MAX_NOISE_STD:
            raise DataValidationError(
                "scoring_policy.min_noise_std", f"must be at most {MAX_NOISE_STD}"
            )
        k = self.reason_top_k
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 9:
            raise DataValidationError("scoring_policy.reason_top_k", f"must be 0..9, got {k!r}")


# ============================================================================================
# SecureBoost algebra: the leaf sum in the basis {1, E_s}
# ============================================================================================


def _children(node: int) -> tuple[int, int]:
    # heap numbering, as in jointcredit.learn.boosting (checked on every tree we read)
    return 2 * node + 1, 2 * node + 2


def boost_basis(tree: dict[int, dict]) -> tuple[list[int], list[int], np.ndarray]:
    """Leaves, center splits and ``C`` with ``R_leaf = C[leaf, 0] + sum_s C[leaf, 1+s] E_s``.

    ``tree`` is one tree of the bank's model (``{"kind": "leaf"|"bank"|"center", ...}`` per node,
    heap-numbered). Raises :class:`DataValidationError` for a malformed tree.
    """
    if 0 not in tree:
        raise DataValidationError("model.trees", "a tree has no root node 0")
    center = sorted(k for k, node in tree.items() if node.get("kind") == "center")
    column = {s: 1 + i for i, s in enumerate(center)}
    expr: dict[int, dict[int, float]] = {0: {0: 1.0}}
    for k in sorted(tree):  # parents before children in heap order
        node = tree[k]
        if k not in expr:
            raise DataValidationError("model.trees", f"node {k} is not reachable from the root")
        kind = node.get("kind")
        if kind == "leaf":
            continue
        if kind not in ("bank", "center"):
            raise DataValidationError("model.trees", f"node {k} has unknown kind {kind!r}")
        left, right = _children(k)
        if left not in tree or right not in tree:
            raise DataValidationError("model.trees", f"split node {k} lacks a child")
        if kind == "center":
            expr[left] = {column[k]: 1.0}
            rest = dict(expr[k])
            rest[column[k]] = rest.get(column[k], 0.0) - 1.0
            expr[right] = rest
        else:
            expr[left] = dict(expr[k])
            expr[right] = dict(expr[k])
    leaves = sorted(k for k, node in tree.items() if node.get("kind") == "leaf")
    coef = np.zeros((len(leaves), 1 + len(center)))
    for i, leaf in enumerate(leaves):
        for j, c in expr[leaf].items():
            coef[i, j] = c
    return leaves, center, coef


def center_split_indicators(
    part: Any, X: np.ndarray, tree: int, nodes: Sequence[int]
) -> np.ndarray:
    """``E_s(i)`` (center reach of the left child of split ``s``) for the given center splits.

    Uses the center part's own ``reachability`` (bank splits pass through) at the leaves and
    adds up: a center split's reach is the sum of its children's, a bank split's equals either
    child's. Returns an ``(n, len(nodes))`` float array of 0/1.
    """
    splits: dict[int, dict] = part.trees.get(tree, {})
    leaves, reach = part.reachability(X, tree)
    R: dict[int, np.ndarray] = {leaf: reach[:, i] for i, leaf in enumerate(leaves)}
    for k in sorted(splits, reverse=True):  # children before parents
        left, right = _children(k)
        if left not in R or right not in R:
            raise ProtocolError(f"score: tree {tree} node {k} has children the center cannot route")
        R[k] = (R[left] | R[right]) if splits[k].get("kind") == "center" else R[left]
    return np.column_stack([R[_children(s)[0]] for s in nodes]).astype(np.float64)


# ============================================================================================
# model views: what each party needs from its half of a fitted model
# ============================================================================================


class _LinearBankView:
    """Bank half of a hetero LR / scorecard: its partial predictor, intercept included."""

    kind = "linear"

    def __init__(self, model: dict[str, Any]) -> None:
        if not isinstance(model, dict) or model.get("kind") != "hetero_lr":
            raise DataValidationError("model", "not the bank part of a hetero LR / scorecard")
        self.model = model
        self.model_id = str(model["model_id"])
        self.nodes: list[list[int]] | None = None
        self.n_columns = 1

    def columns(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        from jointcredit.learn.linear import bank_scores

        u = np.asarray(bank_scores(self.model, X), dtype=np.float64)
        return np.zeros(u.size), u[:, None]


class _BoostBankView:
    """Bank half of SecureBoost: per tree, the plaintext part ``A_0`` and one column per center
    split (``A_s``), from the bank's own leaf values and bank splits."""

    kind = "secureboost"

    def __init__(self, model: Any) -> None:
        for attr in ("model_id", "trees", "feature_names", "init_score", "route"):
            if not hasattr(model, attr):
                raise DataValidationError("model", "not the bank part of a SecureBoost model")
        self.model = model
        self.model_id = str(model.model_id)
        self.bases = [boost_basis(tree) for tree in model.trees]
        self.nodes = [[t, s] for t, (_, center, _) in enumerate(self.bases) for s in center]
        self.n_columns = len(self.nodes)

    def columns(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        missing = [f for f in self.model.feature_names if f not in X.columns]
        if missing:
            raise DataValidationError(", ".join(missing), "bank feature(s) missing")
        Xn = X[self.model.feature_names].to_numpy(dtype=np.float64)
        local = np.full(Xn.shape[0], float(self.model.init_score))
        cols = np.empty((Xn.shape[0], self.n_columns))
        at = 0
        for t, (leaves, center, coef) in enumerate(self.bases):
            got, reach = self.model.route(Xn, t)
            if list(got) != leaves:
                raise DataValidationError("model.trees", f"tree {t}: leaves do not match")
            values = np.array([float(self.model.trees[t][k]["value"]) for k in leaves])
            A = (reach * values) @ coef  # (n, 1 + center splits of tree t)
            local += A[:, 0]
            cols[:, at : at + len(center)] = A[:, 1:]
            at += len(center)
        return local, cols


def bank_view(model: Any) -> _LinearBankView | _BoostBankView:
    """The bank's view of a fitted joint model (estimator, model dict or BankBoostModel)."""
    from jointcredit.learn.linear import HeteroLogisticRegression

    if isinstance(model, HeteroLogisticRegression):
        # the base class's dict has all scoring needs (the scorecard's adds its points table,
        # which a scorecard loaded from disk does not rebuild)
        return _LinearBankView(HeteroLogisticRegression.bank_model(model))
    if hasattr(model, "bank_model") and callable(model.bank_model):
        return _LinearBankView(model.bank_model())
    if isinstance(model, dict):
        return _LinearBankView(model)
    inner = getattr(model, "model_", None)
    if inner is not None and hasattr(inner, "trees"):
        return _BoostBankView(inner)
    if hasattr(model, "trees"):
        return _BoostBankView(model)
    raise DataValidationError("model", f"cannot score a {type(model).__name__}")


# ============================================================================================
# crypto backends: CKKS and the identity reference
# ============================================================================================
#
# Packing. The linear protocol sends one real column (the bank's partial predictor) in TenSEAL's
# real slots. SecureBoost sends many columns, so the bank packs two of them into the complex
# slots SEAL offers (z = a + i b, N/2 complex values per ciphertext); the center multiplies by
# the complex plaintext w = e_a - i e_b, so Re(z w) = a e_a + b e_b, sums, and adds the complex
# conjugate (one Galois key, no rotations) to cancel the imaginary part a e_b... - b e_a, which
# would otherwise show the bank the center's 0/1 indicators. The bank reads 2 Re(total).


def _check_float_array(wire: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if not isinstance(wire, np.ndarray) or wire.dtype != np.float64 or wire.shape != shape:
        raise MalformedMessageError(f"score/{what}: expected a float64 array of shape {shape}")
    if not np.isfinite(wire).all():
        raise MalformedMessageError(f"score/{what}: NaN or infinite values")
    return wire


def _os_normal(count: int, std: float) -> np.ndarray:
    """Gaussian noise from OS randomness (Box-Muller): noise that hides values from the key
    holder must not come from a PRNG whose state its outputs could reveal."""
    if std <= 0:
        return np.zeros(count)
    u = np.frombuffer(os.urandom(16 * count), dtype=np.uint64).reshape(2, count) >> np.uint64(11)
    u1 = (u[0].astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = u[1].astype(np.float64) * 2.0**-53
    return std * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _chunk_sizes(n: int, slots: int) -> list[int]:
    return [min(slots, n - i) for i in range(0, n, slots)]


def _pairs(M: np.ndarray) -> np.ndarray:
    """Columns (0, 1), (2, 3), ... as complex columns ``a + i b`` (a zero pads an odd count)."""
    if M.shape[1] % 2:
        M = np.hstack([M, np.zeros((M.shape[0], 1))])
    return M[:, 0::2] + 1j * M[:, 1::2]


class _PlainOwner:
    backend = "plain"
    slots = SCORING_CKKS_PARAMS.slots

    def public(self) -> None:
        return None

    def conjugation_key(self) -> None:
        return None

    def encrypt(self, M: np.ndarray, *, packed: bool = False) -> np.ndarray:
        return np.ascontiguousarray(M.T, dtype=np.float64)

    def encrypt_async(self, M: np.ndarray, *, packed: bool = False) -> Callable[[], np.ndarray]:
        out = self.encrypt(M)
        return lambda: out

    def start_pool(self, n_vectors: int) -> None:
        pass

    def close(self) -> None:
        pass

    def decrypt(self, wire: Any, n: int, *, packed: bool = False) -> np.ndarray:
        return _check_float_array(wire, (n,), "scores").copy()


class _PlainPeer:
    def __init__(self, public: Any, galois: Any = None) -> None:
        if public is not None or galois is not None:
            raise MalformedMessageError("score/start.ok: the plain backend carries no key")

    def load(self, wire: Any, n: int, k: int) -> np.ndarray:
        return _check_float_array(wire, (k, n), "vectors")

    def add_plain(self, enc: np.ndarray, z: np.ndarray) -> np.ndarray:
        return enc[0] + z

    def masked_sum(self, enc: np.ndarray, E: np.ndarray) -> np.ndarray:
        return np.einsum("kn,nk->n", enc, E) if enc.shape[0] else np.zeros(E.shape[0])

    def finish(self, acc: np.ndarray, noise_std: float, flood_std: float) -> np.ndarray:
        if noise_std > 0:
            acc = acc + np.random.default_rng().normal(0.0, noise_std, acc.size)
        return np.asarray(acc, dtype=np.float64)


def _encrypt_columns(owner: CKKSKeyOwner, seeded: SeededEncryptor | None, M: np.ndarray) -> bytes:
    slots = owner.slots
    blobs = []
    for j in range(M.shape[1]):
        for lo in range(0, M.shape[0], slots):
            chunk = M[lo : lo + slots, j]
            if seeded is not None and seeded.ok:
                blobs.append(seeded.encrypt(chunk))
            elif np.iscomplexobj(chunk):
                raise CryptoError("score: complex packing needs the seeded encryptor")
            else:
                blobs += [v.serialize() for v in owner.encrypt(chunk)]
    return frame_serialized(blobs)


# --- the bank's encryption workers (its own processes: they hold the secret context) ---------

_WORKER: tuple[CKKSKeyOwner, SeededEncryptor] | None = None


def _worker_init(owner_bytes: bytes) -> None:
    global _WORKER
    owner = CKKSKeyOwner.from_bytes(owner_bytes, n_threads=1)
    _WORKER = (owner, SeededEncryptor(owner))


def _worker_encrypt(chunks: list[np.ndarray]) -> list[bytes]:
    """Encrypt and serialize each chunk (one ciphertext's worth of one column)."""
    if _WORKER is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("encryption worker used before its initializer")
    owner, seeded = _WORKER
    out = []
    for chunk in chunks:
        if seeded.ok:
            out.append(seeded.encrypt(chunk))
        elif np.iscomplexobj(chunk):
            raise CryptoError("score: complex packing needs the seeded encryptor")
        else:
            out += [v.serialize() for v in owner.encrypt(chunk)]
    return out


class _CkksOwner:
    backend = "ckks"

    #: Below this many ciphertexts per job the worker processes are not worth starting.
    POOL_MIN_VECTORS = 64

    def __init__(self, params: CKKSParams | None = None, n_jobs: int = 1) -> None:
        self.owner = CKKSKeyOwner(params or SCORING_CKKS_PARAMS)
        self.n_jobs = n_jobs
        self._pool: Any = None
        self._seeded: SeededEncryptor | None = None

    @property
    def seeded(self) -> SeededEncryptor:
        if self._seeded is None:
            self._seeded = SeededEncryptor(self.owner)
        return self._seeded

    @property
    def slots(self) -> int:
        return self.owner.slots

    def __getstate__(self) -> dict[str, Any]:
        # the bank's own disk only; worker processes do not survive a restart
        return {"owner": self.owner.to_bytes(), "n_jobs": self.n_jobs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.owner = CKKSKeyOwner.from_bytes(state["owner"])
        self.n_jobs = state["n_jobs"]
        self._pool = None
        self._seeded = None

    def public(self) -> bytes:
        return self.owner.public_context_bytes()

    def conjugation_key(self) -> bytes:
        if not self.seeded.ok:
            raise CryptoError("score: this TenSEAL cannot build the conjugation key")
        return self.seeded.conjugation_key()

    def start_pool(self, n_vectors: int) -> None:
        """Start ``n_jobs`` encryption processes if the job is big enough to pay for them."""
        if self.n_jobs <= 1 or n_vectors < self.POOL_MIN_VECTORS or self._pool is not None:
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        methods = multiprocessing.get_all_start_methods()
        method = "forkserver" if "forkserver" in methods else "spawn"
        self._pool = ProcessPoolExecutor(
            self.n_jobs,
            mp_context=multiprocessing.get_context(method),
            initializer=_worker_init,
            initargs=(self.owner.to_bytes(),),
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._seeded is not None:
            self._seeded.close()
            self._seeded = None

    def _check(self, M: np.ndarray) -> None:
        if not np.isfinite(M).all():
            raise EncodingOverflowError("score: NaN or infinite values cannot be encrypted")
        total = np.abs(M).sum(axis=1) if M.size else np.zeros(0)
        if total.size and total.max() >= self.owner.params.max_abs / 2:
            raise EncodingOverflowError(
                f"score: a sum of |bank columns| {total.max():.6g} reaches "
                f"{self.owner.params.max_abs / 2:.6g}, the largest result these parameters hold"
            )

    def encrypt(self, M: np.ndarray, *, packed: bool = False) -> bytes:
        return self.encrypt_async(M, packed=packed)()

    def encrypt_async(self, M: np.ndarray, *, packed: bool = False) -> Callable[[], bytes]:
        """Start encrypting ``M`` column by column (each chunked over the slots; with
        ``packed`` two columns per complex slot); the returned function waits for and returns the
        framed vectors. With worker processes the bank encrypts the next batch while the center
        works on the current one."""
        self._check(M)
        if packed:
            M = _pairs(M)
        if self._pool is None:
            blob = _encrypt_columns(self.owner, self.seeded, M)
            return lambda: blob
        pieces = [
            np.ascontiguousarray(M[lo : lo + size, j])
            for j in range(M.shape[1])
            for lo, size in zip(
                range(0, M.shape[0], self.slots), _chunk_sizes(M.shape[0], self.slots), strict=True
            )
        ]
        per_task = max(1, -(-len(pieces) // (4 * self.n_jobs)))
        futures = [
            self._pool.submit(_worker_encrypt, pieces[i : i + per_task])
            for i in range(0, len(pieces), per_task)
        ]

        def wait() -> bytes:
            try:
                return frame_serialized([blob for f in futures for blob in f.result()])
            except Exception as exc:  # a dying worker: BrokenProcessPool and friends
                raise CryptoError(f"score: an encryption worker failed ({exc})") from exc

        return wait

    def decrypt(self, wire: Any, n: int, *, packed: bool = False) -> np.ndarray:
        if not isinstance(wire, bytes):
            raise MalformedMessageError("score/scores: expected serialized CKKS vectors")
        vectors = self.owner.deserialize_vectors(wire)
        sizes = _chunk_sizes(n, self.slots)
        if [v.size() for v in vectors] != sizes:
            raise MalformedMessageError(f"score/scores: expected vectors of sizes {sizes}")
        out = self.owner.decrypt(vectors, n)
        if not np.isfinite(out).all():
            raise MalformedMessageError("score/scores: decryption gave non-finite values")
        return out / 2.0 if packed else out  # packed: total + its conjugate = 2 Re(total)


class _CkksPeer:
    """The center's CKKS arithmetic on the bank's vectors (public context, no secret key)."""

    #: A conjugation key is ~0.7 MB at N = 8192; a full rotation key set is ~35 MB.
    MAX_GALOIS_BYTES = 4_000_000

    def __init__(self, public: Any, galois: Any = None, *, multiply: bool) -> None:
        if not isinstance(public, bytes):
            raise MalformedMessageError("score/start.ok: public must be a CKKS public context")
        self.peer = CKKSPeer.from_public_bytes(public)
        self.packed = multiply
        if not multiply:
            if galois is not None:
                raise MalformedMessageError("score/start.ok: a linear job carries no Galois key")
            return
        params = self.peer.params
        if params.depth < 1:
            raise KeyPolicyError(
                "coeff_mod_bit_sizes: SecureBoost scoring needs one multiplication (depth 1)"
            )
        # products stay at scale^2 and are summed; the key owner decrypts them unrescaled
        if 2 * params.global_scale_bits + 20 > sum(params.coeff_mod_bit_sizes[:-1]):
            raise KeyPolicyError(
                "coeff_mod_bit_sizes: too small to hold unrescaled products with 2^19 range"
            )
        if not isinstance(galois, bytes) or not 0 < len(galois) <= self.MAX_GALOIS_BYTES:
            raise MalformedMessageError("score/start.ok: galois must be a conjugation key")
        import tenseal.sealapi as sealapi

        self._sealapi = sealapi
        self._seal_context = self.peer.context.seal_context().data
        self._file = SealFile()
        try:
            self._galois = self._file.load(sealapi.GaloisKeys(), self._seal_context, galois)
        except Exception as exc:  # SEAL refuses keys of other parameters / garbage
            raise MalformedMessageError(f"score/start.ok: galois key refused ({exc})") from exc
        self._evaluator = sealapi.Evaluator(self._seal_context)
        self._encoder = sealapi.CKKSEncoder(self._seal_context)
        self._encryptor = sealapi.Encryptor(self._seal_context, self.peer.context.data.public_key())
        self._scale = float(2.0**params.global_scale_bits)

    @property
    def slots(self) -> int:
        return self.peer.slots

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()

    def load(self, wire: Any, n: int, k: int) -> list[list[Any]]:
        """The bank's vectors: ``k`` columns (``ceil(k / 2)`` complex ones when packed)."""
        if not isinstance(wire, bytes):
            raise MalformedMessageError("score/vectors: expected serialized CKKS vectors")
        vectors = self.peer.deserialize_vectors(wire)
        sizes = _chunk_sizes(n, self.slots)
        columns = -(-k // 2) if self.packed else k
        if [v.size() for v in vectors] != sizes * columns:
            raise MalformedMessageError(
                f"score/vectors: expected {columns} column(s) of vectors sized {sizes}"
            )
        c = len(sizes)
        return [vectors[j * c : (j + 1) * c] for j in range(columns)]

    def add_plain(self, enc: list[list[Any]], z: np.ndarray) -> list[Any]:
        return self.peer.add_plain(enc[0], z)

    def masked_sum(self, enc: list[list[Any]], E: np.ndarray) -> list[Any]:
        """Per chunk: sum over complex columns of ``z * (e_a - i e_b)``, at scale^2."""
        sealapi = self._sealapi
        W = _pairs(E).conj()
        sizes = _chunk_sizes(E.shape[0], self.slots)
        bounds = np.cumsum([0, *sizes])
        acc: list[Any] = []
        for c in range(len(sizes)):
            block = W[bounds[c] : bounds[c + 1]]
            total = None
            for j in range(len(enc)):
                w = block[:, j]
                if not w.any():
                    continue  # no enterprise of this chunk takes either split's left branch
                ct = enc[j][c].ciphertext()[0]
                plain = sealapi.Plaintext()
                self._encoder.encode(w.tolist(), ct.parms_id(), self._scale, plain)
                product = sealapi.Ciphertext()
                self._evaluator.multiply_plain(ct, plain, product)
                if total is None:
                    total = product
                else:
                    self._evaluator.add_inplace(total, product)
            if total is None:  # nothing to add up: an encryption of zero answers
                total = self._encrypt(np.zeros(sizes[c], dtype=complex), None, self._scale**2)
            acc.append((total, sizes[c]))
        return acc

    def _encrypt(self, values: np.ndarray, parms_id: Any, scale: float) -> Any:
        sealapi = self._sealapi
        plain = sealapi.Plaintext()
        if parms_id is None:
            self._encoder.encode(values.tolist(), scale, plain)
        else:
            self._encoder.encode(values.tolist(), parms_id, scale, plain)
        out = sealapi.Ciphertext()
        self._encryptor.encrypt(plain, out)
        return out

    def finish(self, acc: list[Any], noise_std: float, flood_std: float) -> bytes:
        std = math.sqrt(noise_std**2 + flood_std**2)
        if not self.packed:
            return self.peer.serialize_vectors(self.peer.rerandomize(acc, noise_std=std))
        blobs = []
        for total, size in acc:
            conj = self._sealapi.Ciphertext()
            self._evaluator.complex_conjugate(total, self._galois, conj)
            self._evaluator.add_inplace(total, conj)  # 2 Re(total), imaginary parts cancel
            # fresh public-key encryption of noise: hides the ciphertext's randomness, floods the
            # CKKS error; the real part carries the output noise (x2: the bank halves)
            noise = 2.0 * _os_normal(size, std) + 1j * _os_normal(size, 2.0 * flood_std)
            self._evaluator.add_inplace(total, self._encrypt(noise, total.parms_id(), total.scale))
            blobs.append(tenseal_vector_bytes(self._file.dump(total), size, total.scale))
        return frame_serialized(blobs)


def _owner(backend: str, params: CKKSParams | None, n_jobs: int) -> _PlainOwner | _CkksOwner:
    if backend == "ckks":
        return _CkksOwner(params, n_jobs)
    if backend == "plain":
        return _PlainOwner()
    raise DataValidationError("backend", f"must be one of {BACKENDS}, got {backend!r}")


# ============================================================================================
# message validation helpers
# ============================================================================================


_require = require_fields


def _rows(value: Any, n_aligned: int, where: str) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.ndim == 1:
        rows = value.astype(np.int64)
    elif isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        rows = np.asarray(value, dtype=np.int64).reshape(-1)
    else:
        raise MalformedMessageError(f"{where}: rows must be a 1-D integer array")
    if rows.size and (rows.min() < 0 or rows.max() >= n_aligned):
        raise ProtocolError(f"{where}: row positions outside the aligned intersection")
    if np.unique(rows).size != rows.size:
        raise ProtocolError(f"{where}: duplicate row positions")
    return rows


def _number(value: Any, where: str, *, lo: float = 0.0, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMessageError(f"{where}: expected a number")
    value = float(value)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ProtocolError(f"{where}: {value} outside [{lo}, {hi}]")
    return value


def _batches(n: int, batch_rows: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + batch_rows)) for i in range(0, n, batch_rows)]


# ============================================================================================
# the credit center's half (drives)
# ============================================================================================


class _LinearCenterView:
    kind = "linear"

    def __init__(self, part: Any, job: dict) -> None:
        if not isinstance(part, dict) or part.get("kind") != "hetero_lr":
            raise ProtocolError(f"score: model {job['model_id']!r} is not a linear model here")
        if job["nodes"] is not None or job["columns"] != 1:
            raise ProtocolError("score: a linear model is scored from one encrypted column")
        self.part = part

    def prepare(
        self, X: pd.DataFrame, *, reasons: bool, category_of: Any
    ) -> tuple[np.ndarray, pd.DataFrame | None]:
        """The center's partial predictor and (if asked) its per-category contributions.

        Both stay at the center: the predictor is only ever added to a ciphertext, the category
        contributions are only ranked (:func:`top_categories`).
        """
        from jointcredit.scoring.policy import sum_by_category

        per_feature = linear_feature_contributions(self.part, X, _center_scores)
        if per_feature is None:
            return _center_scores(self.part, X), None
        z = per_feature.to_numpy(dtype=np.float64).sum(axis=1)
        if not reasons:
            return z, None
        try:
            return z, sum_by_category(per_feature, category_of)
        except DataValidationError:
            return z, None  # features outside the catalogue: no center reason codes


def _center_scores(part: dict, X: pd.DataFrame) -> np.ndarray:
    from jointcredit.learn.linear import center_scores

    return np.asarray(center_scores(part, X), dtype=np.float64)


#: Rows on which per-feature contributions are checked against the model's own scoring.
_CHECK_ROWS = 256


def linear_feature_contributions(
    model: dict[str, Any],
    X: pd.DataFrame,
    score: Callable[[dict, pd.DataFrame], np.ndarray],
) -> pd.DataFrame | None:
    """One column per feature: ``coef_j * transformed x_j`` (logit units, 0 at the neutral point).

    Built from the linear module's own scoring function on one-feature copies of the model
    part, so the transform (standardisation or WOE) is exactly the model's; on the first rows
    the columns must add up to the full part's score. Returns ``None`` for a model part whose
    layout this helper does not know.
    """
    try:
        features = list(model["features"])
        coef = [float(c) for c in model["coef"]]
        out: dict[str, np.ndarray] = {}
        for j, f in enumerate(features):
            sub = dict(model, features=[f], coef=[coef[j]], intercept=0.0)
            if model["transform"] == "standardize":
                sub["standardize"] = {k: [v[j]] for k, v in model["standardize"].items()}
            else:
                sub["bins"] = {f: model["bins"][f]}
                sub["woe"] = {f: model["woe"][f]}
            out[f] = score(sub, X[[f]])
        frame = pd.DataFrame(out, index=range(len(X)))
        head = X.iloc[:_CHECK_ROWS]
        full = score(dict(model, intercept=0.0), head)
        if not np.allclose(frame.iloc[:_CHECK_ROWS].sum(axis=1).to_numpy(), full, atol=1e-8):
            return None
        return frame
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def top_categories(contrib: pd.DataFrame | None, top_k: int, min_logit: float) -> np.ndarray:
    """Per row, the indices of up to ``top_k`` columns with the largest contribution
    ``>= min_logit`` (worst first); :data:`NO_CODE` pads. Values never leave this function."""
    if contrib is None or top_k == 0 or contrib.shape[1] == 0:
        return np.zeros((0 if contrib is None else len(contrib), 0), dtype=np.uint8)
    values = contrib.to_numpy(dtype=np.float64)
    k = min(top_k, values.shape[1])
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    chosen = np.take_along_axis(values, order, axis=1) >= max(min_logit, 1e-12)
    return np.where(chosen, order, NO_CODE).astype(np.uint8)


class _BoostCenterView:
    kind = "secureboost"

    def __init__(self, part: Any, job: dict) -> None:
        if not (hasattr(part, "trees") and hasattr(part, "reachability")):
            raise ProtocolError(f"score: model {job['model_id']!r} is not a SecureBoost model here")
        own = [
            [int(t), int(s)]
            for t in sorted(part.trees)
            for s in sorted(part.trees[t])
            if part.trees[t][s].get("kind") == "center"
        ]
        nodes = job["nodes"]
        if not isinstance(nodes, list) or nodes != own or job["columns"] != len(own):
            raise ProtocolError("score: the bank's center splits do not match the center's part")
        self.part = part
        self.by_tree: dict[int, list[int]] = {}
        for t, s in own:
            self.by_tree.setdefault(t, []).append(s)

    def masks(self, X: pd.DataFrame) -> np.ndarray:
        Xn = X[self.part.feature_names].to_numpy(dtype=np.float64)
        E = np.empty((Xn.shape[0], sum(len(nodes) for nodes in self.by_tree.values())))
        at = 0
        for t, nodes in self.by_tree.items():
            E[:, at : at + len(nodes)] = center_split_indicators(self.part, Xn, t, nodes)
            at += len(nodes)
        return E


class ScoreCenter:
    """The credit center's half of ``score``: gate first, then blind arithmetic on ciphertexts.

    Reads ``center.services``: ``"gate"`` (a :class:`~jointcredit.scoring.gate.ScoringGate`;
    without one every aligned candidate is admitted), ``"bank_id"`` (default ``"bank"``),
    ``"scoring_policy"`` (:class:`CenterScoringPolicy`) and ``"category_of"`` (feature ->
    category for reason codes; default the built-in catalogue). Returns a small dict of counts.
    """

    protocol = PROTOCOL

    def __init__(self, center: CenterParty) -> None:
        self.center = center

    def run(self, channel: ProtocolChannel) -> dict[str, Any]:
        from jointcredit.scoring.consent import normalize_purpose

        aligned = self.center.require_aligned()
        services = self.center.services
        policy = services.get(SERVICE_POLICY) or CenterScoringPolicy()
        if not isinstance(policy, CenterScoringPolicy):
            raise DataValidationError("scoring_policy", "expected a CenterScoringPolicy")
        job = _require(
            channel.request("start", {"version": WIRE_VERSION, "n_aligned": int(len(aligned))}),
            "score/start.ok",
            ("version", "model_id", "kind", "rows", "purpose", "output", "noise_std", "backend",
             "public", "galois", "columns", "nodes", "batch_rows"),
        )  # fmt: skip
        if job["version"] != WIRE_VERSION:
            raise ProtocolError(f"score: unsupported wire version {job['version']!r}")
        if job["kind"] not in KINDS or job["backend"] not in BACKENDS:
            raise ProtocolError(f"score: unknown kind/backend {job['kind']!r}/{job['backend']!r}")
        if job["backend"] == "plain" and not policy.allow_plain:
            raise ProtocolError("score: the center's policy refuses the unencrypted backend")
        if job["output"] not in OUTPUT_MODES:
            raise ProtocolError(f"score: unknown output policy {job['output']!r}")
        rows = _rows(job["rows"], len(aligned), "score/start.ok")
        purpose = normalize_purpose(job["purpose"], "score/start.ok purpose")
        requested = _number(job["noise_std"], "score/start.ok noise_std", hi=MAX_NOISE_STD)
        noise_std = max(requested if job["output"] == "noise" else 0.0, policy.min_noise_std)
        columns = int(_number(job["columns"], "score/start.ok columns", hi=100_000))
        batch_rows = int(_number(job["batch_rows"], "score/start.ok batch_rows", lo=1, hi=2**22))
        model_id = str(job["model_id"])
        part = self.center.model_parts.get(model_id)
        if part is None:
            raise ProtocolError(f"score: no model {model_id!r} at the center")
        view = (_LinearCenterView if job["kind"] == "linear" else _BoostCenterView)(part, job)
        # the bank's keys are checked before anything is charged or computed
        peer = (
            _CkksPeer(job["public"], job["galois"], multiply=view.kind == "secureboost")
            if job["backend"] == "ckks"
            else _PlainPeer(job["public"], job["galois"])
        )
        try:
            scored, excluded = self._score(channel, job, view, peer, policy, rows, purpose,
                                           noise_std, columns, batch_rows)  # fmt: skip
        finally:
            if hasattr(peer, "close"):
                peer.close()
        return {
            "model_id": model_id,
            "kind": view.kind,
            "requested": int(rows.size),
            "scored": scored,
            "excluded": len(excluded),
            "noise_std": noise_std,
        }

    def _score(
        self, channel: ProtocolChannel, job: dict, view: Any, peer: Any,
        policy: CenterScoringPolicy, rows: np.ndarray, purpose: str, noise_std: float,
        columns: int, batch_rows: int,
    ) -> tuple[int, dict[int, str]]:  # fmt: skip
        """Gate, then the encrypted batches; returns (scored, excluded row -> reason)."""
        from jointcredit.data.uscc import normalize_ids

        services = self.center.services
        aligned = self.center.require_aligned()
        model_id = str(job["model_id"])
        # governance before any cryptography: consent filter, budget charge, audit line
        ids = np.asarray(aligned, dtype=object)[rows]
        gate = services.get(SERVICE_GATE)
        admission = None
        excluded: dict[int, str] = {}
        allowed = rows
        if gate is not None:
            try:
                admission = gate.admit(
                    str(services.get(SERVICE_BANK_ID, "bank")),
                    ids.tolist(),
                    purpose=purpose,
                    model_id=model_id,
                    protocol=PROTOCOL,
                    model_kind=view.kind,
                    output=job["output"],
                    noise_std=noise_std,
                )
            except BudgetExhaustedError as exc:
                channel.request("refused", {"reason": "budget_exhausted", "message": str(exc)})
                raise
            # the gate answers with normalised ids
            row_of = {
                str(i): int(r) for i, r in zip(normalize_ids(ids.tolist()), rows, strict=True)
            }
            allowed = np.asarray([row_of[i] for i in admission.allowed_ids], dtype=np.int64)
            excluded = {row_of[i]: reason for i, reason in admission.excluded.items()}

        categories: list[str] = []
        codes = np.zeros((allowed.size, 0), dtype=np.uint8)
        plain: Any = None
        if allowed.size:
            X = self.center.aligned_features(allowed)
            if view.kind == "linear":
                plain, contrib = view.prepare(
                    X,
                    reasons=policy.reason_top_k > 0,
                    category_of=services.get(SERVICE_CATEGORY_OF),
                )
                if contrib is not None:
                    categories = [str(c) for c in contrib.columns]
                    codes = top_categories(contrib, policy.reason_top_k, policy.reason_min_logit)
                del contrib
            else:
                plain = view.masks(X)
            del X
        excluded_rows = np.asarray(sorted(excluded), dtype=np.int64)
        reply = _require(
            channel.request(
                "admitted",
                {"rows": allowed, "excluded_rows": excluded_rows,
                 "excluded_reasons": [excluded[int(r)] for r in excluded_rows],
                 "noise_std": noise_std, "categories": categories},
            ),
            "score/admitted.ok",
            ("batch", "vectors"),
        )  # fmt: skip
        plan = _batches(int(allowed.size), batch_rows)
        scored = 0
        for b, (lo, hi) in enumerate(plan):
            if reply["batch"] != b:
                raise ProtocolError(f"score: expected batch {b}, got {reply['batch']!r}")
            enc = peer.load(reply["vectors"], hi - lo, columns)
            if view.kind == "linear":
                acc = peer.add_plain(enc, plain[lo:hi])
            else:
                acc = peer.masked_sum(enc, plain[lo:hi])
            del enc
            wire = peer.finish(acc, noise_std, policy.flood_std)
            reply = _require(
                channel.request("scores", {"batch": b, "scores": wire, "reasons": codes[lo:hi]}),
                "score/scores.ok",
                ("batch",),
            )
            scored += hi - lo
        if reply["batch"] is not None:
            raise ProtocolError("score: the bank expects more batches than the plan holds")
        if gate is not None and admission is not None:
            gate.complete(admission, scored=scored, round_trips=len(plan) + 2)
        return scored, excluded


# ============================================================================================
# the bank's half (answers)
# ============================================================================================


class ScoreBank:
    """The bank's half of ``score``: holds the CKKS key, encrypts its columns, decrypts totals.

    Args:
        bank: the bank party (aligned).
        model: a fitted joint model (bank side): ``HeteroLogisticRegression`` /
            ``HeteroScorecard`` (or their ``bank_model()`` dict), ``HeteroSecureBoost`` (or its
            ``BankBoostModel``).
        rows: candidate positions in the aligned intersection (default: all).
        purpose: consent purpose (``pre_authorization`` or ``post_loan_monitoring``).
        output: ``"exact"`` or ``"noise"`` (the center adds ``noise_std`` logit units of
            Gaussian noise to its contribution; the center may impose more).
        backend: ``"ckks"`` or ``"plain"`` (reference; the center must allow it).
        ckks_params: CKKS parameters (default :data:`SCORING_CKKS_PARAMS`).
        batch_rows: admitted enterprises per round trip (default: as many as keep a message
            near :data:`DEFAULT_BATCH_SLOTS` slots, whole ciphertexts).
        n_jobs: encryption processes at the bank (``forkserver``: scripts need an
            ``if __name__ == "__main__":`` guard); with more than one, the bank encrypts the
            next batch while the center works on the current one.

    After the run: ``logits`` (per ``scored_rows``), ``excluded`` (row -> reason),
    ``center_reasons`` (per scored row, category names), ``noise_std`` (what the center applied)
    and ``refused`` (reason and message if the center refused the job).
    """

    protocol = PROTOCOL

    def __init__(
        self,
        bank: BankParty,
        *,
        model: Any,
        rows: Any = None,
        purpose: str = "pre_authorization",
        output: str = "exact",
        noise_std: float = 0.0,
        backend: str = "ckks",
        ckks_params: CKKSParams | None = None,
        batch_rows: int | None = None,
        n_jobs: int = 1,
    ) -> None:
        from jointcredit.scoring.consent import normalize_purpose

        if output not in OUTPUT_MODES:
            raise DataValidationError("output", f"must be one of {OUTPUT_MODES}, got {output!r}")
        if isinstance(noise_std, bool) or not isinstance(noise_std, int | float):
            raise DataValidationError("noise_std", f"must be a number, got {noise_std!r}")
        if not (math.isfinite(noise_std) and 0 <= noise_std <= MAX_NOISE_STD):
            raise DataValidationError("noise_std", f"must be in [0, {MAX_NOISE_STD}]")
        if output == "noise" and noise_std <= 0:
            raise DataValidationError("noise_std", "the noise output policy needs noise_std > 0")
        if backend not in BACKENDS:
            raise DataValidationError("backend", f"must be one of {BACKENDS}, got {backend!r}")
        if batch_rows is not None and (
            isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1
        ):
            raise DataValidationError("batch_rows", f"must be a positive integer: {batch_rows!r}")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or not 1 <= n_jobs <= 64:
            raise DataValidationError("n_jobs", f"must be an integer in 1..64, got {n_jobs!r}")
        self.bank = bank
        self.view = bank_view(model)
        n_aligned = len(bank.require_aligned())
        if rows is None:
            rows = np.arange(n_aligned, dtype=np.int64)
        try:
            self.rows = _rows(np.asarray(rows, dtype=np.int64), n_aligned, "rows")
        except (ProtocolError, ValueError, TypeError) as exc:
            raise DataValidationError("rows", str(exc)) from None
        self.purpose = normalize_purpose(purpose)
        self.output = output
        self.requested_noise = float(noise_std)
        self.backend = backend
        self.ckks_params = ckks_params
        self.batch_rows = batch_rows
        self.n_jobs = n_jobs
        self.state = "new"
        self.crypto: _PlainOwner | _CkksOwner | None = None
        self.scored_rows = np.zeros(0, dtype=np.int64)
        self.logits: np.ndarray | None = None
        self.excluded: dict[int, str] = {}
        self.categories: list[str] = []
        self.noise_std: float | None = None
        self.refused: dict[str, str] | None = None

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start" and self.state == "new":
            return self._start(payload)
        if msg_type == "refused" and self.state == "started":
            msg = _require(payload, "score/refused", ("reason", "message"))
            self.refused = {"reason": str(msg["reason"]), "message": str(msg["message"])}
            self.state = "refused"
            return {}
        if msg_type == "admitted" and self.state == "started":
            return self._admitted(payload)
        if msg_type == "scores" and self.state == "scoring":
            return self._scores(payload)
        raise UnexpectedMessageError(f"score: unexpected {msg_type!r} in state {self.state}")

    def _start(self, payload: Any) -> dict[str, Any]:
        msg = _require(payload, "score/start", ("version", "n_aligned"))
        if msg["version"] != WIRE_VERSION:
            raise ProtocolError(f"score: unsupported wire version {msg['version']!r}")
        if msg["n_aligned"] != len(self.bank.require_aligned()):
            raise ProtocolError("score: the parties' intersections differ")
        crypto = _owner(self.backend, self.ckks_params, self.n_jobs)
        self._packed = self.view.kind == "secureboost"
        # encrypted slots per enterprise: SecureBoost packs two columns per complex slot
        k = max(1, -(-self.view.n_columns // 2) if self._packed else self.view.n_columns)
        slots = crypto.slots
        batch = self.batch_rows or max(slots, (DEFAULT_BATCH_SLOTS // k) // slots * slots)
        self.batch_rows = int(batch)
        self.crypto = crypto
        self.state = "started"
        return {
            "version": WIRE_VERSION,
            "model_id": self.view.model_id,
            "kind": self.view.kind,
            "rows": self.rows,
            "purpose": self.purpose,
            "output": self.output,
            "noise_std": self.requested_noise if self.output == "noise" else 0.0,
            "backend": self.backend,
            "public": crypto.public(),
            # SecureBoost: two columns per complex slot, and the key to conjugate the total
            "galois": crypto.conjugation_key() if self.view.kind == "secureboost" else None,
            "columns": self.view.n_columns,
            "nodes": self.view.nodes,
            "batch_rows": self.batch_rows,
        }

    def _admitted(self, payload: Any) -> dict[str, Any]:
        msg = _require(
            payload,
            "score/admitted",
            ("rows", "excluded_rows", "excluded_reasons", "noise_std", "categories"),
        )
        n_aligned = len(self.bank.require_aligned())
        allowed = _rows(msg["rows"], n_aligned, "score/admitted rows")
        out = _rows(msg["excluded_rows"], n_aligned, "score/admitted excluded_rows")
        reasons = msg["excluded_reasons"]
        if not isinstance(reasons, list) or len(reasons) != out.size:
            raise MalformedMessageError("score/admitted: one reason per excluded row expected")
        requested = set(self.rows.tolist())
        if not set(allowed.tolist()) <= requested or not set(out.tolist()) <= requested:
            raise ProtocolError("score/admitted: rows the bank did not ask for")
        if set(allowed.tolist()) & set(out.tolist()):
            raise ProtocolError("score/admitted: a row both admitted and excluded")
        cats = msg["categories"]
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise MalformedMessageError("score/admitted: categories must be names")
        self.noise_std = _number(msg["noise_std"], "score/admitted noise_std", hi=MAX_NOISE_STD)
        if self.output == "noise" and self.noise_std < self.requested_noise:
            raise ProtocolError("score/admitted: the center applies less noise than asked for")
        self.excluded = {int(r): str(x) for r, x in zip(out, reasons, strict=True)}
        self.categories = list(cats)
        self.scored_rows = allowed
        X = self.bank.aligned_features(allowed)
        self._local, self._columns = self.view.columns(X)
        self._plan = _batches(int(allowed.size), self.batch_rows)
        self._logits = np.zeros(allowed.size)
        self._codes = np.full((allowed.size, 9), NO_CODE, dtype=np.uint8)
        slots = self.crypto.slots
        per_chunk = -(-self.view.n_columns // 2) if self._packed else max(1, self.view.n_columns)
        self.crypto.start_pool(sum(-(-(hi - lo) // slots) for lo, hi in self._plan) * per_chunk)
        self.state = "scoring"
        return self._next(0)

    def close(self) -> None:
        """Stop the encryption workers (also done when the protocol ends)."""
        self._pending = None
        if self.crypto is not None:
            self.crypto.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pending"] = None  # an in-flight encryption does not survive pickling
        return state

    def _encrypt_batch(self, b: int) -> Callable[[], Any]:
        lo, hi = self._plan[b]
        return self.crypto.encrypt_async(self._columns[lo:hi], packed=self._packed)

    @property
    def center_reasons(self) -> list[list[str]]:
        """Per scored row, the credit-center categories the center named (worst first)."""
        codes = getattr(self, "_codes", None)
        if codes is None:
            return []
        names = np.asarray([*self.categories, ""], dtype=object)
        idx = np.where(codes == NO_CODE, len(self.categories), codes)
        return [[c for c in row if c] for row in names[idx].tolist()]

    def _next(self, b: int) -> dict[str, Any]:
        if b >= len(self._plan):
            self.logits = self._logits + self._local
            self.state = "done"
            self._columns = None
            self.close()
            return {"batch": None, "vectors": None}
        pending = getattr(self, "_pending", None)
        if pending is None or self._pending_batch != b:
            pending = self._encrypt_batch(b)
        vectors = pending()
        self._pending = None
        if b + 1 < len(self._plan) and getattr(self.crypto, "_pool", None) is not None:
            # workers encrypt the next batch while the center works on this one
            self._pending, self._pending_batch = self._encrypt_batch(b + 1), b + 1
        return {"batch": b, "vectors": vectors}

    def _scores(self, payload: Any) -> dict[str, Any]:
        msg = _require(payload, "score/scores", ("batch", "scores", "reasons"))
        b = msg["batch"]
        if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < len(self._plan):
            raise ProtocolError(f"score/scores: unexpected batch {b!r}")
        lo, hi = self._plan[b]
        self._logits[lo:hi] = self.crypto.decrypt(msg["scores"], hi - lo, packed=self._packed)
        codes = msg["reasons"]
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2:
            raise MalformedMessageError("score/scores: reasons must be a 2-D uint8 array")
        if (
            codes.shape[0] != hi - lo
            or codes.shape[1] > 9
            or (codes.shape[1] and not self.categories)
        ):
            raise MalformedMessageError("score/scores: reasons do not match the batch")
        valid = (codes < len(self.categories)) | (codes == NO_CODE)
        if not valid.all():
            raise MalformedMessageError("score/scores: unknown reason category index")
        self._codes[lo:hi, : codes.shape[1]] = codes
        return self._next(b + 1)


def _bank_factory(bank: BankParty, params: dict) -> ScoreBank:
    # deployment: the bank's own job file names the model directory; in-process the estimator
    # attaches a ScoreBank directly
    params = dict(params)
    if "model_dir" in params:
        from jointcredit.scoring.preauth import load_bank_model

        params["model"] = load_bank_model(params.pop("model_dir"))
    return ScoreBank(bank, **params)


registry.register(PROTOCOL, center=ScoreCenter, bank=_bank_factory)
