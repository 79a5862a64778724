"""`python -m deploy up|down|env|urls`: the Compose stack in one command each (see `make help`).

up     engine (docker/engine.sh), .env with fresh secrets if none, base images (pulled, or
       built offline where no registry answers), build, start, wait for health, print URLs
down   stop and remove the containers; data volumes stay unless --volumes
env    write .env with fresh secrets, unless it exists
urls   where the running stack listens
kafka-env [--user U]
       `export` lines for a host client of the stack's Kafka (SASL_SSL as user U, default
       producer; the CA copied next to .env):  eval "$(python -m deploy kafka-env)"

--cluster (before the command) adds docker-compose.cluster.yml: three Kafka brokers
(docs/scaling.md); give it to every command for that stack (`make compose-up CLUSTER=1`).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from deploy import env_file
from deploy.compose import (
    CLUSTER_FILE,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    DeployError,
    Project,
    engine_up,
    ensure_base_images,
)

log = logging.getLogger("deploy")


def refuse_public_secrets(path: Path) -> None:
    """DeployError, naming each line to fix, when `path` holds a `change-me-...` value or a secret
    shorter than 32 bytes: the stack would start with a password anyone can read on GitHub."""
    problems = env_file.weak_secrets(path.read_text())
    if problems:
        raise DeployError(
            f"{path} holds secrets the stack must not start with:\n  "
            + "\n  ".join(problems)
            + f"\n(or move {path.name} aside and run `make compose-up` again: it writes one with fresh secrets)"
        )


def write_env_if_missing(path: Path) -> bool:
    """Create `path` from .env.example with fresh secrets; False if it already existed (then it
    is checked: see refuse_public_secrets)."""
    if path.exists():
        refuse_public_secrets(path)
        added = env_file.added_secrets(ENV_EXAMPLE.read_text(), path.read_text())
        if added:
            with open(path, "a") as f:
                f.write(
                    "\n# Added by `make compose-up`: secrets the stack gained after this file was written.\n"
                )
                f.write(added)
            names = [line.split("=", 1)[0] for line in added.splitlines() if not line.startswith("#")]
            log.info("added fresh %s to %s", ", ".join(names), path)
        return False
    text = env_file.render(ENV_EXAMPLE.read_text(), host_uid=os.getuid())
    # Secrets inside: readable by the owner only, from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    log.info("wrote %s with fresh secrets (from .env.example)", path)
    return True


def _offline(value: str | None) -> bool | None:
    return None if value in (None, "") else value not in ("0", "false", "no")


def cmd_up(project: Project, offline: bool | None) -> int:
    started = time.monotonic()
    write_env_if_missing(project.env_file)  # first: refuse public secrets before any slow step
    engine_up()
    images = ensure_base_images(offline)
    for image, seconds in images.items():
        if image != "total":
            log.info("base image %s: %.0fs", image, seconds)
    build_s = project.build()
    up_s = project.up()
    log.info("the transactions DB takes TLS logins only; its CA's certificate: %s", project.export_ca())
    print(project.ps(), file=sys.stderr)
    log.info(
        "stack healthy: base images %.0fs, build %.0fs, start to healthy %.0fs, total %.0fs",
        images["total"],
        build_s,
        up_s,
        time.monotonic() - started,
    )
    print_urls(project)
    return 0


def print_urls(project: Project) -> None:
    admin = project.variables().get("AIRFLOW_ADMIN_USERNAME", "admin")
    for what, url in project.urls().items():
        print(f"  {what:<22} {url}")
    print(f"  Airflow login: {admin} / AIRFLOW_ADMIN_PASSWORD from {project.env_file}")
    print('  Kafka from the host (SASL_SSL): eval "$(python -m deploy kafka-env)" (docs/security.md)')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--env-file", type=Path, default=REPO_ROOT / ".env", help="default: .env in the repository"
    )
    p.add_argument(
        "--project-name",
        default=os.environ.get("COMPOSE_PROJECT_NAME") or "txmon",
        help="Compose project name (default: COMPOSE_PROJECT_NAME or txmon)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="three Kafka brokers: add docker-compose.cluster.yml (docs/scaling.md)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build, start, wait for health, print URLs")
    up.add_argument(
        "--offline",
        default=os.environ.get("OFFLINE"),
        help="1: build stand-in base images without trying a registry; 0: only pull; "
        "unset (default): pull, and build stand-ins when no registry answers",
    )
    down = sub.add_parser("down", help="stop the stack (data volumes stay)")
    down.add_argument("--volumes", action="store_true", help="also delete the data volumes")
    sub.add_parser("env", help="write .env with fresh secrets unless it exists")
    sub.add_parser("urls", help="print where the stack listens")
    kafka_env = sub.add_parser("kafka-env", help="export lines for a host client of the stack's Kafka")
    kafka_env.add_argument(
        "--user", default="producer", help="Kafka user: producer (default), consumer, health, admin, console"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="deploy: %(message)s")
    files = (COMPOSE_FILE, CLUSTER_FILE) if args.cluster else (COMPOSE_FILE,)
    project = Project(args.project_name, args.env_file, files=files)
    try:
        if args.command == "up":
            return cmd_up(project, _offline(args.offline))
        if args.command == "down":
            project.down(volumes=args.volumes)
            return 0
        if args.command == "env":
            if not write_env_if_missing(args.env_file):
                log.info("%s exists; left as it is", args.env_file)
            return 0
        if args.command == "kafka-env":
            for name, value in project.kafka_client_env(args.user).items():
                print(f"export {name}={shlex.quote(value)}")
            return 0
        print_urls(project)
        return 0
    except DeployError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
