"""One rollout across many replicas: state, events, leadership and gate figures in Redis.

Selected by ``rollout_store: redis://HOST:PORT/DB``. Keys, under ``sluice:rollouts:``:

    leader              the leading replica's id, with an expiry (``LEASE_S``), renewed every ``SYNC_S``
    state               hash: model -> the controller's latest snapshot (JSON)
    seq                 incremented by every state write: replicas re-read ``state`` when it moves
    events, events:seq  the events log (a list, the newest ``EVENTS_KEPT``) and its write counter
    figures:M:V         hash: replica -> its gate window of model M, version V (JSON, expires)

Only the lease holder writes state (a Lua script checks the lease and writes in one step, so a replica
that lost the lease cannot overwrite its successor's decisions); an admin action answered by any replica
is written without that check. Nothing on the request path waits for Redis: ``save``, ``append`` and
``publish`` queue, ``load``, ``events`` and ``fleet`` read the copy that ``sync`` (the manager's loop)
refreshes. While Redis cannot be reached, routing stays as it was, the lease lapses on its own clock (no
step moves anywhere), and the loop retries; when it answers again a replica takes the lease and carries on
from the stored state (or, if Redis lost it, from the leader's own copy).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from sluice.server.rollouts.gates import Stats

log = logging.getLogger("sluice.rollout")

PREFIX = "sluice:rollouts:"
#: How long a lease lasts without renewal: a dead leader is replaced within this (plus one ``SYNC_S``).
LEASE_S = 3.0
#: How often a replica exchanges with Redis (renew or try the lease, write, read what others wrote).
SYNC_S = 0.25
#: How often a replica publishes its gate windows, and how old a published window may be to count.
PUBLISH_S = 1.0
FIGURES_TTL_S = 10.0
EVENTS_KEPT = 10_000
#: Latencies a replica publishes per window (evenly spaced order statistics of its own).
LATENCY_SAMPLE = 512
#: One exchange never takes longer; Redis that does not answer in time counts as down.
TIMEOUT_S = 1.0
RETRY_S = 1.0
PENDING_MAX = 1_000

# KEYS: leader; ARGV: id, ttl ms. 1: renewed, 2: taken, 0: another replica holds it.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""
# KEYS: leader, state, seq; ARGV: id, model, snapshot, fenced. The new seq, or 0 when not the leader.
_SAVE = """
if ARGV[4] == '1' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return redis.call('INCR', KEYS[3])
"""
# KEYS: leader; ARGV: id. Gives the lease up only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease:
    """This replica's view of the lease; ``RedisStore.sync`` renews it, its own clock expires it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.valid_until = -float("inf")
        self._taken = False

    @property
    def held(self) -> bool:
        return self._clock() < self.valid_until

    def try_acquire(self) -> bool:
        """True once after ``sync`` took the lease (the manager then reads the state and leads)."""
        taken, self._taken = self._taken and self.held, False
        return taken

    def release(self) -> None:
        self.valid_until = -float("inf")

    def renewed(self, at: float, *, taken: bool) -> None:
        # Counted from before the call: Redis's expiry started no earlier than that.
        self.valid_until = at + LEASE_S - SYNC_S
        self._taken = self._taken or taken


def _stats_json(stats: Stats, now_wall: float) -> bytes:
    latencies = np.sort(np.asarray(stats.latencies_s, dtype=np.float64))
    if latencies.size > LATENCY_SAMPLE:
        latencies = latencies[np.linspace(0, latencies.size - 1, LATENCY_SAMPLE).round().astype(int)]
    body = {
        "ts": now_wall,
        "requests": stats.requests,
        "errors": stats.errors,
        "latency_count": stats.latency_count,
        "latencies_s": latencies.round(9).tolist(),
        "compared": stats.compared,
        "disagreements": stats.disagreements,
    }
    return orjson.dumps(body)


def _stats_of(raw: bytes) -> tuple[float, Stats]:
    body = orjson.loads(raw)
    stats = Stats(
        requests=int(body["requests"]),
        errors=int(body["errors"]),
        latencies_s=tuple(body["latencies_s"]),
        latency_samples=int(body["latency_count"]),
        compared=int(body["compared"]),
        disagreements=int(body["disagreements"]),
    )
    return float(body["ts"]), stats


