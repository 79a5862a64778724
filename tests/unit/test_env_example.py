""".env.example documents exactly the variables the code and docker-compose.yml read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values

from utils.config import env_fields, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO_ROOT / ".env.example"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# The three-broker override (docs/scaling.md) adds the other brokers' host ports.
COMPOSE_CLUSTER_FILE = REPO_ROOT / "docker-compose.cluster.yml"

# Settings whose example value differs from the code default on purpose (the comment says why).
DELIBERATE = {
    "POSTGRES_MIGRATION_USER": "Compose always runs migrations as a separate owner role",
    "PRODUCER_RATE": "the Compose producer service sends realistic traffic, not a flood",
    "PRODUCER_ACCOUNTS": "enough accounts that PRODUCER_RATE is a pace a real account could have",
}
# Listed commented out: the default depends on where the checkout is.
COMMENTED_OUT = {"AIRFLOW_DATA_DIR"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$")


@dataclass(frozen=True)
class Entry:
    name: str
    value: str
    commented_out: bool
    comment: str  # the plain comment lines directly above it, joined; "" if none


def _entries() -> list[Entry]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    assignment = re.compile(r"^(?P<hash>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
    out = []
    for i, line in enumerate(lines):
        match = assignment.match(line)
        if not match:
            continue
        comment: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#") and not assignment.match(lines[j]):
            comment.insert(0, lines[j].lstrip("#").strip())
            j -= 1
        out.append(Entry(match["name"], match["value"], bool(match["hash"]), " ".join(comment)))
    return out


ENTRIES = _entries()
BY_NAME = {entry.name: entry for entry in ENTRIES}
SETTINGS = {field.metadata["env"]: (group, field) for group, field in env_fields()}


def _compose_variables() -> set[str]:
    """Names docker-compose.yml (and its overrides: the cluster, ZooKeeper's port) interpolates
    (`${NAME...}`) or passes through (`NAME:` with no value)."""
    text = COMPOSE_FILE.read_text() + COMPOSE_CLUSTER_FILE.read_text()
    text += COMPOSE_FILE.with_name("docker-compose.zookeeper-port.yml").read_text()
    names = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    names |= set(re.findall(r"^\s+([A-Z][A-Z0-9_]*):\s*$", text, re.M))
    return names


def test_each_variable_is_listed_once() -> None:
    names = [entry.name for entry in ENTRIES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_the_dotenv_parser_sees_the_same_variables() -> None:
    """What python-dotenv (and so utils.config) reads is what this test reads."""
    active = {entry.name: entry.value for entry in ENTRIES if not entry.commented_out}
    assert {k: v for k, v in dotenv_values(ENV_EXAMPLE).items()} == active


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_setting_is_documented_with_a_comment(name: str) -> None:
    entry = BY_NAME.get(name)
    assert entry is not None, f"{name} (utils/config.py) is missing from .env.example"
    assert entry.comment, f"{name}: put a one-line comment directly above it"
    assert entry.commented_out == (name in COMMENTED_OUT)


# Secrets are placeholders instead: see test_secrets_are_placeholders_to_change.
SECRET_SETTINGS = {name for name, (_, field) in SETTINGS.items() if field.metadata["secret"]}


@pytest.mark.parametrize("name", sorted(set(SETTINGS) - set(DELIBERATE) - COMMENTED_OUT - SECRET_SETTINGS))
def test_values_are_the_code_defaults(name: str) -> None:
    group, field = SETTINGS[name]
    entry = BY_NAME[name]
    settings = load_settings(environ={name: entry.value})
    value = getattr(getattr(settings, group) if group else settings, field.name)
    assert value == field.default, f"{name}={entry.value} but the code default is {field.default!r}"


@pytest.mark.parametrize("name", sorted(DELIBERATE))
def test_deliberate_differences_say_so(name: str) -> None:
    _, field = SETTINGS[name]
    assert BY_NAME[name].value != str(field.default)
    assert "code default" in BY_NAME[name].comment, (
        f"{name}: say in its comment that the code default differs"
    )


def test_no_stale_variables() -> None:
    stale = {entry.name for entry in ENTRIES} - set(SETTINGS) - _compose_variables()
    assert not stale, f"neither a setting nor used by the Compose files: {sorted(stale)}"


def test_secrets_are_placeholders_to_change() -> None:
    secrets = [entry for entry in ENTRIES if SECRET_NAME.search(entry.name) or entry.name in SECRET_SETTINGS]
    assert {entry.name for entry in secrets} >= {
        "POSTGRES_PASSWORD",
        "AIRFLOW_ADMIN_PASSWORD",
        "AIRFLOW_FERNET_KEY",
    }
    for entry in secrets:
        assert entry.value.startswith("change-me-"), f"{entry.name}: a placeholder, never a real secret"
        assert "CHANGE ME" in entry.comment, f"{entry.name}: its comment should say to change it"
    assert "secrets.token_urlsafe" in ENV_EXAMPLE.read_text(), "say how to generate secrets"
