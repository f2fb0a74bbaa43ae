"""Run the jointcredit benchmark suites (the same code as ``jointcredit bench``).

    python benchmarks/run_all.py --suite all --data-dir ../shared/data/default_credit --out bench-out
    python benchmarks/run_all.py --suite quality --quick --out /tmp/bench-quick

Writes ``results.json`` (machine, package versions, git commit, exact parameters, medians and
every run), ``results.md`` and ``plots/*.png`` under ``--out``. See docs/benchmarks.md.
"""

from __future__ import annotations

import sys

from jointcredit.cli_bench import bench_main

if __name__ == "__main__":  # worker processes re-import this file: keep the guard
    sys.exit(bench_main())
