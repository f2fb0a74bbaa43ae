"""Unified Social Credit Codes (统一社会信用代码, GB 32100-2015).

Every enterprise registered in mainland China carries an 18-character USCC. It is the natural
join key between a bank and a credit center, so both parties must agree exactly on what a valid
code is and how a raw value is normalised before hashing it into the private set intersection.

Layout of a code (positions are 1-based, as in the standard)::

    position   1    2    3-8          9-17                  18
               |    |    |            |                     |
    meaning    reg. type administrative organisation code    check character
               auth.     division     (GB 11714 body + its
                         (e.g. 440106) own check character)

Only the position-18 check character is enforced by :func:`uscc_problem`. Positions 1-8 vary in
practice (pilot-era and cross-registered codes), and the organisation-code check in position 17
does not hold for every code in circulation, so enforcing them would reject real enterprises.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jointcredit.errors import DataValidationError

#: The 31 characters a USCC may contain: digits and upper-case letters without I, O, S, V, Z.
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_LENGTH = 18

_VALUE = {c: i for i, c in enumerate(USCC_CHARS)}
# Weight of position i (1-based) is 3^(i-1) mod 31.
_WEIGHTS = tuple(pow(3, i, 31) for i in range(USCC_LENGTH - 1))
_WEIGHTS_NP = np.array(_WEIGHTS, dtype=np.int64)
_VALUE_BY_CODEPOINT = np.full(128, -1, dtype=np.int64)
for _ch, _v in _VALUE.items():
    _VALUE_BY_CODEPOINT[ord(_ch)] = _v

# GB 11714 organisation code: 8 body characters, weights below, check = 11 - (sum mod 11),
# 10 -> "X", 11 -> "0". Letters count as 10 + their alphabet index (A=10 ... Z=35).
_ORG_WEIGHTS_NP = np.array((3, 7, 9, 10, 5, 8, 4, 2), dtype=np.int64)

# Guangzhou's district-level division codes: the default home city of the synthetic data.
GUANGZHOU_DISTRICTS: dict[str, str] = {
    "440103": "荔湾区 Liwan",
    "440104": "越秀区 Yuexiu",
    "440105": "海珠区 Haizhu",
    "440106": "天河区 Tianhe",
    "440111": "白云区 Baiyun",
    "440112": "黄埔区 Huangpu",
    "440113": "番禺区 Panyu",
    "440114": "花都区 Huadu",
    "440115": "南沙区 Nansha",
    "440117": "从化区 Conghua",
    "440118": "增城区 Zengcheng",
}

# (registration authority, entity type) pairs and their shares among SME borrowers:
# 9 = market regulation; 1 = enterprise, 2 = individual business, 3 = farmers' cooperative.
_AUTHORITY_TYPES = ("91", "92", "93")
_AUTHORITY_TYPE_P = (0.88, 0.10, 0.02)


def uscc_check_char(first17: str) -> str:
    """Return the check character (position 18) for the first 17 characters of a USCC.

    Raises :class:`~jointcredit.errors.DataValidationError` if ``first17`` is not 17 characters
    from :data:`USCC_CHARS`, because a check character of garbage would look authoritative.
    """
    if not isinstance(first17, str) or len(first17) != USCC_LENGTH - 1:
        raise DataValidationError("uscc", f"expected 17 characters, got {first17!r}")
    total = 0
    for pos, (ch, weight) in enumerate(zip(first17, _WEIGHTS, strict=True), start=1):
        value = _VALUE.get(ch)
        if value is None:
            raise DataValidationError("uscc", f"illegal character {ch!r} at position {pos}")
        total += value * weight
    return USCC_CHARS[(31 - total % 31) % 31]


def uscc_problem(code: object) -> str | None:
    """Explain why ``code`` is not a valid USCC, or return ``None`` if it is valid.

    The code is checked exactly as given (normalise first with :func:`normalize_id` if the input
    may carry spaces or lower-case letters). Reasons are meant for people fixing a file: wrong
    length, the first illegal character and its 1-based position, or the expected and actual
    check character.
    """
    if not isinstance(code, str):
        return f"not a string ({type(code).__name__})"
    if len(code) != USCC_LENGTH:
        return f"wrong length: {len(code)} characters, expected {USCC_LENGTH}"
    for pos, ch in enumerate(code, start=1):
        if ch not in _VALUE:
            hint = " (I, O, S, V and Z are never used)" if ch in "IOSVZ" else ""
            return f"illegal character {ch!r} at position {pos}{hint}"
    expected = uscc_check_char(code[:-1])
    if code[-1] != expected:
        return f"check character mismatch: expected {expected!r}, got {code[-1]!r}"
    return None


def is_valid_uscc(code: object) -> bool:
    """True if ``code`` (as given, not normalised) is a valid 18-character USCC."""
    return uscc_problem(code) is None


def normalize_id(value: object) -> str:
    """Normalise a raw enterprise identifier into the form both parties hash and compare.

    Applies Unicode NFKC (full-width ``９１４４…`` typed with a Chinese input method becomes
    ASCII), strips surrounding whitespace (including the ideographic space U+3000) and
    upper-cases. Integral floats such as ``25115.0`` (what pandas makes of an integer id
    column with gaps) become ``"25115"``. ``None`` and NaN become ``""`` so callers can report
    them as empty ids instead of matching the literal text ``"nan"``.
    """
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
    text = str(value)
    return unicodedata.normalize("NFKC", text).strip().upper()


def normalize_ids(values: object) -> np.ndarray:
    """Vectorised :func:`normalize_id` over a sequence; returns an object array of ``str``.

    Equivalent element by element, but fast enough for million-row PSI inputs.
    """
    series = pd.Series(np.asarray(values, dtype=object), dtype=object)
    is_text = series.map(type).eq(str).to_numpy()
    out = np.empty(len(series), dtype=object)
    if is_text.any():
        text = series[is_text].astype("str")
        out[is_text] = text.str.normalize("NFKC").str.strip().str.upper().to_numpy(dtype=object)
    if not is_text.all():
        out[~is_text] = [normalize_id(v) for v in series[~is_text]]
    return out


def valid_uscc_mask(codes: object) -> np.ndarray:
    """Boolean mask of which codes are valid USCCs (as given), computed without a Python loop.

    Use :func:`uscc_problem` on the ``False`` entries to explain them.
    """
    arr = np.asarray(codes, dtype=object)
    ok = np.fromiter(
        (isinstance(c, str) and len(c) == USCC_LENGTH for c in arr), dtype=bool, count=arr.size
    )
    if not ok.any():
        return ok
    fixed = np.asarray(arr[ok].tolist(), dtype=f"<U{USCC_LENGTH}")
    points = fixed.view(np.uint32).reshape(-1, USCC_LENGTH)
    in_table = points < 128
    values = np.where(in_table, _VALUE_BY_CODEPOINT[np.minimum(points, 127)], -1)
    legal = (values >= 0).all(axis=1)
    expected = (31 - (values[:, :-1] @ _WEIGHTS_NP) % 31) % 31
    ok[np.flatnonzero(ok)] = legal & (expected == values[:, -1])
    return ok


def _org_check_chars(body_values: np.ndarray) -> np.ndarray:
    """GB 11714 check characters for an (n, 8) array of organisation-code character values."""
    remainder = 11 - (body_values @ _ORG_WEIGHTS_NP) % 11
    out = np.char.mod("%d", remainder % 11)  # 11 -> "0"; 1..9 unchanged
    out[remainder == 10] = "X"
    return out


def _org_value(chars: np.ndarray) -> np.ndarray:
    """Values of organisation-code characters under GB 11714 (digits 0-9, A=10 ... Z=35)."""
    codes = chars.view(np.uint32).astype(np.int64)
    return np.where(codes <= ord("9"), codes - ord("0"), codes - ord("A") + 10)


def generate_uscc(
    rng: np.random.Generator,
    n: int,
    *,
    regions: Sequence[str] | np.ndarray | None = None,
    heads: Sequence[str] | np.ndarray | None = None,
) -> list[str]:
    """Generate ``n`` distinct, valid and plausible USCCs.

    Plausible means the structure of real codes: mostly ``91`` (enterprise registered with market
    regulation), some ``92`` (individual business) and ``93`` (cooperative); a 6-digit division
    code; a 9-character organisation code that is either a legacy 8-digit code or a post-2015
    ``MA…`` code, with its own GB 11714 check character; and the GB 32100 check character.

    ``regions`` optionally gives each code's 6-digit division code (length ``n``); by default
    codes are spread over Guangzhou's districts (4401xx). ``heads`` optionally gives each code's
    first two characters (registration authority and entity type, e.g. ``"92"`` for an
    individual business) so that codes agree with other generated attributes.
    """
    if n < 0:
        raise DataValidationError("n", f"must be non-negative, got {n}")
    if regions is None:
        region_arr = rng.choice(np.array(sorted(GUANGZHOU_DISTRICTS)), size=n)
    else:
        region_arr = np.asarray(regions, dtype=str)
        if region_arr.shape != (n,):
            raise DataValidationError("regions", f"expected {n} division codes")
        bad = [r for r in region_arr if len(r) != 6 or not r.isdigit()]
        if bad:
            raise DataValidationError("regions", f"not 6-digit division codes: {bad[:5]}")
    if heads is None:
        head_arr = rng.choice(np.array(_AUTHORITY_TYPES), size=n, p=_AUTHORITY_TYPE_P)
    else:
        head_arr = np.asarray(heads, dtype=str)
        if head_arr.shape != (n,):
            raise DataValidationError("heads", f"expected {n} two-character prefixes")
        bad = [h for h in head_arr if len(h) != 2 or any(c not in _VALUE for c in h)]
        if bad:
            raise DataValidationError("heads", f"not two USCC characters: {bad[:5]}")

    out = np.empty(n, dtype=object)
    todo = np.arange(n)
    seen: set[str] = set()
    while todo.size:
        fresh = _draw_codes(rng, head_arr[todo], region_arr[todo])
        keep = []
        for slot, code in zip(todo, fresh, strict=True):
            if code in seen:
                keep.append(slot)  # collision: redraw this slot in the next pass
            else:
                seen.add(code)
                out[slot] = str(code)
        todo = np.array(keep, dtype=np.int64)
    return list(out)


def _draw_codes(rng: np.random.Generator, head: np.ndarray, regions: np.ndarray) -> list[str]:
    """One vectorised draw of codes for the given prefixes and division codes (may repeat)."""
    m = regions.size
    if m == 0:
        return []

    # Organisation-code body: legacy all-digit codes, or "MA" + 6 characters for codes issued
    # after the 2015 reform (the common form for young enterprises).
    digits = np.array(list("0123456789"))
    letters_and_digits = np.array(list(USCC_CHARS))
    body = rng.choice(digits, size=(m, 8))
    is_new = rng.random(m) < 0.6
    body[is_new, 0] = "M"
    body[is_new, 1] = "A"
    body[is_new, 2:] = rng.choice(letters_and_digits, size=(int(is_new.sum()), 6))
    org_check = _org_check_chars(_org_value(body))

    first17 = np.char.add(np.char.add(head, regions), np.char.add(_join_rows(body), org_check))
    codepoints = np.ascontiguousarray(first17.astype("<U17")).view(np.uint32).reshape(m, 17)
    values = _VALUE_BY_CODEPOINT[codepoints]
    check = np.array(list(USCC_CHARS))[(31 - (values @ _WEIGHTS_NP) % 31) % 31]
    return list(np.char.add(first17, check))


def _join_rows(chars: np.ndarray) -> np.ndarray:
    """Concatenate an (n, k) array of single characters into n strings of length k."""
    return np.ascontiguousarray(chars.astype("<U1")).view(f"<U{chars.shape[1]}").ravel()
