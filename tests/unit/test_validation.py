"""consumer.validation: every bad input maps to its reason, good input passes verbatim, nothing raises."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from consumer.validation import REASONS, validate
from utils.config import RuleThresholds, ValidationLimits
from utils.models import CURRENCIES, Rejection, Transaction

LIMITS = ValidationLimits()
NOW_DT = datetime(2026, 11, 24, 21, 5, 0, tzinfo=UTC)
NOW = NOW_DT.timestamp()
NOW_MS = int(NOW * 1000)  # the Kafka record's timestamp: what time is judged against
TID = "7f0c2f5e-2b1a-4c55-9d0e-3f1b8f6a9c01"
DROP = object()  # marks a field to delete from the good message

GOOD: dict[str, Any] = {
    "schema_version": 1,
    "transaction_id": TID,
    "account_id": "ACC-000123",
    "transaction_type": "purchase",
    "amount": 123.45,
    "currency": "USD",
    "timestamp": "2026-11-24T21:04:03.123456+00:00",
    "channel": "pos",
    "country": "US",
    "merchant": "Blue Bottle Coffee",
    "merchant_category": "restaurants",
    "city": "San Francisco",
    "latitude": 37.7749,
    "longitude": -122.4194,
    "simulated_scenario": None,
}
REQUIRED = (
    "schema_version",
    "transaction_id",
    "account_id",
    "transaction_type",
    "amount",
    "currency",
    "timestamp",
    "channel",
    "country",
)


def message(**changes: Any) -> bytes:
    doc = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not DROP})


def run(raw: bytes | None, limits: ValidationLimits = LIMITS) -> Transaction | Rejection:
    return validate(
        raw,
        topic="transactions",
        partition=3,
        offset=42,
        key=b"ACC-000123",
        limits=limits,
        kafka_timestamp_ms=NOW_MS,
    )


def rejected(raw: bytes | None, limits: ValidationLimits = LIMITS) -> Rejection:
    result = run(raw, limits)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert result.reason in REASONS
    return result


def accepted(raw: bytes, limits: ValidationLimits = LIMITS) -> Transaction:
    result = run(raw, limits)
    assert isinstance(result, Transaction), f"expected a transaction, got {result!r}"
    return result


def _replace_amount(literal: bytes) -> bytes:
    raw = message()
    assert b'"amount":123.45' in raw
    return raw.replace(b'"amount":123.45', b'"amount":' + literal)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


BAD: list[tuple[str, bytes | None, str]] = [
    # -- the envelope
    ("none", None, "empty_message"),
    ("empty", b"", "empty_message"),
    ("too large", b'{"pad": "' + b"x" * 20_000 + b'"}', "message_too_large"),
    ("1 MB string", message(merchant="x" * 1_000_000), "message_too_large"),
    ("truncated json", message()[:-7], "invalid_json"),
    ("not json", b"hello", "invalid_json"),
    ("whitespace only", b"   ", "invalid_json"),
    ("NaN literal", _replace_amount(b"NaN"), "invalid_json"),
    ("Infinity literal", _replace_amount(b"Infinity"), "invalid_json"),
    ("-Infinity literal", _replace_amount(b"-Infinity"), "invalid_json"),
    ("number overflowing to inf", _replace_amount(b"1e400"), "invalid_json"),
    ("invalid utf-8 byte", message().replace(b"Blue", b"Bl\xffe"), "invalid_utf8"),
    ("overlong utf-8", message().replace(b"Blue", b"Bl\xc0\xafe"), "invalid_utf8"),
    ("lone surrogate escape", message().replace(b"Blue", b"\\ud800"), "invalid_json"),
    ("byte order mark", b"\xef\xbb\xbf" + message(), "invalid_json"),
    ("top-level array", b"[1, 2]", "not_an_object"),
    ("top-level string", b'"purchase"', "not_an_object"),
    ("top-level null", b"null", "not_an_object"),
    # -- schema_version
    ("schema 2", message(schema_version=2), "unsupported_schema_version"),
    ("schema 0", message(schema_version=0), "unsupported_schema_version"),
    ("schema as string", message(schema_version="1"), "wrong_type"),
    ("schema as float", message(schema_version=1.0), "wrong_type"),
    ("schema as bool", message(schema_version=True), "wrong_type"),
    # -- ids
    ("empty id", message(transaction_id=""), "invalid_id"),
    ("65-char id", message(transaction_id="a" * 65), "invalid_id"),
    ("id with space", message(transaction_id="abc def"), "invalid_id"),
    ("id with newline", message(transaction_id="abc\n"), "invalid_id"),
    ("id with NUL", message(transaction_id="abc\x00"), "invalid_id"),
    ("id non-ascii", message(transaction_id="tränsaction"), "invalid_id"),
    ("id sql", message(transaction_id="1; DROP TABLE transactions"), "invalid_id"),
    ("id as number", message(transaction_id=123), "wrong_type"),
    ("account id with slash", message(account_id="ACC/1"), "invalid_id"),
    ("account id as object", message(account_id={"id": "ACC-1"}), "wrong_type"),
    # -- enums
    ("type upper case", message(transaction_type="PURCHASE"), "invalid_enum"),
    ("type unknown", message(transaction_type="chargeback"), "invalid_enum"),
    ("type as list", message(transaction_type=["purchase"]), "wrong_type"),
    ("channel unknown", message(channel="web"), "invalid_enum"),
    # -- amount
    ("amount 1e30", message(amount=1e30), "amount_too_large"),
    ("amount just above limit", message(amount=1_000_000.01), "amount_too_large"),
    ("amount 2**64", message(amount=2**64 - 1), "amount_too_large"),
    ("amount 0", message(amount=0), "amount_not_positive"),
    ("amount 0.0", message(amount=0.0), "amount_not_positive"),
    ("amount -0.0", message(amount=-0.0), "amount_not_positive"),
    ("amount negative", message(amount=-5), "amount_not_positive"),
    ("amount negative float", message(amount=-0.01), "amount_not_positive"),
    ("amount 3 decimals", message(amount=12.345), "amount_precision"),
    ("amount tiny", message(amount=0.001), "amount_precision"),
    ("amount true", message(amount=True), "wrong_type"),
    ("amount false", message(amount=False), "wrong_type"),
    ("amount object", message(amount={"value": 12}), "wrong_type"),
    ("amount array", message(amount=[12]), "wrong_type"),
    ("amount word", message(amount="twelve"), "wrong_type"),
    ("amount string exponent", message(amount="1e3"), "wrong_type"),
    ("amount string padded", message(amount=" 12.50"), "wrong_type"),
    ("amount string NaN", message(amount="NaN"), "wrong_type"),
    ("amount string inf", message(amount="inf"), "wrong_type"),
    ("amount string arabic digits", message(amount="١٢"), "wrong_type"),
    ("amount string underscore", message(amount="1_000"), "wrong_type"),
    ("amount string huge", message(amount="9" * 400), "wrong_type"),
    ("amount string negative", message(amount="-5.00"), "amount_not_positive"),
    ("amount string 3 decimals", message(amount="12.345"), "amount_precision"),
    ("amount string too large", message(amount="1000000.01"), "amount_too_large"),
    # -- currency and country
    ("currency unknown", message(currency="XXX"), "unknown_currency"),
    ("currency lower case", message(currency="usd"), "unknown_currency"),
    ("currency numeric", message(currency=840), "wrong_type"),
    ("country lower case", message(country="us"), "invalid_country"),
    ("country three letters", message(country="USA"), "invalid_country"),
    ("country non-ascii capitals", message(country="ÄÖ"), "invalid_country"),
    ("country digit", message(country="U1"), "invalid_country"),
    ("country null", message(country=None), "missing_field"),
    # -- timestamp
    ("naive timestamp", message(timestamp="2026-11-24T21:04:03"), "invalid_timestamp"),
    ("date only", message(timestamp="2026-11-24"), "invalid_timestamp"),
    ("not a date", message(timestamp="yesterday"), "invalid_timestamp"),
    ("offset out of range", message(timestamp="2026-11-24T21:04:03+25:00"), "invalid_timestamp"),
    ("before year 1 in UTC", message(timestamp="0001-01-01T00:00:00+14:00"), "invalid_timestamp"),
    (
        "very long timestamp",
        message(timestamp="2026-11-24T21:04:03" + "0" * 60 + "+00:00"),
        "invalid_timestamp",
    ),
    ("epoch number", message(timestamp=1_795_900_000), "wrong_type"),
    ("timestamp object", message(timestamp={"iso": "2026-11-24T21:04:03Z"}), "wrong_type"),
    ("far future", message(timestamp="2099-01-01T00:00:00Z"), "timestamp_in_future"),
    ("just beyond skew", message(timestamp=_iso(NOW_DT + timedelta(seconds=301))), "timestamp_in_future"),
    ("far past", message(timestamp="1970-01-01T00:00:00+00:00"), "timestamp_too_old"),
    (
        "just beyond max age",
        message(timestamp=_iso(NOW_DT - timedelta(days=3650, seconds=1))),
        "timestamp_too_old",
    ),
    # -- optional text
    ("NUL in merchant", message(merchant="Blue\x00Bottle"), "control_characters"),
    ("newline in city", message(city="San\nFrancisco"), "control_characters"),
    ("unit separator in category", message(merchant_category="food\x1f"), "control_characters"),
    ("merchant too long", message(merchant="x" * 257), "field_too_long"),
    ("merchant number", message(merchant=123), "wrong_type"),
    ("merchant bool", message(merchant=False), "wrong_type"),
    ("merchant nested object", message(merchant={"name": "Blue Bottle"}), "wrong_type"),
    ("scenario list", message(simulated_scenario=["card_testing"]), "wrong_type"),
    # -- coordinates
    ("latitude 91", message(latitude=91.0), "invalid_coordinates"),
    ("longitude -181", message(longitude=-181), "invalid_coordinates"),
    ("latitude only", message(longitude=None), "invalid_coordinates"),
    ("longitude only", message(latitude=DROP), "invalid_coordinates"),
    ("latitude string", message(latitude="37.77"), "wrong_type"),
    ("latitude bool", message(latitude=True), "wrong_type"),
    ("longitude array", message(longitude=[1.0, 2.0]), "wrong_type"),
]
BAD += [(f"missing {f}", message(**{f: DROP}), "missing_field") for f in REQUIRED]
BAD += [(f"null {f}", message(**{f: None}), "missing_field") for f in REQUIRED]


@pytest.mark.parametrize(("raw", "reason"), [pytest.param(r, why, id=name) for name, r, why in BAD])
def test_bad_input_is_rejected_with_its_reason(raw: bytes | None, reason: str) -> None:
    rejection = rejected(raw)
    assert rejection.reason == reason, rejection.detail
    assert rejection.detail
    assert len(rejection.detail) < 400
    assert "\x00" not in rejection.detail


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_field_detail_names_the_field(field: str) -> None:
    assert field in rejected(message(**{field: DROP})).detail


def test_rejection_keeps_coordinates_raw_bytes_key_and_transaction_id() -> None:
    raw = message(amount=-1)
    rejection = rejected(raw)
    assert (rejection.topic, rejection.partition, rejection.offset) == ("transactions", 3, 42)
    assert rejection.raw == raw
    assert rejection.key == b"ACC-000123"
    assert rejection.transaction_id == TID
    assert "amount" in rejection.detail and "-1" in rejection.detail


def test_rejection_of_unparsable_message_has_no_transaction_id() -> None:
    rejection = rejected(b"{not json")
    assert rejection.transaction_id is None
    assert rejection.raw == b"{not json"


def test_invalid_transaction_id_is_kept_but_made_storable() -> None:
    rejection = rejected(message(transaction_id="bad\x00id" + "z" * 100))
    assert rejection.reason == "invalid_id"
    assert rejection.transaction_id is not None
    assert "\x00" not in rejection.transaction_id
    assert len(rejection.transaction_id) == 64
    assert rejection.transaction_id.startswith("bad\ufffdid")


def test_detail_truncates_long_values() -> None:
    big = ValidationLimits(max_message_bytes=2_000_000)
    rejection = rejected(message(merchant="y" * 1_000_000), big)
    assert rejection.reason == "field_too_long"
    assert "merchant" in rejection.detail
    assert "1000000 chars" in rejection.detail
    assert len(rejection.detail) < 300


def test_deeply_nested_value_is_wrong_type_not_internal_error() -> None:
    deep = b"[" * 1000 + b"]" * 1000
    raw = _replace_amount(deep)
    rejection = rejected(raw, ValidationLimits(max_message_bytes=10_000))
    assert rejection.reason == "wrong_type"
    assert len(rejection.detail) < 300


def _at_record_time(raw: bytes, record_ms: int | None, key: bytes | None = b"ACC-000123") -> str:
    result = validate(
        raw, topic="t", partition=0, offset=7, key=key, limits=LIMITS, kafka_timestamp_ms=record_ms
    )
    return result.reason if isinstance(result, Rejection) else "stored"


def test_time_is_judged_against_the_kafka_record_not_the_clock() -> None:
    """Six minutes ahead of the record's timestamp is rejected whenever it is read: a replay a
    day later judges it the same (the consumer's clock is not an input at all)."""
    event = NOW_DT + timedelta(minutes=6)
    raw = message(timestamp=_iso(event))
    assert _at_record_time(raw, NOW_MS) == "timestamp_in_future"
    later_record = int((NOW_DT + timedelta(minutes=1)).timestamp() * 1000)
    assert _at_record_time(raw, later_record) == "stored"
    old = message(timestamp=_iso(NOW_DT - timedelta(days=3651)))
    assert _at_record_time(old, NOW_MS) == "timestamp_too_old"
    for no_timestamp in (None, -1):  # nothing the client cannot forge to judge by: refused
        assert _at_record_time(old, no_timestamp) == "no_record_timestamp"
        assert _at_record_time(raw, no_timestamp) == "no_record_timestamp"
        assert _at_record_time(message(), no_timestamp) == "no_record_timestamp"


@pytest.mark.parametrize(
    "key", [b"ACC-000124", b"acc-000123", b"", None, b"ACC-000123 ", "ACC-000123".encode("utf-16")]
)
def test_key_must_be_the_account_id(key: bytes | None) -> None:
    rejection = validate(
        message(), topic="t", partition=0, offset=0, key=key, limits=LIMITS, kafka_timestamp_ms=NOW_MS
    )
    assert isinstance(rejection, Rejection) and rejection.reason == "key_mismatch"
    assert "account_id 'ACC-000123'" in rejection.detail and rejection.key == key


def _placed(account: str, partition: int, counts: Any) -> Transaction | Rejection:
    return validate(
        message(account_id=account),
        topic="t",
        partition=partition,
        offset=0,
        key=account.encode(),
        limits=LIMITS,
        kafka_timestamp_ms=NOW_MS,
        partition_counts=counts,
    )


def _java_partition(account: str, count: int) -> int:
    return (murmur2(account.encode()) & 0x7FFFFFFF) % count


def test_a_message_must_be_in_its_keys_partition() -> None:
    accounts = [f"ACC-{i:06d}" for i in range(50)]
    for account in accounts:
        right = _java_partition(account, 3)
        assert isinstance(_placed(account, right, {3}), Transaction)
        for wrong in {0, 1, 2} - {right}:
            rejection = _placed(account, wrong, {3})
            assert isinstance(rejection, Rejection) and rejection.reason == "wrong_partition"
            assert f"partition {right} of 3" in rejection.detail and "murmur2" in rejection.detail
            assert rejection.key == account.encode() and rejection.partition == wrong
    # Unchecked where the caller does not know the topic's layout; refused where nothing is known.
    assert isinstance(_placed(accounts[0], 7, None), Transaction)
    assert _reason(_placed(accounts[0], 0, frozenset())) == "wrong_partition"


def test_a_key_moved_by_add_partitions_is_accepted_under_both_counts() -> None:
    moved = [
        a for a in (f"ACC-{i:06d}" for i in range(200)) if _java_partition(a, 3) != _java_partition(a, 6)
    ]
    assert len(moved) > 50  # about half the keys move from 3 to 6 partitions
    for account in moved[:20]:
        old, new = _java_partition(account, 3), _java_partition(account, 6)
        assert isinstance(_placed(account, old, {3, 6}), Transaction)
        assert isinstance(_placed(account, new, {3, 6}), Transaction)
        # Before the new count is recorded the new placement is refused, after it the old one
        # only where no recorded count puts it there.
        assert _reason(_placed(account, new, {3})) == "wrong_partition"
        assert _reason(_placed(account, old, {6})) == "wrong_partition"
        elsewhere = next(p for p in range(6) if p not in (old, new))
        assert _reason(_placed(account, elsewhere, {3, 6})) == "wrong_partition"


def _reason(result: Transaction | Rejection) -> str | None:
    return result.reason if isinstance(result, Rejection) else None


def test_unexpected_exception_becomes_internal_error() -> None:
    no_limits: Any = None
    result = validate(
        b"{}", topic="t", partition=0, offset=0, key=None, limits=no_limits, kafka_timestamp_ms=NOW_MS
    )
    assert isinstance(result, Rejection)
    assert result.reason == "internal_error"
    assert "AttributeError" in result.detail


# -- good input


def test_good_message_becomes_transaction() -> None:
    txn = accepted(message())
    assert txn == Transaction(
        transaction_id=TID,
        account_id="ACC-000123",
        transaction_type="purchase",
        amount=123.45,
        currency="USD",
        timestamp=datetime(2026, 11, 24, 21, 4, 3, 123456, tzinfo=UTC),
        channel="pos",
        country="US",
        merchant="Blue Bottle Coffee",
        merchant_category="restaurants",
        city="San Francisco",
        latitude=37.7749,
        longitude=-122.4194,
        simulated_scenario=None,
        schema_version=1,
        kafka_topic="transactions",
        kafka_partition=3,
        kafka_offset=42,
        kafka_timestamp_ms=NOW_MS,
    )


def test_the_kafka_record_timestamp_rides_along() -> None:
    """The record's timestamp is stored (the delay metric reads it); a record without one (-1 or
    None: the old message format) is rejected, with its bytes, for the dead-letter topic: the
    event time could not be bounded, and a far-future event time would outlive every check."""
    raw = message()
    common = {"topic": "transactions", "partition": 3, "offset": 42, "key": b"ACC-000123", "limits": LIMITS}
    with_ts = validate(raw, **common, kafka_timestamp_ms=NOW_MS + 123)  # type: ignore[arg-type]
    assert isinstance(with_ts, Transaction) and with_ts.kafka_timestamp_ms == NOW_MS + 123
    for missing in (None, -1):
        refused = validate(raw, **common, kafka_timestamp_ms=missing)  # type: ignore[arg-type]
        assert isinstance(refused, Rejection) and refused.reason == "no_record_timestamp"
        assert (refused.raw, refused.offset, refused.transaction_id) == (raw, 42, TID)
    assert dataclasses.replace(with_ts, kafka_timestamp_ms=NOW_MS) == accepted(raw)


@pytest.mark.parametrize(
    "text",
    [
        "Robert'); DROP TABLE transactions;--",
        "' OR '1'='1",
        '"; DELETE FROM alerts WHERE "1"="1',
        "\\x00 is not a NUL, just a backslash",
        "Café ☕ — 東京 🚀",
        "no\u00a0break and zero\u200dwidth",
        "עברית\u200f and فارسی\u200c",
        "%s %(name)s {0} $1",
    ],
)
def test_hostile_text_is_accepted_verbatim(text: str) -> None:
    txn = accepted(message(merchant=text, city=text, merchant_category=text, simulated_scenario=text))
    assert (txn.merchant, txn.city, txn.merchant_category, txn.simulated_scenario) == (text,) * 4


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("12.50", 12.5),
        ("7", 7.0),
        (100, 100.0),
        (0.01, 0.01),
        (1.1, 1.1),
        (0.29, 0.29),
        (999_999.99, 999_999.99),
        (1_000_000, 1_000_000.0),
    ],
)
def test_amount_forms_and_boundaries_accepted(amount: Any, expected: float) -> None:
    txn = accepted(message(amount=amount))
    assert txn.amount == expected
    assert type(txn.amount) is float


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-24T21:04:03Z", datetime(2026, 11, 24, 21, 4, 3, tzinfo=UTC)),
        ("2026-11-25T02:34:03+05:30", datetime(2026, 11, 24, 21, 4, 3, tzinfo=UTC)),
        ("2026-11-24T16:04:03-05:00", datetime(2026, 11, 24, 21, 4, 3, tzinfo=UTC)),
        (_iso(NOW_DT + timedelta(seconds=300)), NOW_DT + timedelta(seconds=300)),
        (_iso(NOW_DT - timedelta(days=3650)), NOW_DT - timedelta(days=3650)),
    ],
)
def test_timestamps_with_offsets_become_utc(stamp: str, expected: datetime) -> None:
    txn = accepted(message(timestamp=stamp))
    assert txn.timestamp == expected
    assert txn.timestamp.utcoffset() == timedelta(0)


