"""``sluice rollout lint`` and ``plan``: offline, exit codes and what they print."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sluice.server.cli import build_parser, main
from sluice.server.rollouts.cli import summarize

FILE = """
models:
  churn:
    rollout:
      stable: 7
      candidate: 8
      steps: [{shadow: 100, for: 15m}, {weight: 5, for: 10m}, {pause: true}, {weight: 50, for: 15m}]
      analysis: {interval: 30s, window: 2m, failure_limit: 3}
      gates: [{metric: error_rate, max: 0.01}]
"""


def test_lint_exit_codes_and_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(FILE)
    assert main(["rollout", "lint", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"
    repository = tmp_path / "models"
    (repository / "churn" / "7").mkdir(parents=True)
    assert main(["rollout", "lint", str(good), "--repository", str(repository)]) == 1
    assert "models.churn.rollout.candidate: version 8 does not exist (known: 7)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(FILE.replace("candidate: 8", "candidate: 7").replace("weight: 50", "weight: 1"))
    assert main(["rollout", "lint", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{bad}: models.churn.rollout: stable and candidate are both 7",
        f"{bad}: models.churn.rollout.steps[3]: weight 1 is below the previous step's 5",
    ]


def test_plan_prints_the_schedule_its_minimum_and_the_time_to_roll_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(FILE)
    assert main(["rollout", "plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  0. shadow 100 %           >= 15m     from +0s" in out
    assert "  2. pause until promoted   waits      from +25m" in out
    assert "minimum duration: 40m plus 1 manual promote(s)" in out
    assert "time to roll back: 1.5m after failures begin (3 failed evaluations x 30s)" in out


def test_online_commands_need_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SLUICE_ADMIN_TOKEN", raising=False)
    assert main(["rollout", "status", "--url", "http://127.0.0.1:9"]) == 2
    assert "SLUICE_ADMIN_TOKEN" in capsys.readouterr().err


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of ``parser`` (``("rollout", "promote")``...), found by walking its subparsers."""
    found = [prefix]
    for action in parser._actions:  # argparse offers no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


def test_every_subcommand_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(build_parser())
    assert ("rollout", "promote") in commands and ("convert",) in commands
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"])
        assert exited.value.code == 0, command
        out = capsys.readouterr().out
        assert out.startswith("usage: sluice"), command
    main_help = ["rollout", "promote", "--help"]
    with pytest.raises(SystemExit):
        main(main_help)
    assert "skip the remaining steps: 100 % now" in capsys.readouterr().out


def test_status_summary_says_phase_step_weights_gates_and_what_it_waits_for() -> None:
    body = {
        "models": {
            "churn": {
                "weights": {"7": 75.0, "8": 25.0},
                "shadows": [{"version": 9, "percent": 10.0, "in_flight": 0}],
                "waiting_for": "shadow_disagreement (12 of 200 shadow comparisons) for 6m",
                "rollout": {
                    "phase": "progressing",
                    "step": 1,
                    "steps": 3,
                    "stable": 7,
                    "candidate": 8,
                    "shadow_percent": 0.0,
                    "step_elapsed_s": 192.0,
                    "failures": 1,
                    "reason": "",
                    "verdict": "insufficient",
                    "gates": [
                        {
                            "metric": "error_rate",
                            "verdict": "pass",
                            "detail": "error rate 0.001",
                            "dry_run": False,
                        },
                    ],
                },
            },
        },
        "events": [
            {
                "ts": "2026-12-02T19:00:00.000+00:00",
                "model": "churn",
                "event": "step",
                "step": 1,
                "reason": "step 0 held 600s with passing gates",
            }
        ],
    }
    assert summarize(body) == [
        "churn: progressing, step 2 of 3, 8 over 7; 3.2m in this step, 1 failed evaluation(s)",
        "  weights: 7: 75 %, 8: 25 %",
        "  shadow: 9 at 10 %",
        "  gates (last evaluation: insufficient):",
        "    error_rate: pass, error rate 0.001",
        "  waiting for: shadow_disagreement (12 of 200 shadow comparisons) for 6m",
        "recent events:",
        "  2026-12-02T19:00:00.000+00:00 churn step step 1: step 0 held 600s with passing gates",
    ]
