"""Who this sidecar is in the fleet (its ``Hello``), and the keys it trusts.

Pure apart from reading key files.
"""

from __future__ import annotations

import importlib.metadata
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from palisade.bundle.signing import load_public_key
from palisade.distribution import TrustedKeys
from palisade.v1 import distribution_pb2
from sidecar.settings import DistributorSettings


def default_client_id(d: Mapping[str, str], server: str, port: int) -> str:
    """The pod UID when the injector set it, else namespace/pod, else host:port/server."""
    if d.get("pod_uid"):
        return d["pod_uid"]
    if d.get("pod"):
        return f"{d.get('namespace') or 'default'}/{d['pod']}"
    return f"{socket.gethostname()}:{port}/{server}"


def _version() -> str:
    try:
        return importlib.metadata.version("palisade")
    except importlib.metadata.PackageNotFoundError:
        return ""


def identity_of(settings: DistributorSettings, server: str) -> distribution_pb2.ClientIdentity:
    """The identity this sidecar names in its ``Hello``; the distributor scopes by ``server``."""
    return distribution_pb2.ClientIdentity(
        kind=distribution_pb2.CLIENT_KIND_SIDECAR,
        id=settings.client_id,
        node=settings.node,
        namespace=settings.namespace,
        pod=settings.pod,
        tenant=settings.tenant,
        server=server,
        version=_version(),
    )


def key_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a directory (a mounted Secret) stands for its ``*.pem`` files."""
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob("*.pem")) if p.is_dir() else [p])
    return out


def load_trusted(specs: Iterable[str]) -> TrustedKeys:
    """The trusted bundle keys from files, directories of ``*.pem``, or inline PEM text
    (a public key is no secret: a pod may carry it in ``PALISADE_TRUSTED_KEY``).

    Raises ``ValueError`` naming the file, never echoing what it holds.
    """
    keys: list[Ed25519PublicKey] = []
    for spec in specs:
        if spec.lstrip().startswith("-----BEGIN"):
            try:
                keys.append(load_public_key(spec.strip().encode() + b"\n"))
            except Exception as exc:
                raise ValueError(
                    f"an inline trusted key is unusable: {type(exc).__name__}"
                ) from None
            continue
        for f in key_files([Path(spec)]):
            try:
                keys.append(load_public_key(f))
            except Exception as exc:
                raise ValueError(f"cannot load trusted key {f}: {type(exc).__name__}") from None
    if not keys:
        raise ValueError("no trusted key: give --trusted-key PEM (a file, a directory of *.pem)")
    return TrustedKeys(keys)
