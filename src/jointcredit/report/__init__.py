"""Reports for bank modelers: discrimination metrics (AUC, KS, Gini, gains table).

Scores are predicted probabilities of bad (higher = riskier); see :mod:`.metrics`.
"""

from jointcredit.report.metrics import auc, gains_table, gini, ks, summary

__all__ = ["auc", "gains_table", "gini", "ks", "summary"]
