"""Apache Kafka in ZooKeeper mode, as the Compose design runs it: the jars, ZooKeeper, one broker
(or a cluster of brokers on one ZooKeeper: TXMON_KAFKA_BROKERS=3, `KafkaCluster`).

The jars come from `stack/kafka/pom.xml` (the one place Kafka's version is pinned), resolved once
with Maven into `${TXMON_CACHE_DIR:-~/.cache/txmon}/kafka-<version>-<pom hash>/lib`, or from
TXMON_KAFKA_LIB_DIR. Where Maven cannot work, `MavenUnavailable` tells the orchestrator to fall
back to tansu (stack/tansu.py). The Compose image (docker/kafka-entrypoint.sh) runs the same
command lines and properties; tests/unit/test_compose.py holds the two together.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from reports.zookeeper import zk_command
from stack import kafka_security
from stack.common import (
    HOST,
    Daemon,
    Runtime,
    cache_dir,
    file_lock,
    kafka_answers,
    render_properties,
    write_atomic,
)
from utils.config import REPO_ROOT
from utils.errors import StackError

log = logging.getLogger(__name__)

KAFKA_POM = REPO_ROOT / "stack" / "kafka" / "pom.xml"
LOG4J_PROPERTIES = REPO_ROOT / "stack" / "kafka" / "log4j.properties"
ZK_HEAP = "-Xmx256m"
KAFKA_HEAP = "-Xmx512m"
BROKER_ID = 0
# Replication the project asks for when a cluster runs: three copies, and a write acknowledged
# (acks=all) only once two of them hold it, so one broker may die or restart without losing an
# acknowledged record or stopping the producer (Kafka's own recommendation for RF 3).
CLUSTER_REPLICATION = 3
CLUSTER_MIN_INSYNC = 2
# Shorter than Kafka's 18 s default: after a broker is SIGKILLed its registration in ZooKeeper
# lives until this session expires, and a restart has to wait for that.
KAFKA_ZK_SESSION_TIMEOUT_MS = 6000


# --------------------------------------------------------------------------------------------
# Configuration (pure)
# --------------------------------------------------------------------------------------------


def zookeeper_properties(data_dir: Path, port: int) -> dict[str, object]:
    return {
        "dataDir": data_dir,
        "clientPort": port,
        "clientPortAddress": HOST,
        "tickTime": 2000,
        "maxClientCnxns": 0,
        # The admin server would take port 8080, which Airflow wants.
        "admin.enableServer": "false",
        # `ruok` is the readiness check; `dump` lists ephemeral nodes (a dead broker's registration).
        "4lw.commands.whitelist": "ruok,srvr,mntr,dump",
        # Keep a few snapshots instead of letting the data dir grow forever.
        "autopurge.snapRetainCount": 3,
        "autopurge.purgeInterval": 1,
    }


def replication_settings(brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of `brokers`: 1/1 on one broker,
    3/2 from three on (two brokers: 2/1, so that one may restart without stopping writes)."""
    if brokers < 1:
        raise StackError(f"TXMON_KAFKA_BROKERS={brokers}: at least 1")
    factor = min(CLUSTER_REPLICATION, brokers)
    return factor, (CLUSTER_MIN_INSYNC if factor >= CLUSTER_REPLICATION else 1)


def kafka_properties(
    log_dir: Path,
    port: int,
    zk_port: int,
    *,
    partitions: int = 6,
    broker_id: int = BROKER_ID,
    brokers: int = 1,
) -> dict[str, object]:
    """One broker in ZooKeeper mode, as in the Compose design; replication sized to the cluster."""
    factor, min_isr = replication_settings(brokers)
    return {
        "broker.id": broker_id,
        "listeners": f"PLAINTEXT://{HOST}:{port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "log.dirs": log_dir,
        "zookeeper.connect": f"{HOST}:{zk_port}",
        "zookeeper.session.timeout.ms": KAFKA_ZK_SESSION_TIMEOUT_MS,
        "num.partitions": partitions,
        # Internal topics (group offsets, transactions) and topics created without a factor get
        # the cluster's; min.insync.replicas is what acks=all waits for.
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "default.replication.factor": factor,
        "min.insync.replicas": min_isr,
        # A single member joins at once instead of waiting 3 s for others.
        "group.initial.rebalance.delay.ms": 0,
        "delete.topic.enable": "true",
        # Every topic refuses records stamped more than an hour after the broker's clock: the
        # client's CreateTime is what event time is judged against (utils/kafka_cleanup.py).
        "log.message.timestamp.after.max.ms": 3_600_000,
    }


