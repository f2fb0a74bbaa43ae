"""Run Flower's SuperLink with its Control and Runtime APIs answering local clients only.

``python -m jointcredit.federation.guardlink [--allow IP ...] -- <flower-superlink arguments>``

Flower 1.41 serves the Fleet API (the banks' nodes), the Control API (``flwr`` CLI: start, stop
and list runs, register SuperNodes) and the Runtime API (the center's ServerApp worker) over
one HTTPS port, and the open-source release authenticates no Control API account (account
authentication plugins ship with the enterprise edition only; ``--control-api-address`` is
deprecated and ignored). Anyone who reaches the port could stop the service run or register
nodes.

This launcher runs the unmodified SuperLink entry point after adding one outermost ASGI
middleware to its app: a request from a client address that is not local (loopback, or one of
``--allow``, e.g. the address the SuperLink listens on) may only reach the Fleet API
(``/v1/fleet/...``); anything else is answered ``403`` before Flower sees it. The credit
center's own tools (``jointcredit serve``'s worker, ``jointcredit bank register``, the ``flwr``
CLI on the center's host) connect from the host itself and keep working.

If the installed Flower is not the 1.41 series, or the hook moved, the launcher refuses to
start rather than silently exposing the Control API (``jointcredit serve
--control-from-anywhere`` runs the stock SuperLink).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

#: Written to the SuperLink's log when the guard is in place.
GUARD_NOTICE = "jointcredit guard: Control and Runtime APIs answer local clients only"
#: Paths a remote (non-local) client may reach: the Fleet API, which banks' nodes use.
REMOTE_PREFIXES = ("/v1/fleet/",)
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

_log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class LocalOnlyMiddleware:
    """ASGI middleware: non-local clients reach only :data:`REMOTE_PREFIXES`."""

    def __init__(self, app: Any, allow: Iterable[str] = ()) -> None:
        self.app = app
        self.allow = {ipaddress.ip_address(a) for a in allow}

    def is_local(self, host: str | None) -> bool:
        if not host:
            return False  # e.g. a Unix socket peer: not expected here, refuse
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address in self.allow or any(address in net for net in _LOOPBACK)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        client = scope.get("client")
        host = client[0] if client else None
        if path.startswith(REMOTE_PREFIXES) or self.is_local(host):
            await self.app(scope, receive, send)
            return
        _log.warning("refused %s %s from %s: not a local client", scope.get("method"), path, host)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": "this API answers the credit center's host only"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install(module: Any, allow: Iterable[str]) -> bool:
    """Make ``module._get_middleware`` (Flower's SuperLink app factory) add the guard first."""
    get_middleware = getattr(module, "_get_middleware", None)
    if get_middleware is None or not hasattr(module, "create_app"):
        return False
    from starlette.middleware import Middleware

    allowed = list(allow)

    def guarded() -> list:
        return [Middleware(LocalOnlyMiddleware, allow=allowed), *get_middleware()]

    module._get_middleware = guarded
    return True


def main(argv: list[str]) -> None:
    allow: list[str] = []
    while argv and argv[0] == "--allow":
        ipaddress.ip_address(argv[1])  # a typo must not open the API to everyone
        allow.append(argv[1])
        argv = argv[2:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    import flwr
    from flwr.superlink import main as superlink_main
    from flwr.superlink.cli import flower_superlink

    if not flwr.__version__.startswith("1.41.") or not install(superlink_main, allow):
        sys.exit(
            f"flwr {flwr.__version__}: cannot restrict the Control API to local clients; "
            "start the stock SuperLink explicitly (jointcredit serve --control-from-anywhere)"
        )
    print(f"{GUARD_NOTICE} (also allowed: {', '.join(allow) or 'none'})", file=sys.stderr)
    sys.argv = ["flower-superlink", *argv]
    flower_superlink()


if __name__ == "__main__":
    main(sys.argv[1:])
