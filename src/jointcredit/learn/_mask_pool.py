"""Fresh CKKS encryptions of the credit center's random masks, made ahead on the idle core.

Every ciphertext the center returns in hetero LR is re-randomized by adding a *fresh* public-key
encryption of its mask plus flooding noise (see ``_CkksCenter._finish`` in ``linear.py``). That
encryption costs about 6 ms, and a mini-batch needs one per feature of both parties: more than a
third of training time on default_credit. The masks do not depend on any data, so a worker
process can encrypt the next batch's masks while the center computes on this one. TenSEAL holds
the GIL, which rules out a thread; the worker holds the bank's *public* context only.

The pool hands out ``(mu, vector)`` pairs: ``vector`` encrypts ``zero_sum + mu / slots + noise``
where ``zero_sum`` sums to zero over the slots, so adding it changes a slot-sum by exactly
``mu``; the center keeps ``mu`` (0 for results whose slot-sums the bank may read directly).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

_WORKER: dict[str, Any] = {}


def _worker_init(public: bytes) -> None:
    from jointcredit.crypto.ckks import CKKSPeer

    _WORKER["peer"] = CKKSPeer.from_public_bytes(public, n_threads=1)


def _encrypt_masks(
    scale: float, count: int, with_mu: bool, slot_mask: float, noise_std: float
) -> tuple[list[float], list[bytes]]:
    import tenseal as ts

    from jointcredit.learn.linear import _gaussian, _uniform, _zero_sum

    peer = _WORKER["peer"]
    slots = peer.slots
    mus = _uniform(count, slot_mask * slots) if with_mu else np.zeros(count)
    out = []
    for mu in mus:
        mask = _zero_sum(slots, slot_mask) + mu / slots
        if noise_std > 0:
            mask = mask + _gaussian(slots, noise_std)
        out.append(ts.ckks_vector(peer.context, mask.tolist(), scale=scale).serialize())
    return [float(m) for m in mus], out


class MaskEncryptionPool:
    """One worker process that keeps one batch of mask encryptions ready per request shape.

    A request shape is ``(scale, count, with_mu)``; the first request of a shape is computed on
    demand, and each :meth:`take` immediately orders the next batch of the same shape.
    """

    def __init__(self, public: bytes, *, slot_mask: float, noise_std: float) -> None:
        methods = multiprocessing.get_all_start_methods()
        # forkserver: no fork of a process that may run gRPC / TenSEAL threads (the center's
        # Flower worker), and much cheaper than spawn after the first pool
        method = "forkserver" if "forkserver" in methods else "spawn"
        self._executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context(method),
            initializer=_worker_init,
            initargs=(public,),
        )
        self._slot_mask = float(slot_mask)
        self._noise_std = float(noise_std)
        self._ready: dict[tuple[float, int, bool], deque[Future]] = {}

    def _order(self, shape: tuple[float, int, bool]) -> Future:
        scale, count, with_mu = shape
        return self._executor.submit(
            _encrypt_masks, scale, count, with_mu, self._slot_mask, self._noise_std
        )

    def take(
        self, context: Any, scale: float, count: int, with_mu: bool
    ) -> list[tuple[float, Any]]:
        """``count`` fresh ``(mu, vector)`` pairs linked to ``context`` (the center's own)."""
        import tenseal as ts

        shape = (float(scale), int(count), bool(with_mu))
        queue = self._ready.setdefault(shape, deque())
        future = queue.popleft() if queue else self._order(shape)
        queue.append(self._order(shape))
        mus, blobs = future.result()
        return [(mu, ts.ckks_vector_from(context, b)) for mu, b in zip(mus, blobs, strict=True)]

    def close(self) -> None:
        for queue in self._ready.values():
            for future in queue:
                future.cancel()
        self._ready.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
