"""The model repository on disk and the versions loaded from it.

Layout: ``<repository>/<model>/<version>/model.onnx`` (+ ``manifest.json``), optional
``<repository>/<model>/config.yaml``. Directories starting with a dot are ignored: converters write into
``.tmp-*`` and rename, so a scan never sees half a model.

A scan compares the disk with what is loaded: new versions are loaded on a worker thread, warmed and only
then made READY; one that fails is UNAVAILABLE with its reason and never serves; a changed file is
loaded aside and swapped in only if it loads (else the old one keeps serving); a removed version
stops taking requests, drains its in-flight ones (bounded) and is unloaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sluice.converters.artifact.errors import ConfigError, ModelLoadError, ModelNotFoundError, SluiceError
from sluice.converters.artifact.manifest import MANIFEST_FILE, MODEL_FILE, Manifest, TensorSpec
from sluice.server.execution.executors import Executor, ExecutorFactory
from sluice.server.execution.runtime import OnnxRuntime
from sluice.server.model_config import ModelConfig
from sluice.server.routing import ModelRoutes, Routing, parse_version
from sluice.server.settings import BatchingSettings, Settings

log = logging.getLogger("sluice.registry")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
CONFIG_FILE = "config.yaml"


class State(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


Fingerprint = tuple[tuple[int, int], ...]


def _fingerprint(*paths: Path) -> Fingerprint:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((-1, -1))
    return tuple(out)


class ModelVersion:
    """One loaded, servable version: its signature, its runtime, its executor and the requests in it."""

    def __init__(
        self,
        model: str,
        version: int,
        path: Path,
        manifest: Manifest,
        runtime: OnnxRuntime,
        batching: BatchingSettings,
        allow_nan: bool,
        executor: Executor,
        execution: dict[str, Any],
    ) -> None:
        self.model = model
        self.version = version
        self.path = path
        self.manifest = manifest
        self.runtime = runtime
        self.batching = batching
        self.allow_nan = allow_nan
        self.inputs: list[TensorSpec] = manifest.inputs
        self.outputs: list[TensorSpec] = manifest.outputs
        self.output_names = [o.name for o in self.outputs]
        self.executor = executor
        self.execution = execution  # how it runs and why, for the config endpoint
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def load_version(path: Path, batching: BatchingSettings) -> tuple[Manifest, OnnxRuntime]:
    """Load, check and warm one version directory (blocking: call it on a worker thread)."""
    onnx_path = path / MODEL_FILE
    if not onnx_path.is_file():
        raise ModelLoadError(f"{path}: no {MODEL_FILE}")
    runtime = OnnxRuntime(onnx_path, intra_op_threads=batching.intra_op_threads)
    if (path / MANIFEST_FILE).exists():
        try:
            manifest = Manifest.read(path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"bad manifest: {exc}") from exc
        if manifest.sha256:
            digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
            if digest != manifest.sha256:
                raise ModelLoadError(
                    f"{onnx_path} does not match the sha256 in its manifest (corrupt or replaced file)"
                )
        _check_signature(manifest.inputs, runtime.inputs, "input")
        _check_signature(manifest.outputs, runtime.outputs, "output")
    else:
        # A bare model.onnx is served with the signature the graph declares.
        manifest = Manifest(inputs=runtime.inputs, outputs=runtime.outputs)
    runtime.warm_up(manifest.inputs)
    return manifest, runtime


def _check_signature(declared: list[TensorSpec], actual: list[TensorSpec], kind: str) -> None:
    want = {t.name: t.datatype for t in actual}
    have = {t.name: t.datatype for t in declared}
    if want != have:
        raise ModelLoadError(f"manifest {kind}s {have} disagree with the graph's {want}")


@dataclass
class Slot:
    """What the index shows for one version directory."""

    model: str
    version: int
    state: State
    reason: str = ""
    fingerprint: Fingerprint = ()
    loaded: ModelVersion | None = None


#: Called with a version once it is ready to serve (before it takes traffic), and with a retired load
#: and whether a newer load of the same version replaces it.
OnReady = Callable[[ModelVersion], Awaitable[None]]
OnRetire = Callable[[ModelVersion, bool], Awaitable[None]]


class ModelRegistry:
    """Every model and version of one repository, kept in step with the disk by ``scan()``.

    After every change it publishes each model's ready versions, the reasons of the others and the
    ``config.yaml`` labels to ``routing``, the table every request is decided on.
    """

    def __init__(
        self,
        settings: Settings,
        routing: Routing,
        executors: ExecutorFactory,
        *,
        on_ready: OnReady,
        on_retire: OnRetire,
    ) -> None:
        self.settings = settings
        self.root = Path(settings.repository)
        self._routing = routing
        self._executors = executors
        self._slots: dict[tuple[str, int], Slot] = {}
        self._configs: dict[str, tuple[Fingerprint, ModelConfig]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._ready: dict[str, dict[int, ModelVersion]] = {}
        self._on_ready = on_ready
        self._on_retire = on_retire
        self._disabled: set[str] = set()
        self._skipped: set[Path] = set()
        self._lock = asyncio.Lock()

    # ----- reading -----------------------------------------------------------------------------

    def models(self) -> list[str]:
        return sorted({m for m, _ in self._slots})

    def versions(self, model: str) -> list[ModelVersion]:
        return [self._ready[model][v] for v in sorted(self._ready.get(model, {}))]

    def serving(self, model: str, version: int) -> ModelVersion | None:
        """The load of ``model``/``version`` that serves now, if any."""
        return self._ready.get(model, {}).get(version)

    def model_config(self, model: str) -> ModelConfig:
        """The model's ``config.yaml`` as last read (defaults when it has none or it never parsed)."""
        known = self._configs.get(model)
        return known[1] if known is not None else ModelConfig()

    def index(self) -> list[dict[str, str]]:
        return [
            {"name": s.model, "version": str(s.version), "state": s.state.value, "reason": s.reason}
            for _, s in sorted(self._slots.items())
        ]

    def on_disk(self) -> dict[str, list[int]]:
        """Every model and version the repository holds now, whatever their state."""
        found: dict[str, list[int]] = {}
        for model, version in sorted(self._slots):
            found.setdefault(model, []).append(version)
        return found

    def _publish(self) -> None:
        table = {}
        for model in self.models():
            ready = self._ready.get(model, {})
            waiting = {
                v: s.state.value + (f": {s.reason}" if s.reason else "")
                for (m, v), s in self._slots.items()
                if m == model and v not in ready
            }
            table[model] = ModelRoutes(frozenset(ready), waiting, dict(self._labels.get(model, {})))
        self._routing.publish_versions(table)

    # ----- keeping in step with the disk -------------------------------------------------------

    async def scan(self) -> None:
        """Bring loaded versions in line with the repository (one scan at a time)."""
        async with self._lock:
            wanted = self._read_disk()
            if wanted is None:
                return
            for key, (path, fingerprint, batching, allow_nan) in wanted.items():
                slot = self._slots.get(key)
                if slot is not None and slot.fingerprint == fingerprint:
                    continue
                await self._load(key, path, fingerprint, batching, allow_nan, slot)
            for key in [k for k in self._slots if k not in wanted]:
                await self._unload(key)
            self._publish()

    def _read_disk(self) -> dict[tuple[str, int], tuple[Path, Fingerprint, BatchingSettings, bool]] | None:
        wanted: dict[tuple[str, int], tuple[Path, Fingerprint, BatchingSettings, bool]] = {}
        try:
            model_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))
        except OSError as exc:
            log.error("cannot read repository %s: %s; keeping what is loaded", self.root, exc)
            return None
        for model_dir in model_dirs:
            model = model_dir.name
            if model in self._disabled:
                continue
            config = self._model_config(model, model_dir)
            self._labels[model] = dict(config.labels)
            try:
                batching = config.batching_for(self.settings.batching)
            except ConfigError as exc:
                log.error("model %s: %s; using the gateway's batching defaults", model, exc)
                batching = self.settings.batching
            allow_nan = self.settings.allow_nan if config.allow_nan is None else config.allow_nan
            # Only ASCII digits name a version: a directory called '١' or '03x' is not one. It is
            # reported once and skipped; the scan of every other version and model goes on.
            versions = []
            for entry in model_dir.iterdir():
                number = parse_version(entry.name) if entry.is_dir() else None
                if number is not None and entry.name == str(number):
                    versions.append(number)
                elif entry.is_dir() and not entry.name.startswith(".") and entry not in self._skipped:
                    self._skipped.add(entry)
                    log.warning(
                        "%s: %r is not a version directory (ASCII digits, from 1): skipped", model, entry.name
                    )
            for version in config.version_policy.select(versions):
                vdir = model_dir / str(version)
                fingerprint = _fingerprint(vdir / MODEL_FILE, vdir / MANIFEST_FILE)
                wanted[(model, version)] = (vdir, fingerprint, batching, allow_nan)
        return wanted

    def _model_config(self, model: str, model_dir: Path) -> ModelConfig:
        path = model_dir / CONFIG_FILE
        fingerprint = _fingerprint(path)
        known = self._configs.get(model)
        if known is not None and known[0] == fingerprint:
            return known[1]
        try:
            config = ModelConfig.read(path)
        except ConfigError as exc:
            if known is not None:
                log.error("%s; keeping the previous configuration of '%s'", exc, model)
                return known[1]
            log.error("%s; serving '%s' with defaults", exc, model)
            config = ModelConfig()
        self._configs[model] = (fingerprint, config)
        return config

    async def _load(
        self,
        key: tuple[str, int],
        path: Path,
        fingerprint: Fingerprint,
        batching: BatchingSettings,
        allow_nan: bool,
        previous: Slot | None,
    ) -> None:
        model, version = key
        serving = previous.loaded if previous is not None else None
        if serving is None:
            self._slots[key] = Slot(model, version, State.LOADING)
            self._publish()
        executor: Executor | None = None
        try:
            manifest, runtime = await asyncio.to_thread(load_version, path, batching)
            executor, execution = await self._executors.create(
                model, version, runtime, manifest.inputs, batching
            )
            loaded = ModelVersion(
                model, version, path, manifest, runtime, batching, allow_nan, executor, execution
            )
            await self._on_ready(loaded)
        except SluiceError as exc:
            if executor is not None:
                await executor.stop(0.0)
            # The index is public: the reason names files relative to the repository, and the library's
            # own text stays in the log (the cause).
            reason = exc.message.replace(f"{self.root}/", "")
            if exc.__cause__ is not None:
                log.error("%s/%d: %s", model, version, exc.message, exc_info=exc.__cause__)
            if serving is not None:
                log.error(
                    "reload of %s/%d failed, still serving the previous load: %s", model, version, reason
                )
                self._slots[key] = Slot(
                    model, version, State.READY, f"reload failed: {reason}", fingerprint, serving
                )
            else:
                log.error("version %s/%d is unavailable: %s", model, version, reason)
                self._slots[key] = Slot(model, version, State.UNAVAILABLE, reason, fingerprint)
            self._publish()
            return
        self._slots[key] = Slot(model, version, State.READY, "", fingerprint, loaded)
        self._ready.setdefault(model, {})[version] = loaded
        self._publish()
        log.info("%s/%d is ready (%s)", model, version, "reloaded" if serving else "loaded")
        if serving is not None:
            await self._retire(serving, replaced=True)

    async def _unload(self, key: tuple[str, int]) -> None:
        slot = self._slots[key]
        model, version = key
        if slot.loaded is not None:
            slot.state = State.UNLOADING
            self._ready.get(model, {}).pop(version, None)
            self._publish()
            await self._retire(slot.loaded, replaced=False)
        del self._slots[key]
        if not any(m == model for m, _ in self._slots):
            self._labels.pop(model, None)
            self._ready.pop(model, None)
        log.info("%s/%d unloaded", model, version)

    async def _retire(self, loaded: ModelVersion, *, replaced: bool) -> None:
        if not await loaded.drained(self.settings.drain_timeout_s):
            log.warning(
                "%s/%d: %d requests still running after the drain timeout",
                loaded.model,
                loaded.version,
                loaded.in_flight,
            )
        await loaded.executor.stop(self.settings.drain_timeout_s)
        await self._on_retire(loaded, replaced)

    async def unload_model(self, model: str) -> None:
        """Stop serving ``model`` until ``load_model`` (the repository API's unload)."""
        if model not in self.models():
            raise ModelNotFoundError(f"unknown model '{model}'")
        self._disabled.add(model)
        await self.scan()

    async def load_model(self, model: str) -> None:
        """(Re)load ``model`` from disk now; raises if it has no servable version afterwards."""
        self._disabled.discard(model)
        await self.scan()
        if model not in self.models():
            raise ModelNotFoundError(f"no model '{model}' in the repository {self.root}")
        if not self._ready.get(model):
            reasons = "; ".join(f"{s.version}: {s.reason}" for (m, _), s in self._slots.items() if m == model)
            raise ModelLoadError(f"model '{model}' has no loadable version ({reasons})")

    async def close(self) -> None:
        """Retire every loaded version (on shutdown)."""
        async with self._lock:
            for key in list(self._slots):
                await self._unload(key)
            self._publish()
