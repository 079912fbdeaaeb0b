"""grpc.aio server wiring: PolicyService + health + reflection on a Unix socket and/or TCP."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from palisade.service.servicer import PolicyServicer
from palisade.v1 import policy_pb2

SERVICE_NAME: str = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name


@dataclass(frozen=True, slots=True)
class ServerSettings:
    #: Unix socket path to listen on ("" for none).
    socket_path: str = ""
    #: Optional TCP address, loopback only (e.g. ``127.0.0.1:7070``).
    tcp: str = ""
    #: File mode of the socket: owner and group may connect.
    socket_mode: int = 0o660
    #: Largest request accepted by gRPC itself (the servicer bounds arguments tighter).
    max_message_bytes: int = 4 * 2**20


class ServerError(RuntimeError):
    """The server cannot listen as configured."""


def _check_tcp(addr: str) -> None:
    host, _, port = addr.rpartition(":")
    if host not in ("127.0.0.1", "[::1]", "localhost") or not port.isdigit():
        raise ServerError(f"--tcp must be a loopback host:port (127.0.0.1:PORT), not {addr!r}")


def _clear_stale_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ServerError(f"{path} exists and is not a socket; refusing to replace it")
        path.unlink()


async def start_server(
    servicer: PolicyServicer, settings: ServerSettings
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """Start serving; returns the server, its health servicer and the TCP port (0 if none)."""
    if not settings.socket_path and not settings.tcp:
        raise ServerError("nothing to listen on: give a socket path or a TCP address")
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    # Registered by hand (not add_PolicyServiceServicer_to_server) so the servicer
    # receives raw bytes and can answer and audit undecodable requests itself.
    check = grpc.unary_unary_rpc_method_handler(
        servicer.check_bytes,
        request_deserializer=None,
        response_serializer=policy_pb2.CheckResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Check": check}),)
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = 0
    if settings.socket_path:
        path = Path(settings.socket_path)
        _clear_stale_socket(path)
        server.add_insecure_port(f"unix:{path}")
    if settings.tcp:
        _check_tcp(settings.tcp)
        port = server.add_insecure_port(settings.tcp)
        if port == 0:
            raise ServerError(f"cannot listen on {settings.tcp}")
    await server.start()
    if settings.socket_path:
        os.chmod(settings.socket_path, settings.socket_mode)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port


async def stop_server(
    server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, grace_s: float
) -> None:
    """Report NOT_SERVING, let in-flight calls finish for ``grace_s``, then stop."""
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_s)
