"""Federated binning with WOE / IV: protocol ``"binning"`` (both halves) and :class:`FederatedBinning`.

The credit center bins its own features locally; the bank's labels reach it only under the
bank's Paillier key; the bank learns per-bin bad and total counts of the center's features (bin
order shuffled, cut points never sent) and computes WOE / IV. Bank features are binned locally in
the clear. See ``docs/protocols/binning.md`` for the message-by-message description.

Messages (the center drives)::

    center -> bank  start    {n_aligned, features: [{name, category}]}        catalogue metadata
    bank -> center  start.ok {model_id, rows, max_bins, min_bin_fraction, monotonic,
                              center_features, backend, public_key, labels}    Enc(y) per row
    center -> bank  counts   {features: [{name, category, kind, labels, kinds, codes, totals,
                              order}], slot_bits, events}                      Enc(bads per bin)
    bank -> center  counts.ok {merges: {feature: [[label, ...], ...]}}         optional merging

``labels`` are per-feature random relabelings of the bins, so the bank sees a histogram without
its order. ``order`` (the labels of the numeric bins in increasing value order) is sent only when
the bank asked for monotonic merging, which needs it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.errors import (
    DataValidationError,
    MalformedMessageError,
    ProtocolError,
    UnexpectedMessageError,
)
from jointcredit.learn._bins import (
    MISSING,
    NUMERIC,
    SPECIAL,
    BinSpec,
    fit_bins,
    iv_strength,
    monotonic_groups,
    woe_iv,
)
from jointcredit.learn._validation import check_rows, require_fields
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.session import ProtocolChannel
from jointcredit.scoring.gate import require_training_consent

PROTOCOL = "binning"
BACKENDS = ("paillier", "plain")

#: The center refuses jobs whose rows are fewer than this: per-bin bad counts over a handful of
#: enterprises would come close to revealing individual labels' aggregates to nobody's benefit.
MIN_ROWS = 50


def _catalogue() -> dict[str, Any]:
    from jointcredit.data.catalogue import CENTER_CATALOGUE

    return CENTER_CATALOGUE


# --------------------------------------------------------------------------------------------
# the credit center's half
# --------------------------------------------------------------------------------------------


class BinningCenter:
    """The credit center's half: bins its features, sums encrypted labels per bin."""

    protocol = PROTOCOL

    def __init__(self, center: CenterParty, *, min_rows: int = MIN_ROWS) -> None:
        self.center = center
        self.min_rows = int(min_rows)

    def run(self, channel: ProtocolChannel) -> str:
        aligned = self.center.require_aligned()
        catalogue = _catalogue()
        meta = [
            {"name": f, "category": catalogue[f].category if f in catalogue else None}
            for f in self.center.feature_names
        ]
        job = require_fields(
            channel.request("start", {"n_aligned": int(len(aligned)), "features": meta}),
            "binning/start.ok",
            ("model_id", "rows", "max_bins", "min_bin_fraction", "monotonic", "backend",
             "center_features", "public_key", "labels"),
        )  # fmt: skip
        rows = check_rows(job["rows"], len(aligned), "binning/start.ok rows")
        if rows.size < self.min_rows:
            raise ProtocolError(f"binning: {rows.size} rows is below the center's minimum")
        require_training_consent(self.center, rows, PROTOCOL)
        features = self._features(job["center_features"])
        crypto = _CenterLabels(job["backend"], job["public_key"], job["labels"], rows.size)
        max_bins, fraction = int(job["max_bins"]), float(job["min_bin_fraction"])
        monotonic = bool(job["monotonic"])

        X = self.center.aligned_features(rows)
        parts: dict[str, dict[str, Any]] = {}
        described, sums = [], []
        for name in features:
            info = catalogue.get(name)
            spec = fit_bins(
                X[name].to_numpy(),
                max_bins=max_bins,
                special_codes=info.special_codes if info is not None else None,
                min_bin_fraction=fraction,
                categorical=info is not None and info.kind == "categorical",
            )
            index = spec.assign(X[name].to_numpy())
            labels = _random_permutation(spec.n_bins)  # bin index -> label shown to the bank
            by_label = np.argsort(labels)  # label -> bin index
            totals = np.bincount(index, minlength=spec.n_bins)
            event_sums = crypto.sum_by_bin(index, spec.n_bins)
            described.append(
                {
                    "name": name,
                    "category": info.category if info is not None else None,
                    "kind": info.kind if info is not None else "numeric",
                    "labels": [int(lab) for lab in range(spec.n_bins)],
                    "kinds": [spec.kind(int(b)) for b in by_label],
                    "codes": [_code_of(spec, int(b)) for b in by_label],
                    "totals": [int(totals[b]) for b in by_label],
                    # the value order of numeric bins, only if the bank needs it for merging
                    "order": (
                        [int(labels[b]) for b in range(spec.n_numeric)]
                        if monotonic and _mergeable(info)
                        else None
                    ),
                }
            )
            sums.extend(event_sums[b] for b in by_label)
            parts[name] = {"spec": spec, "labels": labels}

        events, slot_bits = crypto.pack(sums)
        reply = require_fields(
            channel.request(
                "counts", {"features": described, "slot_bits": slot_bits, "events": events}
            ),
            "binning/counts.ok",
            ("merges",),
        )
        merges = reply["merges"]
        if not isinstance(merges, dict) or any(f not in parts for f in merges):
            raise MalformedMessageError("binning/counts.ok: merges must name binned features")
        # validate every merge before applying any, so a bad instruction leaves no half state
        applied = {f: _merged(parts[f], merges[f]) for f in merges}
        parts.update(applied)
        model_id = str(job["model_id"])
        self.center.model_parts[model_id] = {
            "kind": "binning",
            "model_id": model_id,
            "features": {
                f: {"spec": p["spec"].to_dict(), "labels": [int(x) for x in p["labels"]]}
                for f, p in parts.items()
            },
        }
        return model_id

    def _features(self, requested: Any) -> list[str]:
        own = self.center.feature_names
        if requested is None:
            return list(own)
        if not isinstance(requested, list) or not all(isinstance(f, str) for f in requested):
            raise MalformedMessageError("binning/start.ok: center_features must be names")
        unknown = [f for f in requested if f not in own]
        if unknown:
            raise ProtocolError(f"binning: the center holds no feature(s) {unknown}")
        return list(requested)


