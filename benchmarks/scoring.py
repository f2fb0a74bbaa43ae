"""Encrypted pre-authorization scoring (protocol ``score``): throughput, bytes, accuracy, and the
leakage / accuracy trade-off of the noise output policy.

Configuration (issue 5): ``make_sme_data`` with 50,000 enterprises, all of them bank customers
(``overlap=1``); models trained on 12,000 random rows (plain reference backend: training is not
what is measured here) -- hetero LR, WOE scorecard, SecureBoost with 30 trees of depth 3; then
all 50,000 enterprises scored under CKKS (N = 8192, 160-bit modulus, 128-bit security), in
process, ``--repeats`` times each. Ids are aligned by the known intersection (PSI is benchmarked
in benchmarks/psi.py).

    /tmp/venv/bin/python benchmarks/scoring.py --repeats 3 --out benchmarks/results/scoring.json

Per model: median wall seconds and enterprises/s, CPU seconds of this process and
enterprises per CPU-second (with ``--n-jobs`` > 1 the forkserver's encryption workers are not
children of this process and their CPU is not counted), bytes each way and per enterprise,
round trips, the largest |PD - plaintext PD|. The machine is shared: the 1-minute load average is recorded
around every run, and CPU-second figures show what the protocol costs independent of the load.

Noise sweep (skip with ``--no-noise``): AUC / KS on the 38,000 held-out enterprises with the
center adding N(0, sigma^2) logit noise to its contribution (mean of 5 draws per level), and
what the bank can still infer about the center's contribution (the bank's estimate = received
logit - its own part): correlation and R^2 with the true contribution. The sweep runs the reference backend (the noise is added the
same way; CKKS adds only its 2^-16 flooding) so that it takes seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

N_ENTERPRISES = 50_000
TRAIN_ROWS = 12_000
NOISE_LEVELS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def open_session(n: int, seed: int):
    from jointcredit.data import LABEL_COL, load_party_table, make_sme_data
    from jointcredit.session import JointSession

    data = make_sme_data(n_enterprises=n, n_bank_customers=n, overlap=1.0, seed=seed)
    bank = load_party_table(data.bank, id_col="id", label_col=LABEL_COL, require_label=True)
    center = load_party_table(data.center, id_col="id")
    session = JointSession.in_process(bank, center)
    common = np.intersect1d(bank.ids.astype(str), center.ids.astype(str)).astype(object)
    session.bank.aligned_ids = common
    session.center.aligned_ids = common
    return session


def train_models(session, train_rows: np.ndarray, trees: int, depth: int) -> dict:
    from jointcredit.learn.boosting import HeteroSecureBoost
    from jointcredit.learn.linear import HeteroLogisticRegression, HeteroScorecard

    out = {}
    for name, make in (
        ("logistic", lambda: HeteroLogisticRegression(backend="plain")),
        ("scorecard", lambda: HeteroScorecard(backend="plain")),
        (
            "secureboost",
            lambda: HeteroSecureBoost(
                backend="plain", n_estimators=trees, max_depth=depth, max_bin=32,
                learning_rate=0.3, n_jobs=1, random_state=0,
            ),
        ),
    ):  # fmt: skip
        start = time.perf_counter()
        out[name] = make().fit(session, train_rows)
        print(f"trained {name} in {time.perf_counter() - start:.1f} s", flush=True)
    return out


def plain_logits(session, model, rows: np.ndarray) -> np.ndarray:
    """Both halves in the clear (benchmark only: reads both parties' tables)."""
    from jointcredit.learn.boosting import HeteroSecureBoost
    from jointcredit.learn.linear import bank_scores, center_scores

    if isinstance(model, HeteroSecureBoost):
        part = session.center.model_parts[model.model_id_]
        Xb = session.bank.aligned_features(rows)[model.model_.feature_names].to_numpy()
        Xc = session.center.aligned_features(rows)[part.feature_names].to_numpy()
        out = np.full(rows.size, model.model_.init_score)
        for t, tree in enumerate(model.model_.trees):
            leaves, reach = model.model_.route(Xb, t)
            if t in part.trees:
                reach = reach & part.reachability(Xc, t)[1]
            out += np.array([tree[k]["value"] for k in leaves])[np.argmax(reach, axis=1)]
        return out
    part = session.center.model_parts[model.model_id_]
    return bank_scores(model.bank_model(), session.bank.aligned_features(rows)) + center_scores(
        part, session.center.aligned_features(rows)
    )


def sigmoid(u: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def score_once(session, model, rows, n_jobs: int) -> dict:
    from jointcredit.scoring.encrypted import ScoreBank

    side = ScoreBank(session.bank, model=model, rows=rows, n_jobs=n_jobs)
    mark = session.transcript.mark()
    load_before = os.getloadavg()[0]
    cpu0 = cpu_seconds()
    start = time.perf_counter()
    try:
        session.run(side)
    finally:
        side.close()
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu0
    cost = session.transcript.since(mark).summary("score")
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "bytes_bank_to_center": cost["bytes_bank_to_center"],
        "bytes_center_to_bank": cost["bytes_center_to_bank"],
        "round_trips": cost["round_trips"],
        "logits": side.logits,
        "columns": side.view.n_columns,
    }


def noise_sweep(session, models, test_rows, levels, draws_per_level: int = 5) -> dict:
    from jointcredit.report.metrics import auc, ks
    from jointcredit.scoring.encrypted import CenterScoringPolicy, ScoreBank

    y = session.bank.aligned_labels(test_rows).astype(np.int64)
    session.center.services["scoring_policy"] = CenterScoringPolicy(allow_plain=True)
    out = {}
    try:
        for name, model in models.items():
            exact = plain_logits(session, model, test_rows)
            side0 = ScoreBank(session.bank, model=model, rows=test_rows, backend="plain")
            X = session.bank.aligned_features(test_rows)
            local, cols = side0.view.columns(X)
            # the bank's own part of the logit; the rest is the center's contribution
            own = local + (cols[:, 0] if side0.view.kind == "linear" else 0.0)
            center_part = exact - own
            rows_out = []
            for sigma in levels:
                draws = []
                for _ in range(draws_per_level if sigma > 0 else 1):
                    side = ScoreBank(
                        session.bank, model=model, rows=test_rows, backend="plain",
                        output="noise" if sigma > 0 else "exact", noise_std=float(sigma),
                    )  # fmt: skip
                    session.run(side)
                    p = sigmoid(side.logits)
                    estimate = side.logits - own
                    draws.append(
                        (
                            auc(y, p),
                            ks(y, p),
                            np.corrcoef(estimate, center_part)[0, 1],
                            1.0 - np.var(estimate - center_part) / max(np.var(center_part), 1e-300),
                        )
                    )
                mean = np.mean(np.asarray(draws, dtype=np.float64), axis=0)
                rows_out.append(
                    {
                        "noise_std": sigma,
                        "draws": len(draws),
                        "auc": float(mean[0]),
                        "ks": float(mean[1]),
                        "center_contribution_std": float(center_part.std()),
                        "bank_estimate_corr": float(mean[2]),
                        "bank_estimate_r2": float(mean[3]),
                        "score_points_std": float(sigma * 50 / np.log(2)),
                    }
                )
            base = rows_out[0]["auc"]
            for r in rows_out:
                r["auc_cost"] = base - r["auc"]
            out[name] = rows_out
            print(
                f"noise sweep {name}: "
                + ", ".join(
                    f"sigma {r['noise_std']}: AUC {r['auc']:.4f} (-{r['auc_cost']:.4f}) "
                    f"R2 {r['bank_estimate_r2']:.3f}"
                    for r in rows_out
                ),
                flush=True,
            )
    finally:
        session.center.services.clear()
    return out


def versions() -> dict:
    import numpy
    import pandas
    import tenseal

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "tenseal": tenseal.__version__,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=N_ENTERPRISES)
    ap.add_argument("--train-rows", type=int, default=TRAIN_ROWS)
    ap.add_argument("--trees", type=int, default=30)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-jobs", type=int, default=1, help="bank encryption processes")
    ap.add_argument("--models", default="logistic,scorecard,secureboost")
    ap.add_argument("--no-noise", action="store_true", help="skip the noise sweep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scoring.json"))
    args = ap.parse_args()

    session = open_session(args.n, args.seed)
    n = len(session.aligned_ids)
    rng = np.random.default_rng(args.seed)
    train = np.sort(rng.choice(n, size=min(args.train_rows, n // 2), replace=False))
    test = np.setdiff1d(np.arange(n), train)
    wanted = args.models.split(",")
    models = {
        k: v for k, v in train_models(session, train, args.trees, args.depth).items() if k in wanted
    }
    rows = np.arange(n)

    results: dict = {}
    for name, model in models.items():
        expected = sigmoid(plain_logits(session, model, rows))
        runs = []
        for r in range(args.repeats):
            run = score_once(session, model, rows, args.n_jobs)
            run["max_pd_error"] = float(np.abs(sigmoid(run.pop("logits")) - expected).max())
            runs.append(run)
            print(
                f"{name} run {r + 1}/{args.repeats}: {run['wall_seconds']:.2f} s wall "
                f"({n / run['wall_seconds']:,.0f}/s), {run['cpu_seconds']:.2f} s CPU "
                f"({n / run['cpu_seconds']:,.0f}/CPU-s), load {run['loadavg_1min'][0]:.1f}, "
                f"{(run['bytes_bank_to_center'] + run['bytes_center_to_bank']) / n:,.0f} B/ent, "
                f"max |dPD| {run['max_pd_error']:.1e}",
                flush=True,
            )
        if runs[0]["columns"] > 1:
            # how many of the center's split indicators enter each enterprise's total with a
            # nonzero weight (the bank's exact total is one equation in that many unknown bits)
            from jointcredit.scoring.encrypted import bank_view

            _, cols = bank_view(model).columns(session.bank.aligned_features(rows))
            nonzero = np.abs(cols) > 1e-12
            active = nonzero.sum(axis=1)
            weights = np.abs(cols[nonzero])
            unknown_bits = {
                "weight_abs_p10_p50_p90": np.percentile(weights, [10, 50, 90]).tolist(),
                "min": int(active.min()),
                "median": float(np.median(active)),
                "share_with_at_most_1": float((active <= 1).mean()),
                "share_with_at_most_5": float((active <= 5).mean()),
            }
        else:
            unknown_bits = None
        wall = statistics.median(r["wall_seconds"] for r in runs)
        cpu = statistics.median(r["cpu_seconds"] for r in runs)
        b2c = statistics.median(r["bytes_bank_to_center"] for r in runs)
        c2b = statistics.median(r["bytes_center_to_bank"] for r in runs)
        results[name] = {
            "n_enterprises": n,
            "encrypted_columns_per_enterprise": runs[0]["columns"],
            "median_wall_seconds": wall,
            "median_enterprises_per_second": n / wall,
            "median_cpu_seconds": cpu,
            "enterprises_per_cpu_second": n / cpu,
            "bytes_bank_to_center": b2c,
            "bytes_center_to_bank": c2b,
            "bytes_per_enterprise": (b2c + c2b) / n,
            "round_trips": runs[0]["round_trips"],
            "max_pd_error": max(r["max_pd_error"] for r in runs),
            "center_bits_per_enterprise": unknown_bits,
            "runs": runs,
        }
    sweep = {} if args.no_noise else noise_sweep(session, models, test, NOISE_LEVELS)

    from jointcredit.scoring.encrypted import FLOOD_STD, SCORING_CKKS_PARAMS

    report = {
        "benchmark": "scoring/synthetic_sme",
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "parameters": {
            "n_enterprises": n,
            "train_rows": int(train.size),
            "secureboost": {"n_estimators": args.trees, "max_depth": args.depth, "max_bin": 32},
            "ckks": {
                "poly_modulus_degree": SCORING_CKKS_PARAMS.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(SCORING_CKKS_PARAMS.coeff_mod_bit_sizes),
                "global_scale_bits": SCORING_CKKS_PARAMS.global_scale_bits,
                "flood_std": FLOOD_STD,
            },
            "repeats": args.repeats,
            "n_jobs": args.n_jobs,
            "alignment": "known intersection (PSI not measured here)",
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_end": list(os.getloadavg()),
            **versions(),
        },
        "results": results,
        "noise_sweep": sweep,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    for name, r in results.items():
        print(
            f"  {name:<12} {r['median_enterprises_per_second']:>9,.0f}/s wall "
            f"{r['enterprises_per_cpu_second']:>9,.0f}/CPU-s  {r['bytes_per_enterprise']:>8,.0f} B/ent "
            f" {r['round_trips']} round trips  max|dPD| {r['max_pd_error']:.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