def test_unknown_fields_are_ignored() -> None:
    txn = accepted(message(extra={"nested": [1, 2]}, device_id="abc", schema_comment=None))
    assert txn.transaction_id == TID


def test_optional_fields_may_be_null_or_absent() -> None:
    absent = {f: DROP for f in ("merchant", "merchant_category", "city", "latitude", "longitude")}
    for txn in (
        accepted(message(merchant=None, merchant_category=None, city=None, latitude=None, longitude=None)),
        accepted(message(**absent, simulated_scenario=DROP)),
    ):
        assert (txn.merchant, txn.city, txn.latitude, txn.longitude, txn.simulated_scenario) == (None,) * 5


def test_limits_are_inclusive() -> None:
    txn = accepted(
        message(merchant="m" * 256, transaction_id="a.b_c:d-E9" + "x" * 54, latitude=-90, longitude=180)
    )
    assert len(txn.merchant or "") == 256
    assert (txn.latitude, txn.longitude) == (-90.0, 180.0)


def test_message_exactly_at_size_limit_is_parsed() -> None:
    raw = message()
    limits = ValidationLimits(max_message_bytes=len(raw))
    accepted(raw, limits)
    assert rejected(raw, ValidationLimits(max_message_bytes=len(raw) - 1)).reason == "message_too_large"


