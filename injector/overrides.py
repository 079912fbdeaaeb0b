"""Per-server sidecar configuration by pod annotation (pure), as Istio's
``sidecar.istio.io/*`` and the Vault injector's ``vault.hashicorp.com/*``.

Two MCP servers in one namespace can differ in what their sidecars do: the
quarantine of tool output, the resources the sidecar gets, and where the upstream
credential comes from (a Secret, a Vault/OpenBao KV path, or per-agent
ServiceAccount tokens, :mod:`injector.choices`). Every value is checked here; a bad
one refuses the pod with a message naming the annotation (:class:`Unacceptable`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from injector import quantity
from injector.choices import ANNOTATION_UPSTREAM_CREDENTIAL, Unacceptable
from injector.settings import SidecarSettings

ANNOTATION_QUARANTINE = "palisade.dev/quarantine"
QUARANTINE_MODES = ("kubernetes", "off")
ANNOTATION_CPU_REQUEST = "palisade.dev/sidecar-cpu-request"
ANNOTATION_CPU_LIMIT = "palisade.dev/sidecar-cpu-limit"
ANNOTATION_MEMORY_REQUEST = "palisade.dev/sidecar-memory-request"
ANNOTATION_MEMORY_LIMIT = "palisade.dev/sidecar-memory-limit"
ANNOTATION_CREDENTIAL_SECRET = "palisade.dev/upstream-credential-secret"  # noqa: S105 - a name
ANNOTATION_CREDENTIAL_HEADER = "palisade.dev/upstream-credential-header"
ANNOTATION_VAULT_SECRET = "palisade.dev/vault-secret"  # noqa: S105 - a name
ANNOTATION_VAULT_ROLE = "palisade.dev/vault-role"
ANNOTATION_VAULT_ADDR = "palisade.dev/vault-addr"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
_VAULT_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+#[A-Za-z0-9_.-]+$")
_VAULT_ROLE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class VaultSecret:
    addr: str
    mount: str
    path: str
    field: str
    role: str


@dataclass(frozen=True)
class Overrides:
    """What a pod's annotations change in its sidecar; the defaults change nothing."""

    quarantine: str = ""
    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    credential_secret: tuple[str, str] | None = None
    """(Secret name, key) mounted into the sidecar only."""
    credential_header: str = ""
    vault: VaultSecret | None = None


def _text(annotations: Mapping[str, Any], key: str) -> str | None:
    raw = annotations.get(key)
    return None if raw is None else str(raw).strip()


def _quantity(annotations: Mapping[str, Any], key: str) -> str:
    value = _text(annotations, key)
    if value is None:
        return ""
    amount = quantity.parse(value)
    if amount is None or amount <= 0:
        raise Unacceptable(
            f"annotation {key} is {value!r}, not a positive quantity (e.g. 100m, 128Mi)"
        )
    return value


def _at_most(request: str, limit: str, what: str, keys: tuple[str, str]) -> None:
    low, high = quantity.parse(request), quantity.parse(limit)
    if low is not None and high is not None and low > high:
        raise Unacceptable(
            f"the sidecar's {what} request {request} is above its limit {limit}"
            f" (annotations {keys[0]} / {keys[1]})"
        )


def _secret(annotations: Mapping[str, Any]) -> tuple[str, str] | None:
    value = _text(annotations, ANNOTATION_CREDENTIAL_SECRET)
    if value is None:
        return None
    name, sep, key = value.partition("/")
    if not sep or not _DNS_SUBDOMAIN.match(name) or not _SECRET_KEY.match(key):
        raise Unacceptable(
            f"annotation {ANNOTATION_CREDENTIAL_SECRET} is {value!r}; give NAME/KEY of a"
            " Secret in the pod's namespace (e.g. github-mcp-token/token)"
        )
    return name, key


