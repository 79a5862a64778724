"""utils.money: ISO 4217 minor units, the rate table, settings that configure it."""

from __future__ import annotations

import pytest

from utils.config import RuleThresholds, load_settings
from utils.errors import ConfigError
from utils.models import CURRENCIES
from utils.money import DEFAULT_RATES, MINOR_UNITS, USD_PER_UNIT, RateTable, format_amount, parse_rates


def test_every_accepted_currency_has_a_minor_unit_and_a_rate() -> None:
    assert set(MINOR_UNITS) == set(USD_PER_UNIT) == set(CURRENCIES)
    assert {c for c, d in MINOR_UNITS.items() if d == 0} == {"JPY", "KRW", "VND", "CLP"}
    assert all(rate > 0 for rate in USD_PER_UNIT.values())


def test_default_table_is_in_us_dollars() -> None:
    assert DEFAULT_RATES.base == "USD"
    assert DEFAULT_RATES.to_base(100.0, "USD") == 100.0
    assert DEFAULT_RATES.to_base(10_000, "JPY") == 67.0
    assert DEFAULT_RATES.to_base(1_000_000, "VND") == 39.0
    assert DEFAULT_RATES.from_base(67.0, "JPY") == 10_000  # whole yen
    assert DEFAULT_RATES.from_base(10.0, "EUR") == 9.26


def test_another_base_re_expresses_the_table_and_overrides_win() -> None:
    eur = RateTable.create("EUR")
    assert eur.to_base(108.0, "USD") == 100.0 and eur.to_base(50.0, "EUR") == 50.0
    yen = RateTable.create("JPY", {"USD": 150.0})
    assert yen.to_base(10.0, "USD") == 1_500 and yen.to_base(1.0, "EUR") == 161  # whole yen, rounded
    with pytest.raises(ValueError, match="base currency"):
        RateTable.create("XXX")


def test_parse_rates() -> None:
    assert parse_rates("") == {}
    assert parse_rates(" eur=1.1 ; JPY = 0.0065,") == {"EUR": 1.1, "JPY": 0.0065}
    for bad in ("EUR", "XXX=1", "EUR=abc", "EUR=0", "EUR=-1", "EUR=inf"):
        with pytest.raises(ValueError):
            parse_rates(bad)


def test_settings_build_the_table_and_name_a_bad_value() -> None:
    s = load_settings(environ={"BASE_CURRENCY": "EUR", "FX_RATES": "USD=0.9"})
    table = s.rules.rate_table()
    assert table.base == "EUR" and table.to_base(100.0, "USD") == 90.0
    with pytest.raises(ConfigError, match="FX_RATES"):
        load_settings(environ={"FX_RATES": "EUR=one"})
    with pytest.raises(ConfigError, match="BASE_CURRENCY"):
        RuleThresholds(base_currency="ZZZ")


def test_format_amount_uses_the_currency_decimals() -> None:
    assert format_amount(1234.5, "USD") == "1,234.50 USD"
    assert format_amount(1500, "JPY") == "1,500 JPY"