def test_every_reason_is_documented() -> None:
    exercised = {reason for _, _, reason in BAD} | {
        "internal_error",
        "key_mismatch",
        "no_record_timestamp",
        "wrong_partition",
    }
    assert exercised <= set(REASONS)
    assert set(REASONS) - exercised == set()


# -- properties

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from([*GOOD, "extra"])


def _check_result(result: Transaction | Rejection, raw: bytes) -> None:
    assert isinstance(result, Transaction | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert result.reason != "internal_error", result.detail
        assert result.raw == raw
        assert "\x00" not in result.detail
        assert result.transaction_id is None or "\x00" not in result.transaction_id
        return
    assert 0 < result.amount <= LIMITS.max_amount and math.isfinite(result.amount)
    assert result.timestamp.utcoffset() == timedelta(0)
    for text in (result.merchant, result.merchant_category, result.city, result.simulated_scenario):
        assert text is None or (type(text) is str and not any(ch < " " for ch in text))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check_result(run(raw), raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_fields, _json_values, max_size=6))
def test_arbitrary_field_values_never_raise(changes: dict[str, Any]) -> None:
    # Starting from a good message makes each mutated field reach its own check.
    raw = orjson.dumps({**GOOD, **changes})
    _check_result(run(raw), raw)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=20), _json_values, max_size=8))
