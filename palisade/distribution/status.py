"""The client's bundle status: a small state machine that readiness probes read.

::

    NOT_READY --activated--> OK --rejected--> OK (last good kept, error noted)
        |                     ^
        +----rejected----> ERROR --activated--+

``OK`` means a verified bundle is being enforced. A rejected bundle never takes
the client out of ``OK``: it keeps its last good one and reports the error. A
client that has never held a bundle and is handed a bad one is ``ERROR`` and
not ready (fail closed: nothing is allowed without a policy).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class State(StrEnum):
    NOT_READY = "NotReady"
    OK = "OK"
    ERROR = "Error"


@dataclass(frozen=True, slots=True)
class Status:
    state: State = State.NOT_READY
    revision: int = 0
    digest: str = ""
    last_error: str = ""
    connected: bool = False

    @property
    def ready(self) -> bool:
        return self.state is State.OK


def activated(status: Status, revision: int, digest: str) -> Status:
    return replace(status, state=State.OK, revision=revision, digest=digest, last_error="")


def rejected(status: Status, error: str) -> Status:
    state = State.OK if status.state is State.OK else State.ERROR
    return replace(status, state=state, last_error=error)


def connection(status: Status, connected: bool) -> Status:
    return replace(status, connected=connected)
