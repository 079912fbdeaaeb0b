"""Child processes that cannot outlive the test run.

Each child gets its own process group (so a stop reaches anything it forks), its
output in a log file (whose tail goes into error messages), and on Linux a
parent-death signal: if pytest is killed outright, the kernel kills the child.
Every live process is also registered for an ``atexit`` sweep. A ``detached``
process (the ``python -m tests.harness.node up`` CLI) gets neither: it is meant
to outlive the Python process that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


# The parent-death signal is set by util-linux's setpriv, which then execs the real
# command: never by a ``preexec_fn``. A preexec_fn makes Python run its at-fork
# hooks in the child, and gRPC's child hook, run in the fork of a threaded test
# process, can abort the child (SIGABRT) before it execs.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the kernel SIGKILLs it when the test process dies."""
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ManagedProcess:
    """One long-running child process with a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        detached: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.detached = detached
        self._env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child; its stdout and stderr go to ``log_path``."""
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv if self.detached else dying_with_parent(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        if not self.detached:
            with _live_lock:
                _live.add(self)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def exit_code(self) -> int | None:
        """None while running (or never started), else the exit status."""
        return self._proc.poll() if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout``; always reaps."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            # Anything left in the group (forked helpers) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        finally:
            with _live_lock:
                _live.discard(self)


@atexit.register
def _sweep() -> None:
    with _live_lock:
        procs = list(_live)
    for p in procs:
        with contextlib.suppress(Exception):
            p.stop(timeout=3)
