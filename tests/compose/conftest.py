"""The Compose stack under a real Docker engine, for tests/compose/ (`make test-compose` only).

One stack per session, started the way `make compose-up` starts it (deploy.compose) but under
its own project name, env file and free host ports, so it runs beside a user's stack or a
native one holding 5432/9092/2181/8080. The engine is started when none answers (and stopped
at the end if this session started it); base images are pulled or, where no registry
answers, built offline. Nothing here skips: an engine or a stack that cannot start fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dotenv import dotenv_values

from deploy import env_file
from deploy.compose import (
    CLUSTER_HOST_PORTS,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    HOST_PORTS,
    REPO_ROOT,
    DeployError,
    Project,
    engine_down,
    engine_started_here,
    engine_up,
    ensure_base_images,
)
from utils.config import KafkaSettings

T = TypeVar("T")

_OFFSET = int(os.environ.get("TXMON_TEST_PORT_OFFSET", "0"))
PROJECT_NAME = f"txmon-test{_OFFSET}"

# Seconds per phase, printed at the end of the run (pytest_terminal_summary below).
TIMINGS: dict[str, float] = {}
MEASUREMENTS: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.compose)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS and not MEASUREMENTS:
        return
    terminalreporter.section("Compose stack")
    for phase, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{phase:<40} {seconds:6.0f} s")
    for line in MEASUREMENTS:
        terminalreporter.write_line(line)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 1.0) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


@pytest.fixture(scope="session")
def engine() -> Iterator[None]:
    answered_before = bool(shutil.which("docker")) and (
        subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )
    started = time.monotonic()
    try:
        engine_up()
    except DeployError as exc:
        pytest.fail(f"{exc}: the Compose tests need a Docker engine", pytrace=False)
    TIMINGS["engine (and Compose plugin) ready"] = time.monotonic() - started
    try:
        yield
    finally:
        if not answered_before and engine_started_here():
            engine_down()


def env_file_for_test(directory: Path) -> Path:
    """A .env for a test project in `directory`: fresh secrets, a free host port for each
    published service, images tagged for this run."""
    env_path = directory / ".env"
    ports = {variable: str(free_port()) for variable in (*HOST_PORTS, *CLUSTER_HOST_PORTS)}
    # Images tagged for this run (layers are shared through the build cache): two checkouts
    # testing on one engine at once would otherwise overwrite each other's `:local` images and
    # each start the other's code.
    overrides = {**ports, "TXMON_IMAGE_TAG": f"test{_OFFSET}"}
    env_path.write_text(env_file.render(ENV_EXAMPLE.read_text(), host_uid=os.getuid(), overrides=overrides))
    return env_path


@contextlib.contextmanager
def running_project(
    name: str,
    directory: Path,
    *,
    files: tuple[Path, ...] = (COMPOSE_FILE,),
    services: tuple[str, ...] = (),
    label: str = "",
) -> Iterator[Project]:
    """A project built, started (`services` and what they depend on; all when empty) and healthy,
    then taken down with its volumes. Its phases' seconds go to TIMINGS, prefixed by `label`."""
    env_path = env_file_for_test(directory)
    # The env file alone decides: a variable of the developer's shell (or of CI) with the same
    # name as one in .env.example would otherwise win over it.
    documented = set(dotenv_values(ENV_EXAMPLE))
    environ = {k: v for k, v in os.environ.items() if k not in documented and k != "COMPOSE_PROJECT_NAME"}
    stack = Project(name, env_path, environ, files=files)
    # Leftovers of an interrupted earlier run of this project (same name) would be reused.
    stack.down(volumes=True)
    try:
        images = ensure_base_images()
        TIMINGS[f"{label}base images (pulled or built offline)"] = images.pop("total")
        TIMINGS.update({f"  {image}": seconds for image, seconds in images.items()})
        # Every image, even for a subset of the services: `up` would build only missing ones and
        # start an older build of this tag. The build cache makes the next project's build quick.
        TIMINGS[f"{label}docker compose build"] = stack.build()
        TIMINGS[f"{label}docker compose up until healthy"] = stack.up(*services)
        # The transactions DB takes TLS logins only: host clients check it against this CA.
        stack.export_ca()
    except (DeployError, subprocess.TimeoutExpired) as exc:
        stack.down(volumes=True)
        pytest.fail(f"the Compose stack {name} did not come up: {exc}", pytrace=False)
    try:
        yield stack
    finally:
        started = time.monotonic()
        stack.down(volumes=True)
        TIMINGS[f"{label}docker compose down"] = time.monotonic() - started


