"""The agent's distributor link: the shared ``DistributionClient``, with a key set
that can change under it.

:meth:`DistributorLink.set_trusted` puts a new key set into the client's
verifier at once, so the next pushed bundle is checked against it. A bundle the
client already refused (say, pushed while no key was known) is not sent again by
a distributor on the same stream, so when the client's last bundle event was a
refusal the link also subscribes again: the old client is stopped and a new one,
built by the same factory, loads the last-known-good bundle under the new keys
and says ``Hello``, and the distributor answers with its current bundle (or
``up_to_date``). Audit records wait in the on-disk spool meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from palisade.bundle import TrustedKeys
from palisade.distribution import DistributionClient
from palisade.v1 import audit_pb2

log = logging.getLogger(__name__)

#: Builds a client trusting these keys (unstarted).
ClientFactory = Callable[[TrustedKeys], DistributionClient]


class DistributorLink:
    def __init__(self, make: ClientFactory, trusted: TrustedKeys) -> None:
        self._make = make
        self.client = make(trusted)
        self.resubscribes = 0
        self._acks_before = 0
        self._nacks_before = 0
        self._lock = asyncio.Lock()
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        async with self._lock:
            self._started = True
            await self.client.start()

    async def stop(self) -> None:
        async with self._lock:
            self._stopped = True
            await self.client.stop()

    def record_audit(self, records: list[audit_pb2.AuditRecord]) -> None:
        self.client.record_audit(records)

    @property
    def acks(self) -> int:
        return self._acks_before + self.client.acks

    @property
    def nacks(self) -> int:
        return self._nacks_before + self.client.nacks

    async def set_trusted(self, keys: TrustedKeys) -> None:
        """Verify with ``keys`` from now on; subscribe again if a bundle was refused."""
        async with self._lock:
            old = self.client
            old.settings = dataclasses.replace(old.settings, trusted=keys)
            # ``last_error`` is cleared by every activation: set, the last bundle
            # (pushed, or the last-known-good at start) was refused.
            if not old.status.last_error or not self._started or self._stopped:
                return
            log.info(
                "subscribing again: the last bundle was refused before the key change",
                extra={"error": old.status.last_error, "key_ids": list(keys.key_ids)},
            )
            await old.stop()
            self._acks_before += old.acks
            self._nacks_before += old.nacks
            self.client = self._make(keys)
            self.resubscribes += 1
            await self.client.start()

    def view(self) -> dict[str, Any]:
        """The live link for ``/status`` (``heartbeat``)."""
        c = self.client
        return {
            "connected": c.status.connected,
            "target": c.target,
            "bundleAcks": self.acks,
            "bundleNacks": self.nacks,
            "state": c.status.state.value,
            "lastError": c.status.last_error,
            "resubscribes": self.resubscribes,
        }
