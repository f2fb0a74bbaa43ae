"""Reproducible benchmarks: quality, speed, scaling and primitives suites.

``jointcredit bench`` and ``benchmarks/run_all.py`` both call :func:`run`. Every figure in the
``results.json`` it writes carries the machine, package versions, git commit and the exact
parameters; timings are medians of repeated runs. See ``docs/benchmarks.md``.
"""

from jointcredit.bench.runner import (
    SCHEMA,
    BenchContext,
    has_errors,
    machine_info,
    register,
    registered_suites,
    run,
)

SUITE_NAMES = ("quality", "speed", "scaling", "primitives")

__all__ = [
    "SCHEMA",
    "SUITE_NAMES",
    "BenchContext",
    "has_errors",
    "machine_info",
    "register",
    "registered_suites",
    "run",
]
