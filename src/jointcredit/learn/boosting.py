"""SecureBoost: vertical gradient boosting with packed Paillier, both halves side by side.

Protocol ``secureboost`` (training; the credit center drives, the bank answers; see
``docs/protocols/secureboost.md`` for who sees what)::

    center -> bank  start                       bank: validates the job, bins its features,
    bank -> center  start.ok {job, first}         generates the Paillier key, builds any
                                                  bank-only trees, encrypts tree 0's (g, h)
    per tree, per level d (all nodes of the level in one message):
    center -> bank  level {members of d-1 center splits, per open node: counts + compressed,
                           shuffled, re-randomised cumulative ciphertext histograms}
    bank -> center  level.ok {per node: leaf | bank split + left membership | center candidate id,
                              [next tree's encrypted gradients if the tree is complete]}
    center -> bank  finish {members of the last level's center splits}   (only if needed)
    bank -> center  finish.ok {next tree's encrypted gradients | stop}

Protocol ``secureboost_predict`` (evaluation routing)::

    center -> bank  start            bank -> center  {model_id, rows}
    center -> bank  masks {per tree with center splits: leaf-reachability bits per row}
    bank -> center  masks.ok         (the bank combines them with its own splits; scores stay
                                      at the bank)

Each sample's gradient and hessian travel as ONE Paillier plaintext (:class:`GHPacking`);
histograms, sibling subtraction, cumulative sums and compression are homomorphic at the
center; the bank decrypts a few packed ciphertexts per node. ``backend="plain"`` runs the
identical code with encryption replaced by the identity (reference mode for the lossless test).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jointcredit.errors import (
    DataValidationError,
    KeyPolicyError,
    MalformedMessageError,
    NotFittedError,
    ProtocolError,
    UnexpectedMessageError,
)
from jointcredit.learn._hist import (
    BinMapper,
    GHPacking,
    HistogramEngine,
    batch_inverse,
    candidate_specs,
    check_positive_int,
    check_real,
    choose_split,
    combine,
    decompress_plain,
    goes_left,
    identity,
    leaf_weight,
    plain_candidate_sums,
)
from jointcredit.learn._validation import check_rows, require_fields
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.session import ProtocolChannel
from jointcredit.scoring.gate import (
    TRAINING_PURPOSE,
    predict_purpose,
    require_training_consent,
)

__all__ = [
    "BankBoostModel",
    "CenterBoostPart",
    "HeteroSecureBoost",
    "SecureBoostBank",
    "SecureBoostCenter",
    "SecureBoostPredictBank",
    "SecureBoostPredictCenter",
    "lightgbm_reference_params",
    "load_center_part",
    "save_center_part",
    "train_and_evaluate",
]

PROTOCOL = "secureboost"
PREDICT_PROTOCOL = "secureboost_predict"
WIRE_VERSION = 1

#: Limits a center enforces on a bank's job (they bound the center's memory and CPU).
MAX_DEPTH_LIMIT = 12
MAX_BIN_LIMIT = 255
MAX_TREES_LIMIT = 10_000
#: Encryption backends: Paillier (default), Okamoto-Uchiyama (faster: ciphertexts mod p^2 q
#: instead of n^2, see ``jointcredit.crypto.ou``) and the identity (reference mode).
BACKENDS = ("paillier", "ou", "plain")
#: Plaintext capacity the reference mode simulates (that of a 2048-bit Paillier key).
PLAIN_CAPACITY_BITS = 2048
_PACKING_MARGIN_BITS = 2
#: A bin is derived from the node total instead of aggregated when it holds more rows than this
#: (one inversion + a few dozen multiplications are cheaper than that many multiplications).
_SKIP_MIN_ROWS = 64
#: Below this many (rows x features) per tree the center works in-process.
_PARALLEL_MIN_WORK = 40_000

_LEAF, _BANK_SPLIT, _CENTER_SPLIT = 0, 1, 2
_LOG_EPS = 1e-15


# ============================================================================================
# hyper-parameters
# ============================================================================================


@dataclass(frozen=True)
class BoostParams:
    """Validated hyper-parameters (see :class:`HeteroSecureBoost` for their meaning)."""

    n_estimators: int = 30
    max_depth: int = 3
    learning_rate: float = 0.3
    max_bin: int = 32
    reg_lambda: float = 1.0
    min_child_weight: float = 1e-3
    min_child_samples: int = 20
    min_split_gain: float = 0.0
    subsample: float = 1.0
    sampling: str = "uniform"
    goss_top_rate: float = 0.2
    goss_other_rate: float = 0.1
    colsample_bytree: float = 1.0
    bank_only_trees: int = 0
    validation_fraction: float = 0.0
    early_stopping_rounds: int | None = None
    speculative_gradients: bool = False
    backend: str = "paillier"
    key_bits: int = 2048
    frac_bits: int = 16
    n_jobs: int = 2
    random_state: int | None = None

    @classmethod
    def validate(cls, **kw: Any) -> BoostParams:
        unknown = sorted(set(kw) - set(cls.__dataclass_fields__))
        if unknown:
            raise DataValidationError(unknown[0], "unknown SecureBoost hyper-parameter")
        p = cls(**kw)
        check_positive_int("n_estimators", p.n_estimators, maximum=MAX_TREES_LIMIT)
        check_positive_int("max_depth", p.max_depth, maximum=MAX_DEPTH_LIMIT)
        check_real("learning_rate", p.learning_rate, low=0.0, high=1.0, low_open=True)
        check_positive_int("max_bin", p.max_bin, minimum=2, maximum=MAX_BIN_LIMIT)
        check_real("reg_lambda", p.reg_lambda, low=0.0)
        check_real("min_child_weight", p.min_child_weight, low=0.0)
        check_positive_int("min_child_samples", p.min_child_samples)
        check_real("min_split_gain", p.min_split_gain, low=0.0)
        check_real("subsample", p.subsample, low=0.0, high=1.0, low_open=True)
        if p.sampling not in ("uniform", "goss"):
            raise DataValidationError(
                "sampling", f"must be 'uniform' or 'goss', got {p.sampling!r}"
            )
        check_real(
            "goss_top_rate", p.goss_top_rate, low=0.0, high=1.0, low_open=True, high_open=True
        )
        check_real("goss_other_rate", p.goss_other_rate, low=0.0, high=1.0, low_open=True)
        if p.sampling == "goss" and p.goss_top_rate + p.goss_other_rate > 1.0:
            raise DataValidationError(
                "goss_other_rate", "goss_top_rate + goss_other_rate must not exceed 1"
            )
        if p.sampling == "goss" and p.subsample != 1.0:
            raise DataValidationError(
                "subsample", "GOSS sets its own sample size; leave subsample=1"
            )
        check_real("colsample_bytree", p.colsample_bytree, low=0.0, high=1.0, low_open=True)
        check_positive_int("bank_only_trees", p.bank_only_trees, minimum=0)
        check_real("validation_fraction", p.validation_fraction, low=0.0, high=1.0, high_open=True)
        if p.early_stopping_rounds is not None:
            check_positive_int("early_stopping_rounds", p.early_stopping_rounds)
            if p.validation_fraction == 0.0:
                raise DataValidationError(
                    "early_stopping_rounds", "needs a validation split: set validation_fraction > 0"
                )
        if not isinstance(p.speculative_gradients, bool):
            raise DataValidationError("speculative_gradients", "must be True or False")
        if p.speculative_gradients and p.sampling == "goss":
            raise DataValidationError(
                "speculative_gradients", "needs label-independent sampling (not GOSS)"
            )
        if p.backend not in BACKENDS:
            raise DataValidationError(
                "backend", f"must be one of {', '.join(BACKENDS)}, got {p.backend!r}"
            )
        check_positive_int("key_bits", p.key_bits)
        if p.backend in ("paillier", "ou"):
            from jointcredit.crypto.ou import MIN_OU_BITS
            from jointcredit.crypto.paillier import MIN_PAILLIER_BITS

            minimum = MIN_PAILLIER_BITS if p.backend == "paillier" else MIN_OU_BITS
            scheme = "Paillier" if p.backend == "paillier" else "Okamoto-Uchiyama"
            if p.key_bits < minimum:
                raise KeyPolicyError(
                    f"key_bits: a {p.key_bits}-bit {scheme} key is below the {minimum}-bit minimum"
                )
        check_positive_int("frac_bits", p.frac_bits, minimum=8, maximum=40)
        check_positive_int("n_jobs", p.n_jobs, maximum=256)
        if p.random_state is not None:
            check_positive_int("random_state", p.random_state, minimum=0)
        return p

    @property
    def max_weight(self) -> float:
        """Largest per-sample weight (GOSS up-weights the sampled small-gradient rows)."""
        if self.sampling == "goss":
            return max(1.0, (1.0 - self.goss_top_rate) / self.goss_other_rate)
        return 1.0


# ============================================================================================
# encryption backends: the only place where "paillier", "ou" and "plain" differ
# ============================================================================================


class _BankCipher:
    """Key holder side: encrypt packed gradients, decrypt compressed histograms.

    Paillier and OU keys expose the same small surface (``to_bytes``, ``ciphertexts_to_bytes``,
    an encryptor with ``for_private_key`` / ``encrypt_ints``, ``decompress_ints``), so only
    the key generation differs."""

    def __init__(self, backend: str, key_bits: int, n_jobs: int) -> None:
        self.backend = backend
        self.n_jobs = n_jobs
        self._encryptor: Any = None
        if backend == "paillier":
            from jointcredit.crypto.paillier import generate_paillier_keypair

            self.public_key, self.private_key = generate_paillier_keypair(key_bits)
            self.capacity = self.public_key.n_bits - _PACKING_MARGIN_BITS
        elif backend == "ou":
            from jointcredit.crypto.ou import generate_ou_keypair

            self.public_key, self.private_key = generate_ou_keypair(key_bits)
            self.capacity = self.public_key.plaintext_bits - _PACKING_MARGIN_BITS
        else:
            self.public_key = self.private_key = None
            self.capacity = PLAIN_CAPACITY_BITS - _PACKING_MARGIN_BITS

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_encryptor"] = None  # a process pool; rebuilt on demand after unpickling
        return state

    def public_bytes(self) -> bytes | None:
        return None if self.public_key is None else self.public_key.to_bytes()

    def encrypt(self, values: list[int]) -> bytes:
        if self.public_key is None:
            return b"".join(int(v).to_bytes(PLAIN_CAPACITY_BITS // 8, "big") for v in values)
        if self._encryptor is None:
            if self.backend == "ou":
                from jointcredit.crypto.ou import OUEncryptor

                self._encryptor = OUEncryptor.for_private_key(self.private_key, n_jobs=self.n_jobs)
            else:
                from jointcredit.crypto.paillier import FastEncryptor

                # worker processes that return serialized ciphertexts: measured 1.7x one core,
                # where threads (GIL hand-offs) and mpz pickling gained nothing
                self._encryptor = FastEncryptor.for_private_key(
                    self.private_key, n_jobs=self.n_jobs, parallel="processes"
                )
        return self._encryptor.encrypt_to_bytes(values)

    def decrypt_records(self, blob: Any, slot_bits: int, count: int) -> list[int]:
        per = self.capacity // slot_bits
        if not isinstance(blob, bytes):
            raise MalformedMessageError("histogram: ciphertexts must be bytes")
        if self.public_key is None:
            width = PLAIN_CAPACITY_BITS // 8
            if len(blob) % width:
                raise MalformedMessageError("histogram: blob is not a whole number of records")
            values = [
                int.from_bytes(blob[i : i + width], "big") for i in range(0, len(blob), width)
            ]
            try:
                return decompress_plain(values, slot_bits, per, count)
            except ValueError as exc:
                raise MalformedMessageError(f"histogram: {exc}") from exc
        if self.backend == "ou":
            from jointcredit.crypto.ou import decompress_ints
        else:
            from jointcredit.crypto.paillier import decompress_ints

        cts = self.public_key.ciphertexts_from_bytes(blob)
        try:
            return decompress_ints(self.private_key, cts, slot_bits, count)
        except ValueError as exc:
            raise MalformedMessageError(f"histogram: {exc}") from exc

    def close(self) -> None:
        if self._encryptor is not None:
            self._encryptor.close()
            self._encryptor = None


class _CenterCipher:
    """The center's view: a public key (or the identity) and homomorphic arithmetic."""

    def __init__(self, backend: str, public_key: bytes | None) -> None:
        self.backend = backend
        self._rerandomizer: Any = None
        if backend == "paillier":
            from jointcredit.crypto.paillier import PaillierPublicKey

            if not isinstance(public_key, bytes):
                raise MalformedMessageError("start: public_key must be bytes")
            self.public_key = PaillierPublicKey.from_bytes(public_key)  # refuses < 2048 bits
            self.mod: Any = self.public_key.nsquare
            self.width = self.public_key.ciphertext_width
            self.capacity = self.public_key.n_bits - _PACKING_MARGIN_BITS
        elif backend == "ou":
            from jointcredit.crypto.ou import OUPublicKey

            if not isinstance(public_key, bytes):
                raise MalformedMessageError("start: public_key must be bytes")
            self.public_key = OUPublicKey.from_bytes(public_key)  # refuses < 2048 bits
            self.mod = self.public_key.n
            self.width = self.public_key.ciphertext_width
            self.capacity = self.public_key.plaintext_bits - _PACKING_MARGIN_BITS
        elif backend == "plain":
            self.public_key = None
            self.mod = None
            self.width = PLAIN_CAPACITY_BITS // 8
            self.capacity = PLAIN_CAPACITY_BITS - _PACKING_MARGIN_BITS
        else:
            raise DataValidationError("backend", f"unknown backend {backend!r}")

    def parse(self, blob: Any, count: int) -> list[Any]:
        if not isinstance(blob, bytes) or len(blob) != count * self.width:
            raise MalformedMessageError(
                f"gradients: expected {count} ciphertexts of {self.width} bytes"
            )
        if self.public_key is None:
            w = self.width
            return [int.from_bytes(blob[i : i + w], "big") for i in range(0, len(blob), w)]
        return self.public_key.ciphertexts_from_bytes(blob)

    def finalize(self, cts: list[Any]) -> bytes:
        """Re-randomise (the bank must not recognise products of its own ciphertexts), serialise."""
        if self.public_key is None:
            return b"".join(int(c).to_bytes(self.width, "big") for c in cts)
        if self._rerandomizer is None:
            if self.backend == "ou":
                from jointcredit.crypto.ou import OUEncryptor as Encryptor
            else:
                from jointcredit.crypto.paillier import FastEncryptor as Encryptor

            # a few hundred re-randomizations per level: a small table builds faster
            self._rerandomizer = Encryptor(self.public_key, n_jobs=1, window_bits=8)
        return self.public_key.ciphertexts_to_bytes(self._rerandomizer.rerandomize(cts))

    def close(self) -> None:
        if self._rerandomizer is not None:
            self._rerandomizer.close()
            self._rerandomizer = None


