"""Resume an interrupted training job from the trees both parties had finished.

When a training step fails part-way (the bank's node disconnected, the center restarted), each
party keeps what it finished, on its own disk, and nothing crosses the wire:

* the credit center keeps its part of every *completed* tree (center split features and
  thresholds) as ``model_parts["checkpoint/MODEL_ID"]`` of that bank's party state
  (``WORKDIR/banks/NAME/party.pkl``);
* the bank keeps its part of every tree it committed (tree shapes, its own splits, leaf values)
  in ``results/JOB_ID/checkpoint/`` next to the failed job's ``result.json``.

``jointcredit run --job train --resume JOB_ID`` then aligns again, runs the ``resume``
protocol below to agree on how many trees both sides finished (the bank may have committed one
tree whose last reply never reached the center), and continues training with the estimator's
warm start (``fit(..., init_model=...)``) from those trees: finished trees are never trained
again. With the same seeds and no row or column sub-sampling the resumed model equals the
uninterrupted one; with sub-sampling the new trees draw fresh (equally distributed) samples.

Protocol ``resume`` (one round trip after the session's)::

    center -> bank  start
    bank -> center  start.ok  {kind: "secureboost", model_id, n_trees}     bank's finished trees
    center -> bank  agreed    {n_trees, parent_id}     min(bank's, center's); the center keeps
    bank -> center  agreed.ok {}                       its part of those trees as parent_id

Hetero logistic regression and the scorecard resume the same way by *epochs*: each party keeps
its coefficients after every finished epoch (the center in its party state, the bank in the job
directory), the ``resume`` protocol agrees on the last epoch both finished, and training goes on
from those coefficients with the remaining epochs. Adam's moment estimates are not kept (the
warm start begins a fresh optimiser), so a resumed LR model is close to, not equal to, the
uninterrupted one; finished epochs are still never trained again.

Which attributes of a protocol's halves hold the finished work is protocol knowledge; it lives
here, in one adapter per protocol (:data:`SECUREBOOST`, :data:`HETERO_LR`), not in the Flower
layer.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jointcredit.errors import (
    DataValidationError,
    MalformedMessageError,
    ProtocolError,
    UnexpectedMessageError,
)
from jointcredit.parties import BankParty, CenterParty
from jointcredit.protocol import registry
from jointcredit.protocol.session import ProtocolChannel

PROTOCOL = "resume"
SECUREBOOST = "secureboost"
HETERO_LR = "hetero_lr"
CHECKPOINT_DIR = "checkpoint"
BANK_MODEL_FILE = "secureboost_bank.json"
BANK_LR_FILE = "hetero_lr_bank.json"
INFO_FILE = "checkpoint.json"
_CENTER_KEY = "checkpoint/{}"
_MODEL_ID = re.compile(r"^[0-9a-f]{32}$")
_LR_MODEL_ID = re.compile(r"^lr-[0-9a-f]{12}$")

_log = logging.getLogger(__name__)


def center_key(model_id: str) -> str:
    return _CENTER_KEY.format(model_id)


def parent_id(model_id: str, n_trees: int) -> str:
    """The id both parties give the resumed trees (never the id of a finished model)."""
    return f"{model_id}.resume{n_trees}"


# --- keeping what a failed step finished -----------------------------------------------------


def keep_center(party: CenterParty, center_half: Any) -> int:
    """After a failed step: keep the center's part of its completed trees (SecureBoost) or its
    coefficients after each finished epoch (hetero LR). Returns how many trees / epochs.

    A tree is complete at the center once the bank's reply to its last level arrived; the
    tree being grown when the step failed (the highest index) is dropped.
    """
    if getattr(center_half, "protocol", None) == HETERO_LR:
        return _keep_center_lr(party, center_half)
    if getattr(center_half, "protocol", None) != SECUREBOOST:
        return 0
    from jointcredit.learn.boosting import CenterBoostPart

    job, trees = getattr(center_half, "job", None), getattr(center_half, "trees", None)
    if not isinstance(job, dict) or not trees:
        return 0
    model_id = job.get("model_id")
    if not isinstance(model_id, str) or not _MODEL_ID.match(model_id):
        return 0
    growing = max(trees)
    if growing <= int(job.get("first_tree", 0)):
        return 0  # no joint tree finished
    done = {t: nodes for t, nodes in trees.items() if t < growing}
    party.model_parts[center_key(model_id)] = CenterBoostPart(
        model_id, list(party.feature_names), done
    )
    _log.info("kept the center's part of %d finished trees of model %s", growing, model_id)
    return growing


def _keep_center_lr(party: CenterParty, center_half: Any) -> int:
    progress = getattr(center_half, "progress", None)
    if not isinstance(progress, dict) or not progress.get("coefs"):
        return 0
    model_id = progress["model_id"]
    if not isinstance(model_id, str) or not _LR_MODEL_ID.match(model_id):
        return 0
    kept = {**progress, "kind": "hetero_lr_checkpoint",
            "coefs": [[float(v) for v in c] for c in progress["coefs"]]}  # fmt: skip
    party.model_parts[center_key(model_id)] = kept
    last = int(progress["first_epoch"]) + len(kept["coefs"]) - 1
    _log.info("kept the center's coefficients up to epoch %d of model %s", last, model_id)
    return last


def keep_bank(directory: Path, side: Any) -> int:
    """After a failed step: write the bank's part of its committed trees (SecureBoost) or its
    coefficients after each finished epoch (hetero LR). Returns how many trees / epochs."""
    if getattr(side, "protocol", None) == HETERO_LR:
        return _keep_bank_lr(directory, side)
    if getattr(side, "protocol", None) != SECUREBOOST or getattr(side, "state", None) != "training":
        return 0
    from jointcredit.learn.boosting import BankBoostModel

    trees = list(getattr(side, "trees", []) or [])
    if not trees:
        return 0
    model = BankBoostModel(
        side.model_id, list(side.feature_names), float(side.init_score), trees,
        {k: v for k, v in asdict(side.params).items()},
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BANK_MODEL_FILE).write_text(model.to_json(), encoding="utf-8")
    info = {"protocol": SECUREBOOST, "model_id": side.model_id, "n_trees": len(trees)}
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    _log.warning("kept %d finished trees of model %s in %s", len(trees), side.model_id, directory)
    return len(trees)


def _keep_bank_lr(directory: Path, side: Any) -> int:
    from jointcredit.learn.linear import _epochs_before, bank_lr_model

    snapshots = list(getattr(side, "snapshots", []) or [])
    if getattr(side, "state", None) != "training" or not snapshots:
        return 0
    warm = side.init_model is not None
    first = _epochs_before(side.init_model) + int(not warm)
    base = bank_lr_model(
        "", side.model_id, side.backend, side.transform, side.bank_feature_names, [], 0.0,
        side.center_feature_names, side.prep,
    )  # fmt: skip
    checkpoint = {
        **{k: v for k, v in base.items() if k not in ("coef", "intercept", "estimator")},
        "first_epoch": first,
        "snapshots": [[float(s[0]), *[float(v) for v in side.A @ s[1:]]] for s in snapshots],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BANK_LR_FILE).write_text(json.dumps(checkpoint) + "\n", encoding="utf-8")
    last = first + len(snapshots) - 1
    info = {"protocol": HETERO_LR, "model_id": side.model_id, "n_epochs": last}
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    _log.warning("kept epochs up to %d of model %s in %s", last, side.model_id, directory)
    return last


def load_bank(directory: str | os.PathLike) -> Any:
    """The bank's checkpointed model part (a ``BankBoostModel``) from a failed job's directory."""
    from jointcredit.learn.boosting import BankBoostModel

    path = Path(directory) / BANK_MODEL_FILE
    if not path.is_file():
        raise DataValidationError("resume", f"{path.parent} holds no training checkpoint")
    return BankBoostModel.from_json(path.read_text(encoding="utf-8"))


# --- agreeing on the trees to keep -----------------------------------------------------------


def _model_and_count(ask: dict, pattern: Any, field: str, what: str) -> tuple[str, int]:
    """The model id (matching ``pattern``) and the positive count ``field`` the bank asks for."""
    model_id, count = ask.get("model_id"), ask.get(field)
    if not isinstance(model_id, str) or not pattern.match(model_id):
        raise MalformedMessageError(f"resume/start.ok: model_id must be {what}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise MalformedMessageError(f"resume/start.ok: {field} must be a positive integer")
    return model_id, count


class ResumeCenter:
    """Finds the center's checkpoint of the bank's model; agrees on the trees both finished."""

    protocol = PROTOCOL

    def __init__(self, center: CenterParty) -> None:
        self.center = center

    def run(self, channel: ProtocolChannel) -> str:
        from jointcredit.learn.boosting import CenterBoostPart

        ask = channel.request("start")
        if isinstance(ask, dict) and ask.get("kind") == HETERO_LR:
            return self._run_lr(channel, ask)
        if not isinstance(ask, dict) or ask.get("kind") != SECUREBOOST:
            raise MalformedMessageError("resume/start.ok: only secureboost and hetero_lr resume")
        model_id, n_bank = _model_and_count(ask, _MODEL_ID, "n_trees", "32 hex digits")
        # Only this bank's own party state is searched: it can resume nothing else.
        part = self.center.model_parts.get(center_key(model_id))
        if not isinstance(part, CenterBoostPart):
            raise ProtocolError(f"resume: no checkpoint of model {model_id} at the credit center")
        n_center = max(part.trees) + 1
        n = min(n_bank, n_center)
        parent = parent_id(model_id, n)
        self.center.model_parts[parent] = CenterBoostPart(
            parent, list(part.feature_names), {t: v for t, v in part.trees.items() if t < n}
        )
        channel.request("agreed", {"n_trees": n, "parent_id": parent})
        return parent

    def _run_lr(self, channel: ProtocolChannel, ask: dict) -> str:
        from jointcredit.learn.linear import center_lr_part

        model_id, n_bank = _model_and_count(ask, _LR_MODEL_ID, "n_epochs", "a hetero LR model id")
        kept = self.center.model_parts.get(center_key(model_id))
        if not isinstance(kept, dict) or kept.get("kind") != "hetero_lr_checkpoint":
            raise ProtocolError(f"resume: no checkpoint of model {model_id} at the credit center")
        first = int(kept["first_epoch"])
        n = min(n_bank, first + len(kept["coefs"]) - 1)
        if n < first:
            raise ProtocolError(f"resume: the credit center kept no epoch {n} of {model_id}")
        parent = parent_id(model_id, n)
        part = center_lr_part(
            parent, kept["transform"], kept["features"], kept["prep"],
            kept["coefs"][n - first], kept.get("points_factor"),
        )  # fmt: skip
        part["epochs"] = n
        self.center.model_parts[parent] = part
        channel.request("agreed", {"n_epochs": n, "parent_id": parent})
        return parent


class ResumeBank:
    """Offers the bank's checkpoint; learns how many of its trees the center also finished."""

    protocol = PROTOCOL

    def __init__(
        self, bank: BankParty, *, model_id: str, n_trees: int, kind: str = SECUREBOOST
    ) -> None:
        self.bank = bank
        self.model_id = model_id
        self.kind = kind
        self.offered = int(n_trees)  # trees (SecureBoost) or epochs (hetero LR)
        self.n_trees: int | None = None
        self.parent_id: str | None = None

    @property
    def _unit(self) -> str:
        return "n_epochs" if self.kind == HETERO_LR else "n_trees"

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start" and self.n_trees is None:
            return {"kind": self.kind, "model_id": self.model_id, self._unit: self.offered}
        if msg_type == "agreed" and self.n_trees is None:
            if not isinstance(payload, dict):
                raise MalformedMessageError("resume/agreed: expected a dict")
            n, parent = payload.get(self._unit), payload.get("parent_id")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.offered:
                raise ProtocolError(f"resume/agreed: {self._unit} must be in [1, {self.offered}]")
            if parent != parent_id(self.model_id, n):
                raise ProtocolError("resume/agreed: unexpected parent id")
            self.n_trees, self.parent_id = n, parent
            return {}
        raise UnexpectedMessageError(f"resume: unexpected {msg_type!r}")


