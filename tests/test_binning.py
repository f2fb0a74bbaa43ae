"""Federated binning: WOE direction, IV recovery, special/missing bins, monotonic merging,
transcript privacy (labels never reach the center in the clear, cut points never reach the bank),
and typed errors on bad input."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

from jointcredit.data import load_party_table
from jointcredit.errors import DataValidationError, JointCreditError
from jointcredit.learn._bins import BinSpec, fit_bins, iv_strength, monotonic_groups, woe_iv
from jointcredit.learn.binning import FederatedBinning
from jointcredit.parties import NotAlignedError
from jointcredit.protocol.envelope import Role
from jointcredit.session import JointSession

N = 3000


def _tables(seed: int = 0, n: int = N) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A bank and a center sharing ``n`` enterprises (the center has a few more).

    ``signal``: P(bad) is 0.40 where it is 1 and 0.10 where it is 0 (known IV);
    ``noise``: independent of the label; ``u_shape``: bad rate high at both ends;
    ``tax_credit_grade``: a catalogue feature with special code -1 and missing values.
    """
    rng = np.random.default_rng(seed)
    ids = [f"E{i:06d}" for i in range(n + 200)]
    signal = (rng.random(n + 200) < 0.3).astype(float)
    p_bad = np.where(signal == 1, 0.40, 0.10)
    u = rng.uniform(-1, 1, n + 200)
    p_bad = np.where(np.abs(u) > 0.8, 0.35, p_bad)
    y = (rng.random(n + 200) < p_bad).astype(int)
    grade = rng.integers(0, 5, n + 200).astype(float)
    grade[rng.random(n + 200) < 0.1] = -1.0
    grade[rng.random(n + 200) < 0.05] = np.nan
    center = pd.DataFrame(
        {
            "id": ids,
            "signal": signal,
            "noise": rng.normal(size=n + 200),
            "u_shape": u,
            "tax_credit_grade": grade,
        }
    )
    bank = pd.DataFrame({"id": ids[:n], "y": y[:n], "balance": rng.normal(size=n) + 0.8 * y[:n]})
    return bank, center


def _session(bank: pd.DataFrame, center: pd.DataFrame, *, keep_bytes: bool = False):
    b = load_party_table(bank, label_col="y", id_kind="plain")
    c = load_party_table(center, id_kind="plain")
    s = JointSession.in_process(b, c, keep_bytes=keep_bytes)
    s.align()
    return s


@pytest.fixture(scope="module")
def data():
    return _tables()


# --- local arithmetic ------------------------------------------------------------------------


def test_woe_points_to_the_riskier_bin_and_matches_the_formula():
    bads = np.array([10, 40, 50])
    totals = np.array([500, 300, 200])
    woe, contrib, iv = woe_iv(bads, totals)
    b = bads + 0.5
    g = totals - bads + 0.5
    expected = np.log((b / b.sum()) / (g / g.sum()))
    np.testing.assert_allclose(woe, expected)
    # WOE = ln(bad share / good share): the bin with the highest bad rate has the largest WOE,
    # and a bin safer than average is negative
    assert woe[2] > woe[1] > 0 > woe[0]
    np.testing.assert_allclose(iv, np.sum((b / b.sum() - g / g.sum()) * expected))
    assert np.all(contrib >= 0)


def test_empty_bins_get_zero_woe_and_no_iv():
    woe, contrib, _ = woe_iv([5, 0, 3], [50, 0, 40])
    assert woe[1] == 0.0 and contrib[1] == 0.0


@pytest.mark.parametrize(
    ("iv", "label"),
    [(0.0, "useless"), (0.019, "useless"), (0.05, "weak"), (0.2, "medium"), (0.4, "strong"),
     (0.51, "suspicious")],
)  # fmt: skip
def test_iv_strength_bands(iv, label):
    assert iv_strength(iv) == label


def test_fit_bins_gives_special_codes_and_missing_values_their_own_bins():
    rng = np.random.default_rng(1)
    x = rng.normal(size=1000)
    x[:50] = -1.0
    x[50:80] = np.nan
    spec = fit_bins(x, max_bins=5, special_codes={-1.0: "not rated"})
    idx = spec.assign(x)
    assert spec.n_numeric == 5 and spec.n_bins == 7
    assert np.all(idx[:50] == spec.n_numeric)  # the special-code bin
    assert np.all(idx[50:80] == spec.missing_bin)
    counts = np.bincount(idx[80:], minlength=spec.n_bins)[: spec.n_numeric]
    assert counts.min() > 150  # roughly equal frequency (920 values in 5 bins)
    assert spec.kind(spec.n_numeric) == "special" and spec.kind(spec.missing_bin) == "missing"


