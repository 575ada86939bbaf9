"""Typed configuration: the gateway's ``Settings`` and a model's ``config.yaml`` (``ModelConfig``).

``Settings`` is built once at start from, in order of precedence: command-line flags, ``SLUICE_*``
environment variables (nested fields with ``__``: ``SLUICE_BATCHING__MAX_BATCH_SIZE=32``), a YAML file
(``--config``), and the defaults below. Unknown keys fail at start with the key's name, in the file and in
the environment alike. ``docs/configuration.md`` is generated from these classes
(``python -m sluice.server.settings``), so every field carries a description.
"""

from __future__ import annotations

import json
import os
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sluice.converters.artifact.errors import ConfigError
from sluice.monitoring.layout import WatchOptions

ENV_PREFIX = "SLUICE_"
#: How ``sluice serve --workers N`` hands its validated settings (JSON) to the worker processes; outside
#: the ``SLUICE_`` namespace on purpose, where unknown names are refused.
WORKER_SETTINGS_ENV = "_SLUICE_WORKER_SETTINGS"


class BatchingSettings(BaseModel):
    """Dynamic batching knobs; the gateway-wide defaults, overridable per model in ``config.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Batch concurrent requests to one model version together.")
    max_batch_size: int = Field(64, ge=1, description="Most rows in one execution.")
    max_queue_delay_us: int = Field(
        0,
        ge=0,
        description="How long the oldest queued request may wait for others to join its batch. With 0, "
        "requests still gather while every instance is busy.",
    )
    preferred_batch_sizes: tuple[int, ...] = Field(
        (),
        description="Batch sizes that run a batch at once; empty lets the load-time profile choose.",
    )
    max_queue_size: int = Field(
        4096, ge=1, description="Most rows waiting per version; beyond it requests get 503 at once."
    )
    max_queue_wait_ms: float | None = Field(
        None,
        gt=0,
        description="Admission by time (CoDel): while every batch taken for 100 ms waited longer than this, "
        "new requests are shed before their body is read (503 + Retry-After). Off (null) by default: "
        "measured on a loop-bound gateway it shed more than it saved (docs/benchmarks.md, Overload).",
    )
    instances: int = Field(1, ge=1, description="Concurrent executions per version.")
    intra_op_threads: int = Field(1, ge=0, description="onnxruntime intra-op threads (0: its default).")
    execution: Literal["auto", "inline", "thread"] = Field(
        "auto",
        description="Run the model on the event loop (inline) or on worker threads; auto measures at load.",
    )

    @field_validator("max_batch_size", "max_queue_delay_us", "max_queue_size", "instances", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML's `yes` is not a count
            raise ValueError(f"expected an integer, got {value!r}")
        return value

    @model_validator(mode="after")
    def _preferred_fit(self) -> BatchingSettings:
        sizes = tuple(sorted(set(self.preferred_batch_sizes)))
        for size in sizes:
            if size < 1 or size > self.max_batch_size:
                raise ValueError(
                    f"preferred_batch_sizes: {size} is outside 1..max_batch_size ({self.max_batch_size})"
                )
        object.__setattr__(self, "preferred_batch_sizes", sizes)  # sorted: the batcher relies on it
        return self


class MonitoringSettings(BaseModel):
    """Gateway-wide monitoring (drift, latency and error detectors; see docs/monitoring.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Watch every served version (a model's config.yaml can opt out).")
    queue_size: int = Field(
        10_000,
        ge=1,
        description="Observations waiting for the monitor; beyond it they are dropped and counted.",
    )
    resolve_after_s: float = Field(
        300.0, gt=0, description="An incident resolves after this long without a new alarm."
    )
    cpu_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Most of the event loop's time the detectors may use (they run on it in short steps); "
        "cut to 30 % of it while the loop is saturated with requests. Beyond it observations wait or are "
        "dropped (counted in sluice_monitoring_observations_dropped_total).",
    )
    max_queued_rows: int = Field(
        100_000, ge=1, description="Input rows waiting for the monitor; beyond it observations are dropped."
    )


class Settings(BaseSettings):
    """Settings of one gateway process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    repository: Path = Field(Path("models"), description="The model repository to serve.")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    workers: int = Field(
        1,
        ge=1,
        description="Worker processes sharing the port (uvicorn's supervisor restarts dead ones); with more "
        "than 1, /metrics aggregates every worker and one worker owns the rollouts (docs/operations.md).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    access_log: bool = Field(False, description="Log every request (costs throughput).")
    compress_responses_from_bytes: int | None = Field(
        4096,
        ge=0,
        description="Inference responses at least this large are gzip- or deflate-compressed (level 1) when "
        "the client's Accept-Encoding asks for it, as tritonclient's response_compression_algorithm does; "
        "null: never.",
    )
    proxy_headers: bool = Field(
        False,
        description="Take the client address from X-Forwarded-For / X-Forwarded-Proto (uvicorn's "
        "proxy_headers, trusting FORWARDED_ALLOW_IPS). Only the access log shows the client address; off "
        "saves a middleware call per request.",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest request body with binary tensors, after decompression (413 beyond).",
    )
    max_json_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest JSON in a request (a v2 or v1 JSON body, or a binary request's JSON header), "
        "after decompression (413 beyond; never more than max_body_bytes). JSON costs about 10x its size "
        "in memory while it is read: 8 MiB holds some 25,000 rows of 32 numbers.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection that has not sent a request's whole headers this long after it began is "
        "answered 408 and closed (slow clients cannot hold connections).",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request whose body has not arrived whole this long after its headers is cut off.",
    )
    keep_alive_s: float = Field(
        5.0,
        gt=0,
        description="An idle keep-alive connection is closed after this long (uvicorn's timeout_keep_alive).",
    )
    max_connections: int | None = Field(
        4096,
        ge=1,
        description="Most connections and requests at once; beyond it uvicorn answers 503 (its "
        "limit_concurrency).",
    )
    max_elements: int = Field(
        16_777_216, ge=1, description="Largest element count a declared input shape may have (413 beyond)."
    )
    poll_interval_s: float = Field(
        2.0,
        ge=0,
        description="How often the repository is rescanned for new, changed or removed versions "
        "(0: only at start and on the admin load endpoint).",
    )
    drain_timeout_s: float = Field(
        10.0, ge=0, description="On shutdown, how long in-flight requests may take to finish."
    )
    default_timeout_us: int | None = Field(
        None, ge=1, description="Deadline for requests that send no `timeout` parameter (none: no deadline)."
    )
    allow_nan: bool = Field(
        False, description="Accept NaN/Inf in float inputs by default (a model's config.yaml can override)."
    )
    monitoring_access: Literal["auto", "public", "admin"] = Field(
        "auto",
        description="Who may read /v2/models/{m}/monitoring, which shows reference statistics of the "
        "training data: `admin` (the admin token), `public` (anyone), or `auto` (the admin token when one "
        "is configured, else anyone).",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for the admin API; with none the admin API answers 403."
    )
    batching: BatchingSettings = Field(default_factory=BatchingSettings, description="Batching defaults.")
    monitoring: MonitoringSettings = Field(
        default_factory=MonitoringSettings, description="Monitoring (drift, latency, errors)."
    )
    rollout_file: Path | None = Field(
        None,
        description="The rollouts file (routing, shadows, progressive rollouts; see docs/rollouts.md), "
        "watched and re-applied when it changes.",
    )
    state_dir: Path | None = Field(
        None,
        description="Where rollout state, the rollout events log and the workers' controller lock are kept "
        "(used with a rollouts file); none: `.sluice/` next to the rollouts file, never the working "
        "directory. Set it where the rollouts file's folder is read-only (a ConfigMap).",
    )
    rollout_store: str | None = Field(
        None,
        pattern=r"^(redis|rediss|unix)://",
        description="Where replicas share rollout state, events and leadership: a `redis://HOST:PORT/DB` "
        "URL (every replica of one fleet names the same one; docs/rollouts.md, One rollout across "
        "replicas); none: the local state file in `state_dir` (one machine).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)


_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("sluice_settings_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The YAML settings file, below the environment in precedence."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, or ``ConfigError`` saying what is wrong with it."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(body).__name__}")
    return body


def _check_environment(environ: dict[str, str]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for key in environ:
        if not key.startswith(ENV_PREFIX):
            continue
        field = key[len(ENV_PREFIX) :].split("__", 1)[0]
        if field not in known:
            raise ConfigError(f"unknown setting {key} in the environment (known: {', '.join(sorted(known))})")


def settings_json(settings: Settings) -> str:
    """``settings`` as JSON that ``settings_from_json`` reads back unchanged (secrets included)."""
    data = settings.model_dump(mode="json")
    if settings.admin_token is not None:
        data["admin_token"] = settings.admin_token.get_secret_value()
    return json.dumps(data)


def settings_from_json(text: str) -> Settings:
    """The settings a ``--workers`` supervisor validated, in a worker: no file, no further environment."""
    token = _FILE_VALUES.set({})
    try:
        return Settings(**json.loads(text))
    finally:
        _FILE_VALUES.reset(token)


def describe_validation_error(source: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}'")
        else:
            problems.append(f"'{where}': {err['msg']}")
    return f"{source}: " + "; ".join(problems)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: ``overrides`` (CLI flags, ``None`` means unset) > environment > file > defaults."""
    _check_environment(dict(os.environ))
    file_values = read_yaml(config_file) if config_file is not None else {}
    token = _FILE_VALUES.set(file_values)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(str(config_file or "settings"), exc)) from exc
    finally:
        _FILE_VALUES.reset(token)


