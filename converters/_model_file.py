"""A model file on disk: which framework wrote it (``--framework``, else its suffix and first bytes), and
the object loaded from it.

    .joblib .pkl .pickle     scikit-learn (joblib.load: loading a pickle executes code from it)
    .txt                     lightgbm     (Booster.save_model's text format, whose first line is "tree")
    .json .ubj               xgboost      (Booster.save_model; a .json must be XGBoost's, with "learner")
    .onnx                    onnx         (imported, not converted)
    anything else            scikit-learn if it starts like a pickle, lightgbm if like a LightGBM file

A file that fits none of these, or whose content contradicts its suffix, is an error asking for
``--framework``: guessing wrong would mean unpickling a file the user did not mean as a pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sluice.converters.artifact.errors import ConversionError

from ._framework import short_cause

FRAMEWORKS = ("scikit-learn", "lightgbm", "xgboost", "onnx")
_SUFFIXES = {
    ".joblib": "scikit-learn",
    ".pkl": "scikit-learn",
    ".pickle": "scikit-learn",
    ".txt": "lightgbm",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".onnx": "onnx",
}
_PICKLE = b"\x80"  # the PROTO opcode every pickle since protocol 2 (and an uncompressed joblib) starts with
_LIGHTGBM = b"tree"
_XGBOOST_JSON = b'"learner"'
_HEAD_BYTES = 4096


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def _ask(path: Path, why: str) -> ConversionError:
    return ConversionError(f"{path}: {why}; say which with --framework {'|'.join(FRAMEWORKS)}")


def detect(path: Path, framework: str | None = None) -> str:
    """The framework of the model in ``path``: ``framework`` when given, else read from the file."""
    head = _head(path)
    if framework is not None:
        if framework not in FRAMEWORKS:
            raise ConversionError(f"unknown framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")
        return framework
    suffix = path.suffix.lower()
    by_suffix = _SUFFIXES.get(suffix)
    if by_suffix == "lightgbm" and not head.startswith(_LIGHTGBM):
        raise _ask(path, "a .txt file that is not a LightGBM model (its first line is not 'tree')")
    if suffix == ".json" and _XGBOOST_JSON not in head:
        raise _ask(path, 'a .json file that is not an XGBoost model (no "learner" near its start)')
    if by_suffix is not None:
        return by_suffix
    if head.startswith(_PICKLE):
        return "scikit-learn"
    if head.startswith(_LIGHTGBM):
        return "lightgbm"
    raise _ask(path, f"cannot tell which framework wrote it from its suffix {suffix!r} or its content")


def load(path: Path, framework: str) -> Any:
    """The model object in ``path``, as ``framework`` (not "onnx": that is imported, not loaded)."""
    if framework == "lightgbm":
        from ._lightgbm import load as load_lightgbm

        return load_lightgbm(path)
    if framework == "xgboost":
        from ._xgboost import load as load_xgboost

        return load_xgboost(path)
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # a corrupt or foreign pickle can raise nearly anything
        raise ConversionError(f"{path}: cannot load a model from it ({short_cause(exc)})") from exc