def _vault(annotations: Mapping[str, Any]) -> VaultSecret | None:
    path = _text(annotations, ANNOTATION_VAULT_SECRET)
    if path is None:
        for key in (ANNOTATION_VAULT_ROLE, ANNOTATION_VAULT_ADDR):
            if key in annotations:
                raise Unacceptable(f"annotation {key} needs {ANNOTATION_VAULT_SECRET}")
        return None
    if not _VAULT_PATH.match(path):
        raise Unacceptable(
            f"annotation {ANNOTATION_VAULT_SECRET} is {path!r}; give MOUNT/PATH#FIELD of a"
            " KV v2 secret (e.g. secret/mcp/github#token)"
        )
    role = _text(annotations, ANNOTATION_VAULT_ROLE) or ""
    if not _VAULT_ROLE.match(role):
        raise Unacceptable(
            f"annotation {ANNOTATION_VAULT_SECRET} needs {ANNOTATION_VAULT_ROLE}: the Kubernetes"
            " auth role the sidecar logs in with (its pod's ServiceAccount token)"
        )
    addr = _text(annotations, ANNOTATION_VAULT_ADDR) or ""
    if not re.match(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$", addr):
        raise Unacceptable(
            f"annotation {ANNOTATION_VAULT_ADDR} is {addr!r}; give the Vault/OpenBao URL"
            " (e.g. https://openbao.vault.svc:8200)"
        )
    where, _, field = path.partition("#")
    mount, _, secret_path = where.partition("/")
    return VaultSecret(addr.rstrip("/"), mount, secret_path, field, role)


def overrides(
    annotations: Mapping[str, Any], sidecar: SidecarSettings, *, required: bool
) -> tuple[Overrides, list[str]]:
    """The pod's overrides and the warnings to give; raises :class:`Unacceptable`.

    ``required``: the namespace is ``palisade.dev/inject=required``, where a pod may not
    turn a protection off (``palisade.dev/quarantine: off`` is refused there).
    """
    warnings: list[str] = []
    mode = _text(annotations, ANNOTATION_QUARANTINE)
    if mode is not None and mode not in QUARANTINE_MODES:
        raise Unacceptable(
            f"annotation {ANNOTATION_QUARANTINE} is {mode!r}; use one of"
            f" {', '.join(QUARANTINE_MODES)}"
        )
    if mode == "off":
        if required:
            raise Unacceptable(
                f"annotation {ANNOTATION_QUARANTINE}: off is not allowed in a namespace labelled"
                " palisade.dev/inject=required: tool output must be quarantined there"
            )
        warnings.append(
            f"{ANNOTATION_QUARANTINE}: off: this server's tool output reaches agents"
            " unquarantined (text in it can steer them)"
        )
    cpu_req = _quantity(annotations, ANNOTATION_CPU_REQUEST)
    cpu_lim = _quantity(annotations, ANNOTATION_CPU_LIMIT)
    mem_req = _quantity(annotations, ANNOTATION_MEMORY_REQUEST)
    mem_lim = _quantity(annotations, ANNOTATION_MEMORY_LIMIT)
    _at_most(cpu_req or sidecar.cpu_request, cpu_lim or sidecar.cpu_limit, "cpu",
             (ANNOTATION_CPU_REQUEST, ANNOTATION_CPU_LIMIT))  # fmt: skip
    _at_most(mem_req or sidecar.memory_request, mem_lim or sidecar.memory_limit, "memory",
             (ANNOTATION_MEMORY_REQUEST, ANNOTATION_MEMORY_LIMIT))  # fmt: skip
    secret, vault = _secret(annotations), _vault(annotations)
    sources = [
        key
        for key, given in (
            (ANNOTATION_UPSTREAM_CREDENTIAL, ANNOTATION_UPSTREAM_CREDENTIAL in annotations),
            (ANNOTATION_CREDENTIAL_SECRET, secret is not None),
            (ANNOTATION_VAULT_SECRET, vault is not None),
        )
        if given
    ]
    if len(sources) > 1:
        raise Unacceptable(
            f"annotations {' and '.join(sources)} both name the upstream credential; keep one"
        )
    header = _text(annotations, ANNOTATION_CREDENTIAL_HEADER)
    if header is not None:
        if not _HEADER.match(header):
            raise Unacceptable(
                f"annotation {ANNOTATION_CREDENTIAL_HEADER} is {header!r}, not an HTTP header name"
            )
        if secret is None and vault is None:
            raise Unacceptable(
                f"annotation {ANNOTATION_CREDENTIAL_HEADER} needs {ANNOTATION_CREDENTIAL_SECRET}"
                f" or {ANNOTATION_VAULT_SECRET}"
            )
    found = Overrides(
        quarantine=mode or "",
        cpu_request=cpu_req,
        cpu_limit=cpu_lim,
        memory_request=mem_req,
        memory_limit=mem_lim,
        credential_secret=secret,
        credential_header=header or "",
        vault=vault,
    )
    return found, warnings
