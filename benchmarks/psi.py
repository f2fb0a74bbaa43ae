"""PSI benchmark: both parties in one process on this machine, through the full message layer.

Measures ``JointSession.in_process(...).align()`` on two sets of valid USCCs (default 1,000,000 ×
1,000,000 with 50 % overlap), checks the result against the plaintext intersection, and compares
the achieved X25519 throughput per core with the single-core primitive rate measured in the same
run. Optionally sweeps the worker chunk size (``--sweep-chunks``).

    python benchmarks/psi.py                       # full size, writes benchmarks/results/psi.json
    python benchmarks/psi.py --n 100000 --out /tmp/psi.json
    python benchmarks/psi.py --n 0 --sweep-chunks 5000,20000,50000,100000,250000
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

import cryptography
import numpy as np
import pandas as pd
from cryptography.hazmat.backends.openssl import backend as openssl_backend
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from jointcredit.data.schema import PartyTable, TableSchema
from jointcredit.data.uscc import generate_uscc
from jointcredit.psi import ecdh
from jointcredit.psi.ecdh import PsiBankSide, PsiCenterSide
from jointcredit.session import JointSession


def machine_info() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    usable = usable_cores()
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "openssl": openssl_backend.openssl_version_text(),
        "numpy": np.__version__,
    }


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) so far of each live PSI pool worker, from /proc."""
    pool = ecdh._pool
    pids = list(pool._processes) if pool is not None else []  # type: ignore[attr-defined]
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return out


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def primitive_rate(n: int = 20_000, repeats: int = 3) -> tuple[float, float]:
    """Single-core X25519 multiplications per wall second and per CPU second (medians).

    Called exactly as the protocol calls it (public key from bytes, then exchange), so the ratio
    against the PSI's throughput isolates the protocol's own overhead.
    """
    exchange = X25519PrivateKey.generate().exchange
    load = X25519PublicKey.from_public_bytes
    points = [X25519PrivateKey.generate().public_key().public_bytes_raw() for _ in range(1000)]
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            exchange(load(points[i % 1000]))
        wall.append(n / (time.perf_counter() - start))
        cpu.append(n / (time.process_time() - start_cpu))
    return statistics.median(wall), statistics.median(cpu)


def make_tables(n: int, overlap: float, seed: int) -> tuple[PartyTable, PartyTable, set[str]]:
    rng = np.random.default_rng(seed)
    shared = int(round(n * overlap))
    codes = np.array(generate_uscc(rng, 2 * n - shared), dtype=object)
    bank_ids = codes[:n].copy()
    center_ids = np.concatenate([codes[:shared], codes[n:]])
    rng.shuffle(bank_ids)
    rng.shuffle(center_ids)

    def table(ids: np.ndarray) -> PartyTable:
        schema = TableSchema(id_col="id", label_col=None, feature_cols=(), id_kind="uscc")
        return PartyTable(
            ids=ids, X=pd.DataFrame(index=pd.RangeIndex(len(ids))), y=None, schema=schema
        )

    return table(bank_ids), table(center_ids), set(codes[:shared])


def run_psi(n: int, overlap: float, seed: int, n_jobs: int | None, chunk: int | None) -> dict:
    bank, center, expected = make_tables(n, overlap, seed)
    session = JointSession.in_process(bank, center)
    workers_before = worker_cpu_seconds()
    main_before = time.process_time()
    start = time.perf_counter()
    if n_jobs is None and chunk is None:
        session.align()
    else:
        session.endpoint.attach(PsiBankSide(session.bank, n_jobs=n_jobs, chunk_size=chunk))
        PsiCenterSide(session.center, n_jobs=n_jobs, chunk_size=chunk).run(
            session.channel.bind("psi")
        )
    wall = time.perf_counter() - start
    main_cpu = time.process_time() - main_before
    workers_after = worker_cpu_seconds()
    worker_cpu = sum(t - workers_before.get(pid, 0.0) for pid, t in workers_after.items())
    aligned = session.bank.aligned_ids
    correct = (
        aligned is not None
        and set(aligned) == expected
        and len(aligned) == len(expected)
        and np.array_equal(aligned, session.center.aligned_ids)
        and list(aligned) == sorted(aligned)
    )
    cores = n_jobs or usable_cores()
    ops = 2 * (bank.n_rows + center.n_rows)
    return {
        "bank_ids": bank.n_rows,
        "center_ids": center.n_rows,
        "intersection": len(aligned) if aligned is not None else None,
        "correct": bool(correct),
        "wall_seconds": round(wall, 2),
        "x25519_ops": ops,
        "ops_per_second": round(ops / wall),
        "ops_per_second_per_core": round(ops / wall / cores),
        "cores_used": cores,
        # CPU seconds are far less sensitive than wall time to other load on a shared machine.
        "cpu_seconds_main_process": round(main_cpu, 2),
        "cpu_seconds_workers": round(worker_cpu, 2),
        "ops_per_cpu_second": round(ops / max(main_cpu + worker_cpu, 1e-9)),
        # What the same CPU work would take on an otherwise idle machine: the main process's
        # share counted as serial (workers idle meanwhile), the workers' share split over cores.
        "projected_idle_wall_seconds": round(main_cpu + worker_cpu / cores, 1),
        **session.transcript.summary("psi"),
    }


