"""Hostile input through the real broker and consumer: nothing crashes, stalls or gets in unchecked.

A hand-written corpus (broken JSON, wrong types, NaN/Infinity tokens, absurd amounts, ~900 KB
strings, control characters, invalid UTF-8, SQL injection in every text field and in the key,
duplicate ids, far past/future timestamps, unknown fields, nested objects) and a few hundred
messages from a Hypothesis strategy go to a one-partition topic. One consumer (the real entry
point) drains it. Then, for every message at its offset:

* it is either a row in `rejected_transactions` (reason as `consumer.validation.validate`
  predicts, raw bytes and key identical) or a row in `transactions` whose fields are exactly what
  was sent (text compared character for character), never both, never neither;
* a second message with an id already stored is rejected as `duplicate_transaction_id`;
* the consumer exited cleanly and its committed offset is the end of the topic;
* the tables are all still there.

`HOSTILE_INPUTS` is the number of hostile messages tried (corpus + Hypothesis).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.storage import REJECTED_KEY_MAX_BYTES, REJECTED_PAYLOAD_MAX_BYTES
from consumer.validation import REASONS, validate
from tests.support import ConsumerProcess, query, scalar
from utils.config import PostgresSettings, Settings
from utils.kafka_cleanup import admin_client, group_lag
from utils.models import CURRENCIES, Rejection

# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------

TEXT_FIELDS = (
    "transaction_id",
    "account_id",
    "transaction_type",
    "currency",
    "timestamp",
    "channel",
    "country",
    "merchant",
    "merchant_category",
    "city",
    "simulated_scenario",
)
FREE_TEXT = ("merchant", "merchant_category", "city", "simulated_scenario")
INJECTIONS = (
    "'; DROP TABLE transactions; --",
    '" OR 1=1 --',
    "$$; DELETE FROM alerts; $$",
    "\\x00",  # a backslash, not a NUL
    "\\N",  # COPY's NULL marker, as text
    "\\\\.\\n",  # COPY's end-of-data marker and an escaped newline, as text
    "1; TRUNCATE rejected_transactions CASCADE",
    "Robert'); DROP TABLE alerts;--",
    "%s %(x)s {0} ${HOME}",
    "E'\\\\x41' || chr(0)",
)
# Fixed times, never the wall clock: every record is sent with RECORD_MS as its Kafka timestamp,
# and BASE_TS, an hour before it, is inside every limit. Midday in Europe, so that no high amount
# is also an unusual hour (an event time of "an hour ago" made alerts depend on when tests ran).
BASE_DT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BASE_TS = BASE_DT.isoformat()
RECORD_MS = int(BASE_DT.timestamp() * 1000) + 3_600_000
KB900 = 900 * 1024


def key_of(value: bytes | None) -> bytes:
    """The key a well-behaved producer would send: the message's account_id (b"hostile" when
    there is none to read)."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return b"hostile"
    account = doc.get("account_id") if type(doc) is dict else None
    return account.encode("utf-8", "surrogatepass") if type(account) is str else b"hostile"


@dataclass(frozen=True, slots=True)
class Hostile:
    name: str
    value: bytes | None
    key: bytes | None = None  # None: key_of(value); NO_KEY: sent without a key
    expect: str | None = None  # "stored", a rejection reason, or None (as validate() predicts)

    def __post_init__(self) -> None:
        key = self.key
        object.__setattr__(
            self, "key", None if key is NO_KEY else (key_of(self.value) if key is None else key)
        )


NO_KEY = b"\x00no key\x00"  # a marker, never sent


def base(tid: str, **changes: Any) -> dict[str, Any]:
    """A valid transaction; `changes` replace fields (a value of ... removes the field)."""
    doc: dict[str, Any] = {
        "schema_version": 1,
        "transaction_id": tid,
        "account_id": f"acct-{tid}"[:64],
        "transaction_type": "purchase",
        "amount": 12.34,
        "currency": "EUR",
        "timestamp": BASE_TS,
        "channel": "online",
        "country": "DE",
        "merchant": "Corner Shop",
        "merchant_category": "retail",
        "city": "Berlin",
        "latitude": 52.52,
        "longitude": 13.405,
        "simulated_scenario": None,
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not ...}


