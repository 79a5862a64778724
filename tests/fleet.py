"""Fault-test plumbing shared by tests/integration/test_faults.py and test_exactly_once.py: seeded
streams with bad messages interleaved, a rate-limited raw sender that records where each message
landed, named consumer processes (the real entry point), and the end-state check against the
model (tests/model.py): every good message stored once at its coordinates, every bad one rejected
with its bytes and dead-lettered, exactly the model's alerts.
"""

from __future__ import annotations

import dataclasses
import random
import re
import signal
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from producer.generator import encode
from stack.orchestrator import LocalStack
from tests.model import Expected, Record, expected, read_topic
from tests.support import ConsumerProcess, generated, query, scalar, wait_until
from utils.config import Settings

BAD_RATE = 0.01  # one bad message per ~100 good ones
# Tight state limits, so that eviction is part of every run: per account at most 10 events within
# 30 minutes of its newest (enough for the velocity rule's 9), and 300 accounts in memory.
EVICTING: dict[str, Any] = {
    "state_history_hours": 0.5,
    "state_max_events_per_account": 10,
    "state_max_accounts": 300,
}


@dataclass(frozen=True, slots=True)
class Msg:
    key: bytes | None
    value: bytes
    bad: bool
    account: str  # the account whose partition it goes to (bad ones borrow a neighbour's key)


def bad_message(rng: random.Random, template: dict[str, Any], bad_id: str) -> Msg:
    """One invalid message built from a valid transaction, so it looks like real traffic."""
    key, value = encode(template)
    base = {**template, "transaction_id": bad_id}
    kind = rng.randrange(10)
    if kind == 0:  # truncated JSON: every proper prefix of an object is invalid
        raw = value[: rng.randrange(1, len(value) - 1)]
    elif kind == 1:  # invalid UTF-8 inside a string
        raw = orjson.dumps(base)[:-1] + b',"note":"caf\xe9 \xff\xfe"}'
    elif kind == 2:
        raw = orjson.dumps({**base, "amount": -round(rng.uniform(0.01, 500.0), 2)})
    elif kind == 3:
        raw = orjson.dumps({k: v for k, v in base.items() if k != "currency"})
    elif kind == 4:
        raw = orjson.dumps({**base, "amount": "12,50"})
    elif kind == 5:  # NaN as a JSON token (not valid JSON)
        raw = orjson.dumps({**base, "amount": 1}).replace(b'"amount":1', b'"amount":NaN')
    elif kind == 6:
        raw = b"[" + orjson.dumps(base) + b"]"
    elif kind == 7:
        raw = orjson.dumps({**base, "currency": "XXX"})
    elif kind == 8:
        raw = orjson.dumps({**base, "timestamp": "2999-01-01T00:00:00+00:00"})
    else:
        raw = b""
    return Msg(key, raw, True, template["account_id"])


def seeded_stream(s: Settings, n: int, seed: int) -> tuple[list[dict[str, Any]], list[Msg]]:
    """The generated stream (what `generated()` returns) with ~1% bad messages interleaved."""
    good = generated(s, n, seed)
    rng = random.Random(seed * 7919 + 1)
    msgs: list[Msg] = []
    for txn in good:
        if rng.random() < BAD_RATE:
            msgs.append(bad_message(rng, txn, f"bad-{seed}-{len(msgs)}"))
        key, value = encode(txn)
        msgs.append(Msg(key, value, False, txn["account_id"]))
    return good, msgs


