"""ECDH private set intersection over X25519: which enterprises do the bank and the center share?

The protocol (two round trips; the credit center drives, the bank answers)::

    center                                          bank  (reveal_to = "both" | "bank")
    start      {version, salt_c}              ->
                                              <-    start.ok {version, reveal_to, salt_b, n,
                                                              blinded = shuffle(H(b)^β)}
        both: salt = SHA-256(tag || salt_c || salt_b), H = hash to Curve25519 under salt
    match      {blinded = shuffle(H(a)^α),
                double  = trunc16((H(b)^β)^α), in the bank's order}  ->
                                                    bank computes trunc16((H(a)^α)^β), compares
                                              <-    match.ok {size, positions, digest}   "both"
                                              <-    match.ok {}                          "bank"

``H(x)^k`` is X25519 with scalar ``k`` on the u-coordinate ``H(x)``; scalar multiplication
commutes, so ``(H(x)^α)^β = (H(x)^β)^α``. The bank compares, because
in both modes it learns the intersection, and its reply ends the protocol (the bank only ever
speaks in replies, so letting the center compare would cost a third round trip to tell the bank).
In ``"both"`` mode the reply lists the matched positions in the center's shuffled list; in
``"bank"`` mode it is empty and the center learns nothing beyond the bank's set size.

Hashing to the curve, not just to 32 bytes: X25519 accepts any 32 bytes as a u-coordinate, and
about half of all u lie on the quadratic twist. Curve25519 is twist-secure, so blinding a twist
point would not leak a scalar, but curve/twist membership survives blinding and anyone can test
it (a Legendre symbol), so every blinded ID would carry one public bit of its own hash: the
receiver learns how many of the sender's IDs hash onto the twist, a statistic about the sender's
set that accumulates over sessions. We therefore map IDs onto the curve by try-and-increment:
SHA-512(tag || salt || counter || id) yields two candidate u values mod p; the first with
``u^3 + A u^2 + u`` a non-zero square mod p is on the curve. Clamping clears the cofactor, so
every blinded point lies in the prime-order subgroup and is pseudorandom there (DDH).

Peer points are checked for canonical encoding (honest X25519 output is always < p with the top
bit clear) and for low order (``cryptography`` raises ValueError when the product is the
identity); either problem raises :class:`~jointcredit.errors.InvalidPeerInputError` naming how
many and which positions. Twist points from a misbehaving peer are harmless (twist security) and
not checked, which would cost one Legendre symbol per peer point.

See docs/protocols/psi.md for who learns what.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import gmpy2
import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from jointcredit.data.uscc import normalize_id
from jointcredit.errors import (
    CryptoError,
    DataValidationError,
    DuplicateIdentifierError,
    InvalidPeerInputError,
    MalformedMessageError,
    ProtocolError,
    UnexpectedMessageError,
)
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.fields import require_fields
from jointcredit.protocol.session import ProtocolChannel

PROTOCOL = "psi"
VERSION = 1
DOMAIN_TAG = b"jointcredit/psi/v1"
POINT_BYTES = 32
#: Doubly-blinded values are compared on their first 16 bytes: a false match among n x m pairs
#: has probability below n*m / 2**128, and the bytes on the wire shrink by a third.
MATCH_BYTES = 16
SALT_BYTES = 32
REVEAL_MODES = ("both", "bank")
#: Below this many points a process pool costs more than it saves.
PARALLEL_MIN_POINTS = 8_192
#: Points per worker task; see benchmarks/psi.py --sweep-chunks for the measurement behind it.
DEFAULT_CHUNK_SIZE = 25_000

_P_MPZ = gmpy2.mpz(2**255 - 19)
_A_MPZ = gmpy2.mpz(486662)
_from_bytes = gmpy2.mpz.from_bytes
_log = logging.getLogger(__name__)


# --- pure helpers ------------------------------------------------------------------------------


def new_scalar() -> bytes:
    """A fresh secret X25519 scalar (raw 32 bytes, so it can travel to worker processes)."""
    return X25519PrivateKey.generate().private_bytes_raw()


def session_salt(center_part: bytes, bank_part: bytes) -> bytes:
    """The hash salt both parties derive; each contributes half, so neither picks it alone."""
    return hashlib.sha256(DOMAIN_TAG + b"/salt" + center_part + bank_part).digest()


def prepare_ids(ids: Sequence[object] | np.ndarray, field: str = "id") -> np.ndarray:
    """Normalise IDs exactly as the loader does (NFKC, strip, upper-case) and check them.

    Both parties must hash identical strings, so normalisation happens here too even though the
    loader already applied it: tables built by hand or by older code still intersect correctly.
    Raises :class:`DuplicateIdentifierError` for IDs equal after normalisation (``"a1"`` and
    ``" A1"``) and :class:`DataValidationError` for empty IDs, before any cryptography runs.
    """
    normalised = _normalise(ids)
    index = pd.Index(normalised, dtype=object)
    empty = np.flatnonzero(normalised == "")
    if empty.size:
        shown = ", ".join(str(i) for i in empty[:10])
        raise DataValidationError(field, f"{empty.size} empty id(s) at row(s) {shown}")
    if not index.is_unique:
        duplicates = sorted(set(index[index.duplicated()]))
        raise DuplicateIdentifierError(field, duplicates)
    return normalised


def _normalise(ids: Sequence[object] | np.ndarray) -> np.ndarray:
    # Same result as jointcredit.data.uscc.normalize_id, about 4x faster on a million ids:
    # NFKC leaves ASCII unchanged, so only non-ASCII or non-str values take the full path.
    out = np.empty(len(ids), dtype=object)
    out[:] = [v.strip().upper() if type(v) is str and v.isascii() else normalize_id(v) for v in ids]
    return out


def hash_to_curve(ids: Sequence[str], salt: bytes) -> bytes:
    """u-coordinates ``H(id)`` on Curve25519 (not the twist), concatenated, 32 bytes each.

    ``ids`` must already be normalised. Exposed for tests and audits; the protocol fuses hashing
    with blinding in :func:`blind_ids`.
    """
    base = _hash_base(salt)
    return b"".join(_hash_to_u(base, text.encode("utf-8")) for text in ids)


def blind_ids(
    ids: Sequence[str] | np.ndarray,
    scalar: bytes,
    salt: bytes,
    *,
    n_jobs: int | None = None,
    chunk_size: int | None = None,
) -> bytes:
    """``H(id)^scalar`` for each normalised ID, concatenated (32 bytes each, input order)."""
    return start_blind_ids(ids, scalar, salt, n_jobs=n_jobs, chunk_size=chunk_size).result()


def reblind(
    points: bytes,
    scalar: bytes,
    *,
    out_bytes: int = POINT_BYTES,
    field: str = "points",
    n_jobs: int | None = None,
    chunk_size: int | None = None,
) -> bytes:
    """Multiply the peer's points by ``scalar``; keep the first ``out_bytes`` of each product.

    Rejects malformed, non-canonical and low-order points with :class:`InvalidPeerInputError`
    naming how many and which positions (0-based, in the peer's list), before returning anything.
    """
    return start_reblind(
        points, scalar, out_bytes=out_bytes, field=field, n_jobs=n_jobs, chunk_size=chunk_size
    ).result()


class Pending:
    """Chunk results that may still be computing in the worker pool.

    Starting two batches before waiting on either keeps both cores busy across the boundary
    between them (the center re-blinds the bank's points and blinds its own IDs back to back).
    """

    def __init__(self, parts: list, combine: Callable[[list], bytes]) -> None:
        self._parts = parts
        self._combine = combine

    def result(self) -> bytes:
        try:
            values = [p.result() if isinstance(p, Future) else p for p in self._parts]
        except BrokenProcessPool as exc:
            _forget_pool()
            raise CryptoError("a PSI worker process died (out of memory?)") from exc
        except BaseException:
            self.cancel()
            raise
        return self._combine(values)

    def cancel(self) -> None:
        for part in self._parts:
            if isinstance(part, Future):
                part.cancel()


def start_blind_ids(
    ids: Sequence[str] | np.ndarray,
    scalar: bytes,
    salt: bytes,
    *,
    n_jobs: int | None = None,
    chunk_size: int | None = None,
) -> Pending:
    """Start :func:`blind_ids` in the worker pool; ``.result()`` returns its bytes."""
    items = list(ids)
    spans = _plan(len(items), n_jobs, chunk_size)
    if spans is None:
        return Pending([_blind_ids_chunk(scalar, salt, items)] if items else [], b"".join)
    parts = _submit(_blind_ids_chunk, (scalar, salt), [items[a:b] for a, b in spans], n_jobs)
    return Pending(parts, b"".join)


def start_reblind(
    points: bytes,
    scalar: bytes,
    *,
    out_bytes: int = POINT_BYTES,
    field: str = "points",
    n_jobs: int | None = None,
    chunk_size: int | None = None,
) -> Pending:
    """Start :func:`reblind`; malformed input is rejected at once, low order at ``.result()``."""
    n = check_points(points, field)
    spans = _plan(n, n_jobs, chunk_size)
    if spans is None:
        spans = [(0, n)] if n else []
        parts: list = [_reblind_chunk(scalar, out_bytes, points)] if n else []
    else:
        pieces = [points[a * POINT_BYTES : b * POINT_BYTES] for a, b in spans]
        parts = _submit(_reblind_chunk, (scalar, out_bytes), pieces, n_jobs)

    def combine(results: list) -> bytes:
        bad = [a + i for (a, _), (_, low) in zip(spans, results, strict=True) for i in low]
        if bad:
            raise _peer_error(
                field, "low-order point(s) (the product would be the identity)", bad, n
            )
        return b"".join(out for out, _ in results)

    return Pending(parts, combine)


def check_points(points: object, field: str = "points") -> int:
    """Validate an encoded list of u-coordinates; return how many it holds.

    Vectorised, so a million points cost milliseconds: X25519 itself would silently reduce a
    non-canonical encoding, but an honest peer never produces one.
    """
    if not isinstance(points, bytes):
        raise MalformedMessageError(f"{field}: expected bytes, got {type(points).__name__}")
    if len(points) % POINT_BYTES:
        raise MalformedMessageError(
            f"{field}: {len(points)} bytes is not a whole number of {POINT_BYTES}-byte points"
        )
    arr = np.frombuffer(points, dtype=np.uint8).reshape(-1, POINT_BYTES)
    top_bit = arr[:, 31] >= 0x80
    # Values in [p, 2^255) with the top bit clear: 0x7f, then 30 bytes of 0xff, then >= 0xed.
    at_least_p = (arr[:, 31] == 0x7F) & (arr[:, 1:31] == 0xFF).all(axis=1) & (arr[:, 0] >= 0xED)
    bad = np.flatnonzero(top_bit | at_least_p)
    if bad.size:
        raise _peer_error(field, "non-canonical point encoding(s)", bad.tolist(), arr.shape[0])
    return int(arr.shape[0])


def find_matches(
    received: bytes,
    sent_back: bytes,
    width: int = MATCH_BYTES,
    names: tuple[str, str] = ("received", "sent_back"),
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of equal doubly-blinded values: ``(positions in received, positions in sent_back)``.

    ``received`` are the peer's points after our re-blinding, ``sent_back`` our points after the
    peer's. Both parties' IDs are unique, so a value repeated within one list means the peer sent
    the same point twice: rejected with :class:`InvalidPeerInputError` (``names`` label the two
    lists in the message) rather than silently matched twice. Pairs are ordered by position in
    ``received``.
    """
    if len(received) % width or len(sent_back) % width:
        raise MalformedMessageError(f"doubly-blinded values must be {width} bytes each")
    n_received = len(received) // width
    values = np.frombuffer(received + sent_back, dtype=f"V{width}")
    # One stable sort of both lists: equal neighbours are matches, and stability puts the
    # position from ``received`` (lower index) first in each pair.
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    equal = np.flatnonzero(ordered[1:] == ordered[:-1])
    first, second = order[equal], order[equal + 1]
    same_list = (first < n_received) == (second < n_received)
    if same_list.any():
        repeated = second[same_list]
        for name, in_list, offset, size in (
            (names[0], repeated < n_received, 0, n_received),
            (names[1], repeated >= n_received, n_received, values.size - n_received),
        ):
            if in_list.any():
                where = np.sort(repeated[in_list] - offset).tolist()
                raise _peer_error(name, "repeated point(s)", where, size)
    by_received = np.argsort(first, kind="stable")
    return (
        first[by_received].astype(np.int64),
        (second[by_received] - n_received).astype(np.int64),
    )


def aligned_order(normalised: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` sorted by their normalised ID, so both parties list the intersection identically."""
    rows = np.asarray(rows, dtype=np.int64)
    keys = normalised[rows].astype(str)
    return rows[np.argsort(keys, kind="stable")]


def intersection_digest(sorted_normalised_ids: Sequence[str] | np.ndarray) -> bytes:
    """SHA-256 of the sorted intersection: both parties check they ended with the same list."""
    ids = [str(v) for v in sorted_normalised_ids]
    # The lengths make the concatenation parse one way only.
    lengths = np.fromiter(map(len, ids), dtype=">u4", count=len(ids)).tobytes()
    h = hashlib.sha256(DOMAIN_TAG + b"/aligned")
    h.update(len(ids).to_bytes(8, "big"))
    h.update(lengths)
    h.update("".join(ids).encode("utf-8", "surrogatepass"))
    return h.digest()


def random_permutation(n: int) -> np.ndarray:
    """A permutation drawn from the OS CSPRNG: shuffles must be unpredictable to the peer."""
    keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


# --- hashing and blinding kernels (run in worker processes) -----------------------------------


def _hash_base(salt: bytes) -> Any:
    if len(salt) != SALT_BYTES:
        raise CryptoError(f"psi salt must be {SALT_BYTES} bytes, got {len(salt)}")
    # Fixed-length tag and salt come first, so (tag, salt, counter, id) parses one way only.
    return hashlib.sha512(DOMAIN_TAG + b"/hash-to-curve\x00" + salt)


def _hash_to_u(base: Any, data: bytes) -> bytes:
    # Each SHA-512 digest gives two candidates, each a 256-bit value reduced mod p (bias below
    # 2^-250); half of all u lie on the curve. gmpy2 arithmetic: the Legendre symbol dominates.
    for counter in range(256):
        h = base.copy()
        h.update(bytes((counter,)))
        h.update(data)
        digest = h.digest()
        for candidate in (digest[:32], digest[32:]):
            u = _from_bytes(candidate, "little") % _P_MPZ
            if gmpy2.jacobi(u * (u * (u + _A_MPZ) + 1) % _P_MPZ, _P_MPZ) == 1:
                return int(u).to_bytes(32, "little")
    raise CryptoError("hash to curve failed 512 times (probability 2^-512): check the hash")


def _blind_ids_chunk(scalar: bytes, salt: bytes, ids: list[str]) -> bytes:
    base = _hash_base(salt)
    exchange = X25519PrivateKey.from_private_bytes(scalar).exchange
    load = X25519PublicKey.from_public_bytes
    out = bytearray(POINT_BYTES * len(ids))
    pos = 0
    for text in ids:
        try:
            out[pos : pos + POINT_BYTES] = exchange(load(_hash_to_u(base, text.encode("utf-8"))))
        except ValueError as exc:  # one of 3 low-order curve points: probability ~2^-250
            # No ID in the message: on the bank's side it would travel to the center.
            raise CryptoError("an id hashed to a low-order point; run the PSI again") from exc
        pos += POINT_BYTES
    return bytes(out)


def _reblind_chunk(scalar: bytes, out_bytes: int, points: bytes) -> tuple[bytes, list[int]]:
    exchange = X25519PrivateKey.from_private_bytes(scalar).exchange
    load = X25519PublicKey.from_public_bytes
    n = len(points) // POINT_BYTES
    out = bytearray(out_bytes * n)
    low_order: list[int] = []
    for i in range(n):
        try:
            product = exchange(load(points[i * POINT_BYTES : (i + 1) * POINT_BYTES]))
        except ValueError:
            low_order.append(i)
            continue
        out[i * out_bytes : (i + 1) * out_bytes] = product[:out_bytes]
    return bytes(out), low_order


# --- parallel execution ------------------------------------------------------------------------

_pool: ProcessPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None
_pool_lock = threading.Lock()


def _jobs(n_jobs: int | None) -> int:
    if n_jobs is not None:
        if n_jobs < 1:
            raise DataValidationError("n_jobs", f"must be >= 1, got {n_jobs}")
        return n_jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _chunk_size(chunk_size: int | None) -> int:
    size = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    if size < 1:
        raise DataValidationError("chunk_size", f"must be >= 1, got {size}")
    return size


def _executor(workers: int) -> ProcessPoolExecutor:
    """One pool per process, reused: worker start-up (imports) costs more than small chunks."""
    global _pool, _pool_key
    key = (os.getpid(), workers)
    with _pool_lock:
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key is not None and _pool_key[0] == os.getpid():
                _pool.shutdown(wait=False, cancel_futures=True)
            context = multiprocessing.get_context(_start_method())
            _pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
            _pool_key = key
        return _pool


def _start_method() -> str | None:
    # fork when only this thread runs: it starts workers in milliseconds and, unlike forkserver
    # and spawn, never re-imports the caller's main script (a bank modeler's script without an
    # ``if __name__ == "__main__"`` guard would otherwise run again in every worker). With other
    # threads alive (Flower, gRPC) forking could copy a held lock, so use forkserver then.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else None


def shutdown_pool() -> None:
    """Stop the worker processes (they are otherwise kept for the next PSI in this process)."""
    global _pool, _pool_key
    with _pool_lock:
        if _pool is not None and _pool_key is not None and _pool_key[0] == os.getpid():
            _pool.shutdown(wait=True)
        _pool, _pool_key = None, None


def _forget_pool() -> None:
    global _pool
    with _pool_lock:
        _pool = None


def _submit(func: Callable[..., Any], fixed: tuple, pieces: list, n_jobs: int | None) -> list:
    """One pool task per piece; a pool broken by an earlier crash is replaced once."""
    for attempt in (1, 2):
        pool = _executor(_jobs(n_jobs))
        try:
            return [pool.submit(func, *fixed, piece) for piece in pieces]
        except BrokenProcessPool as exc:
            _forget_pool()
            if attempt == 2:
                raise CryptoError("the PSI worker pool cannot start") from exc
    raise AssertionError("unreachable")


def _plan(n: int, n_jobs: int | None, chunk_size: int | None) -> list[tuple[int, int]] | None:
    """Chunk spans for the pool, or ``None`` to compute in this process (small inputs, 1 core)."""
    chunk = _chunk_size(chunk_size)
    workers = _jobs(n_jobs)
    if n <= PARALLEL_MIN_POINTS or workers == 1:
        return None
    chunk = min(chunk, -(-n // workers))  # never leave a core idle for want of chunks
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def _peer_error(field: str, what: str, positions: list[int], total: int) -> InvalidPeerInputError:
    shown = ", ".join(str(p) for p in positions[:10])
    more = f", ... ({len(positions) - 10} more)" if len(positions) > 10 else ""
    error = InvalidPeerInputError(
        f"{field}: {len(positions)} of {total} {what} from the peer at position(s) {shown}{more}"
    )
    # Callers (and tests) can act on the details without parsing the message.
    error.field = field  # type: ignore[attr-defined]
    error.positions = list(positions)  # type: ignore[attr-defined]
    return error


# --- message validation ------------------------------------------------------------------------


def _require(payload: object, where: str, keys: Sequence[str]) -> dict:
    payload = require_fields(payload, where, keys)
    if payload.get("version") != VERSION and "version" in keys:
        raise ProtocolError(f"{where}: psi version {payload.get('version')!r}, expected {VERSION}")
    return payload


def _salt_field(value: object, where: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != SALT_BYTES:
        raise MalformedMessageError(f"{where}.salt: expected {SALT_BYTES} bytes")
    return value


# --- the credit center's half ------------------------------------------------------------------


class PsiCenterSide:
    """The credit center's half: drives two round trips, ends with ``center.aligned_ids``.

    Returns the aligned IDs (sorted by normalised ID; the center's own spelling), or ``None``
    when the bank chose ``reveal_to="bank"``, in which case ``center.aligned_ids`` is ``None``.
    """

    protocol = PROTOCOL

    def __init__(
        self, center: CenterParty, *, n_jobs: int | None = None, chunk_size: int | None = None
    ) -> None:
        self.center = center
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size

    def run(self, channel: ProtocolChannel) -> np.ndarray | None:
        ids = prepare_ids(self.center.table.ids, self.center.table.schema.id_col)
        center_salt = os.urandom(SALT_BYTES)
        start = _require(
            channel.request("start", {"version": VERSION, "salt": center_salt}),
            "psi/start.ok",
            ("version", "reveal_to", "salt", "n", "blinded"),
        )
        reveal_to = start["reveal_to"]
        if reveal_to not in REVEAL_MODES:
            raise ProtocolError(f"psi/start.ok: reveal_to {reveal_to!r} not in {REVEAL_MODES}")
        salt = session_salt(center_salt, _salt_field(start["salt"], "psi/start.ok"))
        n_bank = check_points(start["blinded"], "psi/start.ok.blinded")
        if start["n"] != n_bank:
            raise MalformedMessageError(f"psi/start.ok: n={start['n']!r} but {n_bank} points")

        alpha = new_scalar()
        # Both batches go to the pool before waiting on either, so the cores stay busy.
        pending_double = start_reblind(
            start["blinded"],
            alpha,
            out_bytes=MATCH_BYTES,
            field="psi/start.ok.blinded",
            n_jobs=self.n_jobs,
            chunk_size=self.chunk_size,
        )
        order = random_permutation(ids.size)
        pending_blinded = start_blind_ids(
            ids[order], alpha, salt, n_jobs=self.n_jobs, chunk_size=self.chunk_size
        )
        try:
            double = pending_double.result()
        except BaseException:
            pending_blinded.cancel()
            raise
        blinded = pending_blinded.result()
        reply = channel.request("match", {"blinded": blinded, "double": double})

        if reveal_to == "bank":
            if reply != {}:
                raise ProtocolError("psi/match.ok: bank-only mode must not send a result")
            self.center.aligned_ids = None
            return None
        reply = _require(reply, "psi/match.ok", ("size", "positions", "digest"))
        positions = _validate_positions(reply["positions"], ids.size, n_bank, reply["size"])
        rows = aligned_order(ids, order[positions])
        if intersection_digest(ids[rows]) != reply["digest"]:
            raise ProtocolError("psi/match.ok: the parties disagree about the intersection")
        self.center.aligned_ids = np.asarray(self.center.table.ids, dtype=object)[rows]
        return self.center.aligned_ids


def _validate_positions(positions: object, n_center: int, n_bank: int, size: object) -> np.ndarray:
    if not isinstance(positions, np.ndarray) or positions.ndim != 1:
        raise MalformedMessageError("psi/match.ok.positions: expected a 1-d integer array")
    if positions.dtype.kind not in "iu":
        raise MalformedMessageError("psi/match.ok.positions: expected integers")
    if size != positions.size or positions.size > min(n_center, n_bank):
        raise MalformedMessageError(f"psi/match.ok: size {size!r} inconsistent with positions")
    positions = positions.astype(np.int64)
    if positions.size and (positions.min() < 0 or positions.max() >= n_center):
        raise MalformedMessageError("psi/match.ok.positions: out of range")
    if np.unique(positions).size != positions.size:
        raise MalformedMessageError("psi/match.ok.positions: repeated positions")
    return positions


# --- the bank's half ---------------------------------------------------------------------------


class PsiBankSide:
    """The bank's half: answers ``start`` and ``match``; ends with ``bank.aligned_ids``.

    ``reveal_to`` is the bank's choice: ``"both"`` (default; later joint protocols need the
    center to know the aligned rows) or ``"bank"`` (the center learns only the bank's set size).
    The bank's own IDs are validated here, locally, so a duplicate-ID error listing the bank's
    IDs is raised in the bank's process and never sent to the center.
    """

    protocol = PROTOCOL

    def __init__(
        self,
        bank: BankParty,
        reveal_to: str = "both",
        *,
        n_jobs: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if reveal_to not in REVEAL_MODES:
            raise DataValidationError("reveal_to", f"{reveal_to!r} is not one of {REVEAL_MODES}")
        self.bank = bank
        self.reveal_to = reveal_to
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self._ids = prepare_ids(bank.table.ids, bank.table.schema.id_col)
        # Session secrets, kept between the two messages only (picklable: plain bytes/arrays).
        self._scalar: bytes | None = None
        self._order: np.ndarray | None = None

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start":
            return self._start(payload)
        if msg_type == "match":
            return self._match(payload)
        raise UnexpectedMessageError(f"psi: unexpected message {msg_type!r}")

    def _start(self, payload: Any) -> dict:
        request = _require(payload, "psi/start", ("version", "salt"))
        bank_salt = os.urandom(SALT_BYTES)
        salt = session_salt(_salt_field(request["salt"], "psi/start"), bank_salt)
        beta = new_scalar()
        order = random_permutation(self._ids.size)
        blinded = blind_ids(
            self._ids[order], beta, salt, n_jobs=self.n_jobs, chunk_size=self.chunk_size
        )
        # A repeated start (a retried session) simply replaces the previous secrets.
        self._scalar, self._order = beta, order
        return {
            "version": VERSION,
            "reveal_to": self.reveal_to,
            "salt": bank_salt,
            "n": int(self._ids.size),
            "blinded": blinded,
        }

    def _match(self, payload: Any) -> dict:
        if self._scalar is None or self._order is None:
            raise UnexpectedMessageError("psi/match before psi/start")
        request = _require(payload, "psi/match", ("blinded", "double"))
        n_center = check_points(request["blinded"], "psi/match.blinded")
        double = request["double"]
        if not isinstance(double, bytes) or len(double) != MATCH_BYTES * self._ids.size:
            raise MalformedMessageError(
                f"psi/match.double: expected {MATCH_BYTES * self._ids.size} bytes"
            )
        mine = reblind(
            request["blinded"],
            self._scalar,
            out_bytes=MATCH_BYTES,
            field="psi/match.blinded",
            n_jobs=self.n_jobs,
            chunk_size=self.chunk_size,
        )
        pos_center, pos_bank = find_matches(
            mine, double, names=("psi/match.blinded", "psi/match.double")
        )
        rows = aligned_order(self._ids, self._order[pos_bank])
        # Verified and computed: only now does the bank's state change.
        self.bank.aligned_ids = np.asarray(self.bank.table.ids, dtype=object)[rows]
        self._scalar = self._order = None
        if self.reveal_to == "bank":
            return {}
        dtype = np.uint32 if n_center < 2**32 else np.int64
        return {
            "size": int(pos_center.size),
            "positions": np.sort(pos_center).astype(dtype),
            "digest": intersection_digest(self._ids[rows]),
        }


def _bank_factory(bank: BankParty, params: dict) -> PsiBankSide:
    """Build the bank half from job parameters, withholding ID values from errors sent across.

    When a deployment builds the half on the first message, an exception here travels to the
    center; the full error (with the bank's duplicate IDs) is logged on the bank's side only.
    """
    try:
        return PsiBankSide(bank, **params)
    except DuplicateIdentifierError as exc:
        _log.error("psi: the bank's table failed validation: %s", exc)
        raise DataValidationError(
            exc.field,
            f"{len(exc.duplicates)} duplicated id(s) in the bank's table (values withheld)",
        ) from None


registry.register(PROTOCOL, center=PsiCenterSide, bank=_bank_factory)