def _dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def _json_token(tid: str, field: str, token: bytes) -> bytes:
    """A message whose `field` holds a raw token (e.g. NaN) that orjson.dumps cannot write."""
    return _dumps(base(tid, **{field: "@@TOKEN@@"})).replace(b'"@@TOKEN@@"', token)


def build_corpus() -> list[Hostile]:
    c: list[Hostile] = []

    def add(name: str, value: bytes | None, expect: str | None = None, key: bytes | None = None) -> None:
        c.append(Hostile(name, value, key, expect))

    n = iter(range(10_000))

    def tid() -> str:
        return f"h-{next(n):04d}"

    add("valid baseline", _dumps(base(tid())), "stored")
    # Framing and syntax
    full = _dumps(base("h-trunc"))
    for cut in (1, 10, len(full) // 2, len(full) - 1):
        add(f"truncated JSON at {cut}", full[:cut], "invalid_json")
    add("empty message", b"", "empty_message")
    add("null value (tombstone)", None, "empty_message")
    add("whitespace only", b"   \n\t ", "invalid_json")
    add("BOM before JSON", b"\xef\xbb\xbf" + _dumps(base(tid())))
    add("trailing garbage", _dumps(base(tid())) + b" {}", "invalid_json")
    add("two objects", _dumps(base(tid())) + _dumps(base(tid())), "invalid_json")
    add("single quotes", _dumps(base(tid())).replace(b'"', b"'"), "invalid_json")
    add("trailing comma", _dumps(base(tid()))[:-1] + b",}", "invalid_json")
    add("comment", b"/* hi */" + _dumps(base(tid())), "invalid_json")
    for top in (b"null", b"true", b"123", b'"a string"', b"[]", b"[{}]"):
        add(f"top-level {top.decode()}", top, "not_an_object")
    add("empty object", b"{}", "missing_field")
    add("deeply nested array", b"[" * 5000 + b"]" * 5000)
    add("deeply nested object", b'{"a":' * 2000 + b"1" + b"}" * 2000)
    # NaN / Infinity as JSON tokens, and numbers beyond a double
    for field in ("amount", "latitude", "longitude"):
        for token in (b"NaN", b"Infinity", b"-Infinity"):
            add(f"{field} {token.decode()}", _json_token(tid(), field, token), "invalid_json")
    add("amount 1e309", _json_token(tid(), "amount", b"1e309"), "invalid_json")
    # Amounts
    for value, reason in (
        (-5, "amount_not_positive"),
        (-0.01, "amount_not_positive"),
        (0, "amount_not_positive"),
        (-0.0, "amount_not_positive"),
        (1e30, "amount_too_large"),
        (1_000_000.01, "amount_too_large"),
        (0.001, "amount_precision"),
        (12.345, "amount_precision"),
        (True, "wrong_type"),
        ("12,50", "wrong_type"),
        ("1e3", "wrong_type"),
        (" 12.50", "wrong_type"),
        ("١٢", "wrong_type"),  # Arabic-Indic digits
        ([12.5], "wrong_type"),
        ({"value": 12.5}, "wrong_type"),
        (None, "missing_field"),
        ("12.30", "stored"),
        (1_000_000, "stored"),
        (0.01, "stored"),
    ):
        # In US dollars: VALIDATION_MAX_AMOUNT is in the base currency.
        add(f"amount {value!r}", _dumps(base(tid(), amount=value, currency="USD")), reason)
    for value, currency, reason in (
        (1_500, "JPY", "stored"),
        (1_500.5, "JPY", "amount_precision"),  # no minor unit
        ("1500.50", "KRW", "amount_precision"),
        ("1500.00", "KRW", "stored"),  # whole, however written
        (20_000_000, "VND", "stored"),  # a big number, about 780 dollars
        (200_000_000, "JPY", "amount_too_large"),  # 1.34 million dollars
        (1_000_000, "EUR", "amount_too_large"),  # 1.08 million dollars
    ):
        add(f"amount {value!r} {currency}", _dumps(base(tid(), amount=value, currency=currency)), reason)
    add(
        "amount 99999999999999999999999",
        _json_token(tid(), "amount", b"99999999999999999999999"),
        "amount_too_large",
    )
    # Wrong types and missing fields, for every field
    for field in base("x"):
        add(f"missing {field}", _dumps(base(tid(), **{field: ...})))
        for bad in (12345, ["a"], {"nested": {"deeper": [1, {"x": None}]}}, False):
            add(f"{field} = {bad!r}", _dumps(base(tid(), **{field: bad})))
    add("schema_version 2", _dumps(base(tid(), schema_version=2)), "unsupported_schema_version")
    add("schema_version '1'", _dumps(base(tid(), schema_version="1")), "wrong_type")
    add("schema_version 1.0", _dumps(base(tid(), schema_version=1.0)), "wrong_type")
    # Enumerations, codes, ids, coordinates
    add("type PURCHASE", _dumps(base(tid(), transaction_type="PURCHASE")), "invalid_enum")
    add("channel atm ", _dumps(base(tid(), channel="atm ")), "invalid_enum")
    add("currency usd", _dumps(base(tid(), currency="usd")), "unknown_currency")
    add("currency XXX", _dumps(base(tid(), currency="XXX")), "unknown_currency")
    add("country us", _dumps(base(tid(), country="us")), "invalid_country")
    add("country ÄÖ", _dumps(base(tid(), country="ÄÖ")), "invalid_country")
    add("country USA", _dumps(base(tid(), country="USA")), "invalid_country")
    add("id of 65 chars", _dumps(base("x" * 65)), "invalid_id")
    add("empty id", _dumps({**base("x"), "transaction_id": ""}), "invalid_id")
    add("id with space", _dumps(base("a b")), "invalid_id")
    add("id with unicode digits", _dumps(base("tx-١٢٣")), "invalid_id")
    add("latitude 91", _dumps(base(tid(), latitude=91.0)), "invalid_coordinates")
    add("longitude -181", _dumps(base(tid(), longitude=-181)), "invalid_coordinates")
    add("latitude only", _dumps(base(tid(), longitude=None)), "invalid_coordinates")
    add("latitude as string", _dumps(base(tid(), latitude="52.5")), "wrong_type")
    add("integer coordinates", _dumps(base(tid(), latitude=52, longitude=13)), "stored")
    add("no coordinates", _dumps(base(tid(), latitude=None, longitude=None)), "stored")
    # Timestamps
    for ts, reason in (
        ("0001-01-01T00:00:00+00:00", "timestamp_too_old"),
        ("0001-01-01T00:00:00+14:00", "invalid_timestamp"),
        ("1970-01-01T00:00:00+00:00", "timestamp_too_old"),
        ("9999-12-31T23:59:59.999999+00:00", "timestamp_in_future"),
        ("2999-01-01T00:00:00-12:00", "timestamp_in_future"),
        ("2026-13-01T00:00:00+00:00", "invalid_timestamp"),
        (BASE_TS.replace("+00:00", ""), "invalid_timestamp"),
        ("yesterday", "invalid_timestamp"),
        ("-infinity", "invalid_timestamp"),
        ("epoch", "invalid_timestamp"),
        (BASE_TS + " " * 100, "invalid_timestamp"),
        (BASE_DT.astimezone(timezone(timedelta(hours=-7))).isoformat(), "stored"),
        (BASE_TS.replace("+00:00", "Z"), "stored"),
        (BASE_TS.replace("+00:00", "+05:45"), "stored"),
    ):
        add(f"timestamp {ts[:40]!r}", _dumps(base(tid(), timestamp=ts)), reason)
    add("timestamp as epoch number", _dumps(base(tid(), timestamp=BASE_DT.timestamp())), "wrong_type")
    # Text: control characters, invalid UTF-8, odd but valid Unicode, sizes
    for field in FREE_TEXT:
        add(f"{field} with NUL", _dumps(base(tid(), **{field: "a\x00b"})), "control_characters")
        add(f"{field} with newline", _dumps(base(tid(), **{field: "a\nb"})), "control_characters")
        add(f"{field} with ANSI escape", _dumps(base(tid(), **{field: "\x1b[31mred"})), "control_characters")
        add(f"{field} too long", _dumps(base(tid(), **{field: "y" * 257})), "field_too_long")
    for text in (
        "Zürich",
        "東京 🏦",
        "עברית\u200f",
        "zero\u200dwidth",
        "line\u2028sep",
        "del\x7f",
        " ",
        "",
    ):
        add(f"merchant {text!r}", _dumps(base(tid(), merchant=text)), "stored")
    # Characters that make a name read as something else on a page (consumer/validation.py).
    for text in ("\u202eenilno", "Pay\u200bPal", "nel\u0085c1", "a\u2066b\u2069"):
        add(f"merchant {text!r}", _dumps(base(tid(), merchant=text)), "control_characters")
    add("merchant of 256 chars", _dumps(base(tid(), merchant="m" * 256)), "stored")
    add(
        "raw NUL byte in a string",
        _dumps(base(tid())).replace(b"Corner Shop", b"Corner\x00Shop"),
        "invalid_json",
    )
    add(
        "raw newline in a string",
        _dumps(base(tid())).replace(b"Corner Shop", b"Corner\nShop"),
        "invalid_json",
    )
    add("lone surrogate escape", _dumps(base(tid())).replace(b"Corner Shop", b"\\ud800"), "invalid_json")
    for name, raw in (
        ("invalid UTF-8 0xff", b"\xff"),
        ("overlong encoding", b"\xc0\xaf"),
        ("UTF-8 encoded surrogate", b"\xed\xa0\x80"),
        ("lone continuation byte", b"\x80"),
        ("truncated multibyte", b"\xe2\x82"),
    ):
        add(name, _dumps(base(tid())).replace(b"Corner Shop", b"Corner " + raw), "invalid_utf8")
    add("latin-1 document", '{"merchant": "Café"}'.encode("latin-1"), "invalid_utf8")
    add("900 KB merchant", _dumps(base(tid(), merchant="M" * KB900)), "message_too_large")
    add("900 KB of garbage", b"\xff" * KB900, "message_too_large")
    add("16 KB + 1 message", _dumps(base(tid(), pad="p" * 16_384)), "message_too_large")
    # Unknown and duplicated keys, nested objects
    add(
        "unknown fields",
        _dumps(base(tid(), extra="x", __proto__={"admin": True}, nested={"a": [1, {"b": None}]})),
        "stored",
    )
    add("injection as a field name", _dumps(base(tid(), **{"'; DROP TABLE transactions; --": 1})), "stored")
    dup_keys = _dumps(base("h-dupkey-first"))[:-1] + b',"transaction_id":"h-dupkey-last"}'
    add("duplicate JSON key (last wins)", dup_keys, "stored")
    # SQL injection in every text field and in the key
    for field in TEXT_FIELDS:
        for i, attack in enumerate(INJECTIONS):
            t = tid()
            doc = base(t, **{field: attack}) if field != "transaction_id" else base(attack)
            add(f"injection {i} in {field}", _dumps(doc), "stored" if field in FREE_TEXT else None)
    for attack in INJECTIONS:
        # The key must be the account_id, so an injected key is rejected, and stored verbatim.
        add(f"injection key {attack!r}", _dumps(base(tid())), "key_mismatch", key=attack.encode())
        add(f"injection key on a rejected message {attack!r}", b"{", "invalid_json", key=attack.encode())
    add("invalid UTF-8 key", b"{", "invalid_json", key=b"\xff\xfe\x00")
    add("no key", _dumps(base(tid())), "key_mismatch", key=NO_KEY)
    add("key of another account", _dumps(base(tid())), "key_mismatch", key=b"acct-h-0000")
    # Duplicate ids: the first is kept, later messages with the id are rejected
    add("duplicate id: first", _dumps(base("h-dup-1", amount=10.0)), "stored")
    add("duplicate id: same content", _dumps(base("h-dup-1", amount=10.0)), "duplicate_transaction_id")
    add("duplicate id: other amount", _dumps(base("h-dup-1", amount=99.0)), "duplicate_transaction_id")
    add(
        "duplicate id: other account", _dumps(base("h-dup-1", account_id="other")), "duplicate_transaction_id"
    )
    add("duplicate id of the baseline", _dumps(base("h-0000", merchant="evil")), "duplicate_transaction_id")
    return c


CORPUS = build_corpus()
HYPOTHESIS_MESSAGES = 300
# How many hostile messages the two tests below send (docs/guarantees.md reports it).
HOSTILE_INPUTS = len(CORPUS) + HYPOTHESIS_MESSAGES


# --------------------------------------------------------------------------------------------
# The Hypothesis strategy: random JSON-ish messages
# --------------------------------------------------------------------------------------------

_json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
# Near-valid values per field, so that many messages get past the first check.
_near: dict[str, st.SearchStrategy[Any]] = {
    "schema_version": st.sampled_from([1, 0, 2, -1, "1", 1.0]),
    "transaction_id": st.from_regex(r"[A-Za-z0-9._:\- ']{0,70}", fullmatch=True),
    "account_id": st.from_regex(r"[A-Za-z0-9._:\-]{1,66}", fullmatch=True),
    "transaction_type": st.sampled_from(
        ["purchase", "withdrawal", "transfer", "deposit", "refund", "Purchase", ""]
    ),
    "amount": st.floats(min_value=-10.0, max_value=2e6)
    | st.decimals(min_value=-1, max_value=2e6, places=2).map(str)
    | st.integers(min_value=-5, max_value=2_000_000),
    "currency": st.sampled_from(sorted(CURRENCIES)) | st.text(min_size=0, max_size=4),
    "timestamp": st.datetimes(timezones=st.timezones() | st.just(UTC)).map(lambda d: d.isoformat())
    | st.text(max_size=40),
    "channel": st.sampled_from(["pos", "online", "atm", "POS", "web"]),
    "country": st.text(min_size=0, max_size=3),
    "merchant": st.none() | st.text(max_size=300),
    "merchant_category": st.none() | st.text(max_size=40),
    "city": st.none() | st.text(max_size=40),
    "latitude": st.none() | st.floats(min_value=-100, max_value=100) | st.integers(-100, 100),
    "longitude": st.none() | st.floats(min_value=-200, max_value=200) | st.integers(-200, 200),
    "simulated_scenario": st.none() | st.text(max_size=40),
}
_FIELDS = sorted(_near)


@st.composite
def hostile_message(draw: st.DrawFn) -> tuple[str, Any]:
    """A recipe; `render(recipe, i)` turns it into bytes with a unique id where the id is valid."""
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "mutate", "json", "text", "bytes", "corrupt"]))
    if kind == "mutate":
        edits = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(_FIELDS),
                    st.sampled_from(["near", "near", "any", "delete"]),
                    st.data(),
                ),
                min_size=1,
                max_size=3,
            )
        )
        changes: dict[str, Any] = {}
        for field, how, data in edits:
            if how == "delete":
                changes[field] = ...
            else:
                changes[field] = data.draw(_near[field] if how == "near" else _json)
        extra = draw(st.dictionaries(st.text(max_size=10), _json, max_size=2))
        return ("mutate", (changes, extra))
    if kind == "json":
        return ("json", draw(_json))
    if kind == "text":
        return ("raw", draw(st.text(max_size=200)).encode("utf-8", "surrogatepass"))
    if kind == "bytes":
        return ("raw", draw(st.binary(max_size=200)))
    cut = draw(st.integers(min_value=0, max_value=400))
    junk = draw(st.binary(min_size=1, max_size=4))
    return ("corrupt", (cut, junk))


