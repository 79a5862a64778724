"""Every setting a container's code reads reaches that container (docker-compose.yml).

Which settings a service reads is derived from its code, not listed by hand: the Python files
its command, healthcheck and mounts run (`python -m utils.roles`, `consumer/healthcheck.py`, the
DAGs and plugins an Airflow container mounts), everything they import from the project, and in
those the settings groups and fields used (`settings.kafka`, `load_settings().data_dir`), plus
the fields `Settings.__post_init__` checks against each other in every process that loads
settings. A setting added to utils/config.py, or a new read of one in a DAG, fails here until
docker-compose.yml passes it; otherwise Compose would silently run that container with the
default, or refuse to start it while the others run (RETENTION_DAYS set without
VALIDATION_MAX_AGE_DAYS).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from utils.config import Settings, env_fields

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("utils", "producer", "consumer", "reports", "stack", "console")
GROUPS = {f.name for f in dataclasses.fields(Settings) if f.name in {g for g, _ in env_fields() if g}}
TOP_LEVEL = {f.name for f in dataclasses.fields(Settings)} - GROUPS
ENV_NAME = {(group, f.name): f.metadata["env"] for group, f in env_fields()}

AIRFLOW = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
# Settings a container's code reads and is deliberately not given; each with its reason.
WITHHELD = {
    # Only db-roles creates the roles, as the superuser.
    "POSTGRES_SUPERUSER_PASSWORD": {"consumer", "db-migrate", "console", *AIRFLOW},
    # The owner role: only the jobs that create it (db-roles) and migrate as it (db-migrate). The
    # console would publish rule sets as it: in Compose an admin publishes with the CLI instead.
    "POSTGRES_MIGRATION_USER": {"consumer", "console", *AIRFLOW},
    "POSTGRES_MIGRATION_PASSWORD": {"consumer", "console", *AIRFLOW},
    # db-migrate logs in as the owner only; the app role's password is not its business.
    "POSTGRES_PASSWORD": {"db-migrate", "console"},
    # The console logs in as its own role (POSTGRES_CONSOLE_USER), never as the app role.
    "POSTGRES_USER": {"console"},
    # The retention role deletes old audit rows: only the cleanup task (it runs in Airflow's
    # scheduler, LocalExecutor) and db-roles, which creates it, get its password; db-migrate
    # grants it by name.
    "POSTGRES_RETENTION_USER": {"consumer", "console", *(AIRFLOW - {"airflow-scheduler"})},
    "POSTGRES_RETENTION_PASSWORD": {"consumer", "db-migrate", "console", *(AIRFLOW - {"airflow-scheduler"})},
    # The console's role: only the console logs in as it, db-roles creates it, db-migrate grants
    # it by name.
    "POSTGRES_CONSOLE_USER": {"consumer", *AIRFLOW},
    "POSTGRES_CONSOLE_PASSWORD": {"consumer", "db-migrate", *AIRFLOW},
}
# postgres-tls writes the server's certificate and pg_hba.conf from the database and role names:
# it never connects, so it gets no password and no connection setting.
for _variable in (
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_PASSWORD",
    "POSTGRES_MIGRATION_PASSWORD",
    "POSTGRES_SUPERUSER_PASSWORD",
    "POSTGRES_RETENTION_PASSWORD",
    "POSTGRES_CONSOLE_PASSWORD",
    "POSTGRES_POOL_MAX",
    "POSTGRES_CONNECT_TIMEOUT",
    "POSTGRES_STATEMENT_TIMEOUT_MS",
    "POSTGRES_SSLMODE",
    "POSTGRES_SSLROOTCERT",
):
    WITHHELD.setdefault(_variable, set()).add("postgres-tls")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"])


def environment(service: Mapping[str, Any]) -> set[str]:
    """Variables the container gets: passed through (`NAME:`) or set (`NAME: value`)."""
    return set(service.get("environment") or {})


# --- What a service's code reads -------------------------------------------------------------------


@functools.cache
def nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of the file's syntax tree (parsed once per test session)."""
    return tuple(ast.walk(ast.parse(path.read_text())))


