"""Which version one request goes to: pure and deterministic given the request and a random source.

Resolution order, first match wins (the reason becomes a metric label and the ``x-route-reason`` header):
the override header with an allowed value (``override``; a value outside the allow-list is a 400, never a
silent fallback), a sticky key (``sticky``), a draw from the random source (``split``); with one version
at 100 % there is nothing to draw (``default``). Pinned versions and labels (``explicit``, ``label``) never
reach the router.

Sticky buckets: a keyed BLAKE2b of (model, key) with the salt as the key, mod 10000. The versions own
consecutive bucket ranges, the newest first, so the candidate owns ``[0, weight x 100)``: raising its
weight only adds buckets, and a user already on the candidate stays there. Python's ``hash()`` is never
used: it changes per process.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sluice.converters.artifact.errors import BadRequestError

BUCKETS = 10_000


def bucket(salt: str, model: str, key: str) -> int:
    """The sticky bucket of ``key`` in ``[0, 10000)``: the same in every process and after restarts.

    >>> bucket("churn-q4", "churn", "user-42") == bucket("churn-q4", "churn", "user-42")
    True
    """
    digest = hashlib.blake2b(
        f"{model}\x00{key}".encode(), key=salt.encode()[:64], digest_size=8, person=b"sluice-route"
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class Route:
    version: int
    reason: str


@dataclass(frozen=True)
class Split:
    """Weights in percent per version, in bucket order (candidate first, stable last)."""

    order: tuple[tuple[int, float], ...]

    @classmethod
    def of(cls, weights: Mapping[int, float], stable: int | None = None) -> Split:
        """Bucket order: every non-stable version, newest first, then the stable one."""
        if stable is None:
            stable = max(weights, key=lambda v: (weights[v], -v)) if weights else None
        others = sorted((v for v in weights if v != stable), reverse=True)
        order = [(v, float(weights[v])) for v in others]
        if stable is not None:
            order.append((stable, float(weights.get(stable, 0.0))))
        return cls(tuple(order))

    def at(self, point: float) -> int | None:
        """The version owning ``point`` in ``[0, 100)`` (percent); ``None`` with no positive weight."""
        edge = 0.0
        positive = [(v, w) for v, w in self.order if w > 0]
        for version, weight in positive:
            edge += weight
            if point < edge:
                return version
        return positive[-1][0] if positive else None

    def single(self) -> int | None:
        positive = [v for v, w in self.order if w > 0]
        return positive[0] if len(positive) == 1 else None


class Router:
    """Picks a version for one model's unpinned requests."""

    def __init__(
        self,
        model: str,
        split: Split,
        *,
        override_header: str | None = None,
        allow: tuple[int, ...] = (),
        sticky: tuple[str, str] | None = None,
        salt: str = "",
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.model = model
        self.split = split
        self.override_header = override_header.lower() if override_header else None
        self.allow = frozenset(allow)
        self.sticky = sticky
        self.salt = salt
        self._random = random_source

    def pick(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Route | None:
        """The route for one request, or ``None`` when the split is empty (the registry's default)."""
        if self.override_header is not None:
            value = headers.get(self.override_header)
            if value is not None:
                if not value.strip().isdigit() or int(value) not in self.allow:
                    raise BadRequestError(
                        f"{self.override_header}: {value!r} is not an allowed version of '{self.model}'",
                        details={"allowed": sorted(self.allow)},
                    )
                return Route(int(value), "override")
        single = self.split.single()
        if self.sticky is not None and single is None:
            where, name = self.sticky
            key = (headers if where == "header" else query).get(name)
            if key is not None:
                found = self.split.at(bucket(self.salt, self.model, key) * 100 / BUCKETS)
                return None if found is None else Route(found, "sticky")
        if single is not None:
            return Route(single, "default")
        found = self.split.at(self._random() * 100)
        return None if found is None else Route(found, "split")
