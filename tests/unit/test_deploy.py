"""deploy/: the `.env` with fresh secrets and the Compose project wrapper, without an engine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from dotenv import dotenv_values

from deploy import env_file
from deploy.__main__ import build_parser
from deploy.compose import CLUSTER_FILE, CLUSTER_HOST_PORTS, COMPOSE_FILE, ENV_EXAMPLE, HOST_PORTS, Project

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ENV_EXAMPLE.read_text()


def parse(text: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / ".env"
    path.write_text(text)
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def test_every_placeholder_gets_its_own_fresh_secret(tmp_path: Path) -> None:
    example = parse(EXAMPLE, tmp_path)
    placeholders = {k for k, v in example.items() if v.startswith(env_file.PLACEHOLDER)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY"} <= placeholders
    rendered = parse(env_file.render(EXAMPLE, host_uid=1000), tmp_path)
    assert rendered.keys() == example.keys()
    secrets = {k: rendered[k] for k in placeholders - {env_file.FERNET_VARIABLE}}
    assert len(set(secrets.values())) == len(secrets)
    for name, value in secrets.items():
        # 64 random bytes, URL-safe base64 without padding: safe in a URL and in JSON.
        assert re.fullmatch(r"[A-Za-z0-9_-]{86}", value), name
    Fernet(rendered[env_file.FERNET_VARIABLE].encode())
    assert not env_file.placeholders_left(env_file.render(EXAMPLE, host_uid=1000))
    # Everything else is the example's value.
    for name in example.keys() - placeholders - {env_file.UID_VARIABLE}:
        assert rendered[name] == example[name], name


def test_two_renderings_share_no_secret(tmp_path: Path) -> None:
    first, second = (parse(env_file.render(EXAMPLE, host_uid=1000), tmp_path) for _ in range(2))
    placeholders = env_file.placeholders_left(EXAMPLE)
    assert placeholders and all(first[name] != second[name] for name in placeholders)


@pytest.mark.parametrize(("host_uid", "expected"), [(1000, "1000"), (0, "50000")])
def test_airflow_uid_is_the_host_users_unless_root(host_uid: int, expected: str, tmp_path: Path) -> None:
    assert parse(env_file.render(EXAMPLE, host_uid=host_uid), tmp_path)["AIRFLOW_UID"] == expected


def test_overrides_replace_named_variables_and_must_exist(tmp_path: Path) -> None:
    rendered = parse(env_file.render(EXAMPLE, host_uid=0, overrides={"KAFKA_HOST_PORT": "40001"}), tmp_path)
    assert rendered["KAFKA_HOST_PORT"] == "40001"
    with pytest.raises(KeyError, match="NOT_A_VARIABLE"):
        env_file.render(EXAMPLE, host_uid=0, overrides={"NOT_A_VARIABLE": "1"})


def test_project_runs_compose_with_its_name_and_env_file(tmp_path: Path) -> None:
    env_path = tmp_path / ".env"
    env_path.write_text(
        "KAFKA_HOST_PORT=40002\nPOSTGRES_HOST_PORT=40003\nPOSTGRES_USER=app\nPOSTGRES_DB=tx\n"
    )
    project = Project("txmon-x", env_path, environ={"POSTGRES_HOST_PORT": "40004"})
    argv = project.argv("up", "--detach")
    assert argv[:2] == ["docker", "compose"] and argv[-2:] == ["up", "--detach"]
    assert argv[argv.index("--project-name") + 1] == "txmon-x"
    assert argv[argv.index("--env-file") + 1] == str(env_path)
    assert project.host_port("KAFKA_HOST_PORT") == 40002
    # The process environment wins, as it does for Compose itself.
    assert project.host_port("POSTGRES_HOST_PORT") == 40004
    assert project.host_port("AIRFLOW_HOST_PORT") == HOST_PORTS["AIRFLOW_HOST_PORT"][0]
    urls = project.urls()
    assert urls["Kafka"] == "localhost:40002"
    # TLS only, checked against the CA `make compose-up` copies out beside the env file.
    assert project.ca_path() == env_path.parent / ".compose" / "txmon-x" / "ca.pem"
    assert urls["transactions DB"] == (
        f"postgresql://app@localhost:40004/tx?sslmode=verify-full&sslrootcert={project.ca_path()}"
    )
    assert urls["Prometheus"] == f"http://localhost:{HOST_PORTS['PROMETHEUS_HOST_PORT'][0]}"


def test_a_cluster_project_merges_the_override_and_knows_every_broker(tmp_path: Path) -> None:
    env_path = tmp_path / ".env"
    env_path.write_text("KAFKA_HOST_PORT=40002\nKAFKA_2_HOST_PORT=40005\nKAFKA_3_HOST_PORT=40006\n")
    single = Project("txmon-x", env_path, environ={})
    cluster = Project("txmon-x", env_path, environ={}, files=(COMPOSE_FILE, CLUSTER_FILE))
    files = [a for i, a in enumerate(cluster.argv("up")) if i and cluster.argv("up")[i - 1] == "--file"]
    assert files == [str(COMPOSE_FILE), str(CLUSTER_FILE)] and not single.cluster and cluster.cluster
    # A host client of the cluster bootstraps from all three: it starts while any one is down.
    assert single.kafka_host_ports() == [40002]
    assert cluster.kafka_host_ports() == [40002, 40005, 40006]
    assert cluster.urls()["Kafka"] == "localhost:40002,localhost:40005,localhost:40006"
    args = build_parser().parse_args(["--cluster", "kafka-env"])
    assert args.cluster and not build_parser().parse_args(["kafka-env"]).cluster


def test_the_cluster_override_publishes_known_ports_that_clash_with_none() -> None:
    """Brokers 1 and 2's host ports are known to deploy/ (the end-to-end test moves them to free
    ports), and no two services of the merged files default to the same one: kafka-2 once took
    9093, Alertmanager's, and the cluster could not start beside a default stack's Alertmanager."""
    cluster = CLUSTER_FILE.read_text()
    published = dict(re.findall(r'"127\.0\.0\.1:\$\{([A-Z0-9_]+):-(\d+)\}:\d+"', cluster))
    assert {k: int(v) for k, v in published.items()} == {k: d for k, (d, _) in CLUSTER_HOST_PORTS.items()}
    example = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if k.endswith("_HOST_PORT")}
    defaults = {**HOST_PORTS, **CLUSTER_HOST_PORTS}
    assert example == {k: str(d) for k, (d, _) in defaults.items()}
    assert len({d for d, _ in defaults.values()}) == len(defaults), defaults


# Rooms `make test` leaves out, each run by a CI step of its own: the Compose stack needs a Docker
# engine, the three-broker fault tests take minutes of broker bounces.
OWN_STEPS = {"compose": "test-compose", "cluster": "test-cluster"}


def test_default_test_run_leaves_out_only_the_compose_and_cluster_tests() -> None:
    """`make test` must not need a Docker engine, and must not miss any other room of tests; the
    rooms it leaves out run in CI by their own make targets."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    rooms = {p.name for p in (REPO_ROOT / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert {Path(p).name for p in config["testpaths"]} == rooms - set(OWN_STEPS)
    makefile = (REPO_ROOT / "Makefile").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    for room, target in OWN_STEPS.items():
        assert re.search(rf"^{target}:.*\n\t.*pytest tests/{room}\b", makefile, re.M), target
        assert re.search(rf"^make {target}\b", ci, re.M), f".ci/run does not run make {target}"


