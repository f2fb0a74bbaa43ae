"""The command line: align end to end, and typed errors as one-line messages with exit code 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from jointcredit.cli import main
from jointcredit.data import make_sme_data


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    data = make_sme_data(seed=3, n_enterprises=3000, n_bank_customers=800)
    data.bank.to_csv(root / "bank.csv", index=False)
    data.center.to_csv(root / "center.csv", index=False)
    return root, data


def test_align_writes_alignment_and_intersection(tables, tmp_path):
    root, data = tables
    code = main(
        ["align", "--bank", str(root / "bank.csv"), "--center", str(root / "center.csv"),
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "alignment.json").read_text())
    expected = sorted(set(data.bank["id"]) & set(data.center["id"]))
    assert result["intersection_size"] == len(expected)
    assert result["bank_rows"] == 800 and result["center_rows"] == 3000
    assert result["round_trips"] >= 1 and result["bytes_bank_to_center"] > 0
    written = pd.read_csv(tmp_path / "intersection.csv", dtype=str)["id"].tolist()
    assert sorted(written) == expected


def test_align_rejects_an_invalid_uscc_with_the_row(tables, tmp_path, capsys):
    root, data = tables
    bank = data.bank.copy()
    good = bank.loc[5, "id"]
    bank.loc[5, "id"] = good[:-1] + ("0" if good[-1] != "0" else "1")
    bank.to_csv(tmp_path / "bad.csv", index=False)
    code = main(
        ["align", "--bank", str(tmp_path / "bad.csv"), "--center", str(root / "center.csv"),
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "row 5" in err and "check" in err
    assert not (tmp_path / "out" / "alignment.json").exists()


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    code = main(
        ["align", "--bank", str(tmp_path / "nope.csv"), "--center", str(tmp_path / "nope.csv"),
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 2
    assert "nope.csv" in capsys.readouterr().err
