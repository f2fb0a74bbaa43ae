"""Joint learning algorithms: each a protocol (both party halves) plus a bank-facing estimator."""

# ruff: noqa: I001  (one section per algorithm, appended as each lands; not alphabetical)

# --- federated binning, hetero logistic regression, scorecard (issue 3) ---
from jointcredit.learn.binning import FederatedBinning  # noqa: F401
from jointcredit.learn.linear import (  # noqa: F401
    HeteroLogisticRegression,
    HeteroScorecard,
    load_bank_model,
    load_center_model,
    save_center_model,
    train_and_evaluate,
)

# --- SecureBoost (issue 4) ---
from jointcredit.learn.boosting import (  # noqa: F401
    BankBoostModel,
    CenterBoostPart,
    HeteroSecureBoost,
    load_center_part,
    save_center_part,
)
