"""The HTML model report and the evaluation bundle it is rendered from."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from jointcredit.data.catalogue import CATEGORY_TITLES, CENTER_CATALOGUE
from jointcredit.errors import DataValidationError
from jointcredit.report import plots
from jointcredit.report.bundle import (
    BUNDLE_FILE,
    load_evaluation_bundle,
    save_evaluation_bundle,
    write_evaluation,
)
from jointcredit.report.html import SECTIONS, build_report
from jointcredit.report.metrics import auc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small synthetic city, aligned by PSI; SecureBoost (Paillier) and hetero LR (CKKS)."""
    from jointcredit.bench.suites import open_session, split, synthetic_dataset
    from jointcredit.learn.boosting import HeteroSecureBoost
    from jointcredit.learn.linear import HeteroLogisticRegression

    ds = synthetic_dataset(n_enterprises=3_000, n_bank_customers=1_500, seed=3)
    session, _ = open_session(ds)
    train, test, _ = split(session, seed=3)
    boost = HeteroSecureBoost(n_estimators=2, max_depth=2, max_bin=16, backend="paillier")
    boost.fit(session, train)
    lr = HeteroLogisticRegression(backend="ckks", max_epochs=2, validation_fraction=0.0)
    lr.fit(session, train)
    root = tmp_path_factory.mktemp("models")
    write_evaluation(
        root / "boost", session, boost, "secureboost", train, test, data={"dataset": "synthetic"}
    )
    write_evaluation(root / "lr", session, lr, "logistic", train, test, binning=None)
    center_part = session.center.model_parts[boost.model_id_]
    return {"root": root, "session": session, "boost": boost, "center_part": center_part}


@pytest.fixture(scope="module")
def rendered(trained: dict) -> dict[str, str]:
    """Each model's report, rendered once with whatever CJK font this machine has."""
    return {
        m: _render(trained["root"] / m, trained["root"] / m / "report.html")[0]
        for m in ("boost", "lr")
    }


def _images(text: str) -> list[bytes]:
    return [
        base64.b64decode(b)
        for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    ]


