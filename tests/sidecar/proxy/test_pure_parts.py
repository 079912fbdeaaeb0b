"""The proxy's pure parts, with plain data: messages, routing headers, risk, rewrites, SSE."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palisade.policy.types import Decision, Risk, RuleTrace, Verdict
from sidecar import gate, jsonrpc
from sidecar.jsonrpc import BadMessage, Message, parse_message
from sidecar.sse import Event, EventSplitter, EventTooLarge, encode_event, parse_event


class TestMessages:
    def test_a_request_parses_with_its_id_and_params(self) -> None:
        m = parse_message(
            b'{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}', max_depth=8
        )
        assert (m.id, m.method, m.is_request, m.params["name"]) == ("a", "tools/call", True, "x")

    def test_a_response_from_the_client_is_accepted(self) -> None:
        m = parse_message(b'{"jsonrpc":"2.0","id":3,"result":{}}', max_depth=8)
        assert m.is_response and not m.is_request

    @pytest.mark.parametrize(
        ("raw", "code"),
        [
            (b"\xff\xfe", jsonrpc.PARSE_ERROR),
            (b"{", jsonrpc.PARSE_ERROR),
            (b"[]", jsonrpc.INVALID_REQUEST),
            (b"42", jsonrpc.INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","id":1}', jsonrpc.INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', jsonrpc.INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","id":1,"method":5}', jsonrpc.INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}', jsonrpc.INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","id":null,"method":"tools/call"}', jsonrpc.INVALID_REQUEST),
            (
                b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}',
                jsonrpc.INVALID_REQUEST,
            ),
        ],
    )
    def test_bad_messages_name_the_json_rpc_error(self, raw: bytes, code: int) -> None:
        with pytest.raises(BadMessage) as info:
            parse_message(raw, max_depth=8)
        assert info.value.code == code

    @given(
        st.recursive(
            st.integers() | st.text(max_size=3),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=2), c, max_size=3),
        )
    )
    def test_depth_is_measured_like_a_recursive_walk(self, value: Any) -> None:
        def rec(v: Any) -> int:
            if isinstance(v, dict):
                return 1 + max((rec(x) for x in v.values()), default=0)
            if isinstance(v, list):
                return 1 + max((rec(x) for x in v), default=0)
            return 0

        assert jsonrpc.depth_of(value, 1000) == rec(value)


def msg(method: str, params: dict[str, Any]) -> Message:
    return Message({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})


def test_a_lone_surrogate_in_arguments_is_forwarded_escaped() -> None:
    m = parse_message(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":"\\ud800"}}}',
        max_depth=8,
    )
    assert jsonrpc.dumps(m.body).endswith(b'{"a":"\\ud800"}}}')


class TestRoutingHeaders:
    MODERN = {"mcp-protocol-version": "2026-07-28"}

    def test_matching_headers_pass(self) -> None:
        h = {**self.MODERN, "mcp-method": "tools/call", "mcp-name": "pods_list"}
        gate.check_routing_headers(msg("tools/call", {"name": "pods_list"}), h, h.items(), None)

    def test_a_base64_wrapped_name_is_decoded_before_comparing(self) -> None:
        h = {**self.MODERN, "mcp-method": "tools/call", "mcp-name": "=?base64?cG9kc19saXN0?="}
        gate.check_routing_headers(msg("tools/call", {"name": "pods_list"}), h, h.items(), None)

    @pytest.mark.parametrize(
        "headers",
        [
            {"mcp-method": "tools/call", "mcp-name": "other"},
            {"mcp-method": "tools/list", "mcp-name": "pods_list"},
            {"mcp-name": "pods_list"},
        ],
    )
    def test_disagreeing_or_missing_headers_are_minus_32020(self, headers: dict[str, str]) -> None:
        h = {**self.MODERN, **headers}
        with pytest.raises(BadMessage) as info:
            gate.check_routing_headers(msg("tools/call", {"name": "pods_list"}), h, h.items(), None)
        assert (info.value.code, info.value.http_status) == (-32020, 400)

    def test_mcp_param_headers_must_match_the_arguments(self) -> None:
        schema = {
            "type": "object",
            "properties": {"namespace": {"type": "string", "x-mcp-header": "Namespace"}},
        }
        h = {
            **self.MODERN,
            "mcp-method": "tools/call",
            "mcp-name": "t",
            "mcp-param-namespace": "payments",
        }
        ok = msg("tools/call", {"name": "t", "arguments": {"namespace": "payments"}})
        gate.check_routing_headers(ok, h, h.items(), schema)
        bad = msg("tools/call", {"name": "t", "arguments": {"namespace": "kube-system"}})
        with pytest.raises(BadMessage):
            gate.check_routing_headers(bad, h, h.items(), schema)

    def test_older_revisions_need_no_headers(self) -> None:
        gate.check_routing_headers(msg("tools/call", {"name": "x"}), {}, [], None)


class TestRiskAndRewrites:
    @pytest.mark.parametrize(
        ("annotations", "risk"),
        [
            ({"readOnlyHint": True}, Risk.READ),
            ({"readOnlyHint": False, "destructiveHint": False}, Risk.WRITE),
            ({"readOnlyHint": False}, Risk.DESTRUCTIVE),
            (None, Risk.DESTRUCTIVE),
        ],
    )
    def test_risk_follows_the_spec_defaults(
        self, annotations: dict[str, bool] | None, risk: Risk
    ) -> None:
        tool: dict[str, Any] = {"name": "t"}
        if annotations is not None:
            tool["annotations"] = annotations
        assert gate.risk_from_annotations(tool) is risk

    def test_a_denial_carries_decision_rule_reason(self) -> None:
        v = Verdict(Decision.THROTTLE, "budget/r", "slow down", 4, retry_after_s=1.5)
        doc = gate.verdict_error(9, v, "t")
        assert doc["id"] == 9
        assert doc["error"]["code"] == jsonrpc.THROTTLED
        assert doc["error"]["data"] == {
            "decision": "throttle",
            "rule": "budget/r",
            "reason": "slow down",
            "approval_id": None,
            "retry_after": 1.5,
            "bundle_revision": 4,
        }

    def test_listing_hides_only_argument_independent_denials(self) -> None:
        deny = Verdict(Decision.DENY, "deny-x", "no", 1)
        cond = Verdict(
            Decision.DENY,
            "deny-else",
            "no",
            1,
            explanation=(RuleTrace("allow-ns", False, "'when' is False: ..."),),
        )
        assert not gate.listable(deny)
        assert gate.listable(cond)
        assert gate.listable(Verdict(Decision.DENY, "budget/spend", "", 1))
        assert gate.listable(Verdict(Decision.REQUIRE_APPROVAL, "r", "", 1))

    def test_filtering_keeps_other_fields_and_names_the_hidden(self) -> None:
        result = {"tools": [{"name": "a"}, {"name": "b"}], "nextCursor": "c"}
        out = gate.filter_tools(result, lambda t: t["name"] == "a")
        assert out["tools"] == [{"name": "a"}] and out["nextCursor"] == "c"
        assert out["_meta"][gate.FILTERED_META_KEY] == ["b"]

    def test_a_filtered_list_is_never_publicly_cacheable(self) -> None:
        out = gate.filter_tools(
            {"tools": [], "cacheScope": "public", "ttlMs": 60000}, lambda t: True
        )
        assert out["cacheScope"] == "private"


class TestSse:
    def test_events_are_cut_at_blank_lines_whatever_the_chunking(self) -> None:
        stream = b'id: 1\nevent: message\ndata: {"a":1}\n\n: ping\r\n\r\ndata: x\ndata: y\n\n'
        for cut in range(1, len(stream)):
            sp = EventSplitter(1024)
            got = list(sp.feed(stream[:cut])) + list(sp.feed(stream[cut:]))
            assert b"".join(got) == stream
            assert len(got) == 3

    @pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n", b"\r\n\n", b"\n\r\n", b"\r\r"])
    def test_every_blank_line_form_ends_an_event(self, end: bytes) -> None:
        sp = EventSplitter(1024)
        got = list(sp.feed(b"data: a" + end + b"data: b" + end))
        assert [parse_event(g).data for g in got] == ["a", "b"]  # type: ignore[union-attr]

    def test_parse_and_encode_round_trip(self) -> None:
        ev = parse_event(b"id: 7\nevent: message\ndata: line1\ndata: line2\n\n")
        assert ev == Event("line1\nline2", "message", "7")
        assert parse_event(encode_event(ev)) == ev
        assert parse_event(b": comment only\n\n") is None

    def test_an_event_that_never_ends_is_bounded(self) -> None:
        sp = EventSplitter(100)
        with pytest.raises(EventTooLarge):
            list(sp.feed(b"data: " + b"x" * 200))

    @given(
        st.lists(
            st.text(
                alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                max_size=20,
            ),
            max_size=5,
        ),
        st.integers(1, 50),
    )
    def test_any_chunking_yields_the_same_events(self, datas: list[str], step: int) -> None:
        stream = b"".join(encode_event(Event(d or "-", "message")) for d in datas)
        sp = EventSplitter(10_000)
        got: list[bytes] = []
        for i in range(0, len(stream), step):
            got.extend(sp.feed(stream[i : i + step]))
        assert [parse_event(g).data for g in got] == [d or "-" for d in datas]  # type: ignore[union-attr]