def _random_permutation(n: int) -> np.ndarray:
    # OS randomness: the permutation is what hides the bins' order from the bank
    keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _code_of(spec: BinSpec, index: int) -> float | None:
    if spec.kind(index) == SPECIAL:
        return float(spec.special_codes[index - spec.n_numeric])
    return None


def _mergeable(info: Any) -> bool:
    return info is None or info.kind != "categorical"


def _merged(part: dict[str, Any], groups: Any) -> dict[str, Any]:
    """Apply the bank's merge instruction (groups of labels) to one feature's bins."""
    spec: BinSpec = part["spec"]
    labels: np.ndarray = part["labels"]
    if not isinstance(groups, list) or not all(
        isinstance(g, list) and len(g) >= 2 and all(isinstance(x, int) for x in g) for g in groups
    ):
        raise MalformedMessageError("binning/counts.ok: merge groups must be lists of labels")
    bin_of = {int(lab): b for b, lab in enumerate(labels)}
    flat = [x for g in groups for x in g]
    if len(set(flat)) != len(flat) or any(x not in bin_of for x in flat):
        raise ProtocolError("binning: merge groups repeat or name unknown bins")
    start: dict[int, list[int]] = {}
    for g in groups:
        bins = sorted(bin_of[x] for x in g)
        if bins[-1] >= spec.n_numeric or bins != list(range(bins[0], bins[-1] + 1)):
            raise ProtocolError("binning: a merge group is not a run of adjacent numeric bins")
        start[bins[0]] = bins
    runs, b = [], 0
    while b < spec.n_numeric:
        run = start.get(b, [b])
        runs.append(run)
        b = run[-1] + 1
    new_spec, mapping = spec.merge_numeric(runs)
    new_labels = np.empty(new_spec.n_bins, dtype=np.int64)
    for old, new in enumerate(mapping):
        # a merged bin keeps the smallest label of its members (the bank uses the same rule)
        cur = new_labels[new] if old and mapping[old - 1] == new else None
        new_labels[new] = labels[old] if cur is None else min(cur, labels[old])
    return {"spec": new_spec, "labels": new_labels}