def test_every_published_port_is_known_to_deploy() -> None:
    """The end-to-end test moves each of these to a free port, and `make compose-up` prints them:
    a port docker-compose.yml publishes that deploy/ does not know would stay at its default."""
    # ZooKeeper's port is published by the override only (docs/security.md).
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    compose += (REPO_ROOT / "docker-compose.zookeeper-port.yml").read_text()
    published = set(re.findall(r'"127\.0\.0\.1:\$\{([A-Z_]+):-\d+\}:\d+"', compose))
    assert published == set(HOST_PORTS)
    for variable, (default, _) in HOST_PORTS.items():
        assert f"${{{variable}:-{default}}}" in compose, variable


# --- Refusing public secrets (make compose-up) ----------------------------------------------------


def test_a_fresh_env_passes_the_secret_check() -> None:
    assert env_file.weak_secrets(env_file.render(EXAMPLE, host_uid=1000)) == []


def test_placeholders_and_short_secrets_are_refused_with_their_line() -> None:
    problems = env_file.weak_secrets(EXAMPLE)
    names = [re.search(r"line \d+: (\w+)", p)[1] for p in problems]  # type: ignore[index]
    assert set(names) == set(env_file.placeholders_left(EXAMPLE)) and "POSTGRES_PASSWORD" in names
    line = next(n for n, text in enumerate(EXAMPLE.splitlines(), 1) if text.startswith("POSTGRES_PASSWORD="))
    assert f"line {line}: POSTGRES_PASSWORD=change-me-app-password is the public placeholder" in "\n".join(
        problems
    )

    text = (
        "POSTGRES_PASSWORD=short-but-real\nAIRFLOW_JWT_SECRET='"
        + "x" * 32
        + "'\nKAFKA_TOPIC=tx\nEMPTY_PASSWORD=\n"
    )
    assert env_file.weak_secrets(text) == [
        "line 1: POSTGRES_PASSWORD is 14 bytes: a secret needs at least 32 "
        "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    ]
    # A change-me value under any name is refused: it is public whatever it is called.
    assert env_file.weak_secrets("SOME_TOKEN_X=change-me-please")[0].startswith(
        "line 1: SOME_TOKEN_X=change-me-please"
    )


def test_kafka_and_zookeeper_placeholders_are_refused_too() -> None:
    from stack.kafka_security import USERS, password_variable

    names = {re.search(r"line \d+: (\w+)", p)[1] for p in env_file.weak_secrets(EXAMPLE)}  # type: ignore[index]
    assert {password_variable(u) for u in USERS} | {"ZOOKEEPER_KAFKA_PASSWORD"} <= names


def test_an_older_env_gains_the_secrets_added_since(tmp_path: Path) -> None:
    """A .env written before the stack had Kafka users gets fresh ones on the next compose-up;
    what it already holds stays as it is."""
    import deploy.__main__ as deploy_main

    full = env_file.render(EXAMPLE, host_uid=1000)
    older = "\n".join(
        line
        for line in full.splitlines()
        if not line.startswith(("KAFKA_CONSUMER_PASSWORD=", "ZOOKEEPER_KAFKA"))
    )
    (tmp_path / "stack").mkdir()
    env = tmp_path / "stack" / ".env"  # parse() writes tmp_path/.env
    env.write_text(older + "\n")
    assert deploy_main.write_env_if_missing(env) is False
    after = parse(env.read_text(), tmp_path)
    before = parse(older, tmp_path)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"KAFKA_CONSUMER_PASSWORD", "ZOOKEEPER_KAFKA_PASSWORD"}
    assert all(len(after[k]) >= 64 for k in ("KAFKA_CONSUMER_PASSWORD", "ZOOKEEPER_KAFKA_PASSWORD"))
    assert env_file.added_secrets(EXAMPLE, env.read_text()) == ""
    deploy_main.refuse_public_secrets(env)


def test_compose_up_refuses_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`make compose-up` (python -m deploy up) with a .env still holding change-me values fails
    with the lines to fix, before the engine or any build is touched."""
    import deploy.__main__ as deploy_main

    touched: list[str] = []

    def engine_up() -> None:
        touched.append("engine")

    monkeypatch.setattr(deploy_main, "engine_up", engine_up)
    env = tmp_path / ".env"
    env.write_text(EXAMPLE)
    assert deploy_main.main(["--env-file", str(env), "up"]) == 1
    assert touched == []
    refused = "\n".join(r.getMessage() for r in caplog.records)
    assert "POSTGRES_PASSWORD=change-me-app-password is the public placeholder" in refused
    env.write_text(env_file.render(EXAMPLE, host_uid=1000))
    deploy_main.refuse_public_secrets(env)  # fresh secrets pass
