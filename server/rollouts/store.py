"""Where rollouts outlive the process: a state file and an append-only events log (JSON lines).

``rollouts-state.json`` holds each model's latest controller snapshot, replaced atomically (write aside,
then rename), so a crash leaves the previous state, never half of one. ``rollouts-events.jsonl`` gets one
line per transition, with a wall-clock timestamp; it is only ever appended to.

``StateStore`` is what the ``RolloutManager`` asks of any store: this local one (one machine; its workers
share it through the file and elect an owner with ``OwnerLock``) or ``RedisStore``
(``sluice.server.rollouts.redis_store``: a fleet of replicas, leadership by a lease). ``open_store``
picks one from the settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sluice.server.rollouts.gates import Stats
from sluice.server.rollouts.ownership import OwnerLock

if TYPE_CHECKING:
    from sluice.server.settings import Settings

log = logging.getLogger("sluice.rollout")

STATE_FILE = "rollouts-state.json"
EVENTS_FILE = "rollouts-events.jsonl"


class Lease(Protocol):
    """Who leads the rollouts: ``try_acquire`` is True on the call that took it; ``held`` while it lasts."""

    @property
    def held(self) -> bool: ...

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


class StateStore(Protocol):
    """Rollout state, events and leadership, as the manager uses them (all calls but ``sync`` and
    ``close`` are synchronous and never wait on a network: a shared store exchanges in ``sync``)."""

    #: Other processes read and write the same state (follow it; lead only while holding ``lease``).
    shared: bool
    where: str
    #: Whether the store answered lately (a local file always does).
    up: bool | None

    @property
    def lease(self) -> Lease: ...

    def load(self) -> dict[str, dict[str, Any]]: ...

    def stat(self) -> object: ...

    def forget(self) -> None: ...

    def save(self, model: str, snapshot: dict[str, Any], *, admin: bool = False) -> None: ...

    def append(self, event: dict[str, Any]) -> dict[str, Any]: ...

    def events(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]: ...

    def publish(self, key: tuple[str, int], figures: Callable[[], Stats]) -> None: ...

    def fleet(self, key: tuple[str, int]) -> list[Stats]: ...

    async def sync(self) -> None: ...

    async def close(self) -> None: ...


def open_store(settings: Settings) -> StateStore:
    """The store ``settings.rollout_store`` names: Redis, or the local state directory when unset."""
    if settings.rollout_store is not None:
        from sluice.server.rollouts.redis_store import RedisStore  # the redis client only when used

        return RedisStore(settings.rollout_store)
    return RolloutStore(state_dir(settings), shared=settings.workers > 1)


def state_dir(settings: Settings) -> Path:
    """``state_dir``, or ``.sluice`` beside the rollouts file: never where the gateway happened to start."""
    if settings.state_dir is not None:
        return settings.state_dir.absolute()
    beside = settings.rollout_file.absolute().parent if settings.rollout_file is not None else Path.cwd()
    return beside / ".sluice"


class RolloutStore:
    """The state directory of one gateway's rollouts (one machine; its workers share the file)."""

    def __init__(self, directory: Path, *, shared: bool = False) -> None:
        self.directory = Path(directory)
        self.state_path = self.directory / STATE_FILE
        self.events_path = self.directory / EVENTS_FILE
        self.where = str(self.directory)
        self.shared = shared
        self.lease: Lease = OwnerLock(self.directory)
        self.up: bool | None = True
        self._state: dict[str, dict[str, Any]] | None = None

    async def sync(self) -> None:
        """Nothing to exchange: the file is read when ``stat`` changes."""

    async def close(self) -> None:
        self.lease.release()

    def publish(self, key: tuple[str, int], figures: Callable[[], Stats]) -> None:
        """Workers of one machine do not pool gate figures (use analysis.source: prometheus for that)."""

    def fleet(self, key: tuple[str, int]) -> list[Stats]:
        return []

    def load(self) -> dict[str, dict[str, Any]]:
        """Every model's saved snapshot (empty when there is none or it cannot be read)."""
        if self._state is None:
            try:
                body = orjson.loads(self.state_path.read_bytes())
                self._state = body if isinstance(body, dict) else {}
            except FileNotFoundError:
                self._state = {}
            except (OSError, orjson.JSONDecodeError) as exc:
                log.error("cannot read %s (%s); rollouts start from their first step", self.state_path, exc)
                self._state = {}
        return self._state

    def stat(self) -> object:
        """The state file's (mtime in ns, size), or ``None`` while there is none: changes when rewritten."""
        try:
            st = self.state_path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def forget(self) -> None:
        """Drop the cached state: the next ``load`` reads the file again (another process wrote it)."""
        self._state = None

    def save(self, model: str, snapshot: dict[str, Any], *, admin: bool = False) -> None:
        state = self.load()
        state[model] = snapshot
        self.directory.mkdir(parents=True, exist_ok=True)
        aside = self.state_path.with_suffix(".json.tmp")
        aside.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        os.replace(aside, self.state_path)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), **event}
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.events_path.open("ab") as f:
            f.write(orjson.dumps(line) + b"\n")
        return line

    def events(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest ``limit`` events (of ``model``), oldest first."""
        out: list[dict[str, Any]] = []
        with contextlib.suppress(FileNotFoundError):
            for raw in self.events_path.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError):
                    event = orjson.loads(raw)
                    if model is None or event.get("model") == model:
                        out.append(event)
        return out[-limit:]
