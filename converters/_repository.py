"""Writing a model version into a repository so that a polling gateway never sees half of it.

Layout: ``<repository>/<name>/<version>/{model.onnx, manifest.json}``, versions positive integers.
A version is assembled in ``<repository>/<name>/.tmp-<random>`` (the gateway ignores dot-dirs) and
renamed into place in one ``os.rename``; renaming within one directory keeps it on one filesystem, so the
rename is atomic.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from sluice.converters.artifact.errors import ConversionError
from sluice.converters.artifact.manifest import MANIFEST_FILE, MODEL_FILE, Manifest

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_MAX_NAME = 128
# Give up after this many lost races for a version number; reaching it means something else is wrong.
_MAX_RENAME_ATTEMPTS = 100


def check_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _SAFE_NAME.fullmatch(name):
        raise ConversionError(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' "
            f"(no leading dot, at most {_MAX_NAME} characters)"
        )
    return name


def versions(model_dir: Path) -> list[int]:
    """The positive-integer version directories under ``model_dir`` (others are ignored)."""
    try:
        entries = list(os.scandir(model_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConversionError(
            f"cannot use the model repository at {model_dir}: {exc.strerror or exc}"
        ) from exc
    found = []
    for entry in entries:
        # "01" or "+1" would be a second spelling of version 1; only canonical integers count.
        if entry.name.isdigit() and entry.name == str(int(entry.name)) and int(entry.name) > 0:
            found.append(int(entry.name))
    return sorted(found)


def next_version(model_dir: Path) -> int:
    existing = versions(model_dir)
    return existing[-1] + 1 if existing else 1


def _write_synced(path: Path, data: bytes) -> None:
    # fsync before the rename: after a crash the version directory either holds complete files or
    # does not exist.
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_version(model_dir: Path, model_bytes: bytes, manifest: Manifest) -> tuple[int, Path]:
    """Write a new version of the model in ``model_dir``; returns (version, its directory)."""
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    except OSError as exc:
        raise ConversionError(
            f"cannot use the model repository at {model_dir}: {exc.strerror or exc}"
        ) from exc
    try:
        _write_synced(staging / MODEL_FILE, model_bytes)
        # Same text as Manifest.write, but synced like the model.
        _write_synced(staging / MANIFEST_FILE, (json.dumps(manifest.to_json(), indent=2) + "\n").encode())
        for _ in range(_MAX_RENAME_ATTEMPTS):
            version = next_version(model_dir)
            target = model_dir / str(version)
            if target.exists():
                continue
            try:
                os.rename(staging, target)
            except OSError as exc:
                # Another writer took this number between our look and our rename: take the next one.
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            return version, target
        raise ConversionError(f"could not claim a version number in {model_dir} after many attempts")
    except OSError as exc:
        raise ConversionError(
            f"cannot write the model version in {model_dir}: {exc.strerror or exc}"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
