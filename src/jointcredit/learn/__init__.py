# --- SecureBoost (issue 4) ---
from jointcredit.learn.boosting import (  # noqa: F401
    BankBoostModel,
    CenterBoostPart,
    HeteroSecureBoost,
    load_center_part,
    save_center_part,
)
