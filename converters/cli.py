"""``sluice convert MODEL --repository DIR --name NAME [--framework F] [--sample FILE] [--dry-run] ...``.

``MODEL`` is a joblib/pickle file (scikit-learn), a LightGBM booster's .txt or an XGBoost booster's
.json/.ubj (converted, parity-checked), or an ``.onnx`` file (imported: validated, signature read,
manifest written; ``--output-role NAME=ROLE`` says what its outputs are). ``_model_file`` tells which.

``sluice.server.cli`` owns the ``sluice`` command and hands this sub-command its parser
(``add_arguments``) and its parsed arguments (``run``). Progress and warnings go to stderr; the parity
table and the final line to stdout. Exit codes: 0 converted (or dry run passed), 2 a user error (bad
file, unsupported model, failed parity), printed as one line.
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
from ._adapters import adapt
from ._framework import FrameworkModel, short_cause
from ._model_file import FRAMEWORKS, detect, load

EXIT_OK = 0
EXIT_USER_ERROR = 2
_MISSING = {"", "na", "nan", "null", "none"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert a fitted scikit-learn model, LightGBM booster or XGBoost booster to ONNX, check parity, "
        "write the next version; or import an existing .onnx file. WARNING: loading a pickle executes "
        "code from it."
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        type=Path,
        help="a joblib/pickle file holding a fitted estimator or Pipeline, a LightGBM booster (.txt) or "
        "an XGBoost booster (.json, .ubj) saved with save_model, or an .onnx file to import. Loading a "
        "pickle executes code from it: only load files you trust.",
    )
    parser.add_argument(
        "--framework",
        choices=FRAMEWORKS,
        help="what MODEL holds, when its suffix and content do not say it unambiguously",
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
        "a synthetic sample is drawn (parity only, no profile); a booster always needs one.",
    )
    parser.add_argument(
        "--output-role",
        action="append",
        default=[],
        metavar="NAME=ROLE",
        help="an imported .onnx file's output NAME has ROLE (label, probabilities, value, other) rather "
        "than the role guessed from its name; repeatable",
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


def _feature_names(model: FrameworkModel, header: list[str] | None, path: Path) -> list[str] | None:
    known = model.feature_names
    if header is None or known is None:
        return header
    # A reordered CSV would silently feed columns to the wrong features; insist on the model's order.
    if header != known:
        raise ConversionError(
            f"{path}: the header must list the model's features in order: {', '.join(known)}"
        )
    return header


def _output_roles(flags: list[str]) -> dict[str, str]:
    roles: dict[str, str] = {}
    for flag in flags:
        name, _, role = flag.rpartition("=")
        if not name or not role:
            raise ConversionError(f"--output-role expects NAME=ROLE, got {flag!r}")
        if roles.get(name, role) != role:
            raise ConversionError(f"--output-role gives {name!r} two roles: {roles[name]!r} and {role!r}")
        roles[name] = role
    return roles


def run(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(f"convert: {message}", file=sys.stderr, flush=True)

    try:
        framework = detect(args.model, args.framework)
        if args.output_role and framework != "onnx":
            raise ConversionError(
                "--output-role is for an imported .onnx file; a converted model's outputs are named and "
                "given their roles by the converter"
            )
        if framework == "onnx":
            sample, names = _read_sample(args.sample) if args.sample is not None else (None, None)
            result = import_onnx(
                args.model,
                sample,
                repository=args.repository,
                name=args.name,
                feature_names=None if isinstance(sample, dict) else names,
                output_roles=_output_roles(args.output_role),
                dry_run=args.dry_run,
                progress=progress,
                calibrate=getattr(args, "calibrate", None),
            )
            return _done(result, args.dry_run)
        model = adapt(load(args.model, framework))
        with_profile = True
        if args.sample is not None:
            sample, header = _read_sample(args.sample)
            names = None if isinstance(sample, dict) else _feature_names(model, header, args.sample)
        else:
            drawn, how = model.synthetic_sample()
            if drawn is None:
                raise ConversionError(f"--sample is required: {how}")
            sample, names, with_profile = drawn, None, False
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
            calibrate=getattr(args, "calibrate", None),  # the monitor's, set by ``sluice convert``
        )
    except ConversionError as exc:
        print(f"sluice convert: error: {exc.message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return _done(result, args.dry_run)


def _done(result: ConversionResult, dry_run: bool) -> int:
    for warning in result.warnings:
        print(f"sluice convert: warning: {warning}", file=sys.stderr)
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
