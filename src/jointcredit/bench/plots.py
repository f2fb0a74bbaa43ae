"""PNG plots of a ``results.json`` (matplotlib's object API with the Agg canvas, no pyplot state).

* ``quality_auc.png`` — AUC of federated, centralized and bank-only models per dataset and model;
* ``speed_train_seconds.png`` — median training time per model and backend, log scale;
* ``scaling_<axis>.png`` — time and bytes against size on log-log axes, each series labelled
  with its fitted growth exponent (value ∝ size^k).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jointcredit.bench.runner import growth_exponent

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight")
    return path


def quality_plot(suite: dict[str, Any], path: Path) -> Path | None:
    recs = [r for r in suite.get("records", []) if r.get("status") == "ok"]
    if not recs:
        return None
    labels = [f"{r['dataset']}\n{r['model']} ({r['backend']})" for r in recs]
    x = np.arange(len(recs))
    width = 0.27
    fig = Figure(figsize=(max(5.0, 1.6 * len(recs) + 1.5), 3.8))
    ax = fig.add_subplot()
    for i, (key, name) in enumerate(
        (
            ("bank_only", "bank only"),
            ("federated", "federated"),
            ("centralized", "centralized (insecure)"),
        )
    ):
        vals = [r[key]["auc"] for r in recs]
        bars = ax.bar(x + (i - 1) * width, vals, width, label=name)
        for b, v in zip(bars, vals, strict=True):
            ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 1), textcoords="offset points")  # fmt: skip
    lo = min(min(r[k]["auc"] for k in ("bank_only", "federated", "centralized")) for r in recs)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("test AUC")
    ax.set_title("Quality: federated vs centralized vs bank only")
    ax.legend(fontsize=8, loc="upper left", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def speed_plot(suite: dict[str, Any], path: Path) -> Path | None:
    recs = [r for r in suite.get("records", []) if r.get("status") == "ok"]
    if not recs:
        return None
    labels = [f"{r['dataset']}\n{r['model']}\n{r['backend']}" for r in recs]
    secs = [r["median"]["train_seconds"] for r in recs]
    plain = [r["median"].get("plaintext_seconds") or np.nan for r in recs]
    x = np.arange(len(recs))
    fig = Figure(figsize=(max(5.0, 1.3 * len(recs) + 1.5), 3.8))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, secs, 0.4, label="joint (median)")
    ax.bar(x + 0.2, plain, 0.4, label="plaintext, 1 thread")
    for xi, s, r in zip(x, secs, recs, strict=True):
        ratio = r["median"].get("ratio_to_plaintext")
        if ratio:
            text = f"×{ratio:.0f}" if ratio >= 10 else f"×{ratio:.2g}"
            ax.annotate(text, (xi - 0.2, s), ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("training seconds (log)")
    ax.set_title("Speed: training time")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")
    return _save(fig, path)


def scaling_plot(suite: dict[str, Any], axis: str, path: Path) -> Path | None:
    recs = [
        r for r in suite.get("records", []) if r.get("status") == "ok" and r.get("axis") == axis
    ]
    if not recs:
        return None
    series: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        series.setdefault(f"{r['model']} ({r.get('backend', '')})", []).append(r)
    fig = Figure(figsize=(10, 3.8))
    ax_t, ax_b = fig.subplots(1, 2)
    for name, rs in series.items():
        rs = sorted(rs, key=lambda r: r["size"])
        sizes = np.array([r["size"] for r in rs], dtype=float)
        for ax, key in ((ax_t, "train_seconds"), (ax_b, "bytes_total")):
            vals = np.array([r[key] for r in rs], dtype=float)
            k = growth_exponent(list(sizes), list(vals))
            label = f"{name}: k = {k:.2f}" if k is not None else name
            (line,) = ax.plot(sizes, vals, "o-", label=label)
            if k is not None and len(sizes) >= 2:
                # The fitted power law through the geometric means, dashed.
                mask = (sizes > 0) & (vals > 0)
                lx, ly = np.log(sizes[mask]), np.log(vals[mask])
                c = ly.mean() - k * lx.mean()
                grid = np.geomspace(sizes.min(), sizes.max(), 20)
                ax.plot(grid, np.exp(c) * grid**k, "--", color=line.get_color(), alpha=0.5)
    xlabel = "aligned enterprises" if axis == "rows" else "center features"
    for ax, ylabel in ((ax_t, "seconds"), (ax_b, "bytes on the wire")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    ax_t.set_title(f"time vs {xlabel}")
    ax_b.set_title(f"bytes vs {xlabel}")
    return _save(fig, path)


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write every plot the results support; returns the files written."""
    plots = Path(out_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    suites = results.get("suites", {})
    written: list[Path | None] = []
    if "quality" in suites:
        written.append(quality_plot(suites["quality"], plots / "quality_auc.png"))
    if "speed" in suites:
        written.append(speed_plot(suites["speed"], plots / "speed_train_seconds.png"))
    if "scaling" in suites:
        for axis in ("rows", "center_features"):
            written.append(scaling_plot(suites["scaling"], axis, plots / f"scaling_{axis}.png"))
    return [p for p in written if p is not None]
