"""Logs are JSON lines with structured fields, and secrets never reach them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from palisade.runtime.logs import setup_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("debug", stream=buf)
    yield buf
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_a_log_line_is_json_with_its_extra_fields(stream: io.StringIO) -> None:
    logging.getLogger("palisade.x").info(
        "decided", extra={"agent": "sre", "decision": "allow", "revision": 7}
    )
    doc = json.loads(stream.getvalue())
    assert doc["msg"] == "decided" and doc["level"] == "info" and doc["logger"] == "palisade.x"
    assert (doc["agent"], doc["decision"], doc["revision"]) == ("sre", "allow", 7)
    assert doc["time"].endswith("Z")


def test_secret_fields_and_secret_looking_values_are_redacted(stream: io.StringIO) -> None:
    logging.getLogger("palisade.x").warning(
        "upstream said Bearer abc.def.ghi",
        extra={
            "token": "t0ps3cret",
            "headers": {"Authorization": "Bearer xyz", "accept": "json"},
            "note": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        },
    )
    line = stream.getvalue()
    assert "t0ps3cret" not in line and "xyz" not in line and "eyJhbGci" not in line
    doc = json.loads(line)
    assert doc["token"] == "[REDACTED]"
    assert doc["headers"] == {"Authorization": "[REDACTED]", "accept": "json"}
    assert doc["msg"] == "upstream said [REDACTED]"


def test_exceptions_are_kept_as_text(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        logging.getLogger("palisade.x").exception("failed")
    assert "ValueError: bad thing" in json.loads(stream.getvalue())["exc"]
