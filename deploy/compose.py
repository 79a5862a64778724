"""The Compose stack as a project: `docker compose` with one project name and one env file.

`make compose-up` and the end-to-end tests (tests/compose/) both go through `Project`, so
the test run starts the stack exactly as a user's `make compose-up` does, only under its own
project name and host ports.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Three Kafka brokers instead of one, on top of COMPOSE_FILE (docs/scaling.md).
CLUSTER_FILE = REPO_ROOT / "docker-compose.cluster.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
ENGINE_SCRIPT = REPO_ROOT / "docker" / "engine.sh"
BASE_IMAGES_SCRIPT = REPO_ROOT / "docker" / "offline" / "build-base-images.sh"
# Where the broker's container holds its key store and CA (docker-compose.yml, kafka-tls).
KAFKA_TLS_DIR = "/var/lib/txmon/kafka-tls"

# variable -> (default, what is behind it), as in docker-compose.yml's `ports:`.
HOST_PORTS = {
    "ZOOKEEPER_HOST_PORT": (2181, "ZooKeeper"),
    "KAFKA_HOST_PORT": (9092, "Kafka"),
    "POSTGRES_HOST_PORT": (5432, "transactions DB"),
    "AIRFLOW_POSTGRES_HOST_PORT": (5433, "Airflow's metadata DB"),
    "AIRFLOW_HOST_PORT": (8080, "Airflow UI/API"),
    "PROMETHEUS_HOST_PORT": (9090, "Prometheus"),
    "CONSOLE_HOST_PORT": (8000, "analysts' console"),
    "ALERTMANAGER_HOST_PORT": (9093, "Alertmanager"),
    "ALERT_RECEIVER_HOST_PORT": (9095, "delivered alerts"),
}
# Published by CLUSTER_FILE only: brokers 1 and 2 (broker 0 is KAFKA_HOST_PORT).
CLUSTER_HOST_PORTS = {
    "KAFKA_2_HOST_PORT": (9096, "Kafka broker 1"),
    "KAFKA_3_HOST_PORT": (9097, "Kafka broker 2"),
}


class DeployError(Exception):
    """A step of bringing the stack up or down failed; the message says which and why."""


@dataclass(frozen=True)
class Project:
    """One Compose project: `name` keeps its containers, networks and volumes apart from any
    other on the engine; `env_file` replaces .env. `environ` is the environment `docker
    compose` runs with (the process environment wins over the env file, as everywhere)."""

    name: str
    env_file: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Compose files, merged in order: docker-compose.yml, then overrides such as CLUSTER_FILE.
    files: tuple[Path, ...] = (COMPOSE_FILE,)

    @property
    def cluster(self) -> bool:
        """Whether this project runs the three-broker cluster (CLUSTER_FILE)."""
        return CLUSTER_FILE in self.files

    def argv(self, *args: str) -> list[str]:
        return [
            "docker",
            "compose",
            "--project-directory",
            str(REPO_ROOT),
            *(arg for path in self.files for arg in ("--file", str(path))),
            "--project-name",
            self.name,
            "--env-file",
            str(self.env_file),
            *args,
        ]

    def run(
        self, *args: str, timeout: float = 900, capture: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        log.debug("running %s", " ".join(self.argv(*args)))
        result = subprocess.run(
            self.argv(*args),
            env=dict(self.environ),
            cwd=REPO_ROOT,
            timeout=timeout,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
        if check and result.returncode != 0:
            detail = (result.stderr or "").strip()[-2000:] if capture else "(output above)"
            raise DeployError(f"`docker compose {' '.join(args)}` failed ({result.returncode}): {detail}")
        return result

    def variables(self) -> dict[str, str]:
        """The env file's values, with the process environment winning, as Compose reads them."""
        values = {k: v for k, v in dotenv_values(self.env_file).items() if v is not None}
        ports = HOST_PORTS.keys() | CLUSTER_HOST_PORTS.keys()
        values.update({k: v for k, v in self.environ.items() if k in values or k in ports})
        return values

    def host_port(self, variable: str) -> int:
        default = {**HOST_PORTS, **CLUSTER_HOST_PORTS}[variable][0]
        return int(self.variables().get(variable) or default)

    def kafka_host_ports(self) -> list[int]:
        """The published port of every broker: one, or three with CLUSTER_FILE."""
        names = ["KAFKA_HOST_PORT", *(CLUSTER_HOST_PORTS if self.cluster else ())]
        return [self.host_port(name) for name in names]

    def ca_path(self) -> Path:
        """Where `export_ca` puts the stack's CA certificate on the host (per project, beside the
        env file): what host clients give as sslrootcert / POSTGRES_SSLROOTCERT."""
        return self.env_file.parent / ".compose" / self.name / "ca.pem"

    def export_ca(self) -> Path:
        """Copy the CA's certificate (public; the key never leaves the tls_ca volume) out of the
        running postgres container to `ca_path()`."""
        dest = self.ca_path()
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.run("cp", "postgres:/etc/txmon/tls/ca.pem", str(dest), capture=True)
        return dest

    def urls(self) -> dict[str, str]:
        port = self.host_port
        return {
            "Airflow UI/API": f"http://localhost:{port('AIRFLOW_HOST_PORT')}",
            "Airflow reports": f"http://localhost:{port('AIRFLOW_HOST_PORT')}/txmon/reports/",
            "Prometheus": f"http://localhost:{port('PROMETHEUS_HOST_PORT')}",
            "Alertmanager": f"http://localhost:{port('ALERTMANAGER_HOST_PORT')}",
            "delivered alerts": f"http://localhost:{port('ALERT_RECEIVER_HOST_PORT')}/alerts",
            "transactions DB": f"postgresql://{self.variables().get('POSTGRES_USER', 'txmon_app')}"
            f"@localhost:{port('POSTGRES_HOST_PORT')}/{self.variables().get('POSTGRES_DB', 'transactions')}"
            f"?sslmode=verify-full&sslrootcert={self.ca_path()}",
            "Kafka": ",".join(f"localhost:{p}" for p in self.kafka_host_ports()),
            "ZooKeeper": f"localhost:{port('ZOOKEEPER_HOST_PORT')} (with docker-compose.zookeeper-port.yml only)",
            "Airflow's metadata DB": f"localhost:{port('AIRFLOW_POSTGRES_HOST_PORT')}",
        }

    def kafka_ca(self) -> Path:
        """The CA certificate of the running stack's broker, copied next to the env file (it is
        public: what a host client trusts, KAFKA_SSL_CAFILE). Made by the kafka-tls job."""
        dest = self.env_file.with_name(f"kafka-ca-{self.name}.pem")
        self.run("cp", f"kafka:{KAFKA_TLS_DIR}/ca.pem", str(dest), capture=True)
        return dest

    def kafka_client_env(self, user: str = "producer") -> dict[str, str]:
        """The settings a host process needs to reach the published broker(s) as `user` (one of
        stack/kafka_security.USERS but the broker): what `python -m deploy kafka-env` prints.
        A cluster's client bootstraps from every broker, so it starts while one is down."""
        variable = f"KAFKA_{user.upper()}_PASSWORD"
        password = self.variables().get(variable)
        if not password:
            raise DeployError(f"{self.env_file} has no {variable}: no Kafka user {user!r} in this stack")
        return {
            "KAFKA_BOOTSTRAP_SERVERS": ",".join(f"localhost:{p}" for p in self.kafka_host_ports()),
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": password,
            "KAFKA_SSL_CAFILE": str(self.kafka_ca()),
        }

    def build(self) -> float:
        """Build the project's images (each once); returns the seconds it took."""
        started = time.monotonic()
        self.run("build")
        return time.monotonic() - started

    def up(self, *services: str, wait_timeout_s: int = 600, extra: Sequence[str] = ()) -> float:
        """`up -d --wait`: returns once every service is healthy (one-shot jobs done), or
        raises with the unhealthy services' last log lines. Returns the seconds it took."""
        started = time.monotonic()
        result = self.run(
            "up", "--detach", "--wait", "--wait-timeout", str(wait_timeout_s), *extra, *services, check=False
        )
        if result.returncode != 0:
            raise DeployError(f"the stack did not become healthy:\n{self.diagnose()}")
        return time.monotonic() - started

    def down(self, *, volumes: bool = False, timeout: float = 300) -> None:
        self.run("down", "--remove-orphans", *(["--volumes"] if volumes else []), timeout=timeout)

    def ps(self) -> str:
        return self.run(
            "ps", "--all", "--format", "table {{.Service}}\t{{.State}}\t{{.Status}}", capture=True
        ).stdout

    def diagnose(self, lines: int = 30) -> str:
        """Which services are not healthy, and the end of their logs."""
        status = self.run(
            "ps",
            "--all",
            "--format",
            "{{.Service}}\t{{.State}}\t{{.Health}}\t{{.ExitCode}}",
            capture=True,
            check=False,
        ).stdout
        report = [status]
        for row in status.splitlines():
            service, state, health, exit_code = ([*row.split("\t"), "", "", ""])[:4]
            healthy = health in ("", "healthy") and (state == "running" or exit_code == "0")
            if not healthy:
                logs = self.run(
                    "logs", "--no-color", "--tail", str(lines), service, capture=True, check=False
                )
                report.append(
                    f"--- {service} ({state} {health} exit={exit_code}) ---\n{logs.stdout}{logs.stderr}"
                )
        return "\n".join(report)


