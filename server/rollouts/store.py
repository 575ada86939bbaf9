"""Where rollouts outlive the process: a state file and an append-only events log (JSON lines).

``rollouts-state.json`` holds each model's latest controller snapshot, replaced atomically (write aside,
then rename), so a crash leaves the previous state, never half of one. ``rollouts-events.jsonl`` gets one
line per transition, with a wall-clock timestamp; it is only ever appended to.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("sluice.rollout")

STATE_FILE = "rollouts-state.json"
EVENTS_FILE = "rollouts-events.jsonl"


class RolloutStore:
    """The state directory of one gateway's rollouts."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.state_path = self.directory / STATE_FILE
        self.events_path = self.directory / EVENTS_FILE
        self._state: dict[str, dict[str, Any]] | None = None

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

    def stat(self) -> tuple[int, int] | None:
        """The state file's (mtime in ns, size), or ``None`` while there is none: changes when rewritten."""
        try:
            st = self.state_path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def forget(self) -> None:
        """Drop the cached state: the next ``load`` reads the file again (another process wrote it)."""
        self._state = None

    def save(self, model: str, snapshot: dict[str, Any]) -> None:
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
