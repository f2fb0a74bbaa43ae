"""PNG figures for the model report (matplotlib object API on the Agg canvas, no pyplot state).

Every function returns PNG bytes. Scores are P(bad): higher is riskier.

Chinese feature names: the catalogue's Chinese titles are drawn only with a font that has their
glyphs. :func:`cjk_font` looks for one, in this order: the file named by ``JOINTCREDIT_CJK_FONT``;
a system font of a known CJK family (e.g. Debian ``fonts-noto-cjk`` or ``fonts-wqy-microhei``);
Noto Sans CJK SC shipped inside the optional ``mplfonts`` package (used as a plain font file:
nothing is installed into matplotlib). Without one, figure labels use the catalogue's English
titles, never boxes of missing glyphs, and the HTML tables carry the Chinese names (the browser
renders them).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
COLORS = {"federated": "#1f77b4", "bank_only": "#7f7f7f", "centralized": "#d62728"}
NAMES = {
    "federated": "joint (federated)",
    "bank_only": "bank only",
    "centralized": "centralized (insecure reference)",
}
PARTY_COLORS = {"bank": "#1f77b4", "center": "#ff7f0e"}

#: Families known to cover simplified Chinese, most preferred first.
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Droid Sans Fallback",
    "Noto Serif CJK SC",
    "AR PL UMing CN",
)
_PROBE = "纳税社保公积金司法专利行政处罚"


@dataclass(frozen=True)
class CJKFont:
    path: str
    family: str
    charmap: frozenset[int]

    def covers(self, text: str) -> bool:
        return all(ord(ch) < 128 or ord(ch) in self.charmap for ch in text)


def _candidates() -> list[Path]:
    from matplotlib import font_manager

    out: list[Path] = []
    env = os.environ.get("JOINTCREDIT_CJK_FONT")
    if env:
        out.append(Path(env))
    for entry in font_manager.fontManager.ttflist:
        if entry.name in CJK_FAMILIES:
            out.append(Path(entry.fname))
    spec = importlib.util.find_spec("mplfonts")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            # Only the OFL-licensed Noto font; the package also ships fonts we must not use.
            out.append(Path(loc) / "fonts" / "NotoSansCJKsc-Regular.otf")
    return out


@functools.lru_cache(maxsize=1)
def cjk_font() -> CJKFont | None:
    """A font that can draw the catalogue's Chinese titles, registered with matplotlib, or None."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    if os.environ.get("JOINTCREDIT_CJK_FONT") == "none":
        return None
    for path in _candidates():
        if not path.is_file():
            continue
        try:
            font = FT2Font(str(path))
            charmap = frozenset(font.get_charmap())
        except (OSError, RuntimeError, ValueError):
            continue
        if all(ord(ch) in charmap for ch in _PROBE):
            font_manager.fontManager.addfont(str(path))
            family = font_manager.FontProperties(fname=str(path)).get_name()
            return CJKFont(str(path), family, charmap)
    return None


def text_families() -> list[str]:
    """Font family list for labels: Latin first, the CJK font as fallback when there is one."""
    font = cjk_font()
    return ["DejaVu Sans"] + ([font.family] if font is not None else [])


def can_draw(text: str) -> bool:
    if all(ord(ch) < 128 for ch in text):
        return True
    font = cjk_font()
    return font is not None and font.covers(text)


