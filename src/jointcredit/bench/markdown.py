"""``results.md``: the tables of a ``results.json``, for docs and pull requests."""

from __future__ import annotations

import math
from typing import Any


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -(digits - 1)):
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value: Any, digits: int = 4) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}"


def _mb(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "–"
    return f"{value / 1e6:.2f}"


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _exponent(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    return f"{value:.2f}"


def _ratio(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    return f"{value:,.0f}×" if value >= 10 else f"{value:.2g}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _skipped(records: list[dict[str, Any]], keys: tuple[str, ...]) -> list[str]:
    """One line per distinct (status, what, reason); datasets sharing it are listed together."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for r in records:
        if r.get("status") in ("not_available", "error"):
            what = " / ".join(str(r[k]) for k in keys if k != "dataset" and r.get(k) is not None)
            detail = r.get("reason") or r.get("error") or ""
            groups.setdefault((r["status"], what, detail), []).append(str(r.get("dataset", "")))
    out = []
    for (status, what, detail), datasets in groups.items():
        where = ", ".join(d for d in dict.fromkeys(datasets) if d)
        out.append(
            f"- **{status.replace('_', ' ')}**: {what}"
            + (f" ({where})" if where else "")
            + f" — {detail}"
        )
    return out


def quality_table(suite: dict[str, Any]) -> str:
    recs = suite.get("records", [])
    rows = []
    for r in recs:
        if r.get("status") != "ok":
            continue
        f, c, b = r["federated"], r["centralized"], r["bank_only"]
        rows.append(
            [
                r["dataset"], r["model"], r["backend"],
                _num(f["auc"]), _num(f["ks"]), _num(f["gini"]),
                _num(c["auc"]), _num(b["auc"]),
                _signed(r["lift_over_bank_only"]["auc"]), _signed(r["gap_to_centralized"]["auc"]),
                _num(r["split"]["n_test"]), _seconds(r.get("train_seconds")),
            ]
        )  # fmt: skip
    out = [
        table(
            [
                "dataset",
                "model",
                "backend",
                "AUC",
                "KS",
                "Gini",
                "centralized AUC",
                "bank-only AUC",
                "lift ΔAUC",
                "gap ΔAUC",
                "test rows",
                "train s",
            ],
            rows,
        )  # fmt: skip
    ]
    out += _skipped(recs, ("dataset", "model", "backend"))
    ds = suite.get("datasets", {})
    if ds:
        out.append("")
        out.append(
            table(
                ["dataset", "bank rows", "center rows", "aligned", "PSI s", "PSI MB", "test bads"],
                [
                    [
                        name, _num(d["alignment"]["bank_rows"]), _num(d["alignment"]["center_rows"]),
                        _num(d["alignment"]["intersection_size"]), _seconds(d["alignment"]["seconds"]),
                        _mb(d["alignment"]["bytes_bank_to_center"] + d["alignment"]["bytes_center_to_bank"]),
                        _num(d["split"]["test_bads"]),
                    ]
                    for name, d in ds.items()
                ],
            )
        )  # fmt: skip
    return "\n".join(out)


def speed_table(suite: dict[str, Any]) -> str:
    recs = suite.get("records", [])
    rows = []
    for r in recs:
        if r.get("status") != "ok":
            continue
        m = r["median"]
        floor = r.get("encryption_floor")
        rows.append(
            [
                r["dataset"], r["model"], r["backend"], _num(r["n_train"]),
                _seconds(m["train_seconds"]),
                f"{_seconds(m.get('seconds_per_iteration'))} / {r.get('unit', 'iter')}",
                _seconds(m.get("plaintext_seconds")),
                _ratio(m.get("ratio_to_plaintext")),
                _mb(m["bytes_bank_to_center"]), _mb(m["bytes_center_to_bank"]),
                _num(m["round_trips"]), _num(m.get("peak_rss_mb"), 0),
                f"{floor['share_of_train_time']:.0%}" if floor else "–",
                _num(r.get("repeats")),
            ]
        )  # fmt: skip
    out = [
        table(
            [
                "dataset",
                "model",
                "backend",
                "train rows",
                "train s (median)",
                "per iteration",
                "plaintext s",
                "ratio",
                "MB bank→center",
                "MB center→bank",
                "round trips",
                "peak RSS MB",
                "encryption share",
                "repeats",
            ],
            rows,
        )  # fmt: skip
    ]
    out += _skipped(recs, ("dataset", "model", "backend"))
    return "\n".join(out)


def scaling_table(suite: dict[str, Any]) -> str:
    recs = suite.get("records", [])
    rows = []
    for r in recs:
        if r.get("status") != "ok":
            continue
        rows.append(
            [
                r["axis"], _num(r["size"]), r["model"], r.get("backend", ""),
                _seconds(r["train_seconds"]), _seconds(r.get("seconds_per_iteration")),
                _mb(r["bytes_total"]), _num(r.get("round_trips")), _num(r.get("peak_rss_mb"), 0),
            ]
        )  # fmt: skip
    out = [
        table(
            [
                "axis",
                "size",
                "model",
                "backend",
                "seconds",
                "s / iteration",
                "MB total",
                "round trips",
                "peak RSS MB",
            ],
            rows,
        )  # fmt: skip
    ]
    fits = suite.get("fits", [])
    if fits:
        out.append("")
        out.append("Fitted growth exponents (value ∝ size^k, least squares on log-log):")
        out.append("")
        out.append(
            table(
                ["axis", "model", "backend", "sizes", "time k", "bytes k"],
                [
                    [f["axis"], f["model"], f["backend"], ", ".join(f"{s:,}" for s in f["sizes"]),
                     _exponent(f["time_exponent"]), _exponent(f["bytes_exponent"])]
                    for f in fits
                ],
            )
        )  # fmt: skip
    out += _skipped(recs, ("axis", "model", "backend"))
    return "\n".join(out)


def primitives_table(suite: dict[str, Any]) -> str:
    recs = suite.get("records", [])
    rows = []
    for r in recs:
        if r.get("status") != "ok":
            continue
        if "ms_per_op" in r:
            figure = f"{r['ops_per_s']:,.0f} /s ({r['ms_per_op']:.4g} ms)"
        elif "seconds" in r:
            figure = f"{r['seconds']:.3g} s"
            if "ops_per_s" in r:
                figure += f" ({r['ops_per_s']:,.0f} ops/s)"
        elif "bytes" in r:
            figure = f"{r['bytes']:,} B"
        else:
            figure = "–"
        extra = []
        for key in ("speedup_vs_phe", "share_of_primitive"):
            if isinstance(r.get(key), int | float):
                extra.append(f"{key.replace('_', ' ')} {r[key]:.2f}")
        if isinstance(r.get("ops_per_s_per_core"), int | float):
            extra.append(f"{r['ops_per_s_per_core']:,.0f} ops/s/core")
        rows.append([r["group"], r["name"], figure, "; ".join(extra), r.get("note", "")])
    out = [table(["group", "primitive", "rate / cost", "relative", "what"], rows)]
    out += _skipped(recs, ("group", "name"))
    return "\n".join(out)


RENDERERS = {
    "quality": ("Quality", quality_table),
    "speed": ("Speed", speed_table),
    "scaling": ("Scaling", scaling_table),
    "primitives": ("Primitives", primitives_table),
}


def render(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    git = results.get("git", {})
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    pk = results.get("packages", {})
    lines = [
        "# jointcredit benchmark results",
        "",
        f"- command: `{results.get('command', '')}`",
        f"- created: {results.get('created', '')}; quick: {results.get('quick')}; seed: "
        f"{results.get('seed')}; timing repeats: {results.get('repeats')} (medians)",
        f"- machine: {m.get('cpu_model')} × {m.get('cpu_count')} cores "
        f"({m.get('usable_cores')} usable), {m.get('memory_gb')} GB, Python {m.get('python')}",
        f"- commit: {commit}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v),
        "",
    ]
    for name, suite in results.get("suites", {}).items():
        title, fn = RENDERERS.get(name, (name, None))
        lines.append(f"## {title}")
        lines.append("")
        lines.append(
            f"status {suite.get('status')}, {suite.get('seconds', 0):.0f} s, load average "
            f"{suite.get('load_average_before')} → {suite.get('load_average_after')}"
        )
        lines.append("")
        if suite.get("error"):
            lines.append(f"**suite error**: {suite['error']}")
            lines.append("")
        if fn is not None:
            lines.append(fn(suite))
            lines.append("")
    figures = results.get("figures") or []
    if figures:
        lines.append("## Figures")
        lines.append("")
        lines += [f"![{f}]({f})" for f in figures]
        lines.append("")
    return "\n".join(lines)
