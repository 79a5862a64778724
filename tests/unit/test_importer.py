"""producer.importer: a bank's CSV / JSON Lines rows as wire-format messages through a mapping;
every row either maps or is reported with its line and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producer.importer import load_mapping, map_rows, record_time_ms
from utils.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example() -> tuple[str, dict[str, object]]:
    return (EXAMPLES / "bank-history.csv").read_text(), json.loads(
        (EXAMPLES / "bank-history.mapping.json").read_text()
    )


def test_the_example_maps_every_row_or_says_why_not() -> None:
    text, mapping = example()
    out = map_rows(text, load_mapping(mapping), name="bank-history.csv")
    assert out.rows == 25 and len(out.messages) + len(out.problems) == out.rows
    assert [(p.line, p.reason) for p in out.problems] == [
        (24, "bad_timestamp"),
        (25, "bad_amount"),
        (26, "missing_field"),
    ]
    by_id = {m["transaction_id"]: m for _line, m in out.messages}
    salary, rent, refund = by_id["R0005"], by_id["R0007"], by_id["R0022"]
    assert (salary["transaction_type"], salary["amount"]) == ("deposit", 3150.0)  # a credit
    assert (rent["transaction_type"], rent["amount"], rent["merchant"]) == ("transfer", 950.0, "Landlord BV")
    assert refund["transaction_type"] == "refund"
    assert (
        by_id["R0018"]["transaction_type"] == "transfer" and by_id["R0017"]["transaction_type"] == "deposit"
    )
    # Local time in Amsterdam (CEST, +02:00 in October) becomes UTC.
    assert by_id["R0001"]["timestamp"] == "2026-10-01T07:12:00.000000+00:00"
    assert by_id["R0001"]["currency"] == "EUR" and by_id["R0001"]["country"] == "NL"
    # Labels: fraud rows carry the scenario and incident, the others none.
    ato = [m for m in by_id.values() if m["simulated_incident"] == "ATO-1"]
    assert len(ato) == 3 and {m["simulated_scenario"] for m in ato} == {"account_takeover"}
    assert by_id["R0001"]["simulated_scenario"] is None and by_id["R0001"]["simulated_incident"] is None


def test_record_time_is_event_time() -> None:
    msg = {"timestamp": "2026-10-01T07:12:00.000000+00:00"}
    assert record_time_ms(msg) == 1790838720000


def test_json_lines_a_direction_column_and_ids_from_lines() -> None:
    mapping = load_mapping(
        {
            "columns": {"account_id": "acct", "timestamp": "ts", "amount": "amt", "merchant": "payee"},
            "constants": {"currency": "USD", "country": "US"},
            "direction": {"column": "dc", "debit": ["D"], "credit": ["C"]},
            "labels": {"fraud": "fraud"},
        }
    )
    text = "\n".join(
        [
            json.dumps(
                {"acct": "A1", "ts": "2026-01-05T10:00:00Z", "amt": "12.5", "dc": "D", "payee": "Shop"}
            ),
            json.dumps({"acct": "A1", "ts": "2026-01-05T11:00:00Z", "amt": 300, "dc": "C", "fraud": "yes"}),
            json.dumps({"acct": "A1", "ts": "2026-01-05T12:00:00Z", "amt": 9, "dc": "X"}),
            "[1, 2]",
            "{not json",
            json.dumps({"acct": "A1", "ts": "2026-01-05T13:00:00Z", "amt": 40, "dc": "D"}),
            "",
        ]
    )
    out = map_rows(text, mapping, name="export.jsonl")
    msgs = [m for _l, m in out.messages]
    assert [(m["transaction_id"], m["transaction_type"]) for m in msgs] == [
        ("export:1", "purchase"),
        ("export:2", "deposit"),
        ("export:6", "transfer"),  # a debit without a merchant: account to account
    ]
    assert msgs[1]["simulated_scenario"] == "fraud" and msgs[1]["simulated_incident"] == "export:2"
    assert [(p.line, p.reason) for p in out.problems] == [
        (3, "bad_direction"),
        (4, "unreadable_row"),
        (5, "unreadable_row"),
    ]


def test_what_the_consumer_would_reject_is_reported_with_its_line() -> None:
    mapping = load_mapping(
        {
            "columns": {"account_id": "a", "timestamp": "t", "amount": "x", "currency": "c"},
            "constants": {"country": "US"},
        }
    )
    text = "a,t,x,c\nA1,2026-01-05T10:00:00+00:00,-10,XXX\nA1,2026-01-05T10:00:00+00:00,-10.123,USD\nA1,2026-01-05T10:00:00+00:00,-10,USD,extra\n"
    out = map_rows(text, mapping, name="x.csv")
    assert [(p.line, p.reason) for p in out.problems] == [
        (2, "unknown_currency"),
        (3, "amount_precision"),
        (4, "unreadable_row"),
    ]
    assert out.messages == []


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ({"columns": {"account_id": "a"}}, "no column or constant"),
        ({"columns": {"acount": "a"}}, "are not fields"),
        ({"columns": {}, "oops": 1}, "unknown section"),
        (
            {
                "columns": {"account_id": "a", "timestamp": "t", "amount": "x"},
                "constants": {"currency": "USD", "country": "US"},
                "direction": {"sign": "sideways"},
            },
            "direction.sign",
        ),
        (
            {
                "columns": {"account_id": "a", "timestamp": "t", "amount": "x"},
                "constants": {"currency": "USD", "country": "US"},
                "transaction_type": {"credit": {"*": "purchase"}},
            },
            "a credit is one of",
        ),
        (
            {
                "columns": {"account_id": "a", "timestamp": "t", "amount": "x"},
                "constants": {"currency": "USD", "country": "US"},
                "timezone": "Mars/Olympus",
            },
            "IANA zone",
        ),
    ],
)
def test_a_bad_mapping_says_what_to_fix(mapping: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_mapping(mapping)


def test_a_csv_without_a_mapped_column_is_refused_whole() -> None:
    text, mapping = example()
    with pytest.raises(ConfigError, match="counterparty"):
        map_rows(text.replace("counterparty", "payee", 1), load_mapping(mapping), name="bank-history.csv")
