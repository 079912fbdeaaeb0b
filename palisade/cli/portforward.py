"""Port-forward to a pod through the API server, as ``kubectl port-forward`` does.

:class:`PortForward` listens on ``127.0.0.1`` (a free port) in a background
thread; each connection made to it opens one WebSocket to the API server's
``pods/NAME/portforward?ports=PORT`` (subprotocol ``v4.channel.k8s.io``, the
user's own kubeconfig credentials) and the bytes are carried both ways. The
API server hands the stream to the pod's kubelet, so the user needs ``create``
on ``pods/portforward`` in that namespace, and nothing else is opened.

The wire format, one binary WebSocket message at a time: the first byte is
the channel, the rest its data. For the one port asked, channel 0 carries the
data and channel 1 the kubelet's error text; the first message on each
channel is the port number (2 bytes, little-endian), not data.
:class:`ChannelDecoder` reads that format and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration

log = logging.getLogger(__name__)

DATA_CHANNEL = 0
ERROR_CHANNEL = 1
START_TIMEOUT_S = 15.0


class PortForwardError(Exception):
    """The tunnel could not be opened; the message says why (no credential in it)."""


@dataclass
class ChannelDecoder:
    """Splits port-forward WebSocket messages into data and error text, one port."""

    port: int
    _headers_seen: set[int] = field(default_factory=set)

    def feed(self, message: bytes) -> tuple[bytes, str]:
        """``(data for the local socket, error text)`` carried by one message."""
        if not message:
            return b"", ""
        channel, payload = message[0], message[1:]
        if channel not in self._headers_seen:
            self._headers_seen.add(channel)
            if len(payload) < 2:
                return b"", f"port-forward: short header on channel {channel}"
            (port,) = struct.unpack("<H", payload[:2])
            if port != self.port:
                return b"", f"port-forward: the kubelet opened port {port}, not {self.port}"
            payload = payload[2:]
        if channel == DATA_CHANNEL:
            return payload, ""
        if channel == ERROR_CHANNEL:
            return b"", payload.decode(errors="replace").strip()
        return b"", ""


def encode_data(data: bytes) -> bytes:
    """One message carrying ``data`` to the pod's port."""
    return bytes([DATA_CHANNEL]) + data


class PortForward:
    """``with PortForward(cfg, ns, pod, port) as url:`` — ``url`` reaches the pod's port."""

    def __init__(self, configuration: Configuration, namespace: str, pod: str, port: int) -> None:
        self.configuration = configuration
        self.namespace = namespace
        self.pod = pod
        self.port = port
        self.local_port = 0
        self.errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._client: Any = None

    def __enter__(self) -> str:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            self.local_port = future.result(timeout=START_TIMEOUT_S)
        except Exception as exc:
            self.close()
            raise PortForwardError(f"cannot listen for the port-forward: {exc}") from None
        return f"http://127.0.0.1:{self.local_port}"

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _start(self) -> int:
        from kubernetes_asyncio.stream import WsApiClient

        self._client = WsApiClient(configuration=self.configuration)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._client is not None:
            await self._client.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=5)
        except Exception:
            log.debug("port-forward did not close cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from kubernetes_asyncio.client import CoreV1Api

        try:
            api: Any = CoreV1Api(self._client)  # with _preload_content=False: a ws context
            ctx = await api.connect_get_namespaced_pod_portforward(
                self.pod, self.namespace, ports=self.port, _preload_content=False
            )
            async with ctx as ws:
                await self._pump(reader, writer, ws)
        except Exception as exc:
            status = getattr(exc, "status", None)
            self.errors.append(
                f"port-forward to pod {self.namespace}/{self.pod}:{self.port} failed"
                + (f": HTTP {status}" if status else f": {type(exc).__name__}: {exc}")
            )
        finally:
            writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: Any
    ) -> None:
        from aiohttp import WSMsgType

        decoder = ChannelDecoder(self.port)

        async def up() -> None:
            while data := await reader.read(65536):
                await ws.send_bytes(encode_data(data))

        async def down() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    break
                data, error = decoder.feed(bytes(msg.data))
                if error:
                    self.errors.append(error)
                    break
                if data:
                    writer.write(data)
                    await writer.drain()

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                self.errors.append(f"port-forward stream ended: {task.exception()}")
        await ws.close()
