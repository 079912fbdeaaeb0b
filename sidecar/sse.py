"""Server-Sent Events, incrementally: split a byte stream into events without buffering it.

Pure code. :class:`EventSplitter` takes chunks as they arrive and yields each
complete event's raw bytes (terminator included), so untouched events are sent on
byte for byte and only events the proxy must inspect are parsed
(:func:`parse_event`) and re-encoded (:func:`encode_event`). Only the current,
incomplete event is held, bounded by ``max_event_bytes``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

#: A blank line ends an event: two line ends in a row, each CRLF, LF or CR.
_BOUNDARY = re.compile(rb"\r\n\r\n|\r\n\n|\n\r\n|\n\n|\r\r")
_LINE = re.compile(r"\r\n|\r|\n")


class EventTooLarge(ValueError):
    """One SSE event grew beyond the configured bound before it ended."""


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed SSE event (comments dropped)."""

    data: str
    event: str = ""
    id: str | None = None
    retry: int | None = None


class EventSplitter:
    """Cuts a byte stream into complete SSE events (raw bytes, terminator included)."""

    def __init__(self, max_event_bytes: int) -> None:
        self._buf = b""
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        start = 0
        while True:
            m = _BOUNDARY.search(buf, start)
            if m is None:
                break
            yield buf[start : m.end()]
            start = m.end()
        self._buf = buf[start:]
        if len(self._buf) > self._max:
            raise EventTooLarge(f"an SSE event exceeded {self._max} bytes")

    def rest(self) -> bytes:
        """Bytes of an incomplete final event (never inspected, so never forwarded)."""
        rest, self._buf = self._buf, b""
        return rest


def parse_event(raw: bytes) -> Event | None:
    """Parse one raw event; ``None`` when it carries no data field (comment, retry only)."""
    data: list[str] = []
    event = ""
    eid: str | None = None
    retry: int | None = None
    seen_data = False
    # Only CRLF, LF and CR end lines in SSE (str.splitlines would also cut at \x1c..\x1e)
    for line in _LINE.split(raw.decode("utf-8", errors="replace")):
        if not line or line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
            seen_data = True
        elif name == "event":
            event = value
        elif name == "id":
            eid = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
    if not seen_data:
        return None
    return Event(data="\n".join(data), event=event, id=eid, retry=retry)


def encode_event(ev: Event) -> bytes:
    """Encode an event; data containing newlines becomes several ``data:`` lines."""
    out: list[str] = []
    if ev.event:
        out.append(f"event: {ev.event}")
    if ev.id is not None:
        out.append(f"id: {ev.id}")
    if ev.retry is not None:
        out.append(f"retry: {ev.retry}")
    out.extend(f"data: {line}" for line in ev.data.split("\n"))
    return ("\n".join(out) + "\n\n").encode("utf-8", errors="replace")
