"""``approvers: 2`` end to end: bundle -> sidecar verdict -> distributor -> two people.

A real kube-apiserver (people are ServiceAccounts given the chart's
``palisade-approver`` role), a real distributor process that authenticates them
(its kubeconfig holds only the chart's approver-review rules), a real sidecar in
front of the example MCP server, the MCP SDK client and the real CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from sidecar import jsonrpc
from tests.distributor.approver_people import People, people

from .conftest import World, acli, make_world, mcp_client, policy
from .test_approvals_end_to_end import SCALE, asked, pending_row, records, retried_until

pytestmark = pytest.mark.e2e

__all__ = ["people"]  # the fixture


@pytest.fixture
def world2(tmp_path: Path, people: People) -> Iterator[World]:
    """A world whose distributor authenticates approvers, on a bundle asking for two."""
    w = make_world(tmp_path, extra=people.distributor_args(tmp_path))
    try:
        two = policy().replace(
            "      reason: a human approves every write\n",
            "      reason: two people approve every write\n      approvers: 2\n",
        )
        assert "approvers: 2" in two
        w.distributor.write_policy(two)
        yield w
    finally:
        w.close()


async def answer(world: World, verb: str, approval_id: str, token: str) -> Any:
    return await acli("approvals", verb, approval_id, "--url", world.distributor.url,
                      "--token", token)  # fmt: skip


async def still_held(c: Any, approval_id: str) -> None:
    with pytest.raises(MCPError) as held:
        await c.call_tool("resources_create_or_update", SCALE)
    assert held.value.error.code == jsonrpc.APPROVAL_REQUIRED
    assert held.value.error.data["approval_id"] == approval_id


async def test_a_rule_asking_for_two_approvers_needs_two_different_people(
    world2: World, people: People
) -> None:
    world = world2
    tokens = {n: people.person(n) for n in ("frank", "grace")}
    for n in tokens:
        people.may_approve(n, namespace="payments")  # the sidecar's pod namespace
    frank, grace = people.username("frank"), people.username("grace")
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=2)
    async with mcp_client(sc.url) as c:
        approval_id = await asked(c, SCALE)
        row = await pending_row(world, approval_id)
        assert row["required"] == 2, "the bundle's approvers, carried by the verdict"

        out = await answer(world, "approve", approval_id, tokens["frank"])
        assert out.returncode == 0, out.stderr
        assert "1 of 2" in out.stdout
        await still_held(c, approval_id)
        out = await answer(world, "approve", approval_id, people.token("frank"))
        assert out.returncode == 1 and "already approved" in out.stderr
        await still_held(c, approval_id)

        out = await answer(world, "approve", approval_id, tokens["grace"])
        assert out.returncode == 0, out.stderr
        result = await retried_until(c, SCALE, approval_id, "allow")
        assert "configured" in result.content[0].text
        again = await asked(c, SCALE)  # used up: exactly that one call went through
        assert again != approval_id

        # one denial denies the next one, after an approval
        out = await answer(world, "approve", again, tokens["frank"])
        assert out.returncode == 0, out.stderr
        out = await answer(world, "deny", again, tokens["grace"])
        assert out.returncode == 0, out.stderr
        refused = await retried_until(c, SCALE, again, "deny")
        assert f"denied by {grace}" in refused.error.data["reason"]

    allowed = records(sc, "allow")
    assert len(allowed) == 1
    assert allowed[0]["details"]["approvers"] == [frank, grace]
    assert allowed[0]["details"]["approved_by"] == f"{frank}, {grace}"
    assert f"approved by {frank}, {grace}" in allowed[0]["reason"]
    assert records(sc, "deny")[0]["details"]["denied_by"] == grace
