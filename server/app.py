"""The ASGI application: the ``Gateway`` (what one process owns), its lifespan, and error rendering.

Two phases, as uvicorn's config: ``create_app(settings)`` stores settings and builds objects; the lifespan
creates what needs a running loop (the first repository scan, executors, the polling task) and stops it
in order on shutdown: readiness goes false, intake stops, versions drain (bounded), tasks are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sluice.monitoring.layout import Layout, WatchOptions
from sluice.monitoring.metrics import Metrics, forget_dead_workers, multiprocess_dir
from sluice.monitoring.monitor import Monitor
from sluice.server.http.inference import InferenceEndpoint, error_response
from sluice.converters.artifact.errors import SluiceError
from sluice.server.registry import CONFIG_FILE, ModelRegistry, ModelVersion
from sluice.server.http.rollouts import ROLLOUT_ROUTES
from sluice.server.http.routes import ROUTES
from sluice.server.service import InferenceService
from sluice.server.settings import WORKER_SETTINGS_ENV, ModelConfig, Settings, settings_from_json
from sluice.server.rollouts.manager import Traffic

log = logging.getLogger("sluice.app")


class Gateway:
    """Everything one gateway process owns, built once from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.registry = ModelRegistry(settings, on_ready=self._attach, on_unload=self._detach)
        self.service = InferenceService(settings, self.registry, self.metrics)
        self.traffic = Traffic(settings, self.registry, self.metrics)
        self.service.traffic = self.traffic
        m = settings.monitoring
        self.monitor: Monitor | None = (
            Monitor(
                self.metrics,
                queue_size=m.queue_size,
                resolve_after_s=m.resolve_after_s,
                cpu_share=m.cpu_share,
                max_queued_rows=m.max_queued_rows,
            )
            if m.enabled
            else None
        )
        self.ready = False
        self._poller: asyncio.Task[None] | None = None

    async def _attach(self, mv: ModelVersion) -> None:
        await self.service.attach(mv)
        if self.monitor is not None:
            await self._watch(self.monitor, mv)

    async def _watch(self, monitor: Monitor, mv: ModelVersion) -> None:
        try:
            config = ModelConfig.read(mv.path.parent / CONFIG_FILE).monitoring
        except SluiceError:  # the registry has logged it; watch with defaults
            config = ModelConfig().monitoring
        if not config.enabled:
            monitor.forget(mv.model, mv.version)
            return
        layout = Layout.from_signature(
            [(t.name, t.datatype, t.shape, t.features) for t in mv.inputs],
            [(t.name, t.role) for t in mv.outputs],
            mv.manifest.class_labels,
            only=config.features,
            categorical=config.categorical,
        )
        options = WatchOptions(
            sample_rate=config.sample_rate,
            target_false_alarms_per_100k=config.target_false_alarms_per_100k,
            reference_size=config.reference_size,
            window_rows=config.window_rows,
            watch_missing=mv.allow_nan,  # NaN only reaches the monitor where the model accepts it
        )
        await monitor.watch(mv.model, mv.version, layout, mv.manifest.profile, options)

    async def _detach(self, mv: ModelVersion) -> None:
        # A reloaded version retires its previous load after the new one took over: the version's series
        # and monitor now belong to the new load and stay.
        replaced = self.registry.serving(mv.model, mv.version) not in (None, mv)
        await self.service.detach(mv, forget=not replaced)
        if self.monitor is not None and not replaced:
            self.monitor.forget(mv.model, mv.version)

    def account(
        self,
        mv: ModelVersion | None,
        status: int,
        reason: str,
        started: float,
        inputs: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        """Count one finished inference request (and its latency if it succeeded); tell the monitor."""
        if mv is None:
            self.metrics.child(self.metrics.unrouted, str(status)).inc()
            return
        seconds = time.perf_counter() - started
        self.metrics.observe_request(mv.model, str(mv.version), status, reason, seconds)
        self.traffic.observe(mv, status, reason, seconds)
        if self.monitor is not None and (status == 200 or status >= 500):
            # Client errors (4xx) say nothing about the model: only served requests and server errors.
            self.monitor.observe(mv.model, mv.version, inputs, outputs, seconds, status != 200)

    async def start(self) -> None:
        shared = multiprocess_dir()
        if shared is not None:
            # A worker that crashed left its live gauges (in flight, queue rows...) behind: drop them.
            for pid in forget_dead_workers(shared):
                log.info("worker %d is gone: its live gauges are dropped from /metrics", pid)
        if self.monitor is not None:
            await self.monitor.start()
        await self.registry.scan()
        # The rollout drift gate counts the monitor's incidents (server.gates.DriftSource); without a
        # monitor it reports "insufficient: no monitor".
        self.traffic.drift = self.monitor
        self.traffic.on_pair = self.monitor.observe_pair if self.monitor is not None else None
        await self.traffic.start()
        if self.settings.poll_interval_s > 0:
            self._poller = asyncio.create_task(self._poll(), name="sluice-repository-poll")
        self.ready = True
        # What exists now (modules, sessions, settings, calibrations) lives as long as the gateway. Out of
        # the collector's sight, a full collection no longer walks it: measured on logreg, 136k tracked
        # objects, a full collection paused the loop for 71 ms before and 0.0 ms after. stop() thaws it.
        gc.freeze()
        log.info("serving %d model(s) from %s", len(self.registry.models()), self.settings.repository)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.registry.scan()
            except Exception:  # a scan must never kill the poller: the next one may succeed
                log.exception("repository scan failed")

    async def stop(self) -> None:
        gc.unfreeze()  # collectable again (a test process starts and stops many gateways)
        self.ready = False
        self.service.accepting = False
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.traffic.stop()
        await self.registry.close()
        if self.monitor is not None:
            await self.monitor.stop()
        shared = multiprocess_dir()
        if shared is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), shared)  # type: ignore[no-untyped-call]


def _render(exc: SluiceError) -> Response:
    status, headers, body = error_response(exc)
    return Response(body, status, headers={k.decode(): v.decode() for k, v in headers})


async def _sluice_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SluiceError)
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message, exc_info=exc.__cause__)
    return _render(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = {"error": exc.detail, "code": "not_found" if exc.status_code == 404 else "http"}
    return Response(orjson.dumps(body), exc.status_code, headers=exc.headers, media_type="application/json")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        orjson.dumps({"error": "internal server error", "code": "internal"}),
        500,
        media_type="application/json",
    )


def create_app(settings: Settings) -> InferenceEndpoint:
    """The gateway's ASGI app: inference served raw by ``InferenceEndpoint``, the rest by Starlette."""
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=[*ROUTES, *ROLLOUT_ROUTES],
        lifespan=lifespan,
        exception_handlers={
            SluiceError: _sluice_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.gateway = gateway
    return InferenceEndpoint(app, gateway)


def create_app_from_environment() -> InferenceEndpoint:
    """The app of one ``--workers`` worker (a uvicorn factory): settings from the supervisor's JSON."""
    text = os.environ.get(WORKER_SETTINGS_ENV)
    if not text:
        raise RuntimeError(f"{WORKER_SETTINGS_ENV} is not set: start workers with `sluice serve --workers N`")
    settings = settings_from_json(text)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(settings)