def feature_label(
    feature: str, party: str, catalogue: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """Plot label: bank features by name, center features by catalogue title and category."""
    if party != "center":
        return feature
    info = (catalogue or {}).get(feature)
    if not info:
        return f"{feature} [center]"
    zh = f"{info['title_zh']} ({info['category_zh']})"
    if can_draw(zh):
        return zh
    return f"{info['title_en']} ({info['category_en']})"


# --- figure plumbing ---------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _ordered(scores: Mapping[str, Sequence[float]]) -> list[tuple[str, np.ndarray]]:
    return [(k, np.asarray(scores[k], dtype=float)) for k in NAMES if scores.get(k) is not None]


def roc_png(y: np.ndarray, scores: Mapping[str, Sequence[float]]) -> bytes:
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    for kind, s in _ordered(scores):
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, color=COLORS[kind], label=f"{NAMES[kind]}: AUC {roc_auc_score(y, s):.3f}",
                linestyle="--" if kind == "centralized" else "-")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.8)
    ax.set_xlabel("false positive rate (goods rejected)")
    ax.set_ylabel("true positive rate (bads caught)")
    ax.set_title("ROC curve (test rows)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def ks_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Population share, cumulative bad share and cumulative good share, riskiest first."""
    order = np.argsort(-s, kind="mergesort")
    yy = y[order]
    n = y.size
    share = np.r_[0.0, np.arange(1, n + 1) / n]
    bads = np.r_[0.0, np.cumsum(yy) / max(1, yy.sum())]
    goods = np.r_[0.0, np.cumsum(1 - yy) / max(1, n - yy.sum())]
    return share, bads, goods


def ks_png(y: np.ndarray, score: Sequence[float]) -> bytes:
    from jointcredit.report.metrics import ks

    s = np.asarray(score, dtype=float)
    share, bads, goods = ks_curve(y, s)
    gap = bads - goods
    i = int(np.argmax(gap))
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    ax.plot(share, bads, color="#d62728", label="cumulative share of bads")
    ax.plot(share, goods, color="#2ca02c", label="cumulative share of goods")
    ax.vlines(share[i], goods[i], bads[i], color="black", linestyle=":")
    ax.annotate(f"KS = {ks(y, s):.3f}\nat top {share[i]:.0%}", (share[i], (bads[i] + goods[i]) / 2),
                xytext=(8, 0), textcoords="offset points", fontsize=9)  # fmt: skip
    ax.set_xlabel("share of test population, riskiest first")
    ax.set_ylabel("cumulative share")
    ax.set_title("KS curve (joint model)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def distribution_png(y: np.ndarray, score: Sequence[float]) -> bytes:
    s = np.asarray(score, dtype=float)
    hi = float(np.quantile(s, 0.995)) if s.size else 1.0
    bins = np.linspace(float(s.min()), max(hi, float(s.min()) + 1e-9), 40)
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    ax.hist(np.clip(s[y == 0], None, hi), bins=bins, density=True, alpha=0.55, color="#2ca02c",
            label=f"goods (n={int((y == 0).sum()):,})")  # fmt: skip
    ax.hist(np.clip(s[y == 1], None, hi), bins=bins, density=True, alpha=0.55, color="#d62728",
            label=f"bads (n={int((y == 1).sum()):,})")  # fmt: skip
    ax.set_xlabel("predicted probability of bad (top 0.5 % clipped into the last bin)")
    ax.set_ylabel("density")
    ax.set_title("Score distribution of goods and bads (joint model)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def lift_png(y: np.ndarray, scores: Mapping[str, Sequence[float]]) -> bytes:
    fig = Figure(figsize=(10.4, 4.0))
    ax_g, ax_l = fig.subplots(1, 2)
    base = y.mean()
    for kind, s in _ordered(scores):
        share, bads, _ = ks_curve(y, s)
        style = "--" if kind == "centralized" else "-"
        ax_g.plot(share, bads, style, color=COLORS[kind], label=NAMES[kind])
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(share > 0, bads / share, np.nan)
        keep = share >= 0.02
        ax_l.plot(share[keep], lift[keep], style, color=COLORS[kind], label=NAMES[kind])
    ax_g.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.8, label="random")
    ax_g.set_title("Cumulative gains: bads caught")
    ax_g.set_xlabel("share of test population, riskiest first")
    ax_g.set_ylabel("share of all bads")
    ax_l.axhline(1.0, color="#bbbbbb", linewidth=0.8)
    ax_l.set_title(f"Cumulative lift (overall bad rate {base:.1%})")
    ax_l.set_xlabel("share of test population, riskiest first")
    ax_l.set_ylabel("bad rate / overall bad rate")
    for ax in (ax_g, ax_l):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def calibration_table(
    y: np.ndarray, score: Sequence[float], n_bins: int = 10
) -> list[dict[str, float]]:
    """Equal-count bins of predicted PD: mean prediction vs observed bad rate."""
    s = np.asarray(score, dtype=float)
    order = np.argsort(s, kind="mergesort")
    out = []
    for part in np.array_split(order, min(n_bins, s.size)):
        if part.size:
            out.append(
                {"count": int(part.size), "mean_pd": float(s[part].mean()),
                 "bad_rate": float(y[part].mean())}
            )  # fmt: skip
    return out


def calibration_png(y: np.ndarray, score: Sequence[float]) -> bytes:
    table = calibration_table(y, score)
    pred = np.array([r["mean_pd"] for r in table])
    obs = np.array([r["bad_rate"] for r in table])
    top = float(max(pred.max(), obs.max()) * 1.1) or 1.0
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    ax.plot([0, top], [0, top], color="#bbbbbb", linewidth=0.8, label="perfect calibration")
    ax.plot(pred, obs, "o-", color=COLORS["federated"], label="joint model, by PD decile")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted PD")
    ax.set_ylabel("observed bad rate")
    ax.set_title("Calibration (test rows)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def _bars_png(
    records: Sequence[Mapping[str, Any]],
    value_key: str,
    title: str,
    xlabel: str,
    catalogue: Mapping[str, Mapping[str, str]] | None,
    *,
    top: int = 20,
    bands: Sequence[float] = (),
) -> bytes:
    recs = sorted(records, key=lambda r: -float(r[value_key] or 0.0))[:top][::-1]
    labels = [feature_label(str(r["feature"]), str(r["party"]), catalogue) for r in recs]
    values = [float(r[value_key] or 0.0) for r in recs]
    colors = [PARTY_COLORS.get(str(r["party"]), "#999999") for r in recs]
    fig = Figure(figsize=(7.4, 0.3 * len(recs) + 1.4))
    ax = fig.add_subplot()
    pos = np.arange(len(recs))
    ax.barh(pos, values, color=colors)
    ax.set_yticks(pos, labels, fontsize=8, fontfamily=text_families())
    for b in bands:
        if values and b <= max(values) * 1.05:
            ax.axvline(b, color="#999999", linestyle=":", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=PARTY_COLORS["bank"], label="bank feature"),
                       Patch(color=PARTY_COLORS["center"], label="credit-center feature")],
              fontsize=8, loc="lower right")  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def importance_png(
    records: Sequence[Mapping[str, Any]], catalogue: Mapping[str, Any] | None
) -> bytes:
    measure = str(records[0].get("measure", "importance")) if records else "importance"
    return _bars_png(records, "importance", "Feature importance (top 20)", measure, catalogue)


def iv_png(records: Sequence[Mapping[str, Any]], catalogue: Mapping[str, Any] | None) -> bytes:
    return _bars_png(
        records, "iv", "Information value (top 20)",
        "IV (bands at 0.02, 0.1, 0.3, 0.5)", catalogue, bands=(0.02, 0.1, 0.3, 0.5),
    )  # fmt: skip
