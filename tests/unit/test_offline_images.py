"""The offline base images (docker/offline/), the engine bootstrap and the project's Dockerfiles,
checked without an engine: the stand-ins carry exactly the names and versions the project
uses, and nothing needs a registry or BuildKit's remote frontend. The real builds run in
tests/compose/ (make test-compose)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFLINE = REPO_ROOT / "docker" / "offline"
PROJECT_DOCKERFILES = [
    REPO_ROOT / "Dockerfile",
    REPO_ROOT / "docker" / "kafka.Dockerfile",
    REPO_ROOT / "docker" / "airflow.Dockerfile",
    REPO_ROOT / "docker" / "prometheus.Dockerfile",
]
SCRIPTS = [
    REPO_ROOT / "docker" / "engine.sh",
    OFFLINE / "build-base-images.sh",
    OFFLINE / "postgres-entrypoint.sh",
    OFFLINE / "airflow-entrypoint.sh",
]


def arg_default(dockerfile: Path, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile.read_text(), re.M)
    assert match, f"no ARG {name}=... in {dockerfile.name}"
    return match.group(1)


def project_images() -> dict[str, str]:
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    postgres = re.search(r"\$\{POSTGRES_IMAGE:-([^}]+)\}", compose)
    assert postgres
    return {
        "python": arg_default(REPO_ROOT / "Dockerfile", "PYTHON_IMAGE"),
        "maven": arg_default(REPO_ROOT / "docker" / "kafka.Dockerfile", "MAVEN_IMAGE"),
        "jre": arg_default(REPO_ROOT / "docker" / "kafka.Dockerfile", "JRE_IMAGE"),
        "postgres": postgres.group(1),
        "airflow": arg_default(REPO_ROOT / "docker" / "airflow.Dockerfile", "AIRFLOW_IMAGE"),
        "debian": arg_default(REPO_ROOT / "docker" / "prometheus.Dockerfile", "DEBIAN_IMAGE"),
    }


def test_stand_ins_are_tagged_with_the_names_the_project_uses() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_IMAGE")}
    listed = subprocess.run(
        ["bash", str(OFFLINE / "build-base-images.sh"), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout.split("\n")
    tags = [line.split()[1] for line in listed if line.strip()]
    assert tags[0] == "txmon-offline/debian:bookworm"
    assert tags[1:] == list(project_images().values())
    for name in project_images():
        assert (OFFLINE / f"{name}.Dockerfile").is_file(), name


def test_stand_in_versions_match_their_tags() -> None:
    images = project_images()
    python_minor = re.match(r"python:(\d+\.\d+)\.", images["python"])
    assert python_minor and python_minor.group(1) == "3.11"  # Debian bookworm's python3
    assert "bookworm" in images["python"]

    maven_version, jdk = re.fullmatch(r"maven:([\d.]+)-eclipse-temurin-(\d+)", images["maven"]).groups()  # type: ignore[union-attr]
    maven = (OFFLINE / "maven.Dockerfile").read_text()
    assert arg_default(OFFLINE / "maven.Dockerfile", "MAVEN_VERSION") == maven_version
    assert re.search(r"^ARG MAVEN_SHA512=[0-9a-f]{128}$", maven, re.M)
    assert f"openjdk-{jdk}-jdk-headless" in maven

    jre_major = re.match(r"eclipse-temurin:(\d+)\.", images["jre"])
    assert (
        jre_major and f"openjdk-{jre_major.group(1)}-jre-headless" in (OFFLINE / "jre.Dockerfile").read_text()
    )

    pg_major = re.fullmatch(r"postgres:(\d+)\.\d+", images["postgres"])
    postgres = (OFFLINE / "postgres.Dockerfile").read_text()
    assert pg_major and f"PG_MAJOR={pg_major.group(1)}" in postgres
    assert f"/usr/lib/postgresql/{pg_major.group(1)}/bin" in postgres
    assert re.search(r"^ARG PGSERVER_SHA256=[0-9a-f]{64}$", postgres, re.M)

    airflow_version, airflow_python = re.fullmatch(
        r"apache/airflow:([\d.]+)-python([\d.]+)", images["airflow"]
    ).groups()  # type: ignore[union-attr]
    assert arg_default(OFFLINE / "airflow.Dockerfile", "AIRFLOW_VERSION") == airflow_version
    assert airflow_python == python_minor.group(1)
    assert f"apache-airflow=={airflow_version}" in (REPO_ROOT / "requirements.txt").read_text()

    # The debootstrapped base is bookworm (Debian 12), and the stand-in checks it is.
    assert images["debian"] == "debian:bookworm-slim"
    assert "grep -q '^12\\.' /etc/debian_version" in (OFFLINE / "debian.Dockerfile").read_text()


def test_stand_ins_build_on_the_offline_base_or_each_other() -> None:
    for dockerfile in OFFLINE.glob("*.Dockerfile"):
        sources = re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.M)
        assert sources and set(sources) <= {"${BASE_IMAGE}", "${PYTHON_IMAGE}"}, dockerfile.name
        # Built by the classic builder (no buildx here): no BuildKit-only flags.
        assert "--chmod" not in dockerfile.read_text(), dockerfile.name


@pytest.mark.parametrize("dockerfile", PROJECT_DOCKERFILES, ids=lambda p: p.name)
def test_project_dockerfiles_need_no_remote_frontend(dockerfile: Path) -> None:
    """`# syntax=docker/dockerfile:1` makes BuildKit fetch its frontend from Docker Hub."""
    assert not re.search(r"^#\s*syntax\s*=", dockerfile.read_text(), re.M | re.I)


def test_airflow_dockerfile_copies_what_its_user_writes_with_that_owner() -> None:
    """The base image runs as `airflow`: a plain COPY makes root-owned files that a later RUN,
    as airflow, cannot write next to (the image did not build)."""
    user = "airflow"
    for line in (REPO_ROOT / "docker" / "airflow.Dockerfile").read_text().splitlines():
        keyword, _, rest = line.partition(" ")
        if keyword == "USER":
            user = rest.strip()
        elif keyword == "COPY" and user not in ("root", "0"):
            assert "--chown=airflow:0" in rest, line


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_are_executable(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"chmod +x {script.relative_to(REPO_ROOT)}"


def test_engine_script_stops_only_what_it_started() -> None:
    text = (REPO_ROOT / "docker" / "engine.sh").read_text()
    assert "pkill" not in text and "killall" not in text
    assert re.search(r'kill -TERM "\$pid"', text)
    assert "--pidfile" in text
