"""Who a subscriber is: a pod-bound ServiceAccount token, verified by TokenReview.

Every ``Subscribe`` stream and every ``SendAudit`` call carries
``authorization: Bearer <token>`` in its gRPC metadata: the projected
ServiceAccount token the kubelet keeps in the client's pod, with the
distributor's audience (``palisade-distributor`` unless ``--subscriber-audience``
says otherwise). The distributor asks the API server about it (TokenReview with
that audience) and then reads the pod the token is bound to. The client's
identity comes from those two answers and nothing else:

- the token must be bound to a pod (``authentication.kubernetes.io/pod-name`` and
  ``pod-uid`` in the review's ``extra``), and that pod must exist with that uid;
- a ServiceAccount named by ``--node-agent-service-account NS:NAME`` is a node
  agent: id and node are the pod's ``spec.nodeName``;
- any other pod is a sidecar only when it carries the label
  ``palisade.dev/mcp-server``: id is the pod's uid, the scope is that label's MCP
  server, namespace, pod and node are the pod's. Anything else is refused.

What the Hello says about id, kind, node, namespace, pod and server is replaced
(tenant and version are informational). So a client can neither take another's
id (and with it its stream, its approval answers and its fleet row) nor pick
another scope.

Answers are cached for ``cache_s`` by the token's SHA-256 (never the token), so a
fleet reconnecting at once and every audit batch do not each cost two API calls.
The dev mode (``--insecure-subscribers``) has no ``Authenticator``; the Hello is
then believed, and the replica says so loudly at start.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from palisade.v1 import distribution_pb2

log = logging.getLogger(__name__)

DEFAULT_AUDIENCE = "palisade-distributor"
MCP_SERVER_LABEL = "palisade.dev/mcp-server"
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"


class AuthError(Exception):
    """The subscriber is not who it must be; ``unauthenticated`` picks the gRPC code."""

    def __init__(self, message: str, *, unauthenticated: bool = False) -> None:
        super().__init__(message)
        self.unauthenticated = unauthenticated


@dataclass(frozen=True, slots=True)
class Peer:
    """An authenticated subscriber."""

    kind: int
    id: str
    username: str
    namespace: str = ""
    pod: str = ""
    node: str = ""
    server: str = ""

    @property
    def audit_source(self) -> str:
        """The ``source`` its audit records carry (what the sidecar and node agent write)."""
        if self.kind == distribution_pb2.CLIENT_KIND_SIDECAR:
            return f"sidecar/{self.id}"
        return self.id

    def identity(self, claimed: distribution_pb2.ClientIdentity) -> distribution_pb2.ClientIdentity:
        """The Hello's identity with everything that names or scopes the client replaced."""
        out = distribution_pb2.ClientIdentity()
        out.CopyFrom(claimed)
        out.kind = self.kind  # type: ignore[assignment]
        out.id = self.id
        out.namespace = self.namespace
        out.pod = self.pod
        out.node = self.node
        out.server = self.server
        return out


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of an ``authorization: Bearer ...`` metadata entry ("" when absent)."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return ""


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Peer: ...


class KubeApi(Protocol):
    """The two API calls a ``TokenReviewAuthenticator`` makes (injectable for tests)."""

    async def review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        """The TokenReview's ``status`` as plain data."""
        ...

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as plain data, or None when there is none."""
        ...


class KubernetesAsyncioApi:
    """``KubeApi`` over a kubernetes_asyncio ``ApiClient`` (in-cluster or a kubeconfig)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes_asyncio import client

        self._client = client
        self._auth = client.AuthenticationV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._api = api_client

    async def review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        c = self._client
        body = c.V1TokenReview(spec=c.V1TokenReviewSpec(token=token, audiences=list(audiences)))
        result = await self._auth.create_token_review(body)
        status: dict[str, Any] = self._api.sanitize_for_serialization(result.status) or {}
        return status

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            pod = await self._core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        out: dict[str, Any] = self._api.sanitize_for_serialization(pod)
        return out


def _service_account(username: str) -> tuple[str, str] | None:
    parts = username.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return parts[2], parts[3]
    return None


class TokenReviewAuthenticator:
    def __init__(
        self,
        api: KubeApi,
        *,
        audience: str = DEFAULT_AUDIENCE,
        node_agent_accounts: Iterable[str] = (),
        cache_s: float = 30.0,
        cache_size: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.audience = audience
        #: ``namespace:name`` of the ServiceAccounts node agents run as.
        self.node_agent_accounts = frozenset(node_agent_accounts)
        self.cache_s = cache_s
        self.cache_size = cache_size
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, Peer]] = OrderedDict()

    async def authenticate(self, token: str) -> Peer:
        if not token:
            raise AuthError(
                "a bearer token is required (the pod's projected ServiceAccount token with"
                f" audience {self.audience!r})",
                unauthenticated=True,
            )
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1]
        peer = await self._verify(token)
        self._cache[key] = (now + self.cache_s, peer)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return peer

    async def _verify(self, token: str) -> Peer:
        try:
            status = await self.api.review(token, [self.audience])
        except Exception as exc:
            log.warning("TokenReview failed", extra={"error": type(exc).__name__})
            raise AuthError("cannot verify the token now; retry", unauthenticated=True) from None
        if not status.get("authenticated"):
            raise AuthError(
                f"token not accepted for audience {self.audience!r}", unauthenticated=True
            )
        if self.audience not in (status.get("audiences") or [self.audience]):
            raise AuthError(f"token is not for audience {self.audience!r}", unauthenticated=True)
        user = status.get("user") or {}
        username = str(user.get("username") or "")
        account = _service_account(username)
        if account is None:
            raise AuthError(f"{username!r} is not a ServiceAccount")
        extra = user.get("extra") or {}
        pod_name = (extra.get(_POD_NAME) or [""])[0]
        pod_uid = (extra.get(_POD_UID) or [""])[0]
        if not pod_name or not pod_uid:
            raise AuthError(f"{username}: the token must be bound to a pod (a projected token)")
        namespace, name = account
        try:
            pod = await self.api.pod(namespace, pod_name)
        except Exception as exc:
            log.warning("cannot read the subscriber's pod", extra={"error": type(exc).__name__})
            raise AuthError(
                "cannot read the token's pod now; retry", unauthenticated=True
            ) from None
        meta = (pod or {}).get("metadata") or {}
        if pod is None or meta.get("uid") != pod_uid:
            raise AuthError(f"pod {namespace}/{pod_name} of the token does not exist")
        node = str(((pod.get("spec") or {}).get("nodeName")) or "")
        if f"{namespace}:{name}" in self.node_agent_accounts:
            if not node:
                raise AuthError(f"node agent pod {namespace}/{pod_name} is not on a node")
            return Peer(
                distribution_pb2.CLIENT_KIND_NODE_AGENT,
                node,
                username,
                namespace=namespace,
                pod=pod_name,
                node=node,
            )
        server = str((meta.get("labels") or {}).get(MCP_SERVER_LABEL) or "")
        if not server:
            raise AuthError(
                f"pod {namespace}/{pod_name} is neither a node agent nor an MCP server"
                f" (no {MCP_SERVER_LABEL} label)"
            )
        return Peer(
            distribution_pb2.CLIENT_KIND_SIDECAR,
            pod_uid,
            username,
            namespace=namespace,
            pod=pod_name,
            node=node,
            server=server,
        )
