"""One model's entry of the rollouts file, the live objects built from it, and the policy it routes by.

``policy_of`` is pure: the weights and ``Policy`` a model routes by now, from what the file says and where
its rollout stands. The manager publishes it; ``sluice.server.routing.decide`` applies it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sluice.server.registry import ModelVersion
from sluice.server.rollouts.controller import ACTIVE, Phase, RolloutController
from sluice.server.rollouts.prometheus import PrometheusFigures
from sluice.server.rollouts.shadowing import Mirror
from sluice.server.rollouts.spec import ModelRollouts
from sluice.server.routing import Policy, Split


@dataclass
class Plan:
    """What the file says about one model, and the live objects built from it."""

    entry: ModelRollouts
    policy: Policy | None = None
    weights: dict[int, float] = field(default_factory=dict)
    mirrors: list[Mirror] = field(default_factory=list)
    rollout_mirror: Mirror | None = None
    controller: RolloutController | None = None
    figures: PrometheusFigures | None = None
    waiting: str = ""
    last_eval: float = -float("inf")

    @property
    def stable(self) -> int | None:
        spec = self.entry.rollout
        if spec is not None:
            done = self.controller is not None and self.controller.phase is Phase.SUCCEEDED
            return spec.candidate if done else spec.stable
        weights = self.entry.traffic.weights if self.entry.traffic else {}
        return max(weights, key=lambda v: (weights[v], -v)) if weights else None


def policy_of(plan: Plan) -> tuple[dict[int, float], Policy]:
    """The weights and the routing policy of one model, from its file entry and its rollout's state.

    Labels: the file's own, ``stable`` (the rollout's stable version, or the candidate once it succeeded;
    without a rollout, the version with the most weight) and ``canary`` (the rollout's candidate).
    """
    entry, controller = plan.entry, plan.controller
    traffic = entry.traffic
    weights = dict(traffic.weights) if traffic is not None else {}
    if entry.rollout is not None and (not weights or controller is not None):
        stable, candidate = entry.rollout.stable, entry.rollout.candidate
        share = controller.weight if controller is not None else 0.0
        if controller is None or (controller.phase not in ACTIVE and controller.phase is not Phase.SUCCEEDED):
            weights = weights or {stable: 100.0}
        else:
            weights = {stable: 100.0 - share, candidate: share}
    labels = dict(entry.labels)
    if plan.stable is not None:
        labels["stable"] = plan.stable
    if entry.rollout is not None:
        labels["canary"] = entry.rollout.candidate
    override = traffic.override if traffic is not None else None
    sticky = traffic.sticky if traffic is not None else None
    policy = Policy(
        split=Split.of(weights, plan.stable if plan.stable in weights else None) if weights else None,
        labels=labels,
        override_header=override.header.lower() if override else None,
        allow=frozenset(override.allow) if override else frozenset(),
        sticky=sticky.source() if sticky else None,
        salt=sticky.salt if sticky else "",
    )
    return weights, policy


class Digests:
    """The sha256 of a version's artifact (part of a rollout's identity): the manifest's, else computed once
    per load of the version."""

    def __init__(self) -> None:
        self._computed: dict[tuple[Path, int], str] = {}

    def __call__(self, mv: ModelVersion) -> str:
        if mv.manifest.sha256:
            return mv.manifest.sha256
        key = (mv.path, id(mv))
        if key not in self._computed:
            self._computed[key] = hashlib.sha256((mv.path / "model.onnx").read_bytes()).hexdigest()
        return self._computed[key]