def engine_up() -> None:
    """Docker engine and Compose plugin installed and answering (docker/engine.sh up)."""
    result = subprocess.run(["bash", str(ENGINE_SCRIPT), "up"], timeout=900, check=False)
    if result.returncode != 0:
        raise DeployError("no Docker engine: docker/engine.sh up failed (its messages are above)")


def engine_started_here() -> bool:
    """Whether the answering engine is one docker/engine.sh started (and `down` would stop)."""
    result = subprocess.run(
        ["bash", str(ENGINE_SCRIPT), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    return "started by docker/engine.sh" in result.stdout


def engine_down() -> None:
    subprocess.run(["bash", str(ENGINE_SCRIPT), "down"], timeout=300, check=False)


def missing_base_images() -> list[str]:
    """The base images the Dockerfiles and docker-compose.yml name that are not present locally."""
    result = subprocess.run(
        ["bash", str(BASE_IMAGES_SCRIPT), "--list"], capture_output=True, text=True, timeout=120, check=True
    )
    rows = [line.split(None, 1) for line in result.stdout.splitlines() if line.strip()]
    # The first row is the stand-ins' own Debian base, which no project file names.
    return [tag for state, tag in rows[1:] if state == "missing"]


def ensure_base_images(offline: bool | None = None) -> dict[str, float]:
    """Pull the missing base images, or build stand-ins where no registry answers.

    `offline`: True builds stand-ins without trying a registry, False only pulls, None tries
    a pull and falls back to stand-ins when it fails. Returns seconds per image obtained
    (stand-ins build in parallel, so they overlap) and "total".
    """
    started = time.monotonic()
    timings: dict[str, float] = {}
    missing = missing_base_images()
    if offline is not True:
        for image in list(missing):
            pulled_at = time.monotonic()
            pulled = subprocess.run(["docker", "pull", image], timeout=900, check=False)
            if pulled.returncode != 0:
                if offline is False:
                    raise DeployError(f"cannot pull {image}, and OFFLINE=0 forbids building a stand-in")
                log.warning("no registry answers for %s: building stand-ins (docker/offline/)", image)
                break
            timings[image] = time.monotonic() - pulled_at
            missing.remove(image)
    if missing:
        result = subprocess.run(
            ["bash", str(BASE_IMAGES_SCRIPT)], stdout=subprocess.PIPE, text=True, timeout=1800, check=False
        )
        if result.returncode != 0:
            raise DeployError(
                "building the stand-in base images failed (docker/offline/build-base-images.sh, output above)"
            )
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "built":
                timings[parts[1]] = float(parts[2])
    timings["total"] = time.monotonic() - started
    return timings