def render(recipe: tuple[str, Any], i: int) -> bytes:
    kind, payload = recipe
    if kind == "mutate":
        changes, extra = payload
        doc = {**base(f"hy-{i:04d}"), **extra}
        doc.update(changes)
        return orjson.dumps({k: v for k, v in doc.items() if v is not ...})
    if kind == "json":
        return orjson.dumps(payload)
    if kind == "raw":
        return payload  # type: ignore[no-any-return]
    cut, junk = payload
    whole = orjson.dumps(base(f"hy-{i:04d}"))
    cut = min(cut, len(whole))
    return whole[:cut] + junk + whole[cut:]


def hypothesis_messages(n: int = HYPOTHESIS_MESSAGES) -> list[Hostile]:
    """`n` messages drawn by Hypothesis (deterministic: derandomized, no example database)."""
    drawn: list[Hostile] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(hostile_message())
    def collect(recipe: tuple[str, Any]) -> None:
        i = len(drawn)
        value = render(recipe, i)
        # Mostly the account_id (so the other checks are reached), sometimes another key.
        key = key_of(value) if i % 10 else f"hk-{i}".encode()
        drawn.append(Hostile(f"hypothesis #{i} {recipe[0]}", value, key))

    collect()
    return drawn


# --------------------------------------------------------------------------------------------
# Running a batch of messages through the pipeline and checking every one
# --------------------------------------------------------------------------------------------


