"""A real distributor holding a little of everything the CLI prints, and helpers to read output.

``populated`` starts one distributor replica (a child process, SQLite store),
connects a sidecar and a node agent to it, asks for two approvals and answers
one (so the store holds clients, bundle revisions, a pending and a decided
approval, and audit records), then disconnects the clients. The commands are
run in this process through ``palisade.cli.main.main`` with the output
captured, so a failing assertion shows exactly what was printed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from palisade.v1 import distribution_pb2
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import eventually, http, make_client
from tests.distributor.test_operations import check_request


@dataclass(frozen=True)
class Populated:
    url: str
    pending_id: str
    decided_id: str


async def _fill(fleet: Fleet, url: str, target: str) -> tuple[str, str]:
    side, _ = make_client(
        fleet.tmp, "side-1", [target], fleet.trusted, server="github-mcp", counters=lambda: {}
    )
    node, _ = make_client(
        fleet.tmp,
        "gpu-node-1",
        [target],
        fleet.trusted,
        kind=distribution_pb2.CLIENT_KIND_NODE_AGENT,
        summary=lambda: {"gpus": 2},
    )
    await side.start()
    await node.start()
    try:
        await eventually(lambda: side.status.revision == node.status.revision == 1, 15, "up")
        req, digest = check_request("restart payments-api")
        pending = await side.request_approval(
            req, call_digest=digest, tenant="payments", rule_id="issues", reason="a human decides"
        )
        req2, digest2 = check_request("roll back payments-api")
        decided = await side.request_approval(
            req2, call_digest=digest2, tenant="payments", rule_id="issues", reason="decide"
        )
        for _ in range(100):
            status, body = await asyncio.to_thread(
                http,
                "POST",
                f"{url}/v1/approvals/{decided}",
                {"decision": "approve", "by": "alice", "comment": "on call"},
            )
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200, body
        await eventually(lambda: _fleet_size(url) == 2, 15, "both clients listed")
    finally:
        await side.stop()
        await node.stop()
    return pending, decided


def _fleet_size(url: str) -> int:
    status, body = http("GET", f"{url}/v1/fleet")
    return len(body["clients"]) if status == 200 else 0


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    fleet = Fleet(tmp_path_factory.mktemp("cli-fleet"))
    try:
        replica = fleet.start("r0", extra=["--insecure-approvers"])
        pending, decided = asyncio.run(_fill(fleet, replica.url, replica.target))
        yield Populated(replica.url, pending, decided)
    finally:
        fleet.close()


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No kubeconfig or distributor address leaks in from the machine running the tests."""
    for name in (
        "KUBECONFIG",
        "PALISADE_DISTRIBUTOR_URL",
        "PALISADE_ADMIN_TOKEN",
        "PALISADE_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


_HEADER_ROW = re.compile(r"^┃(.*)┃\s*$")


def table_headers(text: str) -> list[list[str]]:
    """The header cells of every rich table in ``text`` (one list per table)."""
    tables: list[list[str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _HEADER_ROW.match(line)
        if m and i > 0 and lines[i - 1].lstrip().startswith("┏"):
            tables.append([cell.strip() for cell in m.group(1).split("┃")])
    return tables
