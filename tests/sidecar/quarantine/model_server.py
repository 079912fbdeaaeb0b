"""A local server speaking the OpenAI chat-completions wire format, for the LLM extractor tests.

It is a real aiohttp server on a free port; what it answers is set per test
(``answer``), and every request it received is kept (``requests``) so a test
can check what the sidecar sent. No model runs: the answers are canned,
including the ones a compromised quarantined model would give.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def completion(content: str | None, refusal: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "quarantine-test",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content, "refusal": refusal},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


@dataclass
class ModelServer:
    url: str = ""
    #: (HTTP status, JSON body) to answer with.
    answer: tuple[int, Any] = (200, completion("{}"))
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def facts(self, facts: Any) -> None:
        self.answer = (200, completion(json.dumps(facts)))

    def text(self, content: str) -> None:
        self.answer = (200, completion(content))


@asynccontextmanager
async def model_server() -> AsyncIterator[ModelServer]:
    state = ModelServer()

    async def chat(request: web.Request) -> web.Response:
        state.requests.append(await request.json())
        state.headers.append(dict(request.headers))
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        status, body = state.answer
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()