def _render(model_dir: Path, out: Path) -> tuple[str, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_report(model_dir, out)
    return out.read_text(encoding="utf-8"), [str(w.message) for w in caught]


@pytest.mark.parametrize("model", ["boost", "lr"])
def test_report_has_every_section_and_every_image_decodes(rendered: dict, model: str) -> None:
    text = rendered[model]
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
    for sid, title in SECTIONS:
        assert f'<section id="{sid}"><h2>{html.escape(title)}</h2>' in text, sid
        assert f'href="#{sid}"' in text
    # Self-contained: no external resources at all.
    assert not re.search(r'(src|href)="(https?:|file:|/)', text)
    images = _images(text)
    # ROC, KS, distribution, importance, lift, calibration (+ IV when binning ran).
    assert len(images) >= 6
    for png in images:
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
        with Image.open(io.BytesIO(png)) as im:
            w, h = im.size
            assert w >= 200 and h >= 150
            im.load()  # full decode


def test_report_numbers_match_the_bundle(trained: dict, rendered: dict) -> None:
    bundle = load_evaluation_bundle(trained["root"] / "boost")
    y = np.asarray(bundle["labels"])
    expected = auc(y, np.asarray(bundle["scores"]["federated"]))
    text = rendered["boost"]
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    assert f"<td>joint (federated)</td><td>{expected:,.4f}</td>" in summary
    # Lift over bank-only and the gap to centralized are stated.
    assert "Lift over bank-only" in summary and "Gap to centralized" in summary
    # The gains table has one row per band and its counts add up to the test rows.
    gains = text.split('<section id="gains">')[1].split("</section>")[0]
    counts = [
        int(c.replace(",", ""))
        for c in re.findall(r"<tr><td>\d+</td><td>[^<]*</td><td>([\d,]+)</td>", gains)
    ]
    assert sum(counts) == y.size


def test_bundle_holds_no_center_thresholds_or_values(trained: dict) -> None:
    raw = (trained["root"] / "boost" / BUNDLE_FILE).read_text(encoding="utf-8")
    bundle = json.loads(raw)
    thresholds = [
        n["threshold"]
        for nodes in trained["center_part"].trees.values()
        for n in nodes.values()
        if n.get("kind") == "center"
    ]
    assert thresholds, "the fixture model should split on center features"
    for t in thresholds:
        if len(repr(float(t))) >= 6:  # short values (e.g. 1.5) also occur as other numbers
            assert repr(float(t)) not in raw
    # Center importance is by catalogue name and category only: no values, no thresholds.
    center_rows = [r for r in bundle["importance"] if r["party"] == "center"]
    assert center_rows
    for r in center_rows:
        assert set(r) <= {"party", "feature", "importance", "measure", "source"}
        assert r["feature"] in bundle["catalogue"]
        assert (
            bundle["catalogue"][r["feature"]]["title_zh"] == CENTER_CATALOGUE[r["feature"]].title_zh
        )
    assert "ids" not in bundle and "X" not in bundle


def test_chinese_names_in_tables_and_privacy_bytes_from_transcript(
    trained: dict, rendered: dict
) -> None:
    text = rendered["boost"]
    bundle = load_evaluation_bundle(trained["root"] / "boost")
    center = [r["feature"] for r in bundle["importance"] if r["party"] == "center"]
    for f in center:
        info = CENTER_CATALOGUE[f]
        assert f'<span lang="zh-CN">{info.title_zh}</span>' in text
        assert CATEGORY_TITLES[info.category][0] in text
    iv = text.split('<section id="iv">')[1].split("</section>")[0]
    assert "纳税信用等级" in iv  # every catalogue feature is binned, so the IV table names it
    privacy = text.split('<section id="privacy">')[1].split("</section>")[0]
    session = trained["session"]
    for proto in ("psi", "secureboost", "secureboost_predict", "binning"):
        assert f"<td>{proto}</td>" in privacy
    total = bundle["transcript"]["total"]
    assert total["bytes_bank_to_center"] > 0 and total["round_trips"] > 0
    assert total["bytes_bank_to_center"] <= session.transcript.summary()["bytes_bank_to_center"]
    assert f"{total['bytes_bank_to_center'] / 1e6:,.3f} MB" in privacy


def test_logistic_report_without_iv_says_so(rendered: dict) -> None:
    text = rendered["lr"]
    iv = text.split('<section id="iv">')[1].split("</section>")[0]
    assert "No IV table" in iv
    imp = text.split('<section id="importance">')[1].split("</section>")[0]
    assert "standardised coefficient" in imp


def _make_cjk_font(path: Path, chars: str) -> None:
    """A tiny TrueType font whose glyphs are boxes, covering ``chars`` (test fixture only)."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef"] + [f"uni{ord(c):04X}" for c in chars]
    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({ord(c): f"uni{ord(c):04X}" for c in chars})
    glyphs = {}
    for n in names:
        pen = TTGlyphPen(None)
        pen.moveTo((100, 0))
        pen.lineTo((100, 800))
        pen.lineTo((900, 800))
        pen.lineTo((900, 0))
        pen.closePath()
        glyphs[n] = pen.glyph()
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({n: (1000, 100) for n in names})
    fb.setupHorizontalHeader(ascent=880, descent=-120)
    fb.setupNameTable({"familyName": "JC Test CJK", "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=880, usWinAscent=880, usWinDescent=120)
    fb.setupPost()
    fb.save(str(path))


def _missing_glyph(messages: list[str]) -> list[str]:
    return [m for m in messages if "missing from" in m and "Glyph" in m]


def test_missing_glyph_detector_is_live() -> None:
    fig = Figure()
    fig.add_subplot().set_title("纳税", fontfamily="DejaVu Sans")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots._png(fig)
    assert _missing_glyph([str(w.message) for w in caught])


def test_figures_use_chinese_names_with_a_cjk_font(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chars = set(plots._PROBE)
    for info in CENTER_CATALOGUE.values():
        chars |= set(info.title_zh)
    for zh, _ in CATEGORY_TITLES.values():
        chars |= set(zh)
    font = tmp_path / "jc-test-cjk.ttf"
    _make_cjk_font(font, "".join(sorted(c for c in chars if ord(c) > 127)))
    monkeypatch.setenv("JOINTCREDIT_CJK_FONT", str(font))
    plots.cjk_font.cache_clear()
    try:
        assert plots.cjk_font() is not None and plots.cjk_font().family == "JC Test CJK"
        label = plots.feature_label(
            "tax_credit_grade",
            "center",
            {
                "tax_credit_grade": {
                    "title_zh": "纳税信用等级",
                    "category_zh": "纳税",
                    "title_en": "x",
                    "category_en": "y",
                }
            },
        )
        assert label == "纳税信用等级 (纳税)"
        text, messages = _render(trained["root"] / "boost", tmp_path / "cjk.html")
        assert not _missing_glyph(messages)
        assert "JC Test CJK" in text  # the report says which font drew the Chinese labels
    finally:
        plots.cjk_font.cache_clear()


def test_figures_fall_back_to_english_without_a_cjk_font(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOINTCREDIT_CJK_FONT", "none")
    plots.cjk_font.cache_clear()
    try:
        assert plots.cjk_font() is None
        info = CENTER_CATALOGUE["tax_credit_grade"]
        label = plots.feature_label(
            "tax_credit_grade",
            "center",
            {
                "tax_credit_grade": {
                    "title_zh": info.title_zh,
                    "category_zh": "纳税",
                    "title_en": info.title_en,
                    "category_en": "Tax",
                }
            },
        )
        assert label == f"{info.title_en} (Tax)"
        text, messages = _render(trained["root"] / "boost", tmp_path / "en.html")
        assert not _missing_glyph(messages)
        assert "No CJK font was found" in text
        assert info.title_zh in text  # the tables still carry the Chinese names
    finally:
        plots.cjk_font.cache_clear()


def test_bundle_rejects_bad_input_before_writing(tmp_path: Path) -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(DataValidationError, match="scores.federated"):
        save_evaluation_bundle(tmp_path, model_type="m", y_test=y, scores={"bank_only": [0.1] * 4})
    with pytest.raises(DataValidationError, match="scores.federated"):
        save_evaluation_bundle(tmp_path, model_type="m", y_test=y, scores={"federated": [0.1] * 3})
    with pytest.raises(DataValidationError, match="scores.federated"):
        save_evaluation_bundle(
            tmp_path, model_type="m", y_test=y, scores={"federated": [0.1, np.nan, 0.2, 0.3]}
        )
    with pytest.raises(DataValidationError, match="y_test"):
        save_evaluation_bundle(
            tmp_path, model_type="m", y_test=[0, 0, 0, 0], scores={"federated": [0.1] * 4}
        )
    with pytest.raises(DataValidationError, match="scores"):
        save_evaluation_bundle(
            tmp_path, model_type="m", y_test=y, scores={"federated": [0.1] * 4, "oracle": [0] * 4}
        )
    assert not (tmp_path / BUNDLE_FILE).exists()
    with pytest.raises(DataValidationError, match="evaluation.json"):
        load_evaluation_bundle(tmp_path)
    # A minimal bundle renders too (no references, no IV, no importance, no transcript).
    p = save_evaluation_bundle(
        tmp_path, model_type="m", y_test=y, scores={"federated": [0.2, 0.9, 0.1, 0.6]}
    )
    bad = json.loads(p.read_text(encoding="utf-8"))
    bad["scores"]["federated"] = bad["scores"]["federated"][:2]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / BUNDLE_FILE).write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(DataValidationError, match="federated"):
        load_evaluation_bundle(tmp_path / "bad")
    out = build_report(tmp_path, tmp_path / "minimal.html")
    assert len(_images(out.read_text(encoding="utf-8"))) == 5


def test_report_command(trained: dict, tmp_path: Path) -> None:
    from jointcredit.cli_bench import add_bench_commands

    parser = argparse.ArgumentParser()
    add_bench_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli" / "report.html"
    args = parser.parse_args(
        ["report", "--model", str(trained["root"] / "boost"), "--out", str(out)]
    )
    assert args.func(args) == 0
    assert out.read_text(encoding="utf-8").count("<section id=") == len(SECTIONS)
    args = parser.parse_args(["report", "--model", str(tmp_path / "nothing")])
    with pytest.raises(DataValidationError, match="jointcredit train"):
        args.func(args)
