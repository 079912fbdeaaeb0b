"""A real Kubernetes control plane on loopback for tests, in the manner of envtest.

``ControlPlane`` starts etcd (temporary data dir, random ports), kube-apiserver
(self-made serving certificate, an admin static token and client certificate,
RBAC, admission webhooks enabled, service-account token issuance with an issuer
so TokenRequest/TokenReview work) and, optionally, kube-controller-manager with
a chosen set of controllers. It writes a kubeconfig and offers helpers to run
kubectl and helm, make plain JSON requests, and build kubernetes_asyncio
clients. ``stop()`` (or leaving the ``with`` block) ends every process and
removes the temporary directory; nothing outlives the Python process.

    with ControlPlane() as kube:
        kube.create_namespace("payments", labels={"palisade.dev/inject": "enabled"})
        kube.kubectl("get", "ns")
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.harness import commands, pki
from tests.harness.binaries import KubeBinaries, find_binaries
from tests.harness.commands import ADMIN_USER, ADMISSION_PLUGINS, BASIC_CONTROLLERS, ISSUER
from tests.harness.process import ManagedProcess, free_port

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient, Configuration

_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


_WORKDIR_PREFIX = "palisade-kube-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_workdirs() -> None:
    """Remove temp dirs left by runs whose Python process was killed outright.

    Their children died with them (parent-death signal); only files remain. A
    directory is stale when the pid in its ``owner.pid`` no longer runs.
    """
    for d in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*"):
        try:
            pid = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


class HarnessError(RuntimeError):
    """The control plane could not start or a helper failed; the message has the log tail."""


class ApiError(HarnessError):
    """A request to the API server returned a non-2xx status."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


