"""sluice: a model serving and monitoring gateway (Open Inference Protocol v2 over ONNX).

Kept import-light on purpose: converters import ``sluice.converters.artifact.manifest`` and must not pull in the web stack.
"""

__version__ = "0.1.0"
