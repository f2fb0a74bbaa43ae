"""Pre-authorization policy: score scaling, grades, credit lines, decisions, reason codes."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcredit.errors import DataValidationError, DuplicateIdentifierError
from jointcredit.scoring import (
    DECISION_COLUMNS,
    CreditLinePolicy,
    GradeBands,
    PreAuthorizationPolicy,
    ScoreScaling,
    SizeIndicator,
    export_whitelist,
    reason_codes,
    sum_by_category,
)

# --- score scaling ------------------------------------------------------------------------------


def test_default_scaling_constants_and_odds_direction() -> None:
    s = ScoreScaling()
    assert s.odds == "good:bad"
    assert s.factor == pytest.approx(50 / math.log(2))
    assert s.offset == pytest.approx(600 - 50 / math.log(2) * math.log(19))
    # Base odds 19:1 good:bad is PD 1/20.
    assert s.pd_to_score(0.05) == pytest.approx(600.0)
    # Doubling the good:bad odds (38:1 -> PD 1/39) adds exactly PDO points.
    assert s.pd_to_score(1 / 39) == pytest.approx(650.0)
    assert s.pd_to_score(1 / 10.5) == pytest.approx(550.0)


def test_higher_pd_means_lower_score() -> None:
    pds = np.linspace(0.001, 0.999, 500)
    scores = ScoreScaling().pd_to_score(pds)
    assert np.all(np.diff(scores) < 0)


@settings(max_examples=200, deadline=None)
@given(
    p=st.floats(min_value=1e-9, max_value=1 - 1e-9),
    pdo=st.floats(min_value=5, max_value=200),
    base_score=st.floats(min_value=0, max_value=1000),
    base_odds=st.floats(min_value=0.1, max_value=500),
)
def test_score_to_pd_inverts_pd_to_score(
    p: float, pdo: float, base_score: float, base_odds: float
) -> None:
    s = ScoreScaling(pdo=pdo, base_score=base_score, base_odds=base_odds)
    assert s.score_to_pd(s.pd_to_score(p)) == pytest.approx(p, rel=1e-6, abs=1e-15)


@settings(max_examples=100, deadline=None)
@given(score=st.floats(min_value=-500, max_value=1500))
def test_pd_to_score_inverts_score_to_pd(score: float) -> None:
    s = ScoreScaling()
    assert s.pd_to_score(s.score_to_pd(score)) == pytest.approx(score, abs=1e-6)


def test_extreme_pds_give_finite_scores_and_bad_pds_are_refused() -> None:
    s = ScoreScaling()
    scores = s.pd_to_score(np.array([0.0, 1.0]))
    assert np.all(np.isfinite(scores)) and scores[0] > scores[1]
    for bad in ([0.1, 1.2], [-0.01], [np.nan]):
        with pytest.raises(DataValidationError) as err:
            s.pd_to_score(np.array(bad))
        assert err.value.field == "pd"


def test_points_and_logit_to_score_are_consistent() -> None:
    s = ScoreScaling()
    logits = np.array([-2.0, 0.5])
    assert np.allclose(s.logit_to_score(logits), s.offset + s.points(logits))
    assert np.allclose(s.pd_to_score(1 / (1 + np.exp(-logits))), s.logit_to_score(logits))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pdo": 0}, "scaling.pdo"),
        ({"pdo": -20}, "scaling.pdo"),
        ({"base_odds": 0}, "scaling.base_odds"),
        ({"base_score": float("nan")}, "scaling.base_score"),
        ({"pdo": "50"}, "scaling.pdo"),
    ],
)
def test_invalid_scaling_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(DataValidationError) as err:
        ScoreScaling(**kwargs)
    assert err.value.field == field


# --- grades -------------------------------------------------------------------------------------


def test_default_grades_and_boundaries_go_to_the_better_grade() -> None:
    g = GradeBands()
    scores = np.array([800, 680, 679.999, 640, 600, 599.9, 560, 559.99, 100])
    assert g.assign(score=scores).tolist() == ["A", "A", "B", "B", "C", "D", "D", "E", "E"]


def test_pd_grades_match_equivalent_score_grades() -> None:
    s = ScoreScaling()
    by_pd = GradeBands.by_pd([0.01, 0.03, 0.08], labels=["low", "mid", "high", "very_high"])
    by_score = GradeBands.by_score(
        [s.pd_to_score(p) for p in (0.01, 0.03, 0.08)], labels=["low", "mid", "high", "very_high"]
    )
    rng = np.random.default_rng(1)
    pds = rng.uniform(0.001, 0.3, 2000)
    assert by_pd.assign(pd=pds).tolist() == by_score.assign(score=s.pd_to_score(pds)).tolist()
    assert by_pd.assign(pd=np.array([0.01, 0.0100001])).tolist() == ["low", "mid"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cutoffs": (600, 640, 680, 700)}, "grades.cutoffs"),  # not decreasing
        ({"cutoffs": (680, 640, 640, 560)}, "grades.cutoffs"),  # not strict
        ({"cutoffs": (680, 640, 600)}, "grades.cutoffs"),  # wrong count
        ({"labels": ("A", "A", "C", "D", "E")}, "grades.labels"),
        ({"labels": ("A",), "cutoffs": ()}, "grades.labels"),
        ({"basis": "odds"}, "grades.basis"),
        ({"cutoffs": (680, "x", 600, 560)}, "grades.cutoffs[1]"),
    ],
)
def test_invalid_grade_bands_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(DataValidationError) as err:
        GradeBands(**kwargs)
    assert err.value.field == field


def test_pd_cutoffs_must_increase_within_unit_interval() -> None:
    for cutoffs in ([0.05, 0.02], [0.0, 0.5], [0.5, 1.0]):
        with pytest.raises(DataValidationError) as err:
            GradeBands.by_pd(cutoffs)
        assert err.value.field == "grades.cutoffs"


# --- credit lines -------------------------------------------------------------------------------


def test_credit_line_formula_scale_cap_and_rounding() -> None:
    lines = CreditLinePolicy(
        size_indicators={
            "monthly_inflow": SizeIndicator(40.0, 3.0),
            "avg_balance": SizeIndicator(10.0, 1.0),
        },
        min_factor=0.5,
        max_factor=2.0,
        cap=3_000_000,
    )
    bank = pd.DataFrame(
        {
            # factor = (3 * x/40 + 1 * y/10) / 4
            "monthly_inflow": [60.0, 400.0, 1.0, np.nan, 49.0],
            "avg_balance": [5.0, 100.0, 0.0, 20.0, 10.0],
        }
    )
    factor = lines.size_factor(bank, 5)
    expected = np.array([(3 * 1.5 + 0.5) / 4, 2.0, 0.5, 0.5, (3 * 49 / 40 + 1) / 4])
    assert np.allclose(factor, expected)
    got = lines.line(np.array(["A", "A", "C", "C", "B"], dtype=object), factor)
    # A: 2,000,000 * 1.25 = 2,500,000; A at max factor is capped at 3,000,000; C at the floor
    # 1,000,000 * 0.5; B: 1,500,000 * 1.16875 = 1,753,125 rounds down to 1,750,000.
    assert got.tolist() == [2_500_000, 3_000_000, 500_000, 500_000, 1_750_000]
    assert np.all(got % 10_000 == 0)


def test_size_factor_needs_the_indicator_columns() -> None:
    with pytest.raises(DataValidationError) as err:
        CreditLinePolicy().size_factor(pd.DataFrame({"monthly_inflow": [1.0]}), 1)
    assert err.value.field == "avg_balance"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cap": -1}, "lines.cap"),
        ({"cap": 0}, "lines.cap"),
        ({"rounding": 0}, "lines.rounding"),
        ({"rounding": 2.5}, "lines.rounding"),
        ({"min_factor": 3.0}, "lines.min_factor"),
        ({"base_lines": {"A": -5, "B": 1, "C": 1, "D": 1, "E": 0}}, "lines.base_lines.A"),
        (
            {"size_indicators": {"monthly_inflow": {"reference": 0}}},
            "lines.size_indicators.monthly_inflow.reference",
        ),
        (
            {"size_indicators": {"monthly_inflow": {"weight": 1}}},
            "lines.size_indicators.monthly_inflow.reference",
        ),
    ],
)
def test_invalid_line_policy_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(DataValidationError) as err:
        CreditLinePolicy(**kwargs)
    assert err.value.field == field


# --- decisions ----------------------------------------------------------------------------------


def _candidates() -> tuple[list[str], np.ndarray, pd.DataFrame]:
    s = ScoreScaling()
    scores = np.array([720.0, 690.0, 660.0, 620.0, 590.0, 570.0, 540.0, 300.0])
    ids = [f"E{i:02d}" for i in range(len(scores))]
    bank = pd.DataFrame(
        {"id": ids[::-1], "monthly_inflow": [30.0] * 8, "avg_balance": [15.0] * 8}
    )  # factor exactly 1 for everyone, rows in another order than ids
    return ids, s.score_to_pd(scores), bank


def test_decisions_follow_the_default_configuration() -> None:
    ids, pds, bank = _candidates()
    out = PreAuthorizationPolicy().decide(ids, pds, bank)
    assert list(out.columns) == list(DECISION_COLUMNS)
    assert out["id"].tolist() == ids
    assert np.allclose(out["score"], [720, 690, 660, 620, 590, 570, 540, 300])
    assert out["grade"].tolist() == ["A", "A", "B", "C", "D", "D", "E", "E"]
    assert out["decision"].tolist() == ["pre-authorize"] * 4 + ["refer"] * 2 + ["decline"] * 2
    # Factor 1: base lines; referred grades carry an indicative line, declined ones 0.
    assert out["credit_line"].tolist() == [
        2_000_000,
        2_000_000,
        1_500_000,
        1_000_000,
        500_000,
        500_000,
        0,
        0,
    ]


def test_decisions_follow_a_custom_configuration() -> None:
    ids, pds, _ = _candidates()
    policy = PreAuthorizationPolicy(
        grades=GradeBands.by_pd([0.02, 0.06], labels=["green", "amber", "red"]),
        lines=CreditLinePolicy(
            base_lines={"green": 800_000, "amber": 300_000, "red": 0},
            size_indicators={},
            preauthorize_through="amber",
            refer_through="amber",
            min_score=650.0,
            rounding=50_000,
        ),
    )
    out = policy.decide(ids, pds)
    expected_grades = np.where(pds <= 0.02, "green", np.where(pds <= 0.06, "amber", "red"))
    assert out["grade"].tolist() == expected_grades.tolist()
    # min_score 650 declines everything scoring below it whatever the grade.
    assert out["decision"].tolist() == ["pre-authorize"] * 3 + ["decline"] * 5
    assert out["grade"].tolist()[:3] == ["green", "green", "amber"]  # 660 is PD 2.2 %
    assert out["credit_line"].tolist() == [800_000, 800_000, 300_000] + [0] * 5


def test_no_bank_features_means_base_lines() -> None:
    ids, pds, _ = _candidates()
    out = PreAuthorizationPolicy().decide(ids[:2], pds[:2])
    assert out["credit_line"].tolist() == [2_000_000, 2_000_000]


def test_a_preauthorized_grade_whose_line_rounds_to_zero_is_referred() -> None:
    policy = PreAuthorizationPolicy(lines=CreditLinePolicy(min_factor=0.0))
    bank = pd.DataFrame({"monthly_inflow": [0.0], "avg_balance": [0.0]})
    out = policy.decide(["E1"], [0.005], bank)
    assert out["decision"].tolist() == ["refer"] and out["credit_line"].tolist() == [0]


def test_decide_rejects_bad_input() -> None:
    policy = PreAuthorizationPolicy()
    with pytest.raises(DuplicateIdentifierError):
        policy.decide(["A1", "A1"], [0.1, 0.2])
    with pytest.raises(DataValidationError) as err:
        policy.decide(["A1", "A2"], [0.1])
    assert err.value.field == "pd"
    with pytest.raises(DataValidationError) as err:
        policy.decide(["A1"], [0.1], reasons=["x", "y"])
    assert err.value.field == "reasons"
    bank = pd.DataFrame({"id": ["A2"], "monthly_inflow": [1.0], "avg_balance": [1.0]})
    with pytest.raises(DataValidationError) as err:
        policy.decide(["A1"], [0.1], bank)
    assert err.value.field == "bank_features"


def test_summary_whitelist_and_csv_export(tmp_path) -> None:
    ids, pds, bank = _candidates()
    policy = PreAuthorizationPolicy()
    out = policy.decide(ids, pds, bank, reasons=[f"bank:x{i}" for i in range(8)])
    summary = policy.summary(out)
    assert summary["by_grade"] == {"A": 2, "B": 1, "C": 1, "D": 2, "E": 2}
    assert summary["by_decision"] == {"pre-authorize": 4, "refer": 2, "decline": 2}
    assert summary["pre_authorized"] == 4
    assert summary["total_credit_line"] == 6_500_000
    assert summary["credit_line_by_grade"] == {
        "A": 4_000_000,
        "B": 1_500_000,
        "C": 1_000_000,
        "D": 0,
        "E": 0,
    }
    json.dumps(summary)  # JSON-ready

    wl = policy.whitelist(out)
    assert wl["id"].tolist() == ids[:4]
    assert "decision" not in wl.columns
    assert wl["score"].is_monotonic_decreasing

    path = tmp_path / "preauth.csv"
    assert export_whitelist(out, path) == 4
    back = pd.read_csv(path, dtype={"id": str})
    assert back["id"].tolist() == ids[:4]
    assert back["credit_line"].tolist() == [2_000_000, 2_000_000, 1_500_000, 1_000_000]
    assert back["reasons"].tolist() == ["bank:x0", "bank:x1", "bank:x2", "bank:x3"]


def test_failed_export_leaves_the_previous_file_intact(tmp_path, monkeypatch) -> None:
    ids, pds, bank = _candidates()
    policy = PreAuthorizationPolicy()
    out = policy.decide(ids, pds, bank)
    path = tmp_path / "preauth.csv"
    policy.export_whitelist(out, path)
    before = path.read_bytes()

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        policy.export_whitelist(out.assign(credit_line=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["preauth.csv"]


# --- configuration files ------------------------------------------------------------------------


def test_policy_json_round_trip(tmp_path) -> None:
    policy = PreAuthorizationPolicy(
        scaling=ScoreScaling(pdo=40, base_score=500, base_odds=30),
        grades=GradeBands.by_pd([0.01, 0.05], labels=["1", "2", "3"]),
        lines=CreditLinePolicy(
            base_lines={"1": 1_000_000, "2": 200_000, "3": 0},
            size_indicators={"monthly_inflow": SizeIndicator(100.0, 2.0)},
            preauthorize_through="1",
            refer_through="2",
            min_score=420,
            cap=2_000_000,
        ),
    )
    path = tmp_path / "policy.json"
    policy.save(path)
    assert json.loads(path.read_text())["scaling"]["odds"] == "good:bad"
    assert PreAuthorizationPolicy.load(path) == policy


def test_partial_json_takes_defaults() -> None:
    policy = PreAuthorizationPolicy.from_dict({"lines": {"cap": 1_000_000}})
    assert policy.lines.cap == 1_000_000 and policy.grades == GradeBands()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"lines": {"capp": 5}}, "lines.capp"),
        ({"color": "red"}, "color"),
        ({"scaling": {"odds": "bad:good"}}, "scaling.odds"),
        ({"scaling": {"pdo": -1}}, "scaling.pdo"),
        ({"lines": {"cap": "lots"}}, "lines.cap"),
        ({"lines": {"base_lines": {"A": 1, "B": 1, "C": 1, "D": 1}}}, "lines.base_lines.E"),
        (
            {"lines": {"base_lines": {"A": 1, "B": 1, "C": 1, "D": 1, "E": 0, "F": 0}}},
            "lines.base_lines.F",
        ),
        ({"lines": {"base_lines": {"A": 1, "B": 1, "C": 0, "D": 1, "E": 0}}}, "lines.base_lines.C"),
        ({"lines": {"refer_through": "B"}}, "lines.refer_through"),
        ({"lines": {"preauthorize_through": "Z"}}, "lines.preauthorize_through"),
        ({"grades": {"cutoffs": [1, 2, 3, 4]}}, "grades.cutoffs"),
        ({"version": 7}, "version"),
    ],
)
def test_invalid_policy_json_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(DataValidationError) as err:
        PreAuthorizationPolicy.from_dict(data)
    assert err.value.field == field


def test_unreadable_policy_file(tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text("{not json")
    with pytest.raises(DataValidationError) as err:
        PreAuthorizationPolicy.load(path)
    assert err.value.field == str(path)


# --- reason codes -------------------------------------------------------------------------------


def test_reason_codes_name_worst_inputs_first_and_only_negative_ones() -> None:
    bank = pd.DataFrame(
        {
            "overdue_count_24m": [-40.0, 5.0, 0.0],
            "inflow_volatility": [-10.0, -1.0, 3.0],
            "avg_balance": [8.0, -2.0, 1.0],
        }
    )
    center = pd.DataFrame({"judicial": [-25.0, 0.0, 0.0], "tax": [-5.0, -30.0, 2.0]})
    codes = reason_codes(bank, center, top_k=3)
    assert codes == [
        "bank:overdue_count_24m;center:judicial;bank:inflow_volatility",
        "center:tax;bank:avg_balance;bank:inflow_volatility",
        "",
    ]
    assert reason_codes(bank, center, top_k=1)[0] == "bank:overdue_count_24m"


def test_reason_codes_on_logit_scale_flip_the_sign() -> None:
    bank = pd.DataFrame({"x": [0.3, -0.1], "y": [0.1, -0.2]})  # logit: positive raises PD
    assert reason_codes(bank, scale="logit") == ["bank:x;bank:y", ""]
    points = ScoreScaling().points(bank)
    assert reason_codes(pd.DataFrame(points, columns=["x", "y"])) == ["bank:x;bank:y", ""]


def test_reason_codes_never_name_center_features_or_values() -> None:
    rng = np.random.default_rng(3)
    center = pd.DataFrame(rng.normal(size=(50, 3)), columns=["judicial", "tax", "utilities"])
    bank = pd.DataFrame(rng.normal(size=(50, 2)), columns=["avg_balance", "products_held"])
    allowed = {
        "bank:avg_balance",
        "bank:products_held",
        "center:judicial",
        "center:tax",
        "center:utilities",
    }
    for text in reason_codes(bank, center, top_k=5):
        assert set(filter(None, text.split(";"))) <= allowed
    with pytest.raises(DataValidationError) as err:
        reason_codes(bank, center.rename(columns={"tax": "annual_tax_paid"}))
    assert err.value.field == "annual_tax_paid"


def test_reason_codes_reject_bad_input() -> None:
    bank = pd.DataFrame({"x": [1.0, np.nan]})
    with pytest.raises(DataValidationError) as err:
        reason_codes(bank)
    assert err.value.field == "x"
    with pytest.raises(DataValidationError):
        reason_codes(pd.DataFrame({"x": [1.0]}), pd.DataFrame({"tax": [1.0, 2.0]}))
    with pytest.raises(DataValidationError) as err:
        reason_codes(pd.DataFrame({"x": [1.0]}), top_k=0)
    assert err.value.field == "top_k"


def test_sum_by_category() -> None:
    center = pd.DataFrame({"f1": [1.0, 2.0], "f2": [3.0, -4.0], "f3": [5.0, 6.0]})
    out = sum_by_category(center, {"f1": "tax", "f2": "tax", "f3": "judicial"})
    assert out["tax"].tolist() == [4.0, -2.0] and out["judicial"].tolist() == [5.0, 6.0]
    with pytest.raises(DataValidationError) as err:
        sum_by_category(center, {"f1": "tax"})
    assert err.value.field == "f2"
