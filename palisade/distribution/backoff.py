"""Reconnect delays: capped exponential backoff with full jitter.

Full jitter (a uniform draw in ``[0, min(cap, base * 2**attempt)]``) spreads a
fleet that lost its distributor at the same moment, so a returning replica is
not hit by every client in the same millisecond.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.2
    cap_s: float = 10.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before reconnect attempt ``attempt`` (0 for the first retry)."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(attempt, 30)))
        return float(ceiling * rand())
