"""The three benchmark models of ``shared/design/performance.md``, converted into a cached repository.

All three are fitted on ``make_classification(n_samples=20000, n_features=32, n_informative=12,
random_state=0)`` cast to float32, and written with ``sluice.converters.convert`` (parity-checked ONNX +
manifest) into ``loadtests/.work/models``. A model already there is reused.

- ``logreg``: StandardScaler + LogisticRegression (tiny: a few microseconds per single-row call);
- ``forest``: RandomForest, 100 trees, depth 12;
- ``bigmlp``: MLPClassifier with hidden layers (1024, 1024, 1024). It is trained for only 2 epochs
  (``max_iter=2``) to keep the build short: the benchmarks measure serving speed, which depends on the
  graph's shape, not on how well the weights fit. Its accuracy is irrelevant here.

``python -m loadtests.models`` builds (or checks) them and prints the repository path.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadtests import WORK_DIR

REPOSITORY = WORK_DIR / "models"
N_FEATURES = 32
NAMES = ("logreg", "forest", "bigmlp")


def dataset() -> tuple[np.ndarray, np.ndarray]:
    """The benchmark data set, features as float32."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=20000, n_features=N_FEATURES, n_informative=12, random_state=0)
    return x.astype(np.float32), y


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0, n_jobs=1)


def _bigmlp() -> Any:
    from sklearn.neural_network import MLPClassifier

    # Two epochs: serving cost depends on the layer sizes, not on convergence (see the module docstring).
    return MLPClassifier(hidden_layer_sizes=(1024, 1024, 1024), max_iter=2, random_state=0)


_BUILDERS: dict[str, Callable[[], Any]] = {"logreg": _logreg, "forest": _forest, "bigmlp": _bigmlp}


def model_path(name: str, repository: Path = REPOSITORY) -> Path:
    """The ONNX file of version 1 of ``name``."""
    return repository / name / "1" / "model.onnx"


def build(
    names: tuple[str, ...] = NAMES,
    repository: Path = REPOSITORY,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Fit and convert every model of ``names`` not yet in ``repository``; returns the repository."""
    from sklearn.exceptions import ConvergenceWarning

    from sluice.converters import convert

    say = progress or (lambda _message: None)
    repository.mkdir(parents=True, exist_ok=True)
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    for name in names:
        if model_path(name, repository).exists():
            continue
        if x is None or y is None:
            x, y = dataset()
        say(f"fitting {name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = _BUILDERS[name]().fit(x, y)
        say(f"converting {name}")
        convert(model, x, repository=repository, name=name)
    return repository


def repository_with(names: tuple[str, ...], repository: Path = REPOSITORY) -> Path:
    """A repository holding only ``names`` (symlinks into the cache), so a server loads just those."""
    build(names, repository)
    target = WORK_DIR / ("repo-" + "-".join(names))
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = target / name
        if not link.exists():
            link.symlink_to(repository / name, target_is_directory=True)
    return target


def main() -> int:
    repository = build(progress=lambda message: print(message, file=sys.stderr))
    print(repository)
    return 0


if __name__ == "__main__":
    sys.exit(main())
