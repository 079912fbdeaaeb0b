"""The entry point: flags and environment become Settings; the injected command line
is one the real ``palisade sidecar`` accepts."""

from __future__ import annotations

import argparse

import pytest

from injector import admission
from injector.kube import native_sidecars_supported
from injector.main import register, settings_from
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from tests.injector.pods import ENABLED, apply_patch, pod, review


def parse(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser, env or {})
    return parser.parse_args(argv)


def test_defaults_match_the_documented_ones() -> None:
    s = settings_from(parse([]))
    assert (s.server.host, s.server.port) == ("0.0.0.0", 8443)
    assert s.tls.mode == "self-signed"
    assert s.tls.webhook_config == "palisade-injector"
    assert s.injection.native_sidecar == "auto"
    assert s.injection.sidecar.port == 9400
    assert s.injection.sidecar.port_name == "mcp"
    assert s.kubeconfig is None


def test_environment_sets_defaults_and_flags_win() -> None:
    env = {
        "PALISADE_INJECTOR_LISTEN": "127.0.0.1:9443",
        "PALISADE_NATIVE_SIDECAR": "never",
        "PALISADE_SIDECAR_IMAGE": "registry.local/palisade:1.2",
        "PALISADE_INJECTOR_EXTRA_SANS": "127.0.0.1,injector.example",
        "PALISADE_SIDECAR_EXTRA_ARGS": "--bundle '/etc/palisade/bundle.yaml'",
        "POD_NAMESPACE": "governance",
        "PALISADE_INJECTOR_TLS_MODE": "mounted",
    }
    s = settings_from(parse(["--native-sidecar", "always"], env))
    assert (s.server.host, s.server.port) == ("127.0.0.1", 9443)
    assert s.injection.native_sidecar == "always"
    assert s.injection.own_namespace == "governance"
    assert s.injection.sidecar.image == "registry.local/palisade:1.2"
    assert s.injection.sidecar.extra_args == ("--bundle", "/etc/palisade/bundle.yaml")
    assert s.tls.extra_sans == ("127.0.0.1", "injector.example")
    assert s.tls.mode == "mounted"


def test_a_bad_listen_address_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="host:port"):
        settings_from(parse(["--listen", "nonsense"]))


def test_a_bad_native_mode_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse(["--native-sidecar", "sometimes"])


@pytest.mark.parametrize(
    ("major", "minor", "supported"),
    [
        ("1", "29", True),
        ("1", "36", True),
        ("1", "30+", True),
        ("1", "28", False),
        ("1", "", False),
        ("", "29", False),
        ("2", "0", True),
    ],
)
def test_native_sidecars_from_the_api_server_version(
    major: str, minor: str, supported: bool
) -> None:
    assert native_sidecars_supported(major, minor) is supported


def test_the_injected_command_line_is_accepted_by_the_real_sidecar() -> None:
    sidecar_main = pytest.importorskip("sidecar.main")
    settings = InjectionSettings(
        native_sidecar="always", sidecar=SidecarSettings(extra_args=("--log-level", "debug"))
    )
    answer = admission.serve(review(pod()), ENABLED, settings)
    patched = apply_patch(pod(), decode_patch(answer))
    (container,) = [c for c in patched["spec"]["initContainers"] if c["name"] == "palisade-sidecar"]
    assert container["command"] == ["palisade"]
    args = container["args"]
    assert args[0] == "sidecar"
    parser = argparse.ArgumentParser()
    sidecar_main.register(parser)
    ns = parser.parse_args(args[1:])
    s = sidecar_main.settings_from(ns)
    assert s.listen_port == 9400
    assert s.upstream == "http://127.0.0.1:8080"
    assert s.server_name == "kubernetes-mcp"
    assert str(s.check_socket) == "/var/run/palisade/check.sock"
    assert str(s.state_dir) == "/var/lib/palisade/bundles"
    assert str(s.audit_dir) == "/var/lib/palisade/audit"
    # Identity by default: the cluster's OIDC keys, the issuer discovered, this server's
    # audience only; never development mode.
    identity = sidecar_main.identity_from(ns, s)
    assert identity.dev_mode is False
    assert identity.audiences == ("palisade.dev/mcp/payments/kubernetes-mcp",)
    (issuer,) = identity.issuers
    assert issuer.cluster and issuer.issuer == ""
    assert issuer.discover_from == "https://kubernetes.default.svc/.well-known/openid-configuration"
    assert issuer.jwks_uri == "https://kubernetes.default.svc/openid/v1/jwks"
    assert issuer.fetch_token_file == "/var/run/secrets/palisade.dev/kube-api/token"
    assert issuer.ca_file == "/var/run/secrets/palisade.dev/kube-api/ca.crt"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/var/run/secrets/palisade.dev/kube-api"] == "palisade-kube-api"