def module_files(name: str) -> list[Path]:
    """The project's files that importing `name` runs (its packages' __init__ too), or []."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return []
    files = []
    for i in range(1, len(parts) + 1):
        base = REPO_ROOT.joinpath(*parts[:i])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                files.append(candidate)
    return files


def imported(path: Path) -> Iterator[str]:
    """Every module `path` imports, at the top or inside a function (imported lazily)."""
    for node in nodes(path):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def closure(entries: Iterable[Path]) -> set[Path]:
    seen: set[Path] = set()
    todo = list(entries)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(f for name in imported(path) for f in module_files(name) if f not in seen)
    return seen


def entry_files(service: Mapping[str, Any]) -> list[Path]:
    """The Python files a service runs: `python FILE` / `python -m MODULE` in its command or
    healthcheck, and the DAG and plugin files it mounts (Airflow imports every one)."""
    files: list[Path] = []
    for argv in (service.get("command"), (service.get("healthcheck") or {}).get("test")):
        if not isinstance(argv, list) or "python" not in argv:
            continue
        rest = argv[argv.index("python") + 1 :]
        if rest[:1] == ["-m"]:
            found = module_files(rest[1])
            assert found, f"python -m {rest[1]}: no such module in the project"
            main = REPO_ROOT.joinpath(*rest[1].split("."), "__main__.py")
            files += found + ([main] if main.is_file() else [])
        elif rest and rest[0].endswith(".py"):
            files.append(REPO_ROOT / rest[0])
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source in ("./dags", "./plugins"):
            files += sorted((REPO_ROOT / source).glob("*.py"))
    return files


def settings_read(files: Iterable[Path]) -> set[tuple[str, str]]:
    """(group, field) pairs the files read, a whole group when they take `settings.<group>`;
    group '' is the top level. Settings objects are always named `settings` (checked below)."""
    out: set[tuple[str, str]] = set()
    for path in files:
        for node in nodes(path):
            if not isinstance(node, ast.Attribute):
                continue
            base = ast.unparse(node.value)
            if not (base == "settings" or base.endswith((".settings", "load_settings()"))):
                continue
            if node.attr in GROUPS:
                out |= {(g, f) for g, f in ENV_NAME if g == node.attr}
            elif node.attr in TOP_LEVEL:
                out.add(("", node.attr))
    return out


def cross_checked() -> set[tuple[str, str]]:
    """The fields `Settings.__post_init__` checks against each other: every process that loads
    settings reads them, whatever else it uses."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(Settings.__post_init__)))
    out: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        path = ast.unparse(node).split(".")
        if path[:1] == ["self"] and len(path) == 2 and path[1] in TOP_LEVEL:
            out.add(("", path[1]))
        elif path[:1] == ["self"] and len(path) == 3 and path[1] in GROUPS:
            out.add((path[1], path[2]))
    return out


def reads(service: Mapping[str, Any]) -> set[str]:
    """The environment variables `service`'s code reads, derived as the module docstring says."""
    files = closure(entry_files(service))
    if REPO_ROOT / "utils" / "config.py" not in files:
        return set()
    return {ENV_NAME[pair] for pair in settings_read(files) | cross_checked() if pair in ENV_NAME}


# --- The derivation sees what it must ----------------------------------------------------------------


def test_the_derivation_finds_what_each_kind_of_service_reads(services: dict[str, Any]) -> None:
    """Anchors, so that a derivation that quietly finds nothing cannot pass."""
    assert {("", "retention_days"), ("validation", "max_age_days")} <= cross_checked()
    assert {"KAFKA_TOPIC", "PRODUCER_RATE", "PRODUCER_METRICS_PORT", "METRICS_ADDRESS"} <= reads(
        services["producer"]
    )
    assert {"ALERT_HIGH_AMOUNT", "CONSUMER_METRICS_PORT", "POSTGRES_PASSWORD", "RETENTION_DAYS"} <= reads(
        services["consumer"]
    )
    # The DAGs' limits and the plugin's reports folder.
    assert {
        "MONITOR_MAX_LAG",
        "REPORT_NOISY_ALERT_RATE",
        "AIRFLOW_DATA_DIR",
        "VALIDATION_MAX_AGE_DAYS",
    } <= reads(services["airflow-scheduler"])
    assert reads(services["postgres"]) == set() and reads(services["prometheus"]) == set()


def test_settings_objects_are_named_settings() -> None:
    """The derivation recognises a read by the name `settings`: a parameter or variable holding
    the Settings object under another name would hide what its module reads."""
    files = closure(
        p for package in (*PACKAGES, "dags", "plugins") for p in (REPO_ROOT / package).rglob("*.py")
    )
    wrong = []
    for path in files:
        for node in nodes(path):
            names: list[str] = []
            if isinstance(node, ast.arg) and node.annotation is not None:
                annotation = ast.unparse(node.annotation).strip("'\"")
                names = [node.arg] if annotation in ("Settings", "config.Settings") else []
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                called = ast.unparse(node.value.func)
                names = [ast.unparse(t) for t in node.targets] if called.endswith("load_settings") else []
            wrong += [
                f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n}"  # type: ignore[attr-defined]
                for n in names
                if n != "settings" and not n.endswith(".settings")
            ]
    assert not wrong, f"name the Settings object `settings`: {wrong}"


# --- docker-compose.yml passes it ------------------------------------------------------------------------


def test_each_service_gets_every_setting_its_code_reads(services: dict[str, Any]) -> None:
    missing = {}
    for name, svc in services.items():
        withheld = {variable for variable, names in WITHHELD.items() if name in names}
        lacking = reads(svc) - environment(svc) - withheld
        if lacking:
            missing[name] = sorted(lacking)
    assert not missing, f"docker-compose.yml does not pass (add them, key-only, to the service): {missing}"


def test_withheld_settings_are_really_withheld_and_read(services: dict[str, Any]) -> None:
    """An exemption that no longer applies (the variable is passed, or no longer read) goes."""
    for variable, names in WITHHELD.items():
        for name in names:
            assert variable not in environment(services[name]), f"{name} gets {variable}: drop the exemption"
            assert variable in reads(services[name]), f"{name} no longer reads {variable}: drop the exemption"


def test_every_setting_reaches_some_container(services: dict[str, Any]) -> None:
    """A pipeline setting no container gets would be documented for Compose users and ignored."""
    passed = set().union(*(environment(svc) for svc in services.values()))
    assert set(ENV_NAME.values()) - passed == set()
