"""Find the distributor through the kubeconfig, as ``istioctl`` finds istiod.

With no ``--url``, ``palisade fleet|approvals|audit query`` read the kubeconfig
(``--kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``; ``--context``,
else its current context) and, in the chart's namespace (``-n/--namespace``,
default ``palisade``):

1. list Services labelled ``app.kubernetes.io/component=distributor`` and take
   the one with a port named ``http``;
2. list the pods its selector picks and take a ready one; the Service's
   ``targetPort`` (a name or a number) gives the container port;
3. read the admin bearer token from the Secret that pod mounts for its
   ``--admin-token-file`` — with the user's own credentials, so ``get`` on
   that Secret is the RBAC gate (a user without it is told so and may still
   answer approvals with their own token);

then the CLI port-forwards to that pod through the API server
(:mod:`palisade.cli.portforward`). The choosing is done by pure functions over
the API objects as plain dicts; :func:`discover` is the thin adapter that
fetches them. A user needs, in that namespace: ``list`` services and pods,
``create`` pods/portforward, and ``get`` on the admin Secret for the admin
views (``fleet``, ``approvals list``, ``audit query``).
"""

from __future__ import annotations

import base64
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration

COMPONENT_LABEL = "app.kubernetes.io/component=distributor"
DEFAULT_NAMESPACE = "palisade"
HTTP_PORT_NAME = "http"
ADMIN_FLAG = "--admin-token-file"


class DiscoveryError(Exception):
    """The distributor could not be found or reached through the kubeconfig."""


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class Target:
    """One distributor pod to port-forward to, and where its admin token lives."""

    namespace: str
    service: str
    pod: str
    port: int
    admin_secret: SecretRef | None = None


@dataclass(frozen=True)
class KubeAccess:
    """Which kubeconfig and context to use (empty: the defaults kubectl uses)."""

    kubeconfig: str = ""
    context: str = ""
    namespace: str = DEFAULT_NAMESPACE

    def config_file(self) -> str:
        if self.kubeconfig:
            return str(Path(self.kubeconfig).expanduser())
        env = os.environ.get("KUBECONFIG", "")
        if env:
            return os.pathsep.join(str(Path(p).expanduser()) for p in env.split(os.pathsep) if p)
        return str(Path.home() / ".kube" / "config")

    def exists(self) -> bool:
        return any(Path(p).is_file() for p in self.config_file().split(os.pathsep) if p)


# --- pure choices over API objects (plain dicts, as the API server sends them) --------------


def pick_service(services: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """The distributor Service: labelled as one and with an ``http`` port."""
    with_http = [s for s in services if _http_port(s) is not None]
    if not with_http:
        raise DiscoveryError(
            f"no distributor Service in namespace {namespace!r} (label {COMPONENT_LABEL} with a"
            " port named http); is the chart installed there? (-n NAMESPACE, or --url)"
        )
    return sorted(with_http, key=lambda s: str(_meta(s).get("name", "")))[0]


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _http_port(service: dict[str, Any]) -> dict[str, Any] | None:
    for port in (service.get("spec") or {}).get("ports") or ():
        if isinstance(port, dict) and port.get("name") == HTTP_PORT_NAME:
            return port
    return None


def selector_of(service: dict[str, Any]) -> str:
    """The Service's pod selector as a label-selector string."""
    sel = (service.get("spec") or {}).get("selector") or {}
    if not sel:
        raise DiscoveryError(f"Service {_meta(service).get('name')!r} selects no pods")
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or _meta(pod).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
        if isinstance(c, dict)
    )


def pick_pod(pods: list[dict[str, Any]], service: dict[str, Any]) -> dict[str, Any]:
    """A ready pod behind the Service (the first by name, so repeated calls agree)."""
    ready = sorted((p for p in pods if _ready(p)), key=lambda p: str(_meta(p).get("name", "")))
    if not ready:
        name = _meta(service).get("name")
        raise DiscoveryError(
            f"no ready distributor pod behind Service {name!r} ({len(pods)} pod(s) found);"
            " check `kubectl get pods -l app.kubernetes.io/component=distributor`"
        )
    return ready[0]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (pod.get("spec") or {}).get("containers") or () if isinstance(c, dict)]


def target_port(service: dict[str, Any], pod: dict[str, Any]) -> int:
    """The container port the Service's ``http`` port leads to in ``pod``."""
    port = _http_port(service) or {}
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in _containers(pod):
        for cp in c.get("ports") or ():
            if isinstance(cp, dict) and cp.get("name") == target:
                return int(cp["containerPort"])
    raise DiscoveryError(f"pod {_meta(pod).get('name')!r} has no container port named {target!r}")


def _flag_value(args: list[str], flag: str) -> str:
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return ""


