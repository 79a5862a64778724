"""Loading a bank's own history (producer/replay.py, `--from FILE --mapping MAP`) through real
Kafka into PostgreSQL: every mappable row stored once with record time = event time, the rows
that cannot be mapped reported by line, the labels kept, and the rules run on it."""

from __future__ import annotations

from pathlib import Path

from producer.replay import run_replay
from producer.transaction_producer import main as producer_main
from tests.support import consume, query, scalar
from utils.config import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CSV, MAPPING = EXAMPLES / "bank-history.csv", EXAMPLES / "bank-history.mapping.json"


def test_the_example_history_goes_through_the_pipeline(pipeline_settings: Settings) -> None:
    s = pipeline_settings
    summary = run_replay(s, CSV, MAPPING, progress_seconds=0.01)
    assert (summary.rows, summary.mapped, summary.sent, summary.acked) == (25, 22, 22, 22)
    assert [(p.line, p.reason) for p in summary.problems] == [
        (24, "bad_timestamp"),
        (25, "bad_amount"),
        (26, "missing_field"),
    ]
    assert summary.labelled == {"account_takeover": 3, "mule_account": 4}
    processed = consume(s)
    assert processed.stored == 22 and processed.rejected == 0  # months old, and still valid
    # Record time = event time: the Kafka timestamp of each row is its own event time.
    in_sync = 'SELECT count(*) FROM transactions WHERE kafka_timestamp_ms = (extract(epoch FROM "timestamp") * 1000)::bigint'
    assert scalar(s.postgres, in_sync) == 22
    rows = dict(query(s.postgres, "SELECT transaction_id, transaction_type FROM transactions"))
    assert (rows["R0005"], rows["R0007"], rows["R0022"]) == ("deposit", "transfer", "refund")
    caught = set(
        query(
            s.postgres,
            "SELECT DISTINCT a.alert_type, t.simulated_incident FROM alerts a JOIN transactions t "
            "USING (transaction_id) WHERE t.simulated_incident IS NOT NULL",
        )
    )
    assert ("pass_through", "MULE-1") in caught and ("high_risk_card_burst", "ATO-1") in caught
    # The salary (a credit of 3,150 among small debits) raised nothing.
    assert not query(s.postgres, "SELECT 1 FROM alerts WHERE transaction_id = 'R0005'")
    # Loading the same file again stores nothing twice.
    again = run_replay(s, CSV, MAPPING)
    assert again.acked == 22
    consume(s)
    assert scalar(s.postgres, "SELECT count(*) FROM transactions") == 22


def test_the_command_line_dry_run_maps_and_sends_nothing(pipeline_settings: Settings, capsys: object) -> None:
    s = pipeline_settings
    code = producer_main(
        ["--from", str(CSV), "--mapping", str(MAPPING), "--dry-run", "--topic", s.kafka.topic,
         "--bootstrap-servers", s.kafka.bootstrap_servers]
    )  # fmt: skip
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert code == 0 and "25 rows, 22 mapped, 3 not sent" in out and "0 sent" in out
    assert producer_main(["--from", str(CSV)]) == 2  # no mapping
