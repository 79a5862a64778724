"""The simulated world: cities, merchants and a seeded pool of accounts with homes and habits. Pure.

An account lives in one city, pays in that city's currency and keeps that city's civil clock
(its IANA zone): it transacts only during its waking hours. Its spending is described in US
dollars (`typical_amount`) and priced in its own currency when a transaction is made, so a
Tokyo account pays ¥6,000 where a New York one pays $40: the same habit, different nominal
amounts, as the consumer's base-currency thresholds expect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from random import Random

from faker import Faker

from utils.models import CURRENCIES
from utils.money import MINOR_UNITS, USD_PER_UNIT

__all__ = [
    "CATEGORIES",
    "CITIES",
    "RISKY_CATEGORIES",
    "Account",
    "AccountPool",
    "City",
    "Merchant",
    "note",
    "price",
]


@dataclass(frozen=True, slots=True)
class City:
    name: str
    country: str  # ISO 3166-1 alpha-2
    currency: str  # ISO 4217
    lat: float
    lon: float
    zone: str  # IANA time zone: the civil clock people there live by


# Every currency of the list is a dollar-scale one or a zero-decimal / high-nominal one (JPY, KRW,
# VND, CLP, IDR, COP, HUF, ...): thresholds are in the base currency, so both kinds must stay
# below them in ordinary traffic. Spread over every longitude band, so that at any UTC time some
# home city is in its local night for unusual_hour_high_value.
CITIES: tuple[City, ...] = (
    City("New York", "US", "USD", 40.7128, -74.0060, "America/New_York"),
    City("Los Angeles", "US", "USD", 34.0522, -118.2437, "America/Los_Angeles"),
    City("Chicago", "US", "USD", 41.8781, -87.6298, "America/Chicago"),
    City("Miami", "US", "USD", 25.7617, -80.1918, "America/New_York"),
    City("Seattle", "US", "USD", 47.6062, -122.3321, "America/Los_Angeles"),
    City("Honolulu", "US", "USD", 21.3069, -157.8583, "Pacific/Honolulu"),
    City("Anchorage", "US", "USD", 61.2181, -149.9003, "America/Anchorage"),
    City("Toronto", "CA", "CAD", 43.6532, -79.3832, "America/Toronto"),
    City("Vancouver", "CA", "CAD", 49.2827, -123.1207, "America/Vancouver"),
    City("Mexico City", "MX", "MXN", 19.4326, -99.1332, "America/Mexico_City"),
    City("Bogotá", "CO", "COP", 4.7110, -74.0721, "America/Bogota"),
    City("Lima", "PE", "PEN", -12.0464, -77.0428, "America/Lima"),
    City("Santiago", "CL", "CLP", -33.4489, -70.6693, "America/Santiago"),
    City("Buenos Aires", "AR", "ARS", -34.6037, -58.3816, "America/Argentina/Buenos_Aires"),
    City("São Paulo", "BR", "BRL", -23.5505, -46.6333, "America/Sao_Paulo"),
    City("London", "GB", "GBP", 51.5074, -0.1278, "Europe/London"),
    City("Manchester", "GB", "GBP", 53.4808, -2.2426, "Europe/London"),
    City("Dublin", "IE", "EUR", 53.3498, -6.2603, "Europe/Dublin"),
    City("Lisbon", "PT", "EUR", 38.7223, -9.1393, "Europe/Lisbon"),
    City("Madrid", "ES", "EUR", 40.4168, -3.7038, "Europe/Madrid"),
    City("Paris", "FR", "EUR", 48.8566, 2.3522, "Europe/Paris"),
    City("Amsterdam", "NL", "EUR", 52.3676, 4.9041, "Europe/Amsterdam"),
    City("Berlin", "DE", "EUR", 52.5200, 13.4050, "Europe/Berlin"),
    City("Rome", "IT", "EUR", 41.9028, 12.4964, "Europe/Rome"),
    City("Zurich", "CH", "CHF", 47.3769, 8.5417, "Europe/Zurich"),
    City("Stockholm", "SE", "SEK", 59.3293, 18.0686, "Europe/Stockholm"),
    City("Oslo", "NO", "NOK", 59.9139, 10.7522, "Europe/Oslo"),
    City("Copenhagen", "DK", "DKK", 55.6761, 12.5683, "Europe/Copenhagen"),
    City("Warsaw", "PL", "PLN", 52.2297, 21.0122, "Europe/Warsaw"),
    City("Prague", "CZ", "CZK", 50.0755, 14.4378, "Europe/Prague"),
    City("Budapest", "HU", "HUF", 47.4979, 19.0402, "Europe/Budapest"),
    City("Athens", "GR", "EUR", 37.9838, 23.7275, "Europe/Athens"),
    City("Istanbul", "TR", "TRY", 41.0082, 28.9784, "Europe/Istanbul"),
    City("Casablanca", "MA", "MAD", 33.5731, -7.5898, "Africa/Casablanca"),
    City("Lagos", "NG", "NGN", 6.5244, 3.3792, "Africa/Lagos"),
    City("Nairobi", "KE", "KES", -1.2921, 36.8219, "Africa/Nairobi"),
    City("Johannesburg", "ZA", "ZAR", -26.2041, 28.0473, "Africa/Johannesburg"),
    City("Tel Aviv", "IL", "ILS", 32.0853, 34.7818, "Asia/Jerusalem"),
    City("Dubai", "AE", "AED", 25.2048, 55.2708, "Asia/Dubai"),
    City("Mumbai", "IN", "INR", 19.0760, 72.8777, "Asia/Kolkata"),
    City("Bangkok", "TH", "THB", 13.7563, 100.5018, "Asia/Bangkok"),
    City("Hanoi", "VN", "VND", 21.0278, 105.8342, "Asia/Bangkok"),
    City("Jakarta", "ID", "IDR", -6.2088, 106.8456, "Asia/Jakarta"),
    City("Singapore", "SG", "SGD", 1.3521, 103.8198, "Asia/Singapore"),
    City("Hong Kong", "HK", "HKD", 22.3193, 114.1694, "Asia/Hong_Kong"),
    City("Shanghai", "CN", "CNY", 31.2304, 121.4737, "Asia/Shanghai"),
    City("Taipei", "TW", "TWD", 25.0330, 121.5654, "Asia/Taipei"),
    City("Manila", "PH", "PHP", 14.5995, 120.9842, "Asia/Manila"),
    City("Seoul", "KR", "KRW", 37.5665, 126.9780, "Asia/Seoul"),
    City("Tokyo", "JP", "JPY", 35.6762, 139.6503, "Asia/Tokyo"),
    City("Osaka", "JP", "JPY", 34.6937, 135.5023, "Asia/Tokyo"),
    City("Sydney", "AU", "AUD", -33.8688, 151.2093, "Australia/Sydney"),
    City("Perth", "AU", "AUD", -31.9505, 115.8605, "Australia/Perth"),
    City("Auckland", "NZ", "NZD", -36.8485, 174.7633, "Pacific/Auckland"),
)
assert all(c.currency in CURRENCIES for c in CITIES)

# Category -> amount factor relative to the account's typical spend. Kept within 0.6-1.6x so that
# no ordinary purchase looks like a spike: amount_spike wants 8x the account's median.
CATEGORIES: dict[str, float] = {
    "grocery": 1.0,
    "restaurant": 0.8,
    "fuel": 1.0,
    "retail": 1.2,
    "electronics": 1.6,
    "travel": 1.6,
    "entertainment": 0.7,
    "health": 1.0,
    "utilities": 1.3,
    "digital_goods": 0.6,
    "clothing": 1.1,
    "home_improvement": 1.4,
}
_MERCHANTS_PER_CATEGORY = 20
_ATM_OPERATORS = 24


@dataclass(frozen=True, slots=True)
class Merchant:
    name: str
    category: str


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    city: City
    currency: str
    categories: tuple[str, ...]
    merchants: tuple[Merchant, ...]  # usual merchants, drawn from the account's categories
    atm_operator: str
    typical_amount: float  # US dollars: mean of the account's purchase amounts (before category factor)
    amount_sigma: float  # lognormal shape: how spread out the account's spending is
    active_start: int  # civil local hour, inclusive
    active_end: int  # civil local hour, exclusive (24 = midnight)
    online_share: float
    activity: float  # relative transaction frequency; the pool's mean is about 1

    @property
    def amount_mu(self) -> float:
        # mu chosen so that the lognormal's *mean* (not median) is typical_amount
        return math.log(self.typical_amount) - self.amount_sigma**2 / 2


# High-risk categories (the card-burst rule's default list): shops no account uses habitually,
# where a stolen card is turned into resaleable value. Drawn after everything else, so the pool's
# accounts, merchants and ATMs are what they were before these existed.
RISKY_CATEGORIES = ("gift_cards", "crypto", "wallet_topup", "jewelry")
_RISKY_PER_CATEGORY = 5
_PAYEES = 60  # employers, landlords, utilities, vendors and clients: counterparties of transfers


@dataclass(frozen=True, slots=True)
class AccountPool:
    accounts: tuple[Account, ...]
    merchants: tuple[Merchant, ...]
    atm_operators: tuple[str, ...]
    risky_merchants: tuple[Merchant, ...] = ()
    payees: tuple[str, ...] = ()  # names of counterparties (employers, utilities, vendors, clients)

    @classmethod
    def create(cls, n: int, seed: int) -> AccountPool:
        """`n` accounts with homes, habits and usual merchants; same (n, seed), same pool, and the
        first n accounts of a larger pool of the same seed are these n."""
        if n < 1:
            raise ValueError(f"account pool needs at least 1 account, got {n}")
        rng = Random(f"txmon-pool:{seed}")
        fake = Faker("en_US")
        fake.seed_instance(seed)
        # Names are drawn once here: Faker costs ~150 us a call, too slow per transaction.
        seen: set[str] = set()
        by_category = {
            category: [
                Merchant(_unique_company(fake, seen), category) for _ in range(_MERCHANTS_PER_CATEGORY)
            ]
            for category in CATEGORIES
        }
        merchants = tuple(m for ms in by_category.values() for m in ms)
        atms = tuple(f"{fake.last_name()} Bank ATM" for _ in range(_ATM_OPERATORS))
        width = max(8, len(str(n)))
        accounts = []
        for i in range(1, n + 1):
            city = rng.choice(CITIES)
            categories = tuple(rng.sample(list(CATEGORIES), rng.randint(3, 6)))
            usual = tuple(m for c in categories for m in rng.sample(by_category[c], rng.randint(1, 3)))
            accounts.append(
                Account(
                    account_id=f"ACC{i:0{width}d}",
                    city=city,
                    currency=city.currency,
                    categories=categories,
                    merchants=usual,
                    atm_operator=rng.choice(atms),
                    typical_amount=round(min(400.0, max(8.0, rng.lognormvariate(math.log(45.0), 0.7))), 2),
                    amount_sigma=rng.uniform(0.25, 0.5),
                    # From 07:00: even where civil time runs two hours ahead of the sun (the rules
                    # fall back to solar time in countries with several zones) a morning payment
                    # stays out of the 01:00-05:00 unusual-hour window.
                    active_start=rng.randint(7, 9),
                    active_end=rng.randint(21, 24),
                    online_share=rng.uniform(0.15, 0.6),
                    activity=min(3.0, max(0.2, rng.lognormvariate(-0.125, 0.5))),
                )
            )
        risky = tuple(
            Merchant(_unique_company(fake, seen), category)
            for category in RISKY_CATEGORIES
            for _ in range(_RISKY_PER_CATEGORY)
        )
        payees = tuple(_unique_company(fake, seen) for _ in range(_PAYEES))
        return cls(tuple(accounts), merchants, atms, risky, payees)


def _unique_company(fake: Faker, seen: set[str]) -> str:
    # A name shared by two categories would blur "usual merchant" and the duplicate rule.
    while True:
        name = str(fake.company())
        if name not in seen:
            seen.add(name)
            return name


def price(usd: float, currency: str) -> float:
    """A US-dollar amount as a price in `currency`: its minor unit, and whole units where one unit
    is worth less than a cent (VND, IDR, COP, ...: nobody prices in fractions of a rupiah)."""
    per_unit = USD_PER_UNIT[currency]
    decimals = MINOR_UNITS[currency] if per_unit >= 0.01 else 0
    return round(usd / per_unit, decimals)


def note(usd: float, currency: str) -> float:
    """An ATM withdrawal of about `usd`, in whole notes of the currency (multiples of 1, 2 or 5
    times a power of ten, the smallest worth at least ten dollars)."""
    per_unit = USD_PER_UNIT[currency]
    step = 10 ** math.floor(math.log10(10.0 / per_unit))
    for mult in (1, 2, 5, 10):
        if step * mult * per_unit >= 10.0:
            step *= mult
            break
    return float(max(1, round(usd / per_unit / step)) * step)
