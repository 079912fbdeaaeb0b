"""Per-server configuration by pod annotation: quarantine, sidecar resources, the
upstream credential from a Secret or a Vault/OpenBao path. Bad values are refused at
admission naming the annotation; good ones give a command line the real sidecar takes."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from injector import admission
from injector.review import decode_patch
from injector.settings import InjectionSettings
from tests.injector.pods import ENABLED, REQUIRED, apply_patch, container, pod, review

SETTINGS = InjectionSettings(native_sidecar="never")


def answer(annotations: dict[str, str], ns: dict[str, str] = ENABLED) -> dict[str, Any]:
    obj = pod(annotations=annotations)
    obj["spec"]["automountServiceAccountToken"] = False
    return dict(admission.serve(review(obj), dict(ns), SETTINGS)["response"])


def injected(annotations: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the patched pod, its sidecar container)."""
    obj = pod(container("app", ("mcp", 8080)), annotations=annotations)
    obj["spec"]["automountServiceAccountToken"] = False
    got = admission.serve(review(obj), dict(ENABLED), SETTINGS)
    assert got["response"]["allowed"], got["response"].get("status")
    patched = apply_patch(obj, decode_patch(got))
    (side,) = [c for c in patched["spec"]["containers"] if c["name"] == "palisade-sidecar"]
    return patched, side


def refused(annotations: dict[str, str], ns: dict[str, str] = ENABLED) -> str:
    got = answer(annotations, ns)
    assert got["allowed"] is False, "the pod must be refused"
    return str(got["status"]["message"])


def sidecar_namespace(args: list[str]) -> argparse.Namespace:
    sidecar_main = pytest.importorskip("sidecar.main")
    parser = argparse.ArgumentParser()
    sidecar_main.register(parser)
    return parser.parse_args(args[1:])


def test_quarantine_off_is_passed_on_with_a_warning_and_refused_where_required() -> None:
    _, side = injected({"palisade.dev/quarantine": "off"})
    assert sidecar_namespace(side["args"]).quarantine == "off"
    warned = answer({"palisade.dev/quarantine": "off"})
    assert any("unquarantined" in w for w in warned.get("warnings", []))
    message = refused({"palisade.dev/quarantine": "off"}, REQUIRED)
    assert "palisade.dev/quarantine" in message and "required" in message
    assert "palisade.dev/quarantine" in refused({"palisade.dev/quarantine": "maybe"})


def test_sidecar_resources_come_from_the_annotations_and_are_checked() -> None:
    _, side = injected(
        {
            "palisade.dev/sidecar-cpu-request": "200m",
            "palisade.dev/sidecar-memory-limit": "512Mi",
        }
    )
    assert side["resources"]["requests"]["cpu"] == "200m"
    assert side["resources"]["limits"]["memory"] == "512Mi"
    assert side["resources"]["limits"]["cpu"] == SETTINGS.sidecar.cpu_limit
    bad = refused({"palisade.dev/sidecar-memory-request": "lots"})
    assert "palisade.dev/sidecar-memory-request" in bad and "quantity" in bad
    over = refused({"palisade.dev/sidecar-cpu-request": "4", "palisade.dev/sidecar-cpu-limit": "2"})
    assert "above its limit" in over and "palisade.dev/sidecar-cpu-limit" in over


def test_a_credential_secret_is_mounted_into_the_sidecar_only() -> None:
    patched, side = injected(
        {
            "palisade.dev/upstream-credential-secret": "github-mcp/token",
            "palisade.dev/upstream-credential-header": "X-API-Key",
        }
    )
    (volume,) = [
        v for v in patched["spec"]["volumes"] if v["name"] == "palisade-upstream-credential"
    ]
    assert volume["secret"]["secretName"] == "github-mcp"
    assert volume["secret"]["items"] == [{"key": "token", "path": "credential"}]
    app = patched["spec"]["containers"][0]
    assert all(m["name"] != "palisade-upstream-credential" for m in app.get("volumeMounts", []))
    ns = sidecar_namespace(side["args"])
    assert ns.upstream_credential_file == "/var/run/secrets/palisade.dev/upstream/credential"
    assert (ns.upstream_credential_header, ns.upstream_credential_scheme) == ("X-API-Key", "")
    mounts = {m["mountPath"]: m for m in side["volumeMounts"]}
    assert mounts["/var/run/secrets/palisade.dev/upstream"]["readOnly"] is True


def test_a_vault_path_gives_the_sidecar_its_vault_flags() -> None:
    _, side = injected(
        {
            "palisade.dev/vault-secret": "secret/mcp/github#token",
            "palisade.dev/vault-role": "github-mcp",
            "palisade.dev/vault-addr": "https://openbao.vault.svc:8200",
        }
    )
    ns = sidecar_namespace(side["args"])
    assert ns.vault_addr == "https://openbao.vault.svc:8200"
    assert (ns.vault_kv_mount, ns.vault_secret_path, ns.vault_secret_field) == (
        "secret",
        "mcp/github",
        "token",
    )
    assert ns.vault_role == "github-mcp"
    assert ns.vault_sa_token_file == "/var/run/secrets/palisade.dev/kube-api/token"
    sidecar_main = pytest.importorskip("sidecar.main")
    assert type(sidecar_main.credentials_from(ns)).__name__ == "VaultCredential"


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        ({"palisade.dev/upstream-credential-secret": "no-key"}, "upstream-credential-secret"),
        ({"palisade.dev/upstream-credential-secret": "Bad_Name/k"}, "upstream-credential-secret"),
        ({"palisade.dev/vault-secret": "secret/x#f"}, "palisade.dev/vault-role"),
        ({"palisade.dev/vault-secret": "nopath", "palisade.dev/vault-role": "r"}, "vault-secret"),
        (
            {"palisade.dev/vault-secret": "s/p#f", "palisade.dev/vault-role": "r",
             "palisade.dev/vault-addr": "ftp://x"},
            "palisade.dev/vault-addr",
        ),
        ({"palisade.dev/vault-role": "r"}, "palisade.dev/vault-role"),
        ({"palisade.dev/upstream-credential-header": "X-Key"}, "upstream-credential-header"),
        ({"palisade.dev/upstream-credential-header": "bad header",
          "palisade.dev/upstream-credential-secret": "s/k"}, "upstream-credential-header"),
        (
            {"palisade.dev/upstream-credential-secret": "s/k",
             "palisade.dev/upstream-credential": "kube-token-request"},
            "keep one",
        ),
    ],
)  # fmt: skip
def test_bad_credential_annotations_are_refused_naming_the_annotation(
    annotations: dict[str, str], named: str
) -> None:
    assert named in refused(annotations)
