"""``palisade_sidecar_requests_total`` stays bounded whatever methods clients make up."""

from __future__ import annotations

import aiohttp
import pytest

from sidecar.metrics import SidecarMetrics, method_label

from .conftest import MCP_ACCEPT, Sidecar, auth, raw_session, session_headers

pytestmark = pytest.mark.e2e


def test_known_methods_keep_their_name_and_others_are_counted_together() -> None:
    assert method_label("tools/call") == "tools/call"
    assert method_label("notifications/progress") == "notifications/progress"
    assert method_label(None) == "response"
    assert method_label("x/made-up-1") == method_label("x/made-up-2") == "other"


def test_counting_the_same_labels_again_reuses_one_series() -> None:
    metrics = SidecarMetrics()
    for _ in range(3):
        metrics.count_request("tools/list", "forwarded")
    value = metrics.registry.get_sample_value(
        "palisade_sidecar_requests_total", {"method": "tools/list", "outcome": "forwarded"}
    )
    assert value == 3.0


async def test_made_up_methods_through_the_sidecar_add_no_series(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url)
        headers = {**session_headers(sid), **auth()}
        for i in range(20):
            note = {"jsonrpc": "2.0", "method": f"notifications/made-up-{i}"}
            async with http.post(sidecar.url, json=note, headers={**MCP_ACCEPT, **headers}):
                pass
        async with http.get(sidecar.base + "/metrics") as r:
            text = await r.text()

    lines = [ln for ln in text.splitlines() if ln.startswith("palisade_sidecar_requests_total{")]
    assert not any("made-up" in ln for ln in lines)
    other = sidecar.core.metrics.registry.get_sample_value(
        "palisade_sidecar_requests_total", {"method": "other", "outcome": "forwarded"}
    )
    assert other == 20.0
