"""The Prometheus alert rules in docker/prometheus: they load, and promtool's unit tests of them pass."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "docker" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (Debian package prometheus); CI must run this check")
        pytest.skip("promtool is not installed (apt-get install prometheus); CI runs this check")
    return found


def test_alert_rules_load() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(PROMETHEUS / "alerts.test.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