def test_merge_numeric_refuses_non_adjacent_groups():
    spec = BinSpec(np.array([1.0, 2.0, 3.0]))
    merged, mapping = spec.merge_numeric([[0, 1], [2], [3]])
    assert list(merged.cuts) == [2.0, 3.0] and list(mapping) == [0, 0, 1, 2, 3]
    with pytest.raises(DataValidationError, match="merge"):
        spec.merge_numeric([[0, 2], [1], [3]])


def test_monotonic_groups_pool_violators():
    runs = monotonic_groups([5, 3, 10, 20], [100, 100, 100, 100])
    rates = [sum([5, 3, 10, 20][i] for i in r) / (100 * len(r)) for r in runs]
    assert runs[0] == [0, 1] and rates == sorted(rates)


# --- the protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["plain", "paillier"])
def test_iv_of_a_feature_with_known_signal_is_recovered(data, backend):
    bank, center = data
    s = _session(bank, center)
    fb = FederatedBinning(backend=backend, max_bins=5).fit(s)
    table = fb.iv_table_.set_index("feature")

    # population IV of the binary signal: 30 % exposed; P(bad) 0.40 vs 0.10, except for the
    # 20 % of rows where the u-shaped overlay sets it to 0.35 (independently of the signal)
    y = s.bank.aligned_labels()
    x = s.center.aligned_features()["signal"].to_numpy()
    bads = np.array([y[x == v].sum() for v in (0.0, 1.0)])
    totals = np.array([(x == v).sum() for v in (0.0, 1.0)])
    _, _, empirical = woe_iv(bads, totals)
    assert table.loc["signal", "iv"] == pytest.approx(empirical, abs=1e-9)
    p1, p0, share = 0.8 * 0.40 + 0.2 * 0.35, 0.8 * 0.10 + 0.2 * 0.35, 0.3
    bad_share = np.array([(1 - share) * p0, share * p1])
    good_share = np.array([(1 - share) * (1 - p0), share * (1 - p1)])
    bad_share, good_share = bad_share / bad_share.sum(), good_share / good_share.sum()
    theory = float(np.sum((bad_share - good_share) * np.log(bad_share / good_share)))
    assert abs(table.loc["signal", "iv"] - theory) < 0.05
    assert table.loc["signal", "strength"] in ("medium", "strong")
    assert table.loc["noise", "iv"] < 0.02 and table.loc["noise", "strength"] == "useless"
    assert table.loc["signal", "party"] == "center" and table.loc["balance", "party"] == "bank"
    # WOE direction at the federated level: the exposed bin (higher bad rate) is positive
    bins = fb.bin_table_[fb.bin_table_["feature"] == "signal"]
    riskiest = bins.loc[bins["bad_rate"].idxmax()]
    assert riskiest["woe"] > 0


def test_encrypted_binning_equals_the_plain_reference(data):
    bank, center = data
    s = _session(bank, center)
    plain = FederatedBinning(backend="plain").fit(s)
    enc = FederatedBinning(backend="paillier").fit(s)
    pd.testing.assert_frame_equal(plain.iv_table_, enc.iv_table_)
    # per-bin counts agree as multisets (labels are shuffled independently in each run)
    for f in ("signal", "u_shape", "tax_credit_grade"):
        a = plain.bin_table_[plain.bin_table_["feature"] == f][["count", "bads"]]
        b = enc.bin_table_[enc.bin_table_["feature"] == f][["count", "bads"]]
        assert sorted(map(tuple, a.to_numpy())) == sorted(map(tuple, b.to_numpy()))
    # several counts per plaintext: far fewer ciphertexts than bins came back
    n_bins = len(enc.bin_table_[enc.bin_table_["party"] == "center"])
    assert enc.transcript_["round_trips"] == 2
    assert n_bins > 20


def test_catalogue_special_codes_and_missing_values_get_own_center_bins(data):
    bank, center = data
    s = _session(bank, center)
    fb = FederatedBinning(backend="plain").fit(s)
    grade = fb.bin_table_[fb.bin_table_["feature"] == "tax_credit_grade"]
    kinds = grade.set_index("range")["kind"]
    assert kinds.get("= -1") == "special" and kinds.get("missing") == "missing"
    x = s.center.aligned_features()["tax_credit_grade"].to_numpy()
    assert grade.set_index("range").loc["= -1", "count"] == int(np.sum(x == -1.0))
    assert grade.set_index("range").loc["missing", "count"] == int(np.isnan(x).sum())
    assert fb.iv_table_.set_index("feature").loc["tax_credit_grade", "category"] == "tax"


