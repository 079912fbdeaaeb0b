"""Extractors: untrusted text in, candidate facts out (validated afterwards, never trusted).

:class:`Extractor` is the one Protocol; :class:`KubernetesExtractor` is the
default, deterministic one (no model), and :mod:`sidecar.quarantine.llm` holds
the model-backed one. Both return *candidates*: :func:`~sidecar.quarantine.facts.validate`
decides what reaches the agent.

The deterministic parser reads Kubernetes-style text: container logs, ``kubectl
get pods``/``get events`` tables, ``kubectl describe`` output and the example
server's ``namespace/pod  STATUS`` lines. It takes identifiers only from
structural positions (a table column, a ``Name:`` field, ``pod/NAME``, a quoted
image in an event message), never from prose, so "delete the deployment
payments-api in namespace payments" written into a log yields no deploy or pod.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Final, Protocol

from sidecar.quarantine.facts import (
    ERROR_KINDS,
    EXCEPTION_CLASS,
    IMAGE_REF,
    NAMESPACE,
    OBJECT_NAME,
    POD_STATUSES,
)


class Extractor(Protocol):
    """Reads one untrusted text and proposes facts (a dict for :func:`validate`)."""

    #: Short name reported in ``_meta`` (``kubernetes``, ``llm``).
    name: str

    async def extract(self, text: str, *, tool: str) -> Any: ...


class ExtractorError(Exception):
    """The extractor could not produce candidates (the caller falls back; nothing leaks)."""


_TS: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})")
_KIND_WORDS: Final = re.compile(r"\b(" + "|".join(sorted(ERROR_KINDS - {"Error"})) + r")\b")
#: Generic error kinds, one named group each, matched on the lower-cased line.
_GENERIC: Final = re.compile(
    r"(?P<Panic>(?:^|\s)panic:)"
    r"|(?P<Fatal>\bfatal error:)"
    r"|(?P<ConnectionRefused>connection refused)"
    r"|(?P<ConnectionReset>connection reset by peer)"
    r"|(?P<DeadlineExceeded>context deadline exceeded)"
    r"|(?P<Timeout>i/o timeout|timed out)"
    r"|(?P<PermissionDenied>permission denied)"
    r"|(?P<SegmentationFault>segmentation (?:fault|violation)|sigsegv)"
)
#: Literals one of which every _GENERIC alternative contains (a cheap gate per line).
_GENERIC_GATES: Final = (
    "panic:", "fatal", "connection", "deadline", "time", "permission", "segmentation", "sigsegv",
)  # fmt: skip
_FATAL: Final = re.compile(r"\bFATAL\b")
_EXC: Final = re.compile(r"(?<![\w.])(" + EXCEPTION_CLASS.pattern + r")(?![\w])")
_EXIT: Final = re.compile(  # on the lower-cased line
    r"\bexit(?:ed|ing)?(?: with)? (?:code|status)[: ]\s*(\d{1,3})\b|\bexit code:\s*(\d{1,3})\b"
)
_NS_POD_LINE: Final = re.compile(r"^([a-z0-9][a-z0-9-]{0,62})/([a-z0-9][a-z0-9.-]{0,252})\s+(\S+)")
_OBJ_REF: Final = re.compile(
    r"(?<![\w/-])(pod|deployment|replicaset)/([a-z0-9][a-z0-9.-]{0,252})\b"
)
_QUOTED_IMAGE: Final = re.compile(r'\bimage "([^"\s]{1,255})"')
_FIELD: Final = re.compile(r"^\s*(Name|Namespace|Image|Restart Count|Reason|Status):\s+(\S+)\s*$")
_READY: Final = re.compile(r"\d{1,3}/\d{1,3}")
_SCALED: Final = re.compile(r"Scaled (?:up|down) replica set ([a-z0-9][a-z0-9.-]{0,252}) to \d+")
_RS_HASH: Final = re.compile(r"^(.+)-[a-z0-9]{5,10}$")
#: Phrases typical of prompt injection (on the lower-cased line); lines with them are
#: counted, never passed.
_INJECTION: Final = re.compile(
    r"ignore (?:all |any )?(?:previous|prior|above|earlier) (?:instructions|prompts?)"
    r"|disregard (?:all |any )?(?:previous|prior|above|earlier|your)"
    r"|you are now\b|new instructions|system prompt|\bas an ai\b|assistant:"
    r"|(?:call|use|invoke) the \w+ tool|do not tell the user"
)


def _number(word: str) -> bool:
    """ASCII digits only (``str.isdigit`` is true of ``²``, which ``int`` refuses)."""
    return 0 < len(word) <= 9 and word.isascii() and word.isdigit()


def _pod_status(word: str) -> str | None:
    return word if word in POD_STATUSES or word in ERROR_KINDS else None


class _Reader:
    """Accumulates candidate facts line by line."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.images: list[str] = []
        self.deploys: dict[str, dict[str, Any]] = {}
        self.exit_codes: list[int] = []
        self.stamps: list[str] = []
        self.lines = 0
        self.suspected = 0
        #: Lines the parser could not read (counted; they never stop the others).
        self.unreadable = 0
        self.table: list[str] | None = None
        self.describe_ns = ""
        self.describe_pod: dict[str, Any] | None = None

    def pod(self, name: str, namespace: str = "") -> dict[str, Any]:
        key = (namespace, name)
        if key not in self.pods:
            # a bare name seen before with a namespace (or after) is the same pod
            for (ns, n), rec in self.pods.items():
                if n == name and (not namespace or not ns):
                    if namespace and not ns:
                        rec["namespace"] = namespace
                    return rec
            self.pods[key] = {"name": name, **({"namespace": namespace} if namespace else {})}
        return self.pods[key]

    def image(self, ref: str) -> None:
        ref = ref.strip("\"',")
        if IMAGE_REF.fullmatch(ref) and ref not in self.images:
            self.images.append(ref)

    def read(self, line: str) -> None:
        self.lines += 1
        low = line.lower()
        if _INJECTION.search(low):
            self.suspected += 1
            return  # an injection line contributes nothing but its count
        if ":" in line:
            self.stamps.extend(_TS.findall(line))
        self.kinds(line, low)
        if "exit" in low:
            for m in _EXIT.finditer(low):
                code = int(m.group(1) or m.group(2))
                if code <= 255 and code not in self.exit_codes:
                    self.exit_codes.append(code)
        if self.tabular(line):
            return
        self.structural(line)

    def kinds(self, line: str, low: str) -> None:
        # each regex only where a literal it needs is present: most lines have none
        seen: set[str] = set(_KIND_WORDS.findall(line))
        if any(g in low for g in _GENERIC_GATES):
            seen.update(str(m.lastgroup) for m in _GENERIC.finditer(low))
        if "FATAL" in line and _FATAL.search(line):
            seen.add("Fatal")
        if "Error" in line or "Exception" in line or "Fault" in line:
            seen.update(m.group(1) for m in _EXC.finditer(line))
        for kind in seen:
            self.errors[kind] += 1

    def tabular(self, line: str) -> bool:
        """``kubectl get pods`` tables (with or without a NAMESPACE column)."""
        cols = line.split()
        if cols[:1] in (["NAME"], ["NAMESPACE"]) and "STATUS" in cols:
            self.table = cols
            return True
        if self.table is None:
            return False
        if not cols or len(cols) < len(self.table) - 1:
            self.table = None
            return False
        row = dict(zip(self.table, cols, strict=False))
        name = row.get("NAME", "")
        if not (
            OBJECT_NAME.fullmatch(name)
            and ("NAMESPACE" not in row or NAMESPACE.fullmatch(row["NAMESPACE"]))
            and ("READY" not in row or _READY.fullmatch(row["READY"]))
        ):
            self.table = None  # not a row: the table has ended
            return False
        rec = self.pod(name, row.get("NAMESPACE", ""))
        status = _pod_status(row.get("STATUS", ""))
        if status:
            rec["status"] = status
        restarts = row.get("RESTARTS", "")
        if _number(restarts):
            rec["restarts"] = int(restarts)
        return True

    def structural(self, line: str) -> None:
        m = _NS_POD_LINE.match(line) if "/" in line else None
        if m:
            rec = self.pod(m.group(2), m.group(1))
            status = _pod_status(m.group(3))
            if status:
                rec["status"] = status
        for kind, name in _OBJ_REF.findall(line) if "/" in line else ():
            if kind == "pod":
                self.pod(name)
            elif kind == "deployment":
                self.deploy(name)
        for name in _SCALED.findall(line) if "Scaled " in line else ():
            base = _RS_HASH.match(name)
            self.deploy(base.group(1) if base else name)
        for ref in _QUOTED_IMAGE.findall(line) if 'image "' in line else ():
            self.image(ref)
        f = _FIELD.match(line) if ":" in line else None
        if f:
            self.field(f.group(1), f.group(2))

    def deploy(self, name: str) -> None:
        rec = self.deploys.setdefault(name, {"name": name})
        if self.stamps and "at" not in rec:
            rec["at"] = self.stamps[-1]

    def field(self, key: str, value: str) -> None:
        """``kubectl describe pod`` fields (the first ``Name:`` names the pod)."""
        if key == "Name" and self.describe_pod is None and OBJECT_NAME.fullmatch(value):
            self.describe_pod = self.pod(value)
        elif key == "Namespace" and self.describe_pod is not None:
            self.describe_pod.setdefault("namespace", value)
        elif key == "Image":
            self.image(value)
        elif key == "Restart Count" and _number(value) and self.describe_pod is not None:
            self.describe_pod["restarts"] = int(value)
        elif key in ("Reason", "Status") and self.describe_pod is not None:
            status = _pod_status(value)
            if status and (key == "Reason" or "status" not in self.describe_pod):
                self.describe_pod["status"] = status

    def candidate(self) -> dict[str, Any]:
        ordered = sorted(self.stamps)
        return {
            "errors": [{"type": k, "count": n} for k, n in self.errors.most_common()],
            "pods": list(self.pods.values()),
            "images": self.images,
            "deploys": list(self.deploys.values()),
            "exitCodes": self.exit_codes,
            "window": {"first": ordered[0], "last": ordered[-1]} if ordered else {},
            "lines": self.lines,
            "suspectedInjectionLines": self.suspected,
        }


def extract_kubernetes(text: str) -> dict[str, Any]:
    """Candidate facts of Kubernetes-style text (pure; see the module docstring)."""
    reader = _Reader()
    for line in text.splitlines():
        if line.strip():
            try:
                reader.read(line)
            except Exception:  # one odd line must not cost every other line's facts
                reader.unreadable += 1
                reader.table = None
    return reader.candidate()


class KubernetesExtractor:
    """The default extractor: deterministic parsing, no model."""

    name = "kubernetes"

    async def extract(self, text: str, *, tool: str) -> Any:
        return extract_kubernetes(text)
