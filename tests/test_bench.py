"""Benchmark suites end to end in CI-sized (--quick) configurations: schema and consistency.

Timings are never asserted (the machine is shared); what is checked is that every figure is
there, finite and consistent with the others and with an independent recomputation.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from jointcredit.bench import runner
from jointcredit.bench.suites import MODELS, ModelSpec, directory_dataset, synthetic_dataset
from jointcredit.cli_bench import bench_main

DEFAULT_CREDIT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "default_credit"
HAS_DC = (DEFAULT_CREDIT / "bank.csv").is_file()


def _bench(out: Path, *args: str) -> dict:
    code = bench_main([*args, "--quick", "--out", str(out)])
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert code == 0, [
        r.get("error")
        for s in results["suites"].values()
        for r in s.get("records", [])
        if r.get("error")
    ]
    return results


@pytest.fixture(scope="module")
def quality(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("quality")
    data = ["--data-dir", str(DEFAULT_CREDIT)] if HAS_DC else []
    return _bench(out, "--suite", "quality", "--models", "logistic", "secureboost", *data), out


@pytest.fixture(scope="module")
def speed_primitives(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("speed")
    return _bench(out, "--suite", "speed", "--suite", "primitives", "--models", "secureboost"), out


@pytest.fixture(scope="module")
def scaling(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("scaling")
    return _bench(out, "--suite", "scaling", "--models", "secureboost", "--backend", "plain"), out


def _finite_numbers(value: object, path: str = "") -> None:
    """Every number in the results is finite (JSON cannot hold NaN; None only where allowed)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_numbers(v, f"{path}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), path


def _check_envelope(results: dict, out: Path, suites: list[str]) -> None:
    assert results["schema"] == runner.SCHEMA
    assert results["quick"] is True and results["seed"] == 42 and results["repeats"] == 1
    m = results["machine"]
    assert m["cpu_count"] >= 1 and m["usable_cores"] >= 1 and m["cpu_model"]
    assert m["python"] and m["platform"]
    pk = results["packages"]
    for name in ("numpy", "scikit-learn", "lightgbm", "phe", "gmpy2", "tenseal", "cryptography"):
        assert pk[name], name
    assert set(results["git"]) >= {"commit", "dirty"}
    assert "--quick" in results["command"]
    assert list(results["suites"]) == suites
    for name in suites:
        s = results["suites"][name]
        assert s["status"] == "ok" and s["seconds"] >= 0 and s["parameters"]
        assert all(r["status"] in ("ok", "not_available") for r in s["records"])
    _finite_numbers(results)
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "# jointcredit benchmark results" in md
    for f in results["figures"]:
        png = (out / f).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
        assert f in md


def test_quality_schema_and_consistency(quality: tuple[dict, Path]) -> None:
    results, out = quality
    _check_envelope(results, out, ["quality"])
    suite = results["suites"]["quality"]
    recs = [r for r in suite["records"] if r["status"] == "ok"]
    expected = {("synthetic", "logistic"), ("synthetic", "secureboost")}
    if HAS_DC:
        expected |= {("default_credit", "logistic"), ("default_credit", "secureboost")}
    assert {(r["dataset"], r["model"]) for r in recs} == expected
    for r in recs:
        assert r["backend"] == {"logistic": "ckks", "secureboost": "paillier"}[r["model"]]
        for kind in ("federated", "centralized", "bank_only"):
            s = r[kind]
            assert 0.5 < s["auc"] <= 1.0 and 0.0 <= s["ks"] <= 1.0
            assert s["gini"] == pytest.approx(2 * s["auc"] - 1, abs=1e-12)
        for k in ("auc", "ks", "gini"):
            assert r["lift_over_bank_only"][k] == pytest.approx(
                r["federated"][k] - r["bank_only"][k]
            )
            assert r["gap_to_centralized"][k] == pytest.approx(
                r["centralized"][k] - r["federated"][k]
            )
        assert (
            r["split"]["n_test"] + r["split"]["n_train"]
            == suite["datasets"][r["dataset"]]["alignment"]["intersection_size"]
        )
        assert (
            r["round_trips"] > 0 and r["bytes_bank_to_center"] > 0 and r["bytes_center_to_bank"] > 0
        )
        assert r["parameters"]["backend"] == r["backend"]
    assert "| dataset | model | backend | AUC |" in (out / "results.md").read_text(encoding="utf-8")
    assert "plots/quality_auc.png" in results["figures"]


def _joined(dataset: str, params: dict) -> tuple[pd.DataFrame, np.ndarray, list[str], list[str]]:
    """Plaintext inner join of the two tables, in sorted-id order (what PSI aligns to)."""
    if dataset == "synthetic":
        ds = synthetic_dataset(
            n_enterprises=params["n_enterprises"], n_bank_customers=params["n_bank_customers"],
            overlap=params["overlap"], seed=params["seed"],
        )  # fmt: skip
    else:
        ds = directory_dataset(
            params["source"], max_bank_rows=params["max_bank_rows"], seed=params["sample_seed"]
        )
    bank = ds.bank.X.assign(_id=ds.bank.ids, _y=ds.bank.y)
    center = ds.center.X.add_prefix("c_").assign(_id=ds.center.ids)
    joined = bank.merge(center, on="_id").sort_values("_id", kind="stable").reset_index(drop=True)
    return (
        joined,
        joined["_y"].to_numpy(),
        list(ds.bank.X.columns),
        ["c_" + c for c in ds.center.X.columns],
    )


def test_centralized_auc_matches_an_independent_computation(quality: tuple[dict, Path]) -> None:
    """Re-fit the centralized reference from the recorded parameters on an independent join."""
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    results, _ = quality
    suite = results["suites"]["quality"]
    for r in (r for r in suite["records"] if r["status"] == "ok"):
        info = suite["datasets"][r["dataset"]]
        joined, y, bank_cols, center_cols = _joined(r["dataset"], info["parameters"])
        assert len(joined) == info["alignment"]["intersection_size"]
        sp = r["split"]
        train, test = train_test_split(
            np.arange(y.size), test_size=sp["test_size"], random_state=sp["seed"], stratify=y
        )
        train, test = np.sort(train), np.sort(test)
        assert int(y[test].sum()) == sp["test_bads"]
        X = joined[bank_cols + center_cols]
        ref = r["centralized_reference"]
        if r["model"] == "secureboost":
            assert ref["library"] == "lightgbm" and ref["params"]["num_threads"] == 1
            clf = lgb.LGBMClassifier(**ref["params"]).fit(X.to_numpy(np.float64)[train], y[train])
            p = clf.predict_proba(X.to_numpy(np.float64)[test])[:, 1]
        else:
            assert ref["library"] == "scikit-learn"
            fill = X.iloc[train].median()
            Xf = X.fillna(fill).fillna(0.0)
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
            p = clf.fit(Xf.iloc[train], y[train]).predict_proba(Xf.iloc[test])[:, 1]
        assert r["centralized"]["auc"] == pytest.approx(roc_auc_score(y[test], p), abs=1e-9), r[
            "model"
        ]


def test_speed_and_primitives(speed_primitives: tuple[dict, Path]) -> None:
    results, out = speed_primitives
    _check_envelope(results, out, ["speed", "primitives"])
    recs = results["suites"]["speed"]["records"]
    by_backend = {r["backend"]: r for r in recs}
    assert set(by_backend) == {"paillier", "plain", "paillier_phe", "ou"}
    assert by_backend["paillier_phe"]["status"] == "not_available"
    assert by_backend["paillier_phe"]["reason"]
    for b in ("paillier", "ou", "plain"):
        r = by_backend[b]
        m = r["median"]
        assert r["status"] == "ok" and r["unit"] == "tree" and r["repeats"] == len(r["runs"]) == 1
        assert m == {
            **r["runs"][0],
            **{k: m[k] for k in ("plaintext_seconds", "ratio_to_plaintext")},
        }
        assert m["iterations"] == r["parameters"]["n_estimators"]
        assert m["seconds_per_iteration"] == pytest.approx(m["train_seconds"] / m["iterations"])
        assert m["ratio_to_plaintext"] == pytest.approx(m["train_seconds"] / m["plaintext_seconds"])
        assert m["bytes_bank_to_center"] > 0 and m["round_trips"] > 0 and m["peak_rss_mb"] > 0
        assert "num_threads=1" in r["plaintext_equivalent"]["model"]
    # Same protocol, same messages: encryption changes the bytes, not the round trips.
    pl = by_backend["plain"]["median"]
    for b in ("paillier", "ou"):
        enc = by_backend[b]["median"]
        assert enc["round_trips"] == pl["round_trips"]
        assert enc["auc"] == pytest.approx(pl["auc"], abs=1e-12)  # the encrypted run is lossless
    for b in ("paillier", "ou"):
        floor = by_backend[b]["encryption_floor"]
        assert floor["seconds"] > 0 and math.isfinite(floor["share_of_train_time"])

    prims = {r["name"]: r for r in results["suites"]["primitives"]["records"]}
    psi = prims["psi_protocol"]
    assert psi["correct"] is True and psi["intersection"] == psi["bank_ids"] // 2
    assert psi["share_of_primitive"] > 0 and psi["round_trips"] == 2
    assert prims["paillier2048_encrypt_fast_public_1core"]["decrypts_correctly"] is True
    for name in ("public_1core", "crt_1core", "crt_2proc"):
        assert prims[f"ou2048_encrypt_{name}"]["decrypts_correctly"] is True
    assert prims["ou2048_packed_decrypt_per_value"]["slots_per_ciphertext"] >= 10
    fast = prims["paillier2048_encrypt_fast_crt_1core"]["ops_per_s"]
    assert prims["paillier2048_encrypt_phe_default"]["ops_per_s"] < fast
    for name in (
        "ckks_encrypt",
        "ckks_decrypt",
        "ckks_mul_plain",
        "paillier2048_add",
        "secureboost_predict",
        "logistic_predict",
    ):
        assert prims[name]["ops_per_s"] > 0 and prims[name]["ms_per_op"] > 0
    assert prims["ckks_ciphertext_bytes"]["bytes"] > 100_000
    # Encrypted scoring (CKKS) returns the same logits as the exact joint prediction.
    for kind in ("secureboost", "linear"):
        rec = prims[f"encrypted_scoring_{kind}"]
        assert rec["ops_per_s"] > 0 and rec["round_trips_per_call"] >= 2
        assert rec["max_abs_logit_error_vs_exact"] < 1e-2


def test_scaling_fits_growth_exponents(scaling: tuple[dict, Path]) -> None:
    results, out = scaling
    _check_envelope(results, out, ["scaling"])
    suite = results["suites"]["scaling"]
    params = suite["parameters"]
    recs = [r for r in suite["records"] if r["status"] == "ok"]
    rows = [r for r in recs if r["axis"] == "rows" and r["model"] == "secureboost"]
    assert [r["size"] for r in rows] == params["rows"]
    for r in rows:
        assert r["dataset"]["n_bank_customers"] == r["size"] and r["backend"] == "plain"
    feats = [r for r in recs if r["axis"] == "center_features" and r["model"] == "secureboost"]
    assert [r["dataset"]["center_features"] for r in feats] == params["center_features"]
    psi = [r for r in recs if r["model"] == "psi"]
    assert [r["size"] for r in psi] == params["rows"]
    fits = {(f["axis"], f["model"]): f for f in suite["fits"]}
    for key, series in ((("rows", "secureboost"), rows), (("rows", "psi"), psi)):
        f = fits[key]
        sizes = [r["size"] for r in series]
        assert f["time_exponent"] == pytest.approx(
            runner.growth_exponent(sizes, [r["train_seconds"] for r in series])
        )
    # PSI bytes grow linearly with the number of ids (exactly, up to envelope overhead).
    assert fits[("rows", "psi")]["bytes_exponent"] == pytest.approx(1.0, abs=0.1)
    assert {"plots/scaling_rows.png", "plots/scaling_center_features.png"} <= set(
        results["figures"]
    )
    assert "Fitted growth exponents" in (out / "results.md").read_text(encoding="utf-8")


def test_growth_exponent_and_medians() -> None:
    sizes = [1_000, 3_000, 10_000, 30_000]
    assert runner.growth_exponent(sizes, [2.0 * s**1.5 for s in sizes]) == pytest.approx(1.5)
    assert runner.growth_exponent([5], [1.0]) is None
    runs = [{"t": 3.0, "n": 2, "x": {"b": 1}, "s": "a"}, {"t": 1.0, "n": 4, "x": {"b": 5}, "s": "a"},
            {"t": 2.0, "n": 3, "x": {"b": 3}, "s": "a"}]  # fmt: skip
    assert runner.median_runs(runs) == {"t": 2.0, "n": 3, "x": {"b": 3}, "s": "a"}


def test_peak_memory_sees_an_allocation() -> None:
    with runner.PeakMemory(interval=0.01) as mem:
        block = np.ones(80_000_000 // 8)
        time.sleep(0.05)
    del block
    assert mem.as_dict()["rss_increase_mb"] >= 50


def test_unavailable_model_is_a_product_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = ModelSpec("fake", "jointcredit.learn._no_such_model", "epoch", ("ckks",), {})
    monkeypatch.setitem(MODELS, "fake", fake)
    ctx = runner.BenchContext(
        out_dir=tmp_path, quick=True, models=("fake",), progress=lambda _: None
    )
    result = runner.run_suite("speed", ctx)
    assert result["status"] == "ok"
    (rec,) = result["records"]
    assert rec["status"] == "not_available" and "_no_such_model" in rec["reason"]


def test_bad_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        bench_main(
            ["--suite", "quality", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "bank.csv" in capsys.readouterr().err
    assert bench_main(["--no-synthetic", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        bench_main(["--suite", "nonsense", "--out", str(tmp_path / "o")])


def test_plaintext_timing_imputes_for_linear_models() -> None:
    from jointcredit.bench.suites import _time_plaintext
    from jointcredit.learn.plaintext import logistic_classifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    X[::5, 1] = np.nan
    X[:, 2] = np.nan  # an all-missing column must not break the reference either
    y = (rng.random(300) < 0.3).astype(int)
    assert _time_plaintext(logistic_classifier, X, y, 1) > 0
