"""Party tables, USCC validation, loaders, the credit center's catalogue and synthetic data.

Everything a party needs before any protocol runs: read and validate its table
(:func:`load_party_table`), know what the other side's columns mean (:data:`CENTER_CATALOGUE`),
and generate realistic test data (:func:`make_sme_data`).
"""

from jointcredit.data.catalogue import (
    CATEGORIES,
    CATEGORY_TITLES,
    CENTER_CATALOGUE,
    FeatureInfo,
    catalogue_records,
    category_of,
)
from jointcredit.data.loaders import load_party_table
from jointcredit.data.schema import ID_KINDS, PartyTable, TableSchema
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

# The synthetic generator is imported lazily (PEP 562): it is only needed for demos and tests,
# and importing it eagerly would make `python -m jointcredit.data.synthetic` warn about a
# module that is already imported.
_SYNTHETIC = frozenset(
    {
        "BANK_FEATURES",
        "CENTER_FEATURES",
        "LABEL_COL",
        "LGBM_REFERENCE_PARAMS",
        "SyntheticSME",
        "make_sme_data",
        "reference_aucs",
    }
)


def __getattr__(name: str) -> object:
    if name in _SYNTHETIC:
        from jointcredit.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'jointcredit.data' has no attribute {name!r}")


__all__ = [
    "BANK_FEATURES",
    "CATEGORIES",
    "CATEGORY_TITLES",
    "CENTER_CATALOGUE",
    "CENTER_FEATURES",
    "FeatureInfo",
    "ID_KINDS",
    "LABEL_COL",
    "LGBM_REFERENCE_PARAMS",
    "PartyTable",
    "SyntheticSME",
    "TableSchema",
    "USCC_CHARS",
    "catalogue_records",
    "category_of",
    "generate_uscc",
    "is_valid_uscc",
    "load_party_table",
    "make_sme_data",
    "normalize_id",
    "normalize_ids",
    "reference_aucs",
    "uscc_check_char",
    "uscc_problem",
    "valid_uscc_mask",
]
