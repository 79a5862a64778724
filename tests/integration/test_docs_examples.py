"""Every shell and SQL block of README.md and docs/ marked `<!-- run -->` is run here, as a reader
would run it: SQL with psql against a database holding a small seeded pipeline run, shell blocks
with bash in a shell whose environment is that pipeline's settings (what `eval "$(make -s
stack-up)"` exports), from a copy of the checkout's layout so files they write stay out of it.
tests/unit/test_docs.py checks that every other block says why it is not run."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devdocs.examples import SHELL, Example, examples, statements
from stack.orchestrator import LocalStack
from tests.support import child_env, consume, produce
from utils import schema
from utils.config import KafkaSettings, Settings
from utils.kafka_cleanup import admin_client, delete_topics

REPO = Path(__file__).resolve().parents[2]
RUN = [e for e in examples(REPO) if e.marker == "run"]


@pytest.fixture(scope="module")
def seeded(test_stack: LocalStack) -> Iterator[Settings]:
    """Settings of one pipeline (its own database, topic, DLQ and group) after a seeded run of
    2,000 transactions with a few malformed messages, so the queries find rows."""
    env = test_stack.env()
    name = f"docs-{uuid.uuid4().hex[:8]}"
    pg = test_stack.create_database(f"txmon_test_{name.replace('-', '_')}")
    schema.migrate(pg)
    admin = admin_client(env.kafka_bootstrap_servers)
    admin.create_topics({t: {"num_partitions": 3, "replication_factor": 1} for t in (name, f"{name}.dlq")})
    kafka = KafkaSettings(
        bootstrap_servers=env.kafka_bootstrap_servers,
        topic=name,
        dlq_topic=f"{name}.dlq",
        consumer_group=f"g-{name}",
        topic_partitions=3,
    )
    settings = dataclasses.replace(Settings(), kafka=kafka, postgres=pg)
    try:
        produce(settings, 2000, seed=7)
        summary = consume(settings)
        assert summary.stored == 2000, summary
        yield settings
    finally:
        with contextlib.suppress(Exception):
            delete_topics(admin, [name, f"{name}.dlq"])
        admin.close()
        test_stack.drop_database(pg.db)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's top-level entries as symlinks: `python producer/...` and `python -m ...`
    work as in the checkout, while `show > rules.yaml` writes here."""
    root = tmp_path_factory.mktemp("docs-examples")
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".env"}:
            (root / entry.name).symlink_to(entry)
    return root


def _environment(settings: Settings) -> dict[str, str]:
    path = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    spec = importlib.util.find_spec("pgserver")  # psql where no system client is installed
    if spec and spec.origin:
        path.append(str(Path(spec.origin).parent / "pginstall" / "bin"))
    return child_env(settings, PATH=os.pathsep.join(path), EDITOR="true", LOG_LEVEL="WARNING")


@pytest.mark.parametrize("example", RUN, ids=[e.where for e in RUN])
def test_documented_example_runs(
    example: Example, seeded: Settings, workdir: Path, rules_admins: dict[str, str]
) -> None:
    env = _environment(seeded)
    if example.lang in SHELL:
        if "consumer.rulesets" in example.code:
            # As a person who may publish rule sets (docs/rules-as-data.md: `publish` logs in as you).
            name, password = next(iter(rules_admins.items()))
            env.update(PGUSER=name, PGPASSWORD=password)
        argv = ["bash", "-e", "-o", "pipefail", "-c", example.code]
    else:
        pg = seeded.postgres
        env.update(
            PGHOST=pg.host, PGPORT=str(pg.port), PGDATABASE=pg.db, PGUSER=pg.user, PGPASSWORD=pg.password
        )
        argv = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", example.code]
    result = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=240)
    output = f"{example.where} ({example.lang}) exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, output
    if example.lang == "sql":
        # psql -c runs the statements one by one and prints each result with its row count.
        assert len(re.findall(r"^\(\d+ rows?\)$", result.stdout, re.M)) == len(statements(example.code)), (
            output
        )


def test_the_examples_that_run_cover_shell_and_sql() -> None:
    langs = {e.lang for e in RUN}
    assert "sql" in langs and langs & SHELL, langs
