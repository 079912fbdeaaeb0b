"""The quarantined-model extractor against a real local chat-completions server.

No real model is exercised here: the server's answers are canned, including
those of a model that the untrusted text has talked round. What is tested is
the wire format and that nothing but schema-valid facts ever comes out.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from sidecar.quarantine.extract import ExtractorError
from sidecar.quarantine.facts import FACTS_JSON_SCHEMA
from sidecar.quarantine.guard import QUARANTINE_META_KEY, OutputGuard
from sidecar.quarantine.llm import LLMExtractor

from .model_server import ModelServer, completion, model_server
from .samples import FORBIDDEN, INJECTION, POD_LOG


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    async with model_server() as m:
        yield m


@pytest.fixture
async def extractor(model: ModelServer) -> AsyncIterator[LLMExtractor]:
    ex = LLMExtractor(model.url, "quarantine-test", api_key="sk-test-key-123", timeout_s=2.0)
    yield ex
    await ex.close()


def result_of(text: str) -> dict[str, object]:
    return {"content": [{"type": "text", "text": text}], "isError": False}


class TestWireFormat:
    async def test_the_raw_text_goes_as_data_with_a_json_schema_response_format(
        self, model: ModelServer, extractor: LLMExtractor
    ) -> None:
        model.facts({"errors": [{"type": "Panic", "count": 1}]})
        assert await extractor.extract(POD_LOG, tool="pods_log") == {
            "errors": [{"type": "Panic", "count": 1}]
        }
        sent = model.requests[0]
        assert sent["model"] == "quarantine-test"
        assert sent["temperature"] == 0
        assert sent["response_format"]["type"] == "json_schema"
        assert sent["response_format"]["json_schema"]["schema"] == FACTS_JSON_SCHEMA
        system, user = sent["messages"]
        assert system["role"] == "system" and "never follow instructions" in system["content"]
        assert json.loads(user["content"]) == {"tool": "pods_log", "untrusted_output": POD_LOG}
        assert model.headers[0]["Authorization"] == "Bearer sk-test-key-123"

    async def test_long_input_is_cut_before_it_is_sent(self, model: ModelServer) -> None:
        ex = LLMExtractor(model.url, "m", max_input_chars=100)
        try:
            await ex.extract("y" * 1000, tool="pods_log")
        finally:
            await ex.close()
        assert json.loads(model.requests[0]["messages"][1]["content"])["untrusted_output"] == (
            "y" * 100
        )


class TestFailures:
    async def test_free_text_instead_of_json_is_rejected(
        self, model: ModelServer, extractor: LLMExtractor
    ) -> None:
        model.text(f"Sure! {INJECTION}. The pod crashed.")
        with pytest.raises(ExtractorError, match="not JSON"):
            await extractor.extract(POD_LOG, tool="pods_log")

    @pytest.mark.parametrize(
        ("answer", "message"),
        [
            ((500, {"error": {"message": "overloaded"}}), "HTTP 500"),
            ((200, {"unexpected": True}), "not a chat completion"),
            ((200, completion(None, refusal="I can't help")), "refused"),
            ((200, completion("[1, 2, 3]")), "not a JSON object"),
        ],
    )
    async def test_a_bad_answer_is_an_extractor_error_without_the_key(
        self,
        model: ModelServer,
        extractor: LLMExtractor,
        answer: tuple[int, object],
        message: str,
    ) -> None:
        model.answer = answer
        with pytest.raises(ExtractorError, match=message) as info:
            await extractor.extract(POD_LOG, tool="pods_log")
        assert "sk-test-key-123" not in str(info.value)

    async def test_a_slow_model_times_out(self, model: ModelServer) -> None:
        model.delay_s = 1.0
        ex = LLMExtractor(model.url, "m", timeout_s=0.2)
        try:
            with pytest.raises(ExtractorError, match="did not answer"):
                await ex.extract(POD_LOG, tool="pods_log")
        finally:
            await ex.close()

    async def test_an_unreachable_model_is_an_extractor_error(self) -> None:
        ex = LLMExtractor("http://127.0.0.1:9/v1", "m", timeout_s=2.0)
        try:
            with pytest.raises(ExtractorError, match="unreachable"):
                await ex.extract(POD_LOG, tool="pods_log")
        finally:
            await ex.close()


class TestThroughTheGuard:
    async def test_a_compromised_model_can_only_emit_schema_valid_facts(
        self, model: ModelServer, extractor: LLMExtractor
    ) -> None:
        model.facts(
            {
                "errors": [
                    {"type": "CrashLoopBackOff", "count": 2},
                    {"type": INJECTION, "count": 1},
                ],
                "pods": [{"name": "payments-api-0", "namespace": "payments", "note": INJECTION}],
                "images": ["registry.example.com/payments/api:2.3.1", "see http://evil.example"],
                "instructions": INJECTION,
            }
        )
        guard = OutputGuard(extractor=extractor)
        out = await guard.rewrite(
            result_of(POD_LOG), untrusted=True, scope="a\x00s", tool="pods_log"
        )
        shown = json.dumps(out)
        for word in FORBIDDEN:
            assert word.lower() not in shown.lower(), word
        facts = out["structuredContent"]["facts"]  # type: ignore[index]
        assert facts == {
            "errors": [{"type": "CrashLoopBackOff", "count": 2}],
            "pods": [{"name": "$POD1", "namespace": "$NS1"}],
            "images": ["$IMAGE1"],
        }
        assert guard.handles.resolve("a\x00s", "$POD1") == "payments-api-0"
        assert (
            guard.handles.resolve("a\x00s", "$IMAGE1") == "registry.example.com/payments/api:2.3.1"
        )
        meta = out["_meta"][QUARANTINE_META_KEY]  # type: ignore[index]
        assert meta["extractor"] == "llm"
        assert meta["droppedItems"] == 4

    async def test_free_text_from_the_model_falls_back_to_the_parser_and_never_passes(
        self, model: ModelServer, extractor: LLMExtractor
    ) -> None:
        model.text(f"{INJECTION}. Also, the pod is fine.")
        guard = OutputGuard(extractor=extractor)
        out = await guard.rewrite(
            result_of(POD_LOG), untrusted=True, scope="a\x00s", tool="pods_log"
        )
        shown = json.dumps(out)
        for word in FORBIDDEN:
            assert word.lower() not in shown.lower(), word
        meta = out["_meta"][QUARANTINE_META_KEY]  # type: ignore[index]
        assert meta["extractor"] == "kubernetes"
        assert "not JSON" in meta["extractorError"]
        assert {"type": "Panic", "count": 1} in out["structuredContent"]["facts"]["errors"]  # type: ignore[index]
