"""A retrained classifier as a candidate: judged on its decisions, shadowed in weight steps, and promoted.

The old default (``allclose``, atol 1e-4 over every output) called a retrained model different on nearly
every request, so a ``shadow_disagreement`` gate rolled back every genuinely new model. Here a real
gateway serves the tiny classifier and a copy retrained with another regularisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sluice.converters import convert
from tests.integration.rollout_helpers import AUTH, TOKEN, load, wait_for
from tests.integration.support import metric

pytestmark = pytest.mark.integration

ROLLOUT = """
models:
  clf:
    rollout:
      stable: 1
      candidate: 2
      steps: [{shadow: 100, for: 1s}, {weight: 30, for: 3s}]
      shadow: {version: 2, percent: 100, max_in_flight: 8}
      analysis: {interval: 0.3s, window: 1.5s, min_samples: 20, failure_limit: 2}
      gates:
        - {metric: shadow_disagreement, max: 0.1}
"""


def retrained() -> Any:
    """The same task refitted with another regularisation: every score moves, the decisions hardly."""
    x, y = make_classification(n_samples=400, n_features=4, n_informative=3, n_redundant=0, random_state=0)
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.2)).fit(x, y)


def test_a_retrained_classifier_passes_the_disagreement_gate_through_shadow_and_weight_steps(
    make_server: Any, repository: Path, tmp_path: Path, fitted: dict[str, Any]
) -> None:
    stable, sample = fitted["clf"]
    candidate = retrained()
    decisions = float(np.mean(stable.predict(sample) != candidate.predict(sample)))
    scores = np.abs(stable.predict_proba(sample) - candidate.predict_proba(sample)).max(axis=1)
    assert decisions < 0.05 and float(np.mean(scores > 1e-4)) > 0.9  # what allclose would have said
    convert(candidate, sample, repository=repository, name="clf")
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(ROLLOUT)
    server = make_server(rollout_file=rollouts, state_dir=tmp_path / "state", admin_token=TOKEN)

    def rollout() -> dict[str, Any]:
        body: dict[str, Any] = server.client.get("/v2/rollouts/clf", headers=AUTH).json()
        return body["models"]["clf"]["rollout"]

    with load(server.url, sample):
        wait_for(
            lambda: rollout()["phase"] in ("succeeded", "failed"), "the end of the rollout", timeout_s=60
        )
    state = rollout()
    assert state["phase"] == "succeeded", state
    # The last evaluation, 1.5 s inside the weight step, still had pairs: the stable's requests mirrored.
    (gate,) = state["gates"]
    assert gate["metric"] == "shadow_disagreement" and gate["verdict"] == "pass", gate
    assert gate["samples"] >= 20 and gate["value"] < 0.1, gate
    text = server.client.get("/metrics").text
    assert 'sluice_shadow_score_difference_bucket{le="+Inf",model="clf",version="2"}' in text
    rows = metric(server, 'sluice_shadow_score_difference_count{model="clf",version="2"}')
    small = metric(server, 'sluice_shadow_score_difference_bucket{le="0.1",model="clf",version="2"}')
    assert rows >= 20 and small / rows > 0.9  # the scores move a little; the decisions hardly at all
