"""Loading and validating party tables, and the schema / PartyTable helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jointcredit.data import PartyTable, TableSchema, generate_uscc, load_party_table
from jointcredit.errors import (
    DataValidationError,
    DuplicateIdentifierError,
    InvalidIdentifierError,
    SchemaMismatchError,
)

DEFAULT_CREDIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "default_credit"
if not DEFAULT_CREDIT.is_dir():  # the shared folder sits next to the checkout, wherever it is
    DEFAULT_CREDIT = Path("/work/shared/data/default_credit")


@pytest.fixture
def ids() -> list[str]:
    return generate_uscc(np.random.default_rng(11), 6)


@pytest.fixture
def frame(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ids,
            "y": [0, 1, 0, 0, 1, 0],
            "balance": [1.5, np.nan, 3.0, 1e6, 0.0, 2.0],
            "loans": [0, 1, 2, 0, 3, 1],
            "payroll": [True, False, True, True, False, False],
        }
    )


def _load(frame: pd.DataFrame, **kw: object) -> PartyTable:
    return load_party_table(frame, label_col=kw.pop("label_col", "y"), **kw)  # type: ignore[arg-type]


# --- happy paths ------------------------------------------------------------------------------


def test_loads_dataframe_into_validated_table(frame: pd.DataFrame, ids: list[str]) -> None:
    table = _load(frame)
    assert table.n_rows == 6
    assert list(table.ids) == ids and table.ids.dtype == object
    assert table.schema == TableSchema("id", "y", ("balance", "loans", "payroll"), "uscc")
    assert list(table.X.columns) == ["balance", "loans", "payroll"]
    assert (table.X.dtypes == np.float64).all()
    assert isinstance(table.X.index, pd.RangeIndex) and table.X.index.start == 0
    assert np.isnan(table.X.loc[1, "balance"])  # missing is kept, not imputed
    assert table.X["payroll"].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert table.y is not None and table.y.dtype == np.int8
    assert table.y.tolist() == [0, 1, 0, 0, 1, 0]


def test_ids_are_normalised(frame: pd.DataFrame, ids: list[str]) -> None:
    messy = frame.assign(id=[f"  {i.lower()} " for i in ids])
    assert list(_load(messy).ids) == ids


def test_caller_frame_is_not_modified(frame: pd.DataFrame) -> None:
    messy = frame.assign(id=[f" {i.lower()}" for i in frame["id"]])
    before = messy.copy(deep=True)
    table = _load(messy)
    table.X.iloc[0, 0] = -5.0
    pd.testing.assert_frame_equal(messy, before)


def test_bad_input_never_modifies_the_frame(frame: pd.DataFrame) -> None:
    bad = frame.assign(y=[0, 1, 2, 0, 1, 0], id=[" " + i for i in frame["id"]])
    before = bad.copy(deep=True)
    with pytest.raises(DataValidationError):
        _load(bad)
    pd.testing.assert_frame_equal(bad, before)


def test_explicit_feature_columns_select_and_order(frame: pd.DataFrame) -> None:
    table = _load(frame, feature_cols=["loans", "balance"])
    assert table.feature_cols == ("loans", "balance")
    assert list(table.X.columns) == ["loans", "balance"]


def test_unlabelled_table(frame: pd.DataFrame) -> None:
    table = load_party_table(frame.drop(columns="y"))
    assert table.y is None and table.schema.label_col is None


def test_bool_labels_and_numeric_text_features(frame: pd.DataFrame) -> None:
    table = _load(frame.assign(y=frame["y"].astype(bool), loans=frame["loans"].astype(str)))
    assert table.y is not None and table.y.tolist() == [0, 1, 0, 0, 1, 0]
    assert table.X["loans"].tolist() == [0.0, 1.0, 2.0, 0.0, 3.0, 1.0]


def test_csv_with_bom_and_plain_ids_keeps_leading_zeros(tmp_path: Path) -> None:
    path = tmp_path / "bank.csv"
    path.write_text("id,y,x0\n0012,1,0.5\n0013,0,\n", encoding="utf-8-sig")
    table = load_party_table(path, label_col="y", id_kind="plain")
    assert list(table.ids) == ["0012", "0013"]
    assert table.X["x0"].tolist()[0] == 0.5 and np.isnan(table.X["x0"].tolist()[1])
    table_str = load_party_table(str(path), label_col="y", id_kind="plain")
    assert list(table_str.ids) == ["0012", "0013"]


def test_allow_list_accepts_legacy_codes(frame: pd.DataFrame) -> None:
    legacy = "440101000123456"  # a 15-digit pre-2015 registration number
    with_legacy = frame.assign(id=[legacy.lower(), *frame["id"][1:]])
    with pytest.raises(InvalidIdentifierError):
        _load(with_legacy)
    table = _load(with_legacy, allowed_legacy_ids=[legacy])
    assert table.ids[0] == legacy


# --- typed errors -----------------------------------------------------------------------------


def test_unknown_id_kind(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame, id_kind="lei")
    assert err.value.field == "id_kind"


def test_missing_id_column(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame, id_col="uscc")
    assert err.value.field == "uscc" and "not found" in err.value.reason


def test_empty_and_missing_ids_are_listed(frame: pd.DataFrame) -> None:
    broken = frame.assign(id=[frame["id"][0], "  ", None, frame["id"][3], np.nan, ""])
    with pytest.raises(InvalidIdentifierError) as err:
        _load(broken, id_kind="plain")
    assert err.value.field == "id"
    assert [r.row for r in err.value.rows] == [1, 2, 4, 5]
    assert all("empty" in r.reason for r in err.value.rows)


def test_all_invalid_uscc_rows_reported_in_one_error(frame: pd.DataFrame, ids: list[str]) -> None:
    wrong_check = ids[1][:17] + ("0" if ids[1][17] != "0" else "1")
    broken = frame.assign(
        id=[ids[0], wrong_check, "12345", ids[3], "9144010I" + ids[4][8:], ids[5]]
    )
    with pytest.raises(InvalidIdentifierError) as err:
        _load(broken)
    rows = {r.row: r for r in err.value.rows}
    assert sorted(rows) == [1, 2, 4]
    assert "check character mismatch" in rows[1].reason and rows[1].value == wrong_check
    assert "wrong length" in rows[2].reason
    assert "illegal character 'I' at position 8" in rows[4].reason
    message = str(err.value)
    assert message.startswith("id:") and "row 1" in message and "row 4" in message


def test_plain_ids_accept_any_text(frame: pd.DataFrame) -> None:
    table = _load(frame.assign(id=["a", "b", "1", "x-2", "客户5", "6"]), id_kind="plain")
    assert list(table.ids) == ["A", "B", "1", "X-2", "客户5", "6"]


def test_duplicate_ids_after_normalisation(frame: pd.DataFrame, ids: list[str]) -> None:
    dup = frame.assign(id=[ids[0], ids[1], ids[0].lower(), ids[3], ids[4], " " + ids[1]])
    with pytest.raises(DuplicateIdentifierError) as err:
        _load(dup)
    assert err.value.field == "id"
    assert sorted(err.value.duplicates) == sorted([ids[0], ids[1]])


def test_label_required_but_not_configured(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        load_party_table(frame, require_label=True)
    assert err.value.field == "label_col"


def test_label_column_missing(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame, label_col="default_12m")
    assert err.value.field == "default_12m" and "not found" in err.value.reason


def test_nan_labels(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame.assign(y=[0, np.nan, 1, 0, np.nan, 0]))
    assert err.value.field == "y" and "missing" in err.value.reason and "1, 4" in err.value.reason


def test_labels_outside_zero_one(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame.assign(y=[0, 1, 2, 0, -1, 0]))
    assert err.value.field == "y" and "2.0" in err.value.reason and "-1.0" in err.value.reason


def test_text_labels(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame.assign(y=["good", "bad", "good", "good", "bad", "good"]))
    assert err.value.field == "y" and "'good'" in err.value.reason


def test_non_numeric_feature_names_column_and_value(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame.assign(loans=["0", "1", "two", "0", "3", "1"]))
    assert err.value.field == "loans" and "'two'" in err.value.reason and "row 2" in str(err.value)


def test_date_feature_is_rejected(frame: pd.DataFrame) -> None:
    dates = pd.to_datetime(["2024-01-01"] * 6)
    with pytest.raises(DataValidationError) as err:
        _load(frame.assign(opened=dates))
    assert err.value.field == "opened"


def test_infinite_feature_values(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame.assign(balance=[1.0, np.inf, 0.0, 0.0, 0.0, 0.0]))
    assert err.value.field == "balance" and "infinite" in err.value.reason


def test_requested_feature_columns_missing(frame: pd.DataFrame) -> None:
    with pytest.raises(SchemaMismatchError) as err:
        _load(frame, feature_cols=["balance", "income"])
    assert err.value.field == "income"


def test_feature_cannot_be_id_or_label(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame, feature_cols=["balance", "y"])
    assert err.value.field == "y"


def test_duplicate_column_names(frame: pd.DataFrame) -> None:
    doubled = pd.concat([frame, frame[["loans"]]], axis=1)
    with pytest.raises(SchemaMismatchError) as err:
        _load(doubled)
    assert err.value.field == "loans"


def test_empty_table(frame: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError) as err:
        _load(frame.iloc[0:0])
    assert err.value.field == "rows"


def test_non_utf8_csv(tmp_path: Path) -> None:
    path = tmp_path / "center.csv"
    path.write_bytes("id,行业\nA1,1\n".encode("gbk"))
    with pytest.raises(DataValidationError) as err:
        load_party_table(path, id_kind="plain")
    assert err.value.field == "source" and "UTF-8" in err.value.reason


def test_unsupported_source_type() -> None:
    with pytest.raises(DataValidationError) as err:
        load_party_table([1, 2, 3])  # type: ignore[arg-type]
    assert err.value.field == "source"


# --- PartyTable and TableSchema -----------------------------------------------------------------


def test_subset_reorders_rows_and_keeps_alignment(frame: pd.DataFrame, ids: list[str]) -> None:
    table = _load(frame)
    sub = table.subset([ids[4], ids[0], ids[2]])
    assert list(sub.ids) == [ids[4], ids[0], ids[2]]
    assert sub.y is not None and sub.y.tolist() == [1, 0, 0]
    assert sub.X["loans"].tolist() == [3.0, 0.0, 2.0]
    assert isinstance(sub.X.index, pd.RangeIndex)
    assert table.n_rows == 6  # the original is untouched


def test_subset_missing_or_repeated_id(frame: pd.DataFrame, ids: list[str]) -> None:
    table = _load(frame)
    with pytest.raises(DataValidationError) as err:
        table.subset([ids[0], "91440101MA5XXXXXXX"])
    assert err.value.field == "id" and "not in this table" in err.value.reason
    with pytest.raises(DuplicateIdentifierError):
        table.subset([ids[0], ids[0]])


def test_to_frame_round_trip(frame: pd.DataFrame) -> None:
    table = _load(frame)
    out = table.to_frame()
    assert list(out.columns) == ["id", "y", "balance", "loans", "payroll"]
    again = _load(out)
    assert list(again.ids) == list(table.ids)
    pd.testing.assert_frame_equal(again.X, table.X)


def test_party_table_rejects_misaligned_parts(frame: pd.DataFrame) -> None:
    table = _load(frame)
    with pytest.raises(DataValidationError):
        PartyTable(ids=table.ids[:3], X=table.X, y=None, schema=table.schema)
    with pytest.raises(SchemaMismatchError):
        PartyTable(ids=table.ids, X=table.X[["loans"]], y=None, schema=table.schema)


def test_schema_compatibility() -> None:
    base = TableSchema("id", "y", ("a", "b", "c"), "uscc")
    base.check_compatible(TableSchema("uscc", None, ("a", "b", "c"), "uscc"))
    with pytest.raises(SchemaMismatchError) as err:
        base.check_compatible(TableSchema("id", None, ("a", "c", "d"), "uscc"))
    assert "b" in err.value.field and "d" in err.value.field
    assert "missing column(s) ['b']" in err.value.reason
    with pytest.raises(SchemaMismatchError, match="different order"):
        base.check_compatible(TableSchema("id", None, ("a", "c", "b"), "uscc"))
    with pytest.raises(SchemaMismatchError, match="id kind"):
        base.check_compatible(TableSchema("id", None, ("a", "b", "c"), "plain"))
    with pytest.raises(DataValidationError):
        TableSchema("id", None, (), "lei")


def test_schema_alignability() -> None:
    bank = TableSchema("id", "y", ("x0",), "plain")
    bank.check_alignable(TableSchema("id", None, ("x0", "x1"), "plain"))
    with pytest.raises(SchemaMismatchError, match="both parties hold a label"):
        bank.check_alignable(TableSchema("id", "y", ("z",), "plain"))
    with pytest.raises(SchemaMismatchError):
        bank.check_alignable(TableSchema("id", None, ("z",), "uscc"))


# --- the shared benchmark data ----------------------------------------------------------------


@pytest.mark.skipif(not DEFAULT_CREDIT.is_dir(), reason="shared default_credit data not present")
def test_loads_default_credit_with_plain_ids() -> None:
    bank = load_party_table(
        DEFAULT_CREDIT / "bank.csv", label_col="y", id_kind="plain", require_label=True
    )
    center = load_party_table(DEFAULT_CREDIT / "center.csv", id_kind="plain")
    assert bank.n_rows == center.n_rows == 30_000
    assert bank.feature_cols == tuple(f"x{i}" for i in range(13))
    assert center.feature_cols == tuple(f"x{i}" for i in range(10))
    assert bank.y is not None and 0.2 < bank.y.mean() < 0.25
    assert set(bank.ids) == set(center.ids)
    bank.schema.check_alignable(center.schema)
    aligned = center.subset(bank.ids)
    assert list(aligned.ids) == list(bank.ids)


def test_integer_column_labels_are_named_by_their_text(ids: list[str]) -> None:
    raw = pd.DataFrame(np.arange(12.0).reshape(6, 2))
    raw.insert(0, "id", ids)
    table = load_party_table(raw)
    assert table.feature_cols == ("0", "1")
    assert list(raw.columns) == ["id", 0, 1]
