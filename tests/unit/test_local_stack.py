"""The local stack's pure parts: addresses, ports, properties files, export lines, jar cache keys."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from utils import local_stack as ls
from utils import tansu
from utils.config import PostgresSettings
from utils.errors import StackError

# --- addresses and ports ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("localhost:9092", ("localhost", 9092)),
        ("127.0.0.1", ("127.0.0.1", 5432)),
        ("[::1]:29092", ("::1", 29092)),
        ("[::1]", ("::1", 5432)),
        ("::1", ("::1", 5432)),
        ("  kafka:19092 ", ("kafka", 19092)),
    ],
)
def test_parse_host_port(addr: str, expected: tuple[str, int]) -> None:
    assert ls.parse_host_port(addr, 5432) == expected


@pytest.mark.parametrize("addr", ["", ":9092", "host:notaport", "host:0", "host:70000", "[::1", "[::1]x"])
def test_parse_host_port_rejects(addr: str) -> None:
    with pytest.raises(StackError):
        ls.parse_host_port(addr, 9092)


def test_parse_bootstrap_accepts_lists_and_protocol_prefixes() -> None:
    assert ls.parse_bootstrap("PLAINTEXT://a:1, b ,c:3,") == [("a", 1), ("b", 9092), ("c", 3)]


def test_parse_bootstrap_rejects_empty() -> None:
    with pytest.raises(StackError, match="KAFKA_BOOTSTRAP_SERVERS"):
        ls.parse_bootstrap(" , ")


def test_ports_default_to_compose() -> None:
    assert ls.ports_from_env({}) == {"zookeeper": 2181, "kafka": 9092, "postgres": 5432}


def test_ports_from_env_override() -> None:
    env = {"TXMON_STACK_ZK_PORT": "22181", "TXMON_STACK_KAFKA_PORT": "29092", "TXMON_STACK_PG_PORT": " "}
    assert ls.ports_from_env(env) == {"zookeeper": 22181, "kafka": 29092, "postgres": 5432}


def test_ports_from_env_names_the_bad_variable() -> None:
    with pytest.raises(StackError, match="TXMON_STACK_KAFKA_PORT"):
        ls.ports_from_env({"TXMON_STACK_KAFKA_PORT": "kafka"})
    with pytest.raises(StackError, match="share a port"):
        ls.ports_from_env({"TXMON_STACK_PG_PORT": "9092"})


def test_cache_and_state_dir(tmp_path: Path) -> None:
    assert ls.cache_dir({"TXMON_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert ls.default_state_dir({"TXMON_CACHE_DIR": str(tmp_path)}) == tmp_path / "stack"
    assert ls.cache_dir({}) == Path.home() / ".cache" / "txmon"


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
    text = ls.render_properties({"a": "C:\\data", "b": "x\ny", "c": 3})
    assert text.startswith("#")
    assert _parse_properties(text) == {"a": "C:\\data", "b": "x\ny", "c": "3"}


def test_kafka_properties_single_broker_zookeeper_mode(tmp_path: Path) -> None:
    props = _parse_properties(ls.render_properties(ls.kafka_properties(tmp_path / "logs", 29092, 22181)))
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
    props = _parse_properties(ls.render_properties(ls.zookeeper_properties(tmp_path, 22181)))
    assert props["clientPort"] == "22181"
    assert props["dataDir"] == str(tmp_path)
    assert props["admin.enableServer"] == "false"  # it would take port 8080
    assert {"ruok", "dump"} <= set(props["4lw.commands.whitelist"].split(","))


# --- export lines -------------------------------------------------------------------------------


def test_export_lines_quote_for_the_shell() -> None:
    values = {"A": "plain", "B": "", "C": 'it\'s $HOME `x` "q" ; rm -rf /', "D": "two words"}
    text = ls.export_lines(values)
    assert text.splitlines()[0] == "export A=plain"
    assert text.splitlines()[1] == "export B=''"
    script = text + 'printf "%s\\0" "$A" "$B" "$C" "$D"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:4] == list(values.values())


def test_export_lines_reject_bad_names() -> None:
    with pytest.raises(ValueError):
        ls.export_lines({"A-B": "x"})


def test_stack_env_exports_exactly_the_pipeline_variables() -> None:
    env = ls.StackEnv("127.0.0.1:29092", "127.0.0.1", 25432, "transactions", "app", "pw1", "owner", "pw2")
    assert tuple(env.as_environ()) == ls.ENV_KEYS
    assert env.as_environ()["POSTGRES_PORT"] == "25432"
    assert "pw1" not in repr(env) and "pw2" not in repr(env)
    pg = env.postgres_settings()
    assert "password='pw2'" in pg.dsn(migration=True)
    assert "user='app'" in pg.dsn()


def test_env_passes_an_external_postgres_through(tmp_path: Path) -> None:
    external = PostgresSettings(host="db", port=6543, user="u", password="p")
    stack = ls.LocalStack(tmp_path, existing_kafka="k:1", existing_postgres=external)
    stack._write_state({"kafka": "external", "postgres": "external", "zookeeper": "unused"})
    env = stack.env()
    assert env.kafka_bootstrap_servers == "k:1"
    assert (env.postgres_host, env.postgres_port, env.postgres_user, env.postgres_password) == (
        "db",
        6543,
        "u",
        "p",
    )
    assert not stack.is_local("kafka")
    assert not (tmp_path / "secrets.json").exists()  # nothing generated for a database we do not run


def test_env_of_a_local_stack_generates_passwords_once(tmp_path: Path) -> None:
    stack = ls.LocalStack(tmp_path, kafka_port=29092, pg_port=25432)
    first = stack.env()
    assert first.kafka_bootstrap_servers == "127.0.0.1:29092"
    assert (first.postgres_user, first.postgres_migration_user) == ("txmon_app", "txmon_owner")
    assert len({first.postgres_password, first.postgres_migration_password, stack.superuser_password()}) == 3
    assert ls.LocalStack(tmp_path).env().postgres_password == first.postgres_password
    mode = (tmp_path / "secrets.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_cli_env_without_a_stack_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ls.main(["env", "--state-dir", str(tmp_path / "none")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "stack-up" in captured.err


# --- processes ------------------------------------------------------------------------------------


def test_stale_and_foreign_pidfiles_count_as_not_running(tmp_path: Path) -> None:
    stack = ls.LocalStack(tmp_path)
    (tmp_path / "run").mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "run" / "kafka.pid").write_text(f"{dead.pid}\n")
    assert stack.pid("kafka") is None
    # A live process that is not our broker (PID reuse) must not be mistaken for it.
    (tmp_path / "run" / "zookeeper.pid").write_text(f"{os.getpid()}\n")
    assert stack.pid("zookeeper") is None
    (tmp_path / "run" / "zookeeper.pid").write_text("garbage")
    assert stack.pid("zookeeper") is None
    assert not stack.is_up("kafka")
    stack.down()  # stale pidfiles: nothing to stop, and they are cleaned up
    assert not (tmp_path / "run" / "kafka.pid").exists()


def test_unknown_component_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="unknown component"):
        ls.LocalStack(tmp_path).is_up("redis")


def test_ports_must_differ(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="different ports"):
        ls.LocalStack(tmp_path, zk_port=1, kafka_port=1, pg_port=2)


def test_tail_text_returns_only_this_runs_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old run\n" + "".join(f"line {i}\n" for i in range(50)))
    tail = ls.tail_text(log, lines=3, start=len("old run\n"))
    assert tail.splitlines() == ["    line 47", "    line 48", "    line 49"]
    assert "no log" in ls.tail_text(tmp_path / "missing.log")


# --- Kafka's jars ---------------------------------------------------------------------------------


def test_the_pom_pins_kafka_3_9_for_zookeeper_mode() -> None:
    assert ls.pom_kafka_version(ls.KAFKA_POM.read_text()) == "3.9.2"
    with pytest.raises(StackError, match=r"kafka\.version"):
        ls.pom_kafka_version("<project/>")


def test_jar_cache_is_keyed_by_the_pom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project><properties><kafka.version>9.9.9</kafka.version></properties></project>")
    lib = tmp_path / "cache" / "kafka-9.9.9" / "lib"
    lib.mkdir(parents=True)
    (lib / "kafka_2.13-9.9.9.jar").touch()
    stamp = lib.parent / "pom.sha256"
    stamp.write_text(ls.pom_digest(pom.read_bytes()) + "\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no mvn: a hit must not need it
    environ = {"TXMON_CACHE_DIR": str(tmp_path / "cache")}
    assert ls.kafka_lib_dir(pom, environ=environ) == lib
    # A changed pom (another version, another dependency) misses the cache and needs Maven.
    pom.write_text(pom.read_text() + "<!-- changed -->")
    with pytest.raises(StackError, match="apt-get install maven"):
        ls.kafka_lib_dir(pom, environ=environ)


def test_kafka_lib_dir_override(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="TXMON_KAFKA_LIB_DIR"):
        ls.kafka_lib_dir(environ={"TXMON_KAFKA_LIB_DIR": str(tmp_path)})
    (tmp_path / "kafka_2.13-3.9.2.jar").touch()
    (tmp_path / "zookeeper-3.8.4.jar").touch()
    assert ls.kafka_lib_dir(environ={"TXMON_KAFKA_LIB_DIR": str(tmp_path)}) == tmp_path


def test_stack_json_round_trip(tmp_path: Path) -> None:
    stack = ls.LocalStack(tmp_path)
    assert stack.is_local("postgres")  # before any `up`: this stack would run everything
    stack._write_state({"kafka": "external", "zookeeper": "unused", "postgres": "local"})
    assert json.loads((tmp_path / "stack.json").read_text())["kafka"] == "external"
    assert [s.mode for s in stack.status()] == ["unused", "external", "local"]


def test_topics_in_log_dir(tmp_path: Path) -> None:
    for name in ("transactions-0", "transactions-5", "transactions.dlq-0", "__consumer_offsets-49",
                 "old-0.0b1c2d3e-delete", "moving-1.abc-future"):  # fmt: skip
        (tmp_path / name).mkdir()
    (tmp_path / "meta.properties").touch()
    assert ls.topics_in_log_dir(tmp_path) == {"transactions", "transactions.dlq", "__consumer_offsets"}
    assert ls.topics_in_log_dir(tmp_path / "missing") == set()


def test_an_unknown_broker_impl_fails_before_anything_starts(tmp_path: Path) -> None:
    stack = ls.LocalStack(tmp_path / "state", environ={"TXMON_KAFKA_IMPL": "redpanda"})
    with pytest.raises(StackError, match="TXMON_KAFKA_IMPL"):
        stack.up()
    assert not (tmp_path / "state" / "run").exists()


# ---- the tansu fallback broker -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "impl"), [("", "auto"), ("AUTO", "auto"), (" apache ", "apache"), ("tansu", "tansu")]
)
def test_kafka_impl_setting(raw: str, impl: str) -> None:
    assert tansu.kafka_impl({"TXMON_KAFKA_IMPL": raw}) == impl
    assert tansu.kafka_impl({}) == "auto"


def test_kafka_impl_names_the_choices() -> None:
    with pytest.raises(StackError, match=r"TXMON_KAFKA_IMPL='redpanda'.*auto, apache, tansu"):
        tansu.kafka_impl({"TXMON_KAFKA_IMPL": "redpanda"})


def test_tansu_listens_and_advertises_the_stack_address() -> None:
    argv = tansu.broker_argv(Path("/opt/tansu"), "127.0.0.1", 19092)
    assert argv[:2] == ["/opt/tansu", "broker"]
    assert argv[argv.index("--listener-url") + 1] == "tcp://127.0.0.1:19092"
    assert argv[argv.index("--advertised-listener-url") + 1] == "tcp://127.0.0.1:19092"
    assert argv[argv.index("--storage-engine") + 1] == "memory://tansu/"


def test_tansu_bin_override_must_be_executable(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="TXMON_TANSU_BIN"):
        tansu.binary(tmp_path, {"TXMON_TANSU_BIN": str(tmp_path / "missing")})
    exe = tmp_path / "tansu"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert tansu.binary(tmp_path, {"TXMON_TANSU_BIN": str(exe)}) == exe


def test_without_maven_auto_falls_back_to_tansu_and_apache_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No mvn on PATH and an empty cache: Kafka's jars cannot be had here.
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    environ = {"TXMON_CACHE_DIR": str(tmp_path / "cache")}
    stack = ls.LocalStack(tmp_path / "state", environ=environ)
    assert stack._choose_kafka_impl("auto", None) == "tansu"
    assert stack._choose_kafka_impl("apache", None) == "apache"
    with pytest.raises(ls.MavenUnavailable, match="mvn not found"):
        ls.kafka_lib_dir(environ=environ)