@dataclass(frozen=True)
class ControlPlaneConfig:
    """How to start the control plane."""

    controllers: tuple[str, ...] | None = BASIC_CONTROLLERS
    """kube-controller-manager ``--controllers`` at start; ``None``: do not run it."""
    extra_apiserver_args: tuple[str, ...] = ()
    """Appended to kube-apiserver's command line (e.g. ``--feature-gates=...``)."""
    start_timeout: float = 180.0
    """Seconds to wait for etcd and /readyz (two shared CPU cores are slow)."""
    keep_dir: bool = field(default_factory=lambda: os.environ.get("PALISADE_KUBE_KEEP") == "1")
    """Keep the temporary directory (logs, certs, kubeconfig) after stop."""
    bind_address: str = "127.0.0.1"
    """kube-apiserver ``--bind-address``."""
    advertise_address: str = "127.0.0.1"
    """kube-apiserver ``--advertise-address``, also the host in :attr:`ControlPlane.server`."""
    apiserver_port: int = 0
    """kube-apiserver ``--secure-port``; 0: a free port."""
    authorization_modes: tuple[str, ...] = ("RBAC",)
    """kube-apiserver ``--authorization-mode`` (a real node adds ``Node``)."""
    admission_plugins: tuple[str, ...] = ADMISSION_PLUGINS
    """kube-apiserver ``--enable-admission-plugins``."""
    etcd_host: str = "127.0.0.1"
    """Where etcd listens; the test process checks its health there."""
    serving_ips: tuple[str, ...] = ()
    """IP addresses the API server's certificate names beside 127.0.0.1 and 10.96.0.1."""
    extra_controller_manager_args: tuple[str, ...] = ()
    """Appended to kube-controller-manager's command line."""
    command_prefix: tuple[str, ...] = ()
    """Put before every command line, e.g. ``("nsenter", "--net=/var/run/netns/x")``."""
    detached: bool = False
    """Children may outlive this Python process (no parent-death signal, no atexit stop)."""


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) for one test session."""

    def __init__(
        self, config: ControlPlaneConfig | None = None, binaries: KubeBinaries | None = None
    ) -> None:
        self.config = config or ControlPlaneConfig()
        self.binaries = binaries or find_binaries()
        self.workdir = self._make_workdir()
        self.admin_token = secrets.token_urlsafe(32)
        self.server = ""
        self.port = 0
        self.etcd_url = ""
        self.service_account_issuer = ISSUER
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._kcm: ManagedProcess | None = None
        self.controllers: tuple[str, ...] | None = None
        self._write_pki()
        self._ssl = ssl.create_default_context(cafile=str(self.ca_file))

    def _make_workdir(self) -> Path:
        _sweep_stale_workdirs()
        workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
        if not self.config.keep_dir:  # kept dirs are for reading later, not swept
            (workdir / "owner.pid").write_text(str(os.getpid()))
        return workdir

    # --- files -----------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def admin_cert_file(self) -> Path:
        """Client certificate for the admin user (group system:masters)."""
        return self.workdir / "pki" / "admin.crt"

    @property
    def admin_key_file(self) -> Path:
        return self.workdir / "pki" / "admin.key"

    def _write_pki(self) -> None:
        d = self.workdir / "pki"
        d.mkdir(mode=0o700)
        ca = pki.make_ca("palisade-test-kube-ca")
        serving = pki.issue(
            ca,
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", "10.96.0.1", *self.config.serving_ips),
        )
        admin = pki.issue(
            ca, ADMIN_USER, organizations=("system:masters",), server=False, client=True
        )
        sa_key, sa_pub = pki.make_signing_key()
        files = {
            "ca.crt": ca.cert_pem,
            "ca.key": ca.key_pem,
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
            "admin.crt": admin.cert_pem,
            "admin.key": admin.key_pem,
            "sa.key": sa_key,
            "sa.pub": sa_pub,
            "tokens.csv": commands.token_file_line(self.admin_token).encode(),
            **self._extra_pki(ca),
        }
        for name, data in files.items():
            (d / name).write_bytes(data)
            (d / name).chmod(0o600)

    def _extra_pki(self, ca: pki.KeyPair) -> dict[str, bytes]:
        """More files for ``pki/`` (a subclass's certificates, signed by ``ca``)."""
        return {}

    def _write_kubeconfig(self) -> None:
        doc = commands.kubeconfig(self.server, self.ca_pem, self.admin_token)
        self.kubeconfig.write_text(yaml.safe_dump(doc))
        self.kubeconfig.chmod(0o600)

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm (or any client) pointed at this control plane."""
        env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
        helm = self.workdir / "helm"
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            HELM_CACHE_HOME=str(helm / "cache"),
            HELM_CONFIG_HOME=str(helm / "config"),
            HELM_DATA_HOME=str(helm / "data"),
        )
        return env

    # --- lifecycle -------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd, kube-apiserver and (if configured) kube-controller-manager."""
        try:
            self._start_with_retries()
            if self.config.controllers is not None:
                self.start_controllers(self.config.controllers)
        except BaseException:
            self.stop()
            raise

    def _start_with_retries(self, attempts: int = 3) -> None:
        # Ports are picked free but may be taken before the child binds them.
        for attempt in range(attempts):
            try:
                self._start_etcd()
                self._start_apiserver()
                return
            except HarnessError as e:
                logs = "\n".join(p.log_tail() for p in (self._etcd, self._apiserver) if p)
                self._stop_process("_apiserver")
                self._stop_process("_etcd")
                if "address already in use" not in logs or attempt == attempts - 1:
                    raise e

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        data = self.workdir / f"etcd-{client}"
        host = self.config.etcd_host
        self.etcd_url = f"http://{host}:{client}"
        self._etcd = self._process(
            "etcd", commands.etcd_args(self.binaries.etcd, data, client, peer, host)
        )
        self._etcd.start()
        self._wait(self._etcd, lambda: self._etcd_healthy(), "etcd /health")

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _start_apiserver(self) -> None:
        self.port = self.config.apiserver_port or free_port()
        self.server = f"https://{self.config.advertise_address}:{self.port}"
        argv = commands.apiserver_args(
            self.binaries.kube_apiserver,
            etcd_url=self.etcd_url,
            port=self.port,
            pki=self.workdir / "pki",
            cert_dir=self.workdir / "apiserver-certs",
            issuer=self.service_account_issuer,
            bind_address=self.config.bind_address,
            advertise_address=self.config.advertise_address,
            authorization_modes=self.config.authorization_modes,
            admission_plugins=self.config.admission_plugins,
            extra=self._apiserver_extra_args(),
        )
        self._apiserver = self._process("kube-apiserver", argv)
        self._apiserver.start()
        self._wait(self._apiserver, self._apiserver_ready, "kube-apiserver /readyz")
        self._write_kubeconfig()

    def _apiserver_extra_args(self) -> tuple[str, ...]:
        """The API server's extra flags (a subclass adds its own to the config's)."""
        return self.config.extra_apiserver_args

    def _process(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        """A child named ``name`` logging to ``<workdir>/<name>.log``, under the command prefix."""
        return ManagedProcess(
            name,
            [*self.config.command_prefix, *argv],
            self.workdir / f"{name}.log",
            self._child_env(),
            detached=self.config.detached,
        )

    def _apiserver_ready(self) -> bool:
        try:
            status, body = self._raw("GET", "/readyz", None, timeout=3)
        except OSError:
            return False
        return status == 200 and body.strip() == b"ok"

    def start_controllers(self, controllers: Sequence[str] = ("*",)) -> None:
        """(Re)start kube-controller-manager with these controllers (``*``: all defaults).

        Returns once the ServiceAccount controller has made ``default/default``
        (when it is among the controllers) or the process has stayed up for a second.
        """
        wanted = tuple(controllers)
        if self._kcm is not None and self._kcm.running() and self.controllers == wanted:
            return
        self._stop_process("_kcm")
        argv = commands.controller_manager_args(
            self.binaries.kube_controller_manager,
            kubeconfig=self.kubeconfig,
            controllers=wanted,
            pki=self.workdir / "pki",
            extra=self.config.extra_controller_manager_args,
        )
        self._kcm = self._process("kube-controller-manager", argv)
        self._kcm.start()
        self.controllers = wanted
        if "*" in wanted or "serviceaccount-controller" in wanted:
            self._wait(
                self._kcm,
                lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
                "default ServiceAccount",
            )
        else:
            time.sleep(1)
            if not self._kcm.running():
                raise HarnessError(f"kube-controller-manager exited:\n{self._kcm.log_tail()}")

    def stop(self) -> None:
        """Stop every process (controller manager, API server, etcd) and clean up."""
        for attr in ("_kcm", "_apiserver", "_etcd"):
            self._stop_process(attr)
        if not self.config.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_process(self, attr: str) -> None:
        proc: ManagedProcess | None = getattr(self, attr)
        if proc is not None:
            proc.stop()
            setattr(self, attr, None)

    def processes(self) -> list[ManagedProcess]:
        """The live child processes (for tests of the harness itself)."""
        return [p for p in (self._etcd, self._apiserver, self._kcm) if p is not None]

    def _child_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}

    def _wait(self, proc: ManagedProcess, ready: Any, what: str) -> None:
        deadline = time.monotonic() + self.config.start_timeout
        while time.monotonic() < deadline:
            if not proc.running():
                raise HarnessError(
                    f"{proc.name} exited with {proc.exit_code()} while waiting for {what}:\n"
                    f"{proc.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise HarnessError(
            f"timed out after {self.config.start_timeout}s waiting for {what}:\n{proc.log_tail()}"
        )

    # --- clients ---------------------------------------------------------------

    def _raw(
        self,
        method: str,
        path: str,
        body: bytes | None,
        timeout: float = 30,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.server + path,
            data=body,
            method=method,
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> Any:
        """A JSON request as the admin user; raises :class:`ApiError` on non-2xx."""
        data = json.dumps(body).encode() if body is not None else None
        status, raw = self._raw(method, path, data, content_type=content_type)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if not 200 <= status < 300:
            raise ApiError(status, parsed, method, path)
        return parsed

    def _exists(self, path: str) -> bool:
        try:
            status, _ = self._raw("GET", path, None, timeout=3)
        except OSError:
            return False
        return status == 200

    def create_namespace(
        self, name: str, labels: Mapping[str, str] | None = None, *, timeout: float = 60
    ) -> None:
        """Create (or relabel) a namespace and wait for its ``default`` ServiceAccount;
        one still Terminating (deleted by an earlier test) is waited out and made anew.

        Pods cannot be created in a namespace before the ServiceAccount
        admission plugin finds that account; the controller manager makes it.
        Without the controller manager the harness creates it itself.
        """
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if labels:
            body["metadata"] = {"name": name, "labels": dict(labels)}
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("POST", "/api/v1/namespaces", body)
                break
            except ApiError as e:
                if e.status != 409:
                    raise
            # It exists; one an earlier test deleted is still Terminating and takes no
            # new objects: wait until it is gone and make it afresh.
            try:
                phase = self.request("GET", f"/api/v1/namespaces/{name}")["status"].get("phase")
            except ApiError as e:
                if e.status == 404:
                    continue
                raise
            if phase != "Terminating":
                if labels:
                    self.request(
                        "PATCH",
                        f"/api/v1/namespaces/{name}",
                        {"metadata": {"labels": dict(labels)}},
                        content_type="application/merge-patch+json",
                    )
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"namespace {name} still Terminating after {timeout:g}s")
            time.sleep(0.2)
        sa_path = f"/api/v1/namespaces/{name}/serviceaccounts/default"
        if self._kcm is None or not self._kcm.running():
            with contextlib.suppress(ApiError):
                self.request(
                    "POST",
                    f"/api/v1/namespaces/{name}/serviceaccounts",
                    {"metadata": {"name": "default"}},
                )
        deadline = time.monotonic() + timeout
        while not self._exists(sa_path):
            if time.monotonic() > deadline:
                raise HarnessError(f"namespace {name}: default ServiceAccount never appeared")
            time.sleep(0.1)

    def _run(
        self,
        binary: Path,
        args: Sequence[str],
        input: str | bytes | None,
        check: bool,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        text_input = input.decode() if isinstance(input, bytes) else input
        result = subprocess.run(
            [str(binary), *args],
            input=text_input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"{binary.name} {' '.join(args)} failed with {result.returncode}:\n"
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this control plane (raises on failure if check)."""
        return self._run(self.binaries.kubectl, args, input, check, timeout)

    def helm(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real helm against this control plane (raises on failure if check)."""
        return self._run(self.binaries.helm, args, input, check, timeout)

    def configuration(self) -> Configuration:
        """A kubernetes_asyncio Configuration for the admin user."""
        from kubernetes_asyncio.client import Configuration

        cfg = Configuration(
            host=self.server,
            api_key={"BearerToken": self.admin_token},
            api_key_prefix={"BearerToken": "Bearer"},
        )
        cfg.ssl_ca_cert = str(self.ca_file)
        return cfg

    def api_client(self) -> ApiClient:
        """A new kubernetes_asyncio ApiClient; use as ``async with kube.api_client() as api:``."""
        from kubernetes_asyncio.client import ApiClient

        return ApiClient(configuration=self.configuration())