def test_monotonic_merge_is_driven_by_the_bank_and_applied_by_the_center(data):
    bank, center = data
    s = _session(bank, center)
    fb = FederatedBinning(backend="plain", monotonic=True, max_bins=10).fit(s)
    part = s.center.model_parts[fb.model_id_]["features"]["u_shape"]
    spec = BinSpec.from_dict(part["spec"])
    labels = part["labels"]
    # the center's merged bins, in true value order, have a monotonic bad rate
    x = s.center.aligned_features()["u_shape"].to_numpy()
    y = s.bank.aligned_labels()
    idx = spec.assign(x)
    rates = [y[idx == b].mean() for b in range(spec.n_numeric)]
    assert rates == sorted(rates) or rates == sorted(rates, reverse=True)
    assert spec.n_numeric < 10  # the U shape forced merges
    # and the bank's view agrees with the center's bins label by label
    result = fb.center_result_["u_shape"]
    for lab, total in zip(result["labels"], result["totals"], strict=True):
        assert int(np.sum(idx == labels.index(lab))) == int(total)


def test_binning_transcript_keeps_labels_and_cut_points_private(data):
    bank, center = data
    s = _session(bank, center, keep_bytes=True)
    fb = FederatedBinning(backend="paillier", max_bins=8).fit(s)
    to_center = b"".join(s.transcript.payloads(Role.BANK, "binning"))
    to_bank = b"".join(s.transcript.payloads(Role.CENTER, "binning"))

    y = s.bank.aligned_labels().astype(np.int64)
    for encoded in (
        y.astype(np.int8).tobytes(),
        y.astype(np.float64).tobytes(),
        y.astype(np.int64).tobytes(),
        np.packbits(y.astype(bool)).tobytes(),
        "".join(map(str, y[:200])).encode(),
    ):
        assert encoded[:256] not in to_center

    cuts = [
        c
        for f in s.center.model_parts[fb.model_id_]["features"].values()
        for c in f["spec"]["cuts"]
        if c not in (0.0, 1.0, 2.0, 3.0)  # small integers occur everywhere in any encoding
    ]
    assert cuts
    for c in cuts:
        for pattern in (struct.pack("<d", c), struct.pack(">d", c), repr(c).encode()):
            assert pattern not in to_bank


def test_select_and_transform_bank(data):
    bank, center = data
    s = _session(bank, center)
    fb = FederatedBinning(backend="plain").fit(s)
    chosen = fb.select(min_iv=0.02)
    assert "signal" in chosen["center"] and "noise" not in chosen["center"]
    assert "balance" in chosen["bank"]
    woe = fb.transform_bank(s.bank.aligned_features())
    assert list(woe.columns) == ["balance"]
    assert np.isfinite(woe.to_numpy()).all()
    # riskier (higher balance, by construction) rows get positive WOE on average
    y = s.bank.aligned_labels()
    assert woe["balance"][y == 1].mean() > 0 > woe["balance"][y == 0].mean()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_bins": 1}, "max_bins"),
        ({"max_bins": 2.5}, "max_bins"),
        ({"min_bin_fraction": 0.7}, "min_bin_fraction"),
        ({"backend": "rsa"}, "backend"),
        ({"key_bits": 1024}, "key_bits"),
        ({"n_jobs": 0}, "n_jobs"),
    ],
)
def test_bad_parameters_raise_typed_errors(data, params, field):
    bank, center = data
    s = _session(bank, center)
    with pytest.raises(DataValidationError) as info:
        FederatedBinning(**params).fit(s)
    assert info.value.field == field


def test_unaligned_session_and_bad_rows_are_refused(data):
    bank, center = data
    b = load_party_table(bank, label_col="y", id_kind="plain")
    c = load_party_table(center, id_kind="plain")
    s = JointSession.in_process(b, c)
    with pytest.raises(NotAlignedError):
        FederatedBinning(backend="plain").fit(s)
    s.align()
    with pytest.raises(DataValidationError) as info:
        FederatedBinning(backend="plain").fit(s, rows=np.array([0, 1, 10**7]))
    assert info.value.field == "rows"
    with pytest.raises(DataValidationError):
        FederatedBinning(backend="plain").fit(s, rows=np.array([3, 3, 4]))
    with pytest.raises(JointCreditError, match="center_features"):
        FederatedBinning(backend="plain", center_features=["nope"]).fit(s)


def test_too_few_rows_are_refused_by_the_center():
    bank, center = _tables(n=40)
    s = _session(bank, center)
    with pytest.raises(JointCreditError, match="minimum"):
        FederatedBinning(backend="plain").fit(s)