def sweep_chunks(chunks: list[int], n_points: int, n_jobs: int | None, rounds: int) -> list[dict]:
    """Re-blinding throughput by chunk size (the protocol's dominant, purely parallel step).

    Chunk sizes are timed round-robin, ``rounds`` times each, so that load from other processes
    on a shared machine spreads over all sizes instead of biasing whichever ran during a spike.
    """
    scalar = ecdh.new_scalar()
    points = ecdh.blind_ids(
        [f"ID{i}" for i in range(n_points)], ecdh.new_scalar(), os.urandom(32), n_jobs=n_jobs
    )
    times: dict[int, list[float]] = {chunk: [] for chunk in chunks}
    for _ in range(rounds):
        for chunk in chunks:
            start = time.perf_counter()
            ecdh.reblind(points, scalar, n_jobs=n_jobs, chunk_size=chunk)
            times[chunk].append(time.perf_counter() - start)
    rows = []
    for chunk in chunks:
        median = statistics.median(times[chunk])
        rows.append(
            {
                "chunk_size": chunk,
                "median_seconds": round(median, 3),
                "all_seconds": [round(t, 3) for t in times[chunk]],
                "points_per_second": round(n_points / median),
            }
        )
        print(f"  chunk {chunk:>7}: {n_points / median:,.0f} points/s (median of {rounds})")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="IDs per party (0: skip the PSI)")
    parser.add_argument("--overlap", type=float, default=0.5, help="shared fraction of each set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--n-jobs", type=int, default=None, help="worker processes (default: all cores)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help=f"default {ecdh.DEFAULT_CHUNK_SIZE}"
    )
    parser.add_argument("--sweep-chunks", default="", help="comma-separated chunk sizes to time")
    parser.add_argument("--sweep-n", type=int, default=200_000, help="points per sweep timing")
    parser.add_argument("--sweep-rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/psi.json")
    args = parser.parse_args()

    result: dict = {
        "benchmark": "psi",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "parameters": {
            "n_per_party": args.n,
            "overlap": args.overlap,
            "seed": args.seed,
            "n_jobs": args.n_jobs,
            "chunk_size": args.chunk_size or ecdh.DEFAULT_CHUNK_SIZE,
            "match_bytes": ecdh.MATCH_BYTES,
        },
        "machine": machine_info(),
        "load_average_before": load_average(),
    }
    print("measuring the single-core X25519 primitive...", flush=True)
    wall_rate, cpu_rate = primitive_rate()
    result["primitive_ops_per_second_one_core"] = round(wall_rate)
    result["primitive_ops_per_cpu_second"] = round(cpu_rate)
    if args.sweep_chunks:
        print(f"chunk sweep on {args.sweep_n:,} points:", flush=True)
        chunks = [int(c) for c in args.sweep_chunks.split(",") if c]
        result["chunk_sweep"] = sweep_chunks(chunks, args.sweep_n, args.n_jobs, args.sweep_rounds)
    if args.n > 0:
        print(f"PSI {args.n:,} x {args.n:,} ids, overlap {args.overlap:.0%}...", flush=True)
        psi = run_psi(args.n, args.overlap, args.seed, args.n_jobs, args.chunk_size)
        primitive = result["primitive_ops_per_second_one_core"]
        psi["wall_efficiency_vs_primitive"] = round(psi["ops_per_second_per_core"] / primitive, 3)
        psi["cpu_efficiency_vs_primitive"] = round(
            psi["ops_per_cpu_second"] / result["primitive_ops_per_cpu_second"], 3
        )
        result["psi"] = psi
        print(
            f"  {psi['wall_seconds']} s wall, {psi['ops_per_second_per_core']:,} X25519 ops/s per "
            f"core (primitive {result['primitive_ops_per_second_one_core']:,}/s), "
            f"intersection {psi['intersection']:,}, correct={psi['correct']}, "
            f"{psi['bytes_center_to_bank'] / 1e6:.1f} MB center->bank, "
            f"{psi['bytes_bank_to_center'] / 1e6:.1f} MB bank->center, "
            f"{psi['round_trips']} round trips; {psi['ops_per_cpu_second']:,} ops per CPU "
            f"second, projected {psi['projected_idle_wall_seconds']} s on an idle machine",
            flush=True,
        )
    result["load_average_after"] = load_average()
    ecdh.shutdown_pool()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if args.n > 0 and not result["psi"]["correct"]:
        sys.exit("PSI result does not match the plaintext intersection")


if __name__ == "__main__":
    main()
