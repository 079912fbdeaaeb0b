"""Kubernetes ServiceAccount tokens verified by the API server (TokenReview).

``POST /apis/authentication.k8s.io/v1/tokenreviews`` with the token and this
server's audience: the API server checks signature, expiry, that the token is
bound to a live pod (bound tokens) and that it was minted for our audience. We
additionally check that the answer names our audience and a ServiceAccount user.
Successful reviews are cached briefly by a SHA-256 of the token (never the token
itself) so a busy sidecar does not call the API server on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from sidecar.identity.mapping import SA_PREFIX
from sidecar.identity.verified import TokenRejected, VerifiedToken, VerifierUnavailable

log = logging.getLogger(__name__)

TOKENREVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
ISSUER = "kubernetes"


class TokenReviewer:
    """Verifies tokens by asking the Kubernetes API server."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_server: str,
        audience: str | Sequence[str],
        credential: Callable[[], str],
        ca_file: str = "",
        timeout_s: float = 5.0,
        cache_ttl_s: float = 10.0,
        cache_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._url = api_server.rstrip("/") + TOKENREVIEW_PATH
        self._audiences = [audience] if isinstance(audience, str) else list(audience)
        self._credential = credential
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_file) if ca_file else True
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ttl = cache_ttl_s
        self._size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, VerifiedToken]] = OrderedDict()
        #: Number of reviews sent to the API server (for tests and metrics).
        self.reviews = 0

    async def verify(self, token: str) -> VerifiedToken:
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self._cache.get(digest)
        if hit is not None and self._clock() < hit[0]:
            return hit[1]
        status = await self._review(token)
        verified = self._judge(status)
        self._cache[digest] = (self._clock() + self._ttl, verified)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return verified

    async def _review(self, token: str) -> dict[str, Any]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": self._audiences},
        }
        credential = await asyncio.to_thread(self._credential)
        headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
        try:
            async with self._session.post(
                self._url,
                data=json.dumps(body),
                headers=headers,
                ssl=self._ssl,
                timeout=self._timeout,
            ) as resp:
                if resp.status >= 300:
                    log.warning("tokenreview refused", extra={"status": resp.status})
                    raise VerifierUnavailable(
                        "the Kubernetes API server could not review the token"
                    )
                answer = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("tokenreview failed", extra={"error": type(exc).__name__})
            raise VerifierUnavailable("the Kubernetes API server is unreachable") from None
        self.reviews += 1
        status = answer.get("status") if isinstance(answer, dict) else None
        return status if isinstance(status, dict) else {}

    def _judge(self, status: dict[str, Any]) -> VerifiedToken:
        if not status.get("authenticated"):
            raise TokenRejected("the Kubernetes API server did not accept the token")
        audiences = status.get("audiences")
        if not isinstance(audiences, list) or not set(self._audiences).intersection(audiences):
            raise TokenRejected("the token was not issued for this server (audience)")
        user = status.get("user")
        user = user if isinstance(user, dict) else {}
        username = str(user.get("username", ""))
        if not username.startswith(SA_PREFIX):
            raise TokenRejected("the token is not a ServiceAccount token")
        extra = user.get("extra")
        pods = (
            extra.get("authentication.kubernetes.io/pod-name") if isinstance(extra, dict) else None
        )
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": username,
            "aud": [a for a in audiences if a in self._audiences],
            "uid": str(user.get("uid", "")),
            "pod": str(pods[0]) if isinstance(pods, list) and pods else "",
        }
        return VerifiedToken(claims=claims, cluster=True)


def file_credential(path: str) -> Callable[[], str]:
    """The sidecar's own projected token, re-read each time (kubelet rotates it)."""

    def read() -> str:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()

    return read