def java_argv(
    java: str, heap: str, main_class: str, config: Path, lib: Path, jvm_args: tuple[str, ...] = ()
) -> list[str]:
    """The JVM command line of both servers (and of docker/kafka-entrypoint.sh); `jvm_args`: the
    JAAS file of a secured stack."""
    return [
        java,
        heap,
        "-Djava.awt.headless=true",
        "-XX:+ExitOnOutOfMemoryError",
        *jvm_args,
        f"-Dlog4j.configuration=file:{LOG4J_PROPERTIES}",
        "-cp",
        f"{lib}/*",
        main_class,
        str(config),
    ]


def topics_in_log_dir(log_dir: Path) -> set[str]:
    """Topics a broker holds on disk: its log dir has one `<topic>-<partition>` folder per partition
    (deleted ones end in `-delete`, moving ones in `-future`/`-stray`: not matched)."""
    try:
        names = [p.name for p in log_dir.iterdir() if p.is_dir()]
    except OSError:
        return set()
    return {m.group(1) for n in names if (m := re.fullmatch(r"(.+)-(\d+)", n))}


def pom_kafka_version(pom_text: str) -> str:
    """The `<kafka.version>` property of stack/kafka/pom.xml."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom_text)
    if not match:
        raise StackError(f"{KAFKA_POM}: no <kafka.version> property; it is the one place the version is set")
    return match.group(1)


def pom_digest(pom_bytes: bytes) -> str:
    return hashlib.sha256(pom_bytes).hexdigest()


def find_java(environ: Mapping[str, str]) -> str:
    java_home = environ.get("JAVA_HOME", "")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise StackError(
            "java not found: Kafka and ZooKeeper need Java 11+ (17 tested). "
            "Install it (apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
        )
    return found


# --------------------------------------------------------------------------------------------
# Kafka's jars: resolved once per pom into the cache
# --------------------------------------------------------------------------------------------


class MavenUnavailable(StackError):
    """Kafka's jars cannot be had from Maven Central here (no mvn, no network): the case the
    tansu fallback broker exists for."""


_NETWORK_ERRORS = re.compile(
    r"Could not transfer|Could not resolve|UnknownHost|Connection refused|Network is unreachable|"
    r"Connect to .* failed|timed out|Temporary failure in name resolution|offline mode|"
    # The first download is the dependency plugin itself; when it fails Maven says this instead.
    r"No plugin found for prefix|Plugin .* could not be resolved",
    re.IGNORECASE,
)


def _lib_ready(lib: Path, stamp: Path, digest: str) -> bool:
    try:
        return stamp.read_text().strip() == digest and any(lib.glob("kafka_2.*.jar"))
    except OSError:
        return False


def kafka_lib_dir(
    pom: Path = KAFKA_POM, *, environ: Mapping[str, str] | None = None, maven_timeout_s: float = 900.0
) -> Path:
    """The folder of Kafka's runtime jars, resolving it with Maven the first time.

    The folder is named after the pom's hash: editing the pom resolves into a new one, and two
    checkouts with different poms (branches, worktrees) never replace each other's jars under a
    running broker. Resolution runs under a file lock so two processes never download into the
    same folder at once.
    `TXMON_KAFKA_LIB_DIR` points at a ready folder instead (e.g. a Kafka 3.9 distribution's libs/).
    """
    environ = os.environ if environ is None else environ
    override = environ.get("TXMON_KAFKA_LIB_DIR", "").strip()
    if override:
        lib = Path(override).expanduser()
        if not any(lib.glob("kafka_2.*.jar")) or not any(lib.glob("zookeeper-*.jar")):
            raise StackError(
                f"TXMON_KAFKA_LIB_DIR={lib} holds no kafka_2.*.jar and zookeeper-*.jar: point it at "
                "a Kafka 3.9 distribution's libs/ folder, or unset it to resolve the jars with Maven"
            )
        return lib
    pom_bytes = pom.read_bytes()
    version = pom_kafka_version(pom_bytes.decode())
    digest = pom_digest(pom_bytes)
    base = cache_dir(environ) / f"kafka-{version}-{digest[:12]}"
    lib, stamp = base / "lib", base / "pom.sha256"
    if _lib_ready(lib, stamp, digest):
        return lib
    with file_lock(base.parent / f"{base.name}.lock"):
        if _lib_ready(lib, stamp, digest):  # another process resolved it while we waited
            return lib
        _resolve_jars(pom, base, lib, stamp, digest, version, maven_timeout_s)
    return lib


def _resolve_jars(
    pom: Path, base: Path, lib: Path, stamp: Path, digest: str, version: str, timeout_s: float
) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise MavenUnavailable(
            "mvn not found: the local stack resolves Apache Kafka's jars from Maven Central once. "
            "Install Maven (apt-get install maven), or set TXMON_KAFKA_LIB_DIR to a Kafka 3.9 libs/ folder."
        )
    find_java(os.environ)  # mvn needs it too; name the fix before Maven fails obscurely
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f"lib.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("resolving Apache Kafka %s jars with Maven into %s (once; ~50 MB)", version, lib)
    started = time.monotonic()
    argv = [
        mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            argv, cwd=base, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MavenUnavailable(
            f"mvn did not finish in {timeout_s:.0f} s resolving Kafka {version}: is Maven Central reachable "
            "(proxy/mirror in ~/.m2/settings.xml)? Or set TXMON_KAFKA_LIB_DIR to a Kafka 3.9 libs/ folder."
        ) from None
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr).strip()  # Maven's colours
    if result.returncode != 0 or not any(tmp.glob("kafka_2.*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join("    " + line for line in output.splitlines()[-20:])
        if _NETWORK_ERRORS.search(output):
            raise MavenUnavailable(
                f"Maven could not download Apache Kafka {version} from Maven Central. Fix the network "
                "or the proxy/mirror in ~/.m2/settings.xml, or set TXMON_KAFKA_LIB_DIR to a Kafka 3.9 "
                f"distribution's libs/ folder. mvn said:\n{tail}"
            )
        raise StackError(f"mvn failed resolving {pom} (exit {result.returncode}):\n{tail}")
    if lib.exists():
        shutil.rmtree(lib)
    tmp.rename(lib)
    write_atomic(stamp, digest + "\n")
    jars = list(lib.glob("*.jar"))
    log.info("resolved %d jars in %.1f s", len(jars), time.monotonic() - started)


# --------------------------------------------------------------------------------------------
# The two processes
# --------------------------------------------------------------------------------------------


class ZooKeeper(Daemon):
    name = "zookeeper"

    @property
    def config(self) -> Path:
        return self.home / "zk.properties"

    def marker(self) -> str:
        return str(self.config)

    def answers(self) -> bool:
        return zk_command(self.port, "ruok") == "imok"

    @property
    def secured(self) -> bool:
        """TXMON_KAFKA_SECURITY=sasl_ssl: SASL (DIGEST-MD5) logins only, the broker's user alone."""
        return kafka_security.wanted_security(self.rt.environ) == "sasl_ssl"

    @property
    def jaas(self) -> Path:
        return self.home / "jaas.conf"

    def runs_secured(self) -> bool | None:
        """Whether the ZooKeeper last started from this home takes SASL logins only (None: never
        started). A running one is reused, so the broker must match it, not the environment."""
        try:
            return "enforce.auth.enabled=true" in self.config.read_text()
        except OSError:
            return None

    def argv(self) -> list[str]:
        lib = kafka_lib_dir(environ=self.rt.environ)
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = zookeeper_properties(data, self.port)
        jvm_args: tuple[str, ...] = ()
        if self.secured:
            password = kafka_security.zookeeper_password(self.rt.state_dir)
            write_atomic(self.jaas, kafka_security.zookeeper_server_jaas(password), mode=0o600)
            props.update(kafka_security.ZOOKEEPER_SASL_PROPERTIES)
            jvm_args = (f"-Djava.security.auth.login.config={self.jaas}",)
        self.config.write_text(render_properties(props))
        log.info(
            "starting zookeeper on %s:%d%s", HOST, self.port, " (SASL logins only)" if self.secured else ""
        )
        main_class = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
        return java_argv(find_java(self.rt.environ), ZK_HEAP, main_class, self.config, lib, jvm_args)


class ApacheKafka(Daemon):
    """The broker (component `kafka`); starting it starts its ZooKeeper first."""

    name = "kafka"

    def __init__(
        self,
        rt: Runtime,
        port: int,
        zookeeper: ZooKeeper,
        *,
        partitions: int = 6,
        broker_id: int = BROKER_ID,
        brokers: int = 1,
    ) -> None:
        super().__init__(rt, port)
        self.zookeeper = zookeeper
        self.partitions = partitions
        self.broker_id = broker_id
        self.brokers = brokers  # the cluster's size: replication settings follow it
        # Broker 0 keeps the single broker's files (kafka/, logs/kafka.log, run/kafka.pid), so a
        # one-broker state dir stays what it was; the others get kafka-1/, kafka-2/, ...
        if broker_id != BROKER_ID:
            self.name = f"kafka-{broker_id}"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def config(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def marker(self) -> str:
        return str(self.config)

    def ready(self) -> bool:
        if self.brokers > 1:
            # A cluster member is ready once registered: its topics' leaders may be brokers that
            # are still down (KafkaCluster waits for them once every member runs).
            return kafka_answers(self.bootstrap, timeout_s=2.0, expect_brokers=[self.broker_id])
        return kafka_answers(
            self.bootstrap,
            timeout_s=2.0,
            expect_topics=topics_in_log_dir(self.data_dir),
            security=self.client_security(kafka_security.BROKER_USER),
        )

    # ---- TXMON_KAFKA_SECURITY=sasl_ssl ---------------------------------------------------------

    @property
    def secured(self) -> bool:
        return kafka_security.wanted_security(self.rt.environ) == "sasl_ssl"

    @property
    def tls_dir(self) -> Path:
        return self.rt.state_dir / "kafka-tls"

    def user_passwords(self) -> dict[str, str]:
        """The generated password of each Kafka user (kafka_security.USERS); {} when plaintext."""
        return kafka_security.user_passwords(self.rt.state_dir) if self.secured else {}

    def client_security(self, user: str) -> dict[str, object]:
        """kafka-python keyword arguments to connect as `user` ({} when the broker is plaintext)."""
        if not self.secured:
            return {}
        return {
            "security_protocol": "SASL_SSL",
            "ssl_cafile": str(self.tls_dir / "ca.pem"),
            "sasl_mechanism": kafka_security.MECHANISM,
            "sasl_plain_username": user,
            "sasl_plain_password": self.user_passwords()[user],
        }

    def _provision(self) -> None:
        from kafka import KafkaAdminClient

        env = self.rt.environ
        grants = kafka_security.service_acls(
            env.get("KAFKA_TOPIC") or "transactions",
            env.get("KAFKA_DLQ_TOPIC") or "transactions.dlq",
            env.get("KAFKA_CONSUMER_GROUP") or "transaction-processor",
        )
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="txmon-local-stack-provision",
            **self.client_security(kafka_security.BROKER_USER),  # type: ignore[arg-type]
        )
        try:
            kafka_security.provision_users_and_acls(admin, self.user_passwords(), grants)
        finally:
            admin.close()
        log.info(
            "kafka: SASL_SSL on %s, users %s, ACLs applied", self.bootstrap, ", ".join(kafka_security.USERS)
        )

    def start(self) -> None:
        self.zookeeper.start()
        self._start_broker()
        if self.secured:
            self._provision()

    def _start_broker(self) -> None:
        try:
            super().start()
        except StackError as error:
            if "NodeExistsException" in str(error):
                # A ZooKeeper restarted after an unclean stop restores the dead broker's session
                # from its log and lists it only once loaded, so _wait_broker_deregistered can miss
                # it; the session expires KAFKA_ZK_SESSION_TIMEOUT_MS after ZooKeeper's start.
                log.info(
                    "kafka: the previous broker's ZooKeeper session was still alive; retrying once it expires"
                )
                time.sleep(KAFKA_ZK_SESSION_TIMEOUT_MS / 1000 + 2)
            elif "SessionExpiredException" in str(error):
                # On a starved machine (a 2-core box at load 30) the broker's own new ZooKeeper
                # session can expire before its start-up is done; it exits. Nothing was half made:
                # start it again.
                log.info("kafka: its ZooKeeper session expired during start-up (a loaded machine?); retrying")
            else:
                raise
            super().start()

    def argv(self) -> list[str]:
        self._wait_broker_deregistered()
        lib = kafka_lib_dir(environ=self.rt.environ)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = kafka_properties(
            self.data_dir,
            self.port,
            self.zookeeper.port,
            partitions=self.partitions,
            broker_id=self.broker_id,
            brokers=self.brokers,
        )
        java = find_java(self.rt.environ)
        jvm_args = self._zookeeper_login()
        if jvm_args:
            props["zookeeper.set.acl"] = "true"  # the znodes it creates: writable by its ZooKeeper user only
        if self.secured:
            props.update(self._secured_properties(java, lib, jvm_args))
        write_atomic(self.config, render_properties(props), mode=0o600)  # it holds the broker's password
        log.info("starting kafka on %s (ZooKeeper mode, broker %d)", self.bootstrap, self.broker_id)
        return java_argv(java, KAFKA_HEAP, "kafka.Kafka", self.config, lib, jvm_args)

    def _zookeeper_login(self) -> tuple[str, ...]:
        """The JVM argument of the broker's JAAS login to a SASL-only ZooKeeper; () for an open one.
        What the running ZooKeeper wants decides: a mismatch with the environment is an error."""
        zk_secured = bool(self.zookeeper.runs_secured())
        if zk_secured != self.secured:
            raise StackError(
                f"ZooKeeper in {self.zookeeper.home} runs {'with' if zk_secured else 'without'} SASL logins "
                f"but TXMON_KAFKA_SECURITY asks for {'sasl_ssl' if self.secured else 'plaintext'}: "
                "stop the stack (python -m stack down) and start it again with one setting"
            )
        if not zk_secured:
            return ()
        jaas = self.home / "jaas.conf"
        password = kafka_security.zookeeper_password(self.rt.state_dir)
        write_atomic(jaas, kafka_security.zookeeper_client_jaas(password), mode=0o600)
        return (f"-Djava.security.auth.login.config={jaas}",)

    def _secured_properties(self, java: str, lib: Path, jvm_args: tuple[str, ...]) -> dict[str, object]:
        kafka_security.ensure_certificates(self.tls_dir)
        password = self.user_passwords()[kafka_security.BROKER_USER]
        # Once per ZooKeeper data dir (a JVM start costs seconds): a new ZooKeeper gets the user again.
        marker = self.zookeeper.home / "data" / "txmon-broker-user"
        if not marker.exists() or marker.read_text().strip() != _digest(password):
            log.info("kafka: creating the broker's SCRAM user in ZooKeeper")
            prefix = java_argv(java, "-Xmx128m", "", Path(), lib, jvm_args)[:-2]
            kafka_security.create_broker_user(prefix, f"{HOST}:{self.zookeeper.port}", password)
            write_atomic(marker, _digest(password) + "\n")
        return kafka_security.broker_properties(HOST, self.port, self.tls_dir, password)

    def hint(self, log_text: str) -> str:
        if "InconsistentClusterIdException" in log_text:
            return (
                f"\nfix: the broker's data ({self.data_dir}) belongs to another ZooKeeper cluster: "
                "remove that folder (its topics are lost) or restore the ZooKeeper data"
            )
        return ""

    def _wait_broker_deregistered(self) -> None:
        """After a SIGKILL the dead broker's ZooKeeper registration lives until its session expires;
        a broker started before that refuses to register (NodeExists). Wait it out."""
        deadline = time.monotonic() + KAFKA_ZK_SESSION_TIMEOUT_MS / 1000 + 10
        waited = False
        registration = re.compile(rf"/brokers/ids/{self.broker_id}\b")
        while registration.search(zk_command(self.zookeeper.port, "dump")):
            if time.monotonic() > deadline:
                raise StackError(
                    f"broker {self.broker_id} is still registered in ZooKeeper on port {self.zookeeper.port}: "
                    "is another broker using it? Stop that broker or give this stack its own ZooKeeper port"
                )
            if not waited:
                log.info("waiting for the previous broker's ZooKeeper session to expire")
                waited = True
            time.sleep(0.5)


class KafkaCluster:
    """Brokers 0..n-1 on one ZooKeeper, as component `kafka` (TXMON_KAFKA_BROKERS=n, n > 1).

    Broker i listens on the i-th port, has its own log dir, pidfile and log (`kafka`, `kafka-1`,
    `kafka-2`, ...), and broker.id i. Members start one after the other, each ready once it is
    registered; the cluster is ready when every member is registered and every topic on disk has
    a leader (after a full stop a partition's last in-sync replica may be the last broker to
    start, so no single member can wait for that). `member(i)` is what fault tests stop and start.
    """

    name = "kafka"
    secured = False  # SASL_SSL runs on one broker only (stack/kafka_security.py)

    def __init__(
        self, rt: Runtime, ports: Sequence[int], zookeeper: ZooKeeper, *, partitions: int = 6
    ) -> None:
        if len(ports) < 2 or len(set(ports)) != len(ports):
            raise StackError(f"a Kafka cluster needs two or more different ports, got {list(ports)}")
        self.rt = rt
        self.zookeeper = zookeeper
        self.members = [
            ApacheKafka(rt, port, zookeeper, partitions=partitions, broker_id=i, brokers=len(ports))
            for i, port in enumerate(ports)
        ]

    @property
    def port(self) -> int:
        return self.members[0].port

    @property
    def bootstrap(self) -> str:
        """Every member: a client that starts while one of them is down still finds the cluster."""
        return ",".join(m.bootstrap for m in self.members)

    @property
    def log_path(self) -> Path:
        return self.members[0].log_path

    def member(self, broker_id: int) -> ApacheKafka:
        if not 0 <= broker_id < len(self.members):
            raise StackError(f"no broker {broker_id}: this cluster has brokers 0-{len(self.members) - 1}")
        return self.members[broker_id]

    def pid(self) -> int | None:
        """A live member's PID: the cluster is this stack's while any of its brokers runs."""
        return next((pid for m in self.members if (pid := m.pid()) is not None), None)

    def is_up(self) -> bool:
        return all(m.is_up() for m in self.members)

    def ready(self, *, in_sync: bool = False) -> bool:
        """Every member registered and every topic on disk led; `in_sync`: also every replica
        back in its partition's ISR (what a rolling restart waits for before the next bounce)."""
        topics: set[str] = set()
        for m in self.members:
            topics |= topics_in_log_dir(m.data_dir)
        return kafka_answers(
            self.bootstrap,
            timeout_s=3.0,
            expect_topics=topics,
            expect_brokers=range(len(self.members)),
            expect_in_sync=in_sync,
        )

    def wait_ready(self, *, in_sync: bool = False, timeout_s: float | None = None) -> float:
        """Until `ready(in_sync=...)`; the seconds it took, or a StackError naming the members' logs."""
        started = time.monotonic()
        deadline = started + (self.rt.start_timeout_s if timeout_s is None else timeout_s)
        while not self.ready(in_sync=in_sync):
            if time.monotonic() > deadline:
                logs = ", ".join(str(m.log_path) for m in self.members)
                raise StackError(
                    f"the Kafka cluster ({self.bootstrap}) has no leader for some topic"
                    f"{' or a replica out of sync' if in_sync else ''} after "
                    f"{time.monotonic() - started:.0f} s; see {logs}"
                )
            time.sleep(0.3)
        return time.monotonic() - started

    def start(self) -> None:
        self.zookeeper.start()
        for m in self.members:
            m.start()
        waited = self.wait_ready()
        log.info(
            "kafka cluster of %d brokers ready on %s (%.1f s for leaders)",
            len(self.members),
            self.bootstrap,
            waited,
        )

    def stop(self, *, kill: bool = False) -> None:
        for m in reversed(self.members):
            m.stop(kill=kill)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
