"""Start and stop a real Flower deployment: certificates, keys, processes, configuration.

The credit center runs ``flower-superlink`` (TLS, SuperNode authentication, ``--isolation
process``, no runtime dependency installation, Control and Runtime APIs for local clients only:
:mod:`~jointcredit.federation.guardlink`) plus, in the ``jointcredit serve`` process, a
:class:`~jointcredit.federation.worker.ServerAppWorker` that runs the center's ServerApp for the
one run the operator starts. A bank runs ``flower-supernode`` (TLS root certificate, its private
key, ``--isolation process``, ``data-path`` = its work directory) plus, in the ``jointcredit
join`` process, a :class:`~jointcredit.federation.worker.ClientAppWorker`.

Everything a deployment creates lives under its work directory::

    center WORKDIR/                          bank WORKDIR/
      center.json    ports, paths              bank.json    server, paths, data columns
      tls/           CA + server cert/key      secrets/     SuperExec secret
      secrets/       SuperExec secret          flwr/        FLWR_HOME of the SuperNode
      flwr/          FLWR_HOME: config.toml,   logs/        supernode.log
                     app/pyproject.toml,       run/         job runner socket (during a job)
                     state.db (SuperLink)      results/     one directory per job
      banks.json     registered banks          state/       the bank's party state
      banks/NAME/    per-bank center state
      governance/    audit log, consents, risk events
      logs/          superlink.log

All processes run in their own process group and are stopped by group; telemetry is off
(``FLWR_TELEMETRY_ENABLED=0``) and nothing is installed at run time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jointcredit.errors import DataValidationError, DeploymentError

_log = logging.getLogger(__name__)

CONNECTION = "jointcredit"
DEFAULT_PORT = 9443
APP_NAME = "jointcredit-federation"


# --- small helpers ---------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise DeploymentError(f"{path} not found: {what}")
    return json.loads(path.read_text(encoding="utf-8"))


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower processes: offline, telemetry off, this Python's tools on PATH."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def flower_tool(name: str) -> str:
    """Absolute path of a Flower command installed next to this Python."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(f"Flower command {name!r} not found (is flwr installed?)")
    return found