@pytest.fixture(scope="session")
def project(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The running stack: built, started, every service healthy."""
    with running_project(PROJECT_NAME, tmp_path_factory.mktemp("compose")) as stack:
        yield stack


@pytest.fixture(scope="session")
def variables(project: Project) -> dict[str, str]:
    return project.variables()


def psql_client() -> str:
    client = shutil.which("psql")
    if client is None:
        pytest.fail("psql is not installed: apt-get install postgresql-client", pytrace=False)
    return client


def host_pg_env(project: Project, **extra: str) -> dict[str, str]:
    """libpq's environment for a host client of the stack's transactions DB: TLS, the server's
    certificate and name checked against the stack's CA (verify-full), as docs/compose.md says."""
    return {
        **os.environ,
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(project.ca_path()),
        "PGCONNECT_TIMEOUT": "10",
        **extra,
    }


@pytest.fixture(scope="session")
def psql(project: Project, variables: dict[str, str]) -> Callable[[str], list[list[str]]]:
    """Run SQL with the psql client on the published port over TLS (verify-full), as the app
    role; rows of fields."""
    client = psql_client()
    port = project.host_port("POSTGRES_HOST_PORT")

    def run(sql: str) -> list[list[str]]:
        result = subprocess.run(
            [
                client,
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--field-separator=\t",
                "--set=ON_ERROR_STOP=1",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--username={variables['POSTGRES_USER']}",
                f"--dbname={variables['POSTGRES_DB']}",
                "--file=-",
            ],
            input=sql,
            env=host_pg_env(project, PGPASSWORD=variables["POSTGRES_PASSWORD"]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"psql failed: {result.stderr}"
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    return run


def kafka_user(project: Project, user: str) -> KafkaSettings:
    """A Kafka user of `project` as a host client on the published port(s) (SASL_SSL, the CA
    copied out of the broker), as `python -m deploy kafka-env --user U` gives it to a user."""
    env = project.kafka_client_env(user)
    return KafkaSettings(
        bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        security_protocol=env["KAFKA_SECURITY_PROTOCOL"],
        sasl_mechanism=env["KAFKA_SASL_MECHANISM"],
        sasl_username=env["KAFKA_SASL_USERNAME"],
        sasl_password=env["KAFKA_SASL_PASSWORD"],
        ssl_cafile=env["KAFKA_SSL_CAFILE"],
    )


@pytest.fixture(scope="session")
def kafka_users(project: Project) -> dict[str, KafkaSettings]:
    """Each Kafka user of the stack as a host client (kafka_user)."""
    return {
        user: kafka_user(project, user) for user in ("admin", "producer", "consumer", "health", "console")
    }


@pytest.fixture(scope="session")
def kafka_client(kafka_users: dict[str, KafkaSettings]) -> dict[str, Any]:
    """kafka-python keyword arguments of the stack's admin user, for the tests' own checks."""
    return kafka_users["admin"].client_kwargs()


def host_producer_env(project: Project) -> dict[str, str]:
    """The environment of the project's producer run on the host, as a user runs it."""
    return {
        **os.environ,
        # The stack's settings (topic, accounts, ...) from its env file; the broker as the
        # host reaches it, as the producer's Kafka user (docs/security.md).
        "TXMON_ENV_FILE": str(project.env_file),
        **project.kafka_client_env("producer"),
        "LOG_FORMAT": "text",
    }


@pytest.fixture(scope="session")
def host_producer(project: Project) -> Callable[..., subprocess.Popen[str]]:
    """Start the project's producer on the host, as a user would, against the published port."""

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "producer/transaction_producer.py", *args],
            cwd=REPO_ROOT,
            env=host_producer_env(project),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    return start
