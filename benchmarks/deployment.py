"""Round-trip latency and job wall time through a real Flower deployment on 127.0.0.1.

Starts a SuperLink (TLS, SuperNode authentication) and one bank SuperNode as separate processes,
exactly as ``jointcredit serve`` / ``join`` do, in three configurations:

``default``   Flower's defaults: ``--isolation subprocess`` (a fresh ``flwr-clientapp`` process
              per message) and the SuperNode's fixed 3 s poll.
``process``   ``--isolation process`` with jointcredit's long-lived ClientApp worker; stock poll.
``tuned``     ``process`` plus adaptive SuperNode polling (``jointcredit.federation.fastnode``):
              what ``jointcredit join`` does by default.

``echo`` measures seconds per round trip (a job of N envelopes of S bytes each way);
``train`` runs the bank's SecureBoost training job (PSI, fit, test-set prediction) through the
deployment and in process on the same data, and reports both wall times and their ratio.

    python benchmarks/deployment.py --mode echo                      # all three configurations
    python benchmarks/deployment.py --mode train --configs tuned     # default_credit, 30 trees
    python benchmarks/deployment.py --mode all --out benchmarks/results/deployment.json

Timings on this shared 2-core machine are noisy (other jobs run too); the script reports
medians over ``--repeats`` and the load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import flwr

from jointcredit.data import load_party_table, make_sme_data
from jointcredit.federation import deploy, jobs
from jointcredit.session import JointSession

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "default_credit"
CONFIGS = {
    "default": {"isolation": "subprocess", "fast_poll": False},
    "process": {"isolation": "process", "fast_poll": False},
    "tuned": {"isolation": "process", "fast_poll": True},
}
SECUREBOOST = {
    "n_estimators": 30,
    "max_depth": 3,
    "max_bin": 32,
    "learning_rate": 0.3,
    "backend": "paillier",
    "key_bits": 2048,
    "random_state": 0,
}


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "flwr": flwr.__version__,
        "loadavg": os.getloadavg(),
    }


def write_tables(root: Path, data_dir: Path | None, rows: int | None) -> dict:
    """CSV files for the center and the bank; returns loader arguments."""
    if data_dir is not None and (data_dir / "bank.csv").exists():
        import pandas as pd

        bank = pd.read_csv(data_dir / "bank.csv")
        center = pd.read_csv(data_dir / "center.csv")
        if rows:
            bank = bank.iloc[:rows]
        bank.to_csv(root / "bank.csv", index=False)
        center.to_csv(root / "center.csv", index=False)
        return {"id_col": "id", "label_col": "y", "id_kind": "plain", "source": str(data_dir)}
    data = make_sme_data(n_enterprises=20_000, n_bank_customers=rows or 6_000, seed=0)
    data.bank.to_csv(root / "bank.csv", index=False)
    data.center.to_csv(root / "center.csv", index=False)
    return {"id_col": "id", "label_col": data.label_col, "id_kind": "uscc", "source": "synthetic"}


class Deployment:
    """One center and one bank, in a given configuration, for the duration of a ``with``."""

    def __init__(self, root: Path, config: str, tables: dict) -> None:
        self.root = root
        self.config = config
        self.tables = tables

    def __enter__(self) -> Deployment:
        t = self.tables
        self.center = deploy.CenterDeployment(
            deploy.CenterSettings(
                workdir=self.root / "c",
                data=self.root / "center.csv",
                port=deploy.free_port(),
                id_col=t["id_col"],
                id_kind=t["id_kind"],
                hold=5.0,
            )
        ).start()
        key = self.root / "bank.key"
        if not key.exists():
            deploy.generate_node_key(key)
        deploy.register_bank(self.root / "c", key.with_name("bank.key.pub"), "bank")
        assert self.center.tls is not None
        self.bank = deploy.BankDeployment(
            deploy.BankSettings(
                workdir=self.root / "b",
                server=self.center.address,
                ca_cert=self.center.tls.ca_cert,
                key=key,
                data=self.root / "bank.csv",
                id_col=t["id_col"],
                label_col=t["label_col"],
                id_kind=t["id_kind"],
                **CONFIGS[self.config],
            )
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Let the center hear the end of the last job before the bank's node goes away.
        deadline = time.monotonic() + 30
        while any(t.is_alive() for t in self.center.service.jobs.values()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.bank.stop()
        self.center.stop()
        shutil.rmtree(self.root / "c", ignore_errors=True)
        shutil.rmtree(self.root / "b", ignore_errors=True)

    def job(self, kind: str, params: dict) -> dict:
        start = time.perf_counter()
        summary = jobs.run_bank_job(
            self.root / "b", kind, params, start_timeout=180, step_timeout=1800
        )
        summary["wall_seconds"] = round(time.perf_counter() - start, 3)
        if summary["status"] != "ok":
            raise RuntimeError(f"{kind} job failed: {summary.get('error')}")
        summary["center"] = self.center_record(summary["job_id"])
        return summary

    def center_record(self, job_id: str) -> dict:
        """The center's record of a job (written when the center heard the job end)."""
        path = self.root / "c" / "banks" / "bank" / "jobs" / f"{job_id}.json"
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return json.loads(path.read_text())


