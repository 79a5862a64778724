"""A bank's own history as wire-format messages: CSV or JSON Lines rows through a small mapping
file. Pure: text in, (messages, problems) out; producer/replay.py sends them.

The mapping (JSON) says, for each of our fields (utils/models.py), which of their columns holds
it, or a constant for all rows; how to tell money out from money in; and which columns, if any,
label fraud. Every row either becomes one message or one `RowProblem` with its line number and
the reason: nothing is dropped silently. A row is also checked by the consumer's own validation
(consumer/validation.py), so what the pipeline would reject is reported here, with its line.

    {
      "format": "csv",                       # or "jsonl"; default: from the file's extension
      "columns": {"transaction_id": "id", "account_id": "customer", "timestamp": "booked_at",
                  "amount": "amount", "merchant": "counterparty", "merchant_category": "category"},
      "constants": {"currency": "EUR", "country": "NL", "channel": "online"},
      "timestamp_format": "%d/%m/%Y %H:%M",  # strptime; default: ISO 8601
      "timezone": "Europe/Amsterdam",        # for timestamps without an offset; default UTC
      "direction": {"sign": "negative_is_debit"},       # or "positive_is_debit", or
                   # {"column": "dc", "debit": ["D", "DR"], "credit": ["C", "CR"]}
      "transaction_type": {"column": "category",         # optional: their value -> our type,
                           "debit": {"transfer": "transfer", "*": "purchase"},   # per direction;
                           "credit": {"income": "deposit", "*": "refund"}},      # "*": otherwise
      "labels": {"fraud": "is_fraud", "scenario": "fraud_type", "incident": "fraud_scenario_id"}
    }

Direction (utils/models.py DEBIT_TYPES): without a `transaction_type` section a debit becomes a
`purchase` when it names a merchant and a `transfer` otherwise, and a credit a `deposit`. The
amount sent is always positive. Without a transaction-id column the id is `<prefix>:<line>`
(the file's name by default), so loading the same file twice sends the same ids: the pipeline
stores each once. Labels: a row whose fraud column is true (1, true, yes, y, t) becomes
`simulated_scenario` (the scenario column's value, or "fraud") and `simulated_incident` (the
incident column's value, or one id per row); other rows are ordinary traffic.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from consumer.validation import validate
from utils.config import RuleThresholds, ValidationLimits
from utils.errors import ConfigError
from utils.models import CREDIT_TYPES, DEBIT_TYPES, SCHEMA_VERSION, TRANSACTION_TYPES, Rejection

__all__ = ["ImportMapping", "Imported", "RowProblem", "load_mapping", "map_rows", "read_rows"]

# Our fields a mapping may fill from a column or a constant.
FIELDS = (
    "transaction_id",
    "account_id",
    "timestamp",
    "amount",
    "currency",
    "country",
    "channel",
    "merchant",
    "merchant_category",
    "city",
    "latitude",
    "longitude",
    "transaction_type",
)
REQUIRED = ("account_id", "timestamp", "amount", "currency", "country")
_TRUE = frozenset({"1", "true", "yes", "y", "t"})
_SIGNS = ("negative_is_debit", "positive_is_debit")


@dataclass(frozen=True, slots=True)
class ImportMapping:
    columns: Mapping[str, str]
    constants: Mapping[str, Any] = field(default_factory=dict)
    format: str | None = None
    timestamp_format: str | None = None
    timezone: str = "UTC"
    sign: str | None = "negative_is_debit"
    direction_column: str | None = None
    debit_values: frozenset[str] = frozenset()
    credit_values: frozenset[str] = frozenset()
    type_column: str | None = None
    debit_types: Mapping[str, str] = field(default_factory=dict)
    credit_types: Mapping[str, str] = field(default_factory=dict)
    fraud_column: str | None = None
    scenario_column: str | None = None
    incident_column: str | None = None
    id_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int  # of the file: CSV counts its header as line 1
    reason: str  # a short code: missing_field, bad_amount, ... or the consumer's rejection reason
    detail: str


@dataclass(slots=True)
class Imported:
    """Messages in file order with their line numbers, and the rows that could not be mapped."""

    messages: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0


def load_mapping(data: Mapping[str, Any]) -> ImportMapping:
    """A mapping from its JSON document; ConfigError names what to fix."""
    unknown = set(data) - {
        "format", "columns", "constants", "timestamp_format", "timezone", "direction", "transaction_type", "labels",
        "id_prefix",
    }  # fmt: skip
    if unknown:
        raise ConfigError(f"mapping: unknown section(s) {sorted(unknown)}")
    columns = dict(data.get("columns", {}))
    constants = dict(data.get("constants", {}))
    bad = (set(columns) | set(constants)) - set(FIELDS)
    if bad:
        raise ConfigError(f"mapping: {sorted(bad)} are not fields; use some of {list(FIELDS)}")
    missing = [f for f in REQUIRED if f not in columns and f not in constants]
    if missing:
        raise ConfigError(f"mapping: no column or constant for {missing}")
    fmt = data.get("format")
    if fmt not in (None, "csv", "jsonl"):
        raise ConfigError(f"mapping: format {fmt!r} is not csv or jsonl")
    tz = str(data.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"mapping: timezone {tz!r} is not an IANA zone name (e.g. Europe/Paris)") from None
    direction = dict(data.get("direction", {"sign": "negative_is_debit"}))
    sign = direction.get("sign")
    if sign is not None and sign not in _SIGNS:
        raise ConfigError(f"mapping: direction.sign {sign!r} is not one of {_SIGNS}")
    dcol = direction.get("column")
    if (sign is None) == (dcol is None):
        raise ConfigError(
            "mapping: direction needs either 'sign' or 'column' (with 'debit' and 'credit' values)"
        )
    types = dict(data.get("transaction_type", {}))
    for side in ("debit", "credit"):
        allowed = DEBIT_TYPES if side == "debit" else CREDIT_TYPES
        wrong = {v for v in types.get(side, {}).values() if v not in allowed}
        if wrong:
            raise ConfigError(
                f"mapping: transaction_type.{side} maps to {sorted(wrong)}; a {side} is one of {sorted(allowed)}"
            )
    labels = dict(data.get("labels", {}))
    return ImportMapping(
        columns=columns,
        constants=constants,
        format=fmt,
        timestamp_format=data.get("timestamp_format"),
        timezone=tz,
        sign=sign,
        direction_column=dcol,
        debit_values=frozenset(str(v).strip().lower() for v in direction.get("debit", ())),
        credit_values=frozenset(str(v).strip().lower() for v in direction.get("credit", ())),
        type_column=types.get("column"),
        debit_types={str(k).lower(): v for k, v in types.get("debit", {}).items()},
        credit_types={str(k).lower(): v for k, v in types.get("credit", {}).items()},
        fraud_column=labels.get("fraud"),
        scenario_column=labels.get("scenario"),
        incident_column=labels.get("incident"),
        id_prefix=data.get("id_prefix"),
    )


def read_rows(text: str, fmt: str) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line, row or None, why not) for each data row of a CSV (header first) or JSON Lines text."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            line = reader.line_num
            if None in row:
                yield (
                    line,
                    None,
                    f"{len(row[None]) if row[None] else 0} more values than the header has columns",
                )
                continue
            if not any((v or "").strip() for v in row.values()):
                continue  # an empty line is no row
            yield line, dict(row), ""
        return
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield n, None, f"not JSON: {exc.msg} at column {exc.colno}"
            continue
        if not isinstance(doc, dict):
            yield n, None, f"a JSON {type(doc).__name__}, not an object"
            continue
        yield n, doc, ""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


class _Unmappable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _timestamp(raw: str, mapping: ImportMapping) -> str:
    try:
        if mapping.timestamp_format:
            when = datetime.strptime(raw, mapping.timestamp_format)
        else:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        want = mapping.timestamp_format or "ISO 8601"
        raise _Unmappable("bad_timestamp", f"timestamp {raw!r} does not read as {want}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(mapping.timezone))
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def map_row(line: int, row: Mapping[str, Any], mapping: ImportMapping, prefix: str) -> dict[str, Any]:
    """One row as a wire-format message; raises _Unmappable."""

    def get(name: str) -> str | None:
        column = mapping.columns.get(name)
        if column is not None:
            return _text(row.get(column))  # a JSON line may leave a key out: empty
        return _text(mapping.constants.get(name))

    values = {name: get(name) for name in FIELDS}
    for name in REQUIRED:
        if values[name] is None:
            raise _Unmappable("missing_field", f"{name} is empty")
    amount_text = str(values["amount"]).replace(",", "") if values["amount"] is not None else ""
    try:
        amount = float(amount_text)
    except ValueError:
        raise _Unmappable("bad_amount", f"amount {values['amount']!r} is not a number") from None
    if not math.isfinite(amount) or amount == 0.0:
        raise _Unmappable("bad_amount", f"amount {values['amount']!r} is zero or not finite")
    if mapping.direction_column is not None:
        raw = _text(row.get(mapping.direction_column))
        key = (raw or "").lower()
        if key in mapping.debit_values:
            debit = True
        elif key in mapping.credit_values:
            debit = False
        else:
            raise _Unmappable(
                "bad_direction", f"{mapping.direction_column}={raw!r} is neither a debit nor a credit value"
            )
    else:
        debit = (amount < 0) == (mapping.sign == "negative_is_debit")
    ttype = values["transaction_type"]
    if mapping.type_column is not None or mapping.debit_types or mapping.credit_types:
        table = mapping.debit_types if debit else mapping.credit_types
        their = (_text(row.get(mapping.type_column)) or "").lower() if mapping.type_column else ""
        ttype = table.get(their) or table.get("*")
    if ttype is None:
        ttype = ("purchase" if values["merchant"] else "transfer") if debit else "deposit"
    if ttype not in TRANSACTION_TYPES:
        raise _Unmappable("bad_type", f"transaction type {ttype!r} is not one of {TRANSACTION_TYPES}")
    if (ttype in DEBIT_TYPES) != debit:
        side = "debit" if debit else "credit"
        raise _Unmappable("bad_type", f"a {side} cannot be a {ttype} (utils/models.py DEBIT_TYPES)")
    scenario = incident = None
    if mapping.fraud_column is not None and (_text(row.get(mapping.fraud_column)) or "").lower() in _TRUE:
        scenario = (_text(row.get(mapping.scenario_column)) if mapping.scenario_column else None) or "fraud"
        incident = (_text(row.get(mapping.incident_column)) if mapping.incident_column else None) or (
            f"{prefix}:{line}"
        )
    channel = values["channel"] or ("atm" if ttype == "withdrawal" else "online")
    coords: dict[str, float | None] = {}
    for name in ("latitude", "longitude"):
        text = values[name]
        try:
            coords[name] = None if text is None else float(text)
        except ValueError:
            raise _Unmappable("bad_coordinate", f"{name} {text!r} is not a number") from None
    return {
        "schema_version": SCHEMA_VERSION,
        "transaction_id": values["transaction_id"] or f"{prefix}:{line}",
        "account_id": values["account_id"],
        "transaction_type": ttype,
        "amount": abs(amount),
        "currency": str(values["currency"]).upper(),
        "timestamp": _timestamp(str(values["timestamp"]), mapping),
        "channel": channel,
        "country": str(values["country"]).upper(),
        "merchant": values["merchant"],
        "merchant_category": values["merchant_category"],
        "city": values["city"],
        "latitude": coords["latitude"],
        "longitude": coords["longitude"],
        "simulated_scenario": scenario,
        "simulated_incident": incident,
    }


def map_rows(
    text: str,
    mapping: ImportMapping,
    *,
    name: str,
    limits: ValidationLimits | None = None,
    thresholds: RuleThresholds | None = None,
) -> Imported:
    """Every row of `text` (a file called `name`) mapped and checked as the consumer will check
    it (against the record time the replay sends: the event's own time)."""
    fmt = mapping.format or ("jsonl" if name.endswith((".jsonl", ".ndjson", ".json")) else "csv")
    prefix = mapping.id_prefix or Path(name).stem
    limits = limits or ValidationLimits()
    rates = (thresholds or RuleThresholds()).rate_table()
    out = Imported()
    if fmt == "csv":
        header = next(csv.reader(io.StringIO(text)), [])
        wanted = [c for c in (*mapping.columns.values(), mapping.type_column, mapping.direction_column) if c]
        wanted += [c for c in (mapping.fraud_column, mapping.scenario_column, mapping.incident_column) if c]
        absent = sorted(set(wanted) - set(header))
        if absent:
            raise ConfigError(f"{name}: the mapping names columns its header does not have: {absent}")
    for line, row, why in read_rows(text, fmt):
        out.rows += 1
        if row is None:
            out.problems.append(RowProblem(line, "unreadable_row", why))
            continue
        try:
            msg = map_row(line, row, mapping, prefix)
        except _Unmappable as exc:
            out.problems.append(RowProblem(line, exc.reason, exc.detail))
            continue
        epoch_ms = record_time_ms(msg)
        checked = validate(
            orjson.dumps(msg),
            topic="import",
            partition=0,
            offset=line,
            key=msg["account_id"].encode(),
            limits=limits,
            kafka_timestamp_ms=epoch_ms,
            rates=rates,
        )
        if isinstance(checked, Rejection):
            out.problems.append(RowProblem(line, checked.reason, checked.detail))
            continue
        out.messages.append((line, msg))
    return out


def record_time_ms(msg: Mapping[str, Any]) -> int:
    """The Kafka record time a replayed message is sent with: its event time, so that an old
    event is neither `timestamp_too_old` nor late by its age in the pipeline's delay figures."""
    return int(datetime.fromisoformat(msg["timestamp"]).timestamp() * 1000)
