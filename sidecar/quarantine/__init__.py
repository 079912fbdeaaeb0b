"""Output quarantine (dual-LLM) and secret redaction for tool results.

The privileged agent never receives the raw text of a tool marked
``untrustedOutput``: the sidecar keeps it under an opaque handle and returns
only facts that pass a strict schema (see docs/quarantine.md). Every result,
trusted or not, has its secrets redacted.

Public surface: :class:`OutputGuard` (what the proxy calls),
:class:`QuarantineStore`, the :class:`Extractor` Protocol with
:class:`KubernetesExtractor` and :class:`LLMExtractor`, :func:`validate` and
:func:`redact_result`.
"""

from sidecar.quarantine.extract import Extractor, ExtractorError, KubernetesExtractor
from sidecar.quarantine.facts import FACTS_JSON_SCHEMA, Validated, validate
from sidecar.quarantine.guard import QUARANTINE_META_KEY, REDACTED_META_KEY, OutputGuard
from sidecar.quarantine.llm import LLMExtractor
from sidecar.quarantine.redact import redact_result, scrub
from sidecar.quarantine.store import HandleRefused, QuarantineStore

__all__ = [
    "FACTS_JSON_SCHEMA",
    "QUARANTINE_META_KEY",
    "REDACTED_META_KEY",
    "Extractor",
    "ExtractorError",
    "HandleRefused",
    "KubernetesExtractor",
    "LLMExtractor",
    "OutputGuard",
    "QuarantineStore",
    "Validated",
    "redact_result",
    "scrub",
    "validate",
]
