"""Replay against the distributor's central store: `palisade bundle replay
--from-distributor`, and the distributor's own replay gate before it publishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import FREEZE_READS, World, acli, make_world, mcp_client, policy, until

pytestmark = pytest.mark.e2e


async def traffic(world: World, reads: int) -> None:
    """``reads`` allowed pods_list calls and one denied delete, all stored centrally."""
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    async with mcp_client(sc.url) as c:
        for _ in range(reads):
            await c.call_tool("pods_list", {"namespace": "payments"})
        with pytest.raises(Exception, match="denied"):
            await c.call_tool("resources_delete", {"kind": "Deployment", "name": "d"})

    async def stored() -> bool:
        rows = await world.distributor.audit("--kind", "decision")
        return len(rows) == reads + 1

    await until(stored, what="every decision stored by the distributor")


async def bundles(world: World) -> dict[str, object]:
    done = await acli("fleet", "bundles", "--url", world.distributor.url, "-o", "json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


async def test_a_candidate_is_replayed_against_the_central_store(
    world: World, tmp_path: Path
) -> None:
    await traffic(world, reads=3)
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(policy(FREEZE_READS))
    done = await acli(
        "bundle", "replay", str(candidate), "--from-distributor",
        "--url", world.distributor.url, "--fail-on", "denied-more", "-o", "json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # allowed calls would now be denied
    report = json.loads(done.stdout)
    assert report["replayed"] == 4 and report["unchanged"] == 1 and report["deniedMore"] == 3
    assert report["byRule"] == {"freeze-pods-list": 3}
    assert {(c["tool"], c["was"], c["now"]) for c in report["changes"]} == {
        ("pods_list", "allow", "deny")
    }
    same = tmp_path / "same.yaml"
    same.write_text(policy())
    unchanged = await acli(
        "bundle", "replay", str(same), "--from-distributor", "--url", world.distributor.url,
    )  # fmt: skip
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    both = await acli("bundle", "replay", str(same), "--from-distributor", "--audit", "x")
    assert both.returncode == 2 and "either --audit" in both.stderr


async def test_by_default_a_candidate_that_denies_recent_calls_is_published_and_flagged(
    world: World,
) -> None:
    await traffic(world, reads=3)
    world.distributor.write_policy(policy(FREEZE_READS))

    async def published() -> dict[str, object] | None:
        body = await bundles(world)
        revisions = [b["revision"] for b in body["bundles"]]  # type: ignore[index, union-attr]
        return body if revisions[0] == 2 else None

    body = await until(published, what="revision 2 published")
    gate = body["replay"]
    assert gate["verdict"] == "flagged", gate
    assert gate["allowedBefore"] == 3 and gate["deniedMore"] == 3
    assert "freeze-pods-list (3)" in gate["message"]
    shown = await acli("fleet", "bundles", "--url", world.distributor.url)
    assert "replay gate flagged" in shown.stderr


async def test_in_refuse_mode_the_fleet_stays_on_its_revision_and_the_refusal_is_reported(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path, extra=["--replay-gate", "refuse", "--replay-threshold", "0.5"])
    try:
        await traffic(world, reads=3)
        world.distributor.write_policy(policy(FREEZE_READS))

        async def refused() -> dict[str, object] | None:
            body = await bundles(world)
            err = body.get("last_error")
            return body if err else None

        body = await until(refused, what="the candidate refused")
        (error,) = body["last_error"]["errors"]  # type: ignore[index]
        assert error["message"].startswith("replay gate: the candidate would no longer allow 3")
        assert [b["revision"] for b in body["bundles"]] == [1]  # type: ignore[union-attr]
        assert body["replay"]["verdict"] == "refused"  # type: ignore[index]
        # Tightening something nobody called passes the gate and is published.
        world.distributor.write_policy(
            policy(FREEZE_READS.replace("pods_list", "pods_top").replace("pods-list", "pods-top"))
        )

        async def published() -> bool:
            got = await bundles(world)
            return bool(got["bundles"][0]["revision"] == 2)  # type: ignore[index]

        await until(published, what="the harmless candidate published")
        assert (await bundles(world))["replay"]["verdict"] == "passed"  # type: ignore[index]
    finally:
        world.close()