def test_arbitrary_objects_never_raise(doc: dict[str, Any]) -> None:
    raw = orjson.dumps(doc)
    _check_result(run(raw), raw)


@settings(max_examples=300, deadline=None)
@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2))
def test_every_two_decimal_amount_is_accepted_exactly(amount: Decimal) -> None:
    # Both as a JSON number and as a string; the float must be the one nearest the decimal.
    for value in (float(amount), str(amount)):
        assert accepted(message(amount=value)).amount == float(amount)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=99_999_999), st.integers(min_value=1, max_value=9))
def test_a_third_decimal_is_always_rejected(cents: int, third: int) -> None:
    amount = Decimal(cents * 10 + third) / 1000
    assert rejected(message(amount=float(amount))).reason == "amount_precision"
    assert rejected(message(amount=str(amount))).reason == "amount_precision"


def test_transaction_field_order_guard_matches_models() -> None:
    # validation builds Transaction positionally for speed; this is the tripwire it relies on.
    import consumer.validation as module

    assert tuple(f.name for f in dataclasses.fields(Transaction) if f.init) == module._FIELD_ORDER


def test_epoch_follows_the_timestamp_it_was_built_from() -> None:
    txn = accepted(message(timestamp="2026-03-01T12:00:00+02:00"))
    assert txn.epoch == txn.timestamp.timestamp() == datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp()
    moved = dataclasses.replace(txn, timestamp=datetime(2026, 3, 2, tzinfo=UTC))
    assert moved.epoch == datetime(2026, 3, 2, tzinfo=UTC).timestamp()


