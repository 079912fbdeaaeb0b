"""The pure parts of reaching the distributor through the cluster: choices and the wire format."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from palisade.cli.kube_target import (
    DiscoveryError,
    SecretRef,
    admin_secret,
    choose,
    target_port,
    token_from_secret,
)
from palisade.cli.portforward import ChannelDecoder, encode_data


def service(name: str = "d", target: Any = "http") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": "d"},
            "ports": [
                {"name": "grpc", "port": 1},
                {"name": "http", "port": 80, "targetPort": target},
            ],
        },
    }


def pod(name: str, ready: bool = True, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}],
            **spec,
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_the_first_ready_pod_by_name_and_the_named_port_are_chosen() -> None:
    t = choose([service()], [pod("c"), pod("a", ready=False), pod("b")], "ns")
    assert (t.pod, t.port, t.service) == ("b", 8080, "d")


def test_a_numeric_target_port_is_taken_as_is() -> None:
    assert target_port(service(target=9402), pod("a")) == 9402
    assert target_port(service(target="9402"), pod("a")) == 9402


def test_no_ready_pod_and_no_http_service_are_said_plainly() -> None:
    with pytest.raises(DiscoveryError, match="no ready distributor pod"):
        choose([service()], [pod("a", ready=False)], "ns")
    grpc_only = service()
    grpc_only["spec"]["ports"] = [{"name": "grpc", "port": 1}]
    with pytest.raises(DiscoveryError, match="no distributor Service in namespace 'ns'"):
        choose([grpc_only], [pod("a")], "ns")
    with pytest.raises(DiscoveryError, match="no container port named 'web'"):
        choose([service(target="web")], [pod("a")], "ns")


def _mounted(args: list[str], items: list[dict[str, str]] | None = None) -> dict[str, Any]:
    secret: dict[str, Any] = {"secretName": "admin-s"}
    if items:
        secret["items"] = items
    p = pod("a", volumes=[{"name": "v", "secret": secret}])
    p["spec"]["containers"][0].update(
        args=args, volumeMounts=[{"name": "v", "mountPath": "/etc/admin/"}]
    )
    return p


def test_the_admin_secret_is_the_one_mounted_for_the_admin_token_file() -> None:
    assert admin_secret(_mounted(["--admin-token-file=/etc/admin/token"])) == SecretRef(
        "admin-s", "token"
    )
    assert admin_secret(
        _mounted(["--admin-token-file", "/etc/admin/t"], [{"key": "the-token", "path": "t"}])
    ) == SecretRef("admin-s", "the-token")
    assert admin_secret(_mounted(["--other"])) is None
    assert admin_secret(_mounted(["--admin-token-file=/elsewhere/token"])) is None


def test_a_token_is_decoded_and_a_missing_key_named_without_any_value() -> None:
    secret = {"data": {"token": base64.b64encode(b"s3cret\n").decode()}}
    assert token_from_secret(secret, SecretRef("x", "token")) == "s3cret"
    with pytest.raises(DiscoveryError) as exc:
        token_from_secret(secret, SecretRef("x", "other"))
    assert "s3cret" not in str(exc.value) and "'other'" in str(exc.value)


def _header(channel: int, port: int) -> bytes:
    return bytes([channel]) + struct.pack("<H", port)


def test_the_port_headers_are_not_data_and_errors_come_on_channel_1() -> None:
    d = ChannelDecoder(8080)
    assert d.feed(_header(0, 8080)) == (b"", "")
    assert d.feed(_header(1, 8080)) == (b"", "")
    assert d.feed(b"\x00HTTP/1.1 200 OK\r\n") == (b"HTTP/1.1 200 OK\r\n", "")
    assert d.feed(b"\x00" + struct.pack("<H", 8080)) == (struct.pack("<H", 8080), ""), "only once"
    assert d.feed(b"\x01connection refused") == (b"", "connection refused")


def test_a_header_and_data_in_one_message_and_a_wrong_port() -> None:
    assert ChannelDecoder(80).feed(_header(0, 80) + b"abc") == (b"abc", "")
    _, error = ChannelDecoder(80).feed(_header(0, 81))
    assert "opened port 81, not 80" in error
    assert encode_data(b"GET /") == b"\x00GET /"
