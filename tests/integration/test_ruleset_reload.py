"""Running consumers follow the active rule-set version (issue 12), on the real broker and
PostgreSQL: a switch without a restart, alerts that follow the new parameters and name their
version, a rollback, a malformed version refused while the running one stays, and a group whose
members switch together. The lever is `high_amount`: every test transaction is 6,000 in the base
currency, under the environment's 10,000 and over the published 5,000.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.rulesets import __main__ as cli
from consumer.rulesets import document
from consumer.rulesets.model import RuleSet
from producer.generator import DEFAULT_START, AccountPool, TransactionGenerator, encode
from tests.fleet import Consumers, Msg, owned, send, tail, wait_processed
from tests.support import execute, query, wait_until
from utils.config import Settings, settings_to_env
from utils.models import DEBIT_TYPES

pytestmark = pytest.mark.integration

AMOUNT = 6000.0


@pytest.fixture
def pipeline(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    as_person: Callable[[str], None],
) -> tuple[Settings, Consumers]:
    """Two partitions, consumers that look for a new version every 0.5 s, and the environment
    `python -m consumer.rulesets` (run in this process) reads, pointing at the same database."""
    s = settings_factory(partitions=2, ruleset_check_seconds=0.5)
    for key, value in {**settings_to_env(s), "TXMON_ENV_FILE": os.devnull}.items():
        monkeypatch.setenv(key, value)
    return s, Consumers(s, tmp_path, children)


def batch(s: Settings, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` debits of AMOUNT in the base currency, over many accounts (debits: high_amount is
    direction-aware, and a credit of AMOUNT is under ALERT_HIGH_AMOUNT_CREDIT)."""
    gen = TransactionGenerator(seed, AccountPool.create(400, seed), 0.0, "simulated", DEFAULT_START)
    debits = [t for t in gen.next_batch(4 * n) if t["transaction_type"] in DEBIT_TYPES][:n]
    assert len(debits) == n
    return [{**t, "amount": AMOUNT, "currency": s.rules.base_currency} for t in debits]


def encoded(txns: list[dict[str, Any]]) -> list[Msg]:
    return [Msg(*encode(t), False, t["account_id"]) for t in txns]


def deliver(s: Settings, txns: list[dict[str, Any]], before: int) -> list[tuple[int, int]]:
    coords = send(s, encoded(txns)).finish()
    wait_processed(s, before + len(txns))
    return coords


