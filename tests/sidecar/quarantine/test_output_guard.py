"""The output guard: what a tools/call result becomes (no network: deterministic extractor)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.quarantine.extract import ExtractorError
from sidecar.quarantine.guard import (
    QUARANTINE_META_KEY,
    QUARANTINED_OUTPUT_SCHEMA,
    REDACTED_META_KEY,
    UNTRUSTED_META_KEY,
    WITHHELD_LOG_DATA,
    WITHHELD_META_KEY,
    OutputGuard,
)
from sidecar.quarantine.store import HandleRefused, QuarantineStore

from .samples import DESCRIBE, FORBIDDEN, INJECTION, POD_LOG

SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"


def text_result(text: str, **extra: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": False, **extra}


def assert_no_injection(out: dict[str, Any]) -> None:
    shown = json.dumps(out)
    for word in FORBIDDEN:
        assert word.lower() not in shown.lower(), word


class TestQuarantine:
    async def test_the_agent_gets_facts_and_a_handle_never_the_injected_text(self) -> None:
        guard = OutputGuard()
        upstream = text_result(
            DESCRIBE,
            structuredContent={"result": DESCRIBE},
            _meta={"note": INJECTION},
        )
        out = await guard.rewrite(upstream, untrusted=True, scope="sre\x00s1", tool="pods_get")
        assert_no_injection(out)
        sc = out["structuredContent"]
        assert sc["handle"] == "$VAR1"
        assert sc["facts"]["pods"][0] == {
            "name": "$POD1", "namespace": "$NS1", "status": "OOMKilled", "restarts": 17
        }  # fmt: skip
        assert sc["facts"]["images"] == ["$IMAGE1"]
        assert guard.handles.resolve("sre\x00s1", "$POD1") == "payments-api-7d9f8b6c5-x2x9k"
        assert guard.handles.resolve("sre\x00s1", "$IMAGE1") == (
            "registry.example.com:5000/payments/api:2.3.1"
        )
        assert {"type": "CrashLoopBackOff", "count": 1} in sc["facts"]["errors"]
        text = out["content"][0]["text"]
        assert text == sc["result"]
        assert "$VAR1" in text and "CrashLoopBackOff" in text and "$NS1/$POD1" in text
        assert out["_meta"][UNTRUSTED_META_KEY] is True
        assert out["_meta"][QUARANTINE_META_KEY] == {
            "handle": "$VAR1",
            "extractor": "kubernetes",
            "droppedItems": 0,
            "droppedContent": 0,
            "redacted": 0,
            "bytes": len(DESCRIBE.encode()),
            "truncated": False,
        }
        assert "note" not in out["_meta"]

    async def test_the_raw_text_stays_in_the_store_for_its_session_only(self) -> None:
        store = QuarantineStore()
        guard = OutputGuard(store=store)
        await guard.rewrite(text_result(POD_LOG), untrusted=True, scope="sre\x00s1", tool="l")
        assert store.get("sre\x00s1", "$VAR1").text == POD_LOG
        with pytest.raises(HandleRefused):
            store.get("sre\x00s2", "$VAR1")

    async def test_secrets_are_redacted_before_the_raw_text_is_stored(self) -> None:
        store = QuarantineStore()
        guard = OutputGuard(store=store)
        out = await guard.rewrite(
            text_result(f"{POD_LOG}token: {SA_TOKEN}\n"), untrusted=True, scope="s", tool="l"
        )
        assert SA_TOKEN not in store.get("s", "$VAR1").text
        assert out["_meta"][QUARANTINE_META_KEY]["redacted"] == 1

    async def test_images_and_other_non_text_content_are_dropped_and_counted(self) -> None:
        guard = OutputGuard()
        upstream = {
            "content": [
                {"type": "text", "text": POD_LOG},
                {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
                {"type": "resource_link", "uri": "https://evil.example/x", "name": INJECTION},
            ],
            "isError": True,
        }
        out = await guard.rewrite(upstream, untrusted=True, scope="s", tool="pods_log")
        assert_no_injection(out)
        assert [c["type"] for c in out["content"]] == ["text"]
        assert out["_meta"][QUARANTINE_META_KEY]["droppedContent"] == 2
        assert out["isError"] is True

    async def test_structured_only_output_is_read_as_json(self) -> None:
        guard = OutputGuard()
        upstream = {"content": [], "structuredContent": {"log": POD_LOG}}
        out = await guard.rewrite(upstream, untrusted=True, scope="s", tool="pods_log")
        assert_no_injection(out)
        assert out["structuredContent"]["facts"]["exitCodes"] == [2]

    async def test_without_an_extractor_untrusted_output_is_only_marked(self) -> None:
        guard = OutputGuard(extractor=None)
        out = await guard.rewrite(text_result(POD_LOG), untrusted=True, scope="s", tool="l")
        assert out["content"][0]["text"] == POD_LOG
        assert out["_meta"] == {UNTRUSTED_META_KEY: True}
        assert guard.watches(untrusted=False)  # redaction still watches every call


class BrokenExtractor:
    name = "broken"

    async def extract(self, text: str, *, tool: str) -> Any:
        raise RuntimeError(f"bug while reading {text[:20]}")


class TestFailingClosed:
    async def test_an_unexpected_failure_withholds_the_output(self) -> None:
        guard = OutputGuard(extractor=BrokenExtractor(), fallback=BrokenExtractor())
        out = await guard.rewrite(text_result(POD_LOG), untrusted=True, scope="s", tool="pods_log")
        assert out["isError"] is True
        assert out["content"] == [
            {
                "type": "text",
                "text": "Palisade withheld the output of pods_log: it could not be inspected.",
            }
        ]
        assert out["_meta"][WITHHELD_META_KEY] is True
        assert_no_injection(out)

    async def test_a_failing_model_extractor_error_falls_back_not_withholds(self) -> None:
        class Failing:
            name = "llm"

            async def extract(self, text: str, *, tool: str) -> Any:
                raise ExtractorError("model endpoint answered HTTP 503")

        out = await OutputGuard(extractor=Failing()).rewrite(
            text_result(POD_LOG), untrusted=True, scope="s", tool="pods_log"
        )
        assert out["_meta"][QUARANTINE_META_KEY]["extractor"] == "kubernetes"
        assert out["_meta"][QUARANTINE_META_KEY]["extractorError"] == (
            "model endpoint answered HTTP 503"
        )


class TestErrors:
    def test_a_secret_in_an_upstream_error_is_redacted_and_the_code_kept(self) -> None:
        doc = {
            "jsonrpc": "2.0",
            "id": 3,
            "error": {
                "code": -32603,
                "message": "connect failed: postgres://app:pw@db DB_PASSWORD=hunter2",
                "data": {"token": SA_TOKEN},
            },
        }
        out = OutputGuard().rewrite_error(doc)
        assert out["error"]["code"] == -32603
        assert "hunter2" not in json.dumps(out) and SA_TOKEN not in json.dumps(out)
        assert out["error"]["message"].endswith("DB_PASSWORD=[REDACTED]")

    def test_a_clean_error_passes_as_the_same_object(self) -> None:
        doc = {"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "Unknown tool"}}
        assert OutputGuard().rewrite_error(doc) is doc
        assert OutputGuard(redact=False).rewrite_error(doc) is doc


class TestNotifications:
    def test_progress_loses_its_message_and_a_log_its_data(self) -> None:
        guard = OutputGuard()
        progress = {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": 1, "progress": 1, "total": 2, "message": INJECTION},
        }
        log = {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "info", "logger": "pods", "data": INJECTION},
        }
        assert guard.quarantine_notification(progress)["params"] == {
            "progressToken": 1,
            "progress": 1,
            "total": 2,
        }
        assert guard.quarantine_notification(log)["params"] == {
            "level": "info",
            "data": WITHHELD_LOG_DATA,
        }
        other = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        assert guard.quarantine_notification(other) is other


class TestToolsList:
    def test_quarantined_tools_get_the_quarantine_output_schema(self) -> None:
        listed = {
            "tools": [
                {"name": "pods_log", "inputSchema": {}, "outputSchema": {"type": "object"}},
                {"name": "pods_list", "inputSchema": {}, "outputSchema": {"type": "object"}},
            ]
        }
        out = OutputGuard().list_result(listed, lambda name: name == "pods_log")
        assert out["tools"][0]["outputSchema"] == QUARANTINED_OUTPUT_SCHEMA
        assert out["tools"][1]["outputSchema"] == {"type": "object"}
        assert listed["tools"][0]["outputSchema"] == {"type": "object"}, "input unchanged"

    def test_without_quarantine_tools_list_is_left_alone(self) -> None:
        listed = {"tools": [{"name": "pods_log", "inputSchema": {}}]}
        assert OutputGuard(extractor=None).list_result(listed, lambda _: True) is listed


class TestRedactionOfTrustedResults:
    async def test_a_secret_in_a_normal_result_is_redacted_and_counted(self) -> None:
        guard = OutputGuard()
        out = await guard.rewrite(
            text_result(f"token: {SA_TOKEN}"), untrusted=False, scope="s", tool="t"
        )
        assert out["content"][0]["text"] == "token: [REDACTED]"
        assert out["_meta"] == {REDACTED_META_KEY: 1}

    async def test_a_clean_result_is_passed_as_the_same_object(self) -> None:
        guard = OutputGuard()
        result = text_result("payments/payments-api-0  Running")
        assert await guard.rewrite(result, untrusted=False, scope="s", tool="t") is result

    async def test_with_redaction_off_only_untrusted_calls_are_watched(self) -> None:
        guard = OutputGuard(redact=False)
        assert guard.watches(untrusted=True) and not guard.watches(untrusted=False)
        result = text_result(f"token: {SA_TOKEN}")
        assert await guard.rewrite(result, untrusted=False, scope="s", tool="t") is result


def test_the_public_surface_is_pinned() -> None:
    import sidecar.quarantine as q

    assert sorted(q.__all__) == sorted(
        [
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
    )
    assert all(hasattr(q, name) for name in q.__all__)


class TestResourcesAndPrompts:
    def test_clean_content_passes_unchanged(self) -> None:
        doc = {
            "jsonrpc": "2.0",
            "id": 4,
            "result": {"contents": [{"uri": "k8s://a", "text": "ok"}]},
        }
        assert OutputGuard().redact_content(doc) is doc

    def test_content_that_cannot_be_inspected_is_withheld(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(value: Any) -> Any:
            raise RecursionError("nested too deep")

        monkeypatch.setattr("sidecar.quarantine.guard.redact_value", broken)
        doc = {"jsonrpc": "2.0", "id": 4, "result": {"contents": [{"text": f"token: {SA_TOKEN}"}]}}
        out = OutputGuard().redact_content(doc)
        assert out["id"] == 4 and "result" not in out
        assert out["error"]["message"] == "the result could not be inspected; withheld"
        assert SA_TOKEN not in json.dumps(out)
