"""Encryption workers for hetero LR under CKKS: the credit center's masks and the bank's
coefficient columns, made on the idle core.

Every ciphertext the center returns in hetero LR is re-randomized by adding a *fresh* public-key
encryption of its mask plus flooding noise (see ``_CkksCenter._finish`` in ``linear.py``). That
encryption, made at the last level, costs about 4 ms, and a mini-batch needs one per returned
ciphertext. The masks do not depend on any data, so a worker process can encrypt the next
batch's masks while the center computes on this one. TenSEAL holds the GIL, which rules out a
thread; the center's worker holds the bank's *public* context only.

The pool hands out ``(mus, ciphertext)`` pairs: the ciphertext encrypts, in each of its
``blocks`` equal blocks, ``zero_sum + mu / block_size + noise`` where ``zero_sum`` sums to zero
over the block, so adding it changes each block sum by exactly its ``mu``; the center keeps the
``mus`` (zeros for results whose block sums the bank may read directly).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

_WORKER: dict[str, Any] = {}


def _peer_init(public: bytes) -> None:
    from jointcredit.crypto.ckks import CKKSPeer, SealEvaluator

    _WORKER["seal"] = SealEvaluator(CKKSPeer.from_public_bytes(public, n_threads=1))


def _owner_init(owner: bytes) -> None:
    from jointcredit.crypto.ckks import CKKSKeyOwner, SeededEncryptor

    key_owner = CKKSKeyOwner.from_bytes(owner, n_threads=1)
    _WORKER["owner"] = key_owner
    _WORKER["seeded"] = SeededEncryptor(key_owner)


def _encrypt_masks(
    scale: float, count: int, blocks: int, with_mu: bool, slot_mask: float, noise_std: float
) -> list[tuple[list[float], bytes]]:
    from jointcredit.learn.linear import encrypt_masks

    seal = _WORKER["seal"]
    made = encrypt_masks(seal, scale, count, blocks, with_mu, slot_mask, noise_std)
    return [(mus, seal.dump_raw(ct)) for mus, ct in made]


def encrypt_column(owner: Any, seeded: Any, column: list[float]) -> bytes:
    """One serialized TenSEAL vector of ``column`` (at most ``slots`` values): secret-key
    seeded encryption when this TenSEAL supports it (~40 % cheaper, half the bytes), else the
    owner's public-key encryption."""
    if seeded is not None and seeded.ok:
        return seeded.encrypt(np.asarray(column, dtype=np.float64))
    return owner.encrypt(column)[0].serialize()


def _encrypt_columns(columns: list[list[float]]) -> list[bytes]:
    return [encrypt_column(_WORKER["owner"], _WORKER["seeded"], c) for c in columns]


def start_worker(initializer: Any, context: bytes) -> tuple[ProcessPoolExecutor, Future]:
    """One worker process set up by ``initializer(context)``, and a future that completes once
    it is up."""
    methods = multiprocessing.get_all_start_methods()
    # forkserver: no fork of a process that may run gRPC / TenSEAL threads (a Flower worker),
    # and much cheaper than spawn after the first pool
    method = "forkserver" if "forkserver" in methods else "spawn"
    executor = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context(method),
        initializer=initializer,
        initargs=(context,),
    )
    started: Future = Future()

    def launch() -> None:
        # launching blocks ~0.5 s on the forkserver; the caller keeps computing meanwhile
        try:
            executor.submit(int).add_done_callback(lambda done: _settle(started, done))
        except Exception as exc:  # noqa: BLE001 - reported through the future
            started.set_exception(exc)

    threading.Thread(target=launch, name="jointcredit-worker-launch", daemon=True).start()
    return executor, started


def _settle(target: Future, done: Future) -> None:
    if done.cancelled():  # the pool closed before its worker came up
        target.cancel()
        return
    exc = done.exception()
    if exc is None:
        target.set_result(True)
    else:
        target.set_exception(exc)


class ColumnEncryptor:
    """The bank's helper: encrypts some columns of a matrix in a worker process while the
    caller encrypts the others (each CKKS encryption + serialization costs ~5 ms). The worker
    is the bank's own process and holds its secret context (``CKKSKeyOwner.to_bytes``): the
    seeded encryption is a secret-key one."""

    def __init__(self, owner: bytes) -> None:
        self._executor, self._started = start_worker(_owner_init, owner)
        self.submitted = 0  # columns handed to the worker (for tests and benchmarks)

    @property
    def ready(self) -> bool:
        """Whether the worker is up (until then the caller encrypts everything itself: waiting
        for a starting process would cost more than it saves)."""
        return self._started.done()

    def submit(self, columns: list[list[float]]) -> Future:
        self.submitted += len(columns)
        return self._executor.submit(_encrypt_columns, columns)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


#: Masks per worker task: small enough that finished ones are usable while others are pending.
_CHUNK = 4


class MaskEncryptionPool:
    """One worker process that keeps a batch's worth of mask encryptions in stock per kind.

    A kind is ``(scale, blocks, with_mu)``. :meth:`take` never blocks on the worker: it uses
    the encryptions the worker has finished and lets the caller make the rest itself, then
    (once the worker is up) orders enough new ones to cover the next request of that size. The worker therefore takes
    as large a share as it can keep up with, and the main process never idles waiting for it.
    """

    def __init__(self, public: bytes, *, slot_mask: float, noise_std: float) -> None:
        self._executor, self._started = start_worker(_peer_init, public)
        self._slot_mask = float(slot_mask)
        self._noise_std = float(noise_std)
        self._pending: dict[tuple[float, int, bool], deque[Future]] = {}
        self._stock: dict[tuple[float, int, bool], list[tuple[list[float], bytes]]] = {}
        self.made_by_worker = 0

    @property
    def ready(self) -> bool:
        """Whether the worker is up (until then :meth:`take` orders nothing)."""
        return self._started.done()

    def take(
        self, scale: float, count: int, blocks: int, with_mu: bool
    ) -> list[tuple[list[float], bytes]]:
        """Up to ``count`` ready ``(mus, ciphertext)`` pairs (possibly none); each ciphertext is
        SEAL's serialization of a last-level encryption at ``scale`` with ``blocks`` blocks."""
        kind = (float(scale), int(blocks), bool(with_mu))
        pending = self._pending.setdefault(kind, deque())
        stock = self._stock.setdefault(kind, [])
        while pending and pending[0].done():
            stock.extend(pending.popleft().result())
        ready, self._stock[kind] = stock[:count], stock[count:]
        if not self.ready:
            return ready  # the caller makes them all until the worker is up
        in_stock = len(self._stock[kind]) + _CHUNK * len(pending)
        for _ in range(max(0, -(-(count - in_stock) // _CHUNK))):
            pending.append(
                self._executor.submit(
                    _encrypt_masks,
                    kind[0],
                    _CHUNK,
                    kind[1],
                    kind[2],
                    self._slot_mask,
                    self._noise_std,
                )  # fmt: skip
            )
        self.made_by_worker += len(ready)
        return ready

    def close(self) -> None:
        for pending in self._pending.values():
            for future in pending:
                future.cancel()
        self._pending.clear()
        self._stock.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
