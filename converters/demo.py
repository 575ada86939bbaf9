"""A demo model repository built from scikit-learn's bundled datasets (nothing is downloaded).

    breast_cancer/1  Pipeline(StandardScaler, LogisticRegression)   binary classifier
    breast_cancer/2  GradientBoostingClassifier                     the canary
    breast_cancer/config.yaml  labels: stable -> 1, canary -> 2
    iris/1           RandomForestClassifier                         multiclass
    diabetes/1       Pipeline(StandardScaler, Ridge)                regressor

Building again reuses every version already complete on disk, so it is cheap to call on each start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sluice.converters.artifact.errors import ConversionError
from sluice.converters.artifact.manifest import MANIFEST_FILE, MODEL_FILE

from ._conversion import convert

_CONFIG = """\
# Demo rollout: version 1 (logistic regression) serves as stable, version 2 (gradient boosting) is the
# canary that a rollout can shift traffic to.
labels:
  stable: 1
  canary: 2
"""


def _specs() -> list[tuple[str, Callable[[], Any], list[Callable[[], Any]]]]:
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return [
        (
            "breast_cancer",
            load_breast_cancer,
            [
                lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                lambda: GradientBoostingClassifier(n_estimators=50, random_state=0),
            ],
        ),
        (
            "iris",
            load_iris,
            [lambda: RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0)],
        ),
        ("diabetes", load_diabetes, [lambda: make_pipeline(StandardScaler(), Ridge(alpha=1.0))]),
    ]


def _prefixed(progress: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda message: progress(f"{name}: {message}")


def _complete(version_dir: Path) -> bool:
    return (version_dir / MANIFEST_FILE).is_file() and (version_dir / MODEL_FILE).is_file()


def build_demo_repository(path: Path, progress: Callable[[str], None] = print) -> list[str]:
    """Build (or reuse) the demo models under ``path``; returns the model names."""
    path = Path(path)
    names = []
    for name, load, builders in _specs():
        names.append(name)
        dataset = None
        for version, build in enumerate(builders, start=1):
            target = path / name / str(version)
            if _complete(target):
                progress(f"reusing {name}/{version}")
                continue
            if dataset is None:
                dataset = load()
            model = build().fit(dataset.data, dataset.target)
            result = convert(
                model,
                dataset.data,
                repository=path,
                name=name,
                feature_names=[str(f) for f in dataset.feature_names],
                progress=_prefixed(progress, name),
            )
            if result.version != version:
                # Versions must line up with config.yaml's labels; an odd directory broke the sequence.
                raise ConversionError(
                    f"demo expected {name}/{version} but wrote {name}/{result.version}: remove "
                    f"{path / name} and build again"
                )
        if name == "breast_cancer":
            config = path / name / "config.yaml"
            if not config.exists():
                config.write_text(_CONFIG)
    return names