def admin_secret(pod: dict[str, Any]) -> SecretRef | None:
    """The Secret (and key) mounted where the distributor reads ``--admin-token-file``."""
    volumes = {str(v.get("name")): v for v in (pod.get("spec") or {}).get("volumes") or () if v}
    for c in _containers(pod):
        path = _flag_value(
            [str(a) for a in (c.get("command") or []) + (c.get("args") or [])], ADMIN_FLAG
        )
        if not path:
            continue
        for mount in c.get("volumeMounts") or ():
            root = str(mount.get("mountPath", "")).rstrip("/")
            if not root or not path.startswith(root + "/"):
                continue
            secret = (volumes.get(str(mount.get("name"))) or {}).get("secret") or {}
            if not secret.get("secretName"):
                continue
            rel = posixpath.relpath(path, root)
            for item in secret.get("items") or ():
                if item.get("path") == rel:
                    rel = str(item.get("key"))
            return SecretRef(str(secret["secretName"]), rel)
    return None


def token_from_secret(secret: dict[str, Any], ref: SecretRef) -> str:
    """The decoded token under ``ref.key``; the message never carries the value."""
    data = secret.get("data") or {}
    raw = data.get(ref.key)
    if not raw:
        raise DiscoveryError(f"Secret {ref.name!r} has no key {ref.key!r}")
    try:
        return base64.b64decode(raw).decode().strip()
    except (ValueError, UnicodeDecodeError):
        raise DiscoveryError(f"Secret {ref.name!r} key {ref.key!r} is not a text token") from None


def choose(services: list[dict[str, Any]], pods: list[dict[str, Any]], namespace: str) -> Target:
    """The whole choice, from the listed Services and the pods of the chosen one."""
    service = pick_service(services, namespace)
    pod = pick_pod(pods, service)
    return Target(
        namespace=namespace,
        service=str(_meta(service).get("name", "")),
        pod=str(_meta(pod).get("name", "")),
        port=target_port(service, pod),
        admin_secret=admin_secret(pod),
    )


# --- the adapter: the API server through kubernetes_asyncio ------------------------------


async def load_configuration(access: KubeAccess) -> Configuration:
    """A client Configuration from the kubeconfig (tokens, certificates, exec plugins)."""
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config import ConfigException, load_kube_config

    cfg = Configuration()
    try:
        await load_kube_config(
            config_file=access.config_file(),
            context=access.context or None,
            client_configuration=cfg,
            persist_config=False,
        )
    except (ConfigException, OSError, ValueError, KeyError) as exc:
        raise DiscoveryError(f"cannot use the kubeconfig: {_first_line(exc)}") from None
    return cfg


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _api_failure(what: str, exc: Exception, namespace: str) -> DiscoveryError:
    status = getattr(exc, "status", None)
    if status == 403:
        return DiscoveryError(
            f"the cluster refused to let you {what} in namespace {namespace!r} (403 Forbidden):"
            " needed there: list services and pods, create pods/portforward, get the admin"
            " Secret; or give --url"
        )
    if status == 401:
        return DiscoveryError("the cluster did not accept your kubeconfig's credentials (401)")
    if status is not None:
        return DiscoveryError(f"cannot {what} in namespace {namespace!r}: HTTP {status}")
    return DiscoveryError(f"cannot reach the cluster to {what}: {_first_line(exc)}")


@dataclass
class Discovery:
    """What :func:`discover` found: the target, its token (if readable) and the config."""

    target: Target
    configuration: Configuration
    admin_token: str = field(default="", repr=False)
    #: why there is no admin token, for the message shown when one is needed
    token_problem: str = ""


async def discover(access: KubeAccess, *, want_admin_token: bool = True) -> Discovery:
    """Find the distributor pod for ``access``; read its admin token when allowed."""
    from aiohttp import ClientError
    from kubernetes_asyncio.client import ApiClient, CoreV1Api
    from kubernetes_asyncio.client.exceptions import ApiException

    cfg = await load_configuration(access)
    ns = access.namespace
    async with ApiClient(configuration=cfg) as api_client:
        core = CoreV1Api(api_client)
        try:
            services = await core.list_namespaced_service(ns, label_selector=COMPONENT_LABEL)
        except (ApiException, ClientError, OSError) as exc:
            raise _api_failure("list services", exc, ns) from None
        service_dicts = [api_client.sanitize_for_serialization(s) for s in services.items]
        service = pick_service(service_dicts, ns)
        try:
            pods = await core.list_namespaced_pod(ns, label_selector=selector_of(service))
        except (ApiException, ClientError, OSError) as exc:
            raise _api_failure("list pods", exc, ns) from None
        pod_dicts = [api_client.sanitize_for_serialization(p) for p in pods.items]
        target = choose(service_dicts, pod_dicts, ns)
        found = Discovery(target, cfg)
        if not want_admin_token:
            return found
        ref = target.admin_secret
        if ref is None:
            found.token_problem = f"pod {target.pod} mounts no admin token Secret"
            return found
        try:
            secret = await core.read_namespaced_secret(ref.name, ns)
        except (ApiException, ClientError, OSError) as exc:
            found.token_problem = str(_api_failure(f"get secret {ref.name}", exc, ns))
            return found
        found.admin_token = token_from_secret(api_client.sanitize_for_serialization(secret), ref)
        return found
