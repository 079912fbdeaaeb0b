"""The shared lifecycle: SIGTERM and SIGINT stop a daemon gracefully, within a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from palisade.runtime.lifecycle import supervise


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_sets_stop_and_a_clean_return_exits_zero(sig: signal.Signals) -> None:
    seen: list[str] = []

    async def main(stop: asyncio.Event) -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), sig)
        await stop.wait()
        seen.append("stopped")

    assert await supervise(main, grace_s=2) == 0
    assert seen == ["stopped"]


async def test_a_daemon_ignoring_stop_is_cancelled_after_the_grace_period() -> None:
    cancelled: list[bool] = []

    async def main(stop: asyncio.Event) -> None:
        asyncio.get_running_loop().call_later(0.02, os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    t0 = time.monotonic()
    assert await supervise(main, grace_s=0.2, hard_s=1) == 1
    assert cancelled == [True] and time.monotonic() - t0 < 2


async def test_a_failing_daemon_exits_one() -> None:
    async def main(stop: asyncio.Event) -> None:
        raise RuntimeError("boom")

    assert await supervise(main) == 1


def test_a_real_process_stops_on_sigterm_with_uvloop() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        from palisade.runtime.lifecycle import run_daemon
        async def main(stop):
            print(type(asyncio.get_running_loop()).__module__, flush=True)
            await stop.wait()
            print("clean", flush=True)
        sys.exit(run_daemon(main))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    loop_module = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and out.strip() == "clean"
    assert loop_module.startswith("uvloop")
