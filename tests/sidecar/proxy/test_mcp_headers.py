"""The sidecar's port of the routing-header rules agrees with the MCP SDK's own functions."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.shared import inbound

from sidecar import mcp_headers

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, width=32),
    st.text(max_size=6),
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
    st.sampled_from(
        ["=?base64?cGF5bWVudHM=?=", "=?base64?!!?=", "=?base64?cGF5bWVudHM?=", "42", "42.0", "true"]
    ),
)
types = st.sampled_from(["string", "integer", "boolean", "number", "object"])


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]:
    names = draw(st.lists(st.sampled_from(["ns", "n", "flag", "deep"]), unique=True, max_size=3))
    props: dict[str, Any] = {}
    args: dict[str, Any] = {}
    headers: list[tuple[str, str]] = []
    for name in names:
        token = draw(st.sampled_from(["Ns", "N", "Flag", "ns", "bad token"]))
        props[name] = {"type": draw(types), "x-mcp-header": token}
        if draw(st.booleans()):
            args[name] = draw(scalars)
        for _ in range(draw(st.integers(0, 2))):
            headers.append(
                (
                    f"Mcp-Param-{draw(st.sampled_from(['Ns', 'N', 'Flag', 'NS']))}",
                    draw(header_values),
                )
            )
    return {"type": "object", "properties": props}, args, headers


class Multi(dict[str, str]):
    """A mapping whose items() lists every header line, as aiohttp's multidict does."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def items(self) -> Any:  # type: ignore[override]
        return list(self.pairs)


@settings(max_examples=200)
@given(cases())
def test_param_header_validation_agrees_with_the_sdk(
    case: tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]],
) -> None:
    schema, args, pairs = case
    ours = mcp_headers.validate_mcp_param_headers(schema, args, Multi(pairs))
    theirs = inbound.validate_mcp_param_headers(schema, args, Multi(pairs))
    assert (ours is None) == (theirs is None), (ours, theirs)
    assert (mcp_headers.find_invalid_x_mcp_header(schema) is None) == (
        inbound.find_invalid_x_mcp_header(schema) is None
    )


@given(st.one_of(st.none(), header_values, st.text(max_size=12)))
def test_header_value_decoding_agrees_with_the_sdk(value: str | None) -> None:
    assert mcp_headers.decode_header_value(value) == inbound.decode_header_value(value)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Mcp-Method", "mcp-name", "MCP-Protocol-Version", "X-Other"]),
            st.just("v"),
        ),
        max_size=4,
    )
)
def test_duplicate_detection_agrees_with_the_sdk(pairs: list[tuple[str, str]]) -> None:
    assert mcp_headers.find_duplicated_routing_header(
        pairs
    ) == inbound.find_duplicated_routing_header(pairs)


def test_the_constants_agree_with_the_sdk() -> None:
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    assert dict(mcp_headers.NAME_BEARING_METHODS) == dict(inbound.NAME_BEARING_METHODS)
    assert tuple(mcp_headers.MODERN_PROTOCOL_VERSIONS) == tuple(MODERN_PROTOCOL_VERSIONS)
    assert mcp_headers.MCP_PARAM_HEADER_PREFIX == inbound.MCP_PARAM_HEADER_PREFIX
