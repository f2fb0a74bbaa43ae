"""Run Flower's SuperNode with adaptive polling instead of its fixed sleeps.

``python -m jointcredit.federation.fastnode -- <flower-supernode arguments>``

Flower 1.41's SuperNode loop (``flwr.supernode.start_client_internal``) sleeps a fixed 3 s
after every empty pull from the SuperLink, and 0.5 s between checks for the ClientApp's reply.
Neither is configurable. In a protocol the center sends request k+1 only after reply k, and the
node pulls again right after pushing reply k - too early - so every round trip waits out the
full 3 s: measured ~3.6 s per round trip on loopback even with a long-lived ClientApp, against
~0.4 s with the sleeps below.

This launcher runs the unmodified SuperNode entry point after swapping the ``time`` module
seen by that one Flower module for a proxy whose ``sleep``:

* after an empty pull: backs off from 20 ms doubling to 250 ms while a message arrived in the
  last 60 s (a job is running), and sleeps Flower's own 3 s when idle - so an idle bank costs
  the SuperLink no more than stock Flower;
* while waiting for the ClientApp's reply (a local check, no network): 5 ms growing by half
  each time up to 100 ms, instead of a flat 0.5 s (a bank holding a long poll open for seconds
  then costs ~10 wake-ups a second, a quick reply is seen within milliseconds);
* when a message's objects are not yet all at the SuperLink (the center registers a message
  before uploading its payload), retry after 5 ms instead of Flower's initial 1 s back-off.

Nothing else changes: same arguments, authentication, TLS and isolation. If the installed
Flower is not the 1.41 series this was written against, or the hooks moved, the stock SuperNode
runs and a warning says so.
"""

from __future__ import annotations

import logging
import sys
import time as _time
import types
from typing import Any

ACTIVE_WINDOW = 60.0
FIRST_IDLE_SLEEP = 0.02
ACTIVE_CAP = 0.25
REPLY_WAIT = 0.005
REPLY_WAIT_CAP = 0.1
OBJECT_BACKOFF = 0.005
OBJECT_BACKOFF_CAP = 0.2
_STOCK_IDLE = 3
_STOCK_REPLY_WAIT = 0.5

_log = logging.getLogger(__name__)


class _Pacer:
    """Decides each sleep of the SuperNode loop from when the last message arrived."""

    def __init__(self, clock: Any = _time.monotonic) -> None:
        self.clock = clock
        self.last_message = -float("inf")
        self.next_idle = FIRST_IDLE_SLEEP
        self.next_reply_wait = REPLY_WAIT

    def message_arrived(self) -> None:
        self.last_message = self.clock()
        self.next_idle = FIRST_IDLE_SLEEP
        self.next_reply_wait = REPLY_WAIT

    def duration(self, requested: float) -> float:
        if requested == _STOCK_IDLE:
            if self.clock() - self.last_message > ACTIVE_WINDOW:
                return requested
            pause = self.next_idle
            self.next_idle = min(self.next_idle * 2, ACTIVE_CAP)
            return pause
        if requested == _STOCK_REPLY_WAIT:
            pause = self.next_reply_wait
            self.next_reply_wait = min(self.next_reply_wait * 1.5, REPLY_WAIT_CAP)
            return pause
        return requested


def install(module: Any, pacer: _Pacer | None = None) -> bool:
    """Patch a ``start_client_internal``-like module; False if its hooks are not there."""
    pull = getattr(module, "_pull_and_store_message", None)
    pull_objects = getattr(module, "pull_objects", None)
    if pull is None or pull_objects is None or getattr(module, "time", None) is not _time:
        return False
    pacer = pacer or _Pacer()

    def pull_and_note(*args: Any, **kwargs: Any) -> Any:
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            pacer.message_arrived()
        return run_id

    proxy = types.ModuleType("time")
    proxy.__dict__.update({k: v for k, v in vars(_time).items() if not k.startswith("__")})
    proxy.sleep = lambda seconds: _time.sleep(pacer.duration(seconds))  # type: ignore[attr-defined]

    def pull_objects_promptly(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("initial_backoff", OBJECT_BACKOFF)
        kwargs.setdefault("backoff_cap", OBJECT_BACKOFF_CAP)
        return pull_objects(*args, **kwargs)

    module.time = proxy
    module._pull_and_store_message = pull_and_note
    module.pull_objects = pull_objects_promptly
    return True


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--":
        argv = argv[1:]
    import flwr
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    if not flwr.__version__.startswith("1.41.") or not install(start_client_internal):
        logging.basicConfig()
        _log.warning(
            "flwr %s: adaptive polling not available, running the stock SuperNode",
            flwr.__version__,
        )
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


if __name__ == "__main__":
    main(sys.argv[1:])