def bench_echo(
    root: Path, tables: dict, configs: list[str], rounds: int, size: int, repeats: int
) -> dict:
    results = {}
    for config in configs:
        with Deployment(root, config, tables) as dep:
            dep.job("echo", {"rounds": 2, "size": size})  # warm up: node online, caches
            runs = [dep.job("echo", {"rounds": rounds, "size": size}) for _ in range(repeats)]
        # The center times the echo step: the `start` request plus `rounds` pings, each one
        # Flower round trip center -> SuperLink -> SuperNode -> ClientApp -> back.
        per_rt = [r["center"]["steps"][0]["seconds"] / (rounds + 1) for r in runs]
        results[config] = {
            **CONFIGS[config],
            "rounds": rounds,
            "bytes_each_way": size,
            "seconds_per_round_trip_median": statistics.median(per_rt),
            "seconds_per_round_trip_runs": [round(x, 4) for x in per_rt],
            "job_wall_seconds_runs": [r["wall_seconds"] for r in runs],
        }
        print(
            f"echo {config:8s}: {statistics.median(per_rt):.3f} s per round trip ({per_rt})",
            flush=True,
        )
    return results


def bench_train(root: Path, tables: dict, configs: list[str], params: dict, repeats: int) -> dict:
    center = load_party_table(
        root / "center.csv", id_col=tables["id_col"], id_kind=tables["id_kind"]
    )
    bank = load_party_table(
        root / "bank.csv",
        id_col=tables["id_col"],
        label_col=tables["label_col"],
        id_kind=tables["id_kind"],
    )
    in_process = []
    for i in range(repeats):
        session = JointSession.in_process(bank, center)
        start = time.perf_counter()
        ref = jobs.train_job(session, params, root / f"ref{i}")
        in_process.append(
            {
                "wall_seconds": time.perf_counter() - start,
                "round_trips": session.transcript.round_trips,
                "test": ref["test"],
            }
        )
        print(
            f"train in-process: {in_process[-1]['wall_seconds']:.1f} s, {in_process[-1]['round_trips']} round trips",
            flush=True,
        )
    results: dict = {
        "params": params,
        "rows": {"bank": bank.n_rows, "center": center.n_rows},
        "in_process": {
            "wall_seconds_median": statistics.median(r["wall_seconds"] for r in in_process),
            "runs": in_process,
        },
    }
    for config in configs:
        with Deployment(root, config, tables) as dep:
            dep.job("echo", {"rounds": 2, "size": 64})  # node online
            runs = [dep.job("train", params) for _ in range(repeats)]
        wall = statistics.median(r["wall_seconds"] for r in runs)
        results[config] = {
            **CONFIGS[config],
            "wall_seconds_median": wall,
            "round_trips": runs[0]["round_trips"],
            "ratio_to_in_process": wall / results["in_process"]["wall_seconds_median"],
            "test": runs[0]["test"],
            "runs": [{k: r[k] for k in ("wall_seconds", "round_trips", "seconds")} for r in runs],
        }
        print(
            f"train {config:8s}: {wall:.1f} s, {runs[0]['round_trips']} round trips, "
            f"{results[config]['ratio_to_in_process']:.2f}x in-process",
            flush=True,
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("echo", "train", "all"), default="echo")
    ap.add_argument("--configs", default="default,process,tuned")
    ap.add_argument("--train-configs", default="tuned")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA, help="default_credit dir (else synthetic)")
    ap.add_argument("--rows", type=int, default=None, help="first N bank rows only")
    ap.add_argument("--trees", type=int, default=SECUREBOOST["n_estimators"])
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/deployment.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="jcb"))
    report: dict = {"machine": machine(), "command": " ".join(sys.argv)}
    try:
        report["data"] = write_tables(root, args.data, args.rows)
        if args.mode in ("echo", "all"):
            report["echo"] = bench_echo(
                root, report["data"], args.configs.split(","), args.rounds, args.size, args.repeats
            )
        if args.mode in ("train", "all"):
            params = {
                "model": "secureboost",
                "test_size": 0.3,
                "seed": 42,
                "hyperparameters": {
                    **SECUREBOOST,
                    "n_estimators": args.trees,
                    "n_jobs": args.n_jobs,
                },
            }
            report["train"] = bench_train(
                root, report["data"], args.train_configs.split(","), params, args.repeats
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
