"""A model's optional ``<repository>/<model>/config.yaml``: version policy, labels, batching, monitoring.

Validated by the same types as the gateway's settings (``BatchingSettings`` for ``batching:``,
``WatchOptions`` for ``monitoring:``); a file that does not validate is a ``ConfigError`` naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluice.converters.artifact.errors import ConfigError
from sluice.monitoring.layout import WatchOptions
from sluice.server.settings import BatchingSettings, describe_validation_error, read_yaml


class VersionPolicy(BaseModel):
    """Which versions of a model are served: all (default), the latest N, or a specific list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latest: int | None = Field(None, ge=1)
    specific: list[int] | None = None
    all: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        chosen = [k for k in ("latest", "specific", "all") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"choose one of latest, specific, all (got {', '.join(chosen)})")
        return self

    def select(self, versions: list[int]) -> list[int]:
        ordered = sorted(versions)
        if self.latest is not None:
            return ordered[-self.latest :]
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific)]
        return ordered


class ModelConfig(BaseModel):
    """A model's optional ``<repository>/<model>/config.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version_policy: VersionPolicy = Field(
        default_factory=VersionPolicy,
        description="`all` (default), `{latest: N}` or `{specific: [1, 3]}`.",
    )
    labels: dict[str, int] = Field(
        default_factory=dict, description="Names for versions, e.g. `{stable: 1, canary: 2}`."
    )
    batching: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the gateway's batching settings for this model: the keys and values of "
        "`batching:` above, checked by the same type.",
    )
    allow_nan: bool | None = Field(None, description="Accept NaN/Inf inputs (default: the gateway setting).")
    monitoring: WatchOptions = Field(
        default_factory=WatchOptions, description="Monitoring of this model's versions (see below)."
    )

    @field_validator("version_policy", mode="before")
    @classmethod
    def _policy_shorthand(cls, value: Any) -> Any:
        if value == "all":
            return {"all": True}
        return value

    @field_validator("labels")
    @classmethod
    def _labels_name_versions(cls, value: dict[str, int]) -> dict[str, int]:
        for label, version in value.items():
            if label.isdigit():
                raise ValueError(f"label '{label}' would collide with a version number")
            if version < 1:
                raise ValueError(f"label '{label}' points to version {version}; versions are positive")
        return value

    @field_validator("batching")
    @classmethod
    def _batching_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        BatchingSettings(**value)  # unknown keys and bad values fail with the file, by name
        return value

    def batching_for(self, defaults: BatchingSettings) -> BatchingSettings:
        try:
            return BatchingSettings(**{**defaults.model_dump(), **self.batching})
        except ValidationError as exc:
            raise ConfigError(describe_validation_error("batching", exc)) from exc

    @classmethod
    def read(cls, path: Path) -> ModelConfig:
        if not path.exists():
            return cls()
        try:
            return cls(**read_yaml(path))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(str(path), exc)) from exc
