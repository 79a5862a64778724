"""`python -m consumer.rulesets backtest` on what the real consumer stored from a seeded
50,000-transaction stream: the self-check reproduces every stored alert exactly (whole run and a
bounded window), a candidate that disables a rule removes exactly that rule's alerts, a recorded
version switch is honoured from its offset on, and a stored alert the rules would not raise fails
the self-check with the difference printed. This is the self-check CI runs (`make test`)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from consumer.rulesets import __main__ as cli
from consumer.rulesets import store
from consumer.rulesets.model import RuleSet
from tests.support import consume, produce, query, scalar
from utils.config import Settings, settings_to_env
from utils.database import connect

pytestmark = pytest.mark.integration

N = 50_000
DISABLED = "velocity"


@pytest.fixture
def seeded(pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    s = pipeline_settings
    produce(s, N, seed=29)
    summary = consume(s)
    assert summary.stored == N and summary.rejected == 0, summary
    for key, value in {**settings_to_env(s), "TXMON_ENV_FILE": os.devnull}.items():
        monkeypatch.setenv(key, value)
    yield s


def backtest(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    code = cli.main(["backtest", "--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def stored_by_rule(s: Settings) -> dict[str, int]:
    return dict(query(s.postgres, "SELECT alert_type, count(*) FROM alerts GROUP BY 1"))


def test_backtest_of_a_seeded_run(
    seeded: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, rules_admins: dict[str, str]
) -> None:
    s = seeded
    per_rule = stored_by_rule(s)
    assert per_rule.get(DISABLED, 0) > 0 and len(per_rule) >= 5

    code, result, err = backtest(capsys)
    assert code == 0, err
    assert result["identical"] and result["transactions"] == N and result["first_differences"] == []
    assert {r["rule"]: r["stored"] for r in result["rules"] if r["stored"]} == per_rule
    assert all(
        r["candidate"] == r["stored"] and r["added"] == r["removed"] == r["changed"] == 0
        for r in result["rules"]
    )
    # The simulator's labels are there: precision and recall come out for the rules that caught something.
    assert any(r["stored_score"]["recall"] for r in result["rules"])

    # A window in the middle, accounts started from their stored history: still exact.
    lo, hi = query(s.postgres, 'SELECT min("timestamp"), max("timestamp") FROM transactions')[0]
    since, until = lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3
    code, window, err = backtest(capsys, "--since", since.isoformat(), "--until", until.isoformat())
    assert code == 0, err
    in_window = scalar(
        s.postgres,
        'SELECT count(*) FROM transactions WHERE "timestamp" >= %s AND "timestamp" < %s',
        (since, until),
    )
    assert window["identical"] and window["transactions"] == in_window

    # A candidate without one rule: exactly that rule's alerts are removed, nothing else moves.
    shown = RuleSet.from_thresholds(s.rules)
    data = yaml.safe_load(_show(capsys))
    data["rules"][DISABLED]["enabled"] = False
    candidate = tmp_path / "no-velocity.yaml"
    candidate.write_text(yaml.safe_dump(data, sort_keys=False))
    diff = tmp_path / "diff.csv"
    code, result, err = backtest(capsys, str(candidate), "--csv", str(diff))
    assert code == 0, err
    assert not result["identical"] and shown.rules[DISABLED].enabled
    for r in result["rules"]:
        if r["rule"] == DISABLED:
            assert (r["candidate"], r["removed"], r["added"], r["changed"]) == (0, per_rule[DISABLED], 0, 0)
        else:
            assert r["candidate"] == r["stored"] and r["added"] == r["removed"] == r["changed"] == 0
    with diff.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = set(query(s.postgres, "SELECT transaction_id FROM alerts WHERE alert_type = %s", (DISABLED,)))
    assert {(r["transaction_id"],) for r in rows} == expected
    assert {(r["change"], r["rule"]) for r in rows} == {("removed", DISABLED)}
    assert all(json.loads(r["details"]) for r in rows)

    _recorded_version_switch_is_replayed(s, capsys, rules_admins)
    _an_alert_no_rule_raises_fails_the_check(s, capsys)


def _show(capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["show"]) == 0
    return capsys.readouterr().out


def _recorded_version_switch_is_replayed(
    s: Settings, capsys: pytest.CaptureFixture[str], rules_admins: dict[str, str]
) -> None:
    """The stored alerts were all raised under the environment's settings. Recording that
    partition 0 switched to a version without `velocity` at offset X (halfway through its
    velocity alerts) makes the self-check expect
    exactly partition 0's velocity alerts from X on to vanish (and fail, since they are stored)."""
    name, password = next(iter(rules_admins.items()))
    person = connect(dataclasses.replace(s.postgres, user=name, password=password))
    with contextlib.closing(person), person, person.cursor() as cur:
        environment = RuleSet.from_thresholds(s.rules)
        data = environment.document()
        data["rules"][DISABLED]["enabled"] = False
        version = store.publish(
            cur, RuleSet.from_document(data, s.rules), reason="no velocity", environment=environment
        ).version
    owner = connect(s.postgres, migration=True)
    with contextlib.closing(owner), owner, owner.cursor() as cur:
        # The switch halfway through partition 0's velocity alerts (wherever the seeded stream
        # put its bursts), so that some are raised before it and some after.
        cur.execute(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY t.kafka_offset) FROM transactions t "
            "JOIN alerts a USING (transaction_id) WHERE t.kafka_partition = 0 AND a.alert_type = %s",
            (DISABLED,),
        )
        switch = cur.fetchone()[0]
        assert switch is not None, "the seeded stream raised no velocity alert in partition 0"
        cur.execute(
            "INSERT INTO rule_set_applied (consumer_group, kafka_topic, kafka_topic_id, kafka_partition, "
            "first_offset, version) SELECT %s, %s, kafka_topic_id, 0, %s, %s FROM transactions LIMIT 1",
            (s.kafka.consumer_group, s.kafka.topic, switch, version),
        )
    vanish = set(
        query(
            s.postgres,
            "SELECT a.transaction_id FROM alerts a JOIN transactions t USING (transaction_id) "
            "WHERE a.alert_type = %s AND t.kafka_partition = 0 AND t.kafka_offset >= %s",
            (DISABLED, switch),
        )
    )
    assert vanish
    code, result, err = backtest(capsys)
    assert code == 3 and "self-check FAILED" in err
    assert result["versions"] == [version]
    removed = next(r for r in result["rules"] if r["rule"] == DISABLED)
    assert removed["removed"] == len(vanish) and removed["added"] == 0
    assert sum(r["removed"] + r["added"] + r["changed"] for r in result["rules"]) == len(vanish)
    assert all((d["change"], d["rule"]) == ("removed", DISABLED) for d in result["first_differences"])


def _an_alert_no_rule_raises_fails_the_check(s: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.closing(connect(s.postgres, migration=True)) as conn, conn, conn.cursor() as cur:
        cur.execute("DELETE FROM rule_set_applied WHERE kafka_topic = %s", (s.kafka.topic,))
        cur.execute(
            "SELECT transaction_id, account_id FROM transactions t WHERE NOT EXISTS "
            "(SELECT 1 FROM alerts a WHERE a.transaction_id = t.transaction_id) ORDER BY kafka_partition, kafka_offset LIMIT 1"
        )
        tid, account = cur.fetchone()
        cur.execute(
            "INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message, details) "
            "VALUES (%s, %s, 'high_amount', 'high', 'planted', '{}')",
            (tid, account),
        )
    code, result, err = backtest(capsys)
    assert code == 3 and f"removed high_amount {tid}" in err
    assert [(d["change"], d["transaction_id"]) for d in result["first_differences"]] == [("removed", tid)]
