"""USCC (GB 32100-2015) validation, normalisation and generation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcredit.data.uscc import (
    USCC_CHARS,
    generate_uscc,
    is_valid_uscc,
    normalize_id,
    normalize_ids,
    uscc_check_char,
    uscc_problem,
    valid_uscc_mask,
)
from jointcredit.errors import DataValidationError

VALID = "91110000600037341L"
REMAINDER_ZERO = "918587832P12455XH0"


def _weighted_sum(first17: str) -> int:
    # Independent restatement of the standard: weights 3^(i-1) mod 31, i = 1..17.
    return sum(USCC_CHARS.index(c) * (3 ** (i - 1) % 31) for i, c in enumerate(first17, 1))


def _gb11714_check(body: str) -> str:
    values = [int(c) if c.isdigit() else ord(c) - ord("A") + 10 for c in body]
    c9 = 11 - sum(v * w for v, w in zip(values, (3, 7, 9, 10, 5, 8, 4, 2), strict=True)) % 11
    return {10: "X", 11: "0"}.get(c9, str(c9))


def test_alphabet_is_31_characters_without_ambiguous_letters() -> None:
    assert len(USCC_CHARS) == 31 == len(set(USCC_CHARS))
    assert not set("IOSVZ") & set(USCC_CHARS)


def test_known_valid_code() -> None:
    assert uscc_check_char(VALID[:17]) == "L"
    assert uscc_problem(VALID) is None
    assert is_valid_uscc(VALID)


def test_remainder_zero_case_maps_to_character_zero() -> None:
    assert _weighted_sum(REMAINDER_ZERO[:17]) % 31 == 0
    assert uscc_check_char(REMAINDER_ZERO[:17]) == "0"
    assert is_valid_uscc(REMAINDER_ZERO)


@pytest.mark.parametrize("wrong", sorted(set(USCC_CHARS) - {"L"}))
def test_corrupted_check_character_is_rejected_with_expected_value(wrong: str) -> None:
    code = VALID[:17] + wrong
    assert not is_valid_uscc(code)
    problem = uscc_problem(code)
    assert problem is not None
    assert "check character" in problem and "'L'" in problem and repr(wrong) in problem


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("", "wrong length: 0"),
        (VALID[:17], "wrong length: 17"),
        (VALID + "0", "wrong length: 19"),
        ("9111I000600037341L", "illegal character 'I' at position 5"),
        ("91110000600037341l", "illegal character 'l' at position 18"),
        ("91110000-00037341L", "illegal character '-' at position 9"),
    ],
)
def test_problem_explains_length_and_illegal_characters(code: str, fragment: str) -> None:
    problem = uscc_problem(code)
    assert problem is not None and fragment in problem


def test_non_strings_are_invalid_not_errors() -> None:
    for value in (None, 91110000600037341, 1.5, b"91110000600037341L"):
        assert not is_valid_uscc(value)
        assert "not a string" in (uscc_problem(value) or "")


def test_check_char_refuses_garbage() -> None:
    with pytest.raises(DataValidationError, match="17 characters"):
        uscc_check_char("123")
    with pytest.raises(DataValidationError, match="position 3"):
        uscc_check_char("91O100006000373411"[:17])


def test_normalize_id() -> None:
    assert normalize_id("  91110000600037341l\t") == VALID
    # Full-width characters and the ideographic space, as typed with a Chinese input method.
    assert normalize_id("\u3000９１１１００００６０００３７３４１ｌ") == VALID
    assert normalize_id(25115) == "25115"
    assert normalize_id(25115.0) == "25115"
    assert normalize_id(float("nan")) == ""
    assert normalize_id(None) == ""
    assert normalize_id(" abc ") == "ABC"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.integers(), st.none(), st.floats())))
def test_vectorised_normalisation_matches_scalar(values: list[object]) -> None:
    assert list(normalize_ids(values)) == [normalize_id(v) for v in values]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet=USCC_CHARS + "IOlz-é", min_size=16, max_size=19),
            st.integers(0, 2**32).map(lambda s: generate_uscc(np.random.default_rng(s), 1)[0]),
        ),
        max_size=20,
    )
)
def test_vectorised_validation_matches_scalar(codes: list[str]) -> None:
    assert list(valid_uscc_mask(codes)) == [is_valid_uscc(c) for c in codes]


def test_generated_codes_are_valid_unique_and_plausible() -> None:
    codes = generate_uscc(np.random.default_rng(7), 5000)
    assert len(codes) == len(set(codes)) == 5000
    assert all(isinstance(c, str) for c in codes)
    assert valid_uscc_mask(codes).all()
    assert {c[:2] for c in codes} == {"91", "92", "93"}
    assert all(c[2:6] == "4401" for c in codes)  # Guangzhou districts by default
    # Positions 9-17 are an organisation code with its own GB 11714 check character.
    assert all(_gb11714_check(c[8:16]) == c[16] for c in codes)
    assert any(c[8:10] == "MA" for c in codes) and any(c[8:16].isdigit() for c in codes)


def test_generation_is_deterministic_and_respects_regions_and_heads() -> None:
    a = generate_uscc(np.random.default_rng(1), 100)
    assert a == generate_uscc(np.random.default_rng(1), 100)
    assert a != generate_uscc(np.random.default_rng(2), 100)
    assert generate_uscc(np.random.default_rng(1), 0) == []
    codes = generate_uscc(
        np.random.default_rng(3), 3, regions=["440604", "441900", "110105"], heads=["92"] * 3
    )
    assert [c[2:8] for c in codes] == ["440604", "441900", "110105"]
    assert all(c.startswith("92") and is_valid_uscc(c) for c in codes)


def test_generation_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DataValidationError, match="regions"):
        generate_uscc(rng, 2, regions=["4401", "440103"])
    with pytest.raises(DataValidationError, match="regions"):
        generate_uscc(rng, 2, regions=["440103"])
    with pytest.raises(DataValidationError, match="heads"):
        generate_uscc(rng, 1, heads=["9I"])
    with pytest.raises(DataValidationError, match="n"):
        generate_uscc(rng, -1)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    position=st.integers(0, 17),
    replacement=st.sampled_from(USCC_CHARS + "IOSVZa -"),
)
def test_any_single_character_corruption_is_detected(
    seed: int, position: int, replacement: str
) -> None:
    code = generate_uscc(np.random.default_rng(seed), 1)[0]
    assert is_valid_uscc(code)
    if code[position] == replacement:
        return  # not a corruption
    corrupted = code[:position] + replacement + code[position + 1 :]
    assert not is_valid_uscc(corrupted)
    assert uscc_problem(corrupted) is not None


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), position=st.integers(0, 16))
def test_any_adjacent_transposition_is_detected(seed: int, position: int) -> None:
    # 3 is a primitive root modulo 31, so all 17 weights differ and swaps always show.
    code = generate_uscc(np.random.default_rng(seed), 1)[0]
    a, b = code[position], code[position + 1]
    if a == b:
        return
    swapped = code[:position] + b + a + code[position + 2 :]
    assert not is_valid_uscc(swapped)
