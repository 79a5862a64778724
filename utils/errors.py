"""One root exception for the project; small subclasses, caught by class, never by text."""


class TxmonError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(TxmonError):
    """A setting is missing or malformed; the message names the variable and the fix."""


class DatabaseUnavailable(TxmonError):
    """PostgreSQL cannot be reached (yet); callers retry with backoff."""


class MigrationError(TxmonError):
    """A schema migration failed or the recorded schema is newer than this code."""


class StackError(TxmonError):
    """The native local stack (ZooKeeper, Kafka, PostgreSQL) could not be started."""


class KafkaAuthenticationError(TxmonError):
    """The broker refused this client's SASL credentials (KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD)."""