registry.register(PROTOCOL, center=ResumeCenter)


def resume_estimator(session: Any, cls: type, hyperparameters: dict, source: Path) -> tuple:
    """The warm-start parent for a resumed SecureBoost job: ``(parent estimator, n_trees)``.

    Runs the ``resume`` protocol; the parent holds the trees both parties finished.
    """
    from jointcredit.learn.boosting import HeteroSecureBoost
    from jointcredit.learn.linear import HeteroLogisticRegression

    if issubclass(cls, HeteroLogisticRegression):
        return _resume_lr(session, cls, hyperparameters, source)
    if not issubclass(cls, HeteroSecureBoost):
        raise DataValidationError("resume", "only secureboost and LR training jobs can be resumed")
    model = load_bank(source)
    side = ResumeBank(session.bank, model_id=model.model_id, n_trees=len(model.trees))
    session.run(side)
    if side.n_trees is None or side.parent_id is None:
        raise ProtocolError("resume: the credit center did not agree on a checkpoint")
    model.trees = model.trees[: side.n_trees]
    model.model_id = side.parent_id
    parent = cls(**hyperparameters)
    parent.model_ = model
    parent.model_id_ = model.model_id
    return parent, side.n_trees


def _resume_lr(session: Any, cls: type, hyperparameters: dict, source: Path) -> tuple:
    """The warm-start parent of a resumed hetero LR / scorecard job: ``(parent, n_epochs)``."""
    import math

    from jointcredit.learn.linear import HeteroScorecard, bank_estimator_from_model

    path = Path(source) / BANK_LR_FILE
    if not path.is_file():
        raise DataValidationError("resume", f"{path.parent} holds no LR training checkpoint")
    kept = json.loads(path.read_text(encoding="utf-8"))
    first, snapshots = int(kept["first_epoch"]), kept["snapshots"]
    side = ResumeBank(
        session.bank, model_id=kept["model_id"], n_trees=first + len(snapshots) - 1,
        kind=HETERO_LR,
    )  # fmt: skip
    session.run(side)
    if side.n_trees is None or side.parent_id is None or side.n_trees < first:
        raise ProtocolError("resume: the credit center did not agree on a checkpoint")
    chosen = snapshots[side.n_trees - first]
    template = cls(**hyperparameters)
    model = {
        **{k: v for k, v in kept.items() if k not in ("first_epoch", "snapshots")},
        "estimator": cls.__name__,
        "model_id": side.parent_id,
        "intercept": chosen[0],
        "coef": chosen[1:],
        "epochs": side.n_trees,
    }
    if isinstance(template, HeteroScorecard):
        factor = float(template.pdo) / math.log(2.0)
        offset = float(template.base_score) - factor * math.log(float(template.base_odds))
        model.update(
            pdo=float(template.pdo), base_score=float(template.base_score),
            base_odds=float(template.base_odds), factor=factor, offset=offset,
            base_points=offset - factor * float(chosen[0]),
        )  # fmt: skip
    return bank_estimator_from_model(model, "resume"), side.n_trees
