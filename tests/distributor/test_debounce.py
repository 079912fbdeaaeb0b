"""A burst of source changes becomes one revision (a real replica, in this process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from distributor.server import Distributor, Settings
from distributor.sources import Snapshot
from palisade.bundle import generate_key
from tests.distributor.helpers import bundle_yaml


class BurstSource:
    """Yields ``n`` different snapshots 20 ms apart, then stays quiet."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = asyncio.Event()

    def published(self) -> None:
        pass

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        for i in range(self.n):
            yield [("payments.yaml", bundle_yaml(reason=f"edit {i}"))]
            await asyncio.sleep(0.02)
        self.done.set()
        await asyncio.Event().wait()


async def test_a_burst_of_changes_is_debounced_into_one_revision_of_the_last_one(
    tmp_path: Path,
) -> None:
    source = BurstSource(10)
    dist = Distributor(
        Settings(replica_id="r", store_path=tmp_path / "s.db", debounce_s=0.3),
        [generate_key()],
        source,
    )
    await dist.start()
    try:
        await asyncio.wait_for(source.done.wait(), 5)
        for _ in range(100):
            if dist.hub.current is not None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        history = await dist.store.call(dist.store.store.history)
        assert [r.revision for r in history] == [1]
        assert b"edit 9" in history[0].document
    finally:
        await dist.stop()
