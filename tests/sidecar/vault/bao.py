"""A real OpenBao server (``bao server -dev``) for the Vault credential tests.

The binary is installed by scripts/setup.d/45-openbao.sh into
``$PALISADE_CACHE/openbao/<version>/bao`` (or named by ``PALISADE_BAO``). The dev
server keeps everything in memory, unsealed, with a root token we choose; it runs
on a random loopback port as a :class:`~tests.harness.process.ManagedProcess`
(its own process group, killed with pytest). ``stop()`` and ``start()`` again
keep the port and the root token, so a test can take Vault down and bring it back
(its data is gone then, as after a real outage of an in-memory server).
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import hvac

from tests.harness.process import ManagedProcess, free_port

OPENBAO_VERSION = "2.7.2"


class BaoMissing(RuntimeError):
    pass


def bao_binary() -> Path:
    env = os.environ.get("PALISADE_BAO")
    if env:
        path = Path(env)
    else:
        cache = Path(os.environ.get("PALISADE_CACHE", Path.home() / ".cache" / "palisade"))
        path = cache / "openbao" / OPENBAO_VERSION / "bao"
    if not os.access(path, os.X_OK):
        raise BaoMissing(
            f"OpenBao's bao binary not found at {path}. Run `make setup` "
            "(scripts/setup.d/45-openbao.sh installs it) or set PALISADE_BAO."
        )
    return path


class BaoServer:
    """``bao server -dev`` on ``127.0.0.1:<port>`` with a random root token."""

    def __init__(self, workdir: Path) -> None:
        self.binary = bao_binary()
        self.workdir = workdir
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.root_token = "root-" + secrets.token_hex(12)
        self._proc: ManagedProcess | None = None
        self._starts = 0

    def start(self, timeout: float = 30.0) -> None:
        self._starts += 1
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.workdir),  # the CLI must not touch the real ~/.vault-token
        }
        self._proc = ManagedProcess(
            "bao",
            [
                str(self.binary),
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ],
            self.workdir / f"bao-{self._starts}.log",
            env=env,
        )
        self._proc.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._proc.running():
                raise RuntimeError(f"bao exited early:\n{self._proc.log_tail()}")
            try:
                with urllib.request.urlopen(self.addr + "/v1/sys/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"bao did not become healthy within {timeout}s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def log_text(self) -> str:
        logs = sorted(self.workdir.glob("bao-*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def client(self, token: str | None = None) -> Any:
        return hvac.Client(url=self.addr, token=token or self.root_token, timeout=5)
