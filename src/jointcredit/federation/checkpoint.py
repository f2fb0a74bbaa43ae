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

Which attributes of a protocol's halves hold the finished work is protocol knowledge; it lives
here, in one adapter per protocol (:data:`SECUREBOOST`), not in the Flower layer. SecureBoost
is the only protocol with checkpoints so far: hetero logistic regression restarts its optimiser
state on a warm start, so resuming it would not reproduce the uninterrupted run.
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
CHECKPOINT_DIR = "checkpoint"
BANK_MODEL_FILE = "secureboost_bank.json"
INFO_FILE = "checkpoint.json"
_CENTER_KEY = "checkpoint/{}"
_MODEL_ID = re.compile(r"^[0-9a-f]{32}$")

_log = logging.getLogger(__name__)


def center_key(model_id: str) -> str:
    return _CENTER_KEY.format(model_id)


def parent_id(model_id: str, n_trees: int) -> str:
    """The id both parties give the resumed trees (never the id of a finished model)."""
    return f"{model_id}.resume{n_trees}"


# --- keeping what a failed step finished -----------------------------------------------------


def keep_center(party: CenterParty, center_half: Any) -> int:
    """After a failed step: keep the center's part of its completed trees. Returns their count.

    A tree is complete at the center once the bank's reply to its last level arrived; the
    tree being grown when the step failed (the highest index) is dropped.
    """
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


def keep_bank(directory: Path, side: Any) -> int:
    """After a failed step: write the bank's part of its committed trees. Returns their count."""
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


def load_bank(directory: str | os.PathLike) -> Any:
    """The bank's checkpointed model part (a ``BankBoostModel``) from a failed job's directory."""
    from jointcredit.learn.boosting import BankBoostModel

    path = Path(directory) / BANK_MODEL_FILE
    if not path.is_file():
        raise DataValidationError("resume", f"{path.parent} holds no training checkpoint")
    return BankBoostModel.from_json(path.read_text(encoding="utf-8"))


# --- agreeing on the trees to keep -----------------------------------------------------------


class ResumeCenter:
    """Finds the center's checkpoint of the bank's model; agrees on the trees both finished."""

    protocol = PROTOCOL

    def __init__(self, center: CenterParty) -> None:
        self.center = center

    def run(self, channel: ProtocolChannel) -> str:
        from jointcredit.learn.boosting import CenterBoostPart

        ask = channel.request("start")
        if not isinstance(ask, dict) or ask.get("kind") != SECUREBOOST:
            raise MalformedMessageError("resume/start.ok: only secureboost jobs resume")
        model_id, n_bank = ask.get("model_id"), ask.get("n_trees")
        if not isinstance(model_id, str) or not _MODEL_ID.match(model_id):
            raise MalformedMessageError("resume/start.ok: model_id must be 32 hex digits")
        if isinstance(n_bank, bool) or not isinstance(n_bank, int) or n_bank < 1:
            raise MalformedMessageError("resume/start.ok: n_trees must be a positive integer")
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


class ResumeBank:
    """Offers the bank's checkpoint; learns how many of its trees the center also finished."""

    protocol = PROTOCOL

    def __init__(self, bank: BankParty, *, model_id: str, n_trees: int) -> None:
        self.bank = bank
        self.model_id = model_id
        self.offered = int(n_trees)
        self.n_trees: int | None = None
        self.parent_id: str | None = None

    def handle(self, msg_type: str, payload: Any) -> Any:
        if msg_type == "start" and self.n_trees is None:
            return {"kind": SECUREBOOST, "model_id": self.model_id, "n_trees": self.offered}
        if msg_type == "agreed" and self.n_trees is None:
            if not isinstance(payload, dict):
                raise MalformedMessageError("resume/agreed: expected a dict")
            n, parent = payload.get("n_trees"), payload.get("parent_id")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.offered:
                raise ProtocolError(f"resume/agreed: n_trees must be in [1, {self.offered}]")
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

    if not issubclass(cls, HeteroSecureBoost):
        raise DataValidationError("resume", "only secureboost training jobs can be resumed")
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
