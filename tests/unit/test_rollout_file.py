"""Every lint rule of the rollouts file, each with the message a user reads."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from sluice.converters.artifact.errors import ConfigError
from sluice.server.rollouts.spec import lint, parse_duration, parse_rollouts, read_rollouts

FULL: dict[str, Any] = {
    "version": 1,
    "models": {
        "churn": {
            "labels": {"baseline": 7},
            "traffic": {
                "weights": {7: 100},
                "override": {"header": "x-model-version", "allow": [7, 8]},
                "sticky": {"key": "header:x-user-id", "salt": "churn-q4"},
            },
            "shadows": [
                {
                    "version": 9,
                    "percent": 10,
                    "max_in_flight": 4,
                    "timeout_ms": 300,
                    "compare": {"output": "probabilities", "mode": "allclose", "atol": 1e-4},
                }
            ],
            "rollout": {
                "stable": 7,
                "candidate": 8,
                "steps": [
                    {"shadow": 100, "for": "15m"},
                    {"weight": 5, "for": "10m"},
                    {"weight": 25, "for": "10m"},
                    {"pause": True},
                    {"weight": 50, "for": "15m"},
                ],
                "analysis": {
                    "interval": "30s",
                    "window": "2m",
                    "min_samples": 200,
                    "on_insufficient": "hold",
                    "failure_limit": 3,
                },
                "gates": [
                    {"metric": "error_rate", "max": 0.01, "max_increase_over_stable": 0.002},
                    {"metric": "latency_p99_ms", "max": 250, "max_ratio_to_stable": 1.25},
                    {"metric": "drift", "max_alarms": 0},
                    {"metric": "shadow_disagreement", "max": 0.03, "dry_run": True},
                ],
                "on_failure": "rollback",
                "timeout": "3h",
                "promote": "auto",
            },
        }
    },
}
VERSIONS = {"churn": [7, 8, 9]}


def edited(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is None:
        del node[last]
    else:
        node[last] = value
    return body


def messages(body: dict[str, Any]) -> list[str]:
    try:
        parse_rollouts(body, versions=VERSIONS)
    except ConfigError as exc:
        return list(exc.details["problems"])
    return []


def test_the_full_file_is_valid() -> None:
    file = parse_rollouts(FULL, versions=VERSIONS)
    spec = file.models["churn"].rollout
    assert spec is not None
    assert [s.kind for s in spec.schedule()] == ["shadow", "weight", "weight", "pause", "weight"]
    assert spec.analysis.window == 120 and spec.timeout == 3 * 3600


def test_the_minimal_file_and_its_shorthand(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.yaml"
    path.write_text(
        "models:\n  churn:\n    rollout:\n      stable: 7\n      candidate: 8\n"
        "      step_weights: [5, 25, 50]\n      step_for: 10m\n"
        "      gates:\n        - {metric: error_rate, max: 0.01}\n"
        "        - {metric: latency_p99_ms, max: 250}\n"
    )
    assert lint(path, VERSIONS) == []
    spec = read_rollouts(path).models["churn"].rollout
    assert spec is not None
    assert [(s.weight, s.for_s) for s in spec.schedule()] == [(5, 600), (25, 600), (50, 600)]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # 1. referenced versions exist
        (
            "models.churn.rollout.candidate",
            12,
            "models.churn.rollout.candidate: version 12 does not exist (known: 7, 8, 9)",
        ),
        (
            "models.churn.traffic.override.allow",
            [7, 10],
            "models.churn.traffic.override.allow: version 10 does not exist",
        ),
        # 2. stable != candidate
        ("models.churn.rollout.candidate", 7, "models.churn.rollout: stable and candidate are both 7"),
        # 3. weights non-negative and summing to 100
        (
            "models.churn.traffic.weights",
            {7: 110, 8: -10},
            "models.churn.traffic.weights: weight of version 8 is negative (-10)",
        ),
        (
            "models.churn.traffic.weights",
            {7: 60, 8: 30},
            "models.churn.traffic.weights: weights sum to 90, not 100",
        ),
        # 4. step weights in (0, 100] and non-decreasing
        (
            "models.churn.rollout.steps.1",
            {"weight": 0, "for": "1m"},
            "models.churn.rollout.steps[1]: weight 0 is outside (0, 100]",
        ),
        (
            "models.churn.rollout.steps.1",
            {"weight": 150},
            "models.churn.rollout.steps[1]: weight 150 is outside (0, 100]",
        ),
        (
            "models.churn.rollout.steps.4",
            {"weight": 10},
            "models.churn.rollout.steps[4]: weight 10 is below the previous step's 25",
        ),
        # 5. shadow steps first
        (
            "models.churn.rollout.steps.3",
            {"shadow": 50},
            "models.churn.rollout.steps[3]: shadow steps must come before weight steps",
        ),
        # 6. percents in [0, 100]
        ("models.churn.shadows.0.percent", 150, "models.churn.shadows[0].percent: 150 is outside [0, 100]"),
        (
            "models.churn.rollout.steps.0",
            {"shadow": -5},
            "models.churn.rollout.steps[0].shadow: -5 is outside [0, 100]",
        ),
        # 7. window >= interval
        (
            "models.churn.rollout.analysis.window",
            "10s",
            "models.churn.rollout.analysis: window (10s) is shorter than interval (30s)",
        ),
        # 8. known gate metrics, with thresholds that apply to them
        (
            "models.churn.rollout.gates.0",
            {"metric": "errors", "max": 1},
            "models.churn.rollout.gates[0].metric: unknown metric 'errors' "
            "(known: error_rate, latency_p99_ms, drift, shadow_disagreement)",
        ),
        (
            "models.churn.rollout.gates.2",
            {"metric": "drift", "max": 1},
            "models.churn.rollout.gates[2]: max does not apply to drift (use max_alarms)",
        ),
        (
            "models.churn.rollout.gates.0",
            {"metric": "error_rate"},
            "models.churn.rollout.gates[0]: error_rate needs a threshold (max or max_increase_over_stable)",
        ),
        # 9. labels never collide with versions; stable/canary reserved
        ("models.churn.labels", {"8": 7}, "models.churn.labels: label '8' collides with a version number"),
        (
            "models.churn.labels",
            {"canary": 8},
            "models.churn.labels: 'canary' is reserved (it follows the rollout)",
        ),
        # shapes of steps and keys
        (
            "models.churn.rollout.steps.0",
            {"shadow": 10, "weight": 5},
            "models.churn.rollout.steps[0]: a step is exactly one of shadow, weight or pause: true",
        ),
        (
            "models.churn.rollout.step_weights",
            [5, 50],
            "models.churn.rollout: give steps or step_weights, not both",
        ),
        ("models.churn.rollout.steps", [], "models.churn.rollout: no steps (give steps or step_weights)"),
        (
            "models.churn.traffic.sticky",
            {"key": "cookie:id"},
            "models.churn.traffic.sticky.key: 'cookie:id' is not header:<name> or query:<name>",
        ),
        ("version", 2, "version: 2 is not supported (only 1)"),
        (
            "models.churn.rollout.analysis.interval",
            "5 minutes",
            "models.churn.rollout.analysis.interval: '5 minutes' is not a duration (like 30s, 10m, 1h)",
        ),
        ("models.churn.rollout.stepz", [], "unknown key 'models.churn.rollout.stepz'"),
        # gates that need pairs must be able to get some
        (
            "models.churn.rollout.steps",
            [{"weight": 100, "for": "10m"}],
            "models.churn.rollout.gates: shadow_disagreement would never get a pair: no shadow step and no "
            "weight step below 100",
        ),
        (
            "models.churn.rollout.shadow",
            {"version": 8, "compare": {"mode": "none"}},
            "models.churn.rollout.gates: shadow_disagreement needs compared pairs, but shadow.compare.mode "
            "is none",
        ),
        (
            "models.churn.rollout.on_failure",
            "retry",
            "models.churn.rollout.on_failure: Input should be 'rollback' or 'pause'",
        ),
    ],
)
def test_every_rule_says_what_is_wrong(path: str, value: Any, message: str) -> None:
    found = messages(edited(path, value))
    assert any(m.startswith(message) for m in found), found


def test_unknown_model_is_reported() -> None:
    assert messages(FULL | {"models": {"nope": {}}}) == ["models.nope: no model 'nope' in the repository"]


def test_lint_reports_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("models: [1\n")
    assert "not valid YAML" in lint(bad)[0]
    assert "cannot read" in lint(tmp_path / "missing.yaml")[0]


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5 and parse_duration(2) == 2
    for bad in ("10", "1d", "", "m5"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_the_files_in_the_docs_are_valid(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "rollouts.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        path = tmp_path / f"{i}.yaml"
        path.write_text(block)
        assert lint(path, {"churn": [7, 8, 9]}) == [], block