class RedisStore:
    """A ``StateStore`` shared by every replica that names the same Redis."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.where = url.split("@")[-1]  # never log a password
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = RedisLease(clock)
        self._clock, self._wall = clock, wall
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._state: dict[str, dict[str, Any]] = {}
        self._seq: int | None = None  # the last state write this replica has read (or made alone)
        self._stat = 0  # moves when the state was re-read: the manager rebuilds its controllers
        self._saves: dict[str, tuple[dict[str, Any], bool]] = {}
        self._events: deque[bytes] = deque(maxlen=PENDING_MAX)
        self._events_seen: int | None = None
        self._recent: list[dict[str, Any]] = []
        self._figures_out: dict[tuple[str, int], Callable[[], Stats]] = {}
        self._figures_in: dict[tuple[str, int], list[Stats]] = {}
        self._published = -float("inf")
        self._next = -float("inf")
        #: Whether Redis answered the latest exchange (None before the first).
        self.up: bool | None = None

    # ----- what the manager reads and writes (never waits) ---------------------------------------

    def load(self) -> dict[str, dict[str, Any]]:
        return self._state

    def stat(self) -> object:
        return self._stat

    def forget(self) -> None:
        """Nothing cached beyond what ``sync`` keeps fresh."""

    def save(self, model: str, snapshot: dict[str, Any], *, admin: bool = False) -> None:
        self._state[model] = snapshot
        previous = self._saves.get(model)
        self._saves[model] = (snapshot, admin or (previous is not None and previous[1]))

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        from datetime import UTC, datetime

        line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "replica": self.id, **event}
        if len(self._events) == self._events.maxlen:
            log.warning("rollout store %s unreachable: an event is dropped from its log", self.where)
        self._events.append(orjson.dumps(line))
        self._recent = [*self._recent, line][-200:]
        return line

    def events(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return [e for e in self._recent if model is None or e.get("model") == model][-limit:]

    def publish(self, key: tuple[str, int], figures: Callable[[], Stats]) -> None:
        """Queue this replica's window of ``key`` (computed when next sent, at most every ``PUBLISH_S``)."""
        self._figures_out[key] = figures

    def fleet(self, key: tuple[str, int]) -> list[Stats]:
        """The other replicas' latest windows of ``key`` (model, version)."""
        return self._figures_in.get(key, [])

    # ----- the exchange (the manager's loop) -----------------------------------------------------

    async def sync(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + SYNC_S
        try:
            await asyncio.wait_for(self._exchange(now), TIMEOUT_S * 2)
        except (RedisError, OSError, TimeoutError) as exc:
            self._next = now + RETRY_S
            self._health(False, exc)
            return
        self._health(True, None)

    def _health(self, up: bool, exc: BaseException | None) -> None:
        if up != self.up:
            if up:
                log.info("rollout store %s reachable (replica %s)", self.where, self.id)
            else:
                log.warning(
                    "rollout store %s unreachable (%s): routing stays as it is, no step moves until it "
                    "answers",
                    self.where,
                    exc or "timeout",
                )
            self.up = up

    async def _exchange(self, started: float) -> None:
        r = self._redis
        got = int(await r.eval(_LEASE, 1, PREFIX + "leader", self.id, int(LEASE_S * 1000)))
        if got:
            self.lease.renewed(started, taken=got == 2 or not self.lease.held)
        else:
            self.lease.release()
        for model, (snapshot, admin) in list(self._saves.items()):
            seq = int(
                await r.eval(
                    _SAVE,
                    3,
                    PREFIX + "leader",
                    PREFIX + "state",
                    PREFIX + "seq",
                    self.id,
                    model,
                    orjson.dumps(snapshot),
                    "0" if admin else "1",
                )
            )
            if self._saves.get(model, (None,))[0] is snapshot:
                del self._saves[model]
            if seq and self._seq is not None and seq == self._seq + 1:
                self._seq = seq  # only our write since we last read: nothing new to read
        if self._events:
            batch = list(self._events)
            async with r.pipeline(transaction=True) as p:
                p.rpush(PREFIX + "events", *batch)
                p.ltrim(PREFIX + "events", -EVENTS_KEPT, -1)
                p.incr(PREFIX + "events:seq")
                await p.execute()
            for _ in batch:
                self._events.popleft()
        await self._read_state()
        await self._read_events()
        if started - self._published >= PUBLISH_S:
            self._published = started
            await self._exchange_figures()

    async def _read_state(self) -> None:
        raw_seq = await self._redis.get(PREFIX + "seq")
        seq = int(raw_seq or 0)
        if seq == self._seq:
            return
        raw = await self._redis.hgetall(PREFIX + "state")
        state = {k.decode(): orjson.loads(v) for k, v in raw.items()}
        # Our own writes not yet flushed stay ours until they are.
        state.update({model: snapshot for model, (snapshot, _) in self._saves.items()})
        self._state, self._seq, self._stat = state, seq, self._stat + 1

    async def _read_events(self) -> None:
        seen = int(await self._redis.get(PREFIX + "events:seq") or 0)
        if seen == self._events_seen:
            return
        raw = await self._redis.lrange(PREFIX + "events", -200, -1)
        self._recent, self._events_seen = [orjson.loads(line) for line in raw], seen

    async def _exchange_figures(self) -> None:
        wall = self._wall()
        out, self._figures_out = self._figures_out, {}  # the manager queues what is still moving
        async with self._redis.pipeline(transaction=False) as p:
            for (model, version), figures in out.items():
                key = f"{PREFIX}figures:{model}:{version}"
                p.hset(key, self.id, _stats_json(figures(), wall))
                p.expire(key, int(FIGURES_TTL_S))
            await p.execute()
        found: dict[tuple[str, int], list[Stats]] = {}
        for model, version in out:
            raw = await self._redis.hgetall(f"{PREFIX}figures:{model}:{version}")
            for replica, body in raw.items():
                ts, stats = _stats_of(body)
                if replica.decode() != self.id and wall - ts <= 3 * PUBLISH_S:
                    found.setdefault((model, version), []).append(stats)
        self._figures_in = found

    async def close(self) -> None:
        """Flush what is queued (bounded), give the lease up if it is ours, close the connection."""
        try:
            self._next = -float("inf")
            await self.sync()
            if self.lease.held:
                await asyncio.wait_for(self._redis.eval(_RELEASE, 1, PREFIX + "leader", self.id), TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("rollout store %s: could not hand the lease back (%s)", self.where, exc)
        finally:
            self.lease.release()
            await self._redis.aclose()
