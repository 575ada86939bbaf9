"""``sluice convert MODEL --repository DIR --name NAME [--sample FILE] [--dry-run] [--tolerance-proba X]``.

``MODEL`` is a joblib/pickle file (converted, parity-checked) or an ``.onnx`` file (imported: validated,
signature read, manifest written).

``sluice.server.cli`` owns the ``sluice`` command and hands this sub-command its parser (``add_arguments``) and
its parsed arguments (``run``). Progress goes to stderr; the parity table and the final line to stdout.
Exit codes: 0 converted (or dry run passed), 2 a user error (bad file, unsupported model, failed parity).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError

from . import ConversionResult, Tolerance, convert, import_onnx
from ._sklearn import short_cause, synthetic_sample

EXIT_OK = 0
EXIT_USER_ERROR = 2
_MISSING = {"", "na", "nan", "null", "none"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert a fitted scikit-learn (or LightGBM/XGBoost) model to ONNX, check parity, write the next "
        "version; or import an existing .onnx file. WARNING: loading a pickle executes code from it."
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        type=Path,
        help="a joblib/pickle file holding a fitted estimator or Pipeline, or an .onnx file to import. "
        "Loading a pickle executes code from it: only load files you trust.",
    )
    parser.add_argument("--repository", required=True, type=Path, metavar="DIR", help="model repository")
    parser.add_argument("--name", required=True, help="model name: letters, digits, '_', '.', '-'")
    parser.add_argument(
        "--sample",
        type=Path,
        metavar="FILE",
        help="rows like the traffic the model will see: .csv (header row names the features), .npy, or "
        ".npz (the array 'X', else the first). Used for the parity check and the drift reference "
        "profile. Required unless the Pipeline starts with a StandardScaler or MinMaxScaler, from which "
        "a synthetic sample is drawn (parity only, no profile).",
    )
    parser.add_argument("--dry-run", action="store_true", help="convert and check, write nothing")
    defaults = Tolerance()
    parser.add_argument(
        "--tolerance-proba",
        type=float,
        default=defaults.max_abs_diff_proba,
        metavar="X",
        help=f"largest allowed |difference| of a class probability (default {defaults.max_abs_diff_proba:g})",
    )
    parser.add_argument(
        "--tolerance-value",
        type=float,
        default=defaults.max_abs_diff_value_rel,
        metavar="X",
        help="largest allowed |difference| of a regression value, relative to the std of the model's "
        f"outputs (default {defaults.max_abs_diff_value_rel:g})",
    )


def _load_model(path: Path) -> Any:
    import joblib

    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        return joblib.load(path)
    except Exception as exc:  # a corrupt or foreign pickle can raise nearly anything
        raise ConversionError(f"{path}: cannot load a model from it ({short_cause(exc)})") from exc


def _number(text: str) -> float:
    if text.strip().lower() in _MISSING:
        return math.nan
    return float(text)


def _typed(column: list[str]) -> np.ndarray:
    """A CSV column as float64 when every value is a number (or missing), else as strings."""
    try:
        return np.array([_number(v) for v in column], dtype=np.float64)
    except ValueError:
        return np.array(column, dtype=object)


def _read_csv(path: Path) -> tuple[np.ndarray | dict[str, np.ndarray], list[str]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ConversionError(f"{path}: empty CSV (a header row naming the features is required)")
        rows = []
        for line, record in enumerate(reader, start=2):
            if not record:
                continue
            if len(record) != len(header):
                raise ConversionError(f"{path}:{line}: {len(record)} fields, the header has {len(header)}")
            rows.append(record)
    if not rows:
        raise ConversionError(f"{path}: no data rows")
    names = [h.strip() for h in header]
    columns = [_typed(list(c)) for c in zip(*rows, strict=True)]
    if all(c.dtype == np.float64 for c in columns):
        return np.column_stack(columns), names
    # String columns: a table by name, matched to the model's features by name.
    return dict(zip(names, columns, strict=True)), names


def _read_sample(path: Path) -> tuple[Any, list[str] | None]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if not archive.files:
                    raise ConversionError(f"{path}: the archive holds no arrays")
                return archive["X" if "X" in archive.files else archive.files[0]], None
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read the sample ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ConversionError(f"{path}: not a readable numpy file ({short_cause(exc)})") from exc
    raise ConversionError(f"{path}: unknown sample format {suffix!r}; use .csv, .npy or .npz")


def _feature_names(model: Any, header: list[str] | None, path: Path) -> list[str] | None:
    known = getattr(model, "feature_names_in_", None)
    if header is None or known is None:
        return header
    known = [str(n) for n in known]
    # A reordered CSV would silently feed columns to the wrong features; insist on the model's order.
    if header != known:
        raise ConversionError(
            f"{path}: the header must list the model's features in order: {', '.join(known)}"
        )
    return header


def run(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(f"convert: {message}", file=sys.stderr, flush=True)

    try:
        if args.model.suffix.lower() == ".onnx":
            sample, names = _read_sample(args.sample) if args.sample is not None else (None, None)
            result = import_onnx(
                args.model,
                sample,
                repository=args.repository,
                name=args.name,
                feature_names=None if isinstance(sample, dict) else names,
                dry_run=args.dry_run,
                progress=progress,
            )
            return _done(result, args.dry_run)
        model = _load_model(args.model)
        with_profile = True
        if args.sample is not None:
            sample, header = _read_sample(args.sample)
            names = None if isinstance(sample, dict) else _feature_names(model, header, args.sample)
        else:
            drawn = synthetic_sample(model)
            if drawn is None:
                raise ConversionError(
                    "--sample is required: the model has no leading StandardScaler or MinMaxScaler to "
                    "draw a synthetic sample from"
                )
            sample, how = drawn
            names, with_profile = None, False
            progress(f"no --sample: parity on a synthetic sample ({how}); no reference profile")
        tolerance = Tolerance(
            max_abs_diff_proba=args.tolerance_proba, max_abs_diff_value_rel=args.tolerance_value
        )
        result = convert(
            model,
            sample,
            repository=args.repository,
            name=args.name,
            feature_names=names,
            tolerance=tolerance,
            dry_run=args.dry_run,
            progress=progress,
            profile=with_profile,
        )
    except ConversionError as exc:
        print(f"sluice convert: error: {exc.message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return _done(result, args.dry_run)


def _done(result: ConversionResult, dry_run: bool) -> int:
    if result.report is None:
        print("parity: imported (no source model to compare with)")
    else:
        print(result.report.table())
    digest = (result.manifest.sha256 or "")[:12]
    if dry_run:
        print(f"dry run: would write {result.path} (sha256 {digest}…)")
    else:
        size_kb = (result.path / "model.onnx").stat().st_size / 1024
        print(f"wrote {result.path} (model.onnx {size_kb:.1f} KB, sha256 {digest}…)")
    return EXIT_OK
