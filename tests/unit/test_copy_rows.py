"""The COPY payload the consumer writes: columns in TXN_COLUMNS order, text escaped for COPY."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from consumer.storage import TXN_COLUMNS, copy_rows
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
        1,
        3,
        42,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_each_value_lands_in_its_column() -> None:
    row = copy_rows([_txn()]).rstrip("\n").split("\t")
    got = dict(zip(TXN_COLUMNS, row, strict=True))
    assert got["transaction_id"] == "id-1" and got["account_id"] == "ACC1"
    assert got["amount"] == "12.50" and got["timestamp"] == "2026-01-02T03:04:05+00:00"
    assert (
        got["merchant"] == "Shop" and got["merchant_category"] == "grocery" and got["city"] == "Springfield"
    )
    assert (got["latitude"], got["longitude"]) == ("40.5", "-75.25")
    assert got["simulated_scenario"] == "card_testing"
    assert (got["schema_version"], got["kafka_partition"], got["kafka_offset"]) == ("1", "3", "42")


def test_nulls_and_copy_escapes() -> None:
    row = copy_rows([_txn(merchant="a\tb\\c\nd\re", city=None, latitude=None, longitude=None)])
    fields = row.rstrip("\n").split("\t")
    got = dict(zip(TXN_COLUMNS, fields, strict=True))
    assert got["merchant"] == "a\\tb\\\\c\\nd\\re"
    assert got["city"] == got["latitude"] == got["longitude"] == "\\N"
    assert row.count("\n") == 1


def test_each_escape_path_alone() -> None:
    # Printable but with a backslash; not printable but nothing to escape; plain.
    row = copy_rows([_txn(merchant="C:\\shop", merchant_category="no\u00a0break", city="")])
    got = dict(zip(TXN_COLUMNS, row.rstrip("\n").split("\t"), strict=True))
    assert (got["merchant"], got["merchant_category"], got["city"]) == ("C:\\\\shop", "no\u00a0break", "")


def test_one_line_per_row_and_nothing_for_no_rows() -> None:
    assert copy_rows([]) == ""
    payload = copy_rows([_txn(kafka_offset=i) for i in range(3)])
    assert payload.endswith("\n") and payload.count("\n") == 3
    assert [line.rsplit("\t", 1)[1] for line in payload.splitlines()] == ["0", "1", "2"]