class _CenterLabels:
    """The bank's (encrypted) label vector as the center holds it, and per-bin sums of it."""

    def __init__(self, backend: Any, public_key: Any, labels: Any, n_rows: int) -> None:
        if backend not in BACKENDS:
            raise MalformedMessageError(f"binning/start.ok: unknown backend {backend!r}")
        self.backend = backend
        if backend == "plain":
            arr = np.asarray(labels)
            if arr.shape != (n_rows,):
                raise MalformedMessageError("binning/start.ok: label vector has the wrong length")
            self.values: Any = arr.astype(np.int64)
            return
        from jointcredit.crypto.paillier import PaillierPublicKey

        if not isinstance(public_key, bytes) or not isinstance(labels, bytes):
            raise MalformedMessageError("binning/start.ok: key and labels must be bytes")
        self.public_key = PaillierPublicKey.from_bytes(public_key)
        cts = self.public_key.ciphertexts_from_bytes(labels)
        if len(cts) != n_rows:
            raise MalformedMessageError("binning/start.ok: one ciphertext per row expected")
        self.values = cts
        self.n_rows = n_rows

    def sum_by_bin(self, index: np.ndarray, n_bins: int) -> list[Any]:
        if self.backend == "plain":
            return [int(v) for v in np.bincount(index, weights=self.values, minlength=n_bins)]
        pk = self.public_key
        order = np.argsort(index, kind="stable")
        bounds = np.searchsorted(index[order], np.arange(n_bins + 1))
        cts = self.values
        return [pk.raw_sum(cts[i] for i in order[bounds[b] : bounds[b + 1]]) for b in range(n_bins)]

    def pack(self, sums: list[Any]) -> tuple[Any, int]:
        """Many small counts per ciphertext (fewer decryptions), re-randomized before sending."""
        if self.backend == "plain":
            return np.asarray(sums, dtype=np.int64), 0
        from jointcredit.crypto.paillier import FastEncryptor, compress

        slot_bits = max(1, int(self.n_rows).bit_length())
        packed = compress(self.public_key, sums, slot_bits)
        with FastEncryptor(self.public_key, n_jobs=1) as enc:
            packed = enc.rerandomize(packed)
        return self.public_key.ciphertexts_to_bytes(packed), slot_bits


# --------------------------------------------------------------------------------------------
# the bank's half
# --------------------------------------------------------------------------------------------


