"""The native stack as one thing: which components it runs, their state dir, `up`/`down`/`status`/`env`.

Whatever the configured addresses (KAFKA_BOOTSTRAP_SERVERS, POSTGRES_HOST:POSTGRES_PORT) already
answer is used instead of starting anything; a Kafka that answers needs no ZooKeeper from us.
The decision is recorded in `<state dir>/stack.json`, so a later `env` or `down` (another process)
knows which components are this stack's. One process at a time changes a state dir (a file lock).

Tests build their own `LocalStack(tmp_dir, zk_port=..., kafka_port=..., pg_port=...)`, use
`stop_component` / `start_component` to inject broker and database failures mid-stream, and
`create_database` / `drop_database` for a database per test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from stack import kafka_security
from stack.apache_kafka import (
    ApacheKafka,
    KafkaCluster,
    MavenUnavailable,
    ZooKeeper,
    kafka_lib_dir,
    replication_settings,
)
from stack.common import (
    COMPONENTS,
    DEFAULT_PORTS,
    HOST,
    Runtime,
    default_state_dir,
    file_lock,
    kafka_answers,
    parse_bootstrap,
    ports_from_env,
    tcp_answers,
    write_atomic,
)
from stack.postgres import APP_ROLE, CONSOLE_ROLE, DB_NAME, OWNER_ROLE, RETENTION_ROLE, SUPERUSER, Postgres
from stack.tansu import TansuBroker
from utils import roles
from utils.config import KafkaSettings, PostgresSettings, load_settings
from utils.errors import ConfigError, StackError

log = logging.getLogger(__name__)

KAFKA_IMPLS = ("auto", "apache", "tansu")


def wanted_kafka_impl(environ: Mapping[str, str]) -> str:
    """TXMON_KAFKA_IMPL: auto (Apache Kafka, tansu only if Kafka's jars cannot be had), apache, tansu."""
    value = environ.get("TXMON_KAFKA_IMPL", "").strip().lower() or "auto"
    if value not in KAFKA_IMPLS:
        raise StackError(f"TXMON_KAFKA_IMPL={value!r}: use one of {', '.join(KAFKA_IMPLS)} (default auto)")
    return value


def wanted_kafka_brokers(environ: Mapping[str, str]) -> int:
    """TXMON_KAFKA_BROKERS: how many Apache Kafka brokers the stack runs (default 1; 3 for a
    replicated cluster: replication factor 3, min.insync.replicas 2)."""
    raw = environ.get("TXMON_KAFKA_BROKERS", "").strip() or "1"
    try:
        count = int(raw)
    except ValueError:
        raise StackError(f"TXMON_KAFKA_BROKERS={raw!r}: a broker count, 1 (default) or 3") from None
    if not 1 <= count <= 9:
        raise StackError(f"TXMON_KAFKA_BROKERS={count}: between 1 and 9 (3 for a replicated cluster)")
    return count


def export_lines(values: Mapping[str, str]) -> str:
    """`export KEY=value` lines, shell-quoted, for `eval "$(...)"`."""
    out = []
    for key, value in values.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"not a shell variable name: {key!r}")
        out.append(f"export {key}={shlex.quote(str(value))}\n")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class StackEnv:
    """The addresses and credentials the pipeline should use (what `env` prints)."""

    kafka_bootstrap_servers: str
    postgres_host: str
    postgres_port: int
    postgres_db: str
    postgres_user: str
    postgres_password: str = field(repr=False)
    postgres_migration_user: str = ""
    postgres_migration_password: str = field(default="", repr=False)
    postgres_retention_user: str = ""
    postgres_retention_password: str = field(default="", repr=False)
    postgres_console_user: str = ""
    postgres_console_password: str = field(default="", repr=False)
    # TXMON_KAFKA_SECURITY=sasl_ssl: the `admin` Kafka user (topics and groups), for development.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    # KAFKA_REPLICATION_FACTOR: what topics are created with on these brokers (3 on a cluster).
    kafka_replication_factor: int = 1

    def as_environ(self) -> dict[str, str]:
        """The variables utils/config.py reads, named after the fields (KAFKA_BOOTSTRAP_SERVERS, ...)."""
        return {f.name.upper(): str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def kafka_settings(self) -> KafkaSettings:
        """This stack's brokers and credentials (topics and group: the defaults)."""
        return KafkaSettings(
            bootstrap_servers=self.kafka_bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            replication_factor=self.kafka_replication_factor,
        )

    def postgres_settings(self) -> PostgresSettings:
        return PostgresSettings(
            host=self.postgres_host,
            port=self.postgres_port,
            db=self.postgres_db,
            user=self.postgres_user,
            password=self.postgres_password,
            migration_user=self.postgres_migration_user,
            migration_password=self.postgres_migration_password,
            retention_user=self.postgres_retention_user or PostgresSettings().retention_user,
            retention_password=self.postgres_retention_password,
            console_user=self.postgres_console_user or PostgresSettings().console_user,
            console_password=self.postgres_console_password,
        )


ENV_KEYS = tuple(f.name.upper() for f in dataclasses.fields(StackEnv))


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    mode: str  # "local" (this stack runs it), "external" (configured address answered), "unused"
    up: bool
    address: str
    pid: int | None = None
    log: Path | None = None


class Component(Protocol):
    """What the orchestrator asks of ZooKeeper, either broker and PostgreSQL."""

    name: str

    @property
    def log_path(self) -> Path: ...

    def pid(self) -> int | None: ...

    def is_up(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, *, kill: bool = False) -> None: ...


class LocalStack:
    """ZooKeeper + Kafka (or tansu) + PostgreSQL under one state dir, on the given ports.

    Data (ZooKeeper's, the broker's log dir, PostgreSQL's cluster) and generated passwords stay in
    `state_dir` across `down`/`up` and component restarts; only `destroy()` removes them.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        zk_port: int = DEFAULT_PORTS["zookeeper"],
        kafka_port: int = DEFAULT_PORTS["kafka"],
        pg_port: int = DEFAULT_PORTS["postgres"],
        existing_kafka: str | None = None,
        existing_postgres: PostgresSettings | None = None,
        existing_kafka_settings: KafkaSettings | None = None,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 60.0,
        kafka_partitions: int = 6,
        kafka_brokers: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        # Broker i of a cluster listens on kafka_port + i.
        self.kafka_brokers = wanted_kafka_brokers(self.environ) if kafka_brokers is None else kafka_brokers
        self.kafka_ports = [kafka_port + i for i in range(self.kafka_brokers)]
        if {zk_port, pg_port} & set(self.kafka_ports[1:]):
            raise StackError(
                f"brokers on ports {self.kafka_ports} collide with ZooKeeper ({zk_port}) or PostgreSQL "
                f"({pg_port}): move TXMON_STACK_KAFKA_PORT"
            )
        if self.kafka_brokers > 1 and kafka_security.wanted_security(self.environ) == "sasl_ssl":
            raise StackError(
                "TXMON_KAFKA_SECURITY=sasl_ssl runs on one broker only: unset TXMON_KAFKA_BROKERS or "
                "TXMON_KAFKA_SECURITY"
            )
        self.state_dir = Path(state_dir or default_state_dir(self.environ)).expanduser().absolute()
        self.ports = {"zookeeper": zk_port, "kafka": kafka_port, "postgres": pg_port}
        if len(set(self.ports.values())) != 3:
            raise StackError(f"zookeeper, kafka and postgres need three different ports, got {self.ports}")
        # Configured services to use instead of starting ours, if they answer at `up()`.
        self.existing_kafka = existing_kafka
        self.existing_postgres = existing_postgres
        # The configured Kafka's credentials (KAFKA_SECURITY_PROTOCOL, ...), used with existing_kafka.
        self.existing_kafka_settings = existing_kafka_settings
        rt = Runtime(self.state_dir, self.environ, start_timeout_s, stop_timeout_s)
        self.zookeeper = ZooKeeper(rt, zk_port)
        # Both write the pidfile and log of component `kafka`; `up()` records which one runs.
        apache: ApacheKafka | KafkaCluster = (
            KafkaCluster(rt, self.kafka_ports, self.zookeeper, partitions=kafka_partitions)
            if self.kafka_brokers > 1
            else ApacheKafka(rt, kafka_port, self.zookeeper, partitions=kafka_partitions)
        )
        self._brokers: dict[str, ApacheKafka | KafkaCluster | TansuBroker] = {
            "apache": apache,
            "tansu": TansuBroker(rt, kafka_port),
        }
        self.postgres = Postgres(rt, pg_port)
        self._lock_depth = 0

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        state_dir: Path | str | None = None,
        isolated: bool = False,
    ) -> LocalStack:
        """The CLI's stack: ports from TXMON_STACK_*_PORT, configured services from settings/.env."""
        # The real environment also reads `.env`; an explicit mapping (tests) is taken as it is.
        settings = load_settings() if environ is None else load_settings(environ)
        environ = dict(os.environ if environ is None else environ)
        ports = ports_from_env(environ)
        return cls(
            state_dir or default_state_dir(environ),
            zk_port=ports["zookeeper"],
            kafka_port=ports["kafka"],
            pg_port=ports["postgres"],
            existing_kafka=None if isolated else settings.kafka.bootstrap_servers,
            existing_postgres=None if isolated else settings.postgres,
            existing_kafka_settings=None if isolated else settings.kafka,
            kafka_partitions=settings.kafka.topic_partitions,
            environ=environ,
        )

    # ---- layout ------------------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        """Every broker this stack runs, comma-separated (one unless TXMON_KAFKA_BROKERS > 1)."""
        return ",".join(f"{HOST}:{port}" for port in self.kafka_ports)

    @property
    def kafka_cluster(self) -> KafkaCluster:
        """The brokers, for fault tests that stop and start one of them (TXMON_KAFKA_BROKERS > 1)."""
        broker = self._brokers["apache"]
        if not isinstance(broker, KafkaCluster):
            raise StackError(
                "this stack runs one broker: build it with kafka_brokers=3 (TXMON_KAFKA_BROKERS)"
            )
        return broker

    def stop_broker(self, broker_id: int, *, kill: bool = False) -> None:
        """Stop one broker of the cluster: SIGTERM (controlled shutdown: leadership moves first)
        or, with `kill`, SIGKILL (a crash: the others elect new leaders once its ZooKeeper session
        expires). Its log dir stays."""
        with self._locked():
            self.kafka_cluster.member(broker_id).stop(kill=kill)

    def start_broker(self, broker_id: int) -> None:
        """Start one broker of the cluster again and wait until it is registered."""
        with self._locked():
            self.kafka_cluster.member(broker_id).start()

    @property
    def pg_dir(self) -> Path:
        return self.postgres.pg_dir

    @property
    def broker(self) -> ApacheKafka | KafkaCluster | TansuBroker:
        """This stack's broker, of the kind the last `up()` chose."""
        return self._brokers[self.kafka_impl()]

    def _component(self, name: str) -> Component:
        if name == "zookeeper":
            return self.zookeeper
        if name == "kafka":
            return self.broker
        if name == "postgres":
            return self.postgres
        raise StackError(f"unknown component {name!r}: one of {', '.join(COMPONENTS)}")

    def log_path(self, name: str) -> Path:
        return self._component(name).log_path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time changes this state dir; re-entrant within this object."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_dir / ".lock"):
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    # ---- recorded decisions (which components are ours) ----------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state_dir / "stack.json").read_text()))
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: Mapping[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_dir / "stack.json", json.dumps(state, indent=2, sort_keys=True) + "\n")

    def is_local(self, name: str) -> bool:
        """Does this stack run `name` itself (as opposed to using a configured service, or not at all)?"""
        self._component(name)
        return self._mode(name) == "local"

    def _mode(self, name: str) -> str:
        """'local', 'external' or 'unused', as decided by the last `up()` (local if none yet)."""
        return str(self._read_state().get(name, "local"))

    def kafka_impl(self) -> str:
        """apache or tansu: the broker this stack runs (as decided by the last `up()`)."""
        return str(self._read_state().get("kafka_impl", "apache"))

    # ---- components ----------------------------------------------------------------------------

    def pid(self, name: str) -> int | None:
        """PID of this stack's running process for `name`, or None (stale pidfiles count as None)."""
        return self._component(name).pid()

    def is_up(self, name: str) -> bool:
        """Is `name` running and answering? External components: does their address answer?"""
        component = self._component(name)
        mode = self._mode(name)
        if mode == "external":
            return self._configured_answers(name, quick=True)
        if mode == "unused":
            return False
        return component.is_up()

    def start_component(self, name: str) -> None:
        """Start one of this stack's components (and what it needs) and wait until it answers."""
        component = self._component(name)
        with self._locked():
            component.start()

    def stop_component(self, name: str, *, kill: bool = False) -> None:
        """Stop one component: graceful by default; `kill=True` simulates a crash (SIGKILL;
        PostgreSQL: immediate shutdown, recovered on the next start). Data stays on disk."""
        component = self._component(name)
        with self._locked():
            component.stop(kill=kill)

    # ---- the whole stack -------------------------------------------------------------------------

    def up(self) -> StackEnv:
        """Start what is needed, wait until everything answers, and return the environment to use.

        For each of Kafka and PostgreSQL: this stack's own running process wins; else a configured
        address that answers is used as is (a Kafka there needs no ZooKeeper from us); else ours starts.
        """
        wanted = wanted_kafka_impl(self.environ)
        with self._locked():
            started = time.monotonic()
            state = self._read_state()
            for name in ("kafka", "postgres"):
                if self.pid(name) is not None:
                    state[name] = "local"
                elif self._configured_answers(name):
                    state[name] = "external"
                    log.info(
                        "%s: using the configured %s (it answers); starting none",
                        name,
                        self._configured(name),
                    )
                else:
                    state[name] = "local"
            if state["kafka"] == "local":
                state["kafka_impl"] = self._choose_kafka_impl(wanted, state.get("kafka_impl"))
                self._check_broker_count(state)
                state["kafka_brokers"] = self.kafka_brokers
                # tansu needs no ZooKeeper; neither does a configured Kafka.
                state["zookeeper"] = "local" if state["kafka_impl"] == "apache" else "unused"
            else:
                state["zookeeper"] = "unused"
            state["ports"] = self.ports
            self._write_state(state)
            if state["postgres"] == "local":
                self.postgres.start()  # first: quick, so a port clash shows before the JVMs start
            if state["kafka"] == "local":
                self.broker.start()
            log.info("stack ready in %.1f s (state in %s)", time.monotonic() - started, self.state_dir)
            return self.env()

    def _check_broker_count(self, state: Mapping[str, Any]) -> None:
        """A state dir's brokers hold topics replicated for their count: one broker cannot serve
        a cluster's three-replica topics (nor a cluster take over one broker's), so a different
        count is refused with the fix rather than started into a broken cluster."""
        recorded = state.get("kafka_brokers", 1)  # a state dir from before clusters had one broker
        if recorded == self.kafka_brokers or state.get("kafka_impl") != "apache":
            return
        if any((self.state_dir / "kafka" / "data").glob("*-[0-9]*")):
            raise StackError(
                f"{self.state_dir} holds the topics of {recorded} Kafka broker(s): set TXMON_KAFKA_BROKERS="
                f"{recorded}, or use another --state-dir for {self.kafka_brokers}"
            )

    def _choose_kafka_impl(self, wanted: str, running: str | None) -> str:
        """apache or tansu for this stack's broker: what runs already, else what TXMON_KAFKA_IMPL
        asks; `auto` is Apache Kafka unless its jars cannot be had (then tansu, with a warning)."""
        if self.pid("kafka") is not None and running in ("apache", "tansu"):
            return running
        if self.kafka_brokers > 1 and wanted == "tansu":
            raise StackError(
                "tansu runs as one broker: TXMON_KAFKA_BROKERS > 1 needs TXMON_KAFKA_IMPL=apache or auto"
            )
        if wanted != "auto":
            return wanted
        try:
            kafka_lib_dir(environ=self.environ)
        except MavenUnavailable as exc:
            if self.kafka_brokers > 1:
                raise StackError(
                    f"TXMON_KAFKA_BROKERS={self.kafka_brokers} needs Apache Kafka: {exc}"
                ) from exc
            log.warning(
                "%s\nFalling back to the tansu broker (memory only, known quirks: see stack/tansu.py); "
                "TXMON_KAFKA_IMPL=apache makes this an error instead",
                exc,
            )
            return "tansu"
        return "apache"

    def _configured(self, name: str) -> str:
        if name == "kafka":
            return f"KAFKA_BOOTSTRAP_SERVERS={self.existing_kafka}"
        pg = self.existing_postgres
        return f"POSTGRES_HOST:PORT={pg.host}:{pg.port}" if pg else ""

    def _configured_answers(self, name: str, *, quick: bool = False) -> bool:
        """Does the configured service answer? `quick`: a TCP connect will do (status)."""
        if name == "kafka" and self.existing_kafka:
            if quick:
                return any(tcp_answers(h, p) for h, p in parse_bootstrap(self.existing_kafka))
            security = (
                self.existing_kafka_settings.client_security() if self.existing_kafka_settings else None
            )
            return kafka_answers(self.existing_kafka, security=security)
        if name == "postgres" and self.existing_postgres:
            return tcp_answers(self.existing_postgres.host, self.existing_postgres.port)
        return False

    def env(self) -> StackEnv:
        """The environment for the pipeline: this stack's addresses and roles, or the configured ones."""
        return dataclasses.replace(self._env(), kafka_replication_factor=self._replication_factor())

    def _replication_factor(self) -> int:
        """What topics get here: the configured Kafka's setting, or what this stack's brokers allow."""
        state = self._read_state()
        if state.get("kafka") == "external" and self.existing_kafka:
            return self.existing_kafka_settings.replication_factor if self.existing_kafka_settings else 1
        if state.get("kafka_impl", "apache") != "apache":
            return 1
        return replication_settings(self.kafka_brokers)[0]

    def _env(self) -> StackEnv:
        state = self._read_state()
        # Any: mypy would match these strings against every StackEnv field, the int one included.
        kafka: dict[str, Any] = self._kafka_env(state)
        if state.get("postgres") == "external" and self.existing_postgres:
            pg = self.existing_postgres
            return StackEnv(kafka.pop("kafka_bootstrap_servers"), pg.host, pg.port, pg.db, pg.user, pg.password,
                            pg.migration_user, pg.migration_password, pg.retention_user, pg.retention_password,
                            pg.console_user, pg.console_password, **kafka)  # fmt: skip
        bootstrap = kafka.pop("kafka_bootstrap_servers")
        passwords = self.postgres.passwords()
        return StackEnv(
            **kafka,
            kafka_bootstrap_servers=bootstrap,
            postgres_host=HOST,
            postgres_port=self.ports["postgres"],
            postgres_db=DB_NAME,
            postgres_user=APP_ROLE,
            postgres_password=passwords[APP_ROLE],
            postgres_migration_user=OWNER_ROLE,
            postgres_migration_password=passwords[OWNER_ROLE],
            postgres_retention_user=RETENTION_ROLE,
            postgres_retention_password=passwords[RETENTION_ROLE],
            postgres_console_user=CONSOLE_ROLE,
            postgres_console_password=passwords[CONSOLE_ROLE],
        )

    def _kafka_env(self, state: Mapping[str, Any]) -> dict[str, str]:
        if state.get("kafka") == "external" and self.existing_kafka:
            k = self.existing_kafka_settings or KafkaSettings(bootstrap_servers=self.existing_kafka)
            return {
                "kafka_bootstrap_servers": self.existing_kafka,
                "kafka_security_protocol": k.security_protocol,
                "kafka_sasl_mechanism": k.sasl_mechanism,
                "kafka_sasl_username": k.sasl_username,
                "kafka_sasl_password": k.sasl_password,
                "kafka_ssl_cafile": k.ssl_cafile,
            }
        out = {"kafka_bootstrap_servers": self.kafka_bootstrap}
        broker = self._brokers["apache"]
        if (
            state.get("kafka_impl", "apache") == "apache"
            and isinstance(broker, ApacheKafka)
            and broker.secured
        ):
            security = broker.client_security("admin")
            out.update(
                kafka_security_protocol=str(security["security_protocol"]),
                kafka_sasl_mechanism=str(security["sasl_mechanism"]),
                kafka_sasl_username="admin",
                kafka_sasl_password=str(security["sasl_plain_password"]),
                kafka_ssl_cafile=str(security["ssl_cafile"]),
            )
        return out

    def kafka_user(self, user: str) -> KafkaSettings:
        """This stack's Kafka as one of its users (stack/kafka_security.USERS): what each service
        would be configured with. Plaintext when the stack is."""
        bootstrap = self._kafka_env(self._read_state())["kafka_bootstrap_servers"]
        broker = self._brokers["apache"]
        if not (isinstance(broker, ApacheKafka) and broker.secured):
            return KafkaSettings(bootstrap_servers=bootstrap)
        security = broker.client_security(user)
        return KafkaSettings(
            bootstrap_servers=bootstrap,
            security_protocol=str(security["security_protocol"]),
            sasl_mechanism=str(security["sasl_mechanism"]),
            sasl_username=user,
            sasl_password=str(security["sasl_plain_password"]),
            ssl_cafile=str(security["ssl_cafile"]),
        )

    def superuser_password(self) -> str:
        """The generated `postgres` password (for tests and admin work; never printed by the CLI)."""
        return self.postgres.passwords()[SUPERUSER]

    def status(self) -> list[ComponentStatus]:
        state = self._read_state()
        out = []
        for name in COMPONENTS:
            mode = str(state.get(name, "local"))
            if mode == "external":
                address = self.existing_kafka if name == "kafka" else self._configured(name).split("=", 1)[-1]
                out.append(ComponentStatus(name, mode, self.is_up(name), address or ""))
                continue
            pid = self.pid(name)
            if mode == "unused" and pid is None:
                out.append(ComponentStatus(name, mode, False, ""))
                continue
            up = pid is not None and self.is_up(name)
            out.append(ComponentStatus(name, "local", up, self._address(name), pid, self.log_path(name)))
        return out

    def _address(self, name: str) -> str:
        if name == "kafka" and self.kafka_impl() == "apache":
            return self.kafka_bootstrap
        return f"{HOST}:{self.ports[name]}"

    def down(self) -> None:
        """Stop every process this stack started (by pidfile); data and passwords stay."""
        with self._locked():
            self.broker.stop()  # before ZooKeeper, so it deregisters cleanly
            self._stop_other_brokers()
            self.zookeeper.stop()
            if self.pg_dir.exists():
                self.postgres.stop()

    def _stop_other_brokers(self) -> None:
        """Brokers of a cluster this object was not built for (`down` without TXMON_KAFKA_BROKERS
        in a shell where `up` had it): stopped by their pidfiles all the same."""
        rt = Runtime(self.state_dir, self.environ, stop_timeout_s=60.0)
        for pidfile in sorted((self.state_dir / "run").glob("kafka-*.pid")):
            broker_id = pidfile.stem.removeprefix("kafka-")
            if not broker_id.isdigit() or int(broker_id) < self.kafka_brokers:
                continue
            port = self.ports["kafka"] + int(broker_id)
            ApacheKafka(rt, port, self.zookeeper, broker_id=int(broker_id), brokers=int(broker_id) + 1).stop()

    def destroy(self) -> None:
        """`down()`, then remove the state dir (and a relocated PostgreSQL folder): all data is lost."""
        with self._locked():
            self.down()
            self.postgres.remove_relocated()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        log.info("removed %s", self.state_dir)

    # ---- a database per test or benchmark run ------------------------------------------------------

    def _admin_connect(self) -> psycopg2.extensions.connection:
        """As the superuser where this stack runs PostgreSQL (the owner role may not create
        databases); on a configured server as its migration role, which then needs CREATEDB."""
        if self._mode("postgres") != "external" or self.existing_postgres is None:
            conn = self.postgres.connect_superuser()
        else:
            conn = psycopg2.connect(self.existing_postgres.dsn(migration=True))
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        return conn

    def create_database(self, name: str) -> PostgresSettings:
        """A new empty database owned by the owner role, with the database privileges of
        utils/roles.py (as the stack's own has them); returns the settings to reach it."""
        pg = self.env().postgres_settings()
        with contextlib.closing(self._admin_connect()) as conn, conn.cursor() as cur:
            cur.execute(roles.create_database_statement(name, pg.migration_user or pg.user))
            try:
                names = roles.RoleNames.from_settings(pg)
            except ConfigError:
                return dataclasses.replace(pg, db=name)  # one role for everything: nothing to separate
            roles.grant_database_privileges(cur, name, names)
        return dataclasses.replace(pg, db=name)

    def drop_database(self, name: str, *, timeout_s: float = 30.0) -> None:
        """Drop it, also while sessions linger or the server restarts (a test may have just
        stopped it); a StackError after `timeout_s`."""
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with contextlib.closing(self._admin_connect()) as conn, conn.cursor() as cur:
                    cur.execute(statement)
                return
            except (psycopg2.Error, StackError) as exc:
                # The owner role may not end the app role's sessions (FORCE needs that): wait them out.
                if time.monotonic() > deadline:
                    raise StackError(f"database {name} not dropped after {timeout_s:.0f} s: {exc}") from exc
                time.sleep(0.5)

    def __enter__(self) -> LocalStack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
