"""The model report: one self-contained HTML file a model-risk committee can read offline.

``build_report(model_dir, "report.html")`` renders the evaluation bundle (``evaluation.json``,
see :mod:`jointcredit.report.bundle`) that ``jointcredit train`` and the demo write. Sections:
summary metrics and lift over bank-only, ROC and KS curves, score distribution of goods and bads,
gains table by score band, IV table, feature importance (center features by catalogue name and
category, never values), lift charts, calibration, and the privacy summary (what each party saw
and the bytes exchanged, from the transcript). Figures are PNGs embedded as base64 data URIs, so
the file needs nothing else. Chinese catalogue names always appear in the HTML tables; in the
figures they appear when a CJK font is available (:func:`jointcredit.report.plots.cjk_font`),
otherwise the English catalogue titles are used.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jointcredit.report import plots
from jointcredit.report.bundle import load_evaluation_bundle
from jointcredit.report.metrics import gains_table, summary

#: Section ids, in order; tests check every one is present.
SECTIONS = (
    ("summary", "Summary"),
    ("roc-ks", "ROC and KS curves"),
    ("distribution", "Score distribution"),
    ("gains", "Gains table by score band"),
    ("iv", "Information value (IV)"),
    ("importance", "Feature importance"),
    ("lift", "Lift over bank-only"),
    ("calibration", "Calibration"),
    ("privacy", "Privacy summary"),
    ("details", "Model, data and references"),
)

#: What each protocol shows each party (semi-honest model); see docs/protocols/*.md.
PROTOCOL_VIEWS: dict[str, dict[str, list[str]]] = {
    "session": {
        "center": ["the bank's ephemeral X25519 public key and session parameters"],
        "bank": ["the center's ephemeral X25519 public key and session parameters"],
    },
    "psi": {
        "center": [
            "the bank's set size and the intersection (reveal_to='both')",
            "the bank's other ids only as blinded curve points H(id)^b (pseudorandom without b)",
        ],
        "bank": [
            "the center's set size and the intersection",
            "the center's other ids only as (doubly) blinded points",
        ],
    },
    "binning": {
        "center": [
            "the bank's labels only as Paillier ciphertexts under the bank's key",
            "which features the bank asked to bin (catalogue names)",
        ],
        "bank": [
            "per-bin counts of goods and bads of each center feature, bins in shuffled order",
            "never cut points or values (the value order of bins only with monotonic merging)",
        ],
    },
    "hetero_lr": {
        "center": [
            "encrypted per-row polynomial coefficients (CKKS or Paillier), never labels or "
            "residuals in the clear",
            "its own gradient after the bank unmasks it (standard in hetero LR) and its own weights",
        ],
        "bank": [
            "its own gradient and the sum of residuals; the center's gradient only masked",
            "the center's coefficients only if the center reveals them for the report",
        ],
    },
    "hetero_lr_predict": {
        "center": ["which rows are scored; the bank's partial scores only encrypted"],
        "bank": [
            "the total score per row (and so, by subtraction, the center's partial score: the "
            "residual leakage of any exact joint score)"
        ],
    },
    "secureboost": {
        "center": [
            "gradients and hessians only as re-randomised Paillier ciphertexts",
            "the instance set of every tree node (SecureBoost's known leakage; mitigate with "
            "bank_only_trees, subsample, larger min_child_samples)",
        ],
        "bank": [
            "decrypted aggregate histograms of center features in shuffled order, the opaque id "
            "of each winning center candidate, and which rows went left",
            "never center feature names, thresholds or values",
        ],
    },
    "secureboost_predict": {
        "center": ["which rows are scored; never scores or leaf values"],
        "bank": ["per scored row and tree, which leaves the center's splits allow"],
    },
}


# --- small HTML helpers ----------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v):
            return "–"
        if v != 0 and abs(v) < 10 ** -(digits - 1):
            return f"{v:.2e}"
        return f"{v:,.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _e(c)}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _zh(text: str) -> _Raw:
    return _Raw(f'<span lang="zh-CN">{_e(text)}</span>')


def _names(feature: str, party: str, catalogue: Mapping[str, Mapping[str, str]]) -> list[Any]:
    """Feature, Chinese title, English title, category for a table row."""
    info = catalogue.get(feature) if party == "center" else None
    if info:
        category = _Raw(f"{_zh(info['category_zh'])} / {_e(info['category_en'])}")
        return [feature, _zh(info["title_zh"]), info["title_en"], category]
    return [feature, "–", "–", "bank" if party == "bank" else "center (not in catalogue)"]


# --- sections -------------------------------------------------------------------------------------


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


def _summary(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> str:
    rows = []
    stats = {k: summary(y, s) for k, s in scores.items()}
    for kind in ("federated", "bank_only", "centralized"):
        if kind in stats:
            st = stats[kind]
            rows.append([plots.NAMES[kind], _fmt(st["auc"]), _fmt(st["ks"]), _fmt(st["gini"])])
    out = _table(["model", "AUC", "KS", "Gini"], rows, "metrics")
    fed = stats["federated"]
    lines = [
        f"<p>{fed['n']:,} test enterprises, {fed['bads']:,} bads (bad rate "
        f"{fed['bad_rate']:.2%}). Scores are probabilities of default (higher = riskier).</p>"
    ]
    if "bank_only" in stats:
        bo = stats["bank_only"]
        lines.append(
            f"<p><b>Lift over bank-only</b>: AUC {fed['auc'] - bo['auc']:+.4f}, KS "
            f"{fed['ks'] - bo['ks']:+.4f}, Gini {fed['gini'] - bo['gini']:+.4f}.</p>"
        )
    if "centralized" in stats:
        ce = stats["centralized"]
        lines.append(
            f"<p><b>Gap to centralized</b> (insecure plaintext reference on the joined data): AUC "
            f"{ce['auc'] - fed['auc']:+.4f}, KS {ce['ks'] - fed['ks']:+.4f}.</p>"
        )
    return out + "".join(lines)


def _gains(y: np.ndarray, s: np.ndarray) -> str:
    g = gains_table(y, s, n_bands=10)
    rows = [
        [int(r.band), f"{r.score_min:.4f} – {r.score_max:.4f}", _fmt(int(r["count"])),
         _fmt(int(r.bads)), f"{r.bad_rate:.2%}", f"{r.cum_count_share:.1%}",
         f"{r.cum_bads_share:.1%}", f"{r.cum_goods_share:.1%}", f"{r.ks:.3f}",
         f"{r.lift:.2f}", f"{r.cum_lift:.2f}"]
        for _, r in g.iterrows()
    ]  # fmt: skip
    return (
        "<p>Test rows sorted by predicted PD, riskiest band first (about equal counts; tied "
        "scores stay together).</p>"
        + _table(
            [
                "band",
                "PD range",
                "count",
                "bads",
                "bad rate",
                "cum. population",
                "cum. bads",
                "cum. goods",
                "KS",
                "lift",
                "cum. lift",
            ],
            rows,
            "gains",
        )  # fmt: skip
    )


def _iv(records: Sequence[Mapping[str, Any]] | None, catalogue: Mapping[str, Any]) -> str:
    if not records:
        return (
            '<p class="na">No IV table in this bundle: it comes from '
            "<code>FederatedBinning</code>, which was not run for this model.</p>"
        )
    rows = [
        [r.get("party"), *_names(str(r["feature"]), str(r.get("party")), catalogue),
         _fmt(r.get("n_bins")), _fmt(r.get("iv")), r.get("strength", "")]
        for r in records
    ]  # fmt: skip
    return (
        "<p>IV = Σ (bad share − good share) · WOE with WOE = ln(bad share / good share): &lt; 0.02 "
        "useless, 0.02–0.1 weak, 0.1–0.3 medium, 0.3–0.5 strong, &gt; 0.5 suspicious. Center "
        "features: from per-bin counts only (no cut points).</p>"
        + _img(plots.iv_png(records, catalogue), "information value by feature")
        + _table(
            ["party", "feature", "中文名称", "title", "category", "bins", "IV", "strength"],
            rows,
            "iv",
        )  # fmt: skip
    )


def _importance(records: Sequence[Mapping[str, Any]] | None, catalogue: Mapping[str, Any]) -> str:
    if not records:
        return '<p class="na">The model did not report feature importance.</p>'
    rows = [
        [r.get("party"), *_names(str(r["feature"]), str(r.get("party")), catalogue),
         _fmt(r.get("importance")), r.get("measure", ""), r.get("source", "")]
        for r in records
    ]  # fmt: skip
    return (
        "<p>Bank features by name; credit-center features by catalogue name and category. No "
        "feature values, thresholds or cut points.</p>"
        + _img(plots.importance_png(records, catalogue), "feature importance")
        + _table(
            [
                "party",
                "feature",
                "中文名称",
                "title",
                "category",
                "importance",
                "measure",
                "source",
            ],
            rows,
            "importance",
        )  # fmt: skip
    )


def _capture(y: np.ndarray, s: np.ndarray, share: float) -> float:
    k = max(1, int(round(share * y.size)))
    top = np.argsort(-s, kind="mergesort")[:k]
    return float(y[top].sum() / max(1, y.sum()))


def _lift(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> str:
    shares = (0.05, 0.10, 0.20, 0.30)
    rows = []
    for kind in ("federated", "bank_only", "centralized"):
        if kind in scores:
            caps = [_capture(y, scores[kind], q) for q in shares]
            rows.append(
                [
                    plots.NAMES[kind],
                    *[f"{c:.1%} (lift {c / q:.2f})" for c, q in zip(caps, shares, strict=True)],
                ]
            )
    text = "<p>Share of all bads among the riskiest part of the test population.</p>"
    if "bank_only" in scores:
        fed = _capture(y, scores["federated"], 0.10)
        bo = _capture(y, scores["bank_only"], 0.10)
        text += (
            f"<p>In the riskiest 10 %, the joint model catches {fed:.1%} of bads against "
            f"{bo:.1%} for the bank-only model ({fed - bo:+.1%} points).</p>"
        )
    return (
        text
        + _img(plots.lift_png(y, scores), "cumulative gains and lift")
        + _table(["model", *[f"top {q:.0%}" for q in shares]], rows, "lift")
    )


def _calibration(y: np.ndarray, s: np.ndarray) -> str:
    table = plots.calibration_table(y, s)
    brier = float(np.mean((s - y) ** 2))
    ece = sum(r["count"] * abs(r["mean_pd"] - r["bad_rate"]) for r in table) / y.size
    rows = [[i + 1, _fmt(r["count"]), f"{r['mean_pd']:.4f}", f"{r['bad_rate']:.4f}"]
            for i, r in enumerate(table)]  # fmt: skip
    return (
        f"<p>Brier score {brier:.5f}; mean |predicted − observed| over PD deciles {ece:.4f}. "
        f"Mean predicted PD {s.mean():.4f} against an observed bad rate {y.mean():.4f}.</p>"
        + _img(plots.calibration_png(y, s), "calibration plot")
        + _table(["decile", "count", "mean predicted PD", "observed bad rate"], rows, "calibration")
    )


def _mb(n: Any) -> str:
    return f"{int(n) / 1e6:,.3f} MB" if isinstance(n, int | float) else "–"


def _privacy(transcript: Mapping[str, Any] | None, model: Mapping[str, Any]) -> str:
    parts = [
        "<p>Semi-honest parties over an authenticated channel. The credit center never receives "
        "labels, bank features, the bank's model or scores in plaintext; the bank never receives "
        "raw center features, thresholds or cut points.</p>"
    ]
    if transcript is None:
        return "".join(parts) + '<p class="na">No transcript was recorded for this model.</p>'
    by_proto = transcript.get("by_protocol", {})
    rows = []
    for proto, s in by_proto.items():
        views = PROTOCOL_VIEWS.get(proto, {})
        rows.append(
            [proto, _mb(s.get("bytes_bank_to_center")), _mb(s.get("bytes_center_to_bank")),
             _fmt(s.get("round_trips")), _fmt(s.get("messages")),
             _Raw("<br>".join(_e(v) for v in views.get("center", ["(not documented here)"]))),
             _Raw("<br>".join(_e(v) for v in views.get("bank", ["(not documented here)"])))]
        )  # fmt: skip
    total = transcript.get("total", {})
    rows.append(
        [_Raw("<b>total</b>"), _mb(total.get("bytes_bank_to_center")),
         _mb(total.get("bytes_center_to_bank")), _fmt(total.get("round_trips")),
         _fmt(total.get("messages")), "", ""]
    )  # fmt: skip
    parts.append(
        _table(
            [
                "protocol",
                "bank → center",
                "center → bank",
                "round trips",
                "messages",
                "the credit center saw",
                "the bank saw",
            ],
            rows,
            "privacy",
        )  # fmt: skip
    )
    types = transcript.get("by_message_type") or []
    if types:
        parts.append("<details><summary>Every message type</summary>")
        parts.append(
            _table(
                ["protocol", "message", "direction", "messages", "bytes"],
                [
                    [
                        t["protocol"],
                        t["msg_type"],
                        t["direction"],
                        _fmt(t["messages"]),
                        _fmt(t["bytes"]),
                    ]
                    for t in types
                ],
                "messages",
            )  # fmt: skip
        )
        parts.append("</details>")
    if model.get("backend") == "plain":
        parts.append(
            '<p class="warn">This model ran in the <code>plain</code> reference mode: no '
            "encryption. It exists to test the protocols and must not be used with real data.</p>"
        )
    return "".join(parts)


def _details(bundle: Mapping[str, Any]) -> str:
    model = bundle.get("model", {})
    rows = [
        ["model type", model.get("type")],
        ["model id", model.get("model_id")],
        ["backend", model.get("backend")],
        ["created", bundle.get("created")],
    ]
    rows += [[f"data: {k}", json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v]
             for k, v in (bundle.get("data") or {}).items()]  # fmt: skip
    out = _table(["", ""], rows, "details")
    params = model.get("parameters") or {}
    if params:
        out += "<h3>Hyper-parameters</h3>" + _table(
            ["parameter", "value"],
            [
                [k, json.dumps(v, ensure_ascii=False, default=str)]
                for k, v in sorted(params.items())
            ],
            "params",
        )
    refs = bundle.get("references") or {}
    if refs:
        out += "<h3>Reference models</h3>" + _table(
            ["reference", "definition"],
            [[k, json.dumps(v, ensure_ascii=False, default=str)] for k, v in refs.items()],
            "refs",
        )
    notes = bundle.get("notes") or []
    font = plots.cjk_font()
    notes = [
        *notes,
        (
            f"Figure labels use the CJK font {font.family} ({Path(font.path).name}) for Chinese "
            "catalogue names."
            if font is not None
            else "No CJK font was found for the figures: their labels use the catalogue's English "
            "titles; the tables carry the Chinese names. Install a CJK font (e.g. Debian "
            "fonts-noto-cjk, or pip install mplfonts) or set JOINTCREDIT_CJK_FONT to a font file."
        ),
    ]
    out += "<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    return out


_CSS = """
body{font-family:"DejaVu Sans","Noto Sans","Noto Sans CJK SC","Source Han Sans SC","PingFang SC",
"Microsoft YaHei","WenQuanYi Micro Hei",sans-serif;margin:2em auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #1f77b4;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f0f4f8}img{max-width:100%;margin:.5em 1em .5em 0;vertical-align:top}
.na{color:#888;font-style:italic}.warn{color:#b00;font-weight:bold}.sub{color:#555}
nav a{margin-right:1em}
"""


def render_html(bundle: Mapping[str, Any], *, title: str | None = None) -> str:
    """The report as an HTML string (see :func:`build_report`)."""
    y = np.asarray(bundle["labels"], dtype=np.int64)
    scores = {
        k: np.asarray(v, dtype=np.float64) for k, v in bundle["scores"].items() if v is not None
    }
    fed = scores["federated"]
    catalogue = bundle.get("catalogue") or {}
    model = bundle.get("model", {})
    title = title or f"Joint credit model report — {model.get('type', 'model')}"
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    bodies = {
        "summary": _summary(y, scores),
        "roc-ks": _img(plots.roc_png(y, scores), "ROC curves")
        + _img(plots.ks_png(y, fed), "KS curve"),
        "distribution": _img(plots.distribution_png(y, fed), "score distribution of goods and bads")
        + f"<p>Mean PD: goods {fed[y == 0].mean():.4f}, bads {fed[y == 1].mean():.4f}.</p>",
        "gains": _gains(y, fed),
        "iv": _iv(bundle.get("iv_table"), catalogue),
        "importance": _importance(bundle.get("importance"), catalogue),
        "lift": _lift(y, scores),
        "calibration": _calibration(y, fed),
        "privacy": _privacy(bundle.get("transcript"), model),
        "details": _details(bundle),
    }
    nav = "".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t in SECTIONS)
    sections = "".join(_section(sid, t, bodies[sid]) for sid, t in SECTIONS)
    sub = (
        f"{_e(model.get('type'))} · backend {_e(model.get('backend'))} · model "
        f"{_e(model.get('model_id'))} · generated {_e(generated)}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><p class="sub">{sub}</p><nav>{nav}</nav>{sections}'
        "</body></html>\n"
    )


def build_report(
    source: str | os.PathLike | Mapping[str, Any],
    out_path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Write the HTML report; ``source`` is a model directory, an ``evaluation.json`` file or a
    bundle dict (as :func:`~jointcredit.report.bundle.load_evaluation_bundle` returns).
    """
    bundle = source if isinstance(source, Mapping) else load_evaluation_bundle(source)
    text = render_html(bundle, title=title)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out


def build_report_from_model(
    session: Any,
    estimator: Any,
    model_type: str,
    train_rows: Any,
    test_rows: Any,
    out_path: str | os.PathLike,
    *,
    title: str | None = None,
    **collect_kwargs: Any,
) -> Path:
    """Report straight from a fitted model and its session (no bundle on disk)."""
    from jointcredit.report.bundle import collect_evaluation, make_bundle

    bundle = make_bundle(
        **collect_evaluation(
            session, estimator, model_type, train_rows, test_rows, **collect_kwargs
        )
    )
    return build_report(bundle, out_path, title=title)
