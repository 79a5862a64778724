"""Turning kafka-python's silent bootstrap timeout into the authentication error it hides.

A client whose SASL credentials the broker refuses only logs `SaslAuthenticationFailedError`
per connection attempt and then raises "Unable to bootstrap", which reads like a broker that is
down. `refused_credentials` watches those log lines while a client connects, so the caller can
raise KafkaAuthenticationError naming the user and the variables to fix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from utils.config import KafkaSettings
from utils.errors import KafkaAuthenticationError

_NET_LOGGER = "kafka.net"


class _Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "AuthenticationFailed" in message and len(self.failures) < 3:
            self.failures.append(message)


@contextlib.contextmanager
def refused_credentials(kafka: KafkaSettings) -> Iterator[None]:
    """Within: any KafkaError raised while the broker refused our credentials becomes a
    KafkaAuthenticationError that says so. Nothing changes for plaintext clients."""
    if not kafka.security_protocol.upper().startswith("SASL_"):
        yield
        return
    log = logging.getLogger(_NET_LOGGER)
    seen = _Seen()
    saved_level, saved_propagate = log.level, log.propagate
    if not log.isEnabledFor(logging.ERROR):  # silenced by the caller: hear it, but keep it quiet
        log.setLevel(logging.ERROR)
        log.propagate = False
    log.addHandler(seen)
    try:
        yield
    except KafkaAuthenticationError:
        raise
    except Exception as exc:  # kafka-python's timeout, or a caller's error wrapping it
        if seen.failures:
            raise KafkaAuthenticationError(
                f"Kafka at {kafka.bootstrap_servers} refused user {kafka.sasl_username!r} "
                f"({kafka.sasl_mechanism}): authentication failed. Check KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD (docs/security.md says where each service's password lives)"
            ) from exc
        raise
    finally:
        log.removeHandler(seen)
        log.setLevel(saved_level)
        log.propagate = saved_propagate
