"""Every refusal leaves a record, whatever the input.

- Text with no UTF-8 form (lone surrogates, JSON ``"\\ud800"``) in a tool name, an
  id, an argument or a key is stored with U+FFFD in its place, and the chain still
  verifies; the arguments' digest is over the input as given.
- What aiohttp's HTTP parser refuses (``Content-Length`` with ``Transfer-Encoding``,
  repeated ``Content-Length``, oversized headers, garbage) is recorded too, and
  headers just over Palisade's limit are refused by the sidecar itself (431).
- A method that differs from an MCP method only by case, width, whitespace or
  control characters is refused and recorded, never forwarded undecided.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.audit import AuditWriter, Entry, Signer, canonical, verify_files
from sidecar import jsonrpc
from sidecar.settings import Limits
from tests.sidecar.bypass_harness import (
    JSON_HEADERS,
    Peer,
    raw_exchange,
    request_bytes,
    serve,
)
from tests.sidecar.proxy.conftest import UpstreamProc, start_example_server, stop_process

pytestmark = pytest.mark.e2e

AUTH = ("Authorization", "Bearer sre-token")

# -- the audit writer, property-based --------------------------------------------------

#: Any code point, lone surrogates included.
any_text = st.text(st.characters(codec=None, categories=None), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | any_text,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(any_text, kids, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tool=any_text,
    request_id=any_text,
    reason=any_text,
    arguments=st.dictionaries(any_text, json_values, max_size=4),
)
def test_any_text_becomes_a_record_that_verifies(
    tmp_path: Path, tool: str, request_id: str, reason: str, arguments: dict[str, Any]
) -> None:
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "audit.jsonl"
    writer = AuditWriter(path, Signer.generate(), fsync="never")
    writer.open()
    try:
        record = writer.append_sync(
            Entry(
                tool=tool,
                request_id=request_id,
                reason=reason,
                arguments=arguments,
                decision="deny",
                details={"echo": tool},
            )
        )
    finally:
        writer.close()
    result = verify_files([path])
    assert result.ok, [str(f) for f in result.findings]
    stored = json.loads(path.read_text())
    assert stored["tool"] == canonical.text(tool)
    assert stored["request_id"] == canonical.text(request_id)
    # the digest is over the arguments exactly as given: distinct inputs, distinct digests
    exact = canonical.normalize(arguments, exact=True)
    assert record["arguments_digest"] == (
        "sha256:" + hashlib.sha256(canonical.exact_bytes(exact)).hexdigest()
    )
    replaced = stored["details"].get("replaced_text", [])
    assert ("tool" in replaced) == (not canonical.storable(tool))


def test_ordinary_text_digests_exactly_as_before() -> None:
    args = {"namespace": "payments", "n": 5.0, "ü": ["ß", None]}
    plain = json.dumps(
        canonical.normalize(args), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert canonical.digest(args) == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert canonical.digest({"a": "\ud800"}) != canonical.digest({"a": "\ud801"})


# -- methods, property-based -----------------------------------------------------------

noise = st.sampled_from([" ", "\t", "\n", "\x00", "\x7f", "\u200b", "\u00a0", "\ufeff", "\u2028"])


@st.composite
def look_alikes(draw: st.DrawFn) -> tuple[str, str]:
    method = draw(st.sampled_from(sorted(jsonrpc.MCP_METHODS)))
    chars = list(method)
    for i in draw(st.lists(st.integers(0, len(chars) - 1), max_size=4)):
        chars[i] = chars[i].swapcase()
    for i in draw(st.lists(st.integers(0, len(chars)), max_size=3)):
        chars.insert(i, draw(noise))
    return method, "".join(chars)


@settings(max_examples=500, deadline=None)
@given(look_alikes())
def test_a_look_alike_of_an_mcp_method_is_refused(pair: tuple[str, str]) -> None:
    method, variant = pair
    problem = jsonrpc.method_problem(variant)
    assert (problem is None) == (variant == method)
    if variant != method:
        with pytest.raises(jsonrpc.BadMessage) as err:
            jsonrpc.parse_message(
                json.dumps({"jsonrpc": "2.0", "id": 1, "method": variant}).encode(), max_depth=8
            )
        assert err.value.code == jsonrpc.INVALID_REQUEST and err.value.request_id == 1


# -- through a real sidecar, raw HTTP --------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProc]:
    up = start_example_server(tmp_path_factory.mktemp("up"))
    yield up
    stop_process(up.proc)


@pytest.fixture
async def peer(upstream: UpstreamProc, tmp_path: Path) -> AsyncIterator[Peer]:
    async with serve(upstream.url, tmp_path, limits=Limits(max_header_bytes=2048)) as sc:
        yield sc


def post_raw(body: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    return request_bytes("POST", "/mcp", [*JSON_HEADERS, AUTH, *(extra or [])], body.encode())


LONE = "\\ud800"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"pods{LONE}",'
         '"arguments":{}}}', "tool"),
        (f'{{"jsonrpc":"2.0","id":"a{LONE}","method":"tools/call","params":{{"name":'
         '"resources_delete","arguments":{"kind":"Deployment","name":"x"}}}', "request_id"),
        (f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"resources_delete",'
         f'"arguments":{{"kind":"Deployment","name":"x{LONE}"}}}}}}', "arguments"),
        (f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"resources_delete",'
         f'"arguments":{{"k{LONE}":1,"kind":"Deployment","name":"x"}}}}}}', "arguments"),
    ],
    ids=["tool-name", "id", "argument", "argument-key"],
)  # fmt: skip
async def test_a_refused_call_with_unencodable_text_is_recorded(
    peer: Peer, body: str, field: str
) -> None:
    answer = await raw_exchange(peer.port, post_raw(body))
    doc = answer.json()
    assert doc["error"]["code"] == jsonrpc.POLICY_DENIED, doc
    assert doc["error"]["data"]["rule"] != "audit-unavailable"
    record = [r for r in peer.verified() if r["kind"] == "decision"][-1]
    assert record["decision"] == "deny"
    assert field in record["details"]["replaced_text"]
    assert "\ufffd" in json.dumps(record, ensure_ascii=False)


async def test_an_allowed_call_with_unencodable_text_is_recorded_then_forwarded(
    peer: Peer,
) -> None:
    body = (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pods_list",'
        f'"arguments":{{"namespace":"payments{LONE}"}}}}}}'
    )
    await raw_exchange(peer.port, post_raw(body))
    record = [r for r in peer.verified() if r["kind"] == "decision"][-1]
    assert record["decision"] == "allow"
    assert record["arguments"] == {"namespace": "payments\ufffd"}
    assert record["details"]["replaced_text"] == ["arguments"]


async def test_bad_input_with_unencodable_text_is_recorded(peer: Peer) -> None:
    body = f'{{"jsonrpc":"1.0","id":"x{LONE}","method":"ping"}}'
    answer = await raw_exchange(peer.port, post_raw(body))
    assert answer.status == 400
    record = peer.verified()[-1]
    assert record["kind"] == "bad_input" and record["request_id"] == "x\ufffd"


@pytest.mark.parametrize(
    "method",
    ["Tools/Call", "tools/call ", " tools/call", "tools/call\u0000", "tools/\u200bcall",
     "\uff54\uff4f\uff4f\uff4c\uff53/call", "TOOLS/LIST", "Resources/Read"],
)  # fmt: skip
async def test_a_look_alike_method_is_refused_and_recorded(peer: Peer, method: str) -> None:
    doc = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": method,
        "params": {"name": "resources_delete", "arguments": {"kind": "Deployment", "name": "x"}},
    }
    answer = await raw_exchange(peer.port, post_raw(json.dumps(doc)))
    assert answer.status == 400
    assert answer.json()["error"]["code"] == jsonrpc.INVALID_REQUEST
    records = peer.verified()
    assert records[-1]["kind"] == "bad_input" and records[-1]["request_id"] == "9"
    assert records[-1]["agent"] == "sre-agent"
    assert not [r for r in records if r["kind"] == "decision"]


async def test_a_look_alike_notification_is_refused_and_recorded(peer: Peer) -> None:
    doc = {"jsonrpc": "2.0", "method": "Tools/Call", "params": {"name": "resources_delete"}}
    answer = await raw_exchange(peer.port, post_raw(json.dumps(doc)))
    assert answer.status == 400
    assert peer.verified()[-1]["kind"] == "bad_input"


def parser_record(peer: Peer) -> dict[str, Any]:
    record = peer.verified()[-1]
    assert record["kind"] == "bad_input" and record["decision"] == "deny", record
    return record


async def test_content_length_with_transfer_encoding_is_refused_and_recorded(peer: Peer) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    data = request_bytes(
        "POST",
        "/mcp",
        [*JSON_HEADERS, AUTH, ("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")],
        f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n",
        content_length=False,
    )
    answer = await raw_exchange(peer.port, data)
    assert answer.status == 400
    record = parser_record(peer)
    assert record["details"]["stage"] == "http-parser"
    assert record["details"]["http_status"] == 400


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "40"), ("Content-Length", "4")],
        [("Content-Type", "text/plain")],  # with the JSON one: Content-Type twice
        [("Host", "evil.example")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")],
    ],
    ids=["content-length", "content-type", "host", "transfer-encoding"],
)
async def test_a_repeated_framing_header_is_refused_and_recorded(
    peer: Peer, headers: list[tuple[str, str]]
) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    data = request_bytes("POST", "/mcp", [*JSON_HEADERS, AUTH, *headers], body)
    answer = await raw_exchange(peer.port, data)
    assert answer.status == 400
    parser_record(peer)


async def test_garbage_instead_of_http_is_recorded(peer: Peer) -> None:
    answer = await raw_exchange(peer.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
    assert answer.status == 400
    assert parser_record(peer)["details"]["stage"] == "http-parser"


async def test_a_header_just_over_the_limit_is_refused_by_the_sidecar_and_recorded(
    peer: Peer,
) -> None:
    answer = await raw_exchange(peer.port, post_raw("{}", [("X-Padding", "a" * 3000)]))
    assert answer.status == 431
    record = parser_record(peer)
    assert record["details"]["header"] == "X-Padding"
    assert record["details"]["limit"] == "max_header_bytes"
    assert record["rule_id"] == "limit"


async def test_a_header_far_over_the_limit_is_refused_by_the_parser_and_recorded(
    peer: Peer,
) -> None:
    answer = await raw_exchange(peer.port, post_raw("{}", [("X-Padding", "a" * 50_000)]))
    assert answer.status in (400, 431)
    assert parser_record(peer)["details"]["stage"] == "http-parser"


async def test_too_many_header_lines_are_refused_and_recorded(peer: Peer) -> None:
    many = [(f"X-H{i}", "1") for i in range(140)]
    answer = await raw_exchange(peer.port, post_raw("{}", many))
    assert answer.status == 431
    assert parser_record(peer)["details"]["limit"] == "header_lines"


async def test_a_long_request_target_is_refused_and_recorded(peer: Peer) -> None:
    data = request_bytes("GET", "/mcp?x=" + "a" * 3000, [AUTH])
    answer = await raw_exchange(peer.port, data)
    assert answer.status == 414
    assert parser_record(peer)["details"]["limit"] == "max_header_bytes"


async def test_a_broken_chunked_body_is_refused_and_recorded(peer: Peer) -> None:
    data = request_bytes(
        "POST",
        "/mcp",
        [*JSON_HEADERS, AUTH, ("Transfer-Encoding", "chunked")],
        b"zz\r\n{}\r\n0\r\n\r\n",
        content_length=False,
    )
    answer = await raw_exchange(peer.port, data)
    assert answer.status == 400
    parser_record(peer)
