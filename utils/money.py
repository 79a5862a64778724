"""Money in one base currency: ISO 4217 minor units and the rate table that converts amounts.

Alert thresholds (ALERT_HIGH_AMOUNT, ...) and VALIDATION_MAX_AMOUNT are amounts in the base
currency (`BASE_CURRENCY`, USD by default): 10,000 means $10,000, not ¥10,000. The consumer
converts each amount once, at validation, stores the converted value in `transactions.amount_base`
beside the amount as sent, and the rules read only that. Pure: no I/O, nothing global changes.

Why a setting and not a reference table in PostgreSQL: the rates are data passed to pure code
(validation), so every consumer of a group and every replay of a stream converts alike, and the
rebuild of the rule windows reads `amount_base` back as the rules first saw it. A table that a
job refreshed during the day would make the same message convert differently on a replay. The
built-in table below holds indicative mid-market rates, good for thresholds whose point is
"ten thousand dollars or so"; a deployment that needs its own sets `FX_RATES` (the codes it
lists override the built-in ones). The daily report converts with the same table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from utils.models import CURRENCIES

__all__ = [
    "DEFAULT_BASE",
    "MINOR_UNITS",
    "RATES_AS_OF",
    "USD_PER_UNIT",
    "RateTable",
    "format_amount",
    "parse_rates",
]

DEFAULT_BASE = "USD"

# ISO 4217 exponent: decimal places of the currency's minor unit. Every code of CURRENCIES has
# an entry (a unit test checks); those with none are whole-unit currencies.
MINOR_UNITS: Mapping[str, int] = MappingProxyType(
    {code: 0 for code in ("JPY", "KRW", "VND", "CLP")}
    | {code: 2 for code in CURRENCIES if code not in ("JPY", "KRW", "VND", "CLP")}
)

RATES_AS_OF = "2026-06"  # indicative mid-market rates, rounded; for thresholds, not for accounting
# US dollars per one unit of each currency.
USD_PER_UNIT: Mapping[str, float] = MappingProxyType(
    {
        "USD": 1.0,
        "EUR": 1.08,
        "GBP": 1.27,
        "JPY": 0.0067,
        "CHF": 1.12,
        "CAD": 0.73,
        "AUD": 0.66,
        "NZD": 0.60,
        "SEK": 0.095,
        "NOK": 0.093,
        "DKK": 0.145,
        "PLN": 0.25,
        "CZK": 0.043,
        "HUF": 0.0027,
        "RON": 0.22,
        "BGN": 0.55,
        "TRY": 0.029,
        "ILS": 0.27,
        "AED": 0.2723,
        "SAR": 0.2667,
        "INR": 0.012,
        "CNY": 0.138,
        "HKD": 0.128,
        "SGD": 0.74,
        "KRW": 0.00073,
        "TWD": 0.031,
        "THB": 0.028,
        "MYR": 0.22,
        "IDR": 0.000062,
        "PHP": 0.0175,
        "VND": 0.000039,
        "BRL": 0.18,
        "MXN": 0.055,
        "ARS": 0.001,
        "CLP": 0.00105,
        "COP": 0.00024,
        "PEN": 0.27,
        "ZAR": 0.054,
        "NGN": 0.00065,
        "KES": 0.0077,
        "EGP": 0.02,
        "MAD": 0.10,
    }
)


def parse_rates(text: str) -> dict[str, float]:
    """`"EUR=1.08, JPY=0.0067"` (units of the base currency per unit) -> {"EUR": 1.08, ...}.

    Raises ValueError naming the bad entry; an empty string gives {}.
    """
    rates: dict[str, float] = {}
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        code, sep, value = part.partition("=")
        code = code.strip().upper()
        if not sep or code not in CURRENCIES:
            raise ValueError(f"{part!r}: expected CODE=RATE with CODE one of the accepted currencies")
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: the rate is not a number") from None
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"{part!r}: the rate must be a positive number")
        rates[code] = rate
    return rates


@dataclass(frozen=True, slots=True)
class RateTable:
    """Factors from each accepted currency to `base`; `to_base` rounds to the base's minor unit."""

    base: str
    factors: Mapping[str, float]  # units of `base` per unit of the currency

    @classmethod
    def create(cls, base: str = DEFAULT_BASE, overrides: Mapping[str, float] | None = None) -> RateTable:
        """The built-in table re-expressed in `base`; `overrides` are already in `base` units."""
        if base not in USD_PER_UNIT:
            raise ValueError(f"base currency {base!r} is not one of the accepted currencies")
        per_base = USD_PER_UNIT[base]
        factors = {code: usd / per_base for code, usd in USD_PER_UNIT.items()}
        factors[base] = 1.0
        for code, rate in (overrides or {}).items():
            factors[code] = rate
        return cls(base, MappingProxyType(factors))

    def to_base(self, amount: float, currency: str) -> float:
        """`amount` of `currency` in the base currency, rounded to the base's minor unit."""
        return round(amount * self.factors[currency], MINOR_UNITS[self.base])

    def from_base(self, amount: float, currency: str) -> float:
        """The inverse, rounded to `currency`'s minor unit (what a price in that currency looks like)."""
        return round(amount / self.factors[currency], MINOR_UNITS[currency])


def format_amount(amount: float | Decimal, currency: str) -> str:
    """`1234.5, "USD"` -> "1,234.50 USD"; `1500, "JPY"` -> "1,500 JPY" (the currency's own decimals)."""
    return f"{amount:,.{MINOR_UNITS.get(currency, 2)}f} {currency}"


DEFAULT_RATES = RateTable.create()
