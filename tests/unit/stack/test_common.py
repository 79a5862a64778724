"""The stack's shared helpers: addresses, ports, the cache and state dirs, log tails."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import common
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
    assert common.parse_host_port(addr, 5432) == expected


@pytest.mark.parametrize("addr", ["", ":9092", "host:notaport", "host:0", "host:70000", "[::1", "[::1]x"])
def test_parse_host_port_rejects(addr: str) -> None:
    with pytest.raises(StackError):
        common.parse_host_port(addr, 9092)


def test_parse_bootstrap_accepts_lists_and_protocol_prefixes() -> None:
    assert common.parse_bootstrap("PLAINTEXT://a:1, b ,c:3,") == [("a", 1), ("b", 9092), ("c", 3)]


def test_parse_bootstrap_rejects_empty() -> None:
    with pytest.raises(StackError, match="KAFKA_BOOTSTRAP_SERVERS"):
        common.parse_bootstrap(" , ")


def test_ports_default_to_compose() -> None:
    assert common.ports_from_env({}) == {"zookeeper": 2181, "kafka": 9092, "postgres": 5432}


def test_ports_from_env_override() -> None:
    env = {"TXMON_STACK_ZK_PORT": "22181", "TXMON_STACK_KAFKA_PORT": "29092", "TXMON_STACK_PG_PORT": " "}
    assert common.ports_from_env(env) == {"zookeeper": 22181, "kafka": 29092, "postgres": 5432}


def test_ports_from_env_names_the_bad_variable() -> None:
    with pytest.raises(StackError, match="TXMON_STACK_KAFKA_PORT"):
        common.ports_from_env({"TXMON_STACK_KAFKA_PORT": "kafka"})
    with pytest.raises(StackError, match="share a port"):
        common.ports_from_env({"TXMON_STACK_PG_PORT": "9092"})


def test_cache_and_state_dir(tmp_path: Path) -> None:
    assert common.cache_dir({"TXMON_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert common.default_state_dir({"TXMON_CACHE_DIR": str(tmp_path)}) == tmp_path / "stack"
    assert common.cache_dir({}) == Path.home() / ".cache" / "txmon"


def test_tail_text_returns_only_this_runs_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old run\n" + "".join(f"line {i}\n" for i in range(50)))
    tail = common.tail_text(log, lines=3, start=len("old run\n"))
    assert tail.splitlines() == ["    line 47", "    line 48", "    line 49"]
    assert "no log" in common.tail_text(tmp_path / "missing.log")
