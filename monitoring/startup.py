"""Time to ready for the monitor: a repository of 14 models, calibrated at conversion or at load.

    python -m sluice.monitoring.startup            # converts 14 models, then times a cold start of each kind

Converts 14 scikit-learn models on datasets that ship with scikit-learn (no downloads) into a temporary
repository twice, once with the monitor's calibration stored in each profile (what ``sluice convert``
does) and once without (profiles written before it existed), then, in a fresh process for each (no
calibration cached in memory), times what the gateway does per version before it is READY on the
monitor's side: read the manifest and ``VersionMonitor.start`` (calibrate every detector its profile
allows); then the whole gateway: ``sluice serve`` from process start to ``/v2/health/ready``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sluice.converters.artifact.manifest import Manifest
from sluice.monitoring.layout import Layout, WatchOptions
from sluice.monitoring.version import VersionMonitor

MODELS = 14


def build(repository: Path, calibrated: bool) -> None:
    """Convert ``MODELS`` models (logistic and linear regressions, forests) into ``repository``."""
    from sklearn import datasets
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sluice.converters import convert
    from sluice.monitoring.stored import calibrate_profile

    loaders = [
        datasets.load_breast_cancer,
        datasets.load_wine,
        datasets.load_iris,
        datasets.load_digits,
        datasets.load_diabetes,
    ]
    for i in range(MODELS):
        x, y = loaders[i % len(loaders)](return_X_y=True)
        x = np.asarray(x, dtype=np.float64)[:, : 24 + i % 3]
        if loaders[i % len(loaders)] is datasets.load_diabetes:
            model: Any = Ridge().fit(x, y)
        elif i % 2:
            model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=i).fit(x, y)
        else:
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x, y)
        convert(
            model,
            x,
            repository=repository,
            name=f"m{i:02d}",
            calibrate=calibrate_profile if calibrated else None,
        )


def start(repository: Path) -> dict[str, Any]:
    """Read every version's manifest and start its monitor: seconds in all, and where it calibrated."""
    started = time.perf_counter()
    where = []
    for manifest_path in sorted(repository.glob("*/1/manifest.json")):
        manifest = Manifest.read(manifest_path.parent)
        layout = Layout.from_signature(
            [(t.name, t.datatype, t.shape, t.features) for t in manifest.inputs],
            [(t.name, t.role) for t in manifest.outputs],
            manifest.class_labels,
        )
        vm = VersionMonitor(manifest_path.parent.parent.name, 1, layout, manifest.profile, WatchOptions())
        vm.start()
        where.append(vm.calibrated_at)
    return {"seconds": time.perf_counter() - started, "versions": len(where), "calibrated_at": where}


def serve(repository: Path, timeout_s: float = 120.0) -> float:
    """Seconds from ``sluice serve`` starting to ``/v2/health/ready`` answering 200 (the gateway binds
    only once every version is loaded, warmed, profiled and its monitor calibrated)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "sluice.server.cli", "serve", "--repository", str(repository)]
    started = time.perf_counter()
    child = subprocess.Popen(
        [*argv, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - started < timeout_s:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.05)  # polling interval; the answer above is what synchronises
        raise TimeoutError(f"sluice serve was not ready in {timeout_s:.0f} s")
    finally:
        child.terminate()
        child.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", type=Path, help=argparse.SUPPRESS)  # the child: time one cold start
    args = parser.parse_args(argv)
    if args.start is not None:
        print(json.dumps(start(args.start)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for calibrated in (True, False):
            repository = Path(tmp) / ("stored" if calibrated else "plain")
            build(repository, calibrated)
            child = subprocess.run(
                [sys.executable, "-m", "sluice.monitoring.startup", "--start", str(repository)],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(child.stdout)
            kinds = ", ".join(sorted(set(result["calibrated_at"])))
            how = "stored at conversion" if calibrated else "at load"
            n, seconds = result["versions"], result["seconds"]
            print(f"{n} versions, calibration {how} ({kinds}): monitors ready in {seconds:.2f} s")
            ready = serve(repository)
            print(f"  sluice serve, from process start to /v2/health/ready: {ready:.2f} s")


if __name__ == "__main__":
    main()
