"""The orchestrator without services: the environment it hands out, its state file, pidfiles."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from stack import orchestrator as orch
from stack.__main__ import main as stack_cli
from utils.config import PostgresSettings
from utils.errors import StackError

# --- export lines -------------------------------------------------------------------------------


def test_export_lines_quote_for_the_shell() -> None:
    values = {"A": "plain", "B": "", "C": 'it\'s $HOME `x` "q" ; rm -rf /', "D": "two words"}
    text = orch.export_lines(values)
    assert text.splitlines()[0] == "export A=plain"
    assert text.splitlines()[1] == "export B=''"
    script = text + 'printf "%s\\0" "$A" "$B" "$C" "$D"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:4] == list(values.values())


def test_export_lines_reject_bad_names() -> None:
    with pytest.raises(ValueError):
        orch.export_lines({"A-B": "x"})


def test_stack_env_exports_exactly_the_pipeline_variables() -> None:
    env = orch.StackEnv("127.0.0.1:29092", "127.0.0.1", 25432, "transactions", "app", "pw1", "owner", "pw2")
    assert tuple(env.as_environ()) == orch.ENV_KEYS
    assert env.as_environ()["POSTGRES_PORT"] == "25432"
    assert "pw1" not in repr(env) and "pw2" not in repr(env)
    pg = env.postgres_settings()
    assert "password='pw2'" in pg.dsn(migration=True)
    assert "user='app'" in pg.dsn()


def test_env_passes_an_external_postgres_through(tmp_path: Path) -> None:
    external = PostgresSettings(host="db", port=6543, user="u", password="p")
    stack = orch.LocalStack(tmp_path, existing_kafka="k:1", existing_postgres=external)
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


def test_env_of_a_native_stack_generates_passwords_once(tmp_path: Path) -> None:
    stack = orch.LocalStack(tmp_path, kafka_port=29092, pg_port=25432)
    first = stack.env()
    assert first.kafka_bootstrap_servers == "127.0.0.1:29092"
    assert (first.postgres_user, first.postgres_migration_user) == ("txmon_app", "txmon_owner")
    assert len({first.postgres_password, first.postgres_migration_password, stack.superuser_password()}) == 3
    assert orch.LocalStack(tmp_path).env().postgres_password == first.postgres_password
    mode = (tmp_path / "secrets.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_cli_env_without_a_stack_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert stack_cli(["env", "--state-dir", str(tmp_path / "none")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "stack-up" in captured.err


# --- processes ------------------------------------------------------------------------------------


def test_stale_and_foreign_pidfiles_count_as_not_running(tmp_path: Path) -> None:
    stack = orch.LocalStack(tmp_path)
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
        orch.LocalStack(tmp_path).is_up("redis")


def test_ports_must_differ(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="different ports"):
        orch.LocalStack(tmp_path, zk_port=1, kafka_port=1, pg_port=2)


def test_stack_json_round_trip(tmp_path: Path) -> None:
    stack = orch.LocalStack(tmp_path)
    assert stack.is_local("postgres")  # before any `up`: this stack would run everything
    stack._write_state({"kafka": "external", "zookeeper": "unused", "postgres": "local"})
    assert json.loads((tmp_path / "stack.json").read_text())["kafka"] == "external"
    assert [s.mode for s in stack.status()] == ["unused", "external", "local"]


def test_an_unknown_broker_impl_fails_before_anything_starts(tmp_path: Path) -> None:
    stack = orch.LocalStack(tmp_path / "state", environ={"TXMON_KAFKA_IMPL": "redpanda"})
    with pytest.raises(StackError, match="TXMON_KAFKA_IMPL"):
        stack.up()
    assert not (tmp_path / "state" / "run").exists()