# --- certificates and keys -------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def ensure_tls(directory: Path, hosts: list[str], *, days: int = 825) -> TLSFiles:
    """A private CA and a server certificate for ``hosts``; created only if absent.

    The CA key stays in ``directory`` (mode 0600) so the operator can issue a new server
    certificate later; banks only ever receive ``ca.pem``.
    """
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if files.ca_cert.exists() and files.server_cert.exists() and files.server_key.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jointcredit credit center CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")])
        )
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_private(
        directory / "ca.key",
        ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    _write_private(
        files.server_key,
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    return files


def generate_node_key(path: str | os.PathLike) -> tuple[Path, Path]:
    """A bank's node key: EC P-384, OpenSSH format (what Flower's node authentication reads).

    Writes ``path`` (private, 0600) and ``path.pub`` (give this file to the credit center).
    Refuses to overwrite an existing key.
    """
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    if private_path.exists() or public_path.exists():
        raise DeploymentError(f"{private_path} already exists; not overwriting a key")
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return private_path, public_path


def public_key_pem(public_key_file: str | os.PathLike) -> str:
    """The SubjectPublicKeyInfo PEM of an OpenSSH public key file (as the SuperLink shows it)."""
    path = Path(public_key_file)
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise DataValidationError(str(path), f"not a readable OpenSSH public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise DataValidationError(
            str(path), "node keys must be elliptic-curve (NIST P-256/384/521)"
        )
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def ensure_secret(path: Path) -> Path:
    """A random SuperExec secret (who may claim tasks from a Runtime API); created if absent."""
    if not path.exists():
        _write_private(path, secrets.token_hex(32).encode())
    return path


# --- processes -------------------------------------------------------------------------------


class ManagedProcess:
    """A child process in its own process group, logged to a file, stopped by group."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        pid_file: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.pid_file = pid_file
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if pid_file is not None:
            # Lets an operator (or a test) stop the process group after a hard kill of ours.
            pid_file.parent.mkdir(parents=True, exist_ok=True)
            pid_file.write_text(f"{self.proc.pid}\n")
        _log.info("started %s (pid %s): %s", name, self.proc.pid, " ".join(argv))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        else:
            # The leader is gone; make sure nothing it started lingers in its group.
            self._signal(signal.SIGKILL)
        self._log.close()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


def wait_tls_ready(
    host: str, port: int, ca_cert: Path, timeout: float, proc: ManagedProcess
) -> None:
    """Wait until a TLS server on host:port completes a handshake trusted by ``ca_cert``."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise DeploymentError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            with (
                socket.create_connection((host, port), timeout=1.0) as sock,
                context.wrap_socket(sock, server_hostname=host),
            ):
                return
        except (OSError, ssl.SSLError):
            time.sleep(0.1)
    raise DeploymentError(f"{proc.name} did not come up on {host}:{port} within {timeout:.0f} s")


def wait_port(host: str, port: int, timeout: float, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise DeploymentError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise DeploymentError(f"{proc.name} did not open {host}:{port} within {timeout:.0f} s")


def run_flwr(args: list[str], flwr_home: Path, timeout: float = 120.0) -> dict:
    """Run the ``flwr`` CLI with ``--format json`` against the center's own configuration."""
    argv = [flower_tool("flwr"), *args, "--format", "json"]
    try:
        done = subprocess.run(
            argv,
            env=flower_env(flwr_home),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeploymentError(f"flwr {' '.join(args)} timed out after {timeout:.0f} s") from exc
    start = done.stdout.find("{")
    try:
        result = json.loads(done.stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        result = {}
    if done.returncode != 0 or not result.get("success", False):
        detail = (result.get("error-message") or done.stderr or done.stdout).strip()
        raise DeploymentError(f"flwr {' '.join(args[:2])} failed: {detail[-800:]}")
    return result


def control_client(address: str, ca_cert: Path) -> Any:
    """A client for the SuperLink's Control API (what the ``flwr`` CLI uses), in process."""
    from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

    from jointcredit.federation.worker import retry_invoker

    return ControlHttpClient.from_server_address(
        server_address=address,
        insecure=False,
        root_certificates=Path(ca_cert).read_bytes(),
        interceptors=[
            CliClientHttpInterceptor(),
            RuntimeVersionHttpInterceptor(component_name="flwr CLI"),
        ],
        retry_invoker=retry_invoker(10.0),
    )


def authorise_node(address: str, ca_cert: Path, pem: str, name: str) -> int:
    """Register a node's public key with the SuperLink (``flwr supernode register``); its id."""
    import httpx
    from flwr.proto.control_pb2 import RegisterNodeRequest

    client = control_client(address, ca_cert)
    try:
        res = client.RegisterNode(RegisterNodeRequest(public_key=pem.encode(), name=name))
    except httpx.HTTPError as exc:
        raise DeploymentError(
            f"the SuperLink at {address} refused to register {name!r}: {exc}"
        ) from exc
    finally:
        client.close()
    if not res.node_id:
        raise DeploymentError(f"the SuperLink at {address} did not register {name!r}")
    return int(res.node_id)


def withdraw_node(address: str, ca_cert: Path, node_id: int) -> None:
    import httpx
    from flwr.proto.control_pb2 import UnregisterNodeRequest

    client = control_client(address, ca_cert)
    try:
        client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))
    except httpx.HTTPError as exc:
        raise DeploymentError(
            f"the SuperLink at {address} refused to unregister node {node_id}: {exc}"
        ) from exc
    finally:
        client.close()


def superlink_reachable(address: str, ca_cert: Path) -> bool:
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_cert))
    try:
        with (
            socket.create_connection((host, int(port)), timeout=2.0) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


# --- the credit center -----------------------------------------------------------------------

_APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "1.0.0"
description = "jointcredit credit-center service run (configuration only: no code)"
license = "Apache-2.0"
dependencies = ["flwr>=1.41"]

[tool.flwr.app]
publisher = "jointcredit"

[tool.flwr.app.components]
serverapp = "jointcredit.federation.server_app:app"
clientapp = "jointcredit.federation.client_app:app"

[tool.flwr.app.config]
workdir = ""
data = ""
"""


@dataclass
class CenterSettings:
    """What ``jointcredit serve`` needs. Paths are made absolute on construction."""

    workdir: Path
    data: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    id_col: str = "id"
    id_kind: str = "uscc"
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_ca_certfile: Path | None = None
    hold: float = 10.0
    step_timeout: float = 600.0
    plugins: tuple[str, ...] = ()
    protocols: tuple[str, ...] | None = None
    consents: Path | None = None
    #: Post-loan monitoring: dated risk-event records (``id, event_type, date``), or the
    #: center's earlier monthly tables (oldest first) whose changes up to ``data`` (dated
    #: ``center_as_of``) are the events; ``event_rules``: EventRules thresholds.
    center_events: Path | None = None
    center_previous: tuple[Path, ...] = ()
    center_as_of: str | None = None
    event_rules: dict[str, Any] | None = None
    extra_hosts: tuple[str, ...] = field(default_factory=tuple)
    #: Control and Runtime APIs answer clients on this host only (see ``guardlink``).
    control_local_only: bool = True

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.data = Path(self.data).resolve()
        given = [self.ssl_certfile, self.ssl_keyfile, self.ssl_ca_certfile]
        if any(given) and not all(given):
            raise DataValidationError(
                "ssl", "give all of --ssl-certfile, --ssl-keyfile and --ssl-ca-certfile, or none"
            )


class CenterDeployment:
    """The credit center's SuperLink plus its ServerApp worker. Use as a context manager."""

    def __init__(self, settings: CenterSettings) -> None:
        self.settings = settings
        self.workdir = settings.workdir
        self.flwr_home = self.workdir / "flwr"
        self.superlink: ManagedProcess | None = None
        self.run_id: int | None = None
        self.service: Any = None
        self.worker: Any = None
        self.tls: TLSFiles | None = None
        self._run_known = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._supervisor: threading.Thread | None = None

    def __enter__(self) -> CenterDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::") else self.settings.host
        return f"{host}:{self.settings.port}"

    def prepare(self) -> TLSFiles:
        """Create directories, certificates, the SuperExec secret and the flwr configuration."""
        s = self.settings
        if not s.data.is_file():
            raise DataValidationError("data", f"{s.data} is not a file")
        for sub in ("logs", "governance", "banks", "secrets"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir / "secrets", 0o700)
        if s.ssl_certfile is not None:
            tls = TLSFiles(Path(s.ssl_ca_certfile), Path(s.ssl_certfile), Path(s.ssl_keyfile))  # type: ignore[arg-type]
        else:
            hosts = [h for h in (s.host, *s.extra_hosts) if h not in ("0.0.0.0", "::")]
            if s.host in ("0.0.0.0", "::"):
                hosts.append(socket.gethostname())
            tls = ensure_tls(self.workdir / "tls", hosts)
        ensure_secret(self.workdir / "secrets" / "superexec.secret")
        app_dir = self.flwr_home / "app"
        app_dir.mkdir(parents=True, exist_ok=True)
        (app_dir / "pyproject.toml").write_text(
            _APP_PYPROJECT.format(name=APP_NAME), encoding="utf-8"
        )
        (self.flwr_home / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "{self.address}"\n'
            f'root-certificates = "{tls.ca_cert}"\n',
            encoding="utf-8",
        )
        _write_json(
            self.workdir / "center.json",
            {
                "address": self.address,
                "host": s.host,
                "port": s.port,
                "ca_cert": str(tls.ca_cert),
                "data": str(s.data),
                "id_col": s.id_col,
                "id_kind": s.id_kind,
            },
        )
        if s.consents is not None:
            from jointcredit.scoring.audit import AuditLog
            from jointcredit.scoring.consent import ConsentRegistry

            audit = AuditLog(self.workdir / "governance" / "audit.jsonl")
            registry = ConsentRegistry(self.workdir / "governance" / "consents.jsonl", audit=audit)
            registry.import_csv(s.consents, id_col=s.id_col)
        if s.center_events is not None or s.center_previous:
            from jointcredit.federation.server_app import CONSENTS_FILE, import_risk_events

            if not (self.workdir / CONSENTS_FILE).exists():
                # Without consents nothing would ever be delivered: say so now, not per job.
                raise DataValidationError("consents", "risk events need the monitoring consents")
            n = import_risk_events(
                self.workdir, events=s.center_events, previous=s.center_previous,
                current=s.data, as_of=s.center_as_of, rules=s.event_rules, id_col=s.id_col,
            )  # fmt: skip
            _log.info("imported %d risk-event records for post-loan monitoring", n)
        return tls

    def start(self) -> CenterDeployment:
        from jointcredit.federation.server_app import CenterService, ServiceConfig
        from jointcredit.federation.worker import ServerAppWorker

        s = self.settings
        tls = self.prepare()
        # Load and validate the center's table before anything listens.
        config = ServiceConfig(
            workdir=self.workdir,
            data=s.data,
            id_col=s.id_col,
            id_kind=s.id_kind,
            hold=s.hold,
            step_timeout=s.step_timeout,
            allowed_protocols=s.protocols,
            plugins=s.plugins,
        )
        self.service = CenterService(config)
        secret_file = self.workdir / "secrets" / "superexec.secret"
        if s.control_local_only:
            launcher = [sys.executable, "-m", "jointcredit.federation.guardlink"]
            for address in self._own_addresses():
                launcher += ["--allow", address]
            launcher.append("--")
        else:
            launcher = [flower_tool("flower-superlink")]
        argv = [
            *launcher,
            "--ssl-ca-certfile", str(tls.ca_cert),
            "--ssl-certfile", str(tls.server_cert),
            "--ssl-keyfile", str(tls.server_key),
            "--enable-supernode-auth",
            "--isolation", "process",
            "--superexec-auth-secret-file", str(secret_file),
            "--disable-runtime-dependency-installation",
            "--database", ":flwr-in-memory:",
            "--host", s.host,
            "--port", str(s.port),
        ]  # fmt: skip
        self.superlink = ManagedProcess(
            "flower-superlink",
            argv,
            flower_env(self.flwr_home),
            self.workdir / "logs" / "superlink.log",
            pid_file=self.workdir / "run" / "superlink.pid",
        )
        host, port = self.address.rsplit(":", 1)
        wait_tls_ready(host, int(port), tls.ca_cert, 60.0, self.superlink)
        self.tls = tls
        self.sync_registrations()
        self.worker = ServerAppWorker(
            self.address,
            lambda grid, context, stop: self.service.serve(grid, stop),
            accept_run=self._is_service_run,
            secret=secret_file.read_bytes(),
            root_certificates=tls.ca_cert.read_bytes(),
        )
        self._start_run()
        self._thread = threading.Thread(
            target=self.worker.serve, args=(self._stop,), name="center-worker", daemon=True
        )
        self._thread.start()
        self._supervisor = threading.Thread(
            target=self._supervise, name="center-supervisor", daemon=True
        )
        self._supervisor.start()
        _log.info("credit center serving on %s (run %s)", self.address, self.run_id)
        return self

    def _own_addresses(self) -> list[str]:
        """Addresses besides loopback that the center's own tools connect from."""
        try:
            address = ipaddress.ip_address(self.settings.host)
        except ValueError:
            return []
        if address.is_unspecified or address.is_loopback:
            return []
        return [str(address)]

    def _is_service_run(self, candidate: int) -> bool:
        # While a run is being started its id is not known yet: wait rather than refuse it.
        self._run_known.wait(timeout=300)
        return candidate == self.run_id

    def _start_run(self) -> None:
        self._run_known.clear()
        try:
            run = run_flwr(["run", str(self.flwr_home / "app"), CONNECTION], self.flwr_home)
            self.run_id = int(run["run-id"])
        finally:
            self._run_known.set()
        _write_json(
            self.workdir / "run" / "service.json", {"run_id": self.run_id, "pid": os.getpid()}
        )

    def _supervise(self) -> None:
        # If the service run ends under us (e.g. someone with access to the SuperLink's
        # control API ran `flwr stop`), start a fresh one: banks keep being served.
        while not self._stop.wait(1.0):
            if self.worker.run_ended.is_set():
                self.worker.run_ended.clear()
                try:
                    self._start_run()
                    _log.warning("service run restarted as run %s", self.run_id)
                except DeploymentError as exc:
                    _log.error("could not restart the service run: %s", exc)

    def sync_registrations(self) -> None:
        """Authorise every bank of ``banks.json`` at the (fresh, in-memory) SuperLink.

        The SuperLink keeps no state across restarts by design; ``banks.json`` is the registry
        of record, and node ids are re-issued at every start.
        """
        from jointcredit.federation.server_app import BankDirectory, BankRecord

        assert self.tls is not None
        directory = BankDirectory(self.workdir)
        banks = directory.load()
        for name, record in banks.items():
            node_id = authorise_node(self.address, self.tls.ca_cert, record.public_key_pem, name)
            banks[name] = BankRecord(name, node_id, record.public_key_pem)
        directory.save(banks)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.superlink is not None:
            self.superlink.stop()


def register_bank(workdir: str | os.PathLike, public_key_file: str | os.PathLike, name: str) -> Any:
    """Authorise a bank's node key under ``name``: recorded in ``banks.json`` and, if the center
    is running, registered with its SuperLink at once (otherwise at the next ``serve``)."""
    from jointcredit.federation.server_app import BankDirectory, BankRecord, check_bank_name

    workdir = Path(workdir).resolve()
    check_bank_name(name)
    directory = BankDirectory(workdir)
    banks = directory.load()
    if name in banks:
        raise DataValidationError("name", f"bank {name!r} is already registered")
    pem = public_key_pem(public_key_file)
    if any(_normalise(b.public_key_pem) == _normalise(pem) for b in banks.values()):
        raise DataValidationError("public_key", "this key is already registered to another bank")
    center = _read_json(workdir / "center.json", "run `jointcredit serve` once to create it")
    node_id = 0
    if superlink_reachable(center["address"], Path(center["ca_cert"])):
        node_id = authorise_node(center["address"], Path(center["ca_cert"]), pem, name)
    record = BankRecord(name, node_id, pem)
    directory.add(record)
    from jointcredit.scoring.audit import AuditLog

    AuditLog(workdir / "governance" / "audit.jsonl").append(
        "credit_center", "bank_registered", {"bank": name, "node_id": record.node_id}
    )
    return record


def unregister_bank(workdir: str | os.PathLike, name: str) -> Any:
    """Withdraw a bank's authorisation (its node can no longer connect)."""
    from jointcredit.federation.server_app import BankDirectory

    workdir = Path(workdir).resolve()
    record = BankDirectory(workdir).remove(name)
    center = _read_json(workdir / "center.json", "run `jointcredit serve` once to create it")
    if record.node_id and superlink_reachable(center["address"], Path(center["ca_cert"])):
        withdraw_node(center["address"], Path(center["ca_cert"]), record.node_id)
    return record


def _normalise(pem: str) -> str:
    return "".join(pem.split())


# --- a bank ----------------------------------------------------------------------------------


@dataclass
class BankSettings:
    """What ``jointcredit join`` needs. ``fast_poll``: see :mod:`jointcredit.federation.fastnode`."""

    workdir: Path
    server: str
    ca_cert: Path
    key: Path
    data: Path
    id_col: str = "id"
    label_col: str | None = None
    id_kind: str = "uscc"
    isolation: str = "process"
    fast_poll: bool = True
    max_wait: float = 60.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.ca_cert = Path(self.ca_cert).resolve()
        self.key = Path(self.key).resolve()
        self.data = Path(self.data).resolve()
        if self.isolation not in ("process", "subprocess"):
            raise DataValidationError("isolation", "must be 'process' or 'subprocess'")
        for what, path in (("ca", self.ca_cert), ("key", self.key), ("data", self.data)):
            if not path.is_file():
                raise DataValidationError(what, f"{path} is not a file")
        if ":" not in self.server:
            raise DataValidationError("server", f"{self.server!r}: expected HOST:PORT")


class BankDeployment:
    """A bank's SuperNode plus its ClientApp worker. Use as a context manager."""

    def __init__(self, settings: BankSettings) -> None:
        self.settings = settings
        self.workdir = settings.workdir
        self.supernode: ManagedProcess | None = None
        self.worker: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BankDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> BankDeployment:
        from jointcredit.federation.client_app import app
        from jointcredit.federation.worker import ClientAppWorker

        s = self.settings
        for sub in ("logs", "results", "state", "secrets", "flwr"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir / "secrets", 0o700)
        secret_file = ensure_secret(self.workdir / "secrets" / "superexec.secret")
        runtime_port = free_port()
        info = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()}
        info["runtime_port"] = runtime_port
        _write_json(self.workdir / "bank.json", info)
        if s.fast_poll:
            launcher = [sys.executable, "-m", "jointcredit.federation.fastnode", "--"]
        else:
            launcher = [flower_tool("flower-supernode")]
        argv = launcher + [
            "--superlink", s.server,
            "--root-certificates", str(s.ca_cert),
            "--auth-supernode-private-key", str(s.key),
            "--isolation", s.isolation,
            "--host", "127.0.0.1",
            "--port", str(runtime_port),
            "--node-config", f'data-path="{self.workdir}"',
            "--max-wait-time", str(s.max_wait),
        ]  # fmt: skip
        if s.isolation == "process":
            argv += ["--superexec-auth-secret-file", str(secret_file)]
        self.supernode = ManagedProcess(
            "flower-supernode",
            argv,
            flower_env(self.workdir / "flwr"),
            self.workdir / "logs" / "supernode.log",
            pid_file=self.workdir / "run" / "supernode.pid",
        )
        wait_port("127.0.0.1", runtime_port, 60.0, self.supernode)
        if s.isolation == "process":
            self.worker = ClientAppWorker(
                f"127.0.0.1:{runtime_port}", app, secret=secret_file.read_bytes()
            )
            self._thread = threading.Thread(
                target=self.worker.serve, args=(self._stop,), name="bank-worker", daemon=True
            )
            self._thread.start()
        return self

    def alive(self) -> bool:
        """The SuperNode runs and, in process isolation, so does the worker answering for it."""
        worker_ok = self._thread is None or self._thread.is_alive()
        return self.supernode is not None and self.supernode.alive() and worker_ok

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.supernode is not None:
            self.supernode.stop()


def load_bank_config(workdir: str | os.PathLike) -> dict:
    """The settings ``jointcredit join`` recorded in a bank's work directory."""
    return _read_json(Path(workdir) / "bank.json", "run `jointcredit join` first")
