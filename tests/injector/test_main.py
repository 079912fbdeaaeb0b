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
    container = patched["spec"]["initContainers"][0]
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
