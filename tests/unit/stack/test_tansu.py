"""The tansu fallback broker: its command line, its binary, when the stack chooses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import tansu
from stack.apache_kafka import MavenUnavailable, kafka_lib_dir
from stack.orchestrator import LocalStack, wanted_kafka_impl
from utils.errors import StackError

# ---- the tansu fallback broker -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "impl"), [("", "auto"), ("AUTO", "auto"), (" apache ", "apache"), ("tansu", "tansu")]
)
def test_kafka_impl_setting(raw: str, impl: str) -> None:
    assert wanted_kafka_impl({"TXMON_KAFKA_IMPL": raw}) == impl
    assert wanted_kafka_impl({}) == "auto"


def test_kafka_impl_names_the_choices() -> None:
    with pytest.raises(StackError, match=r"TXMON_KAFKA_IMPL='redpanda'.*auto, apache, tansu"):
        wanted_kafka_impl({"TXMON_KAFKA_IMPL": "redpanda"})


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
    stack = LocalStack(tmp_path / "state", environ=environ)
    assert stack._choose_kafka_impl("auto", None) == "tansu"
    assert stack._choose_kafka_impl("apache", None) == "apache"
    with pytest.raises(MavenUnavailable, match="mvn not found"):
        kafka_lib_dir(environ=environ)
