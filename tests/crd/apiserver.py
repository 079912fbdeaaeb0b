"""The generated CRD installed on the session's real kube-apiserver, and small request helpers."""

from __future__ import annotations

import copy
import time
from typing import Any

from palisade.bundle.openapi import CRD_NAME, CRD_PATH, GROUP, PLURAL, VERSION
from tests.crd.corpus import ROOT
from tests.harness import ControlPlane


def install_crd(kube: ControlPlane) -> None:
    """Apply the committed CRD (replacing any older copy) and wait until it is served."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / CRD_PATH))
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    # The OpenAPI document (what kubectl explain reads) is published a moment later.
    deadline = time.monotonic() + 60
    while kube.kubectl("explain", "policybundle.spec", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError("the PolicyBundle schema never appeared in /openapi/v3")
        time.sleep(0.5)


def base_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


def as_resource(doc: dict[str, Any], namespace: str, name: str = "") -> dict[str, Any]:
    """A bundle document as a resource to create: name, labels, spec (server fields dropped)."""
    meta = doc.get("metadata") or {}
    metadata: dict[str, Any] = {"name": name or meta.get("name", ""), "namespace": namespace}
    if meta.get("labels"):
        metadata["labels"] = dict(meta["labels"])
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PolicyBundle",
        "metadata": metadata,
        "spec": copy.deepcopy(doc.get("spec")),
    }
