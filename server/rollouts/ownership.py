"""One owner of the rollouts among the workers of one machine: an exclusive ``flock`` on a file.

With ``--workers N`` only the lock holder evaluates gates and advances steps; the others follow its state
file. The lock is released when its holder closes it or dies, so a dead owner is replaced by the next
worker that tries.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

LOCK_FILE = "controller.lock"
#: How often a worker that does not own the rollouts tries the lock again.
CLAIM_S = 1.0


class OwnerLock:
    """A non-blocking, rate-limited attempt at ``<directory>/controller.lock``."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = directory / LOCK_FILE
        self._clock = clock
        self._fd: int | None = None
        self._next_try = -float("inf")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """True when this call took the lock; tries at most once per ``CLAIM_S``."""
        now = self._clock()
        if self._fd is not None or now < self._next_try:
            return False
        self._next_try = now + CLAIM_S
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock: another worker takes over
            self._fd = None