# -- money: ISO 4217 minor units, the base currency, ground-truth incident ids


@pytest.mark.parametrize("currency", ["JPY", "KRW", "VND", "CLP"])
def test_zero_decimal_currencies_take_whole_amounts_only(currency: str) -> None:
    assert accepted(message(amount=1500, currency=currency)).amount == 1500.0
    assert accepted(message(amount="1500", currency=currency)).amount == 1500.0
    for bad in (1500.5, "1500.50", 0.01):
        rejection = rejected(message(amount=bad, currency=currency))
        assert rejection.reason == "amount_precision"
        assert f"{currency} has no minor unit: the amount must be whole" in rejection.detail


def test_two_decimal_currencies_name_the_currency_when_rejecting() -> None:
    rejection = rejected(message(amount=12.345, currency="EUR"))
    assert rejection.reason == "amount_precision" and "more than 2 decimal places for EUR" in rejection.detail


def test_amount_base_is_the_amount_in_the_base_currency() -> None:
    assert accepted(message(amount=123.45)).amount_base == 123.45  # USD is the default base
    assert accepted(message(amount=1_500_000, currency="JPY")).amount_base == 10_050.0  # 0.0067 USD per yen
    assert accepted(message(amount=100, currency="EUR")).amount_base == 108.0
    own = RuleThresholds(base_currency="EUR", fx_rates="JPY=0.0062").rate_table()
    txn = validate(message(amount=1000, currency="JPY"), topic="t", partition=0, offset=0, key=b"ACC-000123",
                   limits=LIMITS, kafka_timestamp_ms=NOW_MS, rates=own)  # fmt: skip
    assert isinstance(txn, Transaction) and txn.amount_base == 6.2
    txn = validate(message(amount=108, currency="USD"), topic="t", partition=0, offset=0, key=b"ACC-000123",
                   limits=LIMITS, kafka_timestamp_ms=NOW_MS, rates=own)  # fmt: skip
    assert isinstance(txn, Transaction) and txn.amount_base == 100.0  # USD through the built-in table


