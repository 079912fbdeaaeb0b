"""Logging set-up for the daemons: one JSON object per line, structured fields, no secrets.

Modules log with ``logging.getLogger(__name__)`` and pass fields through
``extra={"agent": ..., "decision": ...}``; the formatter puts every extra field
into the JSON object. A field whose name marks it secret (the audit
redactor's rules: ``token``, ``password``, ``authorization``...) is written as
``[REDACTED]``, and so is any value that looks like a credential, so a
careless ``extra`` cannot leak one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from palisade.audit.redact import REDACTED, Redactor, scrub_text

_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)
_REDACTOR = Redactor()


def _field(name: str, value: Any) -> Any:
    if _REDACTOR.is_secret_name(name):
        return REDACTED
    if isinstance(value, str | int | float | bool) or value is None:
        return _REDACTOR.redact(value)
    if isinstance(value, dict | list | tuple):
        return _REDACTOR.redact(value)
    return _REDACTOR.redact(str(value))


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "msg", <extra fields>..., "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub_text(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = _field(key, value)
        if record.exc_info:
            doc["exc"] = scrub_text(self.formatException(record.exc_info))
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Route the root logger to ``stream`` (stderr) as JSON lines at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
