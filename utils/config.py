"""The one settings object: read once from the environment (and `.env`), frozen, passed down.

Every field names the environment variable it comes from; `.env.example` documents exactly
these variables (a unit test keeps the two in step). Command-line flags of the entry points
override individual fields via `dataclasses.replace` and say in `--help` which variable they
fall back to.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from utils.errors import ConfigError
from utils.kafka_net import net_client
from utils.money import RateTable, parse_rates

REPO_ROOT = Path(__file__).resolve().parents[1]


def env(name: str, default: Any, help: str = "", secret: bool = False) -> Any:
    """A dataclass field bound to environment variable `name`."""
    return field(
        default=default,
        repr=not secret,
        metadata={"env": name, "help": help, "secret": secret},
    )


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str = env("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "host:port[,host:port]")
    topic: str = env("KAFKA_TOPIC", "transactions", "topic the producer writes and the consumer reads")
    dlq_topic: str = env("KAFKA_DLQ_TOPIC", "transactions.dlq", "dead-letter topic for rejected messages")
    consumer_group: str = env("KAFKA_CONSUMER_GROUP", "transaction-processor", "consumer group id")
    topic_partitions: int = env("KAFKA_TOPIC_PARTITIONS", 6, "partitions when the topic is created")
    replication_factor: int = env(
        "KAFKA_REPLICATION_FACTOR",
        1,
        "replication when topics are created (3 or more: min.insync.replicas=2)",
    )
    security_protocol: str = env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: str = env(
        "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (SASL_* only)"
    )
    sasl_username: str = env("KAFKA_SASL_USERNAME", "", "this service's Kafka user (SASL_* only)")
    sasl_password: str = env("KAFKA_SASL_PASSWORD", "", secret=True)
    ssl_cafile: str = env(
        "KAFKA_SSL_CAFILE", "", "PEM file of the CA that signed the broker's certificate (empty: system CAs)"
    )

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol!r}: use one of "
                f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        if protocol.startswith("SASL_"):
            if self.sasl_mechanism.upper() not in KAFKA_SASL_MECHANISMS:
                raise ConfigError(
                    f"KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}: use one of {', '.join(KAFKA_SASL_MECHANISMS)}"
                )
            if not self.sasl_username or not self.sasl_password:
                raise ConfigError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD "
                    "(this service's Kafka user): set both in the environment or .env"
                )
        if self.ssl_cafile and not Path(self.ssl_cafile).is_file():
            raise ConfigError(
                f"KAFKA_SSL_CAFILE={self.ssl_cafile} is not a readable file: point it at the CA's PEM "
                "certificate (the native stack prints it with `make stack-env`)"
            )

    def client_security(self) -> dict[str, Any]:
        """kafka-python keyword arguments for these settings; every producer, consumer and admin
        client of the project passes them (so none can connect in plaintext by accident)."""
        protocol = self.security_protocol.upper()
        out: dict[str, Any] = {"security_protocol": protocol}
        if protocol in ("SSL", "SASL_SSL"):
            # Hostname checking stays on: the broker's certificate names the host clients dial.
            out["ssl_check_hostname"] = True
            if self.ssl_cafile:
                out["ssl_cafile"] = self.ssl_cafile
        if protocol.startswith("SASL_"):
            out["sasl_mechanism"] = self.sasl_mechanism.upper()
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = self.sasl_password
        return out

    def client_kwargs(self) -> dict[str, Any]:
        """`client_security()` plus the brokers: everything a kafka-python client needs to connect."""
        return {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "kafka_client": net_client,
            **self.client_security(),
        }

    def as_user(self, username: str, password: str) -> KafkaSettings:
        """The same cluster as another Kafka user (tests, the stack's own admin work)."""
        return dataclasses.replace(self, sasl_username=username, sasl_password=password)


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
POSTGRES_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    host: str = env("POSTGRES_HOST", "localhost")
    port: int = env("POSTGRES_PORT", 5432)
    db: str = env("POSTGRES_DB", "transactions")
    user: str = env("POSTGRES_USER", "txmon_app", "the least-privilege role the pipeline runs as")
    password: str = env("POSTGRES_PASSWORD", "", secret=True)
    migration_user: str = env(
        "POSTGRES_MIGRATION_USER", "", "owner role that applies migrations (empty: POSTGRES_USER)"
    )
    migration_password: str = env("POSTGRES_MIGRATION_PASSWORD", "", secret=True)
    # Only `python -m utils.roles provision` (Compose's db-roles service) reads it.
    superuser_password: str = env("POSTGRES_SUPERUSER_PASSWORD", "", secret=True)
    retention_user: str = env(
        "POSTGRES_RETENTION_USER", "txmon_retention", "the role the retention cleanup deletes old rows as"
    )
    retention_password: str = env("POSTGRES_RETENTION_PASSWORD", "", secret=True)
    console_user: str = env(
        "POSTGRES_CONSOLE_USER",
        "txmon_console",
        "the role the analysts' console logs in as: reads the pipeline's tables, writes only its own",
    )
    console_password: str = env("POSTGRES_CONSOLE_PASSWORD", "", secret=True)
    pool_max: int = env("POSTGRES_POOL_MAX", 4)
    connect_timeout_s: int = env("POSTGRES_CONNECT_TIMEOUT", 5)
    statement_timeout_ms: int = env("POSTGRES_STATEMENT_TIMEOUT_MS", 60000)
    sslmode: str = env(
        "POSTGRES_SSLMODE",
        "",
        "libpq's sslmode: disable, allow, prefer, require, verify-ca or verify-full (empty: libpq's default, prefer)",
    )
    sslrootcert: str = env(
        "POSTGRES_SSLROOTCERT",
        "",
        "PEM file of the CA that signed the server's certificate (verify-ca, verify-full)",
    )

    def __post_init__(self) -> None:
        if self.sslmode and self.sslmode not in POSTGRES_SSLMODES:
            raise ConfigError(f"POSTGRES_SSLMODE={self.sslmode!r}: use one of {', '.join(POSTGRES_SSLMODES)}")
        if self.sslrootcert and not Path(self.sslrootcert).is_file():
            raise ConfigError(
                f"POSTGRES_SSLROOTCERT={self.sslrootcert} is not a readable file: point it at the CA's PEM "
                "certificate (Compose: docs/compose.md says how to copy it out of the stack)"
            )
        if self.sslmode.startswith("verify-") and not self.sslrootcert:
            raise ConfigError(
                f"POSTGRES_SSLMODE={self.sslmode} checks the server's certificate against a CA: set "
                "POSTGRES_SSLROOTCERT to that CA's PEM file"
            )

    def tls_params(self) -> dict[str, str]:
        """libpq's TLS keywords, only those set (libpq's defaults otherwise)."""
        return {k: v for k, v in (("sslmode", self.sslmode), ("sslrootcert", self.sslrootcert)) if v}

    def dsn(self, *, migration: bool = False) -> str:
        """A libpq key/value DSN. Values are quoted so spaces or quotes in a password work."""
        user, password = self.user, self.password
        if migration and self.migration_user:
            user, password = self.migration_user, self.migration_password
        parts = {
            "host": self.host,
            "port": str(self.port),
            "dbname": self.db,
            "user": user,
            "password": password,
            "connect_timeout": str(self.connect_timeout_s),
            "application_name": "txmon",
            **self.tls_params(),
        }
        return " ".join(f"{k}={_libpq_quote(v)}" for k, v in parts.items() if v != "")

    def as_retention(self) -> PostgresSettings:
        """The same database as the retention role, which alone may delete old rows."""
        if not self.retention_password:
            raise ConfigError(
                f"POSTGRES_RETENTION_PASSWORD is not set: the cleanup deletes old rows as the role "
                f"{self.retention_user!r} (POSTGRES_RETENTION_USER), since the app role may not delete"
            )
        return dataclasses.replace(self, user=self.retention_user, password=self.retention_password)

    def as_console(self) -> PostgresSettings:
        """The same database as the console's role, which may write only the console's tables."""
        if not self.console_password:
            raise ConfigError(
                f"POSTGRES_CONSOLE_PASSWORD is not set: the console signs in to PostgreSQL as the role "
                f"{self.console_user!r} (POSTGRES_CONSOLE_USER); set its password in .env"
            )
        return dataclasses.replace(self, user=self.console_user, password=self.console_password)


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    max_poll_records: int = env("CONSUMER_MAX_POLL_RECORDS", 5000, "messages per batch (one DB txn)")
    poll_timeout_ms: int = env("CONSUMER_POLL_TIMEOUT_MS", 500)
    max_idle_seconds: float = env(
        "CONSUMER_MAX_IDLE_SECONDS", 0.0, "exit after this long without messages (0: run until stopped)"
    )
    session_timeout_ms: int = env("CONSUMER_SESSION_TIMEOUT_MS", 10000)
    db_retry_max_backoff_s: float = env("CONSUMER_DB_RETRY_MAX_BACKOFF_SECONDS", 10.0)
    stall_restart_s: float = env(
        "CONSUMER_STALL_RESTART_SECONDS",
        60.0,
        "a partition with messages waiting at the broker that returns none this long (while polled) "
        "gets the consumer a new Kafka client (0: never)",
    )
    idle_in_transaction_timeout_ms: int = env(
        "CONSUMER_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        20000,
        "the server ends a consumer session idle inside a transaction this long (a frozen process's locks)",
    )
    state_history_hours: float = env(
        "STATE_HISTORY_HOURS", 24.0, "per-account history: how far back of the evaluated event any rule looks"
    )
    state_max_events_per_account: int = env("STATE_MAX_EVENTS_PER_ACCOUNT", 50)
    state_max_accounts: int = env(
        "STATE_MAX_ACCOUNTS",
        50_000,
        "accounts held in memory; the least recently used are reloaded when needed",
    )
    health_file: str = env(
        "CONSUMER_HEALTH_FILE", "", "touched after every loop; a container healthcheck reads its age"
    )
    metrics_port: int = env("CONSUMER_METRICS_PORT", 0, "Prometheus /metrics port (0: off)")
    ruleset_check_seconds: float = env(
        "RULESET_CHECK_SECONDS",
        2.0,
        "how often a running consumer looks for a new active rule-set version (at a batch boundary)",
    )


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    max_amount: float = env(
        "VALIDATION_MAX_AMOUNT", 1_000_000.0, "in the base currency: larger amounts are rejected as absurd"
    )
    max_future_skew_s: float = env("VALIDATION_MAX_FUTURE_SECONDS", 300.0)
    max_age_days: float = env(
        "VALIDATION_MAX_AGE_DAYS", 3650.0, "older events are rejected; at most RETENTION_DAYS (see Settings)"
    )
    max_text_length: int = env("VALIDATION_MAX_TEXT_LENGTH", 256)
    max_message_bytes: int = env("VALIDATION_MAX_MESSAGE_BYTES", 16384)


@dataclass(frozen=True, slots=True)
class RuleThresholds:
    """The rules' thresholds; every amount among them is in `base_currency` (utils/money.py)."""

    base_currency: str = env("BASE_CURRENCY", "USD", "ISO 4217 code of every amount threshold")
    fx_rates: str = env(
        "FX_RATES", "", "CODE=RATE,... base units per unit, overriding the built-in table (empty: none)"
    )
    high_amount: float = env("ALERT_HIGH_AMOUNT", 10_000.0)
    velocity_count: int = env("ALERT_VELOCITY_COUNT", 8, "more than this many txns ...")
    velocity_window_s: float = env("ALERT_VELOCITY_WINDOW_SECONDS", 60.0, "... within this window")
    card_testing_max_amount: float = env("ALERT_CARD_TESTING_MAX_AMOUNT", 2.0)
    card_testing_count: int = env("ALERT_CARD_TESTING_COUNT", 4)
    card_testing_window_s: float = env("ALERT_CARD_TESTING_WINDOW_SECONDS", 600.0)
    spike_multiplier: float = env("ALERT_SPIKE_MULTIPLIER", 8.0, "times the account's median amount ...")
    spike_window_s: float = env(
        "ALERT_SPIKE_WINDOW_SECONDS", 86_400.0, "... over this much event time before"
    )
    spike_min_history: int = env("ALERT_SPIKE_MIN_HISTORY", 5)
    spike_credit_multiplier: float = env(
        "ALERT_SPIKE_CREDIT_MULTIPLIER", 0.0, "credits: times the median credit (0: credits never spike)"
    )
    spike_min_amount: float = env("ALERT_SPIKE_MIN_AMOUNT", 300.0)
    travel_max_kmh: float = env("ALERT_TRAVEL_MAX_KMH", 900.0)
    travel_min_km: float = env("ALERT_TRAVEL_MIN_KM", 500.0)
    duplicate_window_s: float = env("ALERT_DUPLICATE_WINDOW_SECONDS", 300.0)
    unusual_hour_start: int = env("ALERT_UNUSUAL_HOUR_START", 1, "local hour, inclusive")
    unusual_hour_end: int = env("ALERT_UNUSUAL_HOUR_END", 5, "local hour, exclusive")
    unusual_hour_min_amount: float = env("ALERT_UNUSUAL_HOUR_MIN_AMOUNT", 2_000.0)
    # Typology rules (docs/rules-typologies.md). Windows are capped by STATE_HISTORY_HOURS.
    high_amount_credit: float = env(
        "ALERT_HIGH_AMOUNT_CREDIT",
        50_000.0,
        "credits (deposits, refunds) from this much; debits: ALERT_HIGH_AMOUNT",
    )
    pass_through_min_amount: float = env(
        "ALERT_PASS_THROUGH_MIN_AMOUNT", 500.0, "credits this large start a cycle"
    )
    pass_through_ratio: float = env(
        "ALERT_PASS_THROUGH_RATIO", 0.8, "a debit of this share of the credit (up to 1/share) passes it on"
    )
    pass_through_max_delay_s: float = env("ALERT_PASS_THROUGH_MAX_DELAY_SECONDS", 7_200.0, "credit to debit")
    pass_through_min_cycles: int = env("ALERT_PASS_THROUGH_MIN_CYCLES", 2, "in-out cycles within the window")
    pass_through_window_s: float = env("ALERT_PASS_THROUGH_WINDOW_SECONDS", 86_400.0)
    refund_abuse_min_cycles: int = env(
        "ALERT_REFUND_ABUSE_MIN_CYCLES", 2, "purchase-refund pairs in the window"
    )
    refund_abuse_min_share: float = env(
        "ALERT_REFUND_ABUSE_MIN_SHARE",
        0.9,
        "a refund of at least this share of the purchase at that merchant",
    )
    refund_abuse_min_amount: float = env("ALERT_REFUND_ABUSE_MIN_AMOUNT", 20.0)
    refund_abuse_window_s: float = env("ALERT_REFUND_ABUSE_WINDOW_SECONDS", 86_400.0)
    takeover_min_new: int = env(
        "ALERT_TAKEOVER_MIN_NEW", 3, "debits to first-time merchants/payees within the window (a burst)"
    )
    takeover_drain_share: float = env(
        "ALERT_TAKEOVER_DRAIN_SHARE", 0.5, "... summing to this share of what the window held of its spending"
    )
    takeover_min_ratio: float = env(
        "ALERT_TAKEOVER_MIN_RATIO", 3.0, "each burst payment at least this many times the median debit"
    )
    takeover_window_s: float = env("ALERT_TAKEOVER_WINDOW_SECONDS", 3_600.0)
    takeover_min_history: int = env(
        "ALERT_TAKEOVER_MIN_HISTORY", 10, "earlier events needed to know the account's hours and payees"
    )
    takeover_payee_min_amount: float = env(
        "ALERT_TAKEOVER_PAYEE_MIN_AMOUNT", 500.0, "a first transfer to a new payee after unusual activity"
    )
    structuring_threshold: float = env("ALERT_STRUCTURING_THRESHOLD", 10_000.0, "the reporting threshold")
    structuring_margin: float = env(
        "ALERT_STRUCTURING_MARGIN", 0.1, "amounts within this share below the threshold count"
    )
    structuring_min_count: int = env("ALERT_STRUCTURING_MIN_COUNT", 3, "... this many, summing above it")
    structuring_window_s: float = env("ALERT_STRUCTURING_WINDOW_SECONDS", 86_400.0)
    invoice_min_amount: float = env(
        "ALERT_INVOICE_MIN_AMOUNT",
        2_000.0,
        "a first payment this large to a merchant/payee the account never paid",
    )
    invoice_round_unit: float = env(
        "ALERT_INVOICE_ROUND_UNIT", 100.0, "... that is a multiple of this (as sent), or ..."
    )
    invoice_multiplier: float = env("ALERT_INVOICE_MULTIPLIER", 5.0, "... this many times the median debit")
    invoice_min_history: int = env(
        "ALERT_INVOICE_MIN_HISTORY", 5, "earlier events needed to call a payee new"
    )
    dormant_idle_days: float = env(
        "ALERT_DORMANT_IDLE_DAYS", 30.0, "an account idle this long (event time) then moving ..."
    )
    dormant_min_amount: float = env("ALERT_DORMANT_MIN_AMOUNT", 1_000.0, "... at least this much")
    card_burst_categories: str = env(
        "ALERT_CARD_BURST_CATEGORIES",
        "electronics,gift_cards,crypto,wallet_topup,jewelry",
        "high-risk merchant categories, comma-separated",
    )
    card_burst_min_count: int = env(
        "ALERT_CARD_BURST_MIN_COUNT", 3, "card purchases there within the window ..."
    )
    card_burst_multiplier: float = env(
        "ALERT_CARD_BURST_MULTIPLIER", 10.0, "... summing to this many times the account's median debit ..."
    )
    card_burst_min_amount: float = env("ALERT_CARD_BURST_MIN_AMOUNT", 500.0, "... and to at least this much")
    card_burst_window_s: float = env("ALERT_CARD_BURST_WINDOW_SECONDS", 3_600.0)

    def __post_init__(self) -> None:
        self.rate_table()  # fail at start-up, naming the variables, rather than on the first message

    def rate_table(self) -> RateTable:
        """The table validation converts every amount into `base_currency` with."""
        try:
            return RateTable.create(self.base_currency, parse_rates(self.fx_rates))
        except ValueError as exc:
            raise ConfigError(f"BASE_CURRENCY={self.base_currency!r} / FX_RATES: {exc}") from None


# The record-batch codecs offered: lz4's wheel is in requirements-pipeline.txt (zstd measured the
# same for the consumer and needs another wheel; gzip costs more CPU than it saves).
PRODUCER_COMPRESSIONS = ("lz4", "none")


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    count: int = env("PRODUCER_COUNT", 0, "messages to send (0: until stopped)")
    rate: float = env("PRODUCER_RATE", 0.0, "messages per second (0: as fast as possible)")
    seed: int | None = env("PRODUCER_SEED", None, "same seed, same stream (empty: random)")
    accounts: int = env("PRODUCER_ACCOUNTS", 1000)
    account_seed: int = env(
        "PRODUCER_ACCOUNT_SEED",
        0,
        "seed of the account pool: fixed, so accounts keep their homes across runs",
    )
    fraud_rate: float = env("PRODUCER_FRAUD_RATE", 0.02, "share of messages in fraud scenarios")
    days_back: float = env(
        "PRODUCER_DAYS_BACK",
        7.0,
        "simulated clock: a stream with nothing before it on its topic starts this many days ago",
    )
    metrics_port: int = env("PRODUCER_METRICS_PORT", 0, "Prometheus /metrics port (0: off)")
    compression: str = env(
        "PRODUCER_COMPRESSION",
        "lz4",
        "record-batch compression, lz4 or none: lz4 cuts each consumer's Kafka-client CPU per message",
    )

    def __post_init__(self) -> None:
        if self.compression not in PRODUCER_COMPRESSIONS:
            raise ConfigError(
                f"PRODUCER_COMPRESSION={self.compression!r} must be one of {', '.join(PRODUCER_COMPRESSIONS)}"
            )


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Limits that turn the monitoring DAG red, and what it looks at."""

    # A run turns red when a value is strictly above its limit: a value equal to the limit passes.
    max_lag: int = env("MONITOR_MAX_LAG", 10_000, "consumer-group lag on the topic, summed over partitions")
    max_delay_p95_s: float = env(
        "MONITOR_MAX_DELAY_P95_SECONDS", 300.0, "p95 of stored time - Kafka record time (the producer's send)"
    )
    max_dlq_rate: float = env("MONITOR_MAX_DLQ_RATE", 0.05, "rejected / (stored + rejected)")
    max_disk_used_pct: float = env("MONITOR_MAX_DISK_USED_PCT", 90.0, "disk holding AIRFLOW_DATA_DIR")
    window_minutes: float = env("MONITOR_WINDOW_MINUTES", 15.0, "window for throughput, delay and DLQ rate")
    long_query_s: float = env("MONITOR_LONG_QUERY_SECONDS", 300.0, "queries older than this are reported")
    zookeeper_host: str = env("ZOOKEEPER_HOST", "", "checked with ruok/srvr when set")
    zookeeper_port: int = env("ZOOKEEPER_PORT", 2181)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and value < 0:
                raise ConfigError(f"{f.metadata['env']}={value} must not be negative")
        if self.window_minutes <= 0:
            raise ConfigError(f"MONITOR_WINDOW_MINUTES must be greater than 0, got {self.window_minutes:g}")


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """When the daily report runs and what it flags."""

    max_wait_minutes: float = env(
        "REPORT_MAX_WAIT_MINUTES",
        120.0,
        "how long after a day's end the scheduled report waits for every partition to pass it",
    )
    noisy_alert_rate: float = env(
        "REPORT_NOISY_ALERT_RATE",
        0.05,
        "a rule alerting on more than this share of a day's transactions is flagged",
    )

    def __post_init__(self) -> None:
        if self.max_wait_minutes < 0:
            raise ConfigError(f"REPORT_MAX_WAIT_MINUTES={self.max_wait_minutes:g} must not be negative")
        if not 0 < self.noisy_alert_rate <= 1:
            raise ConfigError(f"REPORT_NOISY_ALERT_RATE={self.noisy_alert_rate:g} must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """The analysts' console (console/, `python -m console serve`)."""

    port: int = env("CONSOLE_PORT", 8000, "port of the console's web page")
    address: str = env("CONSOLE_ADDRESS", "127.0.0.1", "address it listens on (0.0.0.0 in containers)")
    secure_cookies: bool = env(
        "CONSOLE_SECURE_COOKIES", False, "mark the session cookie Secure: set to true behind TLS"
    )
    session_hours: float = env("CONSOLE_SESSION_HOURS", 8.0, "a session expires this long after sign-in")
    lockout_attempts: int = env(
        "CONSOLE_LOCKOUT_ATTEMPTS", 5, "failed sign-ins in a row that lock an account ..."
    )
    lockout_minutes: float = env("CONSOLE_LOCKOUT_MINUTES", 15.0, "... for this long")
    sla_hours_low: float = env("CONSOLE_SLA_HOURS_LOW", 168.0, "a case's due time after its first low alert")
    sla_hours_medium: float = env("CONSOLE_SLA_HOURS_MEDIUM", 72.0, "... medium")
    sla_hours_high: float = env("CONSOLE_SLA_HOURS_HIGH", 24.0, "... high")
    sla_hours_critical: float = env("CONSOLE_SLA_HOURS_CRITICAL", 4.0, "... critical")

    def __post_init__(self) -> None:
        if self.lockout_attempts < 1:
            raise ConfigError(f"CONSOLE_LOCKOUT_ATTEMPTS={self.lockout_attempts} must be at least 1")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith(("sla_", "session_")) and value <= 0:
                raise ConfigError(f"{f.metadata['env']}={value:g} must be greater than 0")

    def sla_hours(self) -> dict[str, float]:
        """Hours from a case's first alert of each severity to its due time."""
        return {
            "low": self.sla_hours_low,
            "medium": self.sla_hours_medium,
            "high": self.sla_hours_high,
            "critical": self.sla_hours_critical,
        }


@dataclass(frozen=True, slots=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    validation: ValidationLimits = field(default_factory=ValidationLimits)
    rules: RuleThresholds = field(default_factory=RuleThresholds)
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    log_level: str = env("LOG_LEVEL", "INFO")
    log_format: str = env("LOG_FORMAT", "text", "text or json")
    data_dir: str = env("AIRFLOW_DATA_DIR", str(REPO_ROOT / "airflow-data"), "reports and metrics")
    retention_days: int = env(
        "RETENTION_DAYS", 3650, "the cleanup DAG deletes what is older; at least VALIDATION_MAX_AGE_DAYS"
    )
    metrics_address: str = env(
        "METRICS_ADDRESS", "127.0.0.1", "address the /metrics endpoints listen on (0.0.0.0 in containers)"
    )

    def __post_init__(self) -> None:
        check_retention(self.retention_days, self.validation.max_age_days)


def check_retention(retention_days: float, max_age_days: float) -> None:
    """Retention must keep everything validation still accepts. Cleanup deletes a transaction
    once its event time is older than RETENTION_DAYS; were that shorter than
    VALIDATION_MAX_AGE_DAYS, a late or replayed copy of a deleted event would pass validation,
    no longer be recognised as stored, and be stored a second time."""
    if retention_days < 1:
        raise ConfigError(f"RETENTION_DAYS={retention_days:g} must be at least 1")
    if retention_days < max_age_days:
        raise ConfigError(
            f"RETENTION_DAYS={retention_days:g} is shorter than VALIDATION_MAX_AGE_DAYS={max_age_days:g}: "
            "cleanup would delete events the consumer still accepts, and a late copy of one would be "
            f"stored again. Set RETENTION_DAYS to at least {max_age_days:g}, or VALIDATION_MAX_AGE_DAYS "
            f"to at most {retention_days:g}."
        )


_GROUPS = ("kafka", "postgres", "consumer", "validation", "rules", "producer", "monitor", "report", "console")


def env_fields() -> list[tuple[str, dataclasses.Field[Any]]]:
    """Every (group, field) bound to an environment variable; group '' is the top level."""
    out: list[tuple[str, dataclasses.Field[Any]]] = []
    for f in dataclasses.fields(Settings):
        if f.name in _GROUPS:
            out.extend((f.name, sub) for sub in dataclasses.fields(_group_type(f.name)))
        else:
            out.append(("", f))
    return out


def _group_type(name: str) -> type:
    return typing.get_type_hints(Settings)[name]  # type: ignore[no-any-return]


def _convert(name: str, raw: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        if raw.strip() == "":
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint in (int, float):
            return hint(raw)
        return raw
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a valid {getattr(hint, '__name__', hint)}: fix it in the environment or .env"
        ) from None


def load_settings(
    environ: typing.Mapping[str, str] | None = None, dotenv_path: Path | None = None
) -> Settings:
    """Read settings once. The process environment wins over `.env` (as with Compose)."""
    if environ is None:
        path = dotenv_path or Path(os.environ.get("TXMON_ENV_FILE", REPO_ROOT / ".env"))
        file_values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.exists() else {}
        environ = {**file_values, **os.environ}
    values: dict[str, dict[str, Any]] = {g: {} for g in _GROUPS}
    top: dict[str, Any] = {}
    for group, f in env_fields():
        name = f.metadata["env"]
        if name not in environ:
            continue
        hints = typing.get_type_hints(_group_type(group)) if group else typing.get_type_hints(Settings)
        if environ[name].strip() == "" and hints[f.name] is not str:
            continue  # `NAME=` in .env means "the default", as if it were not set
        converted = _convert(name, environ[name], hints[f.name])
        (values[group] if group else top)[f.name] = converted
    groups = {g: _group_type(g)(**values[g]) for g in _GROUPS}
    settings = Settings(**groups, **top)
    if settings.log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={settings.log_format!r}: use 'text' or 'json'")
    return settings


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment that `load_settings` turns back into `settings` (for child processes)."""
    out: dict[str, str] = {}
    for group, f in env_fields():
        value = getattr(getattr(settings, group) if group else settings, f.name)
        out[f.metadata["env"]] = "" if value is None else str(value)
    return out