def test_the_absurd_amount_limit_is_in_the_base_currency() -> None:
    # 20 million dong is about 780 dollars: fine, however large the number.
    assert accepted(message(amount=20_000_000, currency="VND")).amount_base == 780.0
    # 200 million yen is 1.34 million dollars: absurd, however the number looks next to the limit.
    rejection = rejected(message(amount=200_000_000, currency="JPY"))
    assert rejection.reason == "amount_too_large"
    assert "= 1340000.00 USD: exceeds the limit of 1000000.00 USD" in rejection.detail


def test_incident_id_is_optional_text_kept_verbatim() -> None:
    txn = accepted(message(simulated_scenario="card_testing", simulated_incident="inc-42"))
    assert (txn.simulated_scenario, txn.simulated_incident) == ("card_testing", "inc-42")
    assert accepted(message()).simulated_incident is None
    assert rejected(message(simulated_incident=7)).reason == "wrong_type"
    assert rejected(message(simulated_incident="x" * 300)).reason == "field_too_long"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("\u202eenilno", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("Shop\u2066evil\u2069", "U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("Pay\u200bPal", "U+200B ZERO WIDTH SPACE"),
        ("\ufeffBank", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("nel\u0085c1", "U+0085"),
        ("csi\u009b31m", "U+009B"),
    ],
)
def test_characters_that_disguise_text_are_refused_by_name(text: str, named: str) -> None:
    """A merchant name shown on a report page must read as what it is."""
    rejection = rejected(message(merchant=text))
    assert rejection.reason == "control_characters"
    assert named in rejection.detail and "disguise" in rejection.detail


# -- two paths, one verdict: the msgspec fast path accepts only what the full path accepts, as it would


def _both(
    raw: bytes | None, key: bytes | None = b"ACC-000123", record_ms: int | None = NOW_MS, counts: Any = None
) -> tuple[Transaction | Rejection, Transaction | Rejection]:
    from consumer import validation as module
    from utils.money import DEFAULT_RATES

    common: Any = {"topic": "transactions", "partition": 3, "offset": 42, "key": key, "limits": LIMITS}
    fast = validate(raw, **common, kafka_timestamp_ms=record_ms, partition_counts=counts)
    full = module.validate_full(
        raw, "transactions", 3, 42, key, LIMITS, record_ms, DEFAULT_RATES, counts
    )  # fmt: skip
    return fast, full


def _key_partition(account: str, count: int) -> int:
    return (murmur2(account.encode()) & 0x7FFFFFFF) % count


GOOD_VARIANTS: list[tuple[str, bytes]] = [
    ("ordinary", message()),
    ("amount as a string", message(amount="123.45")),
    ("amount as an integer", message(amount=120)),
    ("zero-decimal currency", message(amount=1500, currency="JPY")),
    ("integer coordinates", message(latitude=37, longitude=-122)),
    ("no coordinates", message(latitude=None, longitude=DROP)),
    ("every optional text null", message(merchant=None, merchant_category=None, city=None)),
    ("scenario and incident", message(simulated_scenario="card_testing", simulated_incident="inc-1")),
    ("offset timestamp", message(timestamp="2026-11-24T23:04:03+02:00")),
    ("text at the length limit", message(merchant="m" * LIMITS.max_text_length)),
    ("emoji text", message(merchant="Caf\u00e9 \U0001f600")),
]


@pytest.mark.parametrize("raw", [pytest.param(r, id=name) for name, r in GOOD_VARIANTS])
def test_the_fast_path_accepts_what_the_full_path_accepts(raw: bytes) -> None:
    from consumer import validation as module
    from utils.money import DEFAULT_RATES

    fast, full = _both(raw)
    assert isinstance(full, Transaction)
    assert fast == full and fast.kafka_timestamp_ms == full.kafka_timestamp_ms
    taken = module.accept(raw, "transactions", 3, 42, b"ACC-000123", LIMITS, NOW_MS, DEFAULT_RATES, None)
    assert taken == full  # and it was the fast path that accepted it


_NESTED = b'{"deep": ' + b"[" * 2000 + b"]" * 2000 + b", " + message()[1:]
TRICKY: list[tuple[str, bytes]] = [
    ("duplicate key, the last good", message()[:-1] + b',"amount":"bad","amount":12.5}'),
    ("duplicate key, the last bad", message()[:-1] + b',"amount":-1}'),
    ("lone surrogate escape", message(merchant="X").replace(b'"X"', b'"\\ud800"')),
    ("surrogate pair escape", message(merchant="X").replace(b'"X"', b'"\\ud83d\\ude00"')),
    ("NUL escape", message(merchant="X").replace(b'"X"', b'"a\\u0000b"')),
    ("invalid UTF-8 in text", message(merchant="X").replace(b'"X"', b'"\xff"')),
    ("no-break space", message(merchant="a\u00a0b")),
    ("right-to-left override", message(merchant="\u202eenilno")),
    ("tab in text", message(city="a\tb")),
    ("text one over the limit", message(merchant="m" * (LIMITS.max_text_length + 1))),
    ("unknown field", message(extra=1)),
    ("unknown field nested 2000 deep", _NESTED),
    ("byte order mark", b"\xef\xbb\xbf" + message()),
    ("whitespace around", b" \n" + message() + b" \n"),
    ("schema_version 2**64", message()[:-1] + b',"schema_version":18446744073709551616}'),
    ("schema_version 1.0", message(schema_version=1.0)),
    ("schema_version true", message(schema_version=True)),
    ("amount 2**64", message()[:-1] + b',"amount":18446744073709551616}'),
    ("amount 1e400", message()[:-1] + b',"amount":1e400}'),
    ("amount with exponent string", message(amount="1e2")),
    ("amount zero-padded string", message(amount="0012.50")),
    ("amount -0.0", message(amount=-0.0)),
    ("amount bool", message(amount=True)),
    ("latitude only, as an integer", message(latitude=10, longitude=None)),
    ("integer latitude out of range", message(latitude=91)),
    ("naive timestamp", message(timestamp="2026-11-24T21:04:03")),
    ("timestamp far ahead", message(timestamp="2027-11-24T21:04:03+00:00")),
    ("timestamp long ago", message(timestamp="2020-11-24T21:04:03+00:00")),
    ("lower-case country", message(country="us")),
    ("non-ASCII capitals", message(country="\u00c4\u00d6")),
    ("invalid id", message(transaction_id="a b")),
    ("65-character id", message(transaction_id="a" * 65)),
    ("unknown currency", message(currency="XXX")),
    ("enum in the wrong case", message(channel="POS")),
    ("a third decimal", message(amount=1.005)),
    ("above the amount limit", message(amount=LIMITS.max_amount * 10)),
    ("top-level array", b"[" + message() + b"]"),
]


@pytest.mark.parametrize(
    "raw", [pytest.param(r, id=name) for name, r, _ in BAD] + [pytest.param(r, id=name) for name, r in TRICKY]
)
def test_both_paths_give_the_same_verdict(raw: bytes | None) -> None:
    fast, full = _both(raw)
    assert fast == full
    for key in (None, b"ACC-000124"):
        assert _both(raw, key=key)[0] == _both(raw, key=key)[1]
    for record_ms in (None, -1, NOW_MS + 400 * 86_400_000):
        assert _both(raw, record_ms=record_ms)[0] == _both(raw, record_ms=record_ms)[1]


def test_both_paths_agree_on_placement() -> None:
    home = _key_partition("ACC-000123", 6)
    for counts in ({6}, {5, 6}, {home + 1 if home < 5 else 1}, set()):
        fast, full = _both(message(), counts=frozenset(counts))
        assert fast == full


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_fields, _json_values, max_size=6))
def test_both_paths_agree_on_arbitrary_field_values(changes: dict[str, Any]) -> None:
    fast, full = _both(orjson.dumps({**GOOD, **changes}))
    assert fast == full