# ============================================================================================
# small wire helpers
# ============================================================================================


def _bits(mask: np.ndarray) -> bytes:
    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def _unbits(raw: Any, n: int, what: str) -> np.ndarray:
    if not isinstance(raw, bytes) or len(raw) != (n + 7) // 8:
        raise MalformedMessageError(f"{what}: expected {(n + 7) // 8} bytes of membership bits")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)


def _int_array(raw: Any, what: str) -> np.ndarray:
    if not isinstance(raw, np.ndarray) or raw.ndim != 1 or raw.dtype.kind not in "iu":
        raise MalformedMessageError(f"{what}: expected a 1-D integer array")
    return raw.astype(np.int64)


def _children(node: int) -> tuple[int, int]:
    return 2 * node + 1, 2 * node + 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logloss(y: np.ndarray, raw: np.ndarray) -> float:
    p = np.clip(_sigmoid(raw), _LOG_EPS, 1 - _LOG_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ============================================================================================
# model parts (each party keeps and saves its own)
# ============================================================================================


@dataclass
class BankBoostModel:
    """The bank's half of a fitted model: tree structure, bank splits, leaf values.

    Center splits appear only as ``{"kind": "center"}``: their features and thresholds stay at
    the credit center (:class:`CenterBoostPart`).
    """

    model_id: str
    feature_names: list[str]
    init_score: float
    trees: list[dict[int, dict]]
    params: dict = field(default_factory=dict)

    def center_trees(self) -> list[int]:
        return [
            t
            for t, tree in enumerate(self.trees)
            if any(n["kind"] == "center" for n in tree.values())
        ]

    def to_json(self) -> str:
        trees = [{str(k): v for k, v in tree.items()} for tree in self.trees]
        return json.dumps(
            {
                "format": "jointcredit.secureboost.bank/1",
                "model_id": self.model_id,
                "feature_names": self.feature_names,
                "init_score": self.init_score,
                "trees": trees,
                "params": self.params,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> BankBoostModel:
        d = json.loads(text)
        if d.get("format") != "jointcredit.secureboost.bank/1":
            raise DataValidationError("format", "not a SecureBoost bank model file")
        trees = [{int(k): v for k, v in tree.items()} for tree in d["trees"]]
        return cls(
            d["model_id"],
            list(d["feature_names"]),
            float(d["init_score"]),
            trees,
            dict(d.get("params", {})),
        )

    def route(self, X: np.ndarray, tree: int) -> tuple[list[int], np.ndarray]:
        """Leaves of ``tree`` (sorted ids) and which of them each row can reach via bank splits."""
        nodes = self.trees[tree]
        leaves = sorted(k for k, n in nodes.items() if n["kind"] == "leaf")
        col = {name: i for i, name in enumerate(self.feature_names)}
        reach: dict[int, np.ndarray] = {0: np.ones(X.shape[0], dtype=bool)}
        for k in sorted(nodes):
            node = nodes[k]
            if node["kind"] == "leaf":
                continue
            r = reach[k]
            left, right = _children(k)
            if node["kind"] == "bank":
                go = goes_left(X[:, col[node["feature"]]], node["threshold"], node["missing_left"])
                reach[left], reach[right] = r & go, r & ~go
            else:
                reach[left], reach[right] = r, r
        return leaves, np.stack([reach[k] for k in leaves], axis=1)


@dataclass
class CenterBoostPart:
    """The credit center's half: features and thresholds of center splits, tree shapes.

    Tree shapes (which nodes are split, by whom) are known to the center from training; leaf
    values are not.
    """

    model_id: str
    feature_names: list[str]
    trees: dict[int, dict[int, dict]]

    def to_json(self) -> str:
        trees = {str(t): {str(k): v for k, v in nodes.items()} for t, nodes in self.trees.items()}
        return json.dumps(
            {
                "format": "jointcredit.secureboost.center/1",
                "model_id": self.model_id,
                "feature_names": self.feature_names,
                "trees": trees,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> CenterBoostPart:
        d = json.loads(text)
        if d.get("format") != "jointcredit.secureboost.center/1":
            raise DataValidationError("format", "not a SecureBoost center model file")
        trees = {int(t): {int(k): v for k, v in nodes.items()} for t, nodes in d["trees"].items()}
        return cls(d["model_id"], list(d["feature_names"]), trees)

    def reachability(self, X: np.ndarray, tree: int) -> tuple[list[int], np.ndarray]:
        splits = self.trees[tree]
        col = {name: i for i, name in enumerate(self.feature_names)}
        reach: dict[int, np.ndarray] = {0: np.ones(X.shape[0], dtype=bool)}
        leaves: list[int] = []
        stack = [0]
        while stack:
            k = stack.pop()
            node = splits.get(k)
            if node is None:
                leaves.append(k)
                continue
            left, right = _children(k)
            r = reach[k]
            if node["kind"] == "center":
                go = goes_left(X[:, col[node["feature"]]], node["threshold"], node["missing_left"])
                reach[left], reach[right] = r & go, r & ~go
            else:
                reach[left], reach[right] = r, r
            stack += [left, right]
        leaves.sort()
        return leaves, np.stack([reach[k] for k in leaves], axis=1)


def save_center_part(center: CenterParty, model_id: str, path: str | os.PathLike) -> Path:
    """Write the credit center's part of model ``model_id`` (JSON, the center's own disk)."""
    part = center.model_parts.get(model_id)
    if not isinstance(part, CenterBoostPart):
        raise DataValidationError("model_id", f"no SecureBoost part {model_id!r} at the center")
    path = Path(path)
    path.write_text(part.to_json(), encoding="utf-8")
    return path


def load_center_part(center: CenterParty, path: str | os.PathLike) -> str:
    """Load a saved center part into ``center.model_parts``; returns its model id."""
    part = CenterBoostPart.from_json(Path(path).read_text(encoding="utf-8"))
    missing = [f for f in part.feature_names if f not in center.feature_names]
    if missing:
        raise DataValidationError(
            ", ".join(missing), "feature(s) of the saved part not in the table"
        )
    center.model_parts[part.model_id] = part
    return part.model_id


# ============================================================================================
# training: the credit center's half (drives)
# ============================================================================================


class SecureBoostCenter:
    """Credit center half of ``secureboost``: encrypted histograms over its own features.

    ``n_jobs`` worker processes build histograms (default: up to 2); ``seed`` fixes the center's
    private randomness (candidate shuffling, column sampling) — tests only; a deployment leaves
    it ``None`` (OS entropy).
    """

    protocol = PROTOCOL

    def __init__(
        self, center: CenterParty, *, n_jobs: int | None = None, seed: int | None = None
    ) -> None:
        self.center = center
        self.n_jobs = min(2, os.cpu_count() or 1) if n_jobs is None else max(1, int(n_jobs))
        self.rng = np.random.default_rng(seed)
        self.stats: dict[str, float] = {}

    # -- job setup ---------------------------------------------------------------------------

    def _validate_job(self, reply: Any) -> dict:
        job = require_fields(
            reply,
            "start",
            [
                "version",
                "model_id",
                "backend",
                "public_key",
                "max_depth",
                "max_bin",
                "min_child_samples",
                "colsample_bytree",
                "n_estimators",
                "first_tree",
                "slot_bits",
                "train_rows",
                "valid_rows",
                "first",
            ],
        )
        if job["version"] != WIRE_VERSION:
            raise ProtocolError(f"start: wire version {job['version']!r} not supported")
        if not isinstance(job["model_id"], str) or not 0 < len(job["model_id"]) <= 64:
            raise MalformedMessageError("start: model_id must be a short string")
        check_positive_int("max_depth", job["max_depth"], maximum=MAX_DEPTH_LIMIT)
        check_positive_int("max_bin", job["max_bin"], minimum=2, maximum=MAX_BIN_LIMIT)
        check_positive_int("min_child_samples", job["min_child_samples"])
        check_real("colsample_bytree", job["colsample_bytree"], low=0.0, high=1.0, low_open=True)
        check_positive_int("n_estimators", job["n_estimators"], maximum=MAX_TREES_LIMIT)
        check_positive_int("first_tree", job["first_tree"], minimum=0)
        n_aligned = self.center.require_aligned().shape[0]
        rows = {}
        for key in ("train_rows", "valid_rows"):
            r = _int_array(job[key], f"start.{key}")
            if r.size and (r.min() < 0 or r.max() >= n_aligned):
                raise DataValidationError(key, "row positions outside the aligned intersection")
            rows[key] = r
        both = np.concatenate([rows["train_rows"], rows["valid_rows"]])
        if np.unique(both).size != both.size or rows["train_rows"].size == 0:
            raise DataValidationError("train_rows", "rows must be distinct and non-empty")
        job["train_rows"], job["valid_rows"] = rows["train_rows"], rows["valid_rows"]
        job["init_part"] = self._init_part(job.get("init_model_id"), int(job["first_tree"]))
        job["cipher"] = _CenterCipher(job["backend"], job["public_key"])
        check_positive_int("slot_bits", job["slot_bits"], maximum=job["cipher"].capacity)
        return job

    def _init_part(self, init_model_id: Any, first_tree: int) -> CenterBoostPart | None:
        """The center's own part of the model a warm start continues (looked up by its id: the
        bank never holds center features or thresholds)."""
        if init_model_id is None:
            return None
        part = (
            self.center.model_parts.get(init_model_id) if isinstance(init_model_id, str) else None
        )
        if not isinstance(part, CenterBoostPart):
            raise DataValidationError(
                "init_model", f"no SecureBoost part {init_model_id!r} at the credit center"
            )
        missing = [f for f in part.feature_names if f not in self.center.feature_names]
        if missing:
            raise DataValidationError(
                "init_model", f"center feature(s) {missing} of the warm-start model not held"
            )
        if any(t >= first_tree for t in part.trees):
            raise ProtocolError(f"start: the warm-start model has trees beyond {first_tree}")
        return part

    def run(self, channel: ProtocolChannel) -> str:
        job = self._validate_job(channel.request("start"))
        cipher: _CenterCipher = job["cipher"]
        self.job = job
        self.cipher = cipher
        self.max_depth = int(job["max_depth"])
        self.mcs = int(job["min_child_samples"])
        self.colsample = float(job["colsample_bytree"])
        self.slot_bits = int(job["slot_bits"])
        self.per = cipher.capacity // self.slot_bits
        self.n_train = job["train_rows"].size
        job_rows = np.concatenate([job["train_rows"], job["valid_rows"]])
        require_training_consent(self.center, job_rows, PROTOCOL)
        X = self.center.aligned_features(job_rows).to_numpy(dtype=np.float64)
        self.X = X
        self.mapper = BinMapper.fit(X[: self.n_train], int(job["max_bin"]))
        self.bins = self.mapper.transform(X)
        self.n_value_bins = self.mapper.n_value_bins
        self.n_features = X.shape[1]
        self.trees: dict[int, dict[int, dict]] = {}
        if job["init_part"] is not None:  # the parent's center splits, by this table's columns
            self.trees = {
                t: {k: dict(n) for k, n in nodes.items()}
                for t, nodes in job["init_part"].trees.items()
            }
        work = self.n_train * max(1, self.n_features)
        jobs = self.n_jobs if work >= _PARALLEL_MIN_WORK else 1
        self.engine = HistogramEngine(jobs, cipher.mod)
        try:
            payload = job["first"]
            tree_index = int(job["first_tree"])
            carry: dict | None = None
            while True:
                nxt = require_fields(payload, "next", ["stop"])
                if nxt["stop"]:
                    n_trees = check_positive_int("n_trees", nxt.get("n_trees"), minimum=0)
                    break
                if tree_index >= int(job["n_estimators"]):
                    raise ProtocolError(f"next: tree {tree_index} exceeds n_estimators")
                payload, carry = self._grow_tree(channel, tree_index, nxt, carry)
                tree_index += 1
        finally:
            self.engine.close()
            cipher.close()
        part = CenterBoostPart(
            job["model_id"],
            list(self.center.feature_names),
            {t: nodes for t, nodes in self.trees.items() if t < n_trees},
        )
        self.center.model_parts[job["model_id"]] = part
        return job["model_id"]

    # -- one tree ----------------------------------------------------------------------------

    def _grow_tree(
        self, channel: ProtocolChannel, t: int, nxt: dict, carry: dict | None
    ) -> tuple[dict, dict | None]:
        """One tree. ``carry``: the previous tree's last center splits, whose memberships the
        bank has not seen yet (it sent gradients for both outcomes of their rows)."""
        require_fields(nxt, "next", ["tree", "rows", "cts", "alt_rows", "alt_cts"])
        if nxt["tree"] != t:
            raise ProtocolError(f"next: expected tree {t}, got {nxt['tree']!r}")
        sample = _int_array(nxt["rows"], "next.rows")
        if sample.size and (
            sample.min() < 0 or sample.max() >= self.n_train or np.any(np.diff(sample) <= 0)
        ):
            raise MalformedMessageError("next.rows: must be sorted distinct training rows")
        cts = self.cipher.parse(nxt["cts"], sample.size)
        blob = nxt["cts"]
        n_job = self.bins.shape[0]
        pos_of = np.full(n_job, -1, dtype=np.int64)
        pos_of[sample] = np.arange(sample.size)
        alt_rows = _int_array(nxt["alt_rows"], "next.alt_rows")
        expected_alt = (
            np.empty(0, dtype=np.int64)
            if carry is None
            else np.flatnonzero(carry["pending_rows"] & (pos_of >= 0))
        )
        if not np.array_equal(alt_rows, expected_alt):
            raise MalformedMessageError("next.alt_rows: not the sampled rows of pending splits")
        if alt_rows.size:
            alt = self.cipher.parse(nxt["alt_cts"], alt_rows.size)
            w = self.cipher.width
            patched = bytearray(blob)
            for row, j in zip(alt_rows.tolist(), range(alt_rows.size), strict=True):
                if carry["right"][row]:  # the row went right: its right-branch gradient
                    p = int(pos_of[row])
                    cts[p] = alt[j]
                    patched[p * w : (p + 1) * w] = nxt["alt_cts"][j * w : (j + 1) * w]
            blob = bytes(patched)
        elif nxt["alt_cts"] != b"":
            raise MalformedMessageError("next.alt_cts: ciphertexts without rows")
        k_feat = max(1, round(self.colsample * self.n_features)) if self.n_features else 0
        feats = np.sort(self.rng.choice(self.n_features, size=k_feat, replace=False))
        # the engine sees this tree's sampled rows x selected features, in that order
        self.sample_bins = self.bins[sample][:, feats]
        self.engine.load_tree(cts, blob, self.cipher.width, self.sample_bins)
        splits: dict[int, dict] = {}
        self.trees[t] = splits
        rows: dict[int, np.ndarray] = {0: np.arange(n_job)}
        sampled = {0: sample.size}
        hist: dict[int, list[list[Any]]] = {}
        members: list[list[Any]] = []
        prev_members = [] if carry is None else carry["members"]
        open_nodes = [0] if self.max_depth > 0 and sample.size >= 2 * self.mcs else []
        depth = 0
        while open_nodes:
            nodes_msg, metas = self._level_histograms(open_nodes, rows, pos_of, feats, hist)
            reply = channel.request(
                "level",
                {
                    "tree": t,
                    "depth": depth,
                    "members": members,
                    "nodes": nodes_msg,
                    "prev_members": prev_members,
                },
            )
            prev_members = []
            reply = require_fields(reply, "level.ok", ["decisions", "next"])
            decisions = reply["decisions"]
            if decisions is None and depth == 0 and carry is not None:
                # the previous tree's routing triggered early stopping at the bank
                nxt_payload = require_fields(reply["next"], "level.ok.next", ["stop"])
                if not nxt_payload["stop"]:
                    raise MalformedMessageError("level.ok: no decisions but no stop either")
                return nxt_payload, None
            if not isinstance(decisions, list) or len(decisions) != len(open_nodes):
                raise MalformedMessageError("level.ok: one decision per open node expected")
            members = []
            next_open: list[int] = []
            for node, dec in zip(open_nodes, decisions, strict=True):
                if not isinstance(dec, list) or len(dec) != 4 or dec[0] != node:
                    raise MalformedMessageError(f"level.ok: bad decision for node {node}")
                kind = dec[1]
                if kind == _LEAF:
                    continue
                node_rows = rows[node]
                if kind == _BANK_SPLIT:
                    left = _unbits(dec[3], node_rows.size, f"decision[{node}]")
                    splits[node] = {"kind": "bank"}
                elif kind == _CENTER_SPLIT:
                    cand = dec[2]
                    meta = metas[node]
                    if not isinstance(cand, int) or not 0 <= cand < len(meta):
                        raise MalformedMessageError(f"decision[{node}]: candidate id out of range")
                    f, tb, ml = meta[cand]
                    b = self.bins[node_rows, f]
                    B = int(self.n_value_bins[f])
                    left = np.where(b == B, ml, b <= tb)
                    splits[node] = {
                        "kind": "center",
                        "feature": self.center.feature_names[f],
                        "threshold": self.mapper.threshold(f, tb),
                        "missing_left": bool(ml),
                    }
                    members.append([node, _bits(left)])
                else:
                    raise MalformedMessageError(f"decision[{node}]: unknown kind {kind!r}")
                lc, rc = _children(node)
                rows[lc], rows[rc] = node_rows[left], node_rows[~left]
                for c in (lc, rc):
                    sampled[c] = int((pos_of[rows[c]] >= 0).sum())
                    if depth + 1 < self.max_depth and sampled[c] >= 2 * self.mcs:
                        next_open.append(c)
            for node in open_nodes:  # parents' histograms are only needed by their children
                if node in hist and not any(c in next_open for c in _children(node)):
                    del hist[node]
            depth += 1
            open_nodes = next_open
            if not open_nodes and not members:
                if reply["next"] is None:
                    raise MalformedMessageError("level.ok: tree complete but no next payload")
                return reply["next"], None
            if not open_nodes and reply["next"] is not None:
                # speculative: the next tree's gradients came for both outcomes of the rows of
                # this level's center splits; their memberships ride on the next request
                pending_rows = np.zeros(n_job, dtype=bool)
                right = np.zeros(n_job, dtype=bool)
                for node, _ in members:
                    pending_rows[rows[node]] = True
                    right[rows[_children(node)[1]]] = True
                return reply["next"], {
                    "members": members,
                    "pending_rows": pending_rows,
                    "right": right,
                }
            if reply["next"] is not None:
                raise MalformedMessageError("level.ok: next payload sent before the tree ended")
        reply = channel.request(
            "finish", {"tree": t, "members": members, "prev_members": prev_members}
        )
        return require_fields(reply, "finish.ok", ["next"])["next"], None

    def _level_histograms(
        self,
        open_nodes: list[int],
        rows: dict[int, np.ndarray],
        pos_of: np.ndarray,
        feats: np.ndarray,
        hist: dict[int, list[list[Any]]],
    ) -> tuple[list[list[Any]], dict[int, list[tuple[int, int, bool]]]]:
        mod = self.cipher.mod
        n_slots = self.n_value_bins[feats] + 1
        positions = {}

        def pos(node: int) -> np.ndarray:
            if node not in positions:
                p = pos_of[rows[node]]
                positions[node] = np.sort(p[p >= 0])
            return positions[node]

        # which nodes to aggregate, which to derive as parent - sibling
        build: list[int] = []
        derive: list[tuple[int, int, int]] = []  # (node, parent, built sibling)
        seen_parents = set()
        for node in open_nodes:
            if node == 0:
                build.append(0)
                continue
            parent = (node - 1) // 2
            if parent in seen_parents:
                continue
            seen_parents.add(parent)
            kids = [c for c in _children(parent)]
            small = min(kids, key=lambda c: (pos(c).size, c))
            large = kids[1] if small == kids[0] else kids[0]
            if parent in hist:
                build.append(small)
                if large in open_nodes:
                    derive.append((large, parent, small))
            else:
                build += [c for c in kids if c in open_nodes]
        counts: dict[int, list[np.ndarray]] = {}
        for node in set(build) | {d[0] for d in derive}:
            p = pos(node)
            counts[node] = [
                np.bincount(self.sample_bins[p, i], minlength=int(n_slots[i]))
                for i in range(len(feats))
            ]
        skips = []
        for node in build:
            c = counts[node]
            maxes = [int(ci.max()) if ci.size else 0 for ci in c]
            sk = np.full(len(feats), -1, dtype=np.int64)
            if maxes and max(maxes) > _SKIP_MIN_ROWS:
                anchor = int(np.argmin(maxes))
                for i, ci in enumerate(c):
                    if i != anchor and maxes[i] > _SKIP_MIN_ROWS:
                        sk[i] = int(np.argmax(ci))
            skips.append(sk)
        t0 = time.perf_counter()
        local_feats_bins = (
            self.engine.build([pos(n) for n in build], n_slots, skips) if build else []
        )
        self.stats["hist_s"] = self.stats.get("hist_s", 0.0) + time.perf_counter() - t0
        for node, sk, per_feat in zip(build, skips, local_feats_bins, strict=True):
            if (sk >= 0).any():
                anchor = int(np.flatnonzero(sk < 0)[0])
                total = identity(mod)
                for v in per_feat[anchor]:
                    total = combine(total, v, mod)
                partials = []
                for i in np.flatnonzero(sk >= 0):
                    acc = identity(mod)
                    for v in per_feat[i]:
                        if v is not None:
                            acc = combine(acc, v, mod)
                    partials.append(acc)
                invs = batch_inverse(partials, mod)
                for j, i in enumerate(np.flatnonzero(sk >= 0)):
                    per_feat[i][int(sk[i])] = combine(total, invs[j], mod)
            hist[node] = per_feat
        for node, parent, sib in derive:
            flat = [v for fb in hist[sib] for v in fb]
            invs = batch_inverse(flat, mod)
            parent_flat = [v for fb in hist[parent] for v in fb]
            out = [combine(a, b, mod) for a, b in zip(parent_flat, invs, strict=True)]
            per_feat, k = [], 0
            for fb in hist[sib]:
                per_feat.append(out[k : k + len(fb)])
                k += len(fb)
            hist[node] = per_feat
        # cumulative candidates per node, shuffled, compressed
        nodes_msg: list[list[Any]] = []
        metas: dict[int, list[tuple[int, int, bool]]] = {}
        groups: list[list[Any]] = []
        group_counts: list[np.ndarray] = []
        for node in open_nodes:
            cand_cts: list[Any] = []
            cand_n: list[int] = []
            meta: list[tuple[int, int, bool]] = []
            for i, f in enumerate(feats):
                B = int(self.n_value_bins[f])
                c = counts[node][i]
                ts, ml = candidate_specs(c, B, self.mcs)
                if ts.size == 0:
                    continue
                bins_ct = hist[node][i]
                cum_ct = []
                acc = identity(mod)
                for b in range(int(ts.max()) + 1):
                    acc = combine(acc, bins_ct[b], mod)
                    cum_ct.append(acc)
                cum_n = np.concatenate([[0], np.cumsum(c[:B])])
                for tb, m in zip(ts.tolist(), ml.tolist(), strict=True):
                    ct = cum_ct[tb] if tb >= 0 else identity(mod)
                    n_left = int(cum_n[tb + 1])
                    if m:
                        ct = combine(ct, bins_ct[B], mod)
                        n_left += int(c[B])
                    cand_cts.append(ct)
                    cand_n.append(n_left)
                    meta.append((int(f), int(tb), bool(m)))
            perm = self.rng.permutation(len(meta))
            metas[node] = [meta[j] for j in perm]
            groups.append([cand_cts[j] for j in perm])
            group_counts.append(np.asarray(cand_n, dtype=np.uint32)[perm])
        t0 = time.perf_counter()
        packed = self.engine.compress(groups, self.slot_bits, self.per)
        self.stats["compress_s"] = self.stats.get("compress_s", 0.0) + time.perf_counter() - t0
        for node, g, cnt in zip(open_nodes, packed, group_counts, strict=True):
            nodes_msg.append([node, cnt, self.cipher.finalize(g) if g else b""])
        return nodes_msg, metas


# ============================================================================================
# training: the bank's half (answers; picklable between messages)
# ============================================================================================


class SecureBoostBank:
    """Bank half of ``secureboost``: labels, gradients, the private key, all split decisions."""

    protocol = PROTOCOL

    def __init__(
        self,
        bank: BankParty,
        *,
        rows: Sequence[int] | np.ndarray | None = None,
        init_model: BankBoostModel | None = None,
        init_raw_scores: np.ndarray | None = None,
        **params: Any,
    ) -> None:
        self.bank = bank
        self.params = BoostParams.validate(**params)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        # warm start: the parent's bank part and its joint raw scores of ``rows`` (from
        # ``secureboost_predict``, so no center split ever reaches the bank)
        if (init_model is None) != (init_raw_scores is None):
            raise DataValidationError("init_model", "needs the parent's raw scores of the rows")
        if init_model is not None and not isinstance(init_model, BankBoostModel):
            raise DataValidationError("init_model", "must be a SecureBoost bank model")
        self.init_model = init_model
        self.init_raw_scores = (
            None if init_raw_scores is None else np.asarray(init_raw_scores, dtype=np.float64)
        )
        self.state = "new"
        self.model: BankBoostModel | None = None
        self.evals: list[float] = []
        self.best_iteration: int | None = None
        self.timings: dict[str, float] = {}
        self.deferred: dict | None = None  # a tree whose last center splits await routing

    # -- start -------------------------------------------------------------------------------

    def handle(self, msg_type: str, payload: Any) -> Any:
        t0 = time.perf_counter()
        try:
            if msg_type == "start" and self.state == "new":
                return self._start()
            if msg_type == "level" and self.state == "training":
                return self._level(payload)
            if msg_type == "finish" and self.state == "training":
                return {"next": self._finish(payload)}
            raise UnexpectedMessageError(
                f"secureboost: unexpected {msg_type!r} in state {self.state}"
            )
        finally:
            self.timings["bank_s"] = self.timings.get("bank_s", 0.0) + time.perf_counter() - t0

    def _start(self) -> dict:
        p = self.params
        aligned = self.bank.require_aligned()
        rows = np.arange(aligned.shape[0]) if self.rows is None else self.rows
        if rows.size == 0 or rows.min() < 0 or rows.max() >= aligned.shape[0]:
            raise DataValidationError("rows", "row positions outside the aligned intersection")
        if np.unique(rows).size != rows.size:
            raise DataValidationError("rows", "row positions must be distinct")
        y_all = np.asarray(self.bank.aligned_labels(rows), dtype=np.float64)
        if not np.isin(y_all, (0.0, 1.0)).all() or y_all.min() == y_all.max():
            raise DataValidationError("y", "labels must be 0/1 with both classes present")
        rng = np.random.default_rng(p.random_state)
        self.rng = rng
        if p.validation_fraction > 0:
            valid_mask = np.zeros(rows.size, dtype=bool)
            for cls in (0.0, 1.0):
                idx = np.flatnonzero(y_all == cls)
                k = int(round(p.validation_fraction * idx.size))
                valid_mask[rng.choice(idx, size=k, replace=False)] = True
            train_rows, valid_rows = rows[~valid_mask], rows[valid_mask]
        else:
            train_rows, valid_rows = rows, rows[:0]
        if train_rows.size < 2 * p.min_child_samples:
            raise DataValidationError(
                "rows",
                f"{train_rows.size} training rows cannot be split "
                f"with min_child_samples={p.min_child_samples}",
            )
        self.train_rows, self.valid_rows = train_rows, valid_rows
        job_rows = np.concatenate([train_rows, valid_rows])
        self.n_train = train_rows.size
        self.y = np.asarray(self.bank.aligned_labels(job_rows), dtype=np.float64)
        frame = self.bank.aligned_features(job_rows)
        self.feature_names = list(frame.columns)
        self.X = frame.to_numpy(dtype=np.float64)
        mapper = BinMapper.fit(self.X[: self.n_train], p.max_bin)
        self.mapper = mapper
        self.bins = mapper.transform(self.X)
        self.n_value_bins = mapper.n_value_bins
        self.packing = GHPacking(p.frac_bits, p.max_weight, 0.25 * p.max_weight, self.n_train)
        self.cipher = _BankCipher(p.backend, p.key_bits, p.n_jobs)
        if self.packing.slot_bits > self.cipher.capacity:
            raise DataValidationError("frac_bits", "packed gradients do not fit one plaintext")
        self.model_id = uuid.uuid4().hex
        if self.init_model is None:
            pbar = float(self.y[: self.n_train].mean())
            self.init_score = math.log(pbar / (1.0 - pbar))
            self.F = np.full(job_rows.size, self.init_score)
            self.trees: list[dict[int, dict]] = []
        else:
            self._warm_start(rows, job_rows)
        self.n_init = len(self.trees)
        self.n_total = self.n_init + p.n_estimators  # n_estimators counts the new trees
        self.state = "training"
        # bank-only trees open a model; a continuation already has its parent's
        first_joint = 0 if self.n_init else min(p.bank_only_trees, p.n_estimators)
        stop = False
        for _ in range(first_joint):
            self._begin_tree()
            self._grow_locally()
            if self._end_tree():
                stop = True
                break
        if stop or len(self.trees) >= self.n_total:
            first = self._stop_payload()
        else:
            first = self._begin_tree_payload()
        warm = {} if self.init_model is None else {"init_model_id": self.init_model.model_id}
        return {
            "version": WIRE_VERSION,
            "model_id": self.model_id,
            "backend": p.backend,
            "public_key": self.cipher.public_bytes(),
            "max_depth": p.max_depth,
            "max_bin": p.max_bin,
            "min_child_samples": p.min_child_samples,
            "colsample_bytree": p.colsample_bytree,
            "n_estimators": self.n_total,
            "first_tree": len(self.trees),
            "slot_bits": self.packing.slot_bits,
            "train_rows": train_rows,
            "valid_rows": valid_rows,
            "first": first,
            **warm,  # optional: the center continues from its own part of that model
        }

    def _warm_start(self, rows: np.ndarray, job_rows: np.ndarray) -> None:
        """Start from the parent: its trees, its base score, its joint raw scores as margin."""
        parent = self.init_model
        if parent.feature_names != self.feature_names:
            raise DataValidationError(
                "feature_names",
                f"the bank's features {self.feature_names} differ from the warm-start model's "
                f"{parent.feature_names}",
            )
        raw = self.init_raw_scores
        if raw.shape != (rows.size,) or not np.isfinite(raw).all():
            raise DataValidationError("init_raw_scores", f"need {rows.size} finite raw scores")
        order = np.argsort(rows, kind="stable")
        at = order[np.searchsorted(rows, job_rows, sorter=order)]
        self.init_score = parent.init_score
        self.F = raw[at].copy()
        self.trees = [{k: dict(n) for k, n in tree.items()} for tree in parent.trees]

    # -- per tree ----------------------------------------------------------------------------

    def _gradients(self, F: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-loss gradient and hessian of job rows ``rows`` at raw scores ``F``."""
        prob = _sigmoid(F)
        return prob - self.y[rows], prob * (1.0 - prob)

    def _begin_tree(self) -> None:
        """Gradients, row sample and column sample of the next tree."""
        p = self.params
        n = self.n_train
        g, h = self._gradients(self.F[:n], np.arange(n))
        w = np.ones(n)
        if p.sampling == "goss":
            n_top = max(1, int(p.goss_top_rate * n))
            n_other = max(1, int(p.goss_other_rate * n))
            order = np.argsort(-np.abs(g), kind="stable")
            rest = self.rng.choice(order[n_top:], size=min(n_other, n - n_top), replace=False)
            sample = np.sort(np.concatenate([order[:n_top], rest]))
            w[rest] = (1.0 - p.goss_top_rate) / p.goss_other_rate
        elif p.subsample < 1.0:
            k = max(2 * p.min_child_samples, int(round(p.subsample * n)))
            sample = np.sort(self.rng.choice(n, size=min(k, n), replace=False))
        else:
            sample = np.arange(n)
        n_feat = len(self.feature_names)
        k_feat = max(1, round(p.colsample_bytree * n_feat)) if n_feat else 0
        self.tree_feats = np.sort(self.rng.choice(n_feat, size=k_feat, replace=False))
        self.sample = sample
        self.weights = w
        self.in_sample = np.zeros(self.F.size, dtype=bool)
        self.in_sample[sample] = True
        gq, hq = self.packing.quantize((g * w)[sample], (h * w)[sample])
        self.gq = np.zeros(self.F.size, dtype=np.int64)
        self.hq = np.zeros(self.F.size, dtype=np.int64)
        self.gq[sample], self.hq[sample] = gq, hq
        self.tree: dict[int, dict] = {}
        self.node_rows: dict[int, np.ndarray] = {0: np.arange(self.F.size)}
        self.open_nodes = [0] if p.max_depth > 0 and sample.size >= 2 * p.min_child_samples else []
        self.depth = 0
        self.pending: dict[int, tuple[int, int, int]] = {}  # center splits awaiting membership

    def _begin_tree_payload(self) -> dict:
        """Next tree's encrypted gradients; with a deferred tree, both variants of its rows.

        Rows of the deferred tree's pending center splits end in the left or the right child;
        the bank encrypts the gradient for both outcomes (left in ``cts``, right in
        ``alt_cts``) and the center, which knows the outcome, uses the right one.
        """
        self._begin_tree()
        values = self.packing.pack(self.gq[self.sample], self.hq[self.sample])
        alt_rows = np.empty(0, dtype=np.int64)
        if self.deferred is not None:
            d = self.deferred
            rows_l, rows_r = [], []
            for node in d["pending"]:
                r = d["node_rows"][node]
                r = r[self.in_sample[r]]
                vl, vr = d["values"][node]
                rows_l.append((r, vl))
                rows_r.append((r, vr))
            alt_rows = np.sort(np.concatenate([r for r, _ in rows_r])) if rows_r else alt_rows
            F_left, F_right = self.F.copy(), self.F.copy()
            for (r, vl), (_, vr) in zip(rows_l, rows_r, strict=True):
                F_left[r] += vl
                F_right[r] += vr
            w = self.weights
            g, h = self._gradients(F_left[alt_rows], alt_rows)
            gq_l, hq_l = self.packing.quantize(g * w[alt_rows], h * w[alt_rows])
            g, h = self._gradients(F_right[alt_rows], alt_rows)
            gq_r, hq_r = self.packing.quantize(g * w[alt_rows], h * w[alt_rows])
            self.gq[alt_rows], self.hq[alt_rows] = gq_l, hq_l
            d["alt"] = (alt_rows, gq_r, hq_r)
            values = self.packing.pack(self.gq[self.sample], self.hq[self.sample])
            values += self.packing.pack(gq_r, hq_r) if alt_rows.size else []
        t0 = time.perf_counter()
        blob = self.cipher.encrypt(values)
        self.timings["encrypt_s"] = self.timings.get("encrypt_s", 0.0) + time.perf_counter() - t0
        cut = len(blob) * self.sample.size // max(1, len(values))
        return {
            "stop": False,
            "tree": len(self.trees),
            "rows": self.sample,
            "cts": blob[:cut],
            "alt_rows": alt_rows,
            "alt_cts": blob[cut:],
        }

    def _stop_payload(self) -> dict:
        n_trees = len(self.trees)
        if self.best_iteration is not None and self.params.early_stopping_rounds is not None:
            n_trees = max(self.best_iteration + 1, self.n_init)
        self.trees = self.trees[:n_trees]
        params = dict(asdict(self.params))
        if self.init_model is not None:
            params["init_model_id"] = self.init_model.model_id  # the parent, for the record
        self.model = BankBoostModel(
            self.model_id, self.feature_names, self.init_score, self.trees, params
        )
        self.bank.model_parts[self.model_id] = self.model
        self.state = "done"
        self.cipher.close()
        return {"stop": True, "n_trees": n_trees}

    def _node_totals(self, node: int) -> tuple[np.ndarray, tuple[int, int, int]]:
        r = self.node_rows[node]
        s = r[self.in_sample[r]]
        return s, (int(self.gq[s].sum()), int(self.hq[s].sum()), int(s.size))

    def _bank_block(
        self, s: np.ndarray
    ) -> tuple[tuple[np.ndarray, ...], list[tuple[int, int, bool]]]:
        GLs, HLs, nLs, meta = [], [], [], []
        gq, hq = self.gq[s].astype(np.float64), self.hq[s].astype(np.float64)
        for f in self.tree_feats:
            B = int(self.n_value_bins[f])
            b = self.bins[s, f]
            cnt = np.bincount(b, minlength=B + 1)
            ts, ml = candidate_specs(cnt, B, self.params.min_child_samples)
            if ts.size == 0:
                continue
            gs = np.rint(np.bincount(b, weights=gq, minlength=B + 1)).astype(np.int64)
            hs = np.rint(np.bincount(b, weights=hq, minlength=B + 1)).astype(np.int64)
            GL, HL, nL = plain_candidate_sums(gs, hs, cnt, B, ts, ml)
            GLs.append(GL)
            HLs.append(HL)
            nLs.append(nL)
            meta += [
                (int(f), int(tb), bool(m)) for tb, m in zip(ts.tolist(), ml.tolist(), strict=True)
            ]
        if not meta:
            e = np.empty(0, dtype=np.int64)
            return (e, e, e), meta
        return (np.concatenate(GLs), np.concatenate(HLs), np.concatenate(nLs)), meta

    def _choose(self, node: int, center_block: tuple[np.ndarray, ...] | None) -> tuple:
        p = self.params
        s, totals = self._node_totals(node)
        bank_block, meta = self._bank_block(s)
        blocks = [bank_block] + ([center_block] if center_block is not None else [])
        choice = choose_split(
            blocks,
            totals,
            scale=self.packing.scale,
            reg_lambda=p.reg_lambda,
            min_child_weight=p.min_child_weight,
            min_child_samples=p.min_child_samples,
            min_split_gain=p.min_split_gain,
        )
        return choice, meta

    def _apply_bank_split(self, node: int, f: int, tb: int, ml: bool) -> np.ndarray:
        r = self.node_rows[node]
        b = self.bins[r, f]
        B = int(self.n_value_bins[f])
        left = np.where(b == B, ml, b <= tb)
        self.tree[node] = {
            "kind": "bank",
            "feature": self.feature_names[f],
            "threshold": self.mapper.threshold(f, tb),
            "missing_left": bool(ml),
        }
        self._set_children(node, left)
        return left

    def _set_children(self, node: int, left: np.ndarray) -> None:
        r = self.node_rows[node]
        lc, rc = _children(node)
        self.node_rows[lc], self.node_rows[rc] = r[left], r[~left]

    def _open_children(self, node: int, n_left: int, n_node: int) -> list[int]:
        p = self.params
        if self.depth + 1 >= p.max_depth:
            return []
        return [
            c
            for c, k in zip(_children(node), (n_left, n_node - n_left), strict=True)
            if k >= 2 * p.min_child_samples
        ]

    def _grow_locally(self) -> None:
        """A bank-only tree: the same split search without center candidates or messages."""
        while self.open_nodes:
            next_open: list[int] = []
            for node in self.open_nodes:
                choice, meta = self._choose(node, None)
                if choice is None:
                    continue
                f, tb, ml = meta[choice.index]
                self._apply_bank_split(node, f, tb, ml)
                next_open += self._open_children(node, choice.nL, self._node_totals(node)[1][2])
            self.open_nodes = next_open
            self.depth += 1

    def _apply_members(self, members: Any) -> None:
        """Left memberships of the previous level's center splits (validated before applying)."""
        if not isinstance(members, list) or len(members) != len(self.pending):
            raise MalformedMessageError("members: one entry per pending center split expected")
        parsed = {}
        for item in members:
            if not isinstance(item, list) or len(item) != 2 or item[0] not in self.pending:
                raise MalformedMessageError("members: unexpected node")
            node = item[0]
            left = _unbits(item[1], self.node_rows[node].size, f"members[{node}]")
            r = self.node_rows[node]
            if int(self.in_sample[r[left]].sum()) != self.pending[node][2]:
                raise ProtocolError(f"members[{node}]: membership contradicts the chosen split")
            parsed[node] = left
        for node, left in parsed.items():
            self._set_children(node, left)
        self.pending = {}

    def _level(self, payload: Any) -> dict:
        msg = require_fields(
            payload, "level", ["tree", "depth", "members", "nodes", "prev_members"]
        )
        if msg["tree"] != len(self.trees) or msg["depth"] != self.depth:
            raise ProtocolError(f"level: expected tree {len(self.trees)} depth {self.depth}")
        nodes = msg["nodes"]
        if (
            not isinstance(nodes, list)
            or [n[0] if isinstance(n, list) and n else None for n in nodes] != self.open_nodes
        ):
            raise MalformedMessageError(f"level: histograms expected for nodes {self.open_nodes}")
        if self._resolve_deferred(msg["prev_members"]):
            return {"decisions": None, "next": self._stop_payload()}
        # decrypt and validate everything before touching the tree
        pending_before = dict(self.pending)
        node_rows_before = dict(self.node_rows)
        try:
            self._apply_members(msg["members"])
            center_blocks = {}
            t0 = time.perf_counter()
            for item in nodes:
                if len(item) != 3:
                    raise MalformedMessageError("level: node entries are [node, counts, blob]")
                node, counts, blob = item
                counts = _int_array(counts, f"level.nodes[{node}].counts")
                if counts.size and (
                    counts.min() < 0 or counts.max() > self._node_totals(node)[1][2]
                ):
                    raise MalformedMessageError(f"level.nodes[{node}]: impossible candidate counts")
                if counts.size:
                    records = self.cipher.decrypt_records(blob, self.packing.slot_bits, counts.size)
                    GL, HL = self.packing.unpack_sums(records, counts)
                else:
                    if blob != b"":
                        raise MalformedMessageError(f"level.nodes[{node}]: blob without candidates")
                    GL = HL = np.empty(0, dtype=np.int64)
                center_blocks[node] = (GL, HL, counts)
            self.timings["decrypt_s"] = (
                self.timings.get("decrypt_s", 0.0) + time.perf_counter() - t0
            )
        except Exception:
            self.pending, self.node_rows = pending_before, node_rows_before
            raise
        decisions = []
        next_open: list[int] = []
        for node in self.open_nodes:
            choice, meta = self._choose(node, center_blocks[node])
            n_node = self._node_totals(node)[1][2]
            if choice is None:
                decisions.append([node, _LEAF, -1, b""])
                continue
            if choice.source == 0:
                f, tb, ml = meta[choice.index]
                left = self._apply_bank_split(node, f, tb, ml)
                decisions.append([node, _BANK_SPLIT, -1, _bits(left)])
            else:
                self.tree[node] = {"kind": "center"}
                self.pending[node] = (choice.GL, choice.HL, choice.nL)
                decisions.append([node, _CENTER_SPLIT, int(choice.index), b""])
            next_open += self._open_children(node, choice.nL, n_node)
        self.open_nodes = next_open
        self.depth += 1
        nxt = None
        if not self.open_nodes and not self.pending:
            nxt = self._finish_tree()
        elif (
            not self.open_nodes
            and self.params.speculative_gradients
            and len(self.trees) + 1 < self.n_total
        ):
            # the tree is complete but the rows of its last center splits are not yet routed:
            # send the next tree's gradients for both outcomes instead of waiting for them
            self._leaf_values()
            self.deferred = {
                "pending": dict(self.pending),
                "node_rows": {k: self.node_rows[k] for k in self.pending},
                "in_sample": self.in_sample,
                "values": {
                    k: (self.tree[_children(k)[0]]["value"], self.tree[_children(k)[1]]["value"])
                    for k in self.pending
                },
            }
            self._commit_tree()
            self.pending = {}
            nxt = self._begin_tree_payload()
        return {"decisions": decisions, "next": nxt}

    def _resolve_deferred(self, prev_members: Any) -> bool:
        """Route the deferred tree's last center splits; True when training should stop."""
        if self.deferred is None:
            if prev_members not in (None, []):
                raise MalformedMessageError("prev_members: no tree is awaiting memberships")
            return False
        d = self.deferred
        if not isinstance(prev_members, list) or len(prev_members) != len(d["pending"]):
            raise MalformedMessageError("prev_members: one entry per deferred center split")
        parsed = {}
        for item in prev_members:
            if not isinstance(item, list) or len(item) != 2 or item[0] not in d["pending"]:
                raise MalformedMessageError("prev_members: unexpected node")
            node = item[0]
            r = d["node_rows"][node]
            left = _unbits(item[1], r.size, f"prev_members[{node}]")
            if int(d["in_sample"][r[left]].sum()) != d["pending"][node][2]:
                raise ProtocolError(f"prev_members[{node}]: contradicts the chosen split")
            parsed[node] = left
        alt_rows, gq_r, hq_r = d["alt"]
        went_right = np.zeros(self.F.size, dtype=bool)
        for node, left in parsed.items():
            r = d["node_rows"][node]
            vl, vr = d["values"][node]
            self.F[r[left]] += vl
            self.F[r[~left]] += vr
            went_right[r[~left]] = True
        swap = went_right[alt_rows]
        self.gq[alt_rows[swap]], self.hq[alt_rows[swap]] = gq_r[swap], hq_r[swap]
        self.deferred = None
        return self._evaluate()

    def _finish(self, payload: Any) -> dict:
        msg = require_fields(payload, "finish", ["tree", "members", "prev_members"])
        if msg["tree"] != len(self.trees) or self.open_nodes:
            raise ProtocolError(f"finish: unexpected for tree {msg['tree']!r}")
        if self._resolve_deferred(msg["prev_members"]):
            return self._stop_payload()
        self._apply_members(msg["members"])
        return self._finish_tree()

    def _finish_tree(self) -> dict:
        if self._end_tree():
            return self._stop_payload()
        if len(self.trees) >= self.n_total:
            return self._stop_payload()
        return self._begin_tree_payload()

    def _leaf_value(self, Gq: int, Hq: int) -> float:
        scale = self.packing.scale
        return self.params.learning_rate * leaf_weight(
            Gq / scale, Hq / scale, self.params.reg_lambda
        )

    def _leaf_values(self) -> None:
        """Leaf values from the fixed-point sums: the same integers the split search used, and
        available for the children of a center split before its rows are routed."""
        for node in list(self.node_rows):
            if node not in self.tree:
                _, (Gq, Hq, _) = self._node_totals(node)
                self.tree[node] = {"kind": "leaf", "value": self._leaf_value(Gq, Hq)}
        for node, (GL, HL, _) in self.pending.items():
            _, (Gq, Hq, _) = self._node_totals(node)
            left, right = _children(node)
            self.tree[left] = {"kind": "leaf", "value": self._leaf_value(GL, HL)}
            self.tree[right] = {"kind": "leaf", "value": self._leaf_value(Gq - GL, Hq - HL)}

    def _commit_tree(self) -> None:
        """Add the tree to the model and its leaf values to the scores of the routed rows."""
        for node, r in self.node_rows.items():
            if self.tree[node]["kind"] == "leaf":
                self.F[r] += self.tree[node]["value"]
        self.trees.append(dict(sorted(self.tree.items())))

    def _end_tree(self) -> bool:
        """Leaf values, score update, early stopping; True when training should stop."""
        self._leaf_values()
        self._commit_tree()
        return self._evaluate()

    def _evaluate(self) -> bool:
        p = self.params
        if self.valid_rows.size:
            loss = _logloss(self.y[self.n_train :], self.F[self.n_train :])
            self.evals.append(loss)  # one entry per new tree (a parent's trees are not rescored)
            if self.best_iteration is None or loss < self.evals[self.best_iteration - self.n_init]:
                self.best_iteration = len(self.trees) - 1
            if (
                p.early_stopping_rounds is not None
                and len(self.trees) - 1 - self.best_iteration >= p.early_stopping_rounds
            ):
                return True
        return False

    @property
    def train_scores(self) -> np.ndarray:
        """Raw scores of the training rows after the last tree (for tests)."""
        return self.F[: self.n_train].copy()


registry.register(
    PROTOCOL,
    center=lambda center: SecureBoostCenter(center),
    bank=lambda bank, params: SecureBoostBank(bank, **params),
)


# ============================================================================================
# evaluation routing: secureboost_predict
# ============================================================================================


class SecureBoostPredictCenter:
    """Center half of ``secureboost_predict``: leaf-reachability bits of its own splits."""

    protocol = PREDICT_PROTOCOL

    def __init__(self, center: CenterParty) -> None:
        self.center = center

    def run(self, channel: ProtocolChannel) -> int:
        job = require_fields(channel.request("start"), "start.ok", ["model_id", "rows"])
        part = self.center.model_parts.get(job["model_id"])
        if not isinstance(part, CenterBoostPart):
            raise DataValidationError("model_id", f"no SecureBoost part {job['model_id']!r} here")
        rows = _int_array(job["rows"], "start.rows")
        n_aligned = self.center.require_aligned().shape[0]
        if rows.size and (rows.min() < 0 or rows.max() >= n_aligned):
            raise DataValidationError("rows", "row positions outside the aligned intersection")
        purpose = predict_purpose(job.get("purpose"), "secureboost_predict/start.ok purpose")
        require_training_consent(self.center, rows, PREDICT_PROTOCOL, purpose)
        X = self.center.aligned_features(rows)[part.feature_names].to_numpy(dtype=np.float64)
        trees = sorted(
            t for t, s in part.trees.items() if any(n["kind"] == "center" for n in s.values())
        )
        blocks, n_leaves = [], []
        for t in trees:
            leaves, reach = part.reachability(X, t)
            n_leaves.append(len(leaves))
            blocks.append(np.packbits(reach, axis=1))
        masks = np.concatenate(blocks, axis=1) if blocks else np.zeros((rows.size, 0), np.uint8)
        channel.request("masks", {"trees": trees, "n_leaves": n_leaves, "masks": masks})
        return int(rows.size)


class SecureBoostPredictBank:
    """Bank half of ``secureboost_predict``: combines the center's masks with its own splits."""

    protocol = PREDICT_PROTOCOL

    def __init__(
        self,
        bank: BankParty,
        *,
        model_id: str,
        rows: Sequence[int] | np.ndarray | None = None,
        model: BankBoostModel | None = None,
        purpose: str = TRAINING_PURPOSE,
    ) -> None:
        self.purpose = predict_purpose(purpose, "purpose")
        self.bank = bank
        model = model if model is not None else bank.model_parts.get(model_id)
        if not isinstance(model, BankBoostModel) or model.model_id != model_id:
            raise DataValidationError("model_id", f"no SecureBoost model {model_id!r} at the bank")
        self.model = model
        n_aligned = bank.require_aligned().shape[0]
        self.rows = np.arange(n_aligned) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n_aligned):
            raise DataValidationError("rows", "row positions outside the aligned intersection")
        self.state = "new"
        self.raw_scores: np.ndarray | None = None

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start" and self.state == "new":
            self.state = "started"
            return {"model_id": self.model.model_id, "rows": self.rows, "purpose": self.purpose}
        if msg_type == "masks" and self.state == "started":
            self.raw_scores = self._combine(payload)
            self.state = "done"
            return None
        raise UnexpectedMessageError(f"secureboost_predict: unexpected {msg_type!r}")

    def _combine(self, payload: Any) -> np.ndarray:
        msg = require_fields(payload, "masks", ["trees", "n_leaves", "masks"])
        expected = self.model.center_trees()
        if msg["trees"] != expected:
            raise ProtocolError("masks: trees with center splits do not match the bank's model")
        frame = self.bank.aligned_features(self.rows)
        X = frame[self.model.feature_names].to_numpy(dtype=np.float64)
        masks = msg["masks"]
        n = self.rows.size
        widths = []
        for t, k in zip(expected, msg["n_leaves"], strict=True):
            leaves = sum(1 for v in self.model.trees[t].values() if v["kind"] == "leaf")
            if k != leaves:
                raise ProtocolError(f"masks: tree {t} has {leaves} leaves, center sent {k}")
            widths.append((k + 7) // 8)
        if (
            not isinstance(masks, np.ndarray)
            or masks.dtype != np.uint8
            or masks.shape != (n, sum(widths))
        ):
            raise MalformedMessageError("masks: wrong shape or dtype")
        center_reach = {}
        col = 0
        for t, k, w in zip(expected, msg["n_leaves"], widths, strict=True):
            center_reach[t] = np.unpackbits(masks[:, col : col + w], axis=1, count=k).astype(bool)
            col += w
        score = np.full(n, self.model.init_score)
        for t in range(len(self.model.trees)):
            leaves, reach = self.model.route(X, t)
            if t in center_reach:
                reach = reach & center_reach[t]
            if not (reach.sum(axis=1) == 1).all():
                raise ProtocolError(f"masks: tree {t} does not route every row to exactly one leaf")
            values = np.asarray([self.model.trees[t][k]["value"] for k in leaves])
            score += values[np.argmax(reach, axis=1)]
        return score


registry.register(
    PREDICT_PROTOCOL,
    center=SecureBoostPredictCenter,
    bank=lambda bank, params: SecureBoostPredictBank(bank, **params),
)


# ============================================================================================
# the bank modeler's estimator
# ============================================================================================


class HeteroSecureBoost:
    """Vertical SecureBoost between a bank (labels, key holder) and a credit center.

    ``predict_proba(...)[:, 1]`` is P(bad), i.e. the probability that ``y == 1``.

    Parameters (LightGBM names where one exists):
        n_estimators, max_depth, learning_rate, max_bin: as in LightGBM (depth-wise trees;
            ``max_bin`` quantile bins per feature plus one bin for missing values).
        reg_lambda: L2 penalty on leaf values. min_child_weight: minimum hessian sum per child.
        min_child_samples: minimum (sampled) rows per child. min_split_gain: minimum gain.
        subsample: uniform row sampling per tree (rows the center never sees gradients for).
        sampling: ``"uniform"`` or ``"goss"`` (gradient-based one-side sampling with
            ``goss_top_rate`` / ``goss_other_rate``). GOSS reveals to the center WHICH rows have
            large gradients (at the first tree: essentially the bad ones) — see the docs.
        colsample_bytree: share of each party's features per tree (each party samples its own).
        bank_only_trees: the first trees use bank features only (no messages, no encryption).
        validation_fraction, early_stopping_rounds: stratified bank-held validation split and
            early stopping on its log-loss (validation labels never leave the bank).
        backend: ``"paillier"``, ``"ou"`` (Okamoto-Uchiyama: the same protocol with ciphertexts
            modulo ``p^2 q``; about twice as fast end to end, see docs/crypto.md) or ``"plain"``
            (reference mode: identity encryption; it sends gradients in the clear and exists to
            prove the encrypted run lossless).
        key_bits: Paillier / OU modulus size (>= 2048). frac_bits: fixed-point precision of g, h.
        n_jobs: bank encryption processes. random_state: the bank's sampling seed.
    """

    def __init__(self, **hyperparameters: Any) -> None:
        unknown = sorted(set(hyperparameters) - set(BoostParams.__dataclass_fields__))
        if unknown:
            raise DataValidationError(unknown[0], "unknown SecureBoost hyper-parameter")
        self.hyperparameters = {**asdict(BoostParams()), **hyperparameters}

    def get_params(self, deep: bool = True) -> dict:
        return dict(self.hyperparameters)

    def set_params(self, **params: Any) -> HeteroSecureBoost:
        unknown = sorted(set(params) - set(BoostParams.__dataclass_fields__))
        if unknown:
            raise DataValidationError(unknown[0], "unknown SecureBoost hyper-parameter")
        self.hyperparameters.update(params)
        return self

    def fit(
        self,
        session: Any,
        rows: Sequence[int] | np.ndarray | None = None,
        *,
        init_model: HeteroSecureBoost | None = None,
    ) -> HeteroSecureBoost:
        """Train on ``rows`` (aligned positions; default all).

        ``init_model``: a fitted or loaded :class:`HeteroSecureBoost` to continue (LightGBM's
        ``init_model``): the new model keeps its trees and base score, starts from its joint raw
        scores (computed first with ``secureboost_predict``, so no center split reaches the
        bank) and adds up to ``n_estimators`` new trees; the center copies its own part of the
        parent, found by the parent's model id. ``bank_only_trees`` is ignored (the parent
        opened the model).
        """
        params = BoostParams.validate(**self.hyperparameters)  # typed errors before any crypto
        parent = self._check_init_model(session, init_model)
        if params.sampling == "goss":
            warnings.warn(
                "GOSS shows the credit center which rows have large gradients (label leakage); "
                "prefer sampling='uniform' with subsample < 1",
                UserWarning,
                stacklevel=2,
            )
        warm: dict[str, Any] = {}
        if parent is not None:
            fit_rows = _fit_rows(session, rows)
            try:
                raw = init_model.decision_function(session, fit_rows)
            except DataValidationError as exc:
                if exc.field != "model_id":
                    raise
                raise DataValidationError(
                    "init_model", f"the credit center cannot score it: {exc.reason}"
                ) from exc
            warm = {"init_model": parent, "init_raw_scores": raw}
            rows = fit_rows
        side = SecureBoostBank(session.bank, rows=rows, **warm, **asdict(params))
        mark = session.transcript.mark()
        start = time.perf_counter()
        try:
            session.run(side)
        finally:
            cipher = getattr(side, "cipher", None)
            if cipher is not None:  # the encryption pool must not outlive a failed run
                cipher.close()
        self.train_seconds_ = time.perf_counter() - start
        if side.model is None:
            raise ProtocolError("secureboost: the protocol ended before the model was complete")
        part = session.transcript.since(mark)
        self.transcript_ = part.summary(PROTOCOL)
        self.round_trips_ = self.transcript_["round_trips"]
        self.model_ = side.model
        self.model_id_ = side.model.model_id
        self.n_estimators_ = len(side.model.trees)
        self.init_score_ = side.init_score
        self.evals_result_ = {"valid_logloss": list(side.evals)}
        self.best_iteration_ = side.best_iteration
        self.feature_names_in_ = list(side.feature_names)
        self.timings_ = dict(side.timings)
        self.train_rows_ = side.train_rows
        self.valid_rows_ = side.valid_rows
        self.train_raw_scores_ = side.train_scores
        self.init_model_id_ = None if parent is None else parent.model_id
        return self

    @staticmethod
    def _check_init_model(session: Any, init_model: Any) -> BankBoostModel | None:
        """The parent's bank part, if it can be continued with this session's bank table."""
        if init_model is None:
            return None
        if not isinstance(init_model, HeteroSecureBoost):
            raise DataValidationError(
                "init_model", f"must be a fitted HeteroSecureBoost, got {type(init_model).__name__}"
            )
        parent = getattr(init_model, "model_", None)
        if parent is None:
            raise DataValidationError("init_model", "the warm-start model is not fitted")
        own = list(session.bank.feature_names)
        if parent.feature_names != own:
            raise DataValidationError(
                "feature_names",
                f"the bank's features {own} differ from the warm-start model's "
                f"{parent.feature_names}",
            )
        return parent

    def _check_fitted(self) -> BankBoostModel:
        model = getattr(self, "model_", None)
        if model is None:
            raise NotFittedError("HeteroSecureBoost: call fit (or load) first")
        return model

    def decision_function(
        self,
        session: Any,
        rows: Sequence[int] | np.ndarray | None = None,
        *,
        purpose: str = TRAINING_PURPOSE,
    ) -> np.ndarray:
        """Raw scores (log-odds of bad) of aligned rows, routed jointly with the center.

        ``purpose``: what the center checks consent for when it runs with a consent registry,
        ``"model_training"`` (evaluation) or ``"post_loan_monitoring"`` (re-scoring the book).
        """
        model = self._check_fitted()
        session.bank.model_parts[model.model_id] = model
        side = SecureBoostPredictBank(
            session.bank, model_id=model.model_id, rows=rows, model=model, purpose=purpose
        )
        session.run(side)
        if side.raw_scores is None:
            raise ProtocolError("secureboost_predict: no scores")
        return side.raw_scores

    def predict_proba(
        self,
        session: Any,
        rows: Sequence[int] | np.ndarray | None = None,
        *,
        purpose: str = TRAINING_PURPOSE,
    ) -> np.ndarray:
        """``(n, 2)`` array; column 1 is P(bad). ``purpose``: see :meth:`decision_function`."""
        p = _sigmoid(self.decision_function(session, rows, purpose=purpose))
        return np.column_stack([1.0 - p, p])

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the bank's part (no center features or thresholds) to ``directory``."""
        model = self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / "secureboost_bank.json"
        path.write_text(model.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> HeteroSecureBoost:
        model = BankBoostModel.from_json(
            (Path(directory) / "secureboost_bank.json").read_text(encoding="utf-8")
        )
        known = {k: v for k, v in model.params.items() if k in BoostParams.__dataclass_fields__}
        est = cls(**known)
        est.model_ = model
        est.model_id_ = model.model_id
        est.n_estimators_ = len(model.trees)
        est.init_score_ = model.init_score
        est.feature_names_in_ = list(model.feature_names)
        return est


def _fit_rows(session: Any, rows: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """``rows`` as checked positions (all aligned rows for None)."""
    n_aligned = session.bank.require_aligned().shape[0]
    return check_rows(rows, n_aligned)


# ============================================================================================
# evaluation helper for the CLI and benchmarks
# ============================================================================================


def lightgbm_reference_params(**params: Any) -> dict:
    """LightGBM settings equivalent to SecureBoost hyper-parameters (single-threaded)."""
    p = BoostParams.validate(**params)
    out = {
        "n_estimators": p.n_estimators,
        "max_depth": p.max_depth,
        "num_leaves": 2**p.max_depth,
        "learning_rate": p.learning_rate,
        "max_bin": p.max_bin,
        "reg_lambda": p.reg_lambda,
        "reg_alpha": 0.0,
        "min_child_weight": p.min_child_weight,
        "min_child_samples": p.min_child_samples,
        "min_split_gain": p.min_split_gain,
        "colsample_bytree": p.colsample_bytree,
        "num_threads": 1,
        "verbose": -1,
        "random_state": 0 if p.random_state is None else p.random_state,
    }
    if p.sampling == "goss":
        out.update(
            data_sample_strategy="goss", top_rate=p.goss_top_rate, other_rate=p.goss_other_rate
        )
    elif p.subsample < 1.0:
        out.update(subsample=p.subsample, subsample_freq=1)
    return out


def train_and_evaluate(
    session: Any,
    train_rows: Sequence[int] | np.ndarray,
    test_rows: Sequence[int] | np.ndarray,
    **params: Any,
) -> dict:
    """Fit SecureBoost on ``train_rows``, score ``test_rows``, and compare with LightGBM.

    Returns ``{"federated": {auc, ks, train_seconds, bytes_bank_to_center,
    bytes_center_to_bank, round_trips, n_trees}, "centralized": {auc, ks, train_seconds},
    "bank_only": {auc, ks}, "params": {...}, "estimator": HeteroSecureBoost}``. AUC / KS are on
    ``test_rows`` with P(bad) as the score. ``centralized`` trains LightGBM (same
    hyper-parameters, one thread) on the joined features in the clear — possible only in an
    in-process session: it is the insecure upper bound; ``bank_only`` uses bank features only.
    """
    import lightgbm as lgb

    from jointcredit.report.metrics import auc, ks

    train_rows = np.asarray(train_rows, dtype=np.int64)
    test_rows = np.asarray(test_rows, dtype=np.int64)
    model = HeteroSecureBoost(**params).fit(session, train_rows)
    p_fed = model.predict_proba(session, test_rows)[:, 1]
    y_train = session.bank.aligned_labels(train_rows)
    y_test = session.bank.aligned_labels(test_rows)
    ref = lightgbm_reference_params(**model.hyperparameters)
    bank_tr, bank_te = (
        session.bank.aligned_features(train_rows),
        session.bank.aligned_features(test_rows),
    )
    cen_tr, cen_te = (
        session.center.aligned_features(train_rows),
        session.center.aligned_features(test_rows),
    )
    joined_tr = np.hstack([bank_tr.to_numpy(np.float64), cen_tr.to_numpy(np.float64)])
    joined_te = np.hstack([bank_te.to_numpy(np.float64), cen_te.to_numpy(np.float64)])

    def fit_lgb(Xtr: np.ndarray, Xte: np.ndarray) -> tuple[dict, float]:
        start = time.perf_counter()
        clf = lgb.LGBMClassifier(**ref).fit(Xtr, y_train)
        seconds = time.perf_counter() - start
        p = clf.predict_proba(Xte)[:, 1]
        return {"auc": float(auc(y_test, p)), "ks": float(ks(y_test, p))}, seconds

    centralized, central_seconds = fit_lgb(joined_tr, joined_te)
    bank_only, _ = fit_lgb(bank_tr.to_numpy(np.float64), bank_te.to_numpy(np.float64))
    centralized["train_seconds"] = central_seconds
    return {
        "federated": {
            "auc": float(auc(y_test, p_fed)),
            "ks": float(ks(y_test, p_fed)),
            "train_seconds": model.train_seconds_,
            "bytes_bank_to_center": model.transcript_["bytes_bank_to_center"],
            "bytes_center_to_bank": model.transcript_["bytes_center_to_bank"],
            "round_trips": model.round_trips_,
            "n_trees": model.n_estimators_,
        },
        "centralized": centralized,
        "bank_only": bank_only,
        "params": model.hyperparameters,
        "estimator": model,  # the fitted bank-side estimator (not JSON: for saving)
    }
