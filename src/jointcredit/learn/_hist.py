"""Plaintext building blocks of SecureBoost shared by both parties and by the reference mode.

Everything here is deterministic arithmetic that must come out *identical* on the bank, on the
credit center and in the ``backend="plain"`` reference run, so it lives in one place:

* quantile binning (:class:`BinMapper`): ``max_bin`` value bins per feature plus one missing bin;
* the fixed-point packing of a sample's gradient and hessian into one integer
  (:class:`GHPacking`), sized so that sums over every sample of a job never carry between slots;
* which split candidates a histogram yields (:func:`candidate_specs`) — decided from bin *counts*
  only, so the center (counts in the clear, sums encrypted) and the bank (everything in the
  clear) enumerate the same candidates in the same order;
* split gain / leaf weight (:func:`split_gains`, :func:`choose_split`);
* the ciphertext-histogram arithmetic the center runs, written once for "``mod`` = n^2"
  (Paillier: multiply) and "``mod`` = None" (reference mode: add), including the worker
  processes that spread it over the center's cores (:class:`HistogramEngine`).
"""

from __future__ import annotations

import math
import multiprocessing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jointcredit.errors import DataValidationError, EncodingOverflowError

# --------------------------------------------------------------------------------------------
# binning
# --------------------------------------------------------------------------------------------