class BinningBank:
    """The bank's half: encrypts its labels, decrypts per-bin counts, computes WOE / IV.

    Holds only plain data and key bytes, so it pickles (deployments save it between messages).
    """

    protocol = PROTOCOL

    def __init__(
        self,
        bank: BankParty,
        *,
        rows: Any = None,
        max_bins: int = 10,
        min_bin_fraction: float = 0.05,
        monotonic: bool = False,
        backend: str = "paillier",
        key_bits: int = 2048,
        n_jobs: int = 1,
        center_features: Sequence[str] | None = None,
        model_id: str | None = None,
    ) -> None:
        _check_binning_params(max_bins, min_bin_fraction, backend, key_bits, n_jobs)
        self.bank = bank
        self.rows = rows
        self.max_bins = int(max_bins)
        self.min_bin_fraction = float(min_bin_fraction)
        self.monotonic = bool(monotonic)
        self.backend = backend
        self.key_bits = int(key_bits)
        self.n_jobs = int(n_jobs)
        self.center_features = None if center_features is None else list(center_features)
        self.model_id = model_id or f"binning-{uuid.uuid4().hex[:12]}"
        self.state = "new"
        self._private_key: bytes | None = None
        self.n_rows = 0
        self.center_meta: dict[str, dict[str, Any]] = {}
        self.center_result: dict[str, dict[str, Any]] = {}
        self.bank_result: dict[str, dict[str, Any]] = {}

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start" and self.state == "new":
            return self._start(payload)
        if msg_type == "counts" and self.state == "started":
            return self._counts(payload)
        raise UnexpectedMessageError(f"binning: unexpected {msg_type!r} in state {self.state}")

    # -- start: job parameters and encrypted labels ------------------------------------------

    def _start(self, payload: Any) -> dict[str, Any]:
        payload = require_fields(payload, "binning/start", ("n_aligned", "features"))
        aligned = self.bank.require_aligned()
        if payload["n_aligned"] != len(aligned):
            raise ProtocolError(
                f"binning: center has {payload['n_aligned']} aligned rows, bank {len(aligned)}"
            )
        meta = payload["features"]
        if not isinstance(meta, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) for m in meta
        ):
            raise MalformedMessageError("binning/start: features must be [{name, category}]")
        names = [m["name"] for m in meta]
        if self.center_features is not None:
            unknown = [f for f in self.center_features if f not in names]
            if unknown:
                raise DataValidationError(
                    "center_features", f"not offered by the center: {unknown}"
                )
        rows = check_rows(self.rows, len(aligned))
        y = self.bank.aligned_labels(rows).astype(np.int64)
        self.bank_result = _bin_bank_features(
            self.bank.aligned_features(rows),
            y,
            self.max_bins,
            self.min_bin_fraction,
            self.monotonic,
        )
        if self.backend == "plain":
            public_key, labels = None, y.astype(np.int8)
        else:
            from jointcredit.crypto.paillier import FastEncryptor, generate_paillier_keypair

            pub, priv = generate_paillier_keypair(self.key_bits)
            with FastEncryptor.for_private_key(priv, n_jobs=self.n_jobs) as enc:
                cts = enc.encrypt_ints([int(v) for v in y])
            public_key, labels = pub.to_bytes(), pub.ciphertexts_to_bytes(cts)
            self._private_key = priv.to_bytes()
        self.center_meta = {m["name"]: m for m in meta}
        self.n_rows = int(rows.size)
        self.rows = rows
        self.state = "started"
        return {
            "model_id": self.model_id,
            "rows": rows,
            "max_bins": self.max_bins,
            "min_bin_fraction": self.min_bin_fraction,
            "monotonic": self.monotonic,
            "backend": self.backend,
            "center_features": self.center_features,
            "public_key": public_key,
            "labels": labels,
        }

    # -- counts: decrypt, WOE / IV, optional monotonic merging ---------------------------------

    def _counts(self, payload: Any) -> dict[str, Any]:
        payload = require_fields(payload, "binning/counts", ("features", "slot_bits", "events"))
        features = payload["features"]
        if not isinstance(features, list):
            raise MalformedMessageError("binning/counts: features must be a list")
        parsed = [self._parse_feature(f) for f in features]
        n_values = sum(len(p["labels"]) for p in parsed)
        bads = self._decrypt_events(payload["events"], payload["slot_bits"], n_values)
        result: dict[str, dict[str, Any]] = {}
        merges: dict[str, list[list[int]]] = {}
        pos = 0
        for p in parsed:
            k = len(p["labels"])
            p_bads = np.asarray(bads[pos : pos + k], dtype=np.int64)
            pos += k
            if np.any(p_bads < 0) or np.any(p_bads > p["totals"]):
                raise ProtocolError(f"binning: inconsistent counts for feature {p['name']!r}")
            p["bads"] = p_bads
            if self.monotonic and p["order"] is not None:
                groups = _label_groups(p)
                if groups:
                    merges[p["name"]] = groups
                    p = _apply_label_groups(p, groups)
            woe, contrib, iv = woe_iv(p["bads"], p["totals"])
            p.update(woe=woe, iv_contrib=contrib, iv=iv)
            result[p["name"]] = p
        self.center_result = result
        self.state = "done"
        return {"merges": merges}

    def _parse_feature(self, f: Any) -> dict[str, Any]:
        f = require_fields(
            f, "binning/counts feature", ("name", "labels", "kinds", "totals", "order")
        )
        name = f["name"]
        if name not in self.center_meta:
            raise ProtocolError(f"binning: counts for a feature the center did not offer: {name!r}")
        labels = [int(x) for x in f["labels"]]
        kinds = list(f["kinds"])
        totals = np.asarray(f["totals"], dtype=np.int64)
        k = len(labels)
        if len(kinds) != k or totals.shape != (k,) or sorted(labels) != list(range(k)):
            raise MalformedMessageError(f"binning/counts: malformed bins for {name!r}")
        if any(kd not in (NUMERIC, SPECIAL, MISSING) for kd in kinds):
            raise MalformedMessageError(f"binning/counts: unknown bin kind for {name!r}")
        if int(totals.sum()) != self.n_rows or np.any(totals < 0):
            raise ProtocolError(f"binning: bin totals of {name!r} do not add up to the rows")
        order = f["order"]
        if order is not None:
            numeric = sorted(lab for lab, kd in zip(labels, kinds, strict=True) if kd == NUMERIC)
            if sorted(int(x) for x in order) != numeric:
                raise MalformedMessageError(f"binning/counts: order of {name!r} is not a ranking")
            order = [int(x) for x in order]
        return {
            "name": name,
            "category": f.get("category"),
            "kind": f.get("kind", "numeric"),
            "labels": labels,
            "kinds": kinds,
            "codes": list(f.get("codes") or [None] * k),
            "totals": totals,
            "order": order,
        }

    def _decrypt_events(self, events: Any, slot_bits: Any, count: int) -> list[int]:
        if self.backend == "plain":
            arr = np.asarray(events)
            if arr.shape != (count,):
                raise MalformedMessageError("binning/counts: wrong number of event counts")
            return [int(v) for v in arr]
        from jointcredit.crypto.paillier import PaillierPrivateKey, decompress_ints

        if not isinstance(events, bytes) or not isinstance(slot_bits, int) or slot_bits < 1:
            raise MalformedMessageError("binning/counts: events must be packed ciphertext bytes")
        if slot_bits > self.n_rows.bit_length() + 1:
            raise ProtocolError("binning: slot width larger than any count needs")
        priv = PaillierPrivateKey.from_bytes(self._private_key)
        cts = priv.public_key.ciphertexts_from_bytes(events)
        try:
            return decompress_ints(priv, cts, slot_bits, count)
        except ValueError as exc:
            raise MalformedMessageError(f"binning/counts: {exc}") from exc


