"""Plain data shared by producer, consumer, database and reports. No I/O here.

Wire format (JSON object, UTF-8, one per Kafka message, key = account_id: the key chooses the
partition, and the partition is what orders an account's transactions and decides which consumer
owns them, so the consumer rejects a message whose key differs as `key_mismatch`):

    schema_version     int   1
    transaction_id     str   1-64 chars of [A-Za-z0-9._:-] (the producer sends UUID4 strings)
    account_id         str   1-64 chars of [A-Za-z0-9._:-]
    transaction_type   str   one of TRANSACTION_TYPES
    amount             number > 0 with at most the currency's ISO 4217 minor-unit decimals (2 for
                       USD, 0 for JPY, KRW, VND and CLP: utils/money.py); a numeric string works too
    currency           str   ISO 4217 code from CURRENCIES
    timestamp          str   ISO-8601 with offset, e.g. "2026-11-24T21:04:03.123456+00:00"
    channel            str   one of CHANNELS
    country            str   ISO 3166-1 alpha-2, upper case
    merchant           str | null   (for a transfer: its payee, optional; null for most deposits)
    merchant_category  str | null
    city               str | null
    latitude           number | null   -90..90
    longitude          number | null   -180..180
    simulated_scenario str | null   ground truth from the simulator: the scenario (one of SCENARIOS) of
                                    the injected incident this message belongs to, null for ordinary
                                    traffic; stored, never read by the rules
    simulated_incident str | null   ground truth: an id shared by every message of one injected incident
                                    (its lead-in legs and its aftermath too, e.g. the first ordinary
                                    payment after an impossible journey); set whenever
                                    simulated_scenario is; stored, never read by the rules. Both
                                    optional: a message without them is ordinary traffic

Unknown fields are ignored (forward compatibility); see consumer/validation.py for every check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SCHEMA_VERSION = 1

TRANSACTION_TYPES = ("purchase", "withdrawal", "transfer", "deposit", "refund")

# Direction, from the account's side: money going out (a debit) or coming in (a credit). The wire
# format has no sign, so the type says it: a purchase, a cash withdrawal and a transfer the account
# sends are debits; a deposit (salary, incoming transfer, cash paid in) and a refund are credits.
# A transfer is always one the account sends: one it receives is a deposit. For a transfer,
# `merchant` names the payee (optional). The rules compare debits with what the account spends
# and credits with what it receives (consumer/rules.py).
DEBIT_TYPES = frozenset({"purchase", "withdrawal", "transfer"})
CREDIT_TYPES = frozenset({"deposit", "refund"})
CHANNELS = ("pos", "online", "atm")
SEVERITIES = ("low", "medium", "high", "critical")

# Codes the consumer accepts; a message in any other currency is rejected with a reason.
CURRENCIES = frozenset(
    [
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CHF",
        "CAD",
        "AUD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "HUF",
        "RON",
        "BGN",
        "TRY",
        "ILS",
        "AED",
        "SAR",
        "INR",
        "CNY",
        "HKD",
        "SGD",
        "KRW",
        "TWD",
        "THB",
        "MYR",
        "IDR",
        "PHP",
        "VND",
        "BRL",
        "MXN",
        "ARS",
        "CLP",
        "COP",
        "PEN",
        "ZAR",
        "NGN",
        "KES",
        "EGP",
        "MAD",
    ]
)

# Scenario labels the simulator may put in `simulated_scenario`.
SCENARIOS = (
    "card_testing",
    "velocity_burst",
    "amount_spike",
    "impossible_travel",
    "rapid_repeat",
    "unusual_hour_high_value",
    "high_amount",
    "pass_through",
    "refund_abuse",
    "account_takeover",
    "structuring",
    "invoice_fraud",
    "dormant_reactivation",
    "high_risk_card_burst",
)


@dataclass(slots=True)
class Transaction:
    """A validated transaction, plus where it came from in Kafka."""

    transaction_id: str
    account_id: str
    transaction_type: str
    amount: float
    currency: str
    timestamp: datetime  # timezone-aware, UTC
    channel: str
    country: str
    merchant: str | None = None
    merchant_category: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    simulated_scenario: str | None = None
    simulated_incident: str | None = None
    # `amount` converted to the base currency (utils/money.py) by validation; the rules and the
    # account windows read only this. NaN (not given: tests, tools) means `amount` is already in
    # the base currency.
    amount_base: float = math.nan
    schema_version: int = SCHEMA_VERSION
    # Where it came from: (topic, partition, offset) identifies the message, so replays, the state
    # load and reconciliation never mix two topics that share a database.
    kafka_topic: str = ""
    kafka_partition: int = -1
    kafka_offset: int = -1
    # The Kafka record's timestamp in ms since the epoch (CreateTime: when the producer sent it);
    # the pipeline's delay is measured from it, not from the event's own `timestamp`.
    kafka_timestamp_ms: int | None = None
    # `timestamp` in epoch seconds, derived once: the rules and the account windows read it for
    # nearly every message. Not a column, not an argument; treat a Transaction as immutable.
    epoch: float = field(init=False, repr=False, compare=False)
    # `timestamp.isoformat()` when the sent text is exactly that (validation sets it for the
    # common "2026-11-24T21:04:03.123456+00:00"), so the COPY data reuses it instead of formatting
    # the datetime again (consumer/storage.py); None: format it. Not a column, not an argument,
    # not compared; `dataclasses.replace` leaves it None.
    timestamp_text: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.epoch = self.timestamp.timestamp()
        if self.amount_base != self.amount_base:  # NaN
            self.amount_base = self.amount


@dataclass(frozen=True, slots=True)
class Alert:
    """One rule firing for one transaction; `details` holds the numbers that fired it."""

    transaction_id: str
    account_id: str
    alert_type: str
    severity: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that failed validation: original bytes, the reason, and its Kafka coordinates."""

    reason: str  # a short machine-readable code, e.g. "invalid_json", "amount_not_positive"
    detail: str  # human-readable, names the field and the offending value (truncated)
    raw: bytes
    topic: str
    partition: int
    offset: int
    transaction_id: str | None = None
    key: bytes | None = None
