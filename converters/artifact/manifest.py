"""The artifact contract between converters and the gateway: ``<model>/<version>/manifest.json``.

A leaf module (stdlib only): converters write a ``Manifest``, the registry reads it. The server never
unpickles anything; the manifest and ``model.onnx`` are all it needs. Format, version 1::

    {
      "format": 1,
      "task": "classification" | "regression" | "other",
      "platform": "onnxruntime_onnx",
      "inputs":  [{"name": "input", "datatype": "FP32", "shape": [-1, 30], "features": ["age", ...]}],
      "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1], "role": "label"},
                  {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2], "role": "probabilities"}],
      "class_labels": [0, 1],                      # classifiers: column j of probabilities is class_labels[j]
      "source": {"framework": "scikit-learn", "estimator": "Pipeline(...)", "versions": {...}},
      "parity": {"rows": 1000, "label_agreement": 1.0, "max_abs_diff": 1e-7, ...},
      "sha256": "<hex digest of model.onnx>",
      "profile": {...} | null,                     # reference profile for drift detection (profile.py)
      "created_at": "2026-11-23T10:00:00+00:00"
    }

Output roles: ``label`` (predicted class), ``probabilities`` (one column per class label), ``value``
(regression output), ``other``. An input's ``features`` names its columns (a 2-D input), so v1
``{"feature": value}`` instances can be laid out; a model with one input per column names each input
after its feature instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .profile import Profile

FORMAT = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
OUTPUT_ROLES = frozenset({"label", "probabilities", "value", "other"})


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: name, v2 datatype and shape (``-1`` marks a variable dim)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    features: tuple[str, ...] = ()
    role: str = "other"

    def to_json(self, *, output: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.features:
            body["features"] = list(self.features)
        if output:
            body["role"] = self.role
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TensorSpec:
        return cls(
            name=str(body["name"]),
            datatype=str(body["datatype"]),
            shape=tuple(int(d) for d in body["shape"]),
            features=tuple(str(f) for f in body.get("features", ())),
            role=str(body.get("role", "other")),
        )


@dataclass
class Manifest:
    """What a converter promises about one model version."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    task: str = "other"
    platform: str = "onnxruntime_onnx"
    class_labels: list[Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    sha256: str | None = None
    profile: Profile | None = None
    created_at: str | None = None
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["inputs"] = [t.to_json() for t in self.inputs]
        body["outputs"] = [t.to_json(output=True) for t in self.outputs]
        body["profile"] = None if self.profile is None else self.profile.to_json()
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Manifest:
        if not isinstance(body, dict):
            raise ValueError("manifest must be a JSON object")
        fmt = body.get("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"unsupported manifest format {fmt!r} (this sluice reads format {FORMAT})")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown manifest keys: {', '.join(unknown)}")
        fields = dict(body)
        fields["inputs"] = [TensorSpec.from_json(t) for t in body.get("inputs", [])]
        fields["outputs"] = [TensorSpec.from_json(t) for t in body.get("outputs", [])]
        # A malformed profile raises ModelLoadError (sluice.converters.artifact.profile) naming its key.
        fields["profile"] = None if body.get("profile") is None else Profile.from_json(body["profile"])
        return cls(**fields)

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Read ``directory/manifest.json``; raises ``OSError`` or ``ValueError`` with the reason."""
        path = Path(directory) / MANIFEST_FILE
        try:
            body = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        try:
            return cls.from_json(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def output_by_role(self, role: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.role == role), None)
