"""Plaintext reference models: what a federated model is judged against.

``centralized`` trains on the joined features in the clear — the insecure upper bound no real
deployment may run; ``bank_only`` trains on the bank's features alone — the baseline the joint
model must lift. Both are ordinary scikit-learn / LightGBM fits with explicit thread counts.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jointcredit.report.metrics import auc, ks


def lightgbm_classifier(
    *,
    n_estimators: int = 30,
    max_depth: int = 3,
    learning_rate: float = 0.3,
    max_bin: int = 32,
    reg_lambda: float = 1.0,
    min_child_weight: float = 1e-3,
    num_threads: int = 1,
    seed: int = 0,
) -> lgb.LGBMClassifier:
    """LightGBM configured like a SecureBoost model of the same hyper-parameters."""
    return lgb.LGBMClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        num_leaves=2**max_depth,
        learning_rate=learning_rate,
        max_bin=max_bin,
        reg_lambda=reg_lambda,
        min_child_weight=min_child_weight,
        min_child_samples=1,
        num_threads=num_threads,
        random_state=seed,
        verbose=-1,
    )


def logistic_classifier(*, C: float = 1.0, seed: int = 0) -> Any:
    """Standardised L2 logistic regression (what hetero LR approximates in the clear)."""
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed)
    )


def evaluate_plaintext(
    make_model: Any,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_test: pd.DataFrame,
    y_test: np.ndarray,
) -> dict[str, float]:
    """Fit a fresh model from ``make_model()`` and report test AUC / KS."""
    model = make_model()
    fill = X_train.median(numeric_only=True)
    is_tree = isinstance(model, lgb.LGBMClassifier)
    # Trees handle NaN natively; linear models get train-median imputation.
    xtr = X_train if is_tree else X_train.fillna(fill).fillna(0.0)
    xte = X_test if is_tree else X_test.fillna(fill).fillna(0.0)
    model.fit(xtr, y_train)
    p = model.predict_proba(xte)[:, 1]
    return {"auc": float(auc(y_test, p)), "ks": float(ks(y_test, p))}
