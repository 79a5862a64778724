"""Apache Kafka's side of the stack, without starting it: properties files, the pom, the jar cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import apache_kafka as ak
from utils.errors import StackError

# --- properties files ---------------------------------------------------------------------------


def _parse_properties(text: str) -> dict[str, str]:
    """Enough of java.util.Properties to read back what render_properties writes."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value.replace("\\n", "\n").replace("\\\\", "\\")
    return out


def test_render_properties_escapes_backslashes_and_newlines() -> None:
    text = ak.render_properties({"a": "C:\\data", "b": "x\ny", "c": 3})
    assert text.startswith("#")
    assert _parse_properties(text) == {"a": "C:\\data", "b": "x\ny", "c": "3"}


def test_kafka_properties_single_broker_zookeeper_mode(tmp_path: Path) -> None:
    props = _parse_properties(ak.render_properties(ak.kafka_properties(tmp_path / "logs", 29092, 22181)))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["zookeeper.connect"] == "127.0.0.1:22181"
    assert props["log.dirs"] == str(tmp_path / "logs")
    assert props["num.partitions"] == "6"
    # One broker: internal topics cannot ask for three replicas.
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert "process.roles" not in props  # ZooKeeper mode, not KRaft


def test_zookeeper_properties(tmp_path: Path) -> None:
    props = _parse_properties(ak.render_properties(ak.zookeeper_properties(tmp_path, 22181)))
    assert props["clientPort"] == "22181"
    assert props["dataDir"] == str(tmp_path)
    assert props["admin.enableServer"] == "false"  # it would take port 8080
    assert {"ruok", "dump"} <= set(props["4lw.commands.whitelist"].split(","))


# --- Kafka's jars ---------------------------------------------------------------------------------


def test_the_pom_pins_kafka_3_9_for_zookeeper_mode() -> None:
    assert ak.pom_kafka_version(ak.KAFKA_POM.read_text()) == "3.9.2"
    with pytest.raises(StackError, match=r"kafka\.version"):
        ak.pom_kafka_version("<project/>")


def test_jar_cache_is_keyed_by_the_pom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project><properties><kafka.version>9.9.9</kafka.version></properties></project>")
    digest = ak.pom_digest(pom.read_bytes())
    lib = tmp_path / "cache" / f"kafka-9.9.9-{digest[:12]}" / "lib"
    lib.mkdir(parents=True)
    (lib / "kafka_2.13-9.9.9.jar").touch()
    (lib.parent / "pom.sha256").write_text(digest + "\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no mvn: a hit must not need it
    environ = {"TXMON_CACHE_DIR": str(tmp_path / "cache")}
    assert ak.kafka_lib_dir(pom, environ=environ) == lib
    # A changed pom (another version, another dependency) misses the cache and needs Maven;
    # the jars of the first one stay where they are (another checkout may run them).
    pom.write_text(pom.read_text() + "<!-- changed -->")
    with pytest.raises(StackError, match="apt-get install maven"):
        ak.kafka_lib_dir(pom, environ=environ)
    assert (lib / "kafka_2.13-9.9.9.jar").exists()


def test_kafka_lib_dir_override(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="TXMON_KAFKA_LIB_DIR"):
        ak.kafka_lib_dir(environ={"TXMON_KAFKA_LIB_DIR": str(tmp_path)})
    (tmp_path / "kafka_2.13-3.9.2.jar").touch()
    (tmp_path / "zookeeper-3.8.4.jar").touch()
    assert ak.kafka_lib_dir(environ={"TXMON_KAFKA_LIB_DIR": str(tmp_path)}) == tmp_path


def test_topics_in_log_dir(tmp_path: Path) -> None:
    for name in ("transactions-0", "transactions-5", "transactions.dlq-0", "__consumer_offsets-49",
                 "old-0.0b1c2d3e-delete", "moving-1.abc-future"):  # fmt: skip
        (tmp_path / name).mkdir()
    (tmp_path / "meta.properties").touch()
    assert ak.topics_in_log_dir(tmp_path) == {"transactions", "transactions.dlq", "__consumer_offsets"}
    assert ak.topics_in_log_dir(tmp_path / "missing") == set()


# --- start-up retries ---------------------------------------------------------------------------


def _broker_failing_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: list[str]) -> list[str]:
    """An ApacheKafka whose Daemon.start fails with these log texts, then succeeds; the attempts."""
    rt = ak.Runtime(state_dir=tmp_path, environ={})
    broker = ak.ApacheKafka(rt, 9092, ak.ZooKeeper(rt, 2181))
    attempts: list[str] = []

    def start(self: ak.Daemon) -> None:
        attempts.append("start")
        if failures:
            raise StackError(f"kafka exited during start-up; last lines:\n{failures.pop(0)}")

    monkeypatch.setattr(ak.Daemon, "start", start)
    monkeypatch.setattr(ak.time, "sleep", lambda s: attempts.append(f"sleep {s:.0f}"))
    broker._start_broker()
    return attempts


def test_a_zookeeper_session_expired_during_start_up_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen on a 2-core box at load 30: `Fatal error during KafkaServer startup ...
    # KeeperException$SessionExpiredException: KeeperErrorCode = Session expired for /feature`.
    text = "org.apache.zookeeper.KeeperException$SessionExpiredException: KeeperErrorCode = Session expired"
    assert _broker_failing_with(tmp_path, monkeypatch, [text]) == ["start", "start"]


def test_a_live_registration_is_waited_out_before_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = _broker_failing_with(tmp_path, monkeypatch, ["KeeperException$NodeExistsException"])
    assert attempts[0] == "start" and attempts[1].startswith("sleep ") and attempts[2] == "start"


def test_other_start_up_failures_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StackError, match="InconsistentClusterIdException"):
        _broker_failing_with(tmp_path, monkeypatch, ["InconsistentClusterIdException"])
