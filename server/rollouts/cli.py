"""``sluice rollout``: lint and plan a rollouts file offline; status and actions against a running gateway.

The online commands are thin clients of the admin API (``--url``, the token from ``SLUICE_ADMIN_TOKEN``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sluice.converters.artifact.errors import ConfigError
from sluice.server.rollouts.spec import RolloutSpec, lint, read_rollouts

ACTIONS = ("promote", "pause", "resume", "abort", "retry")


def _repository_versions(repository: Path | None) -> dict[str, list[int]] | None:
    if repository is None:
        return None
    if not repository.is_dir():
        raise ConfigError(f"model repository {repository} is not a directory")
    return {
        model.name: [int(v.name) for v in model.iterdir() if v.is_dir() and v.name.isdigit()]
        for model in repository.iterdir()
        if model.is_dir() and not model.name.startswith(".")
    }


def _cmd_lint(args: argparse.Namespace) -> int:
    found = lint(args.file, _repository_versions(args.repository))
    for message in found:
        print(f"{args.file}: {message}")
    if not found:
        print(f"{args.file}: ok")
    return 1 if found else 0


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def describe_plan(model: str, spec: RolloutSpec) -> list[str]:
    """The schedule of one rollout, its minimum duration and how long a rollback takes."""
    a = spec.analysis
    lines = [
        f"{model}: {spec.candidate} over {spec.stable} "
        f"(promote: {spec.promote}, on failure: {spec.on_failure})"
    ]
    total, waits = 0.0, 0
    for i, step in enumerate(spec.schedule()):
        begins = total
        if step.pause is not None and step.for_s is None:
            waits += 1
            what, lasts = "pause until promoted", "waits"
        else:
            if step.shadow is not None:
                what = f"shadow {step.shadow:g} %"
            elif step.weight is not None:
                what = f"weight {step.weight:g} %"
            else:
                what = "timed pause"
            # A step ends at the first passing evaluation once its `for` is over.
            lasts_s = max(step.for_s or 0.0, a.interval if step.pause is None else 0.0)
            lasts, total = f">= {_human(lasts_s)}", total + lasts_s
        lines.append(f"  {i}. {what:<22} {lasts:<10} from +{_human(begins)}")
    gates = ", ".join(g.metric + (" (dry run)" if g.dry_run else "") for g in spec.gates) or "none"
    lines.append(f"  gates every {_human(a.interval)} over {_human(a.window)}: {gates}")
    manual = waits + (spec.promote == "manual")
    lines.append(
        f"  minimum duration: {_human(total)}" + (f" plus {manual} manual promote(s)" if manual else "")
    )
    detect = a.failure_limit * a.interval
    lines.append(
        f"  time to roll back: {_human(detect)} after failures begin ({a.failure_limit} failed evaluations "
        f"x {_human(a.interval)}); traffic returns to {spec.stable} at once"
        + (f"; timeout {_human(spec.timeout)}" if spec.timeout is not None else "")
    )
    return lines


def _cmd_plan(args: argparse.Namespace) -> int:
    file = read_rollouts(args.file)
    for model, entry in file.models.items():
        if entry.rollout is None:
            weights = entry.traffic.weights if entry.traffic else {}
            print(f"{model}: no rollout; steady weights {weights or 'registry default'}")
            continue
        print("\n".join(describe_plan(model, entry.rollout)))
    return 0


def _call(args: argparse.Namespace, method: str, path: str) -> Any:
    token = os.environ.get("SLUICE_ADMIN_TOKEN")
    if not token:
        raise ConfigError("set SLUICE_ADMIN_TOKEN to the gateway's admin token")
    request = urllib.request.Request(
        args.url.rstrip("/") + path,
        method=method,
        headers={"Authorization": f"Bearer {token}"},
        data=b"" if method == "POST" else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise ConfigError(f"{method} {path}: {exc.code} {message}") from exc
    except urllib.error.URLError as exc:
        raise ConfigError(f"cannot reach {args.url}: {exc.reason}") from exc


def _percent(value: Any) -> str:
    return f"{float(value):g} %"


def summarize(body: dict[str, Any], *, events: int = 5) -> list[str]:
    """A few lines a person reads: per model its phase, step, weights, last gate verdicts and what it
    waits for, then the latest events. ``--json`` prints the whole body instead."""
    lines: list[str] = []
    for name, model in body.get("models", {}).items():
        split = sorted(model.get("weights", {}).items(), key=lambda vw: int(vw[0]))
        weights = ", ".join(f"{v}: {_percent(w)}" for v, w in split)
        rollout = model.get("rollout")
        if rollout is None:
            head = f"{name}: no rollout" + (f" (waiting: {model['waiting']})" if model.get("waiting") else "")
            lines.append(head)
        else:
            step = f"step {rollout['step'] + 1} of {rollout['steps']}"
            if rollout.get("shadow_percent"):
                step += f" (shadow {_percent(rollout['shadow_percent'])})"
            lines.append(
                f"{name}: {rollout['phase']}, {step}, {rollout['candidate']} over {rollout['stable']}; "
                f"{_human(round(float(rollout.get('step_elapsed_s', 0))))} in this step, "
                f"{rollout['failures']} failed evaluation(s)"
            )
            if rollout.get("reason"):
                lines.append(f"  reason: {rollout['reason']}")
        lines.append(f"  weights: {weights or 'registry default'}")
        for shadow in model.get("shadows", []):
            if shadow.get("percent"):
                lines.append(f"  shadow: {shadow['version']} at {_percent(shadow['percent'])}")
        if rollout is not None and rollout.get("gates"):
            lines.append(f"  gates (last evaluation: {rollout.get('verdict') or 'none yet'}):")
            for gate in rollout["gates"]:
                dry = " (dry run)" if gate.get("dry_run") else ""
                lines.append(f"    {gate['metric']}: {gate['verdict']}{dry}, {gate['detail']}")
        if model.get("waiting_for"):
            lines.append(f"  waiting for: {model['waiting_for']}")
    recent = body.get("events", [])[-events:]
    if recent:
        lines.append("recent events:")
        for event in recent:
            lines.append(
                f"  {event.get('ts', '')} {event.get('model')} {event.get('event')} "
                f"step {event.get('step')}: {event.get('reason')}"
            )
    return lines or ["no models in the rollouts file"]


def _cmd_status(args: argparse.Namespace) -> int:
    body = _call(args, "GET", "/v2/rollouts" + (f"/{args.model}" if args.model else ""))
    if args.json:
        json.dump(body, sys.stdout, indent=2)
        print()
    else:
        print("\n".join(summarize(body)))
    return 0


def _cmd_action(args: argparse.Namespace) -> int:
    query = "?full=1" if getattr(args, "full", False) else ""
    body = _call(args, "POST", f"/v2/rollouts/{args.model}/{args.action}{query}")
    rollout = body["models"][args.model]["rollout"] or {}
    phase, step, weight = rollout.get("phase"), rollout.get("step"), rollout.get("weight")
    print(f"{args.model}: {phase} at step {step}, weight {weight} %")
    return 0


def add_rollout_commands(commands: Any) -> None:
    """Add ``sluice rollout ...`` to the top-level subcommands."""
    rollout = commands.add_parser("rollout", help="lint, plan and drive rollouts")
    sub = rollout.add_subparsers(dest="rollout_command", required=True)
    p = sub.add_parser("lint", help="validate a rollouts file (exit 1 with every problem)")
    p.add_argument("file", type=Path)
    p.add_argument("--repository", type=Path, help="also check that the versions it names exist")
    p.set_defaults(func=_cmd_lint)
    p = sub.add_parser("plan", help="print each rollout's schedule, minimum duration and time to roll back")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_cmd_plan)

    def online(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway (default %(default)s)")
        return p

    p = online("status", "show routing, rollouts and recent events of a running gateway")
    p.add_argument("model", nargs="?")
    p.add_argument("--json", action="store_true", help="print the admin API's whole JSON body")
    p.set_defaults(func=_cmd_status)
    for action in ACTIONS:
        p = online(action, f"{action} a model's rollout")
        p.add_argument("model")
        if action == "promote":
            p.add_argument("--full", action="store_true", help="skip the remaining steps: 100 %% now")
        p.set_defaults(func=_cmd_action, action=action)
