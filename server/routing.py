"""Which version one request goes to: one pure function, ``decide``, over a typed ``RoutingTable``.

The whole decision lives here. Order, first match wins (the reason becomes a metric label and the
``x-route-reason`` header):

1. ``explicit``: the path names a version (``/versions/3``).
2. ``label``: the path names a label (``/labels/canary``). One label namespace per model: the labels of its
   ``config.yaml``, then those of the rollouts file (which win on a clash), then ``stable`` and ``canary``
   as the rollout sets them.
3. ``override``: the model's override header names an allowed version (a value outside the allow-list is
   a 400, never a silent fallback).
4. ``sticky``: the model's sticky key is present: its bucket picks the version.
5. ``split``: a draw from the random source over the weights.
6. ``default``: the ``stable`` label when it is ready, else the newest ready version.

A version picked by 4 or 5 that is not ready falls back to 6: traffic never waits for a warm-up.

The table is rebuilt, never edited: the registry publishes which versions are ready (and why the others
are not), the rollout machinery publishes each model's ``Policy``, and ``Routing`` combines the two into a
new immutable table that the next request reads.

Sticky buckets: a keyed BLAKE2b of (model, key) with the salt as the key, mod 10000. The versions own
consecutive bucket ranges, the newest first, so the candidate owns ``[0, weight x 100)``: raising its
weight only adds buckets, and a user already on the candidate stays there. Python's ``hash()`` is never
used: it changes per process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from sluice.converters.artifact.errors import (
    BadRequestError,
    ModelNotFoundError,
    NotReadyError,
    VersionNotFoundError,
)

BUCKETS = 10_000
#: Longest version number accepted from a client (a path or a header): more digits than any repository
#: holds, and few enough that ``int()`` is cheap on hostile input.
MAX_VERSION_DIGITS = 9


def parse_version(text: str) -> int | None:
    """The version number ``text`` spells in ASCII digits, else None (it may be a label).

    Only ASCII digits make a version: ``int()`` would also read ``"٣"`` or ``"３"`` as 3.

    >>> [parse_version(text) for text in ("3", "03", "0", "٣", "canary")]
    [3, 3, None, None, None]
    """
    if not text or len(text) > MAX_VERSION_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number > 0 else None


def bucket(salt: str, model: str, key: str) -> int:
    """The sticky bucket of ``key`` in ``[0, 10000)``: the same in every process and after restarts.

    >>> bucket("churn-q4", "churn", "user-42") == bucket("churn-q4", "churn", "user-42")
    True
    """
    digest = hashlib.blake2b(
        f"{model}\x00{key}".encode(), key=salt.encode()[:64], digest_size=8, person=b"sluice-route"
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Target:
    """What the request's path names: a model, and at most one of a version or a label."""

    model: str
    version: int | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True)
class Policy:
    """What the rollouts file (and a running rollout) says about one model's unpinned traffic."""

    split: Split | None = None
    labels: Mapping[str, int] = field(default_factory=dict)
    override_header: str | None = None  # lower-case
    allow: frozenset[int] = frozenset()
    sticky: tuple[str, str] | None = None  # ("header" | "query", name)
    salt: str = ""


@dataclass(frozen=True)
class ModelRoutes:
    """One model's row of the table: its ready versions, its labels and its policy."""

    ready: frozenset[int]
    #: Versions on disk that do not serve now, with why (``LOADING``, ``UNAVAILABLE: bad manifest``).
    waiting: Mapping[int, str] = field(default_factory=dict)
    labels: Mapping[str, int] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)

    @property
    def default(self) -> int | None:
        stable = self.labels.get("stable")
        if stable is not None and stable in self.ready:
            return stable
        return max(self.ready) if self.ready else None


@dataclass(frozen=True)
class RoutingTable:
    models: Mapping[str, ModelRoutes] = field(default_factory=dict)


