"""Suite registry and the machinery every benchmark figure shares.

A suite is a function ``(ctx: BenchContext) -> dict`` registered under a name with
:func:`register`. It returns ``{"parameters": ..., "records": [...], ...}``; the runner adds the
suite's wall time and status, and :func:`run` writes one ``results.json`` holding every suite's
records next to the machine they ran on (CPU model, cores, memory, load), the package versions,
the git commit and the exact command. Timings come from :func:`repeat_median`: a shared 2-core
machine is noisy, so every timed figure is the median of repeated runs, with the runs kept.

Records carry a ``status``: ``"ok"``, ``"not_available"`` (a model type or backend that is not
installed or not implemented: a product answer, with a ``reason``) or ``"error"`` (it crashed;
the message is kept and the command exits non-zero).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = "jointcredit.bench/1"
Progress = Callable[[str], None]
SuiteFn = Callable[["BenchContext"], dict[str, Any]]

#: Packages whose versions every results file records (absent ones are recorded as null).
PACKAGES = (
    "jointcredit",
    "numpy",
    "pandas",
    "scikit-learn",
    "lightgbm",
    "phe",
    "gmpy2",
    "tenseal",
    "cryptography",
    "flwr",
    "matplotlib",
)

STATUS_OK = "ok"
STATUS_NOT_AVAILABLE = "not_available"
STATUS_ERROR = "error"


# --- context and registry ---------------------------------------------------------------------


def stderr_progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class BenchContext:
    """What a suite needs to know about the run (and nothing about other suites)."""

    out_dir: Path
    quick: bool = False
    seed: int = 42
    repeats: int | None = None
    data_dirs: list[Path] = field(default_factory=list)
    synthetic: bool = True
    models: tuple[str, ...] | None = None
    backend: str | None = None
    progress: Progress = stderr_progress

    @property
    def n_repeats(self) -> int:
        """Timing repeats: explicit, else 1 for ``--quick`` and 3 for full runs."""
        if self.repeats is not None:
            return max(1, int(self.repeats))
        return 1 if self.quick else 3

    def wants_model(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class Suite:
    name: str
    fn: SuiteFn
    description: str


_SUITES: dict[str, Suite] = {}


def register(name: str, description: str) -> Callable[[SuiteFn], SuiteFn]:
    """Register a suite under ``name`` (the ``--suite`` value)."""

    def wrap(fn: SuiteFn) -> SuiteFn:
        _SUITES[name] = Suite(name, fn, description)
        return fn

    return wrap


def registered_suites() -> dict[str, Suite]:
    """Registered suites in registration order (importing :mod:`.suites` registers them)."""
    import importlib

    importlib.import_module("jointcredit.bench.suites")
    return dict(_SUITES)


# --- records -------------------------------------------------------------------------------------


def not_available(reason: str, **fields: Any) -> dict[str, Any]:
    return {**fields, "status": STATUS_NOT_AVAILABLE, "reason": reason}


def error_record(exc: BaseException, **fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "status": STATUS_ERROR,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(limit=8),
    }


def median_of(values: Iterable[float]) -> float:
    vals = [float(v) for v in values]
    return float(statistics.median(vals)) if vals else float("nan")


def median_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise median of the numeric leaves shared by every run (bools and strings: first)."""
    if not runs:
        return {}
    first = runs[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            if all(isinstance(r.get(key), dict) for r in runs):
                out[key] = median_runs([r[key] for r in runs])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            vals = [r.get(key) for r in runs]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
                m = median_of(vals)
                out[key] = int(m) if all(isinstance(v, int) for v in vals) and m.is_integer() else m
        else:
            out[key] = value
    return out


def repeat_median(
    fn: Callable[[int], dict[str, Any]], repeats: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Call ``fn(i)`` ``repeats`` times; return ``{"median": ..., "runs": [...], "repeats": n}``."""
    runs = []
    for i in range(repeats):
        runs.append(fn(i))
        if progress is not None and repeats > 1:
            progress(f"  repeat {i + 1}/{repeats} done")
    return {"median": median_runs(runs), "runs": runs, "repeats": repeats}


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) on log(size): value ~ size ** exponent."""
    pairs = [(s, v) for s, v in zip(sizes, values, strict=True) if s > 0 and v > 0]
    if len(pairs) < 2:
        return None
    xs = [math.log(s) for s, _ in pairs]
    ys = [math.log(v) for _, v in pairs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


# --- peak memory ---------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children", encoding="ascii") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except (OSError, ValueError):
                continue
            out.extend(kids)
            stack.extend(kids)
    return out


def process_tree_rss_mb() -> float:
    """Resident memory of this process and its worker processes (MB), from /proc."""
    me = os.getpid()
    return sum(_rss_kib(p) for p in [me, *_descendants(me)]) / 1024.0


class PeakMemory:
    """Sample the resident memory of this process tree while a block runs.

    Both parties live in one process in a benchmark, and the encryption and histogram pools are
    child processes, so the figure is the sum over the tree: what one machine running both sides
    needs. Sampling every ``interval`` seconds can miss a spike shorter than that.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.baseline_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = os.path.exists(f"/proc/{os.getpid()}/status")

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, process_tree_rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.available:
            self.baseline_mb = process_tree_rss_mb()
            self.peak_mb = self.baseline_mb
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, process_tree_rss_mb())

    def as_dict(self) -> dict[str, float | None]:
        if not self.available:
            return {"peak_rss_mb": None, "rss_increase_mb": None}
        return {
            "peak_rss_mb": round(self.peak_mb, 1),
            "rss_increase_mb": round(self.peak_mb - self.baseline_mb, 1),
        }


# --- machine, versions, commit -----------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict[str, Any]:
    """Commit of the source tree the package runs from, and whether it had local changes."""
    env = os.environ.get("JOINTCREDIT_GIT_COMMIT")
    if env:
        return {"commit": env, "dirty": None, "source": "JOINTCREDIT_GIT_COMMIT"}
    here = Path(__file__).resolve()
    root = next((p for p in here.parents if (p / ".git").exists()), None)
    if root is None:
        return {"commit": None, "dirty": None, "source": "no git checkout"}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "source": "git unavailable"}
    return {"commit": commit, "dirty": bool(status.strip()), "source": str(root)}


def usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gb": _memory_total_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


# --- running ------------------------------------------------------------------------------------


def run_suite(name: str, ctx: BenchContext) -> dict[str, Any]:
    """Run one registered suite; a crash becomes ``status: error`` instead of losing the others."""
    registry = registered_suites()
    if name not in registry:
        from jointcredit.errors import DataValidationError

        raise DataValidationError(
            "suite", f"unknown suite {name!r}; choose from {sorted(registry)}"
        )
    ctx.progress(f"suite {name}: {registry[name].description}")
    start = time.perf_counter()
    load_before = load_average()
    try:
        result = registry[name].fn(ctx)
        status = STATUS_OK
        if any(r.get("status") == STATUS_ERROR for r in result.get("records", [])):
            status = STATUS_ERROR
    except Exception as exc:  # noqa: BLE001 - recorded, the other suites still run
        result = {"records": [], "error": f"{type(exc).__name__}: {exc}"}
        result["traceback"] = traceback.format_exc(limit=12)
        status = STATUS_ERROR
        ctx.progress(f"suite {name} failed: {result['error']}")
    result["status"] = status
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["load_average_before"] = load_before
    result["load_average_after"] = load_average()
    ctx.progress(f"suite {name}: {status} in {result['seconds']:.1f} s")
    return result


def run(
    suite_names: Sequence[str],
    ctx: BenchContext,
    *,
    command: str | None = None,
    write_plots: bool = True,
) -> dict[str, Any]:
    """Run suites, then write ``results.json``, ``results.md`` and PNG plots under ``ctx.out_dir``."""
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc)
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command if command is not None else " ".join([sys.executable, *sys.argv]),
        "created": started.isoformat(timespec="seconds"),
        "quick": bool(ctx.quick),
        "seed": int(ctx.seed),
        "repeats": ctx.n_repeats,
        "data_dirs": [str(Path(d)) for d in ctx.data_dirs],
        "synthetic": bool(ctx.synthetic),
        "models": list(ctx.models) if ctx.models is not None else None,
        "backend_override": ctx.backend,
        "machine": machine_info(),
        "packages": package_versions(),
        "git": git_commit(),
        "suites": {},
        "figures": [],
    }
    for name in suite_names:
        results["suites"][name] = run_suite(name, ctx)
        _write_json(out / "results.json", results)  # partial results survive a later crash
    results["seconds"] = round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1)
    if write_plots:
        from jointcredit.bench.plots import write_plots as _plots

        try:
            results["figures"] = [str(p.relative_to(out)) for p in _plots(results, out)]
        except Exception as exc:  # noqa: BLE001 - numbers matter more than pictures
            results["figures_error"] = f"{type(exc).__name__}: {exc}"
            ctx.progress(f"plots failed: {results['figures_error']}")
    _write_json(out / "results.json", results)
    from jointcredit.bench.markdown import render

    (out / "results.md").write_text(render(results), encoding="utf-8")
    ctx.progress(f"wrote {out / 'results.json'}, {out / 'results.md'}")
    return results


def has_errors(results: dict[str, Any]) -> bool:
    return any(s.get("status") == STATUS_ERROR for s in results.get("suites", {}).values())


def _json_default(value: Any) -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | tuple):
        return list(value)
    return str(value)


def _sanitize(value: Any) -> Any:
    """JSON has no NaN / infinity: store them as null (the schema test checks finiteness)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps(
        _sanitize(json.loads(json.dumps(data, default=_json_default))),
        indent=1, ensure_ascii=False, allow_nan=False,
    )  # fmt: skip
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
