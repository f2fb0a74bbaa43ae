"""Long-lived task workers for Flower's ``--isolation process`` mode.

With ``--isolation subprocess`` (Flower's default) every message a SuperNode receives starts a
fresh ``flwr-clientapp`` process: ~1-1.5 s of Python and Flower imports on this machine, per
round trip. With ``--isolation process`` the node only queues tasks on its local Runtime API
and waits for someone to claim them. These workers claim them and run the *installed*
jointcredit app in the current, long-lived process:

* :class:`ClientAppWorker` (bank): claims each ClientApp task of the bank's own SuperNode, runs
  :data:`jointcredit.federation.client_app.app` on the message, pushes the reply.
* :class:`ServerAppWorker` (credit center): claims the ServerApp task of the one run the
  operator started, and runs the center's service with a Grid bound to it. Tasks of any other
  run (someone else's ``flwr run``) are never executed: pending while the service runs, marked
  failed if claimed.

Both therefore ignore the code inside the FAB: a FAB only selects the run, it never brings code
to the center or to a bank. Claiming a task (``AcquireTask``) is protected by the SuperExec
shared secret (``--superexec-auth-secret-file``), so another local process cannot steal tasks.

The workers use Flower's Runtime API client and object helpers (``flwr.supercore``), pinned to
the installed Flower (see :data:`FLOWER_SERIES`). They pull message objects with a 5 ms initial
back-off instead of Flower's 1 s, because a reply is often listed before its objects arrive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, context_to_proto, run_from_proto
from flwr.proto.message_pb2 import ConfirmMessageReceivedRequest
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import (
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
    PushTaskOutputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.serverapp import Grid
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import (
    ObjectPullError,
    ObjectPushError,
    inflate_object_from_contents,
    pull_and_inflate_object_from_tree,
    pull_objects,
)
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.grid import HttpGrid
from flwr.supernode.runtime.run_clientapp import push_message

from jointcredit.errors import PartyUnavailableError

#: The Flower release series these workers were written against.
FLOWER_SERIES = "1.41"
_ACQUIRE = "/flwr.proto.Runtime/AcquireTask"
_INITIAL_BACKOFF = 0.005
_BACKOFF_CAP = 0.2

_log = logging.getLogger(__name__)


def retry_invoker(max_time: float = 30.0) -> RetryInvoker:
    """Retry transient HTTP failures for up to ``max_time`` seconds, then raise.

    Flower's own invoker retries forever and answers HTTP 401 by sending SIGINT to its own
    process - right for a one-task ``flwr-clientapp``, fatal for a long-lived service that
    serves many banks. Here a failure becomes an exception the caller handles.
    """
    return RetryInvoker(
        wait_gen_factory=lambda: exponential(max_delay=2.0),
        recoverable_exceptions=(httpx.TransportError,),
        max_tries=None,
        max_time=max_time,
    )


def _heartbeat_fn(client: RuntimeHttpClient, lost: threading.Event) -> Callable[[], bool]:
    """Task heartbeat that flags ``lost`` when the SuperLink says the run ended (no SIGINT)."""

    def beat() -> bool:
        try:
            res = client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except httpx.TransportError:
            return False
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code >= 500:
                return False
            lost.set()
            return True
        if not res.success:
            lost.set()
        return True

    return beat


def _client(
    address: str,
    component: str,
    *,
    root_certificates: bytes | None,
    token: str | None = None,
    secret: bytes | None = None,
) -> RuntimeHttpClient:
    interceptors: list = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    if secret is not None:
        interceptors.append(
            SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={_ACQUIRE})
        )
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=root_certificates is None,
        root_certificates=root_certificates,
        interceptors=interceptors,
        retry_invoker=retry_invoker(),
    )


class _Acquirer:
    """Claims tasks of one type from a Runtime API, polling every ``poll`` seconds."""

    def __init__(
        self,
        address: str,
        task_type: TaskType,
        *,
        root_certificates: bytes | None,
        secret: bytes | None,
        poll: float,
    ) -> None:
        self.address = address
        self.task_type = task_type
        self.root_certificates = root_certificates
        self.poll = poll
        self._client = _client(
            address, "SuperExec", root_certificates=root_certificates, secret=secret
        )

    def next(self, stop: threading.Event) -> tuple[str, int, int] | None:
        """(token, task id, run id) of the next task, or None once ``stop`` is set."""
        failures = 0
        while not stop.is_set():
            try:
                res = self._client.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[str(self.task_type)])
                )
                failures = 0
            except httpx.HTTPError as exc:
                failures += 1
                delay = min(0.2 * 2**failures, 5.0)
                if failures in (1, 5) or failures % 50 == 0:
                    _log.warning(
                        "runtime API at %s not reachable (%s); retrying", self.address, exc
                    )
                stop.wait(delay)
                continue
            if res.HasField("task") and res.token:
                return res.token, int(res.task.task_id), int(res.task.run_id)
            stop.wait(self.poll)
        return None

    def close(self) -> None:
        self._client.close()


def _push_output(
    client: RuntimeHttpClient, context: Context | None, status: str, details: str
) -> None:
    try:
        client.PushTaskOutput(
            PushTaskOutputRequest(
                context=context_to_proto(context) if context is not None else None,
                sub_status=status,
                details=details,
            )
        )
    except httpx.HTTPError as exc:
        _log.error("could not push task output: %s", exc)


# --- bank ------------------------------------------------------------------------------------


class ClientAppWorker:
    """Runs a SuperNode's ClientApp tasks in this process (the node runs ``--isolation process``).

    ``app`` is called as ``app(message, context) -> reply`` (a Flower ``ClientApp`` is such a
    callable). One task at a time, as the SuperNode hands out one message at a time anyway.
    """

    def __init__(
        self,
        runtime_address: str,
        app: Callable[[Message, Context], Message],
        *,
        secret: bytes | None = None,
        root_certificates: bytes | None = None,
        poll: float = 0.01,
    ) -> None:
        self.runtime_address = runtime_address
        self.app = app
        self.secret = secret
        self.root_certificates = root_certificates
        self.poll = poll
        self.handled = 0

    def serve(self, stop: threading.Event) -> None:
        acquirer = _Acquirer(
            self.runtime_address,
            TaskType.CLIENT_APP,
            root_certificates=self.root_certificates,
            secret=self.secret,
            poll=self.poll,
        )
        try:
            while (claimed := acquirer.next(stop)) is not None:
                try:
                    self._run_task(claimed[0])
                except Exception:  # noqa: BLE001 - one lost task must not end the bank's service
                    _log.exception("ClientApp task failed; serving the next one")
        finally:
            acquirer.close()

    def _run_task(self, token: str) -> None:
        client = _client(
            self.runtime_address,
            "flwr-clientapp",
            root_certificates=self.root_certificates,
            token=token,
        )
        context: Context | None = None
        message: Message | None = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            message, context = _pull_client_input(client)
            try:
                reply = self.app(message, context)
                status, details = SubStatus.COMPLETED, ""
            except Exception as exc:  # noqa: BLE001 - report to the center instead of going silent
                _log.exception("ClientApp raised")
                reason = f"{type(exc).__name__}: {exc}"
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                    reply_to=message,
                )
                details = reason
            push_message(client, reply, context)
            self.handled += 1
        except (httpx.HTTPError, ObjectPullError, ObjectPushError, RuntimeError) as exc:
            # E.g. the reply to a message of a run that was stopped meanwhile: the SuperLink
            # no longer takes it. Nobody waits for it; the next task is served as usual.
            _log.warning("ClientApp task lost: %s: %s", type(exc).__name__, exc)
            status, details = SubStatus.FAILED, str(exc)
        except BaseException as exc:
            status, details = SubStatus.FAILED, f"{type(exc).__name__}: {exc}"
            raise
        finally:
            _push_output(client, context, status, details)
            client.close()


def _pull_client_input(client: RuntimeHttpClient) -> tuple[Message, Context]:
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("task has no message")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
        initial_backoff=_INITIAL_BACKOFF,
        backoff_cap=_BACKOFF_CAP,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message, context


# --- credit center ---------------------------------------------------------------------------


class FastPullGrid(HttpGrid):
    """Flower's HTTP Grid, pulling reply objects with a short back-off (see module doc), and
    raising on a lost connection instead of signalling its own process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retry_invoker = retry_invoker()

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        run_id = self.run.run_id
        res = self._runtime_client.PullMessages(
            PullAppMessagesRequest(message_ids=list(message_ids))
        )
        pull_fn = make_pull_object_fn_protobuf(self._runtime_client.PullObject, self.node, run_id)
        replies: list[Message] = []
        for proto, tree in zip(res.messages_list, res.message_object_trees, strict=True):
            message_id = proto.metadata.message_id
            try:
                contents = pull_objects(
                    [t.object_id for t in iterate_object_tree(tree)],
                    pull_fn,
                    initial_backoff=_INITIAL_BACKOFF,
                    backoff_cap=_BACKOFF_CAP,
                    max_time=120.0,
                )
            except ObjectPullError as exc:
                raise PartyUnavailableError(
                    f"reply {message_id[:12]} could not be fetched: {exc}"
                ) from exc
            self._runtime_client.ConfirmMessageReceived(
                ConfirmMessageReceivedRequest(
                    node=self.node, run_id=run_id, message_object_id=message_id
                )
            )
            message = inflate_object_from_contents(message_id, contents)
            message.metadata.__dict__["_message_id"] = message_id
            replies.append(message)
        return replies