class RawSender(threading.Thread):
    """Sends messages in order through one idempotent producer, at most `rate` per second,
    and records the (partition, offset) each one landed at."""

    def __init__(self, s: Settings, msgs: list[Msg], rate: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.s, self.msgs, self.rate = s, msgs, rate
        self.coords: list[tuple[int, int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = KafkaProducer(
                bootstrap_servers=self.s.kafka.bootstrap_servers,
                acks="all",
                linger_ms=5,
                max_request_size=1_000_000,
                client_id="txmon-test-raw-sender",
            )
            futures = []
            started = time.monotonic()
            for i, m in enumerate(self.msgs):
                futures.append(producer.send(self.s.kafka.topic, key=m.key, value=m.value))
                if self.rate and i % 50 == 49:
                    ahead = started + (i + 1) / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            producer.flush(timeout=120)
            for f in futures:
                md = f.get(timeout=60)
                self.coords.append((md.partition, md.offset))
            producer.close(timeout=10)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout: float = 180.0) -> list[tuple[int, int]]:
        self.join(timeout)
        assert not self.is_alive(), "the raw sender did not finish"
        if self.error is not None:
            raise AssertionError(f"sending the stream failed: {self.error!r}") from self.error
        assert len(self.coords) == len(self.msgs)
        return self.coords


def send(s: Settings, msgs: list[Msg], rate: float = 0.0) -> RawSender:
    sender = RawSender(s, msgs, rate)
    sender.start()
    return sender


# --------------------------------------------------------------------------------------------
# Reading back: the topic, the dead-letter topic, the database
# --------------------------------------------------------------------------------------------


def processed(s: Settings) -> int:
    """Messages the pipeline has accounted for: stored plus rejected."""
    return int(
        scalar(
            s.postgres,
            "SELECT (SELECT count(*) FROM transactions) + (SELECT count(*) FROM rejected_transactions)",
        )
    )


def wait_processed(s: Settings, at_least: int, timeout: float = 120.0) -> int:
    seen = [0]

    def reached() -> bool:
        seen[0] = processed(s)
        return seen[0] >= at_least

    wait_until(
        reached, timeout=timeout, interval=0.1, what=lambda: f"{at_least} messages processed (at {seen[0]})"
    )
    return seen[0]


def _sample(items: Any, k: int = 5) -> list[Any]:
    return sorted(items, key=str)[:k]


def check_end_state(
    s: Settings, records: list[Record], expected_ids: set[str] | None = None, *, evicting: bool = False
) -> Expected:
    """The database and the DLQ hold exactly what a clean run of `records` produces. `evicting`:
    also check that the state limits changed some alert (eviction really was part of the run)."""
    exp = expected(s, records)
    assert len(exp.good) == len(set(exp.good)), "the fault streams carry no duplicate ids"
    if expected_ids is not None:
        assert set(exp.good) == expected_ids, "the topic's valid messages are not the generated stream"

    rows = query(s.postgres, "SELECT transaction_id, kafka_partition, kafka_offset FROM transactions")
    stored = {tid: (p, o) for tid, p, o in rows}
    assert len(stored) == len(rows)
    lost, extra = exp.good.keys() - stored.keys(), stored.keys() - exp.good.keys()
    assert not lost and not extra, (
        f"{len(lost)} good messages lost (e.g. {_sample(lost)}), {len(extra)} unexpected rows "
        f"(e.g. {_sample(extra)})"
    )
    moved = [tid for tid, where in exp.good.items() if stored[tid] != where]
    assert not moved, f"{len(moved)} rows stored with other Kafka coordinates, e.g. {_sample(moved)}"

    rej_rows = query(
        s.postgres,
        "SELECT kafka_partition, kafka_offset, raw_payload FROM rejected_transactions WHERE kafka_topic = %s",
        (s.kafka.topic,),
    )
    assert scalar(s.postgres, "SELECT count(*) FROM rejected_transactions") == len(rej_rows)
    rejected = {(p, o): bytes(raw) for p, o, raw in rej_rows}
    missing, unexpected = exp.bad.keys() - rejected.keys(), rejected.keys() - exp.bad.keys()
    assert not missing and not unexpected, (
        f"bad messages not in rejected_transactions: {_sample(missing)}; "
        f"rejected though valid: {_sample(unexpected)}"
    )
    altered = [k for k, raw in exp.bad.items() if rejected[k] != raw]
    assert not altered, f"raw bytes changed in rejected_transactions at {_sample(altered)}"

    dead: dict[tuple[int, int], set[bytes]] = defaultdict(set)
    for r in read_topic(s, s.kafka.dlq_topic):
        h = dict(r.headers)
        assert h["dlq.source.topic"] == s.kafka.topic.encode()
        dead[(int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))].add(r.value or b"")
    not_dead = exp.bad.keys() - dead.keys()
    assert not not_dead, f"{len(not_dead)} bad messages missing from the DLQ, e.g. {_sample(not_dead)}"
    assert dead.keys() <= exp.bad.keys(), (
        f"valid messages in the DLQ: {_sample(dead.keys() - exp.bad.keys())}"
    )
    changed = [k for k, values in dead.items() if values != {exp.bad[k]}]
    assert not changed, f"DLQ copies differ from the original bytes at {_sample(changed)}"

    if evicting:
        assert_eviction_matters(s, records, exp)

    alert_rows = query(s.postgres, "SELECT transaction_id, alert_type FROM alerts")
    alerts = set(alert_rows)
    assert len(alerts) == len(alert_rows), "an alert is stored twice"
    missed, spurious = exp.alerts - alerts, alerts - exp.alerts
    assert not missed and not spurious, (
        f"{len(missed)} expected alerts missing (e.g. {_sample(missed)}), "
        f"{len(spurious)} unexpected (e.g. {_sample(spurious)}); expected {len(exp.alerts)}"
    )
    return exp


def assert_eviction_matters(s: Settings, records: list[Record], exp: Expected) -> None:
    unbounded = dataclasses.replace(
        s,
        consumer=dataclasses.replace(s.consumer, state_history_hours=1e6, state_max_events_per_account=10**6),
    )
    assert expected(unbounded, records).alerts != exp.alerts, "the state limits never changed an alert"


def injected_coords(msgs: list[Msg], coords: list[tuple[int, int]]) -> set[tuple[int, int]]:
    return {c for m, c in zip(msgs, coords, strict=True) if m.bad}


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class Consumers:
    """Named consumer processes (the real entry point), each with its own log file."""

    def __init__(self, s: Settings, tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
        self.s, self.tmp_path, self.children = s, tmp_path, children
        self.procs: dict[str, ConsumerProcess] = {}

    def start(self, name: str, *args: str) -> ConsumerProcess:
        proc = ConsumerProcess(self.s, self.tmp_path / f"{name}.log", *args)
        self.children.append(proc.proc)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return self.procs[name].output()

    def stop(self, name: str, timeout: float = 90.0) -> int:
        """SIGTERM, then the exit code (the process must exit within `timeout`)."""
        proc = self.procs[name]
        proc.signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{name} ignored SIGTERM for {timeout:.0f}s:\n{tail(proc.output())}"
            ) from None


_ASSIGNMENT_LINE = re.compile(r"partitions (assigned|revoked|lost): \[([\d, ]*)\]")


def owned(log: str) -> set[int]:
    """The partitions a consumer holds by its log: cooperative rebalancing logs what each
    rebalance adds and takes away, so the holding is their running sum."""
    held: set[int] = set()
    for how, listed in _ASSIGNMENT_LINE.findall(log):
        moved = {int(p) for p in listed.split(",") if p.strip()}
        held = held | moved if how == "assigned" else held - moved
    return held


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def summary_field(log: str, name: str) -> int:
    m = re.findall(rf"consumer summary: .*?\b{name}=(\d+)", log)
    assert m, f"no consumer summary in the log:\n{tail(log)}"
    return int(m[-1])


def require_local(stack: LocalStack, name: str) -> None:
    if not stack.is_local(name):
        pytest.fail(
            f"this fault test stops and restarts {name}, but the session uses an external one "
            "(KAFKA_BOOTSTRAP_SERVERS / POSTGRES_HOST answered): unset it so the test stack runs its own"
        )
