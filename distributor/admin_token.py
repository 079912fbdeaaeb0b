"""The HTTP API's admin token kept in a Secret that the chart creates empty.

Nothing in a rendered manifest changes between renders (``helm template``, Argo CD):
the chart creates the Secret with no data, and the first replica to start writes a
random token under the key ``token`` (an update with the ``resourceVersion`` it read,
so replicas racing end with one token). Every replica then uses what the Secret holds.
Neither ``helm upgrade`` nor a GitOps sync touches data the manifest never set.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("palisade.distributor.admin_token")

TOKEN_KEY = "token"  # noqa: S105 (the key name, not a token)
FIELD_MANAGER = "palisade-distributor"
#: bytes of randomness in a generated token (urlsafe base64: 64 characters)
TOKEN_BYTES = 48


def token_in(data: Mapping[str, str] | None) -> str:
    """The token a Secret's ``data`` holds, or "" when it holds none (base64-decoded, stripped)."""
    raw = (data or {}).get(TOKEN_KEY, "")
    if not raw:
        return ""
    return base64.b64decode(raw).decode("utf-8", "strict").strip()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


async def ensure_admin_token(
    api_client: Any,
    namespace: str,
    name: str,
    *,
    generate: Callable[[], str] = new_token,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    attempts: int = 30,
) -> str:
    """The token in Secret ``namespace/name``, after writing a generated one if it held none.

    A missing Secret or a refused read is retried with backoff, then raised: the
    distributor does not start without the token it was told to use (fail closed).
    """
    core: Any = client.CoreV1Api(api_client)
    delay = 0.5
    last = ""
    for _ in range(attempts):
        try:
            obj = await core.read_namespaced_secret(name, namespace)
            token = token_in(obj.data)
            if token:
                return token
            obj.data = {
                **(obj.data or {}),
                TOKEN_KEY: base64.b64encode(generate().encode()).decode(),
            }
            await core.replace_namespaced_secret(name, namespace, obj, field_manager=FIELD_MANAGER)
            log.info("wrote a new admin token into Secret %s/%s", namespace, name)
            continue  # read it back: the token every replica uses is the one stored
        except ApiException as exc:
            if exc.status == 409:
                continue  # another replica wrote first; read its token
            last = f"HTTP {exc.status} {exc.reason}"
        except (TimeoutError, OSError, ValueError) as exc:
            last = type(exc).__name__
        log.warning("admin-token Secret %s/%s not usable yet (%s)", namespace, name, last)
        await sleep(delay)
        delay = min(delay * 2, 10.0)
    raise RuntimeError(f"admin-token Secret {namespace}/{name}: {last or 'no token written'}")
