"""The bank's Flower ClientApp: hands each message to the bank's job runner, nothing else.

The same handler serves both ways Flower can run a ClientApp: a fresh ``flwr-clientapp``
process per message (isolation ``subprocess``, Flower's default) and the long-lived worker of
:mod:`jointcredit.federation.worker` (isolation ``process``, what ``jointcredit join`` uses).
The node's ``data-path`` (``--node-config 'data-path="DIR"'``) is the bank's work directory,
where the job runner listens (see :mod:`jointcredit.federation.bank`).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from jointcredit.errors import DeploymentError
from jointcredit.federation.bank import relay
from jointcredit.federation.transport import answer

DATA_PATH_KEY = "data-path"

app = ClientApp()


def data_path(context: Context) -> Path:
    """The bank's work directory, from the node configuration."""
    value = context.node_config.get(DATA_PATH_KEY)
    if not isinstance(value, str) or not value:
        raise DeploymentError(
            f"node config has no {DATA_PATH_KEY!r}: start the node with jointcredit join"
        )
    path = Path(value)
    if not path.is_dir():
        raise DeploymentError(f"node {DATA_PATH_KEY} {path} is not a directory")
    return path


def handle(message: Message, context: Context) -> Message:
    """The reply to one message from the credit center."""
    return answer(message, lambda message_type, blob: relay(data_path(context), message_type, blob))


@app.query("envelope")
def _envelope(message: Message, context: Context) -> Message:
    return handle(message, context)


@app.query("control")
def _control(message: Message, context: Context) -> Message:
    return handle(message, context)
