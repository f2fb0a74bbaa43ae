"""Micro-benchmarks of the crypto primitives (Paillier: phe vs the fast path; CKKS via TenSEAL).

Run:  python benchmarks/primitives_crypto.py [--quick] [--out PATH]

Prints a table and writes JSON (default ``benchmarks/results/primitives_crypto.json``) with the
median of several repeats for every figure, plus machine info, load averages and package
versions, because the development machine is shared and figures move with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from phe import paillier as phe_paillier

from jointcredit.crypto.ckks import CKKSKeyOwner, CKKSParams, CKKSPeer
from jointcredit.crypto.paillier import (
    FastEncryptor,
    _Tables,
    compress,
    decompress_ints,
    generate_paillier_keypair,
    slots_per_ciphertext,
)


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs."""
    return median_times(fn, repeats)[0]


def median_times(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall and CPU time (s) of ``fn()`` over ``repeats`` runs.

    CPU time (this process, all its threads) is what one core costs even when the shared
    machine is busy; wall time is what a user waits and the only meaningful figure for work
    spread over several cores.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("numpy", "gmpy2", "phe", "tenseal", "jointcredit"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gmp": gmpy2.mp_version(),
        "versions": versions,
        "loadavg_start": list(os.getloadavg()),
    }


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.data: dict[str, Any] = {}

    def add(self, key: str, value: Any, label: str) -> None:
        self.data[key] = value
        self.rows.append((key, label))
        print(f"  {key:<48} {label}", flush=True)


def per_op(seconds: float, count: int, cpu: float | None = None) -> dict[str, float]:
    out = {"ms_per_op": 1e3 * seconds / count, "ops_per_s": count / seconds}
    if cpu is not None:
        out["cpu_ms_per_op"] = 1e3 * cpu / count
    return out


def fmt(d: dict[str, float]) -> str:
    cpu = f"  (cpu {d['cpu_ms_per_op']:.4f})" if "cpu_ms_per_op" in d else ""
    return f"{d['ms_per_op']:.4f} ms/op{cpu}  {d['ops_per_s']:,.0f} ops/s"


def bench_paillier_single(rep: Report, pub: Any, priv: Any, quick: bool) -> dict[str, float]:
    """phe's default encryption vs the fast path on one core; returns the phe figures."""
    print("Paillier-2048, one core", flush=True)
    reps = 3 if quick else 5
    rng = np.random.default_rng(0)

    n_phe = 10 if quick else 30
    vals = [int(v) for v in rng.integers(-(2**62), 2**62, n_phe)]
    t, c = median_times(lambda: [pub.phe.encrypt(v) for v in vals], reps)
    phe_enc = per_op(t, n_phe, c)
    rep.add("paillier.phe_encrypt", phe_enc, fmt(phe_enc))

    n_fast = 500 if quick else 2000
    vals = [int(v) for v in rng.integers(-(2**62), 2**62, n_fast)]
    configs = [
        ("public", 448, 8),
        ("public", 448, 10),
        ("public", 448, 11),
        ("crt", 448, 10),
        ("public", 1024, 10),  # DJN's original ~n/2-bit exponent, for comparison
    ]
    for mode, ebits, w in configs:
        t0 = time.perf_counter()
        if mode == "crt":
            enc = FastEncryptor.for_private_key(priv, exponent_bits=ebits, window_bits=w, n_jobs=1)
        else:
            enc = FastEncryptor(pub, exponent_bits=ebits, window_bits=w, n_jobs=1)
        build = time.perf_counter() - t0
        assert priv.decrypt_ints(enc.encrypt_ints(vals[:5])) == vals[:5]
        t, c = median_times(lambda enc=enc: enc.encrypt_ints(vals), reps)
        res = per_op(t, n_fast, c) | {
            "table_build_s": build,
            "speedup_vs_phe": phe_enc["ms_per_op"] / (1e3 * t / n_fast),
            "cpu_speedup_vs_phe": phe_enc["cpu_ms_per_op"] / (1e3 * c / n_fast),
        }
        rep.add(
            f"paillier.fast_encrypt_1core.{mode}.e{ebits}.w{w}",
            res,
            f"{fmt(res)}  x{res['speedup_vs_phe']:.1f} vs phe (cpu "
            f"x{res['cpu_speedup_vs_phe']:.1f})  build {build:.2f}s",
        )

    # workers under spawn/forkserver need the table: rebuild it, or ship it pickled?
    tables = FastEncryptor(pub, n_jobs=1)._tables
    t_build = median_time(lambda: _Tables(tables.spec), 3)
    t0 = time.perf_counter()
    blob = pickle.dumps(tables.rows, protocol=pickle.HIGHEST_PROTOCOL)
    t_dump = time.perf_counter() - t0
    t0 = time.perf_counter()
    pickle.loads(blob)
    t_load = time.perf_counter() - t0
    rep.add(
        "paillier.table_w10",
        {
            "rebuild_s": t_build,
            "pickle_mb": len(blob) / 1e6,
            "pickle_s": t_dump,
            "unpickle_s": t_load,
        },
        f"rebuild {t_build:.2f}s vs pickle {len(blob) / 1e6:.1f} MB "
        f"({t_dump:.2f}s + {t_load:.2f}s unpickle, plus the pipe)",
    )
    return phe_enc


def bench_paillier_parallel(rep: Report, pub: Any, priv: Any, quick: bool) -> None:
    """n_jobs=2 against n_jobs=1, interleaved run by run so load drift hits both alike."""
    print("Paillier-2048, two workers (ratio to one core measured interleaved)", flush=True)
    reps = 3 if quick else 5
    n_par = 4000 if quick else 12000
    vals = [int(v) for v in np.random.default_rng(1).integers(0, 2**62, n_par)]
    singles = {
        "public": FastEncryptor(pub, n_jobs=1),
        "crt": FastEncryptor.for_private_key(priv, n_jobs=1),
    }
    for method in ("threads", "fork", "forkserver", "spawn"):
        kw: dict[str, Any] = (
            {"parallel": "threads"}
            if method == "threads"
            else {"parallel": "processes", "start_method": method}
        )
        for mode in ("public", "crt"):
            if mode == "crt":
                enc = FastEncryptor.for_private_key(priv, n_jobs=2, **kw)
            else:
                enc = FastEncryptor(pub, n_jobs=2, **kw)
            one = singles[mode]
            with enc:
                t0 = time.perf_counter()
                enc.warm_up()
                cold = time.perf_counter() - t0
                t_par, t_one = [], []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    cts = enc.encrypt_ints(vals)
                    t_par.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    one.encrypt_ints(vals)
                    t_one.append(time.perf_counter() - t0)
                assert priv.decrypt_ints(cts[-3:]) == vals[-3:]
            tp, t1 = statistics.median(t_par), statistics.median(t_one)
            res = per_op(tp, n_par) | {
                "pool_start_s": cold,
                "one_core_ms_per_op": 1e3 * t1 / n_par,
                "speedup_vs_1core": t1 / tp,
            }
            rep.add(
                f"paillier.fast_encrypt_2workers.{mode}.{method}",
                res,
                f"{fmt(res)}  x{res['speedup_vs_1core']:.2f} vs 1 core "
                f"({res['one_core_ms_per_op']:.4f} ms/op)  pool start {cold:.2f}s",
            )


def bench_paillier_ops(rep: Report, pub: Any, priv: Any, quick: bool) -> None:
    print("Paillier-2048, other operations", flush=True)
    reps = 3 if quick else 5
    rng = np.random.default_rng(2)
    enc = FastEncryptor(pub, n_jobs=1)
    cts = enc.encrypt_ints([int(v) for v in rng.integers(0, 2**40, 2000)])
    n2 = pub.nsquare

    def adds() -> None:
        acc = cts[0]
        for c in cts:
            acc = acc * c % n2

    t, c = median_times(adds, reps)
    res = per_op(t, len(cts), c)
    rep.add("paillier.add", res, fmt(res))
    t, c = median_times(lambda: [pub.raw_mul_const(c, 123456789) for c in cts[:500]], reps)
    res = per_op(t, 500, c)
    rep.add("paillier.mul_const_27bit", res, fmt(res))

    n_dec = 50 if quick else 200
    t, c = median_times(lambda: priv.decrypt_ints(cts[:n_dec]), reps)
    dec = per_op(t, n_dec, c)
    rep.add("paillier.decrypt_gmpy2_crt", dec, fmt(dec))
    t = median_time(lambda: priv.decrypt_ints(cts[:n_dec], n_jobs=2), reps)
    res = per_op(t, n_dec) | {"speedup_vs_1thread": dec["ms_per_op"] / (1e3 * t / n_dec)}
    rep.add(
        "paillier.decrypt_gmpy2_crt_2threads",
        res,
        f"{fmt(res)}  x{res['speedup_vs_1thread']:.2f} vs 1 thread",
    )
    phe_cts = [phe_paillier.EncryptedNumber(pub.phe, int(c)) for c in cts[:n_dec]]
    t, c = median_times(lambda: [priv.phe.decrypt(e) for e in phe_cts], reps)
    res = per_op(t, n_dec, c)
    rep.add("paillier.decrypt_phe", res, fmt(res))

    # packed: 64-bit slots, Horner compression then one decryption per packed ciphertext
    slot_bits = 64
    per = slots_per_ciphertext(pub, slot_bits)
    group = cts[: per * 4]
    t_c, c_c = median_times(lambda: compress(pub, group, slot_bits), reps)
    packed = compress(pub, group, slot_bits)
    t_d, c_d = median_times(lambda: decompress_ints(priv, packed, slot_bits, len(group)), reps)
    res = {
        "slots_per_ciphertext": per,
        "compress_ms_per_value": 1e3 * t_c / len(group),
        "compress_cpu_ms_per_value": 1e3 * c_c / len(group),
        "decrypt_ms_per_packed_ciphertext": 1e3 * t_d / len(packed),
        "decrypt_cpu_ms_per_packed_ciphertext": 1e3 * c_d / len(packed),
        "decrypt_ms_per_value": 1e3 * t_d / len(group),
        "decrypt_values_per_s": len(group) / t_d,
    }
    rep.add(
        "paillier.packed_64bit_slots",
        res,
        f"{per} slots/ct: compress {res['compress_ms_per_value']:.3f} ms/value, decrypt "
        f"{res['decrypt_ms_per_packed_ciphertext']:.2f} ms/ct = "
        f"{res['decrypt_ms_per_value']:.3f} ms/value",
    )
    blob = pub.ciphertexts_to_bytes(cts)
    t_s = median_time(lambda: pub.ciphertexts_to_bytes(cts), reps)
    t_p = median_time(lambda: pub.ciphertexts_from_bytes(blob), reps)
    res = {
        "bytes_per_ciphertext": pub.ciphertext_width,
        "serialize_us_per_ct": 1e6 * t_s / len(cts),
        "parse_us_per_ct": 1e6 * t_p / len(cts),
    }
    rep.add(
        "paillier.wire",
        res,
        f"{pub.ciphertext_width} B/ct, serialize {res['serialize_us_per_ct']:.1f} us, parse "
        f"{res['parse_us_per_ct']:.1f} us",
    )


def bench_ckks(rep: Report, quick: bool) -> None:
    print("CKKS N=8192 (60,40,40,60), scale 2^40, 4096 slots, n_threads=1", flush=True)
    reps = 5 if quick else 15
    owner = CKKSKeyOwner(CKKSParams(), n_threads=1)
    pub_bytes = owner.public_context_bytes()
    peer = CKKSPeer.from_public_bytes(pub_bytes, n_threads=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 4096)
    w = rng.uniform(-1, 1, 4096)

    def timed(key: str, fn: Callable[[], Any], note: str = "") -> None:
        t, c = median_times(fn, reps)
        rep.add(
            key, {"ms": 1e3 * t, "cpu_ms": 1e3 * c}, f"{1e3 * t:.3f} ms (cpu {1e3 * c:.3f}){note}"
        )

    timed("ckks.encrypt_4096", lambda: owner.encrypt(x))
    vecs = owner.encrypt(x)
    timed("ckks.decrypt_4096", lambda: owner.decrypt(vecs, 4096))
    at_peer = peer.deserialize_vectors(owner.serialize_vectors(vecs))
    timed("ckks.mul_plain_4096", lambda: peer.mul_plain(at_peer, w), "  incl. encode + rescale")
    prod = peer.mul_plain(at_peer, w)
    prod2 = peer.mul_plain(at_peer, x)
    timed("ckks.add_4096", lambda: peer.add(prod, prod2))
    timed("ckks.add_plain_4096", lambda: peer.add_plain(at_peer, w))
    timed("ckks.rerandomize_4096", lambda: peer.rerandomize(prod))
    fresh = owner.serialize_vectors(vecs)
    after = peer.serialize_vectors(peer.rerandomize(prod))
    t_s = median_time(lambda: owner.serialize_vectors(vecs), reps)
    t_d = median_time(lambda: peer.deserialize_vectors(fresh), reps)
    rep.add(
        "ckks.ciphertext_bytes",
        {
            "fresh": len(fresh),
            "after_mul_plain": len(after),
            "fresh_bytes_per_slot": len(fresh) / 4096,
            "serialize_ms": 1e3 * t_s,
            "deserialize_ms": 1e3 * t_d,
        },
        f"fresh {len(fresh) / 1e3:.0f} kB ({len(fresh) / 4096:.0f} B/slot), after product "
        f"{len(after) / 1e3:.0f} kB; serialize {1e3 * t_s:.2f} ms, deserialize {1e3 * t_d:.2f} ms",
    )
    got = owner.decrypt(peer.deserialize_vectors(after), 4096)
    err = float(np.max(np.abs(got - x * w)))
    rel = float(np.median(np.abs(got - x * w) / np.maximum(np.abs(x * w), 1e-12)))
    rep.add(
        "ckks.precision_depth1",
        {"max_abs_error": err, "median_rel_error": rel},
        f"max abs error {err:.2e}, median relative {rel:.2e} (values in [-1, 1])",
    )
    # X^T r for 100k x 20, per-column products (the hetero-LR pattern)
    n, d = (20_000 if quick else 100_000), 20
    X = rng.uniform(-1, 1, (n, d))
    r_enc = peer.deserialize_vectors(owner.serialize_vectors(owner.encrypt(rng.uniform(-1, 1, n))))
    t, c = median_times(
        lambda: peer.sum_arrays([peer.mul_plain(r_enc, X[:, j]) for j in range(d)]), 3
    )
    rep.add(
        f"ckks.xtr_{n}x{d}",
        {"s": t, "cpu_s": c},
        f"{t:.2f} s (cpu {c:.2f}) for sum_j X[:, j] * Enc(r), {-(-n // 4096)} ciphertexts",
    )

    sizes = {
        "public_no_relin_no_galois": len(pub_bytes),
        "public_with_relin": len(owner.public_context_bytes(relin_keys=True)),
        "owner_secret_context": len(owner.to_bytes()),
    }
    t0 = time.perf_counter()
    with_galois = CKKSKeyOwner(CKKSParams(), galois_keys=True, n_threads=1)
    t_gal = time.perf_counter() - t0
    sizes["public_with_galois"] = len(with_galois.public_context_bytes())
    sizes["galois_keygen_s"] = t_gal
    rep.add(
        "ckks.context_bytes",
        sizes,
        ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items() if k != "galois_keygen_s")
        + f", Galois keygen {t_gal:.1f} s",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller batches")
    ap.add_argument("--out", default="benchmarks/results/primitives_crypto.json")
    ap.add_argument(
        "--only",
        choices=["all", "paillier", "parallel", "ckks"],
        default="all",
        help="run one section (parallel: the two-worker Paillier figures only)",
    )
    args = ap.parse_args(argv)
    info = machine_info()
    print(
        f"{info['cpu']} x{info['cpu_count']}, Python {info['python']}, load {info['loadavg_start']}"
    )
    rep = Report()
    t0 = time.perf_counter()
    if args.only in ("all", "paillier", "parallel"):
        pub, priv = generate_paillier_keypair(2048)
        if args.only in ("all", "paillier"):
            bench_paillier_single(rep, pub, priv, args.quick)
        bench_paillier_parallel(rep, pub, priv, args.quick)
        if args.only in ("all", "paillier"):
            bench_paillier_ops(rep, pub, priv, args.quick)
    if args.only in ("all", "ckks"):
        bench_ckks(rep, args.quick)
    info["loadavg_end"] = list(os.getloadavg())
    info["wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "only": args.only,
        "machine": info,
        "results": rep.data,
    }
    out.write_text(json.dumps(payload, indent=2, default=float))
    print(f"load at end {info['loadavg_end']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
