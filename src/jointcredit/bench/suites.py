"""The benchmark suites: quality, speed, scaling and primitives.

Every suite runs the library's public entry points — ``JointSession.align()`` (PSI), each model
module's ``train_and_evaluate`` — through the in-process session, so bytes and round trips come
from the same transcript a deployment would produce. Model types that are not importable (or a
backend a model does not implement) become ``not_available`` records with the reason.

Data: the synthetic SME generator (:func:`jointcredit.data.make_sme_data`) and every
``--data-dir`` in FATE layout (``bank.csv``: id, y, x...; ``center.csv``: id, x...). Splits are
stratified and fixed by ``--seed``; ``--quick`` shrinks data and models to CI size (the
parameters each record carries say exactly what ran).
"""

from __future__ import annotations

import copy
import importlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.bench.runner import (
    STATUS_OK,
    BenchContext,
    PeakMemory,
    error_record,
    growth_exponent,
    load_average,
    median_of,
    not_available,
    register,
    repeat_median,
)
from jointcredit.data.schema import PartyTable

TEST_SIZE = 0.3

# --- datasets -----------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Both parties' tables and exactly how they were made (enough to rebuild them)."""

    name: str
    bank: PartyTable
    center: PartyTable
    parameters: dict[str, Any]


def synthetic_dataset(
    *,
    n_enterprises: int,
    n_bank_customers: int,
    overlap: float = 0.9,
    seed: int = 0,
    center_features: int | None = None,
    name: str = "synthetic",
) -> Dataset:
    """The synthetic city of :func:`make_sme_data`, optionally with ``center_features`` columns.

    Fewer columns keep the first ones in catalogue order; more add noisy copies of the catalogue
    features (``<name>__v2`` ...), so the scaling suite can vary the center's width without a
    different generator.
    """
    from jointcredit.data.synthetic import LABEL_COL, make_sme_data

    data = make_sme_data(
        n_enterprises=n_enterprises, n_bank_customers=n_bank_customers, overlap=overlap, seed=seed
    )
    center = data.center
    if center_features is not None:
        center = with_center_features(center, center_features, seed=seed)
    from jointcredit.data import load_party_table

    bank = load_party_table(data.bank, id_col="id", label_col=LABEL_COL, id_kind="uscc")
    center_table = load_party_table(center, id_col="id", id_kind="uscc")
    params = {
        "source": "jointcredit.data.make_sme_data",
        "n_enterprises": n_enterprises,
        "n_bank_customers": n_bank_customers,
        "overlap": overlap,
        "seed": seed,
        "center_features": center_table.X.shape[1],
        "bank_features": bank.X.shape[1],
        "label": LABEL_COL,
    }
    return Dataset(name, bank, center_table, params)


def with_center_features(center: pd.DataFrame, k: int, *, seed: int = 0) -> pd.DataFrame:
    """``id`` plus exactly ``k`` feature columns (first ones, or noisy copies beyond the catalogue)."""
    cols = [c for c in center.columns if c != "id"]
    if k < 1:
        from jointcredit.errors import DataValidationError

        raise DataValidationError("center_features", f"must be at least 1, got {k}")
    if k <= len(cols):
        return center[["id", *cols[:k]]].copy()
    rng = np.random.default_rng(seed + 7919)
    extra: dict[str, np.ndarray] = {}
    for j in range(k - len(cols)):
        base = cols[j % len(cols)]
        values = center[base].to_numpy(dtype=np.float64)
        scale = np.nanstd(values) if np.isfinite(values).any() else 0.0
        noisy = values + rng.normal(0.0, 0.1 * (scale or 1.0), values.size)
        extra[f"{base}__v{j // len(cols) + 2}"] = noisy
    return pd.concat([center, pd.DataFrame(extra, index=center.index)], axis=1)


def directory_dataset(
    path: str | os.PathLike, *, max_bank_rows: int | None = None, seed: int = 0
) -> Dataset:
    """A FATE-layout vertical split: ``bank.csv`` (id, y, x...) and ``center.csv`` (id, x...).

    ``max_bank_rows`` keeps a seeded random sample of the bank's rows and, at the center, those
    ids plus as many others (so PSI still has non-matching ids to discard).
    """
    from jointcredit.data import load_party_table
    from jointcredit.errors import DataValidationError

    path = Path(path)
    for f in ("bank.csv", "center.csv"):
        if not (path / f).is_file():
            raise DataValidationError("data_dir", f"{path} has no {f} (FATE layout expected)")
    bank_df = pd.read_csv(path / "bank.csv", dtype={"id": str})
    center_df = pd.read_csv(path / "center.csv", dtype={"id": str})
    full_rows = len(bank_df)
    if max_bank_rows is not None and max_bank_rows < len(bank_df):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(bank_df), size=max_bank_rows, replace=False))
        bank_df = bank_df.iloc[keep].reset_index(drop=True)
        in_bank = center_df["id"].isin(set(bank_df["id"]))
        others = np.flatnonzero(~in_bank.to_numpy())
        extra = rng.choice(others, size=min(max_bank_rows, others.size), replace=False)
        mask = in_bank.to_numpy().copy()
        mask[extra] = True
        center_df = center_df[mask].reset_index(drop=True)
    bank = load_party_table(bank_df, id_col="id", label_col="y", id_kind="plain")
    center = load_party_table(center_df, id_col="id", id_kind="plain")
    params = {
        "source": str(path.resolve()),
        "bank_rows_in_file": full_rows,
        "max_bank_rows": max_bank_rows,
        "sample_seed": seed,
        "bank_rows": bank.n_rows,
        "center_rows": center.n_rows,
        "bank_features": bank.X.shape[1],
        "center_features": center.X.shape[1],
        "label": "y",
    }
    return Dataset(path.name, bank, center, params)


def open_session(ds: Dataset) -> tuple[Any, dict[str, Any]]:
    """An in-process session, aligned by PSI; returns it with the alignment's cost."""
    from jointcredit import workflow
    from jointcredit.session import JointSession

    session = JointSession.in_process(ds.bank, ds.center)
    return session, workflow.align(session)


