"""The shared async lifecycle of a daemon: event loop, signals, timed graceful shutdown.

``run_daemon(main)`` installs uvloop when available, runs ``main(stop)`` where
``stop`` is an :class:`asyncio.Event` set by SIGTERM or SIGINT (through
``loop.add_signal_handler``, so Kubernetes' SIGTERM is honoured, not only
Ctrl-C), and gives ``main`` ``grace_s`` seconds to return after the signal;
then it is cancelled, and after ``hard_s`` more the process exits anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Main = Callable[[asyncio.Event], Awaitable[None]]


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when it is installed; True if it is in use."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def supervise(main: Main, *, grace_s: float = 10.0, hard_s: float = 5.0) -> int:
    """Run ``main(stop)`` until it returns or a signal's grace period runs out.

    Returns the exit status: 0 after a clean stop, 1 when ``main`` failed or
    had to be cancelled.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        log.info("signal received, shutting down", extra={"signal": sig.name})
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    task = asyncio.ensure_future(main(stop))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                log.warning("graceful shutdown timed out; cancelling", extra={"grace_s": grace_s})
                task.cancel()
                await asyncio.wait({task}, timeout=hard_s)
                return 1
        if task.cancelled():
            return 1
        exc = task.exception()
        if exc is not None:
            log.error("daemon failed", exc_info=exc)
            return 1
        return 0
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
        for sig in signals:
            loop.remove_signal_handler(sig)


def run_daemon(main: Main, *, grace_s: float = 10.0, hard_s: float = 5.0) -> int:
    """Blocking entry point for a daemon's ``main``; returns the process exit status."""
    install_uvloop()
    return asyncio.run(supervise(main, grace_s=grace_s, hard_s=hard_s))