def test_token_review_mode_gives_the_sidecar_the_token_review_api() -> None:
    sidecar_main = pytest.importorskip("sidecar.main")
    settings = InjectionSettings(
        native_sidecar="always", sidecar=SidecarSettings(identity="token-review")
    )
    patched = apply_patch(pod(), decode_patch(admission.serve(review(pod()), ENABLED, settings)))
    (container,) = [c for c in patched["spec"]["initContainers"] if c["name"] == "palisade-sidecar"]
    parser = argparse.ArgumentParser()
    sidecar_main.register(parser)
    ns = parser.parse_args(container["args"][1:])
    identity = sidecar_main.identity_from(ns, sidecar_main.settings_from(ns))
    assert identity.issuers == ()
    assert identity.token_review is not None
    assert identity.token_review.api_server == "https://kubernetes.default.svc"
    assert identity.token_review.token_file == "/var/run/secrets/palisade.dev/kube-api/token"


def test_new_flags_and_their_environment() -> None:
    env = {
        "PALISADE_SIDECAR_IDENTITY": "token-review",
        "PALISADE_SIDECAR_AUDIENCE_TEMPLATE": "https://{server}.{namespace}.mcp.example",
        "PALISADE_POD_FIREWALL": "disabled",
        "PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP": "palisade-distributor-keys",
        "PALISADE_DISTRIBUTOR": "palisade-distributor.palisade:7070",
    }
    s = settings_from(parse([], env))
    sidecar = s.injection.sidecar
    assert sidecar.identity == "token-review"
    assert sidecar.audience_template == "https://{server}.{namespace}.mcp.example"
    assert sidecar.pod_firewall is False
    assert sidecar.trusted_keys == ()  # a distributor without keys is fine: they come later
    assert (s.keys.configmap, s.keys.key) == ("palisade-distributor-keys", "keys.pem")
    s = settings_from(parse(["--pod-firewall", "enabled", "--sidecar-identity", "none"], env))
    assert s.injection.sidecar.pod_firewall is True
    assert s.injection.sidecar.identity == "none"


def test_the_defaults_protect_the_pod_and_verify_cluster_tokens() -> None:
    sidecar = settings_from(parse([])).injection.sidecar
    assert sidecar.identity == "cluster-oidc"
    assert sidecar.pod_firewall is True
    assert sidecar.audience_template == "palisade.dev/mcp/{namespace}/{server}"


@pytest.mark.parametrize(
    "template", ["{namespace}/{pod}", "", "{server} {namespace}", "{0}", "a,{server}"]
)
def test_a_bad_audience_template_stops_the_injector(template: str) -> None:
    with pytest.raises(SystemExit, match="audience-template"):
        settings_from(parse(["--sidecar-audience-template", template]))


def test_a_distributor_without_any_key_source_still_stops_the_injector() -> None:
    with pytest.raises(SystemExit, match="--sidecar-trusted-keys-configmap"):
        settings_from(parse(["--distributor", "d:7070"]))