def _label_groups(p: dict[str, Any]) -> list[list[int]]:
    """Runs (in value order) of center bin labels to merge for a monotonic bad rate."""
    index = {lab: i for i, lab in enumerate(p["labels"])}
    order = p["order"]
    bads = [int(p["bads"][index[lab]]) for lab in order]
    totals = [int(p["totals"][index[lab]]) for lab in order]
    runs = monotonic_groups(bads, totals)
    return [[order[i] for i in run] for run in runs if len(run) > 1]


def _apply_label_groups(p: dict[str, Any], groups: list[list[int]]) -> dict[str, Any]:
    """The bank's view after merging: merged bins keep the smallest member label."""
    keep = {lab: min(g) for g in groups for lab in g}
    labels, kinds, codes, totals, bads = [], [], [], [], []
    for i, lab in enumerate(p["labels"]):
        target = keep.get(lab, lab)
        if target in labels:
            j = labels.index(target)
            totals[j] += int(p["totals"][i])
            bads[j] += int(p["bads"][i])
            continue
        labels.append(target)
        kinds.append(p["kinds"][i])
        codes.append(p["codes"][i])
        totals.append(int(p["totals"][i]))
        bads.append(int(p["bads"][i]))
    merged_order = [lab for lab in p["order"] if keep.get(lab, lab) == lab]
    order = sorted(labels)
    pos = [labels.index(lab) for lab in order]
    out = dict(p)
    out.update(
        labels=order,
        kinds=[kinds[i] for i in pos],
        codes=[codes[i] for i in pos],
        totals=np.asarray([totals[i] for i in pos], dtype=np.int64),
        bads=np.asarray([bads[i] for i in pos], dtype=np.int64),
        order=merged_order,
    )
    return out


def _bin_bank_features(
    X: pd.DataFrame, y: np.ndarray, max_bins: int, fraction: float, monotonic: bool
) -> dict[str, dict[str, Any]]:
    """Bin the bank's own features in the clear, with the same rules as the center's."""
    out: dict[str, dict[str, Any]] = {}
    for name in X.columns:
        values = X[name].to_numpy()
        spec = fit_bins(values, max_bins=max_bins, min_bin_fraction=fraction)
        index = spec.assign(values)
        totals = np.bincount(index, minlength=spec.n_bins)
        bads = np.bincount(index, weights=y, minlength=spec.n_bins).astype(np.int64)
        if monotonic and spec.n_numeric > 1:
            runs = monotonic_groups(bads[: spec.n_numeric], totals[: spec.n_numeric])
            if len(runs) < spec.n_numeric:
                spec, mapping = spec.merge_numeric(runs)
                totals = np.bincount(mapping, weights=totals, minlength=spec.n_bins)
                bads = np.bincount(mapping, weights=bads, minlength=spec.n_bins)
                totals, bads = totals.astype(np.int64), bads.astype(np.int64)
        woe, contrib, iv = woe_iv(bads, totals)
        out[str(name)] = {
            "spec": spec,
            "totals": totals,
            "bads": bads,
            "woe": woe,
            "iv_contrib": contrib,
            "iv": iv,
        }
    return out


