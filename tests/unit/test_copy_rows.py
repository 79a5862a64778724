"""The COPY payload the consumer writes: columns in TXN_COLUMNS order, text escaped for COPY."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from consumer.storage import COPY_COLUMNS, TXN_COLUMNS, copy_rows
from utils.models import Transaction


def _txn(**kw: object) -> Transaction:
    base = Transaction(
        "id-1",
        "ACC1",
        "purchase",
        12.5,
        "USD",
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "pos",
        "US",
        "Shop",
        "grocery",
        "Springfield",
        40.5,
        -75.25,
        "card_testing",
        "inc-7",
        12.5,
        1,
        "transactions",
        3,
        42,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_each_value_lands_in_its_column() -> None:
    row = copy_rows([_txn()]).rstrip("\n").split("\t")
    got = dict(zip(COPY_COLUMNS, row, strict=True))
    assert got["transaction_id"] == "id-1" and got["account_id"] == "ACC1"
    assert got["amount"] == "12.50" and got["timestamp"] == "2026-01-02T03:04:05+00:00"
    assert (
        got["merchant"] == "Shop" and got["merchant_category"] == "grocery" and got["city"] == "Springfield"
    )
    assert (got["latitude"], got["longitude"]) == ("40.5", "-75.25")
    assert got["simulated_scenario"] == "card_testing" and got["simulated_incident"] == "inc-7"
    assert got["amount_base"] == "12.50"
    assert (got["schema_version"], got["kafka_topic"], got["kafka_partition"], got["kafka_offset"]) == (
        "1",
        "transactions",
        "3",
        "42",
    )
    assert got["kafka_timestamp_ms"] == "\\N"  # no record timestamp given
    assert got["kafka_topic_id"] == "00000000-0000-0000-0000-000000000000"  # the broker gave none
    topic_id = uuid.uuid4()
    assert copy_rows([_txn()], topic_id).rstrip("\n").split("\t")[-1] == str(topic_id)
    assert (
        dict(zip(TXN_COLUMNS, copy_rows([_txn(kafka_timestamp_ms=1764354000123)]).split("\t"), strict=False))[
            "kafka_timestamp_ms"
        ]
        == "1764354000123"
    )


def test_nulls_and_copy_escapes() -> None:
    row = copy_rows(
        [_txn(merchant="a\tb\\c\nd\re", city=None, latitude=None, longitude=None, simulated_incident=None)]
    )
    fields = row.rstrip("\n").split("\t")
    got = dict(zip(COPY_COLUMNS, fields, strict=True))
    assert got["merchant"] == "a\\tb\\\\c\\nd\\re"
    assert got["city"] == got["latitude"] == got["longitude"] == got["simulated_incident"] == "\\N"
    assert row.count("\n") == 1


def test_each_escape_path_alone() -> None:
    # Printable but with a backslash; not printable but nothing to escape; plain.
    row = copy_rows([_txn(merchant="C:\\shop", merchant_category="no\u00a0break", city="")])
    got = dict(zip(COPY_COLUMNS, row.rstrip("\n").split("\t"), strict=True))
    assert (got["merchant"], got["merchant_category"], got["city"]) == ("C:\\\\shop", "no\u00a0break", "")


def test_one_line_per_row_and_nothing_for_no_rows() -> None:
    assert copy_rows([]) == ""
    payload = copy_rows([_txn(kafka_offset=i) for i in range(3)])
    assert payload.endswith("\n") and payload.count("\n") == 3
    assert [line.split("\t")[TXN_COLUMNS.index("kafka_offset")] for line in payload.splitlines()] == [
        "0",
        "1",
        "2",
    ]


def test_the_sent_timestamp_text_is_what_formatting_gives() -> None:
    """copy_rows writes `timestamp_text` where validation kept it: over a seeded stream sent in
    many timestamp forms, the payload equals the one built by formatting every datetime."""
    import orjson

    from consumer.validation import validate
    from producer.generator import TransactionGenerator
    from producer.pool import AccountPool
    from utils.config import ValidationLimits

    forms = (
        lambda s: s,
        lambda s: s.replace("+00:00", "Z"),
        lambda s: (
            datetime.fromisoformat(s)
            .astimezone(datetime.fromisoformat("2026-01-01T00:00+05:30").tzinfo)
            .isoformat()
        ),
        lambda s: s[:19] + "+00:00",
        lambda s: s[:19] + ".000000+00:00",
    )
    txns = []
    for k, msg in enumerate(
        TransactionGenerator(8, AccountPool.create(50, 1), 0.1, "simulated").next_batch(3000)
    ):
        msg["timestamp"] = forms[k % len(forms)](msg["timestamp"])
        sent_ms = int(datetime.fromisoformat(msg["timestamp"]).timestamp() * 1000)
        key = msg["account_id"].encode()
        t = validate(
            orjson.dumps(msg),
            topic="tx",
            partition=0,
            offset=k,
            key=key,
            limits=ValidationLimits(),
            kafka_timestamp_ms=sent_ms,
        )
        assert isinstance(t, Transaction)
        txns.append(t)
    kept = sum(t.timestamp_text is not None for t in txns)
    assert 500 < kept <= 600  # the first form, less the few with a zero fraction
    formatted = [dataclasses.replace(t) for t in txns]  # a copy leaves timestamp_text None
    assert all(t.timestamp_text is None for t in formatted)
    topic_id = uuid.uuid4()
    assert copy_rows(txns, topic_id) == copy_rows(formatted, topic_id)