def decide(
    table: RoutingTable,
    target: Target,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    draw: Callable[[], float],
) -> Route:
    """The ready version that serves one request, and why (see the module's docstring for the order).

    ``headers`` are read case-insensitively by lower-case name (Starlette's ``Headers``); ``draw`` gives a
    uniform number in ``[0, 1)`` and is called only when a split has to be drawn.
    """
    routes = _routes(table, target.model)
    if target.version is not None or target.label is not None:
        return lookup(table, target)
    policy = routes.policy
    if policy.override_header is not None:
        value = headers.get(policy.override_header)
        if value is not None:
            pinned = parse_version(value.strip())
            if pinned is None or pinned not in policy.allow:
                raise BadRequestError(
                    f"{policy.override_header}: {value[:40]!r} is not an allowed version of '{target.model}'",
                    details={"allowed": sorted(policy.allow)},
                )
            return Route(_ready(routes, target.model, pinned), "override")
    split = policy.split
    if split is not None:
        single = split.single()
        picked: Route | None = None
        if single is not None:
            picked = Route(single, "default")
        else:
            if policy.sticky is not None:
                where, name = policy.sticky
                key = (headers if where == "header" else query).get(name)
                if key is not None:
                    found = split.at(bucket(policy.salt, target.model, key) * 100 / BUCKETS)
                    picked = None if found is None else Route(found, "sticky")
            if picked is None:
                found = split.at(draw() * 100)
                picked = None if found is None else Route(found, "split")
        if picked is not None and picked.version in routes.ready:
            return picked
    default = routes.default
    if default is None:
        raise NotReadyError(f"model '{target.model}' has no ready version")
    return Route(default, "default")


def lookup(table: RoutingTable, target: Target) -> Route:
    """The version a path names (``explicit``, ``label``) or the model's default, with no routing policy.

    What metadata, readiness and monitoring endpoints describe; ``decide`` starts the same way.
    """
    routes = _routes(table, target.model)
    if target.version is not None:
        return Route(_ready(routes, target.model, target.version), "explicit")
    if target.label is not None:
        version = routes.labels.get(target.label)
        if version is None:
            raise VersionNotFoundError(
                f"model '{target.model}' has no label '{target.label}'",
                details={"labels": sorted(routes.labels)},
            )
        return Route(_ready(routes, target.model, version), "label")
    default = routes.default
    if default is None:
        raise NotReadyError(f"model '{target.model}' has no ready version")
    return Route(default, "default")


def _routes(table: RoutingTable, model: str) -> ModelRoutes:
    routes = table.models.get(model)
    if routes is None:
        raise ModelNotFoundError(f"unknown model '{model}'", details={"models": sorted(table.models)})
    return routes


def _ready(routes: ModelRoutes, model: str, version: int) -> int:
    if version in routes.ready:
        return version
    why = routes.waiting.get(version)
    if why is None:
        raise VersionNotFoundError(
            f"model '{model}' has no version {version}",
            details={"versions": [str(v) for v in sorted(routes.ready)]},
        )
    raise NotReadyError(f"model '{model}' version {version} is {why}")


class Routing:
    """The live table: the registry's and the rollout machinery's halves, combined on every change."""

    def __init__(self) -> None:
        self.table = RoutingTable()
        self._versions: dict[str, ModelRoutes] = {}
        self._policies: dict[str, Policy] = {}

    def publish_versions(self, versions: Mapping[str, ModelRoutes]) -> None:
        """The registry's half: every model's ready and waiting versions and ``config.yaml`` labels."""
        self._versions = dict(versions)
        self._rebuild()

    def publish_policies(self, policies: Mapping[str, Policy]) -> None:
        """The rollout machinery's half: each model's split, override, sticky key and labels."""
        self._policies = dict(policies)
        self._rebuild()

    def _rebuild(self) -> None:
        models = {}
        for model, routes in self._versions.items():
            policy = self._policies.get(model)
            if policy is not None:
                routes = replace(routes, labels={**routes.labels, **policy.labels}, policy=policy)
            models[model] = routes
        self.table = RoutingTable(models)
