"""Post-loan monitoring and the model lifecycle.

* :mod:`~jointcredit.monitor.stability`: population stability of scores and features (the index
  is never abbreviated in code: "PSI" means private set intersection in this library).
* :mod:`~jointcredit.monitor.events`: the credit center's risk-event flags for a bank's
  consented book (protocol ``risk_events``).
* :mod:`~jointcredit.monitor.center_stability`: stability of the center's features computed at
  the center, only the index values shared (protocol ``feature_stability``).
* :mod:`~jointcredit.monitor.warnings`: red / yellow / green rules with reasons.
* :mod:`~jointcredit.monitor.book`: one monitoring run over the book (``jointcredit monitor``).
* :mod:`~jointcredit.monitor.lifecycle`: model registry, champion / challenger, retraining
  (``jointcredit retrain``).
"""

from jointcredit.monitor.book import MonitorRun, monitor_book
from jointcredit.monitor.center_stability import (
    FeatureStabilityBank,
    FeatureStabilityCenter,
    center_feature_stability,
)
from jointcredit.monitor.events import (
    EVENT_TYPES,
    CenterMonitor,
    EventRules,
    RiskEventFlags,
    RiskEventsBank,
    RiskEventsCenter,
    attach_center_monitor,
    detect_events,
    fetch_risk_events,
)
from jointcredit.monitor.lifecycle import (
    MODEL_KINDS,
    ModelRegistry,
    PromotionRule,
    apply_outcomes,
    compare_models,
    retrain_model,
    train_champion,
)
from jointcredit.monitor.stability import (
    StabilityReference,
    feature_stability,
    population_stability,
    stability_band,
    stability_reference,
    stability_table,
)
from jointcredit.monitor.warnings import GREEN, RED, YELLOW, WarningRules, evaluate_warnings

__all__ = [
    "EVENT_TYPES",
    "GREEN",
    "MODEL_KINDS",
    "RED",
    "YELLOW",
    "CenterMonitor",
    "EventRules",
    "FeatureStabilityBank",
    "FeatureStabilityCenter",
    "ModelRegistry",
    "MonitorRun",
    "PromotionRule",
    "RiskEventFlags",
    "RiskEventsBank",
    "RiskEventsCenter",
    "StabilityReference",
    "WarningRules",
    "apply_outcomes",
    "attach_center_monitor",
    "center_feature_stability",
    "compare_models",
    "detect_events",
    "evaluate_warnings",
    "feature_stability",
    "fetch_risk_events",
    "monitor_book",
    "population_stability",
    "retrain_model",
    "stability_band",
    "stability_reference",
    "stability_table",
    "train_champion",
]
