"""The rollouts file (``rollouts.yaml``): its typed model and every lint rule.

The file is validated whole before it applies: ``parse_rollouts`` raises ``RolloutConfigError`` with every
problem found (structure first, then the rules of ``problems``), and ``lint`` returns them as messages.
Versions that must exist are checked only when the caller knows them (the gateway does; the CLI does when
given ``--repository``). Semantics: ``docs/rollouts.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from sluice.converters.artifact.errors import ConfigError, RolloutConfigError
from sluice.server.settings import read_yaml

GATE_METRICS = ("error_rate", "latency_p99_ms", "drift", "shadow_disagreement")
RESERVED_LABELS = ("stable", "canary")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_STICKY_KEY = re.compile(r"^(header|query):(.+)$")
#: Which thresholds each gate metric reads.
_THRESHOLDS = {
    "error_rate": ("max", "max_increase_over_stable"),
    "latency_p99_ms": ("max", "max_ratio_to_stable"),
    "drift": ("max_alarms",),
    "shadow_disagreement": ("max",),
}


def parse_duration(value: Any) -> float:
    """Seconds from ``30s``, ``10m``, ``1h30m``, ``500ms`` or a plain number of seconds.

    >>> parse_duration("1h30m"), parse_duration("0.2s"), parse_duration(5)
    (5400.0, 0.2, 5.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (like 30s, 10m, 1h)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"'{value}' is not a duration (like 30s, 10m, 1h)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Override(_Strict):
    """A header that pins a version, accepted only for versions in ``allow``."""

    header: str = "x-model-version"
    allow: list[int] = Field(default_factory=list)


class Sticky(_Strict):
    """Route by a key (``header:<name>`` or ``query:<name>``) so one user keeps one version."""

    key: str
    salt: str = ""

    def source(self) -> tuple[str, str]:
        match = _STICKY_KEY.match(self.key)
        assert match is not None  # checked by problems()
        return match.group(1), match.group(2).lower() if match.group(1) == "header" else match.group(2)


class Traffic(_Strict):
    """The steady-state split, used when no rollout is active."""

    weights: dict[int, float] = Field(default_factory=dict)
    override: Override | None = None
    sticky: Sticky | None = None


class Compare(_Strict):
    """How a shadow's output is compared with the primary's, row by row (``rollouts.comparison``).

    ``auto`` judges by the model's kind (manifest): a classifier's decision, a regressor's value within
    ``rtol`` of its reference spread; ``allclose`` (within ``atol``) and ``argmax`` are explicit choices.
    """

    output: str | None = None
    mode: Literal["auto", "decision", "relative", "argmax", "allclose", "none"] = "auto"
    atol: float = Field(1e-4, ge=0)
    rtol: float | None = Field(None, gt=0)
    scale: float | None = Field(None, gt=0)


class Shadow(_Strict):
    """A standing mirror of a percentage of the model's traffic to another version."""

    version: int
    percent: float = 100.0
    max_in_flight: int = Field(4, ge=1)
    timeout_ms: float = Field(1000.0, gt=0)
    compare: Compare = Field(default_factory=Compare)


class Step(_Strict):
    """One step: exactly one of ``shadow`` (percent mirrored), ``weight`` (percent routed), ``pause``."""

    shadow: float | None = None
    weight: float | None = None
    pause: bool | None = None
    for_s: Duration | None = Field(None, alias="for")

    @property
    def kind(self) -> str:
        return "shadow" if self.shadow is not None else "weight" if self.weight is not None else "pause"


class PrometheusSource(_Strict):
    """Where the error-rate and latency gates read their figures when ``analysis.source: prometheus``."""

    url: str
    timeout: Duration = 5.0
    #: Extra label matchers added to every query, e.g. ``job="sluice"`` (PromQL syntax, no braces).
    selector: str = ""


class Analysis(_Strict):
    """How often gates are evaluated, over what trailing window, and what too little traffic means.

    ``source: prometheus`` reads request, error and latency figures from a Prometheus server (every
    replica's traffic) instead of this process's windows; drift and shadow gates stay in-process.
    """

    interval: Duration = 30.0
    window: Duration = 120.0
    min_samples: int = Field(100, ge=1)
    on_insufficient: Literal["hold", "pass", "fail"] = "hold"
    failure_limit: int = Field(3, ge=1)
    #: A gate insufficient this long makes the rollout say ``waiting for ...`` (status, event, metric).
    insufficient_after: Duration = 300.0
    source: Literal["inprocess", "prometheus"] = "inprocess"
    prometheus: PrometheusSource | None = None


class Gate(_Strict):
    """One check on the candidate (and, for relative thresholds, on the stable version)."""

    metric: str
    max: float | None = None
    max_increase_over_stable: float | None = None
    max_ratio_to_stable: float | None = None
    max_alarms: int | None = None
    dry_run: bool = False


class RolloutSpec(_Strict):
    """A progressive rollout of ``candidate`` over ``stable``."""

    stable: int
    candidate: int
    steps: list[Step] = Field(default_factory=list)
    step_weights: list[float] | None = None
    step_for: Duration | None = None
    analysis: Analysis = Field(default_factory=Analysis)
    gates: list[Gate] = Field(default_factory=list)
    on_failure: Literal["rollback", "pause"] = "rollback"
    timeout: Duration | None = None
    promote: Literal["auto", "manual"] = "auto"
    shadow: Shadow | None = Field(None, description="Cap, timeout and comparison of the shadow steps.")

    def schedule(self) -> list[Step]:
        """The steps, with the ``step_weights``/``step_for`` shorthand expanded."""
        if self.step_weights is not None:
            return [Step(weight=w, **{"for": self.step_for}) for w in self.step_weights]
        return list(self.steps)

    def shadow_settings(self, percent: float) -> Shadow:
        base = self.shadow or Shadow(version=self.candidate)
        return base.model_copy(update={"version": self.candidate, "percent": percent})


class ModelRollouts(_Strict):
    """Everything the file says about one model."""

    labels: dict[str, int] = Field(default_factory=dict)
    traffic: Traffic | None = None
    shadows: list[Shadow] = Field(default_factory=list)
    rollout: RolloutSpec | None = None

    def versions(self) -> list[tuple[str, int]]:
        """Every version the entry names, with where it names it."""
        out = [(f"labels.{k}", v) for k, v in self.labels.items()]
        if self.traffic is not None:
            out += [("traffic.weights", v) for v in self.traffic.weights]
            if self.traffic.override is not None:
                out += [("traffic.override.allow", v) for v in self.traffic.override.allow]
        out += [(f"shadows[{i}].version", s.version) for i, s in enumerate(self.shadows)]
        if self.rollout is not None:
            out += [("rollout.stable", self.rollout.stable), ("rollout.candidate", self.rollout.candidate)]
        return out


class RolloutFile(_Strict):
    """The whole rollouts file."""

    version: int = 1
    models: dict[str, ModelRollouts] = Field(default_factory=dict)
    #: A file that names no models is refused (an editor caught mid-write, a wrong file) unless it says so.
    allow_empty: bool = False


def problems(file: RolloutFile, versions: Mapping[str, Iterable[int]] | None = None) -> list[str]:
    """Every rule the file breaks, as messages; ``versions`` (model -> versions on disk) enables rule 1."""
    out: list[str] = []
    if file.version != 1:
        out.append(f"version: {file.version} is not supported (only 1)")
    if not file.models and not file.allow_empty:
        out.append(
            "models: the file names no models (empty, comments only or `models: {}`); write "
            "`allow_empty: true` to stop routing by it on purpose, or delete the file"
        )
    for name, entry in file.models.items():
        where = f"models.{name}"
        if versions is not None:
            known = sorted(set(versions.get(name, ())))
            if name not in versions:
                out.append(f"{where}: no model '{name}' in the repository")
            else:
                for place, version in entry.versions():
                    if version not in known:
                        out.append(
                            f"{where}.{place}: version {version} does not exist "
                            f"(known: {', '.join(map(str, known)) or 'none'})"
                        )
        out += _label_problems(where, entry.labels)
        if entry.traffic is not None:
            out += _traffic_problems(f"{where}.traffic", entry.traffic)
        for i, shadow in enumerate(entry.shadows):
            out += _percent(f"{where}.shadows[{i}].percent", shadow.percent)
        if entry.rollout is not None:
            out += _rollout_problems(f"{where}.rollout", entry.rollout)
    return out


def _percent(where: str, value: float) -> list[str]:
    return [] if 0 <= value <= 100 else [f"{where}: {value:g} is outside [0, 100]"]


def _label_problems(where: str, labels: dict[str, int]) -> list[str]:
    out = []
    for label in labels:
        if label.isdigit():
            out.append(f"{where}.labels: label '{label}' collides with a version number")
        if label in RESERVED_LABELS:
            out.append(f"{where}.labels: '{label}' is reserved (it follows the rollout)")
    return out


def _traffic_problems(where: str, traffic: Traffic) -> list[str]:
    out = []
    for version, weight in traffic.weights.items():
        if weight < 0:
            out.append(f"{where}.weights: weight of version {version} is negative ({weight:g})")
    total = sum(traffic.weights.values())
    if traffic.weights and abs(total - 100) > 1e-9:
        out.append(f"{where}.weights: weights sum to {total:g}, not 100")
    if traffic.sticky is not None and not _STICKY_KEY.match(traffic.sticky.key):
        out.append(f"{where}.sticky.key: '{traffic.sticky.key}' is not header:<name> or query:<name>")
    return out


def _rollout_problems(where: str, spec: RolloutSpec) -> list[str]:
    out = []
    if spec.stable == spec.candidate:
        out.append(f"{where}: stable and candidate are both {spec.stable}")
    if spec.steps and spec.step_weights is not None:
        out.append(f"{where}: give steps or step_weights, not both")
    steps = spec.schedule()
    if not steps:
        out.append(f"{where}: no steps (give steps or step_weights)")
    previous = 0.0
    seen_weight = False
    for i, step in enumerate(steps):
        at = f"{where}.steps[{i}]"
        given = [k for k in ("shadow", "weight", "pause") if getattr(step, k) is not None]
        if len(given) != 1 or step.pause is False:
            out.append(f"{at}: a step is exactly one of shadow, weight or pause: true")
            continue
        if step.shadow is not None:
            out += _percent(f"{at}.shadow", step.shadow)
            if seen_weight:
                out.append(f"{at}: shadow steps must come before weight steps")
        elif step.weight is not None:
            seen_weight = True
            if not 0 < step.weight <= 100:
                out.append(f"{at}: weight {step.weight:g} is outside (0, 100]")
            elif step.weight < previous:
                out.append(f"{at}: weight {step.weight:g} is below the previous step's {previous:g}")
            previous = max(previous, step.weight)
    out += _pairs_problems(where, spec, steps)
    a = spec.analysis
    if a.window < a.interval:
        out.append(f"{where}.analysis: window ({a.window:g}s) is shorter than interval ({a.interval:g}s)")
    out += _source_problems(f"{where}.analysis", a)
    for i, gate in enumerate(spec.gates):
        at = f"{where}.gates[{i}]"
        if gate.metric not in _THRESHOLDS:
            out.append(f"{at}.metric: unknown metric '{gate.metric}' (known: {', '.join(GATE_METRICS)})")
            continue
        allowed = _THRESHOLDS[gate.metric]
        given = [
            k
            for k in ("max", "max_increase_over_stable", "max_ratio_to_stable", "max_alarms")
            if getattr(gate, k) is not None
        ]
        for key in given:
            if key not in allowed:
                out.append(f"{at}: {key} does not apply to {gate.metric} (use {' or '.join(allowed)})")
        if not given:
            out.append(f"{at}: {gate.metric} needs a threshold ({' or '.join(allowed)})")
    return out


def _pairs_problems(where: str, spec: RolloutSpec, steps: list[Step]) -> list[str]:
    """A gate that needs compared pairs must get some: from shadow steps, or weight steps below 100."""
    if not any(g.metric == "shadow_disagreement" for g in spec.gates):
        return []
    if spec.shadow is not None and spec.shadow.compare.mode == "none":
        return [f"{where}.gates: shadow_disagreement needs compared pairs, but shadow.compare.mode is none"]
    if not any((s.shadow or 0) > 0 or 0 < (s.weight or 0) < 100 for s in steps):
        return [
            f"{where}.gates: shadow_disagreement would never get a pair: no shadow step and no weight step "
            "below 100 (weight steps mirror the stable's requests to the candidate)"
        ]
    return []


def _source_problems(where: str, a: Analysis) -> list[str]:
    if a.source == "inprocess":
        if a.prometheus is not None:
            return [f"{where}.prometheus: given but source is inprocess (set source: prometheus)"]
        return []
    if a.prometheus is None:
        return [f"{where}: source prometheus needs prometheus: {{url: http://...}}"]
    url = urlsplit(a.prometheus.url)
    out = []
    if url.scheme not in ("http", "https") or not url.hostname:
        out.append(f"{where}.prometheus.url: '{a.prometheus.url}' is not an http(s) URL with a host")
    elif url.query or url.fragment:
        out.append(f"{where}.prometheus.url: '{a.prometheus.url}' must not carry a query or fragment")
    if a.prometheus.timeout <= 0:
        out.append(f"{where}.prometheus.timeout: must be positive")
    if "{" in a.prometheus.selector or "}" in a.prometheus.selector:
        out.append(f'{where}.prometheus.selector: label matchers without braces, like job="sluice"')
    return out


def _structure_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            out.append(f"unknown key '{where}'")
        else:
            message = err["msg"].removeprefix("Value error, ")
            out.append(f"{where}: {message}")
    return out


def parse_rollouts(
    body: Mapping[str, Any], *, source: str = "rollouts", versions: Mapping[str, Iterable[int]] | None = None
) -> RolloutFile:
    """The validated file, or ``RolloutConfigError`` with every problem."""
    try:
        file = RolloutFile.model_validate(dict(body))
    except ValidationError as exc:
        raise RolloutConfigError(source, _structure_problems(exc)) from exc
    found = problems(file, versions)
    if found:
        raise RolloutConfigError(source, found)
    return file


def read_rollouts(path: Path, versions: Mapping[str, Iterable[int]] | None = None) -> RolloutFile:
    return parse_rollouts(read_yaml(path), source=str(path), versions=versions)


def lint(path: Path, versions: Mapping[str, Iterable[int]] | None = None) -> list[str]:
    """Every problem with the file at ``path`` (empty when it is valid)."""
    try:
        read_rollouts(path, versions)
    except RolloutConfigError as exc:
        return exc.problems
    except ConfigError as exc:
        return [exc.message]
    return []