def alerts_of(s: Settings, txns: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    """(alert_type, rule_set_version) of the alerts raised by `txns`."""
    ids = [t["transaction_id"] for t in txns]
    return query(
        s.postgres, "SELECT alert_type, rule_set_version FROM alerts WHERE transaction_id = ANY(%s)", (ids,)
    )


def high_amount_versions(s: Settings, txns: list[dict[str, Any]]) -> list[int | None]:
    return [v for rule, v in alerts_of(s, txns) if rule == "high_amount"]


def applied(s: Settings) -> set[tuple[int, int, int | None]]:
    return {
        (p, first, v)
        for p, first, v in query(
            s.postgres, "SELECT kafka_partition, first_offset, version FROM rule_set_applied"
        )
    }


def firsts(coords: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for p, offset in coords:
        out[p] = min(offset, out.get(p, offset))
    return out


def publish(tmp_path: Path, s: Settings, high_amount: float, reason: str) -> tuple[int, str]:
    text = document.dump(RuleSet.from_thresholds(s.rules))
    old = f"high_amount: {s.rules.high_amount!r}"
    assert old in text, text
    path = tmp_path / f"rules-{high_amount:g}.yaml"
    path.write_text(text.replace(old, f"high_amount: {high_amount!r}", 1))
    out = tmp_path / "cli.out"
    with open(out, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = cli.main(["publish", str(path), "--reason", reason])  # as PGUSER (as_person)
    return code, out.read_text()


def activate(version: int, reason: str) -> int:
    return cli.main(["activate", str(version), "--reason", reason])


# A member checks the active version once per loop turn; a turn can wait out a rebalance (the
# second member joining) on a loaded 2-core machine, so seconds, not RULESET_CHECK_SECONDS, bound it.
SWITCH_S = 45


def switched(log: str, to: int) -> bool:
    return re.search(rf"rule set switched from .* to version {to} ", log) is not None


def test_a_running_consumer_switches_rolls_back_and_refuses_a_malformed_version(
    pipeline: tuple[Settings, Consumers], tmp_path: Path
) -> None:
    s, fleet = pipeline
    a = fleet.start("a")
    pid = a.proc.pid

    before = deliver(s, env_txns := batch(s, 60, seed=1), 0)
    assert high_amount_versions(s, env_txns) == [], "6,000 is under the environment's 10,000"
    assert {v for _rule, v in alerts_of(s, env_txns)} <= {None}
    assert applied(s) == set(), "nothing published: the environment's settings, no row"

    code, out = publish(tmp_path, s, 5000.0, "lower high_amount for the test")
    assert code == 0, out
    wait_until(lambda: switched(fleet.log("a"), 2), SWITCH_S, what="a switching to version 2")
    log_line = next(line for line in fleet.log("a").splitlines() if "rule set switched" in line)
    assert "published by txmon_test_alice: lower high_amount for the test" in log_line, log_line

    coords = deliver(s, v2_txns := batch(s, 60, seed=2), len(before))
    assert high_amount_versions(s, v2_txns) == [2] * len(v2_txns), "every 6,000 now alerts, as version 2"
    assert {v for _rule, v in alerts_of(s, v2_txns)} == {2}
    assert applied(s) == {(p, first, 2) for p, first in firsts(coords).items()}
    assert a.proc.poll() is None and a.proc.pid == pid, "switched without a restart"

    assert activate(1, "roll back") == 0
    wait_until(lambda: switched(fleet.log("a"), 1), SWITCH_S, what="a rolling back to version 1")
    coords1 = deliver(s, v1_txns := batch(s, 60, seed=3), 2 * len(before))
    assert high_amount_versions(s, v1_txns) == []
    assert {v for _rule, v in alerts_of(s, v1_txns)} <= {1}
    assert {(p, first, 1) for p, first in firsts(coords1).items()} <= applied(s)

    # publish refuses a malformed file, and nothing changes
    code, out = publish(tmp_path, s, -5.0, "impossible")
    assert code != 0 and "Fix:" in out, out
    assert query(s.postgres, "SELECT version FROM rule_set_active") == [(1,)]

    # a version written around publish (by hand, by a rules admin): the consumer refuses it
    bad = RuleSet.from_thresholds(s.rules).document()
    bad["rules"]["high_amount"]["parameters"]["high_amount"] = "five thousand"
    person = dataclasses.replace(
        s.postgres, user=os.environ["PGUSER"], password=os.environ["PGPASSWORD"], migration_user=""
    )
    execute(
        person,
        "INSERT INTO rule_set_versions (version, document, checksum, reason) VALUES (3, %s, 'x', 'malformed'); "
        "INSERT INTO rule_set_activations (version, activated_at, reason) VALUES (3, now(), 'malformed')",
        (json.dumps(bad),),
    )
    wait_until(lambda: "rule-set version 3 refused" in fleet.log("a"), 15, what="a refusing version 3")
    refusal = next(line for line in fleet.log("a").splitlines() if "rule-set version 3 refused" in line)
    assert "still evaluating version 1" in refusal and "high_amount" in refusal and "activate" in refusal
    bad_txns = batch(s, 60, seed=4)
    deliver(s, bad_txns, 3 * len(before))
    assert high_amount_versions(s, bad_txns) == []
    assert {v for _rule, v in alerts_of(s, bad_txns)} <= {1}, "still version 1, nothing half-applied"
    assert all(v != 3 for _p, _f, v in applied(s))
    assert a.proc.poll() is None and a.proc.pid == pid

    assert fleet.stop("a") == 0, tail(fleet.log("a"))
    assert fleet.log("a").count("rule-set version 3 refused") == 1, "refused once, not at every check"


def test_every_member_of_a_group_switches(pipeline: tuple[Settings, Consumers], tmp_path: Path) -> None:
    s, fleet = pipeline
    fleet.start("a")
    fleet.start("b")

    def both_own_one() -> bool:  # joined together, or the first handing one over to the second
        held = [owned(fleet.log(n)) for n in ("a", "b")]
        return all(len(h) == 1 for h in held) and held[0] | held[1] == {0, 1}

    wait_until(both_own_one, 90, what="a and b owning a partition each")
    before = deliver(s, batch(s, 40, seed=5), 0)

    code, out = publish(tmp_path, s, 5000.0, "group switch")
    assert code == 0, out
    wait_until(lambda: all(switched(fleet.log(n), 2) for n in ("a", "b")), SWITCH_S, what="both switching")
    coords = deliver(s, txns := batch(s, 80, seed=6), len(before))
    assert {p for p, _ in coords} == {0, 1}, coords
    assert high_amount_versions(s, txns) == [2] * len(txns)
    assert applied(s) == {(p, first, 2) for p, first in firsts(coords).items()}
    for name in ("a", "b"):
        assert fleet.stop(name) == 0, tail(fleet.log(name))
