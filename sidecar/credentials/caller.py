"""Who the current upstream request is for, so a per-agent credential can be chosen.

The proxy calls :class:`sidecar.upstream.Upstream` from many places (the call
itself, the version probe, cancellations, GET streams, DELETE); none of them
passes the caller. Instead :class:`CallerBinding`, wrapped around the
authenticator, binds the verified :class:`~sidecar.identity.Principal` to the
request's context each time a request is authenticated, and a per-agent source
(:class:`~sidecar.credentials.kube_token.KubeTokenCredential`) reads it with
:func:`current`. A context variable follows the request's task and is copied
into the tasks it starts (a cancellation sent later still names its caller).

The binding is cleared before every authentication, so a failed one leaves no
earlier caller bound; a request that was not authenticated has no caller, and a
per-agent source then refuses (fails closed).

The binding also names, in the principal's ``upstream_identity``, who the
upstream will act as; the decision's audit record carries it
(``details.upstream_identity``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sidecar.identity.principal import Authenticator, Principal

_CALLER: ContextVar[Principal | None] = ContextVar("palisade_upstream_caller", default=None)


def current() -> Principal | None:
    """The principal the current upstream request is made for, if any."""
    return _CALLER.get()


@contextmanager
def calling_as(principal: Principal | None) -> Iterator[None]:
    """Bind ``principal`` for the block (tests, and callers outside a request)."""
    token = _CALLER.set(principal)
    try:
        yield
    finally:
        _CALLER.reset(token)


class CallerBinding:
    """An :class:`~sidecar.identity.principal.Authenticator` that binds its result.

    ``identity_of(agent)`` names the identity the upstream credential for that
    agent carries (None: it gets none, or the source does not say).
    """

    def __init__(
        self,
        inner: Authenticator,
        identity_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.inner = inner
        self._identity_of = identity_of

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        _CALLER.set(None)
        principal = await self.inner.authenticate(headers)
        identity = self._identity_of(principal.agent) if self._identity_of else None
        if identity:
            principal = dataclasses.replace(principal, upstream_identity=identity)
        _CALLER.set(principal)
        return principal

    def protected_resource_metadata(self) -> dict[str, Any]:
        return self.inner.protected_resource_metadata()

    def __getattr__(self, name: str) -> Any:
        # anything else the proxy or a test reads from the wrapped authenticator
        return getattr(self.inner, name)
