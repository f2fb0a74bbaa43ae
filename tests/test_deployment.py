"""A real Flower deployment on 127.0.0.1, started and stopped by this test.

``jointcredit serve`` (SuperLink with TLS and SuperNode authentication, the center's ServerApp
worker), two ``jointcredit join`` banks (each a SuperNode process plus its ClientApp worker)
and an unregistered third node, all as separate processes on random free ports. Both banks run
an alignment and a small SecureBoost training job through the deployment at the same time; each
bank's results must equal the in-process run of the same job with the same seed, and the
unregistered node must be refused. Every process is stopped (by process group) at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jointcredit.data import load_party_table, make_sme_data
from jointcredit.federation import deploy, guardlink, jobs
from jointcredit.session import JointSession

pytestmark = pytest.mark.slow

TRAIN_PARAMS = {
    "model": "secureboost",
    "test_size": 0.3,
    "seed": 3,
    "hyperparameters": {
        "n_estimators": 2,
        "max_depth": 2,
        "max_bin": 8,
        "min_child_samples": 5,
        "n_jobs": 1,
        "random_state": 7,
    },
}


class Processes:
    """CLI processes in their own process groups; stop() leaves nothing running."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "jointcredit.cli_federation", *args],
            stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        self.procs.append((name, proc, log))
        return proc

    def call(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jointcredit.cli_federation", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, _ in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Belt and braces: Flower processes the CLIs started, if a CLI died without cleanup.
        for pid_file in self.root.rglob("*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _wait_for(predicate, timeout: float, what: str, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {n}:\n{procs.log(n)[-2000:]}" for n, _, _ in procs.procs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture
def root():
    # Short paths: the bank's job runner listens on a Unix socket under its work directory.
    path = Path(tempfile.mkdtemp(prefix="jcd"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_two_banks_on_a_real_deployment(root):
    data = make_sme_data(n_enterprises=1500, n_bank_customers=560, overlap=0.85, seed=21)
    data.center.to_csv(root / "center.csv", index=False)
    # Two banks of one city: different but overlapping customer books.
    data.bank.iloc[:300].to_csv(root / "bank_a.csv", index=False)
    data.bank.iloc[220:].sample(frac=1.0, random_state=2).to_csv(root / "bank_b.csv", index=False)
    label = data.label_col
    # Post-loan monitoring: bank-b's book holds enterprises consented to b and others consented
    # to a only; the center has a risk event for each of them.
    center_ids = set(data.center["id"])
    b_book = [i for i in data.bank.iloc[220:]["id"] if i in center_ids]
    monitoring = {"bank-b": set(b_book[:20]), "bank-a": set(b_book[20:40])}
    # Model development needs model_training consent for every row a bank trains on.
    training = {
        "bank-a": set(data.bank.iloc[:300]["id"]),
        "bank-b": set(data.bank.iloc[220:]["id"]),
    }
    pd.DataFrame(
        [
            (i, bank, purpose, "2020-01-01", "2099-12-31")
            for purpose, grants in (("post_loan_monitoring", monitoring), ("training", training))
            for bank, ids in grants.items()
            for i in sorted(ids)
        ],
        columns=["id", "bank", "purpose", "granted_at", "expires_at"],
    ).to_csv(root / "consents.csv", index=False)
    pd.DataFrame(
        {"id": b_book[:40], "event_type": "dishonest_debtor_listed", "date": "2025-06-15"}
    ).to_csv(root / "events.csv", index=False)
    port = deploy.free_port()
    procs = Processes(root)
    t0 = time.monotonic()
    marks = {}
    try:
        serve = procs.start(
            "serve", "serve", "--data", str(root / "center.csv"), "--workdir", str(root / "c"),
            "--port", str(port), "--hold", "5", "--consents", str(root / "consents.csv"),
            "--center-events", str(root / "events.csv"),
        )  # fmt: skip
        _wait_for(lambda: (root / "c" / "run" / "service.json").exists(), 90, "serve", procs)
        assert serve.poll() is None
        marks["serve"] = time.monotonic() - t0
        ca = root / "c" / "tls" / "ca.pem"

        done = procs.call("bank", "keygen", str(root / "a.key"))
        assert done.returncode == 0, done.stderr
        for name in ("b", "x"):
            deploy.generate_node_key(root / f"{name}.key")
        for name in ("a", "b"):
            done = procs.call(
                "bank", "register", str(root / f"{name}.key.pub"), "--name", f"bank-{name}",
                "--workdir", str(root / "c"),
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "registered (node " in done.stdout
        banks = json.loads((root / "c" / "banks.json").read_text())
        assert set(banks) == {"bank-a", "bank-b"}

        for name in ("a", "b", "x"):
            procs.start(
                f"join-{name}", "join", "--server", f"127.0.0.1:{port}", "--ca", str(ca),
                "--key", str(root / f"{name}.key"), "--data", str(root / f"bank_{name if name != 'x' else 'a'}.csv"),
                "--workdir", str(root / name), "--label-col", label,
            )  # fmt: skip

        _wait_for(
            lambda: all((root / n / "run" / "supernode.pid").exists() for n in ("a", "b")),
            60,
            "the banks' SuperNodes",
            procs,
        )
        marks["joined"] = time.monotonic() - t0
        flower_pids = [int(p.read_text()) for p in root.rglob("*.pid")]
        assert len(flower_pids) >= 3  # the SuperLink and two SuperNodes

        # Both banks align and train at the same time.
        def run(name: str, *args: str) -> subprocess.Popen:
            out = open(root / f"run-{name}.json", "wb")  # noqa: SIM115
            return subprocess.Popen(
                [sys.executable, "-m", "jointcredit.cli_federation", "run", "--workdir",
                 str(root / name), "--start-timeout", "90", *args],
                stdout=out, stderr=open(root / f"run-{name}.err", "wb"), env=procs.env,  # noqa: SIM115
            )  # fmt: skip

        def outcome(name: str, proc: subprocess.Popen) -> dict:
            if proc.wait(240) != 0:
                # Everything needed to read a CI failure: the job's log and both sides' logs.
                logs = [("run", (root / f"run-{name}.err").read_text(errors="replace"))]
                logs += [(n, procs.log(n)) for n in ("serve", f"join-{name}")]
                node = root / name / "logs" / "supernode.log"
                logs.append(
                    ("supernode", node.read_text(errors="replace") if node.exists() else "")
                )
                raise AssertionError("\n".join(f"--- {n}:\n{t[-2500:]}" for n, t in logs))
            return json.loads((root / f"run-{name}.json").read_text())

        aligning = {n: run(n, "--job", "align") for n in ("a", "b")}
        aligned = {n: outcome(n, p) for n, p in aligning.items()}
        marks["aligned"] = time.monotonic() - t0
        training = {
            n: run(n, "--job", "train", "--params", json.dumps(TRAIN_PARAMS)) for n in ("a", "b")
        }
        trained = {n: outcome(n, p) for n, p in training.items()}
        marks["trained"] = time.monotonic() - t0
        # The center records a job once it has heard the bank's runner report the end.
        _wait_for(
            lambda: all(
                len(list((root / "c" / "banks" / f"bank-{n}" / "jobs").glob("*.json"))) == 2
                for n in ("a", "b")
            ),
            60,
            "the center's job records",
            procs,
        )

        # Flower's Control API answers clients on the center's host only (a non-local client
        # reaches the Fleet API alone; unit-tested in test_federation). If someone there stops
        # the service run, the center starts a new one and serves the next job.
        superlink_log = (root / "c" / "logs" / "superlink.log").read_text(errors="replace")
        assert guardlink.GUARD_NOTICE in superlink_log
        service = json.loads((root / "c" / "run" / "service.json").read_text())
        stopped = subprocess.run(
            [deploy.flower_tool("flwr"), "stop", str(service["run_id"]), "jointcredit"],
            env=deploy.flower_env(root / "c" / "flwr"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        _wait_for(
            lambda: (
                json.loads((root / "c" / "run" / "service.json").read_text())["run_id"]
                != service["run_id"]
            ),
            60,
            "a new service run",
            procs,
        )
        # The job is submitted right after the hand-over: the stopped run's long poll may still
        # be held in the bank's relay and take the job's first step; the new run serves it.
        echo = outcome("a", run("a", "--job", "echo", "--rounds", "3"))
        assert echo["status"] == "ok", echo
        reoffered = "offering it again" in (root / "run-a.err").read_text(errors="replace")
        print("echo step re-offered after the hand-over:", reoffered)
        marks["recovered"] = time.monotonic() - t0

        # Bank b monitors its book with the model it trained: flags only for its own consents.
        model_b = str(Path(trained["b"]["results_dir"]) / "model.pkl")
        monitored = outcome(
            "b",
            run(
                "b", "--job", "monitor", "--model", model_b, "--book", str(root / "bank_b.csv"),
                "--as-of", "2025-06-30",
            ),
        )  # fmt: skip
        marks["monitored"] = time.monotonic() - t0
        _wait_for(
            lambda: len(list((root / "c" / "banks" / "bank-b" / "jobs").glob("*.json"))) == 3,
            60,
            "the center's record of the monitor job",
            procs,
        )

        # Meanwhile the node nobody registered was refused by the SuperLink; its join exited.
        joiner = {n: p for n, p, _ in procs.procs}["join-x"]
        _wait_for(
            lambda: joiner.poll() is not None, 90, "the unregistered node to be refused", procs
        )
        assert joiner.returncode != 0
        node_log = (root / "x" / "logs" / "supernode.log").read_text(errors="replace")
        assert "Failed to initialize the connection to the SuperLink" in node_log
        marks["refused"] = time.monotonic() - t0
    finally:
        procs.stop()
        marks["stopped"] = time.monotonic() - t0
        print("deployment test phases (s since start):", {k: round(v, 1) for k, v in marks.items()})

    center = load_party_table(root / "center.csv")
    for name in ("a", "b"):
        bank = load_party_table(root / f"bank_{name}.csv", label_col=label)
        assert aligned[name]["status"] == "ok", aligned[name]
        assert trained[name]["status"] == "ok", trained[name]
        # The same job in one process, same data and seeds.
        session = JointSession.in_process(bank, center)
        reference = jobs.train_job(session, TRAIN_PARAMS, root / f"ref-{name}")
        assert aligned[name]["intersection_size"] == trained[name]["intersection_size"]
        assert trained[name]["intersection_size"] == reference["intersection_size"]
        got = np.load(Path(trained[name]["results_dir"]) / "test_proba.npy")
        want = np.load(root / f"ref-{name}" / "test_proba.npy")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert trained[name]["test"]["auc"] == pytest.approx(reference["test"]["auc"], abs=1e-12)
        # The center kept its own model part for this bank, under this bank's name only.
        center_jobs = list((root / "c" / "banks" / f"bank-{name}" / "jobs").glob("*.json"))
        kinds = sorted({json.loads(p.read_text())["kind"] for p in center_jobs})
        assert kinds == (
            ["align", "echo", "train"] if name == "a" else ["align", "monitor", "train"]
        )
    assert aligned["a"]["intersection_size"] != aligned["b"]["intersection_size"]
    assert not (root / "c" / "banks" / "x").exists()
    audit = [json.loads(line) for line in (root / "c" / "governance" / "audit.jsonl").open()]
    assert sum(e["action"] == "job_finished" for e in audit) == 6
    assert monitored["status"] == "ok", monitored
    out = Path(monitored["results_dir"])
    flags = pd.read_csv(out / "events.csv", dtype={"id": str})
    assert set(flags["id"]) == monitoring["bank-b"]
    book = pd.read_csv(out / "book.csv", dtype={"id": str})
    assert set(book["id"]) == monitoring["bank-b"]
    assert (book["status"] == "red").all()
    excluded = json.loads((out / "state.json").read_text())["excluded"]
    assert monitoring["bank-a"] <= {i for i, r in excluded.items() if r == "no_monitoring_consent"}
    delivered = [e["details"] for e in audit if e["action"] == "risk_events_delivered"]
    assert [(d["bank"], d["flags"], d["withheld_no_consent"]) for d in delivered] == [
        ("bank-b", 20, 20)
    ]
    assert not any(e["action"] == "job_failed" for e in audit)
    # Nothing left running.
    for pid in flower_pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
