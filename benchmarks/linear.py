"""Hetero logistic regression (and optionally the scorecard): CKKS vs Paillier vs plain.

Issue 3's configuration: UCI default-credit split (bank.csv / center.csv), stratified 70/30
split of the aligned rows (seed 42), 10 epochs, mini-batches of 4096 rows, no early stopping
(fixed epochs so that time per epoch is comparable), estimator defaults otherwise. Reports wall
time of training, time per epoch, bytes each way, round trips, test AUC / KS of the federated
model, of scikit-learn logistic regression on the joined features (``centralized``) and on the
bank's features (``bank_only``), and the Paillier / CKKS time ratio.

    /tmp/venv/bin/python benchmarks/linear.py --out benchmarks/results/linear.json

Timings on a shared machine are noisy: the load average before and after each run is recorded,
and ``--repeats`` reports the median wall time. ``--dataset synthetic`` runs the project's
synthetic SME data instead (make_sme_data defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "default_credit"


def open_session(dataset: str, data_dir: Path, seed: int) -> Any:
    from jointcredit.data import load_party_table
    from jointcredit.session import JointSession

    if dataset == "default_credit":
        bank = load_party_table(data_dir / "bank.csv", id_kind="plain", label_col="y")
        center = load_party_table(data_dir / "center.csv", id_kind="plain")
    else:
        from jointcredit.data import make_sme_data

        data = make_sme_data(seed=seed)
        bank = load_party_table(data.bank, label_col=data.label_col)
        center = load_party_table(data.center)
    session = JointSession.in_process(bank, center)
    start = time.perf_counter()
    session.align()
    print(f"aligned {len(session.aligned_ids)} rows in {time.perf_counter() - start:.1f} s")
    return session


def split(session: Any, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    y = session.bank.aligned_labels()
    rows = np.arange(y.size)
    train, test = train_test_split(rows, test_size=test_size, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


def machine() -> dict[str, Any]:
    import gmpy2
    import tenseal

    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "tenseal": getattr(tenseal, "__version__", "?"),
        "gmpy2": gmpy2.version(),
    }


def run_once(session: Any, train: np.ndarray, test: np.ndarray, params: dict[str, Any]) -> dict:
    from jointcredit.learn.linear import train_and_evaluate

    load_before = os.getloadavg()
    start = time.perf_counter()
    result = train_and_evaluate(session, train, test, **params)
    wall = time.perf_counter() - start
    result.pop("estimator", None)
    result["wall_seconds_with_evaluation"] = wall
    result["load_average_before"] = load_before
    result["load_average_after"] = os.getloadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("default_credit", "synthetic"), default="default_credit")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--backends", default="ckks,paillier", help="comma list of ckks,paillier,plain")
    ap.add_argument("--model", choices=("logistic", "scorecard"), default="logistic")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--test-size", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=42, help="train/test split seed")
    ap.add_argument("--n-jobs", type=int, default=2, help="Paillier encryption processes")
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/linear.json"))
    args = ap.parse_args(argv)

    if args.dataset == "default_credit" and not args.data_dir.is_dir():
        print(f"data not found: {args.data_dir}", file=sys.stderr)
        return 2
    session = open_session(args.dataset, args.data_dir, seed=0)
    train, test = split(session, args.test_size, args.seed)
    report: dict[str, Any] = {
        "benchmark": "hetero logistic regression",
        "dataset": args.dataset,
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "machine": machine(),
        "split": {
            "test_size": args.test_size,
            "seed": args.seed,
            "stratified": True,
            "n_train": int(train.size),
            "n_test": int(test.size),
        },  # fmt: skip
        "runs": {},
    }
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        params = {
            "model": args.model,
            "backend": backend,
            "max_epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "validation_fraction": 0.0,
            "n_jobs": args.n_jobs,
        }
        runs = []
        for i in range(args.repeats):
            res = run_once(session, train, test, params)
            fed = res["federated"]
            print(
                f"{backend} run {i + 1}: train {fed['train_seconds']:.1f} s wall, "
                f"{fed['train_cpu_seconds']:.1f} s CPU "
                f"({fed['train_seconds'] / res['epochs']:.2f} s/epoch), AUC {fed['auc']:.4f} "
                f"(centralized {res['centralized']['auc']:.4f}, bank only "
                f"{res['bank_only']['auc']:.4f}), {fed['round_trips']} round trips, "
                f"{fed['bytes_bank_to_center'] / 1e6:.1f} MB bank->center, "
                f"{fed['bytes_center_to_bank'] / 1e6:.1f} MB center->bank, "
                f"load {res['load_average_before'][0]:.1f}",
                flush=True,
            )
            runs.append(res)
        seconds = [r["federated"]["train_seconds"] for r in runs]
        best = runs[int(np.argsort(seconds)[len(seconds) // 2])]
        report["runs"][backend] = {
            "params": params,
            "train_seconds_median": statistics.median(seconds),
            "train_seconds_all": seconds,
            "seconds_per_epoch": statistics.median(seconds) / best["epochs"],
            "train_cpu_seconds_median": statistics.median(
                r["federated"]["train_cpu_seconds"] for r in runs
            ),
            "federated": best["federated"],
            "centralized": best["centralized"],
            "bank_only": best["bank_only"],
            "auc_gap_to_centralized": best["federated"]["auc"] - best["centralized"]["auc"],
            "load_average": [r["load_average_before"] for r in runs],
        }
    done = report["runs"]
    if "ckks" in done and "paillier" in done:
        report["paillier_over_ckks_time"] = (
            done["paillier"]["train_seconds_median"] / done["ckks"]["train_seconds_median"]
        )
        report["paillier_over_ckks_cpu"] = (
            done["paillier"]["train_cpu_seconds_median"] / done["ckks"]["train_cpu_seconds_median"]
        )
        print(
            f"Paillier / CKKS training time: {report['paillier_over_ckks_time']:.1f}x wall, "
            f"{report['paillier_over_ckks_cpu']:.1f}x CPU"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=_json) + "\n", "utf-8")
    print(f"wrote {args.out}")
    return 0


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
