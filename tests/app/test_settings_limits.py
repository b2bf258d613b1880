"""Settings refuse values that would lose, double or stall usage, naming the variable to change."""

from __future__ import annotations

import pytest

from gateway.app.settings import SettingsError, load_settings


@pytest.mark.parametrize("variable", ["GATEWAY_RETRY_MAX_S", "GATEWAY_RETRY_BASE_S"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_settings_refuse_a_retry_delay_that_is_not_finite_and_positive(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


def test_settings_keep_the_retry_defaults_when_none_is_set() -> None:
    settings = load_settings({})

    assert (settings.retry_base_s, settings.retry_max_s) == (1.0, 600.0)
