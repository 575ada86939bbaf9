"""onnxruntime behind one small class: load, describe the signature, run, warm up.

The one boundary where onnxruntime's exceptions become sluice's: a graph that cannot be loaded is a
``ModelLoadError``; a failure while running already-validated inputs is an ``InternalError`` (a model
fault, not the client's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from sluice.converters.artifact.datatypes import NUMPY_DTYPES, ONNX_TO_V2
from sluice.converters.artifact.errors import InternalError, ModelLoadError
from sluice.converters.artifact.manifest import TensorSpec

# Quieter than onnxruntime's default (warnings about unused initialisers on every load).
ort.set_default_logger_severity(3)


def _spec(arg: Any) -> TensorSpec:
    datatype = ONNX_TO_V2.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"input or output '{arg.name}' has type {arg.type}, which sluice cannot serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


class OnnxRuntime:
    """One loaded ONNX graph on the CPU execution provider."""

    def __init__(self, path: Path, *, intra_op_threads: int = 1) -> None:
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        # The gateway runs its own worker threads; onnxruntime's inter-op pool would compete with them.
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... and RuntimeError
            # The library's own text (and its absolute paths) goes to the log with the cause, not to clients.
            raise ModelLoadError(f"{path}: not a loadable ONNX graph") from exc
        self.inputs: list[TensorSpec] = [_spec(a) for a in self._session.get_inputs()]
        self.outputs: list[TensorSpec] = [_spec(a) for a in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; ``inputs`` are already validated against the signature."""
        try:
            results = self._session.run(self._output_names, inputs)
        except Exception as exc:
            # onnxruntime's text stays in the server's log (the cause); the client gets a stable reason.
            raise InternalError("model execution failed", details={"reason": "model_execution"}) from exc
        return dict(zip(self._output_names, results, strict=True))

    def example_inputs(self, rows: int = 1, signature: Sequence[TensorSpec] | None = None) -> dict[str, Any]:
        """Zero-valued inputs of ``rows`` rows (strings empty), for warm-up and profiling."""
        out: dict[str, Any] = {}
        for spec in signature or self.inputs:
            shape = tuple(rows if i == 0 else (d if d > 0 else 1) for i, d in enumerate(spec.shape))
            if spec.datatype == "BYTES":
                out[spec.name] = np.full(shape, "", dtype=object)
            else:
                out[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
        return out

    def warm_up(self, signature: Sequence[TensorSpec] | None = None) -> None:
        """One execution at batch 1, so the first client does not pay for allocations."""
        self.run(self.example_inputs(1, signature))