def split(session: Any, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from jointcredit import workflow

    y = session.bank.aligned_labels()
    train, test = workflow.split_rows(y, test_size=TEST_SIZE, seed=seed)
    info = {
        "method": "jointcredit.workflow.split_rows (stratified)",
        "seed": seed,
        "test_size": TEST_SIZE,
        "n_train": int(train.size),
        "n_test": int(test.size),
        "test_bads": int(y[test].sum()),
        "train_bad_rate": round(float(y[train].mean()), 6),
    }
    return train, test, info


def _datasets(ctx: BenchContext, synthetic_size: dict[str, int], quick_rows: int) -> list[Any]:
    """Dataset builders (called lazily, one at a time, so only one is in memory)."""
    builders: list[Any] = []
    if ctx.synthetic:
        builders.append(("synthetic", lambda: synthetic_dataset(**synthetic_size, seed=ctx.seed)))
    for d in ctx.data_dirs:
        rows = quick_rows if ctx.quick else None
        builders.append(
            (
                Path(d).name,
                lambda d=d, rows=rows: directory_dataset(d, max_bank_rows=rows, seed=ctx.seed),
            )
        )
    return builders


# --- model types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """How the suites drive one model type through its module's ``train_and_evaluate``.

    ``params[suite]`` and ``params[suite + "_quick"]`` are the hyper-parameters a suite passes
    (``quality``: the model as a bank would train it; ``speed`` and ``scaling``: a fixed number of
    iterations, no early stopping, so time per tree / epoch is comparable across runs).
    """

    name: str
    module: str
    unit: str
    backends: tuple[str, ...]
    params_by_suite: dict[str, dict[str, Any]]
    train_kwargs: dict[str, Any] = field(default_factory=dict)

    def params(self, ctx: BenchContext, suite: str) -> dict[str, Any]:
        return dict(self.params_by_suite[suite + ("_quick" if ctx.quick else "")])


#: Issue 4's SecureBoost configuration (30 trees, depth 3, 32 bins, learning rate 0.3); the
#: speed suite times 10 such trees (time per tree is the figure; three repeats stay affordable).
_BOOST_FULL = {"n_estimators": 30, "max_depth": 3, "max_bin": 32, "learning_rate": 0.3}
_BOOST_QUICK = {"n_estimators": 3, "max_depth": 2, "max_bin": 16, "learning_rate": 0.3}
_BOOST = {
    "quality": _BOOST_FULL,
    "quality_quick": _BOOST_QUICK,
    "speed": {**_BOOST_FULL, "n_estimators": 10},
    "speed_quick": _BOOST_QUICK,
    "scaling": {**_BOOST_FULL, "n_estimators": 3},
    "scaling_quick": {**_BOOST_QUICK, "n_estimators": 2},
}
#: Linear models: the estimator's defaults for quality (early stopping on a 10 % validation
#: split); fixed epochs for timing.
_FIXED_EPOCHS = {"validation_fraction": 0.0}
_LINEAR = {
    "quality": {},
    "quality_quick": {"max_epochs": 3, "validation_fraction": 0.0},
    "speed": {**_FIXED_EPOCHS, "max_epochs": 3},
    "speed_quick": {**_FIXED_EPOCHS, "max_epochs": 2},
    "scaling": {**_FIXED_EPOCHS, "max_epochs": 2},
    "scaling_quick": {**_FIXED_EPOCHS, "max_epochs": 1},
}
_ALL_BACKENDS = ("ckks", "paillier", "plain", "paillier_phe", "ou")

MODELS: dict[str, ModelSpec] = {
    "logistic": ModelSpec(
        "logistic", "jointcredit.learn.linear", "epoch", _ALL_BACKENDS, _LINEAR,
        {"model": "logistic"},
    ),
    "scorecard": ModelSpec(
        "scorecard", "jointcredit.learn.linear", "epoch", _ALL_BACKENDS, _LINEAR,
        {"model": "scorecard"},
    ),
    "secureboost": ModelSpec(
        "secureboost", "jointcredit.learn.boosting", "tree",
        ("paillier", "plain", "paillier_phe", "ou"), _BOOST,
    ),
}  # fmt: skip

#: Backends the speed suite asks every model about, and why one may be missing.
_BACKEND_NOTES = {
    "paillier_phe": (
        "the protocols encrypt only through the fast Damgard-Jurik-Nielsen path; phe's default "
        "encryption (about 30x slower per value) is measured in the primitives suite"
    ),
    "ckks": "this model has no CKKS backend",
    "ou": "this model has no Okamoto-Uchiyama backend (SecureBoost has one)",
}


def model_module(spec: ModelSpec) -> tuple[Any | None, str | None]:
    """The model's module, or ``None`` and why it cannot be used."""
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        return None, f"{spec.module} is not importable ({exc})"
    if not hasattr(module, "train_and_evaluate"):
        return None, f"{spec.module} has no train_and_evaluate()"
    return module, None


def supported_backends(spec: ModelSpec, module: Any) -> tuple[str, ...]:
    """Backends the model implements (its module's ``BACKENDS`` when it declares them)."""
    declared = getattr(module, "BACKENDS", None)
    if declared:
        return tuple(declared)
    if spec.name == "secureboost":
        return ("paillier", "plain")
    return tuple(b for b in spec.backends if b not in _BACKEND_NOTES)


def default_backend(spec: ModelSpec, module: Any, ctx: BenchContext) -> str:
    if ctx.backend is not None:
        return ctx.backend
    return supported_backends(spec, module)[0]


def run_model(
    module: Any,
    spec: ModelSpec,
    session: Any,
    train: np.ndarray,
    test: np.ndarray,
    *,
    backend: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """One ``train_and_evaluate`` call; returns its result plus wall time and peak memory."""
    kwargs = {**spec.train_kwargs, **params, "backend": backend}
    with PeakMemory() as mem:
        start = time.perf_counter()
        result = module.train_and_evaluate(session, train, test, **kwargs)
        wall = time.perf_counter() - start
    result = dict(result)
    result["wall_seconds_with_evaluation"] = wall
    result["memory"] = mem.as_dict()
    result["effective_params"] = dict(result.get("params") or _full_params(module, spec, kwargs))
    return result


def _full_params(module: Any, spec: ModelSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every hyper-parameter the estimator ran with, defaults included (for the record)."""
    cls_name = {"logistic": "HeteroLogisticRegression", "scorecard": "HeteroScorecard"}.get(
        spec.name
    )
    cls = getattr(module, cls_name, None) if cls_name else None
    if cls is None:
        return dict(kwargs)
    hyper = {k: v for k, v in kwargs.items() if k != "model"}
    try:
        est = cls(**hyper)
    except Exception:  # noqa: BLE001 - the record then holds what was passed
        return dict(kwargs)
    full = {k: v for k, v in vars(est).items() if not k.startswith("_") and not k.endswith("_")}
    return {**full, "model": spec.name}


def _iterations(res: dict[str, Any], params: dict[str, Any]) -> int | None:
    """Trees or epochs actually trained (early stopping can end before the maximum)."""
    fed = res.get("federated", {})
    for block in (fed, res):
        for key in ("n_trees", "n_epochs", "epochs", "n_iter", "iterations"):
            v = block.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                return int(v)
    for key in ("n_estimators", "max_epochs", "epochs", "max_iter"):
        v = params.get(key)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _scores(block: dict[str, Any]) -> dict[str, float]:
    out = {"auc": float(block["auc"]), "ks": float(block["ks"])}
    out["gini"] = float(block.get("gini", 2.0 * out["auc"] - 1.0))
    return out


def centralized_reference(spec: ModelSpec, effective: dict[str, Any]) -> dict[str, Any]:
    """Which plaintext model the module trained as the centralized (insecure) reference."""
    if spec.name == "secureboost":
        from jointcredit.learn.boosting import BoostParams, lightgbm_reference_params

        known = {k: v for k, v in effective.items() if k in BoostParams.__dataclass_fields__}
        return {
            "library": "lightgbm",
            "params": lightgbm_reference_params(**known),
            "features": "bank features then center features, aligned (sorted id) order",
            "missing_values": "NaN passed to LightGBM",
        }
    model = "sklearn make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))"
    return {
        "library": "scikit-learn",
        "model": model,
        "params": {"C": 1.0, "max_iter": 2000},
        "features": (
            "bank features then center features, aligned (sorted id) order"
            if spec.name == "logistic"
            else "WOE-encoded selected features of both parties"
        ),
        "missing_values": "training-set medians, then 0",
    }


def plaintext_equivalent(
    spec: ModelSpec, effective: dict[str, Any]
) -> tuple[str, Callable[[], Any]]:
    """The plaintext model a researcher compares training time with (one thread)."""
    if spec.name == "secureboost":
        import lightgbm as lgb

        params = centralized_reference(spec, effective)["params"]
        return "lightgbm.LGBMClassifier(num_threads=1)", lambda: lgb.LGBMClassifier(**params)
    from jointcredit.learn.plaintext import logistic_classifier

    return "sklearn StandardScaler + LogisticRegression", logistic_classifier


def _time_plaintext(make: Callable[[], Any], X: np.ndarray, y: np.ndarray, repeats: int) -> float:
    import lightgbm as lgb

    if not isinstance(make(), lgb.LGBMClassifier):
        # Linear models get training-median imputation, as the plaintext references do.
        frame = pd.DataFrame(X)
        X = frame.fillna(frame.median()).fillna(0.0).to_numpy(np.float64)
    times = []
    for _ in range(repeats):
        model = make()
        start = time.perf_counter()
        model.fit(X, y)
        times.append(time.perf_counter() - start)
    return median_of(times)


def joined_arrays(session: Any, rows: np.ndarray) -> np.ndarray:
    """Plaintext join of both parties' aligned features (the insecure reference's input)."""
    xb = session.bank.aligned_features(rows).to_numpy(np.float64)
    xc = session.center.aligned_features(rows).to_numpy(np.float64)
    return np.hstack([xb, xc])


def _available_models(ctx: BenchContext) -> list[tuple[ModelSpec, Any, str | None]]:
    out = []
    for name, spec in MODELS.items():
        if ctx.wants_model(name):
            module, reason = model_module(spec)
            out.append((spec, module, reason))
    return out


# --- quality --------------------------------------------------------------------------------------


@register("quality", "AUC / KS / Gini: federated vs centralized plaintext vs bank only")
def quality_suite(ctx: BenchContext) -> dict[str, Any]:
    size = (
        {"n_enterprises": 4_000, "n_bank_customers": 1_600}
        if ctx.quick
        else {"n_enterprises": 50_000, "n_bank_customers": 12_000}
    )
    models = _available_models(ctx)
    records: list[dict[str, Any]] = []
    datasets: dict[str, Any] = {}
    for ds_name, build in _datasets(ctx, size, quick_rows=2_000):
        ctx.progress(f"quality: preparing {ds_name}")
        ds = build()
        session, alignment = open_session(ds)
        train, test, split_info = split(session, ctx.seed)
        datasets[ds.name] = {
            "parameters": ds.parameters,
            "alignment": alignment,
            "split": split_info,
        }
        for spec, module, reason in models:
            base = {"dataset": ds.name, "model": spec.name}
            if module is None:
                records.append(not_available(reason or "not available", **base))
                continue
            backend = default_backend(spec, module, ctx)
            params = spec.params(ctx, "quality")
            base |= {"backend": backend}
            ctx.progress(
                f"quality: {spec.name} ({backend}) on {ds.name}, {split_info['n_train']} train rows"
            )
            try:
                res = run_model(module, spec, session, train, test, backend=backend, params=params)
            except Exception as exc:  # noqa: BLE001 - one model failing must not hide the others
                records.append(error_record(exc, **base, parameters=params))
                ctx.progress(f"quality: {spec.name} failed: {exc}")
                continue
            fed, cen, bo = (
                _scores(res["federated"]),
                _scores(res["centralized"]),
                _scores(res["bank_only"]),
            )
            rec = {
                **base,
                "status": STATUS_OK,
                "parameters": res["effective_params"],
                "split": split_info,
                "federated": fed,
                "centralized": cen,
                "bank_only": bo,
                "lift_over_bank_only": {k: fed[k] - bo[k] for k in ("auc", "ks", "gini")},
                "gap_to_centralized": {k: cen[k] - fed[k] for k in ("auc", "ks", "gini")},
                "centralized_reference": centralized_reference(spec, res["effective_params"]),
                "train_seconds": float(res["federated"].get("train_seconds", float("nan"))),
                "round_trips": res["federated"].get("round_trips"),
                "bytes_bank_to_center": res["federated"].get("bytes_bank_to_center"),
                "bytes_center_to_bank": res["federated"].get("bytes_center_to_bank"),
            }
            records.append(rec)
            ctx.progress(
                f"quality: {spec.name} on {ds.name}: AUC federated {fed['auc']:.4f}, "
                f"centralized {cen['auc']:.4f}, bank only {bo['auc']:.4f}"
            )
    return {
        "parameters": {"synthetic": size, "test_size": TEST_SIZE, "split_seed": ctx.seed},
        "datasets": datasets,
        "records": records,
    }


# --- speed --------------------------------------------------------------------------------------


def _encryption_floor(backend: str, n_values: int, n_jobs: int) -> float | None:
    """Seconds the bank's encryptor needs just to encrypt ``n_values`` packed (g, h) values
    (one tree), run exactly as SecureBoost runs it (forked workers returning bytes)."""
    rng = np.random.default_rng(0)
    # ~120-bit values: the size of SecureBoost's packed (g, h) plaintexts
    values = [int(a) << 60 | int(b) for a, b in rng.integers(0, 2**60, (min(n_values, 6000), 2))]
    if backend == "ou":
        from jointcredit.crypto.ou import OUEncryptor, generate_ou_keypair

        _, ou_priv = generate_ou_keypair(2048)
        enc: Any = OUEncryptor.for_private_key(ou_priv, n_jobs=n_jobs)
    else:
        from jointcredit.crypto.paillier import FastEncryptor, generate_paillier_keypair

        _, priv = generate_paillier_keypair(2048)
        enc = FastEncryptor.for_private_key(priv, n_jobs=n_jobs, parallel="processes")
    with enc:
        enc.encrypt_to_bytes(values[:1024])  # starts the workers outside the timing
        times = []
        for _ in range(3):
            start = time.perf_counter()
            enc.encrypt_to_bytes(values)
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(values) * n_values


@register("speed", "training time, bytes, round trips, peak memory per backend; ratio to plaintext")
def speed_suite(ctx: BenchContext) -> dict[str, Any]:
    size = (
        {"n_enterprises": 4_000, "n_bank_customers": 1_500}
        if ctx.quick
        else {"n_enterprises": 50_000, "n_bank_customers": 12_000}
    )
    models = _available_models(ctx)
    records: list[dict[str, Any]] = []
    datasets: dict[str, Any] = {}
    for ds_name, build in _datasets(ctx, size, quick_rows=2_000):
        ctx.progress(f"speed: preparing {ds_name}")
        ds = build()
        session, alignment = open_session(ds)
        train, test, split_info = split(session, ctx.seed)
        datasets[ds.name] = {
            "parameters": ds.parameters,
            "alignment": alignment,
            "split": split_info,
        }
        y_train = session.bank.aligned_labels(train)
        X_train = joined_arrays(session, train)
        for spec, module, reason in models:
            if module is None:
                records.append(
                    not_available(reason or "not available", dataset=ds.name, model=spec.name)
                )
                continue
            supported = supported_backends(spec, module)
            wanted = (
                [ctx.backend] if ctx.backend else list(dict.fromkeys([*supported, *spec.backends]))
            )
            for backend in wanted:
                base = {
                    "dataset": ds.name,
                    "model": spec.name,
                    "backend": backend,
                    "unit": spec.unit,
                }
                if backend not in supported:
                    why = _BACKEND_NOTES.get(backend, f"{spec.name} does not implement {backend!r}")
                    records.append(not_available(why, **base))
                    continue
                params = spec.params(ctx, "speed")
                ctx.progress(f"speed: {spec.name} ({backend}) on {ds.name} x{ctx.n_repeats}")
                try:
                    records.append(
                        _speed_record(ctx, module, spec, session, train, test, backend, params,
                                      X_train, y_train, base)
                    )  # fmt: skip
                except Exception as exc:  # noqa: BLE001
                    records.append(error_record(exc, **base, parameters=params))
                    ctx.progress(f"speed: {spec.name} ({backend}) failed: {exc}")
    return {
        "parameters": {"synthetic": size, "repeats": ctx.n_repeats, "split_seed": ctx.seed},
        "datasets": datasets,
        "records": records,
    }


def _speed_record(
    ctx: BenchContext,
    module: Any,
    spec: ModelSpec,
    session: Any,
    train: np.ndarray,
    test: np.ndarray,
    backend: str,
    params: dict[str, Any],
    X_train: np.ndarray,
    y_train: np.ndarray,
    base: dict[str, Any],
) -> dict[str, Any]:
    effective: dict[str, Any] = {}

    def once(_: int) -> dict[str, Any]:
        load = (load_average() or [None])[0]  # the machine is shared: keep its load with the run
        res = run_model(module, spec, session, train, test, backend=backend, params=params)
        effective.update(res["effective_params"])
        fed = res["federated"]
        n_iter = _iterations(res, res["effective_params"])
        seconds = float(fed["train_seconds"])
        return {
            "train_seconds": seconds,
            "iterations": n_iter,
            "seconds_per_iteration": seconds / n_iter if n_iter else None,
            "bytes_bank_to_center": int(fed["bytes_bank_to_center"]),
            "bytes_center_to_bank": int(fed["bytes_center_to_bank"]),
            "round_trips": int(fed["round_trips"]),
            "auc": float(fed["auc"]),
            **res["memory"],
            "load_average_1min": load,
        }

    timed = repeat_median(once, ctx.n_repeats, ctx.progress)
    med = timed["median"]
    label, make = plaintext_equivalent(spec, effective)
    plain_s = _time_plaintext(make, X_train, y_train, max(3, ctx.n_repeats))
    med["plaintext_seconds"] = plain_s
    med["ratio_to_plaintext"] = med["train_seconds"] / plain_s if plain_s > 0 else None
    rec: dict[str, Any] = {
        **base,
        "status": STATUS_OK,
        "parameters": effective,
        "n_train": int(train.size),
        "plaintext_equivalent": {"model": label, "threads": 1},
        "median": med,
        "runs": timed["runs"],
        "repeats": timed["repeats"],
    }
    if spec.name == "secureboost" and backend in ("paillier", "ou") and med.get("iterations"):
        n_jobs = int(effective.get("n_jobs", 2))
        floor = _encryption_floor(backend, int(train.size), n_jobs) * med["iterations"]
        rec["encryption_floor"] = {
            "what": f"{backend} encryption of one packed (g, h) per training row per tree",
            "seconds": floor,
            "share_of_train_time": floor / med["train_seconds"],
        }
    ctx.progress(
        f"speed: {spec.name} ({backend}): {med['train_seconds']:.1f} s "
        f"(x{med['ratio_to_plaintext']:.0f} plaintext), "
        f"{(med['bytes_bank_to_center'] + med['bytes_center_to_bank']) / 1e6:.1f} MB, "
        f"{med['round_trips']} round trips"
    )
    return rec


# --- scaling --------------------------------------------------------------------------------------


@register("scaling", "time and bytes as aligned rows and center features grow; growth exponents")
def scaling_suite(ctx: BenchContext) -> dict[str, Any]:
    if ctx.quick:
        rows_sizes, feature_sizes, feature_rows = [500, 1_000, 2_000], [5, 10, 20], 1_000
    else:
        rows_sizes, feature_sizes, feature_rows = (
            [10_000, 30_000, 100_000, 300_000],
            [10, 40, 160],
            10_000,
        )
    models = _available_models(ctx)
    records: list[dict[str, Any]] = []
    for spec, module, reason in models:
        if module is None:
            records.append(not_available(reason or "not available", model=spec.name, axis="*"))

    def point(axis: str, size: int, n_rows: int, n_features: int | None) -> None:
        ctx.progress(f"scaling: {axis} = {size} ({n_rows} aligned rows)")
        ds = synthetic_dataset(
            n_enterprises=int(n_rows * 1.25), n_bank_customers=n_rows, overlap=1.0,
            seed=ctx.seed, center_features=n_features, name=f"synthetic-{axis}-{size}",
        )  # fmt: skip
        with PeakMemory() as mem:
            session, alignment = open_session(ds)
        train, test, _ = split(session, ctx.seed)
        if axis == "rows":  # PSI does not depend on the number of features
            psi_bytes = alignment["bytes_bank_to_center"] + alignment["bytes_center_to_bank"]
            records.append(
                {
                    "axis": axis, "size": size, "model": "psi", "backend": "x25519",
                    "status": STATUS_OK, "dataset": ds.parameters,
                    "train_seconds": alignment["seconds"],
                    "bytes_bank_to_center": alignment["bytes_bank_to_center"],
                    "bytes_center_to_bank": alignment["bytes_center_to_bank"],
                    "bytes_total": psi_bytes, "round_trips": alignment["round_trips"],
                    **mem.as_dict(),
                }
            )  # fmt: skip
        for spec, module, _ in models:
            if module is not None:
                records.append(
                    _scaling_model(ctx, spec, module, session, train, test, ds, axis, size)
                )

    for n in rows_sizes:
        point("rows", n, n, None)
    for k in feature_sizes:
        point("center_features", k, feature_rows, k)
    return {
        "parameters": {
            "rows": rows_sizes,
            "center_features": feature_sizes,
            "rows_for_feature_axis": feature_rows,
            "overlap": 1.0,
            "n_enterprises": "1.25 x aligned rows",
            "repeats": f"{ctx.n_repeats} below 100k rows, 1 at or above",
        },
        "records": records,
        "fits": scaling_fits(records),
    }


def _scaling_model(
    ctx: BenchContext,
    spec: ModelSpec,
    module: Any,
    session: Any,
    train: np.ndarray,
    test: np.ndarray,
    ds: Dataset,
    axis: str,
    size: int,
) -> dict[str, Any]:
    backend = default_backend(spec, module, ctx)
    params = spec.params(ctx, "scaling")
    base = {"axis": axis, "size": size, "model": spec.name, "backend": backend}
    repeats = 1 if train.size + test.size >= 100_000 else ctx.n_repeats
    effective: dict[str, Any] = {}

    def once(_: int) -> dict[str, Any]:
        load = (load_average() or [None])[0]
        res = run_model(module, spec, session, train, test, backend=backend, params=params)
        effective.update(res["effective_params"])
        fed = res["federated"]
        n_iter = _iterations(res, res["effective_params"])
        seconds = float(fed["train_seconds"])
        b2c, c2b = int(fed["bytes_bank_to_center"]), int(fed["bytes_center_to_bank"])
        return {
            "train_seconds": seconds,
            "iterations": n_iter,
            "seconds_per_iteration": seconds / n_iter if n_iter else None,
            "bytes_bank_to_center": b2c,
            "bytes_center_to_bank": c2b,
            "bytes_total": b2c + c2b,
            "round_trips": int(fed["round_trips"]),
            **res["memory"],
            "load_average_1min": load,
        }

    try:
        timed = repeat_median(once, repeats, ctx.progress)
    except Exception as exc:  # noqa: BLE001 - one failing point must not lose the series
        ctx.progress(f"scaling: {spec.name} failed at {axis}={size}: {exc}")
        return error_record(exc, **base, parameters=params)
    med = timed["median"]
    ctx.progress(
        f"scaling: {spec.name} at {axis}={size}: {med['train_seconds']:.1f} s, "
        f"{med['bytes_total'] / 1e6:.1f} MB"
    )
    return {
        **base,
        "status": STATUS_OK,
        "parameters": effective,
        "dataset": ds.parameters,
        "n_train": int(train.size),
        "repeats": repeats,
        **med,
    }


def scaling_fits(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Growth exponents of time and bytes for each (axis, model, backend) series."""
    series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == STATUS_OK and "size" in r:
            series.setdefault((r["axis"], r["model"], r.get("backend", "")), []).append(r)
    fits = []
    for (axis, model, backend), rs in series.items():
        rs = sorted(rs, key=lambda r: r["size"])
        sizes = [r["size"] for r in rs]
        fits.append(
            {
                "axis": axis,
                "model": model,
                "backend": backend,
                "sizes": sizes,
                "time_exponent": growth_exponent(sizes, [r["train_seconds"] for r in rs]),
                "bytes_exponent": growth_exponent(sizes, [r["bytes_total"] for r in rs]),
            }
        )
    return fits


# --- primitives -----------------------------------------------------------------------------------


def _rate(fn: Callable[[], Any], count: int, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    return {
        "ops_per_s": count / t,
        "ms_per_op": 1e3 * t / count,
        "count": count,
        "repeats": repeats,
    }


def _prim(name: str, group: str, unit_note: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "group": group, "status": STATUS_OK, "note": unit_note, **values}


@register(
    "primitives", "PSI DH ops/s, Paillier / OU encryptions/s per path, CKKS costs, scoring rows/s"
)
def primitives_suite(ctx: BenchContext) -> dict[str, Any]:
    q = ctx.quick
    reps = 3 if q else 5
    records: list[dict[str, Any]] = []
    for name, fn in (
        ("psi", _prim_psi),
        ("paillier", _prim_paillier),
        ("ou", _prim_ou),
        ("ckks", _prim_ckks),
        ("scoring", _prim_scoring),
    ):
        ctx.progress(f"primitives: {name}")
        try:
            records.extend(fn(ctx, q, reps))
        except Exception as exc:  # noqa: BLE001
            records.append(error_record(exc, name=name, group=name))
            ctx.progress(f"primitives: {name} failed: {exc}")
    return {"parameters": {"quick": q, "repeats": reps}, "records": records}


def _prim_psi(ctx: BenchContext, q: bool, reps: int) -> list[dict[str, Any]]:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    from jointcredit.data.schema import TableSchema
    from jointcredit.data.uscc import generate_uscc
    from jointcredit.psi import ecdh
    from jointcredit.session import JointSession

    out = []
    n = 2_000 if q else 20_000
    exchange = X25519PrivateKey.generate().exchange
    peers = [X25519PrivateKey.generate().public_key().public_bytes_raw() for _ in range(500)]
    load = X25519PublicKey.from_public_bytes
    prim = _rate(lambda: [exchange(load(peers[i % 500])) for i in range(n)], n, reps)
    out.append(_prim("x25519_scalar_mult_1core", "psi", "cryptography X25519, one core", **prim))

    ids = [f"ID{i:08d}" for i in range(n)]
    points = ecdh.blind_ids(ids, ecdh.new_scalar(), os.urandom(32), n_jobs=1)
    scalar = ecdh.new_scalar()
    lib = _rate(lambda: ecdh.reblind(points, scalar, n_jobs=1), n, reps)
    lib["share_of_primitive"] = lib["ops_per_s"] / prim["ops_per_s"]
    out.append(_prim("psi_reblind_1core", "psi", "jointcredit.psi.reblind, one core", **lib))

    n_ids = 3_000 if q else 200_000
    rng = np.random.default_rng(ctx.seed)
    codes = np.array(generate_uscc(rng, int(n_ids * 1.5)), dtype=object)
    shared = n_ids // 2
    schema = TableSchema(id_col="id", label_col=None, feature_cols=(), id_kind="uscc")

    def table(x: np.ndarray) -> PartyTable:
        return PartyTable(ids=x, X=pd.DataFrame(index=pd.RangeIndex(len(x))), y=None, schema=schema)

    bank = table(codes[:n_ids].copy())
    center = table(np.concatenate([codes[:shared], codes[n_ids:]]))
    times = []
    summary: dict[str, Any] = {}
    for _ in range(1 if q or n_ids >= 100_000 else 3):
        session = JointSession.in_process(bank, center)
        start = time.perf_counter()
        session.align()
        times.append(time.perf_counter() - start)
        summary = session.transcript.summary("psi")
        correct = len(session.aligned_ids) == shared
    wall = statistics.median(times)
    cores = ecdh._jobs(None)
    ops = 2 * (bank.n_rows + center.n_rows)
    out.append(
        _prim(
            "psi_protocol", "psi", "full PSI through the session (hash, blind, re-blind, match)",
            bank_ids=bank.n_rows, center_ids=center.n_rows, intersection=shared,
            correct=bool(correct), seconds=wall, x25519_ops=ops, cores=cores,
            ops_per_s=ops / wall, ops_per_s_per_core=ops / wall / cores,
            share_of_primitive=ops / wall / cores / prim["ops_per_s"], **summary,
        )
    )  # fmt: skip
    return out


def _prim_paillier(ctx: BenchContext, q: bool, reps: int) -> list[dict[str, Any]]:
    from jointcredit.crypto.paillier import (
        FastEncryptor,
        generate_paillier_keypair,
    )

    out = []
    pub, priv = generate_paillier_keypair(2048)
    rng = np.random.default_rng(ctx.seed)
    n_phe = 10 if q else 40
    vals = [int(v) for v in rng.integers(0, 2**62, n_phe)]
    phe = _rate(lambda: [pub.phe.encrypt(v) for v in vals], n_phe, reps)
    out.append(
        _prim("paillier2048_encrypt_phe_default", "paillier", "phe encrypt, one core", **phe)
    )

    n_fast = 200 if q else 2_000
    vals = [int(v) for v in rng.integers(0, 2**62, n_fast)]
    with FastEncryptor(pub, n_jobs=1) as enc:
        fast = _rate(lambda: enc.encrypt_ints(vals), n_fast, reps)
        check = enc.encrypt_ints(vals[:5])
        cts = enc.encrypt_ints([int(v) for v in rng.integers(0, 2**40, 1_000)])
    fast["speedup_vs_phe"] = fast["ops_per_s"] / phe["ops_per_s"]
    fast["decrypts_correctly"] = priv.decrypt_ints(check) == vals[:5]
    out.append(_prim("paillier2048_encrypt_fast_public_1core", "paillier",
                     "DJN short exponent + fixed-base table, public key, one core", **fast))  # fmt: skip
    with FastEncryptor.for_private_key(priv, n_jobs=1) as enc:
        crt = _rate(lambda: enc.encrypt_ints(vals), n_fast, reps)
    crt["speedup_vs_phe"] = crt["ops_per_s"] / phe["ops_per_s"]
    out.append(_prim("paillier2048_encrypt_fast_crt_1core", "paillier",
                     "fast path with the key holder's CRT, one core", **crt))  # fmt: skip
    n_par = 600 if q else 12_000
    vals_par = [int(v) for v in rng.integers(0, 2**62, n_par)]
    with FastEncryptor.for_private_key(priv, n_jobs=2, parallel="processes") as enc:
        enc.warm_up()
        par = _rate(lambda: enc.encrypt_to_bytes(vals_par), n_par, max(2, reps - 2))
    par["speedup_vs_phe"] = par["ops_per_s"] / phe["ops_per_s"]
    out.append(_prim("paillier2048_encrypt_fast_crt_2proc", "paillier",
                     "fast path with CRT, 2 worker processes (what SecureBoost's bank uses)", **par))  # fmt: skip

    out += _additive_ops("paillier2048", "paillier", pub, priv, cts, q, reps,
                         ("ciphertext addition (gmpy2)", "decrypt with CRT (gmpy2)"))  # fmt: skip
    return out


def _additive_ops(
    prefix: str,
    group: str,
    pub: Any,
    priv: Any,
    cts: list[Any],
    q: bool,
    reps: int,
    notes: tuple[str, str],
) -> list[dict[str, Any]]:
    """Addition, decryption and packed decryption records of an additive scheme (Paillier / OU:
    same key and module surface)."""
    module = importlib.import_module(f"jointcredit.crypto.{group}")

    def adds() -> None:
        acc = cts[0]
        for c in cts:
            acc = pub.raw_add(acc, c)

    n_dec = 40 if q else 200
    out = [
        _prim(f"{prefix}_add", group, notes[0], **_rate(adds, len(cts), reps)),
        _prim(f"{prefix}_decrypt", group, notes[1],
              **_rate(lambda: priv.decrypt_ints(cts[:n_dec]), n_dec, reps)),
    ]  # fmt: skip
    per = module.slots_per_ciphertext(pub, 64)
    values = cts[: per * 4]
    packed = module.compress(pub, values, 64)
    dec = _rate(lambda: module.decompress_ints(priv, packed, 64, len(values)), len(values), reps)
    dec["slots_per_ciphertext"] = per
    out.append(_prim(f"{prefix}_packed_decrypt_per_value", group,
                     "64-bit slots: one decryption per packed ciphertext", **dec))  # fmt: skip
    return out


def _prim_ou(ctx: BenchContext, q: bool, reps: int) -> list[dict[str, Any]]:
    from jointcredit.crypto.ou import OUEncryptor, generate_ou_keypair

    pub, priv = generate_ou_keypair(2048)
    rng = np.random.default_rng(ctx.seed)
    n_enc = 200 if q else 4_000
    # 120-bit values: the size of SecureBoost's packed (g, h) plaintexts
    vals = [int(a) << 60 | int(b) for a, b in rng.integers(0, 2**60, (n_enc, 2))]
    out = []
    n_par = n_enc if q else 5 * n_enc
    for name, note, make in (
        ("ou2048_encrypt_public_1core", "short exponent + fixed-base tables, public key, one core",
         lambda: OUEncryptor(pub, n_jobs=1)),
        ("ou2048_encrypt_crt_1core", "the key holder's CRT (mod p^2 and q), one core",
         lambda: OUEncryptor.for_private_key(priv, n_jobs=1)),
        ("ou2048_encrypt_crt_2proc", "CRT, 2 forked workers (what SecureBoost's bank uses)",
         lambda: OUEncryptor.for_private_key(priv, n_jobs=2, parallel_threshold=256)),
    ):  # fmt: skip
        with make() as enc:
            enc.encrypt_ints(vals[:512])  # starts the workers outside the timing
            batch = vals * (n_par // n_enc) if enc.n_jobs > 1 else vals  # amortise the pool
            rate = _rate(lambda enc=enc, b=batch: enc.encrypt_to_bytes(b), len(batch), reps)
            rate["decrypts_correctly"] = priv.decrypt_ints(enc.encrypt_ints(vals[:5])) == vals[:5]
        out.append(_prim(name, "ou", note, **rate))
    cts = OUEncryptor(pub, n_jobs=1).encrypt_ints([int(v) for v in rng.integers(0, 2**40, 1_000)])
    out += _additive_ops("ou2048", "ou", pub, priv, cts, q, reps,
                         ("ciphertext multiplication mod n (gmpy2)",
                          "one exponentiation mod p^2 (gmpy2)"))  # fmt: skip
    return out


def _prim_ckks(ctx: BenchContext, q: bool, reps: int) -> list[dict[str, Any]]:
    from jointcredit.crypto.ckks import CKKSKeyOwner, CKKSParams, CKKSPeer

    out = []
    owner = CKKSKeyOwner(CKKSParams(), n_threads=1)
    peer = CKKSPeer.from_public_bytes(owner.public_context_bytes(), n_threads=1)
    slots = owner.slots
    rng = np.random.default_rng(ctx.seed)
    x = rng.uniform(-1, 1, slots)
    w = rng.uniform(-1, 1, slots)
    out.append(_prim("ckks_encrypt", "ckks", f"N=8192, {slots} slots per ciphertext",
                     **_rate(lambda: owner.encrypt(x), 1, reps), slots=slots))  # fmt: skip
    vecs = owner.encrypt(x)
    out.append(_prim("ckks_decrypt", "ckks", f"{slots} slots",
                     **_rate(lambda: owner.decrypt(vecs, slots), 1, reps), slots=slots))  # fmt: skip
    at_peer = peer.deserialize_vectors(owner.serialize_vectors(vecs))
    out.append(_prim("ckks_mul_plain", "ckks", "ciphertext x plaintext vector (with rescale)",
                     **_rate(lambda: peer.mul_plain(at_peer, w), 1, reps), slots=slots))  # fmt: skip
    n, d = (8_192 if q else 100_000), 20
    X = rng.uniform(-1, 1, (n, d))
    r = owner.encrypt(rng.uniform(-1, 1, n))
    r_peer = peer.deserialize_vectors(owner.serialize_vectors(r))
    xtr = _rate(
        lambda: peer.sum_arrays([peer.mul_plain(r_peer, X[:, j]) for j in range(d)]),
        1,
        1 if not q else 2,
    )
    out.append(_prim(f"ckks_xtr_{n}x{d}", "ckks", "sum_j X[:, j] * Enc(r): the hetero-LR gradient pattern",
                     seconds=xtr["ms_per_op"] / 1e3, rows=n, columns=d))  # fmt: skip
    out.append(_prim("ckks_ciphertext_bytes", "ckks", "one fresh serialized ciphertext",
                     bytes=len(owner.serialize_vectors(vecs[:1])), slots=slots))  # fmt: skip
    return out


def _scoring_record(
    name: str,
    note: str,
    session: Any,
    fn: Callable[[], Any],
    rows: np.ndarray,
    reps: int,
    **extra: Any,
) -> dict[str, Any]:
    mark = session.transcript.mark()
    rate = _rate(fn, rows.size, reps)
    cost = session.transcript.since(mark).summary()
    moved = cost["bytes_center_to_bank"] + cost["bytes_bank_to_center"]
    return _prim(
        name, "scoring", note, **rate, rows=int(rows.size),
        bytes_per_row=moved / reps / rows.size, round_trips_per_call=cost["round_trips"] / reps,
        **extra,
    )  # fmt: skip


def _prim_scoring(ctx: BenchContext, q: bool, reps: int) -> list[dict[str, Any]]:
    """Joint scoring throughput (rows per second) of each model type and scoring protocol.

    Models are trained in the plain reference mode (training cost is not the point here; the
    scoring protocols are the same whatever backend trained the model).
    """
    out: list[dict[str, Any]] = []
    n_rows = 1_000 if q else 12_000
    ds = synthetic_dataset(
        n_enterprises=int(n_rows * 1.25), n_bank_customers=n_rows, overlap=1.0, seed=ctx.seed
    )
    session, _ = open_session(ds)
    rows = np.arange(len(session.aligned_ids))
    train = rows[: min(2_000, rows.size)]
    models: dict[str, Any] = {}
    exact: dict[str, np.ndarray] = {}
    try:
        from jointcredit.learn.boosting import HeteroSecureBoost
    except ImportError as exc:
        out.append(
            not_available(f"secureboost: {exc}", name="secureboost_predict", group="scoring")
        )
    else:
        params = {**(_BOOST_QUICK if q else _BOOST_FULL), "backend": "plain"}
        boost = HeteroSecureBoost(**params).fit(session, train)
        models["secureboost"] = boost
        out.append(
            _scoring_record(
                "secureboost_predict",
                "joint routing (secureboost_predict): the center sends leaf-reachability bits; "
                "scores stay at the bank", session,
                lambda: exact.__setitem__("secureboost", boost.decision_function(session, rows)),
                rows, reps, trees=params["n_estimators"],
            )
        )  # fmt: skip
    try:
        from jointcredit.learn.linear import HeteroLogisticRegression
    except ImportError as exc:
        out.append(not_available(f"logistic: {exc}", name="logistic_predict", group="scoring"))
    else:
        lr = HeteroLogisticRegression(backend="plain", max_epochs=2, validation_fraction=0.0)
        lr.fit(session, train)
        models["linear"] = lr
        lr_scoring = copy.copy(lr)  # same fitted model, scored through the CKKS backend
        lr_scoring.backend = "ckks"
        out.append(
            _scoring_record(
                "logistic_predict",
                "hetero_lr_predict under CKKS: the bank's partial scores encrypted, the center "
                "adds its own", session,
                lambda: exact.__setitem__("linear", lr_scoring.decision_function(session, rows)),
                rows, reps, features=len(lr.coef_) + len(lr.center_features_),
            )
        )  # fmt: skip
    try:
        from jointcredit.scoring.encrypted import ScoreBank
    except ImportError as exc:
        out.append(not_available(f"jointcredit.scoring.encrypted is not importable ({exc})",
                                 name="encrypted_scoring", group="scoring"))  # fmt: skip
        return out
    for kind, model in models.items():
        result: dict[str, Any] = {}

        def once(model: Any = model, result: dict[str, Any] = result) -> None:
            side = ScoreBank(session.bank, model=model, rows=rows, backend="ckks")
            session.run(side)
            result["logits"] = side.logits

        rec = _scoring_record(
            f"encrypted_scoring_{kind}",
            "pre-authorization scoring protocol 'score' (CKKS): the bank decrypts only totals",
            session, once, rows, reps,
        )  # fmt: skip
        got = np.asarray(result["logits"], dtype=np.float64)
        ref = exact.get(kind)
        if ref is not None and got.shape == ref.shape:
            rec["max_abs_logit_error_vs_exact"] = float(np.max(np.abs(got - ref)))
        out.append(rec)
    return out
