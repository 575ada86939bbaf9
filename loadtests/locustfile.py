"""A Locust user that posts Open Inference Protocol v2 JSON to one model of a sluice gateway.

For users who load-test with Locust; the project's own benchmarks live beside it in ``loadtests/``.
Locust is not a dependency of sluice: install the ``bench`` extra (``pip install -e '.[bench]'``).

    locust -f loadtests/locustfile.py --host http://localhost:8000 --model iris --rows 1
    locust -f loadtests/locustfile.py --host http://localhost:8000 --headless -u 50 -r 10 -t 1m

Each user reads the model's metadata once (``GET /v2/models/{model}``), then posts requests of
``--rows`` random rows shaped and typed as the model's inputs. ``--model-version`` pins a version
(or a label such as ``canary``) through the versioned endpoint; without it the gateway routes.
"""

from __future__ import annotations

import random
from typing import Any

from locust import FastHttpUser, events, task

_INTEGER_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--model", default="iris", help="model to call (default iris, from `sluice demo`)")
    parser.add_argument("--model-version", default="", help="version or label to pin (default: routed)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument("--think-time-s", type=float, default=0.0, help="most seconds between requests")


def _random_values(datatype: str, count: int, rng: random.Random) -> list[Any]:
    if datatype.startswith("FP"):
        return [rng.gauss(0.0, 1.0) for _ in range(count)]
    if datatype in _INTEGER_TYPES:
        return [rng.randint(0, 9) for _ in range(count)]
    if datatype == "BOOL":
        return [rng.random() < 0.5 for _ in range(count)]
    raise ValueError(f"the locustfile cannot generate {datatype} inputs")


def v2_request(inputs: list[dict[str, Any]], rows: int, rng: random.Random) -> dict[str, Any]:
    """A v2 JSON request body with ``rows`` random rows for each input of a model's metadata."""
    tensors = []
    for spec in inputs:
        # The first dimension is the batch (-1); every other one must be fixed.
        shape = [rows, *spec["shape"][1:]]
        count = rows
        for dim in shape[1:]:
            count *= dim
        data = _random_values(spec["datatype"], count, rng)
        tensors.append({"name": spec["name"], "shape": shape, "datatype": spec["datatype"], "data": data})
    return {"inputs": tensors}


class V2InferUser(FastHttpUser):
    """Posts v2 JSON inference requests to ``--model`` on the ``--host`` gateway."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.rows: int = options.rows
        self.rng = random.Random()
        self.think_time_s: float = options.think_time_s
        path = f"/v2/models/{options.model}"
        if options.model_version:
            pinned = "labels" if not options.model_version.isdigit() else "versions"
            path += f"/{pinned}/{options.model_version}"
        with self.client.get(path, name="/v2/models/[model] metadata", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"metadata of {path}: HTTP {response.status_code}: {response.text}")
                raise RuntimeError(f"cannot read the metadata of {path}: HTTP {response.status_code}")
            self.inputs = response.json()["inputs"]
        self.infer_path = path + "/infer"

    def wait_time(self) -> float:
        return self.rng.uniform(0, self.think_time_s) if self.think_time_s else 0.0

    @task
    def infer(self) -> None:
        self.client.post(
            self.infer_path,
            json=v2_request(self.inputs, self.rows, self.rng),
            name="/v2/models/[model]/infer",
        )