def quantile_edges(values: np.ndarray, max_bin: int) -> np.ndarray:
    """Upper bin edges (``len = n_value_bins - 1``) of an equal-frequency binning.

    Greedy over distinct values, re-targeting the remaining rows after each cut, so a heavy tie
    (e.g. 60 % zeros) takes one bin and the other bins still share the rest evenly. A value
    ``x`` falls in bin ``b`` iff ``edges[b-1] < x <= edges[b]``; missing values get their own
    bin (see :class:`BinMapper`).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return np.empty(0, dtype=np.float64)
    vals, counts = np.unique(x, return_counts=True)
    if vals.size == 1:
        return np.empty(0, dtype=np.float64)
    if vals.size <= max_bin:
        cut_idx = np.arange(vals.size - 1)
    else:
        cum = np.cumsum(counts)
        total = int(cum[-1])
        cuts: list[int] = []
        consumed, i, bins_left = 0, 0, max_bin
        while bins_left > 1 and i < vals.size - 1:
            target = (total - consumed) / bins_left
            j = int(np.searchsorted(cum, consumed + target, side="left"))
            # the closer of j-1 / j to the target keeps bins balanced around heavy values
            if j > i and (consumed + target) - cum[j - 1] < cum[j] - (consumed + target):
                j -= 1
            j = min(max(j, i), vals.size - 2)
            cuts.append(j)
            consumed, i, bins_left = int(cum[j]), j + 1, bins_left - 1
        cut_idx = np.asarray(cuts, dtype=np.int64)
    lo, hi = vals[cut_idx], vals[cut_idx + 1]
    mid = lo + (hi - lo) / 2.0
    # adjacent floats: the midpoint may round up to hi; the lower value keeps "x <= edge" exact
    return np.where(mid < hi, mid, lo)


@dataclass
class BinMapper:
    """Per-feature quantile edges; bin ``n_value_bins[f]`` of feature ``f`` is its missing bin."""

    edges: list[np.ndarray]

    @classmethod
    def fit(cls, X: np.ndarray, max_bin: int) -> BinMapper:
        X = np.asarray(X, dtype=np.float64)
        return cls([quantile_edges(X[:, j], max_bin) for j in range(X.shape[1])])

    @property
    def n_value_bins(self) -> np.ndarray:
        return np.asarray([e.size + 1 for e in self.edges], dtype=np.int64)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        out = np.empty(X.shape, dtype=np.int16)
        for j, e in enumerate(self.edges):
            col = X[:, j]
            b = np.searchsorted(e, col, side="left")
            b[np.isnan(col)] = e.size + 1
            out[:, j] = b
        return out

    def threshold(self, feature: int, t: int) -> float:
        """Raw-value threshold of candidate bin ``t`` (``-inf`` for "missing only goes left")."""
        return float("-inf") if t < 0 else float(self.edges[feature][t])


def goes_left(values: np.ndarray, threshold: float, missing_left: bool) -> np.ndarray:
    """Routing rule of every split, bank or center: ``x <= threshold``, NaN by ``missing_left``."""
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    with np.errstate(invalid="ignore"):
        left = values <= threshold
    return np.where(nan, bool(missing_left), left)


# --------------------------------------------------------------------------------------------
# packing of (g, h) into one non-negative integer per sample
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GHPacking:
    """Fixed-point layout ``[g + offset | h]`` of one sample's gradient pair.

    ``g`` (in ``[-g_bound, g_bound]``) is shifted by ``offset = ceil(g_bound * 2^frac_bits)`` so
    that every slot is non-negative; ``h`` is in ``[0, h_bound]``. Slot widths hold the sum over
    ``max_terms`` samples, so sums (histogram bins, cumulative sums, sibling differences) never
    carry from the ``h`` slot into the ``g`` slot. The offset of a sum of ``k`` samples is
    ``k * offset``; the center ships ``k`` (it knows the counts anyway) so the bank removes it.
    """

    frac_bits: int
    g_bound: float
    h_bound: float
    max_terms: int

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def offset(self) -> int:
        return math.ceil(self.g_bound * self.scale)

    @property
    def h_max(self) -> int:
        return math.ceil(self.h_bound * self.scale)

    @property
    def h_bits(self) -> int:
        return (self.h_max * self.max_terms).bit_length()

    @property
    def g_bits(self) -> int:
        return (2 * self.offset * self.max_terms).bit_length()

    @property
    def slot_bits(self) -> int:
        """Width of one packed record (what :func:`compress` shifts by)."""
        return self.g_bits + self.h_bits

    def quantize(self, g: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``round(x * 2^frac_bits)`` as int64, refusing values outside the declared bounds."""
        g = np.asarray(g, dtype=np.float64)
        h = np.asarray(h, dtype=np.float64)
        if not (np.isfinite(g).all() and np.isfinite(h).all()):
            raise EncodingOverflowError("gradients: NaN or infinite value")
        gq = np.rint(g * self.scale).astype(np.int64)
        hq = np.rint(h * self.scale).astype(np.int64)
        if gq.size and int(np.abs(gq).max()) > self.offset:
            raise EncodingOverflowError(
                f"gradients: |g| = {np.abs(g).max():.6g} exceeds the packing bound {self.g_bound}"
            )
        if hq.size and (int(hq.min()) < 0 or int(hq.max()) > self.h_max):
            raise EncodingOverflowError(
                f"hessians: values must lie in [0, {self.h_bound}], got "
                f"[{h.min():.6g}, {h.max():.6g}]"
            )
        return gq, hq

    def pack(self, gq: np.ndarray, hq: np.ndarray) -> list[int]:
        """One non-negative integer per sample; refuses more samples than ``max_terms``."""
        gq = np.asarray(gq, dtype=np.int64)
        hq = np.asarray(hq, dtype=np.int64)
        if gq.shape != hq.shape or gq.ndim != 1:
            raise ValueError("gq, hq: expected two 1-D arrays of equal length")
        if gq.size > self.max_terms:
            raise EncodingOverflowError(
                f"gradients: {gq.size} samples exceed the {self.max_terms} the slots are sized for"
            )
        if gq.size and (
            int(np.abs(gq).max()) > self.offset or int(hq.min()) < 0 or int(hq.max()) > self.h_max
        ):
            raise EncodingOverflowError("gradients: quantized value outside the packing bounds")
        shifted = gq + self.offset
        if self.slot_bits <= 62:
            return ((shifted << self.h_bits) | hq).tolist()
        hb = self.h_bits
        return [(int(a) << hb) | int(b) for a, b in zip(shifted.tolist(), hq.tolist(), strict=True)]

    def unpack_sums(
        self, packed: Sequence[int], counts: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Quantized ``(G, H)`` sums from packed sums of ``counts[i]`` samples each."""
        hb = self.h_bits
        mask = (1 << hb) - 1
        counts = np.asarray(counts, dtype=np.int64)
        if len(packed) != counts.size:
            raise ValueError("packed, counts: lengths differ")
        if counts.size and (counts.min() < 0 or counts.max() > self.max_terms):
            raise EncodingOverflowError("counts: outside [0, max_terms]")
        G = np.empty(counts.size, dtype=np.int64)
        H = np.empty(counts.size, dtype=np.int64)
        off = self.offset
        for i, (v, k) in enumerate(zip(packed, counts.tolist(), strict=True)):
            v = int(v)
            if v < 0 or v.bit_length() > self.slot_bits:
                raise EncodingOverflowError(
                    f"packed[{i}]: value outside the {self.slot_bits}-bit record"
                )
            g_shifted = v >> hb
            if g_shifted > 2 * off * k:
                raise EncodingOverflowError(f"packed[{i}]: g slot larger than {k} samples allow")
            G[i] = g_shifted - k * off
            H[i] = v & mask
        return G, H


# --------------------------------------------------------------------------------------------
# split candidates and gains
# --------------------------------------------------------------------------------------------


def candidate_specs(
    bin_counts: np.ndarray, n_value_bins: int, min_child_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(t, missing_left)`` of every distinct, admissible split of one feature in one node.

    ``bin_counts`` has ``n_value_bins + 1`` entries (the last is the missing bin). Candidate
    ``(t, False)`` sends bins ``0..t`` left and missing right; ``(t, True)`` also sends missing
    left; ``(-1, True)`` sends only missing left. Empty bins would repeat the previous partition
    and are skipped; both children need ``min_child_samples`` rows. Decided from counts alone,
    so both parties enumerate the same list in the same order.
    """
    counts = np.asarray(bin_counts, dtype=np.int64)
    value = counts[:n_value_bins]
    miss = int(counts[n_value_bins])
    total_value = int(value.sum())
    node = total_value + miss
    cum = np.cumsum(value)
    ts = np.flatnonzero((value > 0) & (cum < total_value))
    left_r = cum[ts]
    t_out = [ts[(left_r >= min_child_samples) & (node - left_r >= min_child_samples)]]
    ml_out = [np.zeros(t_out[0].size, dtype=bool)]
    if miss > 0 and total_value > 0:
        ts_l = np.concatenate([[-1], ts])
        left_l = np.concatenate([[0], cum[ts]]) + miss
        keep = (left_l >= min_child_samples) & (node - left_l >= min_child_samples)
        t_out.append(ts_l[keep])
        ml_out.append(np.ones(int(keep.sum()), dtype=bool))
    return np.concatenate(t_out).astype(np.int64), np.concatenate(ml_out)


def plain_candidate_sums(
    bin_g: np.ndarray,
    bin_h: np.ndarray,
    bin_n: np.ndarray,
    n_value_bins: int,
    ts: np.ndarray,
    missing_left: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-child sums of the given candidates from one feature's plaintext histogram."""
    out = []
    for arr in (bin_g, bin_h, bin_n):
        arr = np.asarray(arr, dtype=np.int64)
        cum = np.concatenate([[0], np.cumsum(arr[:n_value_bins])])
        out.append(cum[ts + 1] + np.where(missing_left, arr[n_value_bins], 0))
    return out[0], out[1], out[2]


def split_gains(
    GL: np.ndarray, HL: np.ndarray, G: float, H: float, reg_lambda: float
) -> np.ndarray:
    """Loss reduction ``GL²/(HL+λ) + GR²/(HR+λ) − G²/(H+λ)`` (float inputs, real units)."""
    GR = G - GL
    HR = H - HL
    return GL**2 / (HL + reg_lambda) + GR**2 / (HR + reg_lambda) - G**2 / (H + reg_lambda)


@dataclass(frozen=True)
class SplitChoice:
    source: int  # index into the candidate blocks passed to choose_split
    index: int  # candidate index within that block
    gain: float
    GL: int
    HL: int
    nL: int


def choose_split(
    blocks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    node: tuple[int, int, int],
    *,
    scale: int,
    reg_lambda: float,
    min_child_weight: float,
    min_child_samples: int,
    min_split_gain: float,
) -> SplitChoice | None:
    """Best admissible split over candidate blocks of quantized left sums ``(GL, HL, nL)``.

    Ties are broken without looking at the order inside a block (the center's block is
    shuffled): highest gain, then earlier block (the bank's own features come first: a bank
    split leaks nothing about the center), then the smallest ``(nL, GL, HL)``.
    """
    Gq, Hq, n = node
    G, H = Gq / scale, Hq / scale
    best: tuple | None = None
    for src, (GL, HL, nL) in enumerate(blocks):
        GL = np.asarray(GL, dtype=np.int64)
        HL = np.asarray(HL, dtype=np.int64)
        nL = np.asarray(nL, dtype=np.int64)
        if GL.size == 0:
            continue
        hl = HL / scale
        ok = (
            (nL >= min_child_samples)
            & (n - nL >= min_child_samples)
            & (hl >= min_child_weight)
            & (H - hl >= min_child_weight)
        )
        if not ok.any():
            continue
        gains = np.where(ok, split_gains(GL / scale, hl, G, H, reg_lambda), -np.inf)
        top = gains.max()
        idx = np.flatnonzero(gains == top)
        if idx.size > 1:
            order = np.lexsort((HL[idx], GL[idx], nL[idx]))
            idx = idx[order]
        i = int(idx[0])
        key = (float(top), -src, -int(nL[i]), -int(GL[i]), -int(HL[i]))
        if best is None or key > best[0]:
            best = (key, SplitChoice(src, i, float(top), int(GL[i]), int(HL[i]), int(nL[i])))
    if best is None or not best[1].gain > min_split_gain:
        return None
    return best[1]


def leaf_weight(G: float, H: float, reg_lambda: float) -> float:
    return -G / (H + reg_lambda)


# --------------------------------------------------------------------------------------------
# ciphertext-histogram arithmetic (mod = n^2: Paillier; mod = None: reference mode)
# --------------------------------------------------------------------------------------------


def identity(mod: int | None) -> int:
    """Neutral element: 1 (the trivial encryption of zero) or 0 (plain sum)."""
    return 0 if mod is None else 1


def combine(a: int, b: int, mod: int | None) -> int:
    return a + b if mod is None else a * b % mod


def bin_sums(
    cts: Sequence[Any],
    positions: np.ndarray,
    bins: np.ndarray,
    n_slots: int,
    skip: int,
    mod: int | None,
) -> list[Any]:
    """Per-bin aggregate of ``cts[positions]`` grouped by ``bins``; bin ``skip`` left ``None``.

    The caller derives the skipped (largest) bin from the node total, which saves one ciphertext
    multiplication per row of that bin.
    """
    one = identity(mod)
    out: list[Any] = [one] * n_slots
    if positions.size == 0:
        if 0 <= skip < n_slots:
            out[skip] = None
        return out
    order = np.argsort(bins, kind="stable")
    sorted_bins = bins[order]
    pos = positions[order].tolist()
    bounds = np.searchsorted(sorted_bins, np.arange(n_slots + 1), side="left").tolist()
    for b in range(n_slots):
        if b == skip:
            out[b] = None
            continue
        lo, hi = bounds[b], bounds[b + 1]
        if lo == hi:
            continue
        acc = cts[pos[lo]]
        if mod is None:
            for p in pos[lo + 1 : hi]:
                acc = acc + cts[p]
        else:
            for p in pos[lo + 1 : hi]:
                acc = acc * cts[p] % mod
        out[b] = acc
    return out


def batch_inverse(values: Sequence[Any], mod: int | None) -> list[Any]:
    """Inverses of many values with one modular inversion (Montgomery's trick)."""
    if mod is None:
        return [-v for v in values]
    import gmpy2

    if not values:
        return []
    prefix = [values[0]]
    for v in values[1:]:
        prefix.append(prefix[-1] * v % mod)
    inv = gmpy2.invert(prefix[-1], mod)
    out: list[Any] = [None] * len(values)
    for i in range(len(values) - 1, 0, -1):
        out[i] = inv * prefix[i - 1] % mod
        inv = inv * values[i] % mod
    out[0] = inv
    return out


def compress_records(cts: Sequence[Any], slot_bits: int, per: int, mod: int | None) -> list[Any]:
    """Horner packing, first value in the most significant slot (as ``paillier.compress``)."""
    out = []
    for start in range(0, len(cts), per):
        group = cts[start : start + per]
        acc = group[0]
        if mod is None:
            for c in group[1:]:
                acc = (acc << slot_bits) + c
        else:
            import gmpy2

            shift = gmpy2.mpz(1) << slot_bits
            for c in group[1:]:
                acc = gmpy2.powmod(acc, shift, mod) * c % mod
        out.append(acc)
    return out


def decompress_plain(packed: Sequence[int], slot_bits: int, per: int, count: int) -> list[int]:
    """Reference-mode twin of ``paillier.decompress_ints`` (same order and overflow check)."""
    expected = math.ceil(count / per) if count else 0
    if len(packed) != expected:
        raise ValueError(f"packed: {count} values need {expected} records, got {len(packed)}")
    mask = (1 << slot_bits) - 1
    out: list[int] = []
    for i, m in enumerate(packed):
        k = min(per, count - i * per)
        m = int(m)
        if m < 0 or m.bit_length() > k * slot_bits:
            raise EncodingOverflowError(f"packed[{i}]: wider than {k} slots of {slot_bits} bits")
        out.extend((m >> (slot_bits * (k - 1 - j))) & mask for j in range(k))
    return out


def cts_from_bytes(data: bytes, width: int) -> list[Any]:
    """Fixed-width big-endian integers (no validation: the caller validated the blob)."""
    import gmpy2

    mv = memoryview(data)
    return [gmpy2.mpz.from_bytes(mv[i : i + width], "big") for i in range(0, len(data), width)]


# --------------------------------------------------------------------------------------------
# the center's worker processes
# --------------------------------------------------------------------------------------------


def _worker_main(conn: Any) -> None:
    """Worker loop: holds one shard of the current tree's ciphertexts and their bins."""
    cts: list[Any] = []
    bins: np.ndarray | None = None
    mod: int | None = None
    while True:
        msg = conn.recv()
        op = msg[0]
        try:
            if op == "stop":
                conn.send(("ok", None))
                return
            if op == "tree":
                _, mod_, blob, width, shard_bins = msg
                mod = None if mod_ is None else _as_mpz(mod_)
                cts = cts_from_bytes(blob, width) if mod is not None else _plain_from(blob, width)
                bins = shard_bins
                conn.send(("ok", None))
            elif op == "hist":
                _, tasks = msg
                assert bins is not None
                result = []
                for positions, feats, n_slots, skips in tasks:
                    result.append(
                        [
                            bin_sums(cts, positions, bins[positions, f], int(ns), int(sk), mod)
                            for f, ns, sk in zip(feats, n_slots, skips, strict=True)
                        ]
                    )
                conn.send(("ok", result))
            elif op == "compress":
                _, mod_, groups, slot_bits, per = msg
                m = None if mod_ is None else _as_mpz(mod_)
                conn.send(("ok", [compress_records(g, slot_bits, per, m) for g in groups]))
            else:
                conn.send(("error", f"unknown op {op!r}"))
        except Exception as exc:  # report to the parent instead of dying silently
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _as_mpz(v: int) -> Any:
    import gmpy2

    return gmpy2.mpz(v)


def _plain_from(blob: bytes, width: int) -> list[int]:
    return [int.from_bytes(blob[i : i + width], "big") for i in range(0, len(blob), width)]


class HistogramEngine:
    """The center's ciphertext histogram builder, on ``n_jobs`` worker processes.

    Rows of the current tree are split into contiguous shards, one per worker; a level's
    histograms are built shard by shard in parallel and the partial bins combined in the parent
    (a few hundred multiplications). ``n_jobs = 1`` runs the same functions in-process. Worker
    messages are local pickles between the center's own processes, never the wire.
    """

    def __init__(self, n_jobs: int, mod: int | None, start_method: str | None = None) -> None:
        self.n_jobs = max(1, int(n_jobs))
        self.mod = mod
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._shards: list[tuple[int, int]] = []
        self._cts: list[Any] = []
        self._bins: np.ndarray | None = None
        if self.n_jobs > 1:
            if start_method is None:
                methods = multiprocessing.get_all_start_methods()
                start_method = "forkserver" if "forkserver" in methods else "spawn"
            ctx = multiprocessing.get_context(start_method)
            for _ in range(self.n_jobs):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
                proc.start()
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop",))
                conn.recv()
            except (OSError, EOFError):
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._procs, self._conns = [], []

    def __enter__(self) -> HistogramEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ask(self, conn: Any) -> Any:
        status, value = conn.recv()
        if status != "ok":
            raise RuntimeError(f"histogram worker failed: {value}")
        return value

    def load_tree(self, cts: list[Any], blob: bytes, width: int, bins: np.ndarray) -> None:
        """Ciphertexts of this tree's rows (``bins`` rows in the same order)."""
        self._cts = cts
        self._bins = bins
        n = len(cts)
        if not self._conns:
            self._shards = [(0, n)]
            return
        k = len(self._conns)
        self._shards = [(n * i // k, n * (i + 1) // k) for i in range(k)]
        try:
            for conn, (lo, hi) in zip(self._conns, self._shards, strict=True):
                mod = None if self.mod is None else int(self.mod)
                conn.send(("tree", mod, blob[lo * width : hi * width], width, bins[lo:hi]))
            for conn in self._conns:
                self._ask(conn)
        except (EOFError, OSError) as exc:
            # workers died (typically: a script without an ``if __name__ == "__main__":``
            # guard, re-imported by the forkserver); the same work runs in-process instead
            warnings.warn(
                f"histogram workers unavailable ({type(exc).__name__}); continuing in-process",
                RuntimeWarning,
                stacklevel=2,
            )
            self.close()
            self._shards = [(0, n)]

    def build(
        self, nodes: Sequence[np.ndarray], n_slots: np.ndarray, skips: Sequence[np.ndarray]
    ) -> list[list[list[Any]]]:
        """For each node (positions into this tree's rows, sorted), per feature, per bin."""
        feats = list(range(len(n_slots)))
        if not self._conns:
            assert self._bins is not None
            return [
                [
                    bin_sums(
                        self._cts, pos, self._bins[pos, f], int(n_slots[f]), int(sk[f]), self.mod
                    )
                    for f in feats
                ]
                for pos, sk in zip(nodes, skips, strict=True)
            ]
        for conn, (lo, hi) in zip(self._conns, self._shards, strict=True):
            tasks = []
            for pos, sk in zip(nodes, skips, strict=True):
                a, b = np.searchsorted(pos, [lo, hi])
                tasks.append((pos[a:b] - lo, feats, n_slots, sk))
            conn.send(("hist", tasks))
        parts = [self._ask(conn) for conn in self._conns]
        out = parts[0]
        mod = self.mod
        for other in parts[1:]:
            for node_out, node_other in zip(out, other, strict=True):
                for f_out, f_other in zip(node_out, node_other, strict=True):
                    for b, v in enumerate(f_other):
                        if v is not None:
                            f_out[b] = combine(f_out[b], v, mod)
        return out

    def compress(self, groups: list[list[Any]], slot_bits: int, per: int) -> list[list[Any]]:
        """:func:`compress_records` of each group, chunks spread over the workers."""
        if not self._conns:
            return [compress_records(g, slot_bits, per, self.mod) for g in groups]
        chunks: list[tuple[int, list[Any]]] = []
        for gi, g in enumerate(groups):
            step = per * max(1, math.ceil(len(g) / per / (2 * len(self._conns))))
            for s in range(0, len(g), step):
                chunks.append((gi, g[s : s + step]))
        k = len(self._conns)
        assignments = [chunks[i::k] for i in range(k)]
        mod = None if self.mod is None else int(self.mod)
        for conn, mine in zip(self._conns, assignments, strict=True):
            conn.send(("compress", mod, [c for _, c in mine], slot_bits, per))
        results = [self._ask(conn) for conn in self._conns]
        out: list[list[Any]] = [[] for _ in groups]
        # reassemble in the original chunk order
        by_worker = [iter(r) for r in results]
        for i, (gi, _) in enumerate(chunks):
            out[gi].extend(next(by_worker[i % k]))
        return out


def check_positive_int(
    name: str, value: Any, *, minimum: int = 1, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataValidationError(name, f"must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise DataValidationError(name, f"must be {rng}, got {value}")
    return value


def check_real(
    name: str,
    value: Any,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataValidationError(name, f"must be a number, got {type(value).__name__}")
    v = float(value)
    bad = not math.isfinite(v) or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        lo = ("(" if low_open else "[") + f"{low}"
        hi = (f"{high}" + (")" if high_open else "]")) if high is not None else "inf)"
        raise DataValidationError(name, f"must be in {lo}, {hi}, got {value!r}")
    return v
