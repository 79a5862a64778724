"""Broker faults on a three-broker cluster, in the style of Kafka's own replication_test: while
the real producer sends (acks=all, idempotent) and two real consumers store, brokers bounce five
times: the leader of most of the topic's partitions is SIGKILLed mid-stream and started again,
twice, then every broker in turn is stopped with SIGTERM (controlled shutdown) and started again
(a rolling restart). Each bounce waits for every replica to be back in sync before the next one,
as an operator's rolling restart does; with replication factor 3 and min.insync.replicas 2 no
bounce should lose or block an acknowledged write.

Then, as in tests/integration/test_faults.py (tests/fleet.check_end_state):
* `transactions` holds every valid message in the topic exactly once, at its coordinates, and the
  alerts are exactly a clean run's (the consumer's pure core over the topic, tests/model.py);
* every bad message sent during the bounces is rejected and dead-lettered (the DLQ topic is
  replicated too, and its writes cross the same failovers);
* nothing the producer reported delivered is missing: its acknowledged count is in Kafka and
  stored, and without failures the topic holds exactly the first `sent` generated transactions.

The consumers' longest stall is measured from the database: per partition, the longest time
without a new stored row while the producer was sending (the producer offers every partition ~50
rows a second, so a gap is a stall of the pipeline for that partition, end to end: the leader
election, the producer's wait for the new leader and the consumers' refetch). It is reported per bounce in the run's summary (tests/cluster/conftest.py),
and only a generous bound is asserted.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from producer.generator import DEFAULT_START
from stack.orchestrator import LocalStack
from tests.cluster.conftest import FIGURES
from tests.fleet import EVICTING, Consumers, bad_message, check_end_state, send, tail, wait_processed
from tests.model import read_topic
from tests.progress import PRODUCER_SUMMARY, ROWS_PER_PARTITION, ProgressMonitor
from tests.support import REPO, child_env, generated, query
from utils.config import Settings
from utils.kafka_cleanup import admin_client, describe_topic

COUNT = 90_000  # the producer's budget: more than it sends before the bounces are over (~50k)
RATE = 300  # transactions/s offered: ~50 per partition per second
MAX_POLL = 500
BAD = 200  # bad messages, sent during the bounces
DOWN_S = 3.0  # how long a killed broker stays down before it is started again
# A stall beyond this is a failure, not a figure: one leader election takes the dead broker's
# ZooKeeper session (6 s) plus a metadata refresh; 60 s would mean a consumer or producer wedged.
STALL_BOUND_S = 60.0


def _leaders(s: Settings) -> dict[int, int]:
    """{partition: leader broker id} of the pipeline's topic."""
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        return {p.partition: p.leader for p in describe_topic(admin, s.kafka.topic)}


def _busiest_leader(s: Settings) -> int:
    """The broker leading most of the topic's partitions (the lowest id on a tie)."""
    counts: dict[int, int] = {}
    for leader in _leaders(s).values():
        if leader >= 0:
            counts[leader] = counts.get(leader, 0) + 1
    return min(counts, key=lambda b: (-counts[b], b))


