"""Settings refuse values that would lose, double or stall usage, naming the variable to change."""

from __future__ import annotations

import pytest

from gateway.app.environment import load_settings
from gateway.app.settings_checks import SettingsError
from gateway.domain.policy import UnknownTypes


@pytest.mark.parametrize("variable", ["GATEWAY_RETRY_MAX_S", "GATEWAY_RETRY_BASE_S"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_settings_refuse_a_retry_delay_that_is_not_finite_and_positive(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


def test_settings_keep_the_retry_defaults_when_none_is_set() -> None:
    settings = load_settings({})

    assert (settings.retry_base_s, settings.retry_max_s) == (1.0, 600.0)


@pytest.mark.parametrize(("value", "expected"), [("park", UnknownTypes.PARK), ("ignore", UnknownTypes.IGNORE)])
def test_settings_read_what_to_do_with_unknown_types(value: str, expected: UnknownTypes) -> None:
    settings = load_settings({"GATEWAY_UNKNOWN_TYPES": value})

    assert settings.unknown_types is expected
    assert settings.policy().unknown_types is expected


def test_settings_park_unknown_types_by_default() -> None:
    assert load_settings({}).policy().unknown_types is UnknownTypes.PARK


def test_settings_refuse_an_unknown_types_value_that_is_neither_park_nor_ignore() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_UNKNOWN_TYPES"):
        load_settings({"GATEWAY_UNKNOWN_TYPES": "drop"})