def send_all(s: Settings, msgs: list[Hostile]) -> list[int]:
    """Send in order to partition 0; returns each message's offset."""
    producer = KafkaProducer(
        bootstrap_servers=s.kafka.bootstrap_servers,
        acks="all",
        max_request_size=1_000_000,  # room for the ~900 KB messages
        client_id="txmon-test-hostile",
    )
    try:
        futures = [
            producer.send(s.kafka.topic, key=m.key, value=m.value, partition=0, timestamp_ms=RECORD_MS)
            for m in msgs
        ]
        producer.flush(timeout=60)
        return [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close(timeout=10)


def run_consumer(s: Settings, tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> str:
    proc = ConsumerProcess(s, tmp_path / "consumer.log", "--max-idle-seconds", "4")
    children.append(proc.proc)
    try:
        rc = proc.wait(90)  # a few seconds normally
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the consumer stalled:\n{proc.output()[-3000:]}") from None
    out = proc.output()
    assert rc == 0, f"the consumer exited {rc}:\n{out[-3000:]}"
    return out


@pytest.fixture
def children(fresh_db: PostgresSettings) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(30)


def predicted(s: Settings, msgs: list[Hostile], offsets: list[int]) -> list[str]:
    """What each message should become: "stored" or a rejection reason (pure validation, then
    the first-one-wins rule for ids)."""
    seen: set[str] = set()
    out = []
    for m, o in zip(msgs, offsets, strict=True):
        item = validate(
            m.value,
            topic=s.kafka.topic,
            partition=0,
            offset=o,
            key=m.key,
            limits=s.validation,
            kafka_timestamp_ms=RECORD_MS,  # what send_all stamps every record with
        )
        if isinstance(item, Rejection):
            out.append(item.reason)
        elif item.transaction_id in seen:
            out.append("duplicate_transaction_id")
        else:
            seen.add(item.transaction_id)
            out.append("stored")
    return out


_COLUMNS = (
    "transaction_id", "account_id", "transaction_type", "amount", "currency", "timestamp", "channel",
    "country", "merchant", "merchant_category", "city", "latitude", "longitude", "simulated_scenario",
    "schema_version",
)  # fmt: skip


def stored_verbatim(sent: bytes, row: dict[str, Any]) -> list[str]:
    """Differences between what was sent and the stored row (empty: identical)."""
    doc = orjson.loads(sent)
    diffs = []
    for f in TEXT_FIELDS:
        if f == "timestamp":
            continue
        if row[f] != doc.get(f):
            diffs.append(f"{f}: sent {doc.get(f)!r}, stored {row[f]!r}")
    if row["timestamp"] != datetime.fromisoformat(doc["timestamp"]):
        diffs.append(f"timestamp: sent {doc['timestamp']!r}, stored {row['timestamp']!r}")
    if Decimal(row["amount"]) != Decimal(str(doc["amount"])):
        diffs.append(f"amount: sent {doc['amount']!r}, stored {row['amount']!r}")
    for f in ("latitude", "longitude"):
        want = None if doc.get(f) is None else float(doc[f])
        if row[f] != want:
            diffs.append(f"{f}: sent {doc.get(f)!r}, stored {row[f]!r}")
    if row["schema_version"] != doc["schema_version"]:
        diffs.append("schema_version")
    return diffs


def check_every_message(s: Settings, msgs: list[Hostile], offsets: list[int]) -> dict[str, int]:
    """Each message is stored verbatim or rejected with the predicted reason; returns counts."""
    pg = s.postgres
    rejected = {
        o: (reason, bytes(raw), None if key is None else bytes(key), full)
        for o, reason, raw, key, full in query(
            pg,
            "SELECT kafka_offset, reason, raw_payload, message_key, payload_bytes FROM rejected_transactions",
        )
    }
    cols = ", ".join(f'"{c}"' for c in _COLUMNS)
    stored = {
        r[-1]: dict(zip(_COLUMNS, r[:-1], strict=True))
        for r in query(pg, f"SELECT {cols}, kafka_offset FROM transactions")
    }
    expect = predicted(s, msgs, offsets)
    problems: list[str] = []
    outcome: dict[str, int] = {}
    for m, o, want in zip(msgs, offsets, expect, strict=True):
        label = f"{m.name!r} (offset {o})"
        if m.expect is not None and m.expect != want:
            problems.append(f"{label}: validation says {want}, the corpus expects {m.expect}")
        in_rej, in_tx = o in rejected, o in stored
        if in_rej == in_tx:
            problems.append(
                f"{label}: {'both stored and rejected' if in_rej else 'neither stored nor rejected'}"
            )
            continue
        if in_rej:
            reason, raw, key, full = rejected[o]
            got = reason
            # The first REJECTED_PAYLOAD_MAX_BYTES are kept, with the full length beside them.
            if raw != (m.value or b"")[:REJECTED_PAYLOAD_MAX_BYTES] or full != len(m.value or b""):
                problems.append(f"{label}: raw bytes or length differ in rejected_transactions")
            if key != (None if m.key is None else m.key[:REJECTED_KEY_MAX_BYTES]):
                problems.append(f"{label}: key differs ({key!r} != {m.key!r})")
            if reason not in (*REASONS, "duplicate_transaction_id", "database_rejected"):
                problems.append(f"{label}: unknown reason {reason!r}")
        else:
            got = "stored"
            assert m.value is not None
            problems.extend(f"{label}: {d}" for d in stored_verbatim(m.value, stored[o]))
        if got != want:
            problems.append(f"{label}: {got}, expected {want}")
        outcome[got] = outcome.get(got, 0) + 1
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    assert sum(outcome.values()) == len(msgs), "not every message was accounted for"
    return outcome


def check_drained_and_intact(s: Settings, end: int) -> None:
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        lag = group_lag(admin, s.kafka.consumer_group)
    assert [(r.partition, r.committed, r.end_offset) for r in lag] == [(0, end, end)], lag
    for table in ("transactions", "alerts", "rejected_transactions", "schema_migrations"):
        assert scalar(s.postgres, "SELECT to_regclass(%s) IS NOT NULL", (table,)), f"table {table} is gone"
    assert scalar(s.postgres, "SELECT count(*) FROM schema_migrations") >= 1


def dlq_positions(s: Settings) -> dict[int, bytes]:
    c = KafkaConsumer(
        bootstrap_servers=s.kafka.bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        client_id="txmon-test-dlq-reader",
    )
    try:
        tp = TopicPartition(s.kafka.dlq_topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        end = c.end_offsets([tp])[tp]
        out: dict[int, bytes] = {}
        deadline = time.monotonic() + 60
        while c.position(tp) < end and time.monotonic() < deadline:
            for r in c.poll(timeout_ms=500).get(tp, []):
                out[int(dict(r.headers)["dlq.source.offset"])] = r.value or b""
        return out
    finally:
        c.close()


def _run(
    s: Settings, msgs: list[Hostile], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> tuple[list[int], dict[str, int]]:
    offsets = send_all(s, msgs)
    run_consumer(s, tmp_path, children)
    outcome = check_every_message(s, msgs, offsets)
    check_drained_and_intact(s, offsets[-1] + 1)
    dead = dlq_positions(s)
    rejected_offsets = {o for (o,) in query(s.postgres, "SELECT kafka_offset FROM rejected_transactions")}
    assert rejected_offsets <= dead.keys(), (
        f"missing from the DLQ: {sorted(rejected_offsets - dead.keys())[:10]}"
    )
    # The dead-letter copy carries what the table keeps: the first REJECTED_PAYLOAD_MAX_BYTES
    # (a header then names the full length, see test_a_large_rejected_message_is_kept_bounded).
    assert all(
        dead[o] == (m.value or b"")[:REJECTED_PAYLOAD_MAX_BYTES]
        for m, o in zip(msgs, offsets, strict=True)
        if o in rejected_offsets
    )
    return offsets, outcome


def test_hostile_corpus(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    s = settings_factory(partitions=1)
    _, outcome = _run(s, CORPUS, tmp_path, children)
    print(f"hostile corpus: {len(CORPUS)} messages -> {dict(sorted(outcome.items()))}")
    assert outcome.get("stored", 0) > 50 and outcome.get("duplicate_transaction_id", 0) >= 4
    # The first of the duplicates is the one kept.
    assert query(
        s.postgres, "SELECT amount, account_id FROM transactions WHERE transaction_id = 'h-dup-1'"
    ) == [(Decimal("10.00"), "acct-h-dup-1")]


def test_hypothesis_messages(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    msgs = hypothesis_messages()
    assert len(msgs) == HYPOTHESIS_MESSAGES
    s = settings_factory(partitions=1)
    _, outcome = _run(s, msgs, tmp_path, children)
    print(
        f"hypothesis: {len(msgs)} messages -> {dict(sorted(outcome.items()))}; total hostile inputs {HOSTILE_INPUTS}"
    )
    assert outcome.get("stored", 0) >= 10 and len(outcome) >= 8, outcome  # the strategy reaches both sides


def test_rejected_duplicate_leaves_no_trace(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A duplicate id from another account is rejected: none of its alerts may be stored (under
    the kept transaction's id), and it must not enter that account's history for later rules."""
    s = settings_factory(partitions=1)
    first = base("h-xdup", account_id="acct-A", amount=5.0)
    dup = base("h-xdup", account_id="acct-B", amount=50_000.0, merchant="Big Store")
    later = base("h-xdup-later", account_id="acct-B", amount=50_000.0, merchant="Big Store")
    msgs = [Hostile("first", _dumps(first)), Hostile("dup", _dumps(dup)), Hostile("later", _dumps(later))]
    offsets = send_all(s, msgs)
    run_consumer(s, tmp_path, children)
    assert check_every_message(s, msgs, offsets) == {"stored": 2, "duplicate_transaction_id": 1}
    alerts = sorted(query(s.postgres, "SELECT transaction_id, alert_type FROM alerts"))
    # h-xdup (5.00, no history) raises nothing; h-xdup-later is a high amount on an account with
    # no stored history, so it is no duplicate of anything.
    assert alerts == [("h-xdup-later", "high_amount")], alerts


def test_message_near_the_size_limit_is_rejected_without_stalling(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A message the broker accepts (just under its ~1 MB limit) is too big to re-send to the
    dead-letter topic with headers; the consumer must still reject it and move on."""
    s = settings_factory(partitions=1)
    # The broker takes record batches up to message.max.bytes (1048588 by default); a batch
    # adds ~80 bytes to this value. The DLQ copy adds its headers (~150 bytes) on top.
    big = Hostile("just under the broker limit", b"x" * 1_048_500, b"k")  # too large before the key matters
    after = Hostile("valid after it", _dumps(base("h-after-big")))
    producer = KafkaProducer(
        bootstrap_servers=s.kafka.bootstrap_servers, acks="all", max_request_size=2_000_000
    )
    try:
        offsets = [
            producer.send(s.kafka.topic, key=m.key, value=m.value, partition=0, timestamp_ms=RECORD_MS)
            .get(30)
            .offset
            for m in (big, after)
        ]
    finally:
        producer.close(timeout=10)
    run_consumer(s, tmp_path, children)
    assert check_every_message(s, [big, after], offsets) == {"message_too_large": 1, "stored": 1}
    check_drained_and_intact(s, offsets[-1] + 1)
    assert offsets[0] in dlq_positions(s), "the rejected message has no dead-letter record"


def test_the_docs_report_the_number_of_hostile_inputs() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "guarantees.md").read_text()
    assert (
        f"**{HOSTILE_INPUTS} messages** through the real broker and consumer ({len(CORPUS)} hand-written"
        in page
    )


def test_a_large_rejected_message_is_kept_bounded(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A ~900 KB rejected message costs the table 64 KiB, with its full length recorded; the
    dead-letter copy says it was cut and from what size."""
    s = settings_factory(partitions=1)
    big = Hostile("900 KB merchant", _dumps(base("h-bounded", merchant="M" * KB900)))
    offsets = send_all(s, [big])
    run_consumer(s, tmp_path, children)
    assert query(s.postgres, "SELECT length(raw_payload), payload_bytes FROM rejected_transactions") == [
        (REJECTED_PAYLOAD_MAX_BYTES, len(big.value or b""))
    ]
    c = KafkaConsumer(
        s.kafka.dlq_topic, bootstrap_servers=s.kafka.bootstrap_servers, auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )  # fmt: skip
    try:
        (record,) = list(c)
    finally:
        c.close()
    assert dict(record.headers)["dlq.payload_truncated_from"] == str(len(big.value or b"")).encode()
    assert record.value == (big.value or b"")[:REJECTED_PAYLOAD_MAX_BYTES] and offsets == [0]
