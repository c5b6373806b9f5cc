"""Settings come from the environment, typed, with errors that name the variable."""

from __future__ import annotations

import pytest

from service.config import Settings, SettingsError


def test_defaults_point_at_the_local_servers() -> None:
    settings = Settings.from_env({})
    assert settings.http_port == 8080
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.mongo_url == "mongodb://127.0.0.1:27017"
    assert settings.kafka_bootstrap == "127.0.0.1:9092"


def test_values_are_parsed_to_their_types() -> None:
    settings = Settings.from_env({"BROKER_HTTP_PORT": "9000", "BROKER_DEPENDENCY_TIMEOUT": "0.5"})
    assert settings.http_port == 9000
    assert settings.dependency_timeout == 0.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROKER_HTTP_PORT", "eighty"),
        ("BROKER_HTTP_PORT", "70000"),
        ("BROKER_DEPENDENCY_TIMEOUT", "-1"),
        ("BROKER_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_malformed_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_every_setting_is_documented() -> None:
    for variable, _default, meaning in Settings.documentation():
        assert variable.startswith("BROKER_")
        assert meaning
