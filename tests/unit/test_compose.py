"""docker-compose.yml, the Dockerfiles and their scripts, checked without a Docker engine.

check-jsonschema validates the file against the Compose specification; everything the spec
cannot know (which services exist, what they publish, who waits for whom, which commands
they run) is asserted here on the loaded YAML, with `${VAR}` expanded the way Compose does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from stack import apache_kafka
from utils.config import env_fields, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
KAFKA_ENTRYPOINT = REPO_ROOT / "docker" / "kafka-entrypoint.sh"
DOCKERFILES = [
    REPO_ROOT / "Dockerfile",
    REPO_ROOT / "docker" / "kafka.Dockerfile",
    REPO_ROOT / "docker" / "airflow.Dockerfile",
    REPO_ROOT / "docker" / "prometheus.Dockerfile",
    REPO_ROOT / "docker" / "alertmanager.Dockerfile",
    REPO_ROOT / "docker" / "console.Dockerfile",
]

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
ONE_SHOT = {"kafka-tls", "kafka-init", "postgres-tls", "db-roles", "db-migrate", "airflow-init"}
SERVICES = (
    {"zookeeper", "kafka", "postgres", "airflow-postgres", "producer", "consumer", "prometheus", "console"}
    | {"alertmanager", "alert-receiver"}
    | ONE_SHOT
    | AIRFLOW_SERVICES
)

# service -> (variable, default host port, container port), as the design and docs/compose.md promise.
# ZooKeeper's only with docker-compose.zookeeper-port.yml (test_zookeeper_is_published_only_when_asked).
HOST_PORTS = {
    "kafka": ("KAFKA_HOST_PORT", 9092, 9092),
    "postgres": ("POSTGRES_HOST_PORT", 5432, 5432),
    "airflow-postgres": ("AIRFLOW_POSTGRES_HOST_PORT", 5433, 5432),
    "airflow-apiserver": ("AIRFLOW_HOST_PORT", 8080, 8080),
    "prometheus": ("PROMETHEUS_HOST_PORT", 9090, 9090),
    "console": ("CONSOLE_HOST_PORT", 8000, 8000),
    "alertmanager": ("ALERTMANAGER_HOST_PORT", 9093, 9093),
    "alert-receiver": ("ALERT_RECEIVER_HOST_PORT", 9095, 9095),
}

# The same entry points the native stack and the tests run; these files must exist.
ENTRY_POINTS = {
    "producer": (["python", "producer/transaction_producer.py"], "producer/transaction_producer.py"),
    "consumer": (["python", "consumer/transaction_processor.py"], "consumer/transaction_processor.py"),
    "kafka-init": (["python", "-m", "stack.kafka_init"], "stack/kafka_init.py"),
    "kafka-tls": (
        [
            "python",
            "-m",
            "stack.kafka_security",
            "tls",
            "--tls-dir=/var/lib/txmon/kafka-tls",
            "--ca-dir=/var/lib/txmon/kafka-ca",
            "--hostnames=kafka,kafka-2,kafka-3,localhost,127.0.0.1",
            "--owner=10001",
        ],
        "stack/kafka_security.py",
    ),
    "db-roles": (["python", "-m", "utils.roles", "provision"], "utils/roles.py"),
    "db-migrate": (["python", "-m", "utils.database", "migrate"], "utils/database.py"),
    "console": (["python", "-m", "console", "serve"], "console/__main__.py"),
}

SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN")
VARIABLE_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}")


# --- Compose's interpolation, enough of it for this file ----------------------------------------


class MissingVariable(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?msg}`, `${VAR?msg}` and `$$`."""

    def expand(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        missing = not value if op and op.startswith(":") else value is None
        if op is None:
            return value or ""
        if op.endswith("-"):
            return arg if missing else str(value)
        if missing:
            raise MissingVariable(name, arg)
        return str(value)

    return _INTERPOLATION.sub(expand, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return node


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def env_example() -> dict[str, str]:
    return {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if v is not None}


def compose_variable_names(raw: str) -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", raw))


# --- Fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(raw: str) -> dict[str, Any]:
    """The file as Compose sees it before interpolation (YAML anchors and merges resolved)."""
    return yaml.safe_load(raw)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def resolved(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services as after `cp .env.example .env`."""
    return interpolate_tree(compose, env_example())["services"]


def environment(service: Mapping[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment blocks are mappings (so anchors can merge them)"
    return env


# --- The file as a whole ----------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    # The venv's own executable, next to the interpreter running the tests.
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_are_the_designed_set(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES


def test_every_dollar_is_an_interpolation_or_escaped(compose: dict[str, Any]) -> None:
    """A bare `$name` would be interpolated by Compose too, silently, to an empty string."""
    for text in strings(compose):
        leftover = _INTERPOLATION.sub("", text)
        assert "$" not in leftover, text


def test_env_example_satisfies_every_required_variable(compose: dict[str, Any]) -> None:
    """`cp .env.example .env` is enough for Compose to interpolate the file."""
    interpolate_tree(compose, env_example())


def test_required_secrets_stop_compose_with_a_message(raw: str) -> None:
    required = {}
    for match in _INTERPOLATION.finditer(raw):
        if match.group("op") in (":?", "?"):
            required[match.group("name")] = match.group("arg")
    assert set(required) == {
        "POSTGRES_PASSWORD",
        "POSTGRES_MIGRATION_PASSWORD",
        "POSTGRES_SUPERUSER_PASSWORD",
        "POSTGRES_RETENTION_PASSWORD",
        "POSTGRES_CONSOLE_PASSWORD",
        "AIRFLOW_POSTGRES_PASSWORD",
        "AIRFLOW_ADMIN_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
        "KAFKA_BROKER_PASSWORD",
        "KAFKA_ADMIN_PASSWORD",
        "KAFKA_PRODUCER_PASSWORD",
        "KAFKA_CONSUMER_PASSWORD",
        "KAFKA_HEALTH_PASSWORD",
        "KAFKA_CONSOLE_PASSWORD",
        "ZOOKEEPER_KAFKA_PASSWORD",
    }
    for name, message in required.items():
        assert name in message and ".env" in message, f"${{{name}:?...}} should say what to set where"
    with pytest.raises(MissingVariable) as excinfo:
        interpolate(raw, {})
    assert excinfo.value.message


# --- Ports ----------------------------------------------------------------------------------------------


def test_host_ports_are_loopback_only_and_overridable(services: dict[str, Any]) -> None:
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert set(published) == set(HOST_PORTS)
    for name, (variable, default, container_port) in HOST_PORTS.items():
        (port,) = published[name]
        assert interpolate(port, {}) == f"127.0.0.1:{default}:{container_port}"
        assert interpolate(port, {variable: "40123"}) == f"127.0.0.1:40123:{container_port}"


def test_kafka_advertises_the_port_the_host_reaches_it_on(services: dict[str, Any]) -> None:
    kafka_env = interpolate_tree(
        environment(services["kafka"]), {**env_example(), "KAFKA_HOST_PORT": "40124"}
    )
    listeners = dict(item.split("://") for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners == {"INTERNAL": "kafka:29092", "EXTERNAL": "localhost:40124"}
    # Containers bootstrap from the INTERNAL listener.
    for name in ("producer", "consumer", "kafka-init", "airflow-scheduler"):
        assert environment(services[name])["KAFKA_BOOTSTRAP_SERVERS"] == listeners["INTERNAL"]


# --- Volumes and mounts ---------------------------------------------------------------------------------


def test_named_volumes_are_declared_and_postgres_data_persists(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    assert "postgres_data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    assert (
        "airflow_postgres_data:/var/lib/postgresql/data" in compose["services"]["airflow-postgres"]["volumes"]
    )


def test_bind_mount_sources_exist(compose: dict[str, Any]) -> None:
    """A missing source would be created by the engine as an empty directory, silently."""
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                path = REPO_ROOT / source
                # A file mounted over a file (Prometheus's configuration), or a directory.
                assert path.is_file() if Path(target).suffix else path.is_dir(), volume


def test_airflow_mounts_dags_plugins_data_and_the_project_package(services: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        mounts = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}
        env = environment(svc)
        assert mounts["./dags"] == "/opt/airflow/dags", name
        # Airflow's default plugins folder ($AIRFLOW_HOME/plugins in its image and the stand-in):
        # the reports route and menu (API server), the run notes (scheduler's listener).
        assert "AIRFLOW__CORE__PLUGINS_FOLDER" not in env, name
        assert "./plugins:/opt/airflow/plugins:ro" in svc["volumes"], name
        assert mounts["./airflow-data"] == env["AIRFLOW_DATA_DIR"], name
        for package in ("utils", "consumer", "producer"):
            assert mounts[f"./{package}"] == f"{env['PYTHONPATH']}/{package}", name


def test_only_init_and_api_server_see_the_admin_password_file(services: dict[str, Any]) -> None:
    with_auth = {
        name
        for name, svc in services.items()
        if any(v.startswith("airflow_auth:") for v in svc.get("volumes", []))
    }
    assert with_auth == {"airflow-init", "airflow-apiserver"}


# --- Health, order, restarts ------------------------------------------------------------------------------


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert "healthcheck" not in svc, name
            continue
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name


def test_restart_policies(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name in ONE_SHOT:
            # Dependents wait with service_completed_successfully; a failure must surface, not loop.
            assert svc["restart"] == "no", name
        elif name == "producer":
            # A finite PRODUCER_COUNT run ends with exit 0 and must not start over.
            assert svc["restart"] == "on-failure"
        else:
            assert svc["restart"] == "unless-stopped", name


def test_depends_on_waits_for_health_or_completion(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        depends_on = svc.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: the list form of depends_on waits for nothing"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec.get("condition")
            if target in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}"
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}, which has no healthcheck"
                )


def test_start_up_order(services: dict[str, Any]) -> None:
    def needs(name: str) -> set[str]:
        return set(services[name].get("depends_on", {}))

    assert needs("consumer") >= {"kafka-init", "db-migrate"}
    assert needs("producer") >= {"kafka-init"}
    assert needs("kafka-init") >= {"kafka"}
    assert needs("db-roles") >= {"postgres"}
    assert needs("db-migrate") >= {"postgres", "db-roles"}
    assert needs("kafka") >= {"zookeeper", "kafka-tls"}
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert needs(name) >= {"airflow-init", "airflow-postgres"}, name


def test_postgres_is_ready_only_over_tcp(services: dict[str, Any]) -> None:
    """During init the image's temporary server listens on the Unix socket only: a socket
    check would pass before the server db-roles and the other containers connect to is up."""
    for name in ("postgres", "airflow-postgres"):
        assert "--host=127.0.0.1" in services[name]["healthcheck"]["test"], name


def test_airflow_healthchecks_use_commands_of_the_installed_airflow(
    services: dict[str, Any], tmp_path: Path
) -> None:
    job_types = {}
    for name in ("airflow-dag-processor", "airflow-triggerer"):
        test = services[name]["healthcheck"]["test"]
        assert test[1:4] == ["airflow", "jobs", "check"], name
        job_types[name] = test[test.index("--job-type") + 1]
    assert job_types == {"airflow-dag-processor": "DagProcessorJob", "airflow-triggerer": "TriggererJob"}
    airflow = Path(sys.executable).parent / "airflow"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "false"}
    help_text = subprocess.run(
        [str(airflow), "jobs", "check", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    for job_type in job_types.values():
        assert job_type in help_text
    assert "--local" in help_text
    assert services["airflow-scheduler"]["healthcheck"]["test"][-1] == "http://localhost:8974/health"
    assert environment(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert (
        services["airflow-apiserver"]["healthcheck"]["test"][-1]
        == "http://localhost:8080/api/v2/monitor/health"
    )


# --- The pipeline's containers ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_commands_are_the_native_entry_points(services: dict[str, Any], name: str) -> None:
    command, path = ENTRY_POINTS[name]
    assert services[name]["command"] == command
    assert (REPO_ROOT / path).is_file(), f"{path} is the {name} entry point and does not exist"


def test_consumer_healthcheck_script_exists_and_reads_the_configured_file(services: dict[str, Any]) -> None:
    test = services["consumer"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "consumer/healthcheck.py"]
    assert (REPO_ROOT / test[2]).is_file()
    assert environment(services["consumer"])["CONSUMER_HEALTH_FILE"].startswith("/tmp/")


def test_consumer_is_scalable(services: dict[str, Any]) -> None:
    consumer = services["consumer"]
    assert "container_name" not in consumer
    assert "ports" not in consumer
    assert "hostname" not in consumer


@pytest.mark.parametrize("name", ["producer", "consumer"])
def test_sigterm_reaches_python(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    assert isinstance(svc["command"], list), "exec form: no shell between Docker and Python"
    assert svc["init"] is True
    assert re.fullmatch(r"\d+s", svc["stop_grace_period"])


def test_database_secrets_reach_only_the_jobs_that_log_in_with_them(services: dict[str, Any]) -> None:
    """The owner role's password goes to the jobs that set it and log in with it, nowhere else;
    the superuser's to the server and the job that creates the roles."""

    def having(variable: str) -> set[str]:
        return {name for name, svc in services.items() if variable in environment(svc)}

    assert having("POSTGRES_MIGRATION_PASSWORD") == {"db-roles", "db-migrate"}
    assert having("POSTGRES_SUPERUSER_PASSWORD") == {"db-roles"}
    # The retention role's to the job that creates it and to the scheduler, which runs the cleanup
    # task (LocalExecutor): not the API server, the dag-processor or the triggerer.
    assert having("POSTGRES_RETENTION_PASSWORD") == {"db-roles", "airflow-scheduler"}
    assert environment(services["postgres"])["POSTGRES_PASSWORD"].startswith("${POSTGRES_SUPERUSER_PASSWORD")


# --- Airflow ---------------------------------------------------------------------------------------------


def test_airflow_containers_share_one_configuration(resolved: dict[str, Any]) -> None:
    shared = [
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__CORE__AUTH_MANAGER",
        "AIRFLOW_CONN_TXDB",
        "POSTGRES_PASSWORD",
    ]
    first = environment(resolved["airflow-apiserver"])
    assert first["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert first["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert first["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    images = {resolved[name]["image"] for name in AIRFLOW_SERVICES}
    assert len(images) == 1
    for name in AIRFLOW_SERVICES:
        env = environment(resolved[name])
        assert {key: env[key] for key in shared} == {key: first[key] for key in shared}, name


def test_airflow_containers_quiet_the_warnings_native_airflow_quiets(resolved: dict[str, Any]) -> None:
    """The same PYTHONWARNINGS filters as scripts/airflow_standalone.sh (`make airflow`)."""
    script = (REPO_ROOT / "scripts" / "airflow_standalone.sh").read_text()
    match = re.search(r'^export PYTHONWARNINGS="\$\{PYTHONWARNINGS:\+\$PYTHONWARNINGS,\}(.*)"$', script, re.M)
    assert match, "scripts/airflow_standalone.sh exports PYTHONWARNINGS"
    native = match.group(1).replace("\\`", "`")
    for name in AIRFLOW_SERVICES:
        assert environment(resolved[name])["PYTHONWARNINGS"] == native, name


def test_airflow_connection_to_the_transactions_db(resolved: dict[str, Any]) -> None:
    conn = json.loads(environment(resolved["airflow-scheduler"])["AIRFLOW_CONN_TXDB"])
    example = env_example()
    assert conn == {
        "conn_type": "postgres",
        "host": "postgres",
        "port": 5432,
        "schema": example["POSTGRES_DB"],
        "login": example["POSTGRES_USER"],
        "password": example["POSTGRES_PASSWORD"],
        # The server takes TLS logins only; hooks check its certificate as our own code does.
        "extra": {"sslmode": "verify-full", "sslrootcert": "/etc/txmon/tls/ca.pem"},
    }


def test_airflow_admin_password_comes_from_env(services: dict[str, Any]) -> None:
    init_env = environment(services["airflow-init"])
    assert init_env["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    script = services["airflow-init"]["command"][-1]
    assert "airflow db migrate" in script
    assert "AIRFLOW_ADMIN_PASSWORD" in script
    assert environment(services["airflow-apiserver"])[
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
    ].startswith("/opt/airflow/auth/")


def test_airflow_init_script_is_valid_bash(services: dict[str, Any]) -> None:
    script = interpolate(services["airflow-init"]["command"][-1], {})
    result = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_airflow_init_hands_airflow_data_to_the_airflow_uid(services: dict[str, Any]) -> None:
    """./airflow-data is a bind mount with the host's owner and mode: without this the report
    and monitoring tasks (running as AIRFLOW_UID) get PermissionError on a fresh clone."""
    init = services["airflow-init"]
    assert init["user"] == "0:0"
    assert environment(init)["AIRFLOW_UID"] == "${AIRFLOW_UID:-50000}"
    script = init["command"][-1]
    chown = next(line for line in script.splitlines() if line.strip().startswith("chown -R"))
    assert '"$${AIRFLOW_UID}:0"' in chown
    mounts = {v.split(":")[0]: v.split(":")[1] for v in init["volumes"]}
    assert mounts["./airflow-data"] in chown.split()
    # Last: whatever the job wrote as root before it is handed over too.
    assert script.index(chown.strip()) > script.index("airflow db migrate")
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["user"] == "${AIRFLOW_UID:-50000}:0", name


# --- Credentials and variables ----------------------------------------------------------------------------


def test_no_literal_credentials(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert isinstance(value, str) and VARIABLE_REFERENCE.fullmatch(value), (
                    f"{name}: {key} must come from .env as ${{VAR:?...}}, not be written here"
                )
    in_urls, in_json = [], []
    for text in strings(compose):
        in_urls += re.findall(r"://[^/\s:@]+:(\$\{[^}]*\}|[^@\s/]+)@", text)
        in_json += re.findall(r'"password":\s*"([^"]*)"', text)
    # Airflow's database URL and the `txdb` connection hold one each.
    assert in_urls and in_json
    for password in in_urls + in_json:
        assert VARIABLE_REFERENCE.fullmatch(password), f"a literal password: {password}"


def test_every_compose_variable_is_documented_in_env_example(raw: str, compose: dict[str, Any]) -> None:
    documented = set(env_example()) | set(
        re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M)
    )
    used = compose_variable_names(raw)
    # Keys without a value pass a variable through from .env.
    for svc in compose["services"].values():
        used |= {key for key, value in environment(svc).items() if value is None}
    assert used - documented == set()


def test_compose_defaults_agree_with_the_code(raw: str) -> None:
    """`${POSTGRES_DB:-transactions}` must mean what utils/config.py means when it is unset."""
    fields = {field.metadata["env"]: field for _, field in env_fields()}
    # The code's empty default means "migrate as POSTGRES_USER"; the stack always separates
    # the owner from the app role, so Compose names one. The producer service's traffic is
    # realistic by default where the code's is unthrottled (the same values as .env.example).
    deliberate = {"POSTGRES_MIGRATION_USER", "PRODUCER_RATE", "PRODUCER_ACCOUNTS"}
    checked = set()
    for match in _INTERPOLATION.finditer(raw):
        name, op, default = match.group("name"), match.group("op"), match.group("arg")
        if name in deliberate - {"POSTGRES_MIGRATION_USER"} and op in (":-", "-"):
            assert default == env_example()[name], f"${{{name}:-{default}}} but .env.example says otherwise"
            checked.add(name)
        if name in fields and name not in deliberate and op in (":-", "-"):
            settings = load_settings(environ={name: default})
            group = next(g for g, f in env_fields() if f.metadata["env"] == name)
            value = getattr(getattr(settings, group) if group else settings, fields[name].name)
            assert value == fields[name].default, (
                f"${{{name}:-{default}}} but the code default is {fields[name].default!r}"
            )
            checked.add(name)
    assert {
        "POSTGRES_DB",
        "POSTGRES_USER",
        "KAFKA_TOPIC_PARTITIONS",
        "PRODUCER_RATE",
        "PRODUCER_ACCOUNTS",
    } <= checked


def test_each_image_is_built_by_one_service_and_never_pulled(compose: dict[str, Any]) -> None:
    """Two services declaring the same `build:` build the image twice; a service naming a
    project image without `pull_policy: never` makes Compose look for it in a registry."""
    builders: dict[str, list[str]] = {}
    for name, svc in compose["services"].items():
        if "build" in svc:
            builders.setdefault(svc["image"], []).append(name)
    assert builders == {
        "txmon-pipeline:${TXMON_IMAGE_TAG:-local}": ["kafka-tls"],
        "txmon-kafka:${TXMON_IMAGE_TAG:-local}": ["zookeeper"],
        "txmon-airflow:${TXMON_IMAGE_TAG:-local}": ["airflow-init"],
        "txmon-prometheus:${TXMON_IMAGE_TAG:-local}": ["prometheus"],
        "txmon-alertmanager:${TXMON_IMAGE_TAG:-local}": ["alertmanager"],
        "txmon-console:${TXMON_IMAGE_TAG:-local}": ["console"],
    }
    for name, svc in compose["services"].items():
        if svc["image"] in builders:
            assert svc.get("pull_policy") == "never", f"{name}: pull_policy: never"


def test_third_party_images_are_pinned(compose: dict[str, Any]) -> None:
    # Debian by release name: a base whose only job is `apt-get install` from that release's
    # archive (Prometheus's); a point-release tag would not pin what apt installs on it.
    pinned = re.compile(r"[\w./-]+:\d+\.\d+[\w.-]*|debian:bookworm-slim")
    for name, svc in compose["services"].items():
        if svc["image"].startswith("txmon-"):
            continue
        image = interpolate(svc["image"], {})
        assert pinned.fullmatch(image), f"{name}: {image} is not pinned to a minor version"
    for dockerfile in DOCKERFILES:
        for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", dockerfile.read_text(), re.M):
            assert pinned.fullmatch(image), f"{dockerfile.name}: {image}"


# --- Dockerfiles and scripts ------------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_sources_and_commands_exist(dockerfile: Path) -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied_to: dict[str, Path] = {}
    for keyword, args in _instructions(dockerfile):
        if keyword == "COPY" and "--from=" not in args:
            *sources, destination = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such file"
                assert source.rstrip("/") in allowed, (
                    f".dockerignore leaves {source} out of the build context"
                )
                copied_to[destination] = REPO_ROOT / source
        if keyword in ("CMD", "ENTRYPOINT"):
            for arg in json.loads(args):
                if arg.endswith((".py", ".sh")):
                    target = copied_to.get(arg, REPO_ROOT / arg)
                    assert target.is_file(), f"{dockerfile.name}: {keyword} runs {arg}, which does not exist"
    users = [args for keyword, args in _instructions(dockerfile) if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile.name} must end as a non-root user"


def test_pipeline_image_installs_only_the_pipeline_requirements() -> None:
    instructions = _instructions(REPO_ROOT / "Dockerfile")
    copied = {word for keyword, args in instructions if keyword == "COPY" for word in args.split()}
    assert "requirements-pipeline.txt" in copied
    assert "requirements.txt" not in copied, "the lean image must not pull in Airflow"
    assert any(keyword == "ENV" and "PYTHONUNBUFFERED=1" in args for keyword, args in instructions)


@pytest.mark.parametrize("script", [KAFKA_ENTRYPOINT], ids=lambda p: p.name)
def test_scripts_parse_and_are_executable(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # Docker runs an entrypoint script directly: it must be executable.
    assert os.access(script, os.X_OK), f"chmod +x {script.relative_to(REPO_ROOT)}"


# --- The Kafka entrypoint runs what the native stack runs ----------------------------------------------------


@pytest.fixture()
def fake_java(tmp_path: Path) -> Path:
    """A `java` that records its arguments instead of starting a JVM."""
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    java = java_home / "bin" / "java"
    java.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$FAKE_JAVA_ARGS"\n')
    java.chmod(0o755)
    return java_home


def _run_entrypoint(
    role: str, fake_java: Path, tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    args_file = tmp_path / f"{role}.args"
    full_env = {
        "PATH": f"{fake_java / 'bin'}:{os.environ['PATH']}",
        "FAKE_JAVA_ARGS": str(args_file),
        "KAFKA_LIB_DIR": str(tmp_path / "lib"),
        "KAFKA_LOG4J_PROPERTIES": str(apache_kafka.LOG4J_PROPERTIES),
        "KAFKA_RENDER_DIR": str(tmp_path / "conf"),
        **env,
    }
    result = subprocess.run(
        ["bash", str(KAFKA_ENTRYPOINT), role], capture_output=True, text=True, env=full_env, timeout=30
    )
    argv = args_file.read_text().splitlines() if args_file.exists() else []
    return result, argv


def _properties(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def _native_argv(fake_java: Path, heap: str, main_class: str, config: Path, lib: Path) -> list[str]:
    java = apache_kafka.find_java({"JAVA_HOME": str(fake_java)})
    return apache_kafka.java_argv(java, heap, main_class, config, lib)[1:]


def test_kafka_entrypoint_runs_zookeeper_like_the_native_stack(fake_java: Path, tmp_path: Path) -> None:
    result, argv = _run_entrypoint("zookeeper", fake_java, tmp_path, ZOOKEEPER_DATA_DIR="/data/zk")
    assert result.returncode == 0, result.stderr
    config = tmp_path / "conf" / "zk.properties"
    assert argv == _native_argv(
        fake_java,
        apache_kafka.ZK_HEAP,
        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        config,
        tmp_path / "lib",
    )
    native = {k: str(v) for k, v in apache_kafka.zookeeper_properties(Path("/data/zk"), 2181).items()}
    # Natively ZooKeeper binds 127.0.0.1; in a container it must listen on the network.
    del native["clientPortAddress"]
    assert _properties(config) == native


def test_kafka_entrypoint_runs_the_broker_like_the_native_stack(fake_java: Path, tmp_path: Path) -> None:
    result, argv = _run_entrypoint(
        "kafka",
        fake_java,
        tmp_path,
        KAFKA_ADVERTISED_LISTENERS="INTERNAL://kafka:29092,EXTERNAL://localhost:9092",
        KAFKA_LOG_DIRS="/data/kafka",
    )
    assert result.returncode == 0, result.stderr
    config = tmp_path / "conf" / "server.properties"
    assert argv == _native_argv(fake_java, apache_kafka.KAFKA_HEAP, "kafka.Kafka", config, tmp_path / "lib")
    rendered = _properties(config)
    native = {k: str(v) for k, v in apache_kafka.kafka_properties(Path("/data/kafka"), 9092, 2181).items()}
    # Addresses differ by design (two listeners, a ZooKeeper on the network); the rest must not.
    for key in ("listeners", "advertised.listeners", "zookeeper.connect"):
        del native[key]
        del rendered[key]
    assert rendered.pop("listener.security.protocol.map") == "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT"
    assert rendered.pop("inter.broker.listener.name") == "INTERNAL"
    assert rendered == native


def test_kafka_entrypoint_refuses_to_start_without_advertised_listeners(
    fake_java: Path, tmp_path: Path
) -> None:
    result, argv = _run_entrypoint("kafka", fake_java, tmp_path)
    assert result.returncode != 0
    assert "KAFKA_ADVERTISED_LISTENERS" in result.stderr
    assert argv == []
    assert not (tmp_path / "conf" / "server.properties").exists()


def test_kafka_entrypoint_rejects_an_unknown_role(fake_java: Path, tmp_path: Path) -> None:
    result, argv = _run_entrypoint("broker", fake_java, tmp_path)
    assert result.returncode == 64
    assert "usage" in result.stderr
    assert argv == []


# Only the servers and jobs that start as root to hand their data to their own user get any
# capability back, and only what chown/setpriv take.
ROOT_STARTERS = {"postgres", "airflow-postgres", "airflow-init", "kafka-tls"}
ROOT_CAPABILITIES = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"}


def test_no_container_keeps_capabilities_or_can_gain_privileges(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        assert svc.get("cap_drop") == ["ALL"], f"{name}: cap_drop: [ALL]"
        assert "no-new-privileges:true" in svc.get("security_opt", []), f"{name}: no-new-privileges"
        added = set(svc.get("cap_add", []))
        if name in ROOT_STARTERS:
            assert added and added <= ROOT_CAPABILITIES, name
        else:
            assert not added, f"{name} runs as its own user and needs no capability: {sorted(added)}"
            # postgres-tls writes the server's key as the server's own uid (999), so PostgreSQL
            # accepts its owner and mode without anyone changing owners.
            users = (None, "${AIRFLOW_UID:-50000}:0", *(["999:999"] if name == "postgres-tls" else []))
            assert svc.get("user") in users, f"{name} must not run as root"


# --- Kafka and ZooKeeper security (docs/security.md) ---------------------------------------------


ZOOKEEPER_PORT_OVERRIDE = REPO_ROOT / "docker-compose.zookeeper-port.yml"
# Each client container's Kafka user (stack/kafka_security.USERS), and who else gets a Kafka secret.
KAFKA_USER_OF = {
    "producer": "producer",
    "consumer": "consumer",
    "console": "console",
    "kafka-init": "admin",
    **{name: "health" for name in AIRFLOW_SERVICES},
}


def test_zookeeper_is_published_only_when_asked(services: dict[str, Any]) -> None:
    assert "ports" not in services["zookeeper"]
    override = yaml.safe_load(ZOOKEEPER_PORT_OVERRIDE.read_text())
    (port,) = override["services"]["zookeeper"]["ports"]
    assert interpolate(port, {}) == "127.0.0.1:2181:2181"
    assert interpolate(port, {"ZOOKEEPER_HOST_PORT": "40125"}) == "127.0.0.1:40125:2181"


def test_every_kafka_client_logs_in_as_its_own_user_over_sasl_ssl(services: dict[str, Any]) -> None:
    from stack.kafka_security import USERS, password_variable

    clients = {name for name, svc in services.items() if "KAFKA_BOOTSTRAP_SERVERS" in environment(svc)}
    assert clients == set(KAFKA_USER_OF)
    for name, user in KAFKA_USER_OF.items():
        env = environment(services[name])
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["KAFKA_SASL_USERNAME"] == user, name
        assert env["KAFKA_SASL_PASSWORD"].startswith("${" + password_variable(user) + ":?"), name
        ca_dir = str(Path(env["KAFKA_SSL_CAFILE"]).parent)
        assert f"kafka_ca:{ca_dir}:ro" in services[name]["volumes"], name
    assert set(KAFKA_USER_OF.values()) | {"broker"} == set(USERS)


def test_kafka_secrets_reach_only_who_uses_them(services: dict[str, Any]) -> None:
    from stack.kafka_security import USERS, password_variable

    def having(variable: str) -> set[str]:
        return {
            name
            for name, svc in services.items()
            if any(f"${{{variable}:" in value for value in strings(environment(svc)))
        }

    # kafka-init sets every user's credentials; otherwise each password goes to its user only.
    assert having("KAFKA_BROKER_PASSWORD") == {"kafka", "kafka-init"}
    for user in set(USERS) - {"broker"}:
        users = {name for name, u in KAFKA_USER_OF.items() if u == user}
        assert having(password_variable(user)) == users | {"kafka-init"}, user
    assert having("ZOOKEEPER_KAFKA_PASSWORD") == {"zookeeper", "kafka"}
    # The broker's key (and the CA's) stay with the job that makes them and the broker.
    with_keys = {
        name
        for name, svc in services.items()
        if any(v.startswith("kafka_tls:") for v in svc.get("volumes", []))
    }
    assert with_keys == {"kafka-tls", "kafka"}
    assert "kafka_tls:/var/lib/txmon/kafka-tls:ro" in services["kafka"]["volumes"]


def test_kafka_entrypoint_secures_zookeeper_when_given_its_password(fake_java: Path, tmp_path: Path) -> None:
    from stack import kafka_security

    result, argv = _run_entrypoint("zookeeper", fake_java, tmp_path, ZOOKEEPER_KAFKA_PASSWORD="zk-Secret_1")
    assert result.returncode == 0, result.stderr
    props = _properties(tmp_path / "conf" / "zk.properties")
    assert props["authProvider.sasl"] == "org.apache.zookeeper.server.auth.SASLAuthenticationProvider"
    assert props["enforce.auth.enabled"] == "true" and props["enforce.auth.schemes"] == "sasl"
    jaas = tmp_path / "conf" / "jaas.conf"
    assert f"-Djava.security.auth.login.config={jaas}" in argv
    # The same file and properties as the native stack's secured ZooKeeper (stack/apache_kafka.py).
    assert jaas.read_text() == kafka_security.zookeeper_server_jaas("zk-Secret_1")
    assert {
        k: props[k] for k in kafka_security.ZOOKEEPER_SASL_PROPERTIES
    } == kafka_security.ZOOKEEPER_SASL_PROPERTIES
    assert jaas.stat().st_mode & 0o077 == 0


def test_kafka_entrypoint_runs_a_sasl_ssl_broker_with_the_security_modules_properties(
    fake_java: Path, tmp_path: Path
) -> None:
    from stack import kafka_security

    tls, ca, data = tmp_path / "tls", tmp_path / "ca", tmp_path / "data"
    kafka_security.compose_tls(tls, ca, ("kafka", "localhost"), owner=None)
    data.mkdir()
    result, argv = _run_entrypoint(
        "kafka",
        fake_java,
        tmp_path,
        KAFKA_ADVERTISED_LISTENERS="INTERNAL://kafka:29092,EXTERNAL://localhost:9092",
        KAFKA_LOG_DIRS=str(data),
        KAFKA_BROKER_PASSWORD="broker-Secret_1",
        ZOOKEEPER_KAFKA_PASSWORD="zk-Secret_1",
        KAFKA_TLS_DIR=str(tls),
    )
    assert result.returncode == 0, result.stderr
    rendered = _properties(tmp_path / "conf" / "server.properties")
    native = kafka_security.broker_properties("h", 1, tls, "broker-Secret_1")
    assert rendered["listener.security.protocol.map"] == "INTERNAL:SASL_SSL,EXTERNAL:SASL_SSL"
    for listener in ("internal", "external"):
        key = f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"
        assert rendered[key] == native["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    for key in kafka_security.broker_tls_properties(tls):
        assert rendered[key] == str(native[key]), key
    assert rendered["zookeeper.set.acl"] == "true"
    assert rendered["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    client = _properties(tmp_path / "conf" / "client.properties")
    assert client["security.protocol"] == "SASL_SSL" and client["ssl.truststore.location"] == f"{tls}/ca.pem"
    assert (ca / "ca.pem").read_text() == (tls / "ca.pem").read_text()
    assert f"-Djava.security.auth.login.config={tmp_path / 'conf' / 'jaas.conf'}" in argv
    assert (tmp_path / "conf" / "jaas.conf").read_text() == kafka_security.zookeeper_client_jaas(
        "zk-Secret_1"
    )
    # The broker's SCRAM user went to ZooKeeper (ConfigCommand ran), remembered by its digest.
    assert (data / ".txmon-broker-user").read_text().strip() == hashlib.sha256(b"broker-Secret_1").hexdigest()


def test_kafka_entrypoint_refuses_a_password_jaas_would_misread(fake_java: Path, tmp_path: Path) -> None:
    result, argv = _run_entrypoint(
        "kafka",
        fake_java,
        tmp_path,
        KAFKA_ADVERTISED_LISTENERS="INTERNAL://kafka:29092,EXTERNAL://localhost:9092",
        KAFKA_BROKER_PASSWORD='pass"word',
    )
    assert result.returncode == 1 and "KAFKA_BROKER_PASSWORD" in result.stderr
    assert argv == []


# --- The three-broker override (docker-compose.cluster.yml) -------------------------------------------

COMPOSE_CLUSTER_FILE = REPO_ROOT / "docker-compose.cluster.yml"


class _OverrideLoader(yaml.SafeLoader):
    """Reads Compose's `!override` / `!reset` tags as the plain values they carry."""


for _tag in ("!override", "!reset"):
    _OverrideLoader.add_constructor(
        _tag,
        lambda loader, node: (
            loader.construct_sequence(node)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_mapping(node)
            if isinstance(node, yaml.MappingNode)
            else loader.construct_scalar(node)
        ),
    )


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.load(COMPOSE_CLUSTER_FILE.read_text(), Loader=_OverrideLoader)


CLUSTER_BROKERS = {"kafka": 0, "kafka-2": 1, "kafka-3": 2}


def test_cluster_override_runs_three_brokers_with_own_ids_addresses_and_data(
    cluster: dict[str, Any], services: dict[str, Any]
) -> None:
    over = cluster["services"]
    ports, volumes = set(), set()
    for name, broker_id in CLUSTER_BROKERS.items():
        env = environment(over[name])
        assert env["KAFKA_BROKER_ID"] == str(broker_id), name
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        if name == "kafka":
            continue  # the base file's ports, volume and listeners
        assert over[name]["extends"] == {"file": "docker-compose.yml", "service": "kafka"}
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith(f"INTERNAL://{name}:29092,EXTERNAL://localhost:")
        (port,) = over[name]["ports"]
        volume, key_store = over[name]["volumes"]
        # Its own data, and the one key store (the certificate names every broker).
        assert key_store == "kafka_tls:/var/lib/txmon/kafka-tls:ro", name
        ports.add(port.split(":")[1])
        volumes.add(volume.split(":")[0])
        assert over[name]["depends_on"] == services["kafka"]["depends_on"]
    assert len(ports) == 2 and services["kafka"]["ports"][0].split(":")[1] not in ports
    assert volumes == {"kafka_2_data", "kafka_3_data"} and volumes <= set(cluster["volumes"])


def test_cluster_override_points_every_kafka_client_at_all_three(
    cluster: dict[str, Any], services: dict[str, Any]
) -> None:
    clients = {n for n, s in services.items() if "KAFKA_BOOTSTRAP_SERVERS" in environment(s)}
    assert clients, "the base file's clients take KAFKA_BOOTSTRAP_SERVERS"
    over = cluster["services"]
    for name in clients:
        env = environment(over.get(name, {}))
        assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:29092,kafka-2:29092,kafka-3:29092", name
        assert env.get("KAFKA_REPLICATION_FACTOR") == "3", name
    waits = over["kafka-init"]["depends_on"]
    assert {waits[b]["condition"] for b in ("kafka-2", "kafka-3")} == {"service_healthy"}


def test_cluster_broker_renders_what_a_native_cluster_member_runs(fake_java: Path, tmp_path: Path) -> None:
    result, _ = _run_entrypoint(
        "kafka",
        fake_java,
        tmp_path,
        KAFKA_ADVERTISED_LISTENERS="INTERNAL://kafka-2:29092,EXTERNAL://localhost:9093",
        KAFKA_LOG_DIRS="/data/kafka",
        KAFKA_BROKER_ID="1",
        KAFKA_DEFAULT_REPLICATION_FACTOR="3",
        KAFKA_MIN_INSYNC_REPLICAS="2",
    )
    assert result.returncode == 0, result.stderr
    rendered = _properties(tmp_path / "conf" / "server.properties")
    native = apache_kafka.kafka_properties(Path("/data/kafka"), 9093, 2181, broker_id=1, brokers=3)
    for key in ("listeners", "advertised.listeners", "zookeeper.connect"):
        del native[key]
        del rendered[key]
    rendered.pop("listener.security.protocol.map")
    rendered.pop("inter.broker.listener.name")
    assert rendered == {k: str(v) for k, v in native.items()}


def test_compose_postgres_is_tuned_for_writes_as_the_native_stack(services: dict[str, Any]) -> None:
    """Both run the same write-heavy settings, or a bench on one says nothing of the other."""
    from stack.postgres import WRITE_TUNING

    command = services["postgres"]["command"]
    settings = dict(arg.split("=", 1) for prev, arg in pairwise(command) if prev == "-c")
    assert WRITE_TUNING and all(settings.get(name) == value for name, value in WRITE_TUNING)