def _check_binning_params(
    max_bins: Any, fraction: Any, backend: Any, key_bits: Any, n_jobs: Any
) -> None:
    if not isinstance(max_bins, (int, np.integer)) or not 2 <= int(max_bins) <= 100:
        raise DataValidationError("max_bins", f"must be an integer in 2..100, got {max_bins!r}")
    if not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) < 0.5:
        raise DataValidationError("min_bin_fraction", f"must be in [0, 0.5), got {fraction!r}")
    if backend not in BACKENDS:
        raise DataValidationError("backend", f"must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(key_bits, (int, np.integer)) or int(key_bits) < 2048:
        raise DataValidationError("key_bits", f"must be an integer >= 2048, got {key_bits!r}")
    if not isinstance(n_jobs, (int, np.integer)) or int(n_jobs) < 1:
        raise DataValidationError("n_jobs", f"must be a positive integer, got {n_jobs!r}")


def _bank_factory(bank: BankParty, params: dict) -> BinningBank:
    return BinningBank(bank, **params)


registry.register(PROTOCOL, center=BinningCenter, bank=_bank_factory)


# --------------------------------------------------------------------------------------------
# the bank-facing estimator
# --------------------------------------------------------------------------------------------


class FederatedBinning:
    """WOE / IV for the bank's and the credit center's features (sklearn manners).

    Parameters
    ----------
    max_bins:
        Equal-frequency numeric bins per feature (special codes and missing values get their
        own bins on top; categorical catalogue features get one bin per level).
    min_bin_fraction:
        Numeric bins with a smaller share of rows are merged into a neighbour.
    monotonic:
        Merge adjacent numeric bins until the bad rate is monotonic. For center features this
        reveals the value order of their bins to the bank (never the cut points).
    backend:
        ``"paillier"`` (labels encrypted under a fresh key of ``key_bits``) or ``"plain"``
        (reference mode: identical code path, labels in the clear; tests only).
    center_features:
        Center features to bin (catalogue names); default all the center offers.

    Fitted attributes
    -----------------
    ``iv_table_`` (DataFrame: party, feature, category, title, n_bins, iv, strength; highest IV
    first), ``bin_table_`` (per-bin counts, bad rate, WOE), ``bank_bins_`` (bank feature ->
    :class:`BinSpec`), ``bank_woe_`` (bank feature -> WOE per bin index), ``center_woe_``
    (center feature -> {bin label: WOE}), ``model_id_`` (the center keeps its bins under it),
    ``transcript_`` (bytes and round trips).

    WOE direction: ``ln(bad share / good share)``; positive means riskier than average.
    """

    def __init__(
        self,
        *,
        max_bins: int = 10,
        min_bin_fraction: float = 0.05,
        monotonic: bool = False,
        backend: str = "paillier",
        key_bits: int = 2048,
        n_jobs: int = 1,
        center_features: Sequence[str] | None = None,
    ) -> None:
        self.max_bins = max_bins
        self.min_bin_fraction = min_bin_fraction
        self.monotonic = monotonic
        self.backend = backend
        self.key_bits = key_bits
        self.n_jobs = n_jobs
        self.center_features = center_features

    def fit(self, session: Any, rows: Any = None) -> FederatedBinning:
        """Run the binning protocol on ``rows`` (positions in the aligned list; default all)."""
        aligned = session.bank.require_aligned()
        rows = check_rows(rows, len(aligned))
        side = BinningBank(
            session.bank,
            rows=rows,
            max_bins=self.max_bins,
            min_bin_fraction=self.min_bin_fraction,
            monotonic=self.monotonic,
            backend=self.backend,
            key_bits=self.key_bits,
            n_jobs=self.n_jobs,
            center_features=self.center_features,
        )
        mark = session.transcript.mark()
        session.run(side)
        side = getattr(getattr(session, "endpoint", None), "sides", {}).get(PROTOCOL, side)
        if side.state != "done":
            raise ProtocolError("binning: the protocol ended before the counts arrived")
        self.model_id_ = side.model_id
        self.rows_ = rows
        self.n_rows_ = int(rows.size)
        self.bank_bins_ = {f: r["spec"] for f, r in side.bank_result.items()}
        self.bank_woe_ = {f: r["woe"] for f, r in side.bank_result.items()}
        self.center_woe_ = {
            f: {int(lab): float(w) for lab, w in zip(r["labels"], r["woe"], strict=True)}
            for f, r in side.center_result.items()
        }
        self.bank_result_ = side.bank_result
        self.center_result_ = side.center_result
        self.iv_table_ = _iv_table(side.bank_result, side.center_result)
        self.bin_table_ = _bin_table(side.bank_result, side.center_result)
        self.transcript_ = session.transcript.since(mark).summary()
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "iv_table_"):
            from jointcredit.errors import NotFittedError

            raise NotFittedError("FederatedBinning is not fitted: call fit(session) first")

    def select(self, min_iv: float = 0.02, max_iv: float | None = None) -> dict[str, list[str]]:
        """Features whose IV is in ``[min_iv, max_iv]``, by party (``"bank"``, ``"center"``).

        ``max_iv`` (e.g. 0.5) drops "suspicious" features that look too good to be true.
        """
        self._check_fitted()
        table = self.iv_table_
        keep = table["iv"] >= float(min_iv)
        if max_iv is not None:
            keep &= table["iv"] <= float(max_iv)
        chosen = table[keep]
        return {
            party: [
                f for p, f in zip(chosen["party"], chosen["feature"], strict=True) if p == party
            ]
            for party in ("bank", "center")
        }

    def transform_bank(self, X: pd.DataFrame) -> pd.DataFrame:
        """WOE-encode the bank's own features (columns as at fit time)."""
        self._check_fitted()
        missing = [f for f in self.bank_bins_ if f not in X.columns]
        if missing:
            raise DataValidationError(", ".join(missing), "bank feature(s) missing from X")
        return pd.DataFrame(
            {
                f: self.bank_woe_[f][spec.assign(X[f].to_numpy())]
                for f, spec in self.bank_bins_.items()
            },
            index=X.index,
        )