def reference_markdown() -> str:
    """The configuration reference, generated from the classes (docs/configuration.md)."""
    from sluice.server.model_config import ModelConfig  # it builds on this module

    lines = [
        "# Configuration reference",
        "",
        "Generated by `python -m sluice.server.settings > docs/configuration.md`; a test fails when it is "
        "stale.",
        "",
        "Precedence: command-line flags > `SLUICE_*` environment > `--config` YAML file > defaults.",
        "Nested fields use `__` in the environment (`SLUICE_BATCHING__MAX_BATCH_SIZE=32`).",
        "Unknown keys fail at start.",
        "",
    ]
    for title, model, env in (
        ("Gateway settings", Settings, True),
        ("Batching (`batching:`; per model under `batching:` in config.yaml)", BatchingSettings, False),
        ("Model `config.yaml`", ModelConfig, False),
        ("Monitoring (`monitoring:`)", MonitoringSettings, False),
        ("Model monitoring (`monitoring:` in config.yaml)", WatchOptions, False),
    ):
        lines += [
            f"## {title}",
            "",
            "| key | environment | default | description |",
            "| --- | --- | --- | --- |",
        ]
        for name, field in model.model_fields.items():
            default = "(required)" if field.is_required() else field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = "see below"
            env_name = f"`{ENV_PREFIX}{name.upper()}`" if env else ""
            lines.append(f"| `{name}` | {env_name} | `{default}` | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