def test_leader_kills_and_a_rolling_restart_lose_and_double_nothing(
    test_stack: LocalStack,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
) -> None:
    seed = 2323
    s = settings_factory(max_poll_records=MAX_POLL, **EVICTING)
    cluster = test_stack.kafka_cluster
    good = generated(s, COUNT, seed)
    rng = random.Random(seed)
    bad = [bad_message(rng, t, f"bad-{seed}-{i}") for i, t in enumerate(rng.sample(good[:20_000], BAD))]

    fleet = Consumers(s, tmp_path, children)
    fleet.start("a")
    fleet.start("b")
    plog = tmp_path / "producer.log"
    with open(plog, "wb") as out:
        producer = subprocess.Popen(
            [
                sys.executable, str(REPO / "producer" / "transaction_producer.py"),
                "--count", str(COUNT), "--seed", str(seed), "--clock", "simulated", "--rate", str(RATE),
                "--start", DEFAULT_START.isoformat(),  # the stream generated() expects
            ],
            env=child_env(s), stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    children.append(producer)
    monitor = ProgressMonitor(lambda: {int(p): int(n) for p, n in query(s.postgres, ROWS_PER_PARTITION)})
    monitor.start()
    wait_processed(s, 3_000, timeout=120)  # both consumers joined and storing
    bad_sender = send(s, bad, rate=BAD / 60)  # through the bounces, into the same partitions

    bounces: list[dict[str, object]] = []

    def bounce(broker: int, how: str) -> None:
        assert producer.poll() is None, (
            f"the producer ended before bounce {len(bounces) + 1}:\n{tail(plog.read_text())}"
        )
        leading = sorted(p for p, b in _leaders(s).items() if b == broker)
        started = time.monotonic()
        test_stack.stop_broker(broker, kill=how == "SIGKILL")
        if how == "SIGKILL":
            time.sleep(DOWN_S)
        test_stack.start_broker(broker)
        back = time.monotonic()
        cluster.wait_ready(in_sync=True, timeout_s=180)
        bounces.append(
            {"broker": broker, "how": how, "led": leading, "t0": started, "down_s": back - started,
             "in_sync_s": time.monotonic() - back}
        )  # fmt: skip
        time.sleep(2.0)  # some traffic between bounces

    first = time.monotonic()
    for _ in range(2):
        bounce(_busiest_leader(s), "SIGKILL")
    for broker in range(len(cluster.members)):
        bounce(broker, "SIGTERM")
    last = time.monotonic()
    time.sleep(3.0)  # the last bounce's effects on the stream, measured too

    # The producer is still sending (the bounces were mid-stream); stop it as a user would.
    assert producer.poll() is None, (
        f"the producer ended before the bounces were over:\n{tail(plog.read_text())}"
    )
    producer.send_signal(signal.SIGTERM)
    rc = producer.wait(120)
    stream_end = time.monotonic()
    text = plog.read_text(errors="replace")
    m = PRODUCER_SUMMARY.findall(text)
    assert m, f"no producer summary (exit {rc}):\n{tail(text)}"
    sent, acked, failed, unconfirmed = map(int, m[-1])
    coords = bad_sender.finish(timeout=240)

    records = read_topic(s, s.kafka.topic)
    wait_processed(s, len(records), timeout=240)
    time.sleep(1.0)  # the last batch's DLQ copies and offsets
    monitor.stopped.set()
    monitor.join(10)
    for name in ("a", "b"):
        assert fleet.stop(name) == 0, tail(fleet.log(name))

    exp = check_end_state(s, records, evicting=True)  # exactly once, a clean run's alerts, DLQ
    assert set(exp.bad) == set(coords)
    ids = [t["transaction_id"] for t in good]
    in_kafka = set(exp.good)
    assert in_kafka <= set(ids[:sent]), "the topic holds transactions the producer never sent"
    assert len(in_kafka) >= acked, f"acked {acked}, but only {len(in_kafka)} are in Kafka and stored"
    assert rc == 0 and failed == 0 and unconfirmed == 0 and acked == sent, (
        f"with two of three replicas in sync no send should fail: exit {rc} sent={sent} acked={acked} "
        f"failed={failed} unconfirmed={unconfirmed}\n{tail(text)}"
    )
    assert in_kafka == set(ids[:sent]), (
        f"{len(set(ids[:sent]) - in_kafka)} acknowledged messages are not stored"
    )

    # The figures: each bounce's worst per-partition stall, from its stop until the next bounce.
    lines = []
    ends = [float(b["t0"]) for b in bounces[1:]] + [last + 3.0]  # type: ignore[arg-type]
    for i, (b, end) in enumerate(zip(bounces, ends, strict=True), 1):
        stall, part = monitor.longest_stall(float(b["t0"]), end)  # type: ignore[arg-type]
        lines.append(
            f"bounce {i}: {b['how']} broker {b['broker']} (led partitions {b['led']}): down+restart "
            f"{b['down_s']:.1f}s, replicas in sync {b['in_sync_s']:.1f}s after; longest stall "
            f"{stall:.1f}s (partition {part})"
        )
    overall, part = monitor.longest_stall(first, stream_end)
    lines.append(
        f"cluster faults: {len(bounces)} bounces in {last - first:.0f}s; producer sent={sent} acked={acked}; "
        f"stored {len(in_kafka)}; {len(exp.bad)} bad dead-lettered; {len(exp.alerts)} alerts as a clean run; "
        f"consumers' longest stall {overall:.1f}s (partition {part})"
    )
    FIGURES.extend(lines)  # printed in the run's summary (tests/cluster/conftest.py)
    print("\n".join(lines))
    assert len(bounces) == 5
    assert overall < STALL_BOUND_S, f"a partition stalled {overall:.1f}s:\n" + "\n".join(lines)