class ServerAppWorker:
    """Runs the credit center's ServerApp for the operator's own run, in this process.

    ``accept_run(run_id)`` decides which run is the operator's; tasks of every other run are
    marked failed without loading anything from their FAB. ``main(grid, context, stop)`` runs
    until it returns; its ``stop`` is set when the worker is stopped or the run ends under it
    (e.g. someone ran ``flwr stop``), after which :attr:`run_ended` is set.
    """

    def __init__(
        self,
        runtime_address: str,
        main: Callable[[Grid, Context, Any], None],
        accept_run: Callable[[int], bool],
        *,
        secret: bytes | None,
        root_certificates: bytes | None,
        run_config: dict | None = None,
        poll: float = 0.1,
    ) -> None:
        self.runtime_address = runtime_address
        self.main = main
        self.accept_run = accept_run
        self.secret = secret
        self.root_certificates = root_certificates
        self.run_config = run_config
        self.poll = poll
        self.refused: list[int] = []
        self.served: list[int] = []
        #: Set when the run being served ended under us (stopped, or its task was lost).
        self.run_ended = threading.Event()

    def serve(self, stop: threading.Event) -> None:
        acquirer = _Acquirer(
            self.runtime_address,
            TaskType.SERVER_APP,
            root_certificates=self.root_certificates,
            secret=self.secret,
            poll=self.poll,
        )
        try:
            while (claimed := acquirer.next(stop)) is not None:
                token, task_id, run_id = claimed
                try:
                    if not self.accept_run(run_id):
                        self._refuse(token, run_id)
                        continue
                    self._run_task(token, run_id, stop)
                except Exception:  # noqa: BLE001 - keep claiming: the service run restarts
                    _log.exception("ServerApp task of run %s failed", run_id)
        finally:
            acquirer.close()

    def _refuse(self, token: str, run_id: int) -> None:
        _log.warning("refusing ServerApp task of run %s: not started by the credit center", run_id)
        client = _client(
            self.runtime_address,
            "flwr-serverapp",
            root_certificates=self.root_certificates,
            token=token,
        )
        try:
            _push_output(
                client,
                None,
                SubStatus.FAILED,
                "refused: runs are started by the credit center only",
            )
        finally:
            client.close()
        self.refused.append(run_id)

    def _run_task(self, token: str, run_id: int, stop: threading.Event) -> None:
        client = _client(
            self.runtime_address,
            "flwr-serverapp",
            root_certificates=self.root_certificates,
            token=token,
        )
        grid = FastPullGrid(
            runtime_api_address=self.runtime_address,
            insecure=self.root_certificates is None,
            root_certificates=self.root_certificates,
            token=token,
        )
        lost = threading.Event()
        heartbeat = HeartbeatSender(_heartbeat_fn(client, lost))
        context: Context | None = None
        status, details = SubStatus.FAILED, "ServerApp failed"
        try:
            heartbeat.start()
            res = client.PullTaskInput(PullTaskInputRequest())
            TaskIdentity.task_id = res.task_id
            TaskIdentity.run_id = res.run.run_id
            TaskIdentity.node_id = res.context.node_id
            context = context_from_proto(res.context)
            if self.run_config is not None:
                # The operator's configuration wins over whatever the FAB carries.
                context.run_config = dict(self.run_config)
            grid.set_run(run_from_proto(res.run))
            self.served.append(run_id)
            self.main(grid, context, _AnyEvent(stop, lost))
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # noqa: BLE001 - logged; the task is reported failed
            _log.exception("ServerApp failed")
            details = f"{type(exc).__name__}: {exc}"
        finally:
            if heartbeat.is_running:
                heartbeat.stop()
            _push_output(client, None, status, details)
            grid.close()
            client.close()
            if not stop.is_set():
                _log.warning("run %s ended while serving", run_id)
                self.run_ended.set()


class _AnyEvent:
    """Looks like a threading.Event that is set when any of its events is set."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until true or timeout; True if it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