_near_valid = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.decimals(min_value=Decimal("0.01"), max_value=Decimal("20000"), places=2).map(float)
        | st.integers(min_value=1, max_value=50_000)
        | st.decimals(min_value=Decimal("0.01"), max_value=Decimal("20000"), places=3).map(str),
        "currency": st.sampled_from(sorted(CURRENCIES)),
        "latitude": st.none() | st.integers(-95, 95) | st.floats(-95.0, 95.0),
        "longitude": st.none() | st.integers(-185, 185) | st.floats(-185.0, 185.0),
        "merchant": st.none() | st.text(max_size=30),
        "city": st.none() | st.text(max_size=30),
        "simulated_incident": st.none() | st.text(max_size=10),
        "timestamp": st.datetimes(
            min_value=datetime(2026, 11, 1), max_value=datetime(2026, 12, 1), timezones=st.just(UTC)
        ).map(_iso),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_near_valid)
def test_both_paths_agree_near_valid_messages(changes: dict[str, Any]) -> None:
    fast, full = _both(orjson.dumps({**GOOD, **changes}))
    assert fast == full


# -- the fast path's time checks, written out inline, at the bounds; the sent text it keeps


def _timestamp_texts(moment: datetime) -> list[str]:
    """Forms of one instant that fromisoformat reads (and some it reads as another instant)."""
    utc = moment.astimezone(UTC)
    plus2 = moment.astimezone(UTC).astimezone(timezone_plus2)
    return [
        utc.isoformat(),
        utc.isoformat().replace("+00:00", "Z"),
        utc.isoformat(timespec="seconds"),
        utc.isoformat(timespec="milliseconds"),
        utc.replace(microsecond=0).isoformat(timespec="microseconds"),  # ".000000"
        utc.isoformat(sep=" "),
        plus2.isoformat(),
        utc.strftime("%G-W%V-%uT%H:%M:%S.%f+00:00"),  # a week date, as long as the usual form
        utc.isoformat().replace(".", ","),
        utc.replace(tzinfo=None).isoformat(),  # naive: rejected
    ]


