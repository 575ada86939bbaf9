"""Benchmarks of the gateway: models, load generators, the floor app, MLServer, and the scenario runner.

Not part of the installed package and not collected by pytest (it lives outside ``tests/``). Run
``python -m loadtests.bench --all``; it writes ``docs/benchmarks.md``. Every load loop is bounded in count
and time and targets 127.0.0.1 only. Scratch files (models, the MLServer virtualenv) go to
``loadtests/.work/``, which git ignores.
"""

from __future__ import annotations

from pathlib import Path

#: Scratch directory for built models, bodies and the MLServer virtualenv (gitignored).
WORK_DIR = Path(__file__).resolve().parent / ".work"
#: The repository root (the gateway is started from here).
ROOT = Path(__file__).resolve().parent.parent
