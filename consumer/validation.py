"""Pure validation: one Kafka message's bytes -> a `Transaction` or a `Rejection` with a reason.

Nothing here does I/O and nothing raises: the consumer loop sends every `Rejection` to the
dead-letter topic and table, so a poison message can never stop the pipeline. The wire format
is documented in utils/models.py; every check below maps to exactly one `reason` code:

    empty_message, message_too_large, invalid_utf8, invalid_json, not_an_object,
    missing_field, wrong_type, unsupported_schema_version, invalid_id, invalid_enum,
    amount_not_positive, amount_too_large, amount_precision, unknown_currency,
    invalid_country, invalid_timestamp, timestamp_in_future, timestamp_too_old,
    no_record_timestamp, field_too_long, control_characters, invalid_coordinates, key_mismatch,
    wrong_partition, internal_error

Time checks are relative to the Kafka record's timestamp (CreateTime, set by the producer, or
LogAppendTime, set by the broker), never to the consumer's clock: both are stored in the log, so
replaying a message minutes or months later judges it exactly as the first time. The broker bounds
CreateTime by its own clock (`message.timestamp.after.max.ms`, set where the project creates
topics: utils/kafka_cleanup.py), so an event time can be at most that plus
VALIDATION_MAX_FUTURE_SECONDS ahead of when it was written (docs/event-time.md). A record without a
timestamp (pre-0.10 message format, kafka-python gives -1) escapes that bound: it is rejected
(`no_record_timestamp`).
`key_mismatch`: the Kafka key must be the account_id (UTF-8), because the key chose the partition,
and one partition is what orders an account's transactions and decides which consumer owns them.
`wrong_partition`: and the message must be in the partition Kafka's default partitioner (murmur2,
the Java client's and kafka-python's) puts that key in, under one of the partition counts the
consumer group has recorded for this topic incarnation (`partition_counts`: a key moved by
add-partitions is accepted in its old and its new partition). Otherwise one account would live in
two partitions, owned by two members whose cached histories never see each other's events, and
its alerts would depend on cache residency (docs/guarantees-assumptions.md §3).

Text is accepted verbatim, SQL metacharacters included: it reaches PostgreSQL only through
parameterised COPY, so rejecting `'; DROP TABLE` would lose data without adding safety. What
PostgreSQL `text` cannot hold (NUL) is rejected; orjson already refuses invalid UTF-8 and lone
surrogates, so every accepted string encodes cleanly.

This runs for every message (tens of thousands per second on one core), hence one dict lookup
per field, `type(x) is T` instead of isinstance (orjson never returns subclasses, and it keeps
`bool` out of the numbers), and regexes only where a str method cannot do the job.

Two paths, one verdict. The fast path (`accept`) decodes with msgspec straight into a typed
struct (types, nulls and unknown fields checked in C) and only ever *accepts*: it runs every
check below as a plain predicate, and the moment one fails, or the struct does not fit, it gives
up and the message takes the full path (`validate_full`: orjson into a dict, then `_transaction`), which alone
decides every rejection, its reason and its detail. So a message is accepted by the fast path
only if the full path accepts it with the same values: msgspec's JSON is a subset of orjson's
(unknown fields are refused, so nothing is skipped unparsed; duplicate keys: the last wins in
both), and the fast path asks for printable text where the full path would look closer.
tests/unit/test_validation.py holds the two paths together over the hostile inputs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import unicodedata
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from utils.config import ValidationLimits
from utils.models import CHANNELS, CURRENCIES, SCHEMA_VERSION, TRANSACTION_TYPES, Rejection, Transaction
from utils.money import DEFAULT_RATES, MINOR_UNITS, RateTable
from utils.partitioner import key_hash

__all__ = ["REASONS", "accept", "validate", "validate_full"]

REASONS = (
    "empty_message",
    "message_too_large",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "unsupported_schema_version",
    "invalid_id",
    "invalid_enum",
    "amount_not_positive",
    "amount_too_large",
    "amount_precision",
    "unknown_currency",
    "invalid_country",
    "invalid_timestamp",
    "timestamp_in_future",
    "timestamp_too_old",
    "no_record_timestamp",
    "field_too_long",
    "control_characters",
    "invalid_coordinates",
    "key_mismatch",
    "wrong_partition",
    "internal_error",
)

_UTC = UTC
_TRANSACTION_TYPES = frozenset(TRANSACTION_TYPES)
_CHANNELS = frozenset(CHANNELS)

# fullmatch, not match: `$` would let a trailing newline through.
_is_id = re.compile(r"[A-Za-z0-9._:-]{1,64}").fullmatch
# ASCII digits only: `\d` would accept Arabic-Indic digits, which float() happily converts.
# No exponent, no spaces, no underscores: a string amount must look like money.
_is_numeric_string = re.compile(r"-?[0-9]+(?:\.[0-9]+)?").fullmatch
_find_c0 = re.compile(r"[\x00-\x1f]").search
# A 32-digit string is still finite as a float; longer ones could round to inf.
_MAX_NUMERIC_STRING = 32
# Far longer than any ISO-8601 form; keeps fromisoformat away from megabyte strings.
_MAX_TIMESTAMP_CHARS = 64
_SHOWN_CHARS = 100

# Bounded depth and width: a 1000-deep nested array would make plain repr() hit the recursion limit.
_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = _SHOWN_CHARS
_repr.maxother = _SHOWN_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8

# murmur2 of each key seen (bounded, utils/partitioner.py): uncached it costs ~5 µs a message.
# A memo of a pure function: what it answers never depends on what it holds.
_key_hashes: dict[bytes, int] = {}


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """The wire format (utils/models.py) as the fast path decodes it; anything else (a missing
    field, another type, an unknown field) sends the message down the full path."""

    schema_version: int
    transaction_id: str
    account_id: str
    transaction_type: str
    amount: float | str
    currency: str
    timestamp: str
    channel: str
    country: str
    merchant: str | None = None
    merchant_category: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    simulated_scenario: str | None = None
    simulated_incident: str | None = None


# The fast path's decoder (public: bench/profile.py times it as the consumer's JSON decoding).
decode_wire = msgspec.json.Decoder(_Wire).decode


class _Invalid(Exception):
    """Control flow inside this module only: a check failed. Never escapes `validate`."""

    __slots__ = ("detail", "reason")

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def validate(
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    limits: ValidationLimits,
    kafka_timestamp_ms: int | None,
    rates: RateTable = DEFAULT_RATES,
    partition_counts: Collection[int] | None = None,
) -> Transaction | Rejection:
    """Check one message against the wire format; never raises.

    `kafka_timestamp_ms` is the Kafka record's timestamp (None or negative: the record has none,
    and it is rejected), what "in the future" and "too old" are measured against, and what the pipeline's delay is
    measured from. `rates` converts the amount into the base currency (`amount_base`), the
    currency VALIDATION_MAX_AMOUNT and the rules' thresholds are in. The returned `Transaction`
    carries its Kafka topic, partition, offset and record timestamp. `partition_counts`: the
    partition counts the topic incarnation has had (recorded by the consumer group); the message
    must be where the default partitioner puts its key under one of them. None: not checked (a
    caller that does not know the topic's layout, such as the importer).
    """
    if raw and kafka_timestamp_ms is not None and kafka_timestamp_ms >= 0:
        accepted = accept(
            raw, topic, partition, offset, key, limits, kafka_timestamp_ms, rates, partition_counts
        )
        if accepted is not None:
            return accepted
    return validate_full(
        raw, topic, partition, offset, key, limits, kafka_timestamp_ms, rates, partition_counts
    )


def validate_full(
    raw: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    limits: ValidationLimits,
    kafka_timestamp_ms: int | None,
    rates: RateTable,
    partition_counts: Collection[int] | None,
) -> Transaction | Rejection:
    """The full path: orjson into a dict, every check with its reason and detail (the verdict on
    anything `accept` does not accept; also right, only slower, on what it does)."""
    doc: Any = None
    try:
        if not raw:
            raise _Invalid("empty_message", "message value is empty or null")
        if len(raw) > limits.max_message_bytes:
            raise _Invalid(
                "message_too_large", f"{len(raw)} bytes > limit of {limits.max_message_bytes} bytes"
            )
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _decode_error(raw, exc) from None
        if type(doc) is not dict:
            raise _Invalid("not_an_object", f"top-level JSON value is {type(doc).__name__}, not an object")
        ts = kafka_timestamp_ms if kafka_timestamp_ms is not None and kafka_timestamp_ms >= 0 else None
        txn = _transaction(
            doc,
            topic,
            partition,
            offset,
            key,
            limits,
            None if ts is None else ts / 1000.0,
            rates,
            partition_counts,
        )
        txn.kafka_timestamp_ms = ts
        return txn
    except Exception as exc:  # the loop must survive anything, including bugs here
        if isinstance(exc, _Invalid):
            reason, detail = exc.reason, exc.detail
        else:
            reason, detail = "internal_error", f"{type(exc).__name__}: {exc}"[:500]
        # Read only on this slow path, so the fast path checks the id once.
        transaction_id = _readable_id(doc.get("transaction_id")) if type(doc) is dict else None
        return Rejection(reason, detail, _as_bytes(raw), topic, partition, offset, transaction_id, key)


def accept(
    raw: bytes,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    limits: ValidationLimits,
    kafka_timestamp_ms: int,
    rates: RateTable,
    partition_counts: Collection[int] | None,
) -> Transaction | None:
    """The fast path: the Transaction the full path would return, or None to let it decide
    (`validate_full`). `raw` must be non-empty and `kafka_timestamp_ms` >= 0 (`validate` checks).
    Every check of `_transaction` is here, in the same order of meaning; none builds a detail.
    The checks of `_money`, `_timestamp` and `_check_event_time` are written out inline, with the
    same arithmetic: a call per check was a fifth of this function's cost
    (docs/performance-investigations.md)."""
    try:
        if len(raw) > limits.max_message_bytes:
            return None
        w = decode_wire(raw)
        transaction_id, account_id, currency = w.transaction_id, w.account_id, w.currency
        if (
            w.schema_version != SCHEMA_VERSION
            or not _is_id(transaction_id)
            or not _is_id(account_id)
            or key is None
            or key != account_id.encode()
            or w.transaction_type not in _TRANSACTION_TYPES
            or currency not in CURRENCIES
            or w.channel not in _CHANNELS
        ):
            return None
        if partition_counts is not None:
            h = key_hash(key, _key_hashes)
            for n in partition_counts:
                if h % n == partition:
                    break
            else:
                return None
        sent_amount = w.amount
        if isinstance(sent_amount, float):
            amount = sent_amount
        elif len(sent_amount) <= _MAX_NUMERIC_STRING and _is_numeric_string(sent_amount):
            amount = float(sent_amount)
        else:
            return None
        if not (amount > 0 and math.isfinite(amount)):
            return None
        country = w.country
        if not (len(country) == 2 and country.isascii() and country.isalpha() and country.isupper()):
            return None
        max_text = limits.max_text_length
        merchant, category, city = w.merchant, w.merchant_category, w.city
        scenario, incident = w.simulated_scenario, w.simulated_incident
        if (
            (merchant is not None and (len(merchant) > max_text or not merchant.isprintable()))
            or (category is not None and (len(category) > max_text or not category.isprintable()))
            or (city is not None and (len(city) > max_text or not city.isprintable()))
            or (scenario is not None and (len(scenario) > max_text or not scenario.isprintable()))
            or (incident is not None and (len(incident) > max_text or not incident.isprintable()))
        ):
            return None
        latitude, longitude = w.latitude, w.longitude
        if latitude is None or longitude is None:
            if latitude is not None or longitude is not None:
                return None
        elif not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
            return None
        # _money
        decimals = MINOR_UNITS[currency]
        if decimals == 2:
            cents = amount * 100.0
            if cents != int(cents) and round(amount, 2) != amount:
                return None
        elif round(amount, decimals) != amount:
            return None
        amount_base = rates.to_base(amount, currency)
        if amount_base > limits.max_amount:
            return None
        # _timestamp (a ValueError from fromisoformat lands in the except below)
        sent_time = w.timestamp
        if len(sent_time) > _MAX_TIMESTAMP_CHARS:
            return None
        timestamp = _fromisoformat(sent_time)
        zone = timestamp.tzinfo
        if zone is not _UTC:
            if zone is None:
                return None
            timestamp = timestamp.astimezone(_UTC)
        txn = Transaction(
            transaction_id,
            account_id,
            w.transaction_type,
            amount,
            currency,
            timestamp,
            w.channel,
            country,
            merchant,
            category,
            city,
            latitude,
            longitude,
            scenario,
            incident,
            amount_base,
            SCHEMA_VERSION,
            topic,
            partition,
            offset,
        )
        # _check_event_time
        record_time = kafka_timestamp_ms / 1000.0
        epoch = txn.epoch
        if (
            epoch - record_time > limits.max_future_skew_s
            or record_time - epoch > limits.max_age_days * 86400.0
        ):
            return None
    except Exception:  # msgspec.DecodeError, ValueError, anything: never decides what the full path would not
        return None
    txn.kafka_timestamp_ms = kafka_timestamp_ms
    if timestamp.microsecond and _is_isoformat_utc(sent_time):
        txn.timestamp_text = sent_time
    return txn


# The one shape of sent text that is exactly what `datetime.isoformat()` gives back for it (UTC,
# microseconds, a non-zero fraction: checked on the datetime), so the COPY data can reuse the
# text (`Transaction.timestamp_text`). Other forms that fromisoformat reads ("Z", other
# offsets, week dates, a comma, no fraction) are formatted again.
_is_isoformat_utc = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+00:00", re.ASCII
).fullmatch


_fromisoformat = datetime.fromisoformat


def _transaction(
    doc: dict[str, Any],
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    limits: ValidationLimits,
    record_time: float | None,
    rates: RateTable,
    partition_counts: Collection[int] | None,
) -> Transaction:
    get = doc.get

    version = get("schema_version")
    if type(version) is not int:
        raise _missing_or_wrong("schema_version", version, "an integer")
    if version != SCHEMA_VERSION:
        raise _Invalid(
            "unsupported_schema_version", f"schema_version={version}: this consumer reads {SCHEMA_VERSION}"
        )

    transaction_id = _identifier("transaction_id", get("transaction_id"))
    account_id = _identifier("account_id", get("account_id"))
    # The id is ASCII (checked just above), so its UTF-8 form is one cheap encode away.
    if key is None or key != account_id.encode():
        raise _Invalid(
            "key_mismatch",
            f"message key {_show(key)} is not the account_id {account_id!r}: the producer must key "
            "each message by its account_id",
        )
    if partition_counts is not None:
        _check_placement(key, partition, partition_counts)
    transaction_type = _member("transaction_type", get("transaction_type"), _TRANSACTION_TYPES)
    sent_amount = get("amount")
    amount = _amount(sent_amount)

    currency = get("currency")
    if type(currency) is not str:
        raise _missing_or_wrong("currency", currency, "a string")
    if currency not in CURRENCIES:
        raise _Invalid("unknown_currency", f"currency={_show(currency)}: not an accepted ISO 4217 code")
    amount_base = _money(amount, sent_amount, currency, limits.max_amount, rates)

    sent_time = get("timestamp")
    timestamp = _timestamp(sent_time)
    channel = _member("channel", get("channel"), _CHANNELS)

    country = get("country")
    if type(country) is not str:
        raise _missing_or_wrong("country", country, "a string")
    # isupper() alone would accept non-ASCII capitals such as "ÄÖ".
    if not (len(country) == 2 and country.isascii() and country.isalpha() and country.isupper()):
        raise _Invalid("invalid_country", f"country={_show(country)}: must be two upper-case letters A-Z")

    max_text = limits.max_text_length
    merchant = _optional_text("merchant", get("merchant"), max_text)
    merchant_category = _optional_text("merchant_category", get("merchant_category"), max_text)
    city = _optional_text("city", get("city"), max_text)
    scenario = _optional_text("simulated_scenario", get("simulated_scenario"), max_text)
    incident = _optional_text("simulated_incident", get("simulated_incident"), max_text)

    latitude = get("latitude")
    longitude = get("longitude")
    # Inline fast path for the common case (two floats in range); everything else, nulls
    # included, takes the general check.
    if not (
        type(latitude) is float
        and type(longitude) is float
        and -90.0 <= latitude <= 90.0
        and -180.0 <= longitude <= 180.0
    ):
        latitude, longitude = _coordinates(latitude, longitude)

    # Positional: keyword construction of this 17-field dataclass costs 3x as much (~0.6 µs
    # per message); _FIELD_ORDER below fails the import if models.py ever reorders the fields.
    txn = Transaction(
        transaction_id,
        account_id,
        transaction_type,
        amount,
        currency,
        timestamp,
        channel,
        country,
        merchant,
        merchant_category,
        city,
        latitude,
        longitude,
        scenario,
        incident,
        amount_base,
        version,
        topic,
        partition,
        offset,
    )
    if record_time is None:
        raise _Invalid(
            "no_record_timestamp",
            "the Kafka record has no timestamp (old message format): its event time cannot be bounded; "
            "produce with a client and topic on message format v2 (Kafka 0.11+)",
        )
    _check_event_time(txn.epoch, sent_time, limits, record_time)  # epoch: derived once
    return txn


_FIELD_ORDER = (
    "transaction_id",
    "account_id",
    "transaction_type",
    "amount",
    "currency",
    "timestamp",
    "channel",
    "country",
    "merchant",
    "merchant_category",
    "city",
    "latitude",
    "longitude",
    "simulated_scenario",
    "simulated_incident",
    "amount_base",
    "schema_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp_ms",  # set by validate() after construction, not passed positionally
)
if tuple(f.name for f in dataclasses.fields(Transaction) if f.init) != _FIELD_ORDER:
    raise ImportError("utils.models.Transaction fields changed: update consumer.validation._transaction")


def _check_placement(key: bytes, partition: int, counts: Collection[int]) -> None:
    h = key_hash(key, _key_hashes)
    for n in counts:
        if h % n == partition:
            return
    where = ", ".join(f"{h % n} of {n}" for n in sorted(counts)) or "none: no partition count recorded"
    raise _Invalid(
        "wrong_partition",
        f"key {_show(key)} is in partition {partition}, not where Kafka's default (murmur2) "
        f"partitioner puts it (partition {where}): produce with that partitioner and no explicit "
        "partition (librdkafka: partitioner=murmur2_random); replay it with python -m consumer.dlq replay",
    )


def _identifier(name: str, value: Any) -> str:
    if type(value) is not str:
        raise _missing_or_wrong(name, value, "a string")
    if not _is_id(value):
        raise _Invalid("invalid_id", f"{name}={_show(value)}: must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    return value


def _member(name: str, value: Any, allowed: frozenset[str]) -> str:
    if type(value) is not str:
        raise _missing_or_wrong(name, value, "a string")
    if value not in allowed:
        raise _Invalid("invalid_enum", f"{name}={_show(value)}: must be one of {', '.join(sorted(allowed))}")
    return value


def _amount(value: Any) -> float:
    kind = type(value)
    if kind is float:
        amount = value
    elif kind is int:
        # orjson turns integers beyond 64 bits into floats, so this conversion cannot overflow.
        amount = float(value)
    elif kind is str:
        if len(value) > _MAX_NUMERIC_STRING or not _is_numeric_string(value):
            raise _Invalid("wrong_type", f"amount={_show(value)}: a string amount must be a plain decimal")
        amount = float(value)
    else:
        raise _missing_or_wrong("amount", value, "a number")
    # `not amount > 0` also catches NaN, should one ever get past the parser.
    if not amount > 0:
        raise _Invalid("amount_not_positive", f"amount={_show(value)}: must be greater than 0")
    if not math.isfinite(amount):
        raise _Invalid("amount_too_large", f"amount={_show(value)}: not a finite number")
    return amount


def _money(amount: float, value: Any, currency: str, max_base: float, rates: RateTable) -> float:
    """Check the decimals against the currency's ISO 4217 minor unit and the size in the base
    currency; returns the amount in the base currency."""
    decimals = MINOR_UNITS[currency]
    if decimals == 2:
        # round(x, 2) is correctly rounded: a float parsed from "12.34" survives it unchanged,
        # whereas x * 100 == int(x * 100) alone would reject 1.1 (110.00000000000001). That
        # cheaper test settles ~90% of real amounts, so round() runs only for the rest.
        cents = amount * 100.0
        if cents != int(cents) and round(amount, 2) != amount:
            raise _Invalid(
                "amount_precision", f"amount={_show(value)}: more than 2 decimal places for {currency}"
            )
    elif round(amount, decimals) != amount:
        unit = "no minor unit: the amount must be whole" if decimals == 0 else f"{decimals} decimal places"
        raise _Invalid("amount_precision", f"amount={_show(value)}: {currency} has {unit}")
    base = rates.to_base(amount, currency)
    if base > max_base:
        raise _Invalid(
            "amount_too_large",
            f"amount={_show(value)} {currency} = {base:.2f} {rates.base}: exceeds the limit of "
            f"{max_base:.2f} {rates.base}",
        )
    return base


def _timestamp(value: Any) -> datetime:
    """An aware datetime in UTC; whether it is too far from the record's time is `_check_event_time`'s."""
    if type(value) is not str:
        raise _missing_or_wrong("timestamp", value, "an ISO-8601 string")
    if len(value) > _MAX_TIMESTAMP_CHARS:
        raise _Invalid("invalid_timestamp", f"timestamp={_show(value)}: too long for ISO-8601")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Invalid("invalid_timestamp", f"timestamp={_show(value)}: {exc}") from None
    # fromisoformat only ever attaches fixed offsets, so tzinfo alone tells naive from aware.
    if moment.tzinfo is None:
        raise _Invalid("invalid_timestamp", f"timestamp={_show(value)}: no UTC offset (naive local time)")
    if moment.tzinfo is not _UTC:
        try:
            moment = moment.astimezone(_UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+14:00 falls before year 1 in UTC
            raise _Invalid("invalid_timestamp", f"timestamp={_show(value)}: out of range in UTC") from None
    return moment


def _check_event_time(epoch: float, value: Any, limits: ValidationLimits, record_time: float) -> None:
    if epoch - record_time > limits.max_future_skew_s:
        raise _Invalid(
            "timestamp_in_future",
            f"timestamp={_show(value)}: {epoch - record_time:.0f}s ahead of the Kafka record's "
            f"timestamp (limit {limits.max_future_skew_s:g}s)",
        )
    if record_time - epoch > limits.max_age_days * 86400.0:
        raise _Invalid(
            "timestamp_too_old",
            f"timestamp={_show(value)}: {(record_time - epoch) / 86400.0:.1f} days before the Kafka "
            f"record's timestamp (limit {limits.max_age_days:g} days)",
        )


def _optional_text(name: str, value: Any, max_length: int) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise _Invalid("wrong_type", f"{name}={_show(value)}: must be a string or null")
    if len(value) > max_length:
        raise _Invalid("field_too_long", f"{name}={_show(value)}: {len(value)} characters > {max_length}")
    # isprintable() is a fast C scan that is True for nearly all real text; it is also False for
    # harmless characters (no-break space, zero-width joiner), so only then look for C0 controls.
    if not value.isprintable():
        if _find_c0(value):
            raise _Invalid("control_characters", f"{name}={_show(value)}: contains NUL or control characters")
        if (found := disguising_character(value)) is not None:
            raise _Invalid(
                "control_characters", f"{name}={_show(value)}: contains {found}, which can disguise text"
            )
    return value


# Characters that change how text around them looks without being seen: bidi embeddings,
# overrides and isolates (a merchant "\u202eenilno" reads "online"), invisible separators, and
# C1 controls. Joiners (U+200C/D: Persian, Indic, emoji) and the directional marks (U+200E/F:
# Hebrew, Arabic) are ordinary text and pass.
_find_disguising = re.compile("[\u0080-\u009f\u200b\u2060\ufeff\u180e\u202a-\u202e\u2066-\u2069]").search


def disguising_character(value: str) -> str | None:
    """'U+202E RIGHT-TO-LEFT OVERRIDE' for the first such character in `value`, else None."""
    match = _find_disguising(value)
    if match is None:
        return None
    char = match.group()
    return f"U+{ord(char):04X} {unicodedata.name(char, 'control character')}"


def _coordinates(latitude: Any, longitude: Any) -> tuple[float | None, float | None]:
    if latitude is None and longitude is None:
        return None, None
    for name, value in (("latitude", latitude), ("longitude", longitude)):
        if value is not None and type(value) is not float and type(value) is not int:
            raise _Invalid("wrong_type", f"{name}={_show(value)}: must be a number or null")
    if latitude is None or longitude is None:
        raise _Invalid(
            "invalid_coordinates",
            f"latitude={_show(latitude)}, longitude={_show(longitude)}: give both or neither",
        )
    if not -90.0 <= latitude <= 90.0:
        raise _Invalid("invalid_coordinates", f"latitude={_show(latitude)}: outside -90..90")
    if not -180.0 <= longitude <= 180.0:
        raise _Invalid("invalid_coordinates", f"longitude={_show(longitude)}: outside -180..180")
    return float(latitude), float(longitude)


def _missing_or_wrong(name: str, value: Any, expected: str) -> _Invalid:
    if value is None:
        return _Invalid("missing_field", f"{name}: required field is missing or null")
    return _Invalid("wrong_type", f"{name}={_show(value)}: must be {expected}, not {type(value).__name__}")


def _decode_error(raw: bytes, exc: orjson.JSONDecodeError) -> _Invalid:
    # orjson reports both problems with one exception class; decoding again tells them apart
    # without parsing its message text (only on this slow path).
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError as bad:
        return _Invalid("invalid_utf8", f"not valid UTF-8 at byte {bad.start}: {bad.reason}")
    return _Invalid("invalid_json", f"not valid JSON: {exc}")


def _readable_id(value: Any) -> str | None:
    """The transaction id for a rejection row, if the message had a string there.

    Invalid ids are kept (that is what an operator searches for) but cut to 64 characters,
    with control characters replaced so that the text column can store them.
    """
    if type(value) is not str or not value:
        return None
    if _is_id(value):
        return value
    cut = value[:64]
    return "".join("\ufffd" if ch < " " else ch for ch in cut) if _find_c0(cut) else cut


def _show(value: Any) -> str:
    """repr() of a value for a detail message, bounded in size and safe for a text column."""
    if type(value) is str and len(value) > _SHOWN_CHARS:
        return f"{value[:_SHOWN_CHARS]!r}… ({len(value)} chars)"
    return _repr.repr(value)


def _as_bytes(raw: bytes | bytearray | memoryview | None) -> bytes:
    if raw is None:
        return b""
    return raw if type(raw) is bytes else bytes(raw)
