"""The Prometheus alert rules in docker/prometheus: they load, and promtool's unit tests of them pass."""

from __future__ import annotations

import subprocess
from pathlib import Path

PROMETHEUS = Path(__file__).resolve().parents[2] / "docker" / "prometheus"


def test_alert_rules_load(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", str(PROMETHEUS / "alerts.test.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
