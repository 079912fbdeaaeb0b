"""Server-Sent Events, incrementally, exactly as the WHATWG HTML standard interprets them.

Pure code. :class:`EventSplitter` takes chunks as they arrive and yields each
complete event block's raw bytes (up to and including the blank line that ends
it); :func:`parse_block` reads one block as a browser's ``EventSource`` would.
The proxy never forwards a block's raw bytes: it forwards what it parsed,
re-encoded by :func:`encode_event` (LF line ends, ``data: `` with its space, no
BOM, no comments), so a client that splits or reads the stream in its own way
still sees only what the proxy inspected. Only the current, incomplete block is
held, bounded by ``max_event_bytes``.

The standard's rules this follows (section "Interpreting an event stream"):

- lines end with CRLF, a lone LF or a lone CR, in any mix; a CR at the end of a
  chunk may be the first half of a CRLF, so an LF right after it ends nothing;
- one U+FEFF BOM at the very start of the stream is skipped (and only there);
- a line starting with ``:`` is a comment; a line without ``:`` is a field with an
  empty value; one space after the colon is dropped, no more;
- ``data`` lines join with LF; an event is dispatched at a blank line only when a
  ``data`` field was seen; its type is ``message`` unless ``event`` said otherwise;
- ``id`` containing U+0000 is ignored; ``retry`` counts only when ASCII digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_EOL = re.compile(rb"[\r\n]")
_LINE = re.compile(r"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_DIGITS = re.compile(r"[0-9]+\Z")


class EventTooLarge(ValueError):
    """One SSE event grew beyond the configured bound before it ended."""


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed SSE event (comments dropped); ``event`` ``""`` means ``message``."""

    data: str
    event: str = ""
    id: str | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class Block:
    """One block of lines up to a blank line: what it dispatches and what it sets."""

    #: The event it dispatches (a ``data`` field was seen), else None.
    event: Event | None
    #: ``id`` and ``retry`` set by the block even when nothing is dispatched.
    id: str | None = None
    retry: int | None = None
    #: The block carried a comment (a keep-alive).
    comment: bool = False


class EventSplitter:
    """Cuts a byte stream into complete SSE blocks (raw bytes, terminator included)."""

    def __init__(self, max_event_bytes: int) -> None:
        self._buf = b""
        self._max = max_event_bytes
        #: Where scanning resumes, and where the current line starts, in ``_buf``.
        self._scan = 0
        self._line = 0
        #: The last line end seen was a CR: an LF right after it belongs to it.
        self._after_cr = False
        #: Bytes at the start of the stream not yet known to be (or not be) a BOM.
        self._start: bytes | None = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if self._start is not None:
            head = self._start + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._start = head
                return
            self._start = None
            chunk = head[len(_BOM) :] if head.startswith(_BOM) else head
        buf = self._buf + chunk if self._buf else chunk
        scan, line, block = self._scan, self._line, 0
        while True:
            m = _EOL.search(buf, scan)
            if m is None:
                break
            i = m.start()
            scan = i + 1
            if buf[i] == 0x0A and self._after_cr and i == line:
                # the LF of a CRLF whose CR ended the previous line
                self._after_cr = False
                line = scan
                continue
            self._after_cr = buf[i] == 0x0D
            empty = i == line
            line = scan
            if empty and i > block:
                yield buf[block:scan]
                block = scan
            elif empty:
                block = scan  # a blank line with nothing before it dispatches nothing
        # a CR that ended a blank line at the end of a yielded block: a following LF
        # is part of it; keep the state so the next chunk's LF is skipped
        self._buf = buf[block:]
        self._scan = scan - block
        self._line = line - block
        if len(self._buf) > self._max:
            raise EventTooLarge(f"an SSE event exceeded {self._max} bytes")

    def rest(self) -> bytes:
        """Bytes of an incomplete final block (never inspected, so never forwarded)."""
        rest = self._buf
        self._buf, self._scan, self._line = b"", 0, 0
        # the LF of a CRLF that ended the last block is no event
        return rest if rest.strip(b"\r\n") else b""


def parse_block(raw: bytes) -> Block:
    """Read one block (as :class:`EventSplitter` yields it) as the standard says."""
    data: list[str] = []
    event = ""
    eid: str | None = None
    retry: int | None = None
    comment = False
    seen_data = False
    # Only CRLF, LF and CR end lines in SSE (str.splitlines would also cut at \x1c..\x1e)
    for line in _LINE.split(raw.decode("utf-8", errors="replace")):
        if not line:
            continue
        if line.startswith(":"):
            comment = True
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
            if "\x00" not in value:
                eid = value
        elif name == "retry" and _DIGITS.match(value):
            retry = int(value)
    ev = Event("\n".join(data), event, eid, retry) if seen_data else None
    return Block(ev, eid, retry, comment)


def parse_event(raw: bytes) -> Event | None:
    """Parse one raw event; ``None`` when it carries no data field (comment, retry only)."""
    return parse_block(raw).event


def encode_event(ev: Event) -> bytes:
    """Encode an event; data containing newlines becomes several ``data:`` lines."""
    out: list[str] = []
    if ev.event:
        out.append(f"event: {_one_line(ev.event)}")
    if ev.id is not None:
        out.append(f"id: {_one_line(ev.id)}")
    if ev.retry is not None:
        out.append(f"retry: {ev.retry}")
    out.extend(f"data: {line}" for line in _LINE.split(ev.data))
    return ("\n".join(out) + "\n\n").encode("utf-8", errors="replace")


def encode_block(block: Block) -> bytes:
    """What a block that dispatches nothing still tells a client: its id, its retry,
    or (a comment only) a bare keep-alive."""
    out: list[str] = []
    if block.id is not None:
        out.append(f"id: {_one_line(block.id)}")
    if block.retry is not None:
        out.append(f"retry: {block.retry}")
    if not out:
        return b":\n\n" if block.comment else b""
    return ("\n".join(out) + "\n\n").encode("utf-8", errors="replace")


def _one_line(value: str) -> str:
    # values parsed from a stream hold no line ends; ones built here must not either
    return _LINE.sub(" ", value)
