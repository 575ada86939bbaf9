"""Where large JSON bodies are decoded: a small pool of worker processes, never the event loop.

orjson (like every JSON parser for Python) holds the GIL for a whole parse: an 8 MiB body of tiny values
takes ~100 ms, and a worker *thread* would stall the event loop, health checks included, just as long.
Bodies whose JSON is ``OFFLOAD_BYTES`` or more are therefore decoded in one of ``workers`` processes
(``spawn``: nothing of the gateway's threads is forked), at most ``workers`` at a time, which also bounds
the memory their Python objects take (about 10-15x the JSON's size each, in the worker, freed after).
The pool starts with the gateway and stops with it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from sluice.server.codecs import InferRequest

#: JSON from this size on is decoded in a worker process (a 1 MiB body takes ~10 ms on the loop).
OFFLOAD_BYTES = 1024 * 1024


class LargeDecodes:
    """A bounded process pool for decoding large request bodies; see the module docstring."""

    def __init__(self, workers: int = 2) -> None:
        self._workers = workers
        self._slots = asyncio.Semaphore(workers)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Nothing yet: the processes start with the first large body (most gateways never see one)."""

    async def run(self, work: Callable[[], InferRequest]) -> InferRequest:
        """``work()`` in a worker process (``work`` must pickle: a module-level function and its args)."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self._workers, mp_context=context, initializer=_die_with_parent)
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _die_with_parent() -> None:
    """In a worker: ask Linux to end it when the gateway dies, even by SIGKILL (no orphans, no held pipes)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
