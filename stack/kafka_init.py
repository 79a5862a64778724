"""`python -m stack.kafka_init`: the Compose stack's kafka-init job (docker-compose.yml).

Once the broker answers: every Kafka user's SCRAM credentials (KAFKA_<USER>_PASSWORD from .env)
and every ACL of stack/kafka_security.service_acls, as the broker's own user, then the
pipeline's topics as the admin user (KAFKA_SASL_USERNAME). All idempotent, run on every `up`:
a password changed in .env takes effect then. The native stack does the same from
stack/apache_kafka.py (ApacheKafka._provision, ensure_topics).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping

from stack import kafka_security
from utils.config import load_settings
from utils.errors import StackError
from utils.kafka_cleanup import KafkaAdminError, admin_client, ensure_topics

log = logging.getLogger("kafka-init")


def run(environ: Mapping[str, str]) -> None:
    passwords = kafka_security.passwords_from_env(environ)
    settings = load_settings()
    kafka = settings.kafka
    as_broker = kafka.as_user(kafka_security.BROKER_USER, passwords[kafka_security.BROKER_USER])
    with contextlib.closing(admin_client(as_broker, timeout_s=60)) as admin:
        grants = kafka_security.service_acls(kafka.topic, kafka.dlq_topic, kafka.consumer_group)
        kafka_security.provision_users_and_acls(admin, passwords, grants)
    others = [u for u in kafka_security.USERS if u != kafka_security.BROKER_USER]
    log.info("users %s and their ACLs are set", ", ".join(others))
    with contextlib.closing(admin_client(kafka, timeout_s=60)) as admin:
        for topic, what in ensure_topics(admin, kafka).items():
            log.info("%s: %s (as %s)", topic, what, kafka.sasl_username or "anonymous")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="kafka-init: %(message)s")
    # kafka-python's connection chatter; its warnings and errors still show.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        run(os.environ)
    except (StackError, KafkaAdminError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