timezone_plus2 = datetime.fromisoformat("2026-01-01T00:00:00+02:00").tzinfo


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(2026, 6, 1), max_value=datetime(2027, 6, 1), timezones=st.just(UTC)),
    st.sampled_from([0, 1, -1, 999, -1000, 1001]),
    st.sampled_from(["future", "past", "near"]),
)
def test_both_paths_judge_time_alike_at_the_bounds(moment: datetime, nudge_ms: int, where: str) -> None:
    """The record's time a millisecond or so either side of the future-skew and age limits, for
    every form of the timestamp: the fast path accepts exactly what the full path accepts, and
    keeps the sent text only when it is the text the COPY data would format."""
    from consumer import validation as module
    from utils.money import DEFAULT_RATES

    event_ms = math.floor(moment.timestamp() * 1000)
    if where == "future":  # the event the skew limit ahead of the record
        record_ms = event_ms - int(LIMITS.max_future_skew_s * 1000) + nudge_ms
    elif where == "past":  # the event the age limit behind the record
        record_ms = event_ms + int(LIMITS.max_age_days * 86_400_000) + nudge_ms
    else:
        record_ms = event_ms + nudge_ms
    for text in _timestamp_texts(moment):
        raw = message(timestamp=text)
        fast, full = _both(raw, record_ms=record_ms)
        assert fast == full, text
        taken = module.accept(
            raw, "transactions", 3, 42, b"ACC-000123", LIMITS, record_ms, DEFAULT_RATES, None
        )
        if taken is not None:
            assert taken == full and taken.kafka_timestamp_ms == record_ms
            kept = taken.timestamp_text
            assert kept is None or kept == taken.timestamp.isoformat() == text
            assert (kept is not None) == (
                text == taken.timestamp.isoformat() and taken.timestamp.microsecond != 0
            )


def test_the_fast_path_keeps_the_sent_text_only_in_isoformat_s_own_form() -> None:
    from consumer import validation as module
    from utils.money import DEFAULT_RATES

    def kept(text: str) -> str | None:
        raw = message(timestamp=text)
        taken = module.accept(raw, "transactions", 3, 42, b"ACC-000123", LIMITS, NOW_MS, DEFAULT_RATES, None)
        assert taken is not None
        return taken.timestamp_text

    assert kept("2026-11-24T21:04:03.123456+00:00") == "2026-11-24T21:04:03.123456+00:00"
    for other in (
        "2026-11-24T21:04:03.123456Z",
        "2026-11-24T23:04:03.123456+02:00",
        "2026-11-24T21:04:03.000000+00:00",  # isoformat() drops a zero fraction
        "2026-11-24T21:04:03+00:00",
        "2026-11-24 21:04:03.123456+00:00",
    ):
        assert kept(other) is None, other