def _iv_table(bank: dict[str, dict], center: dict[str, dict]) -> pd.DataFrame:
    catalogue = _catalogue()
    rows = []
    for f, r in bank.items():
        rows.append(("bank", f, "bank", f, int(np.count_nonzero(r["totals"])), r["iv"]))
    for f, r in center.items():
        info = catalogue.get(f)
        title = info.title_en if info is not None else f
        category = r.get("category") or (info.category if info is not None else "center")
        rows.append(("center", f, category, title, int(np.count_nonzero(r["totals"])), r["iv"]))
    table = pd.DataFrame(rows, columns=["party", "feature", "category", "title", "n_bins", "iv"])
    table["strength"] = [iv_strength(v) for v in table["iv"]]
    return table.sort_values("iv", ascending=False, kind="stable").reset_index(drop=True)


def _bin_table(bank: dict[str, dict], center: dict[str, dict]) -> pd.DataFrame:
    records = []
    for f, r in bank.items():
        spec: BinSpec = r["spec"]
        for b in range(spec.n_bins):
            records.append(
                ("bank", f, str(b), spec.describe(b), spec.kind(b),
                 int(r["totals"][b]), int(r["bads"][b]), float(r["woe"][b]),
                 float(r["iv_contrib"][b]))
            )  # fmt: skip
    for f, r in center.items():
        for i, lab in enumerate(r["labels"]):
            kind, code = r["kinds"][i], r["codes"][i]
            what = (
                "missing"
                if kind == MISSING
                else (f"= {code:g}" if kind == SPECIAL and code is not None else "center bin")
            )
            records.append(
                ("center", f, f"#{lab}", what, kind, int(r["totals"][i]), int(r["bads"][i]),
                 float(r["woe"][i]), float(r["iv_contrib"][i]))
            )  # fmt: skip
    table = pd.DataFrame(
        records,
        columns=["party", "feature", "bin", "range", "kind", "count", "bads", "woe", "iv"],
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        table["bad_rate"] = np.where(table["count"] > 0, table["bads"] / table["count"], np.nan)
    return table
