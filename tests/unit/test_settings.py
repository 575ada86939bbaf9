from __future__ import annotations

from pathlib import Path

import pytest

from sluice.converters.artifact.errors import ConfigError
from sluice.server.model_config import ModelConfig, VersionPolicy
from sluice.server.settings import load_settings, reference_markdown


def test_precedence_flags_over_environment_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text("port: 1111\nhost: 0.0.0.0\nbatching: {max_batch_size: 8}\n")
    monkeypatch.setenv("SLUICE_PORT", "2222")
    monkeypatch.setenv("SLUICE_BATCHING__INSTANCES", "3")
    settings = load_settings(config, host="127.0.0.2")
    assert settings.port == 2222
    assert settings.host == "127.0.0.2"
    assert settings.batching.max_batch_size == 8
    assert settings.batching.instances == 3


def test_unknown_keys_fail_with_their_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'prot'"):
        load_settings(config)
    config.write_text("batching: {max_batch: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'batching\.max_batch'"):
        load_settings(config)
    monkeypatch.setenv("SLUICE_POTR", "1")
    with pytest.raises(ConfigError, match="SLUICE_POTR"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("port: [1\n", "not valid YAML"), ("- 1\n", "mapping"), ("port: -3\n", "'port'")],
)
def test_broken_files_are_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_settings(config)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


def test_version_policies() -> None:
    versions = [3, 1, 2, 10]
    assert VersionPolicy().select(versions) == [1, 2, 3, 10]
    assert VersionPolicy(latest=2).select(versions) == [3, 10]
    assert VersionPolicy(specific=[2, 7]).select(versions) == [2]
    assert ModelConfig(version_policy="all").version_policy.select(versions) == [1, 2, 3, 10]
    with pytest.raises(ValueError, match="choose one"):
        VersionPolicy(latest=1, specific=[1])


def test_model_config_rejects_bad_labels_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("labels: {'2': 1}\n")
    with pytest.raises(ConfigError, match="collide"):
        ModelConfig.read(path)
    path.write_text("lables: {stable: 1}\n")
    with pytest.raises(ConfigError, match="unknown key 'lables'"):
        ModelConfig.read(path)
    assert ModelConfig.read(tmp_path / "absent.yaml") == ModelConfig()


def test_configuration_reference_is_current() -> None:
    doc = Path(__file__).parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: run `python -m sluice.server.settings > docs/configuration.md`"
    )
