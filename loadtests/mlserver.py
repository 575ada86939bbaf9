"""MLServer 1.7.1 + mlserver-sklearn 1.7.1, the nearest peer, serving the same ``logreg`` model (P2).

MLServer lives in its own virtualenv (``loadtests/.work/mlserver-venv``, installed from PyPI on first use
and reused), never beside the gateway's dependencies. The scikit-learn pipeline is fitted *inside* that
virtualenv with the venv's own scikit-learn (same data, same estimator, same seed as ``models.py``), so the
joblib file never crosses scikit-learn versions. One process: ``parallel_workers: 0`` keeps inference in
the server process, as sluice runs it.

``python -m loadtests.mlserver --install`` installs (or checks) the virtualenv and builds the model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from loadtests import WORK_DIR

VERSION = "1.7.1"
VENV = WORK_DIR / "mlserver-venv"
MODEL_DIR = WORK_DIR / "mlserver-models"
#: Written when the install finished, so a half-done install is redone.
_MARKER = VENV / ".sluice-installed"
#: MLServer names inputs freely; this one is what the request body uses.
INPUT_NAME = "input-0"

_FIT = r"""
import sys, joblib, numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
x, y = make_classification(n_samples=20000, n_features=32, n_informative=12, random_state=0)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x.astype(np.float32), y)
joblib.dump(model, sys.argv[1])
"""


class MLServerUnavailableError(RuntimeError):
    """MLServer could not be installed or prepared here; the message is the reason for the table."""


def python() -> Path:
    return VENV / "bin" / "python"


def install(log: Path | None = None) -> None:
    """Create the virtualenv and install MLServer into it, unless a finished install is already there."""
    if _MARKER.exists():
        return
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    log = log or WORK_DIR / "mlserver-install.log"
    with log.open("w") as out:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            [str(python()), "-m", "pip", "install", "-q", "--upgrade", "pip"],
            [
                str(python()),
                "-m",
                "pip",
                "install",
                f"mlserver=={VERSION}",
                f"mlserver-sklearn=={VERSION}",
            ],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False)
            except subprocess.TimeoutExpired as exc:
                raise MLServerUnavailableError(f"install timed out: {' '.join(step[2:5])}") from exc
            if done.returncode != 0:
                tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
                raise MLServerUnavailableError(f"install failed ({' '.join(step[2:5])}): {tail[0][:160]}")
    _MARKER.write_text(VERSION)


def versions() -> dict[str, str]:
    """Versions of mlserver, mlserver-sklearn and scikit-learn in the virtualenv."""
    code = (
        "import json; from importlib.metadata import version as v; "
        "print(json.dumps({p: v(p) for p in ('mlserver', 'mlserver-sklearn', 'scikit-learn')}))"
    )
    out = subprocess.run([str(python()), "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, str] = json.loads(out.stdout)
    return result


def prepare(port: int, grpc_port: int, metrics_port: int) -> Path:
    """Fit the model in the venv and write MLServer's settings for one process; returns the folder."""
    install()
    root = MODEL_DIR
    model_dir = root / "logreg"
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib_path = model_dir / "model.joblib"
    if not joblib_path.exists():
        done = subprocess.run(
            [str(python()), "-c", _FIT, str(joblib_path)], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise MLServerUnavailableError(f"fitting logreg in the venv failed: {done.stderr[-200:]}")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "logreg",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    (root / "settings.json").write_text(
        json.dumps(
            {
                "debug": False,
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                "parallel_workers": 0,
            }
        )
    )
    return root


def command(root: Path) -> list[str]:
    """The command line that starts MLServer on ``root`` (settings.json + the model folder)."""
    return [str(VENV / "bin" / "mlserver"), "start", str(root)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install MLServer into its virtualenv")
    args = parser.parse_args()
    if args.install:
        try:
            install()
        except MLServerUnavailableError as exc:
            print(f"MLServer not installed: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(versions()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
