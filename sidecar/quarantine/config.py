"""The sidecar flags of the output guard, and the guard they build.

:func:`register` adds the flags to ``palisade sidecar``'s parser (defaults from
the ``PALISADE_*`` environment through the ``env`` getter :mod:`sidecar.main`
passes in, so only ``main`` reads the environment); :func:`guard_from` builds
the :class:`~sidecar.quarantine.guard.OutputGuard`. Defaults: quarantine with
the deterministic Kubernetes extractor, and redaction of every result, on.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.quarantine.extract import Extractor, KubernetesExtractor
from sidecar.quarantine.guard import OutputGuard
from sidecar.quarantine.llm import LLMExtractor
from sidecar.quarantine.store import QuarantineStore

EXTRACTORS = ("kubernetes", "llm", "off")


def register(parser: argparse.ArgumentParser, env: Callable[[str, Any], Any]) -> None:
    a = parser.add_argument
    a(
        "--quarantine",
        choices=EXTRACTORS,
        default=env("quarantine", "kubernetes"),
        help="extractor for untrustedOutput tools: facts + handle, never the raw text",
    )
    a(
        "--quarantine-llm-url",
        default=env("quarantine-llm-url", ""),
        help="OpenAI-compatible base URL",
    )
    a("--quarantine-llm-model", default=env("quarantine-llm-model", ""))
    a("--quarantine-llm-key-file", default=env("quarantine-llm-key-file", ""), help="API key file")
    a("--quarantine-llm-timeout", type=float, default=float(env("quarantine-llm-timeout", 30.0)))
    a("--quarantine-ttl", type=float, default=float(env("quarantine-ttl", 900.0)), help="seconds")
    a(
        "--quarantine-max-bytes",
        type=int,
        default=int(env("quarantine-max-bytes", 32 * 2**20)),
        help="raw output kept in memory, all sessions together",
    )
    a(
        "--quarantine-max-entry-bytes",
        type=int,
        default=int(env("quarantine-max-entry-bytes", 2**20)),
    )
    a(
        "--no-redact-outputs",
        action="store_true",
        default=env("no-redact-outputs", "") == "1",
        help="do not redact secrets in tool results (not recommended)",
    )


def guard_from(ns: argparse.Namespace) -> OutputGuard:
    """The output guard the flags select; bad settings exit with a clear message."""
    extractor: Extractor | None = None
    if ns.quarantine == "kubernetes":
        extractor = KubernetesExtractor()
    elif ns.quarantine == "llm":
        if not ns.quarantine_llm_url or not ns.quarantine_llm_model:
            raise SystemExit(
                "palisade sidecar: --quarantine llm needs --quarantine-llm-url and "
                "--quarantine-llm-model"
            )
        key = ""
        if ns.quarantine_llm_key_file:
            try:
                key = Path(ns.quarantine_llm_key_file).read_text().strip()
            except OSError as exc:
                raise SystemExit(
                    f"palisade sidecar: cannot read --quarantine-llm-key-file: {exc.strerror}"
                ) from None
        extractor = LLMExtractor(
            ns.quarantine_llm_url,
            ns.quarantine_llm_model,
            api_key=key,
            timeout_s=ns.quarantine_llm_timeout,
        )
    try:
        store = QuarantineStore(
            ttl_s=ns.quarantine_ttl,
            max_entry_bytes=ns.quarantine_max_entry_bytes,
            max_total_bytes=ns.quarantine_max_bytes,
        )
    except ValueError as exc:
        raise SystemExit(f"palisade sidecar: bad quarantine settings: {exc}") from None
    return OutputGuard(store=store, extractor=extractor, redact=not ns.no_redact_outputs)
