# The producer and consumer image (also runs the one-shot jobs: topic creation, migrations).
# Lean on purpose: only requirements-pipeline.txt, not Airflow or the native-stack tools.
#
#   docker build -t txmon-pipeline .
#   docker run --rm txmon-pipeline python producer/transaction_producer.py --help

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

# PYTHONUNBUFFERED: log lines reach `docker logs` as they are written, not when a buffer fills
# (or never, if the container is killed). PYTHONPATH: the entry points are run as scripts
# (`python consumer/transaction_processor.py`), so the repo root must be importable for `utils`.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies before code: editing the code does not reinstall them. Every pinned package
# ships manylinux wheels for CPython 3.11, so no compiler is needed in the slim image.
COPY requirements-pipeline.txt ./
RUN pip install -r requirements-pipeline.txt

# Mount points of named volumes, which Docker seeds with their owner when it creates them:
# /var/lib/txmon-alerts for the alert receiver, /var/lib/txmon-tls/* for postgres-tls, which runs
# as uid 999 (the PostgreSQL server's) so that the key it writes is the server's own.
RUN groupadd --system --gid 10001 txmon \
    && useradd --system --uid 10001 --gid txmon --no-create-home --shell /usr/sbin/nologin txmon \
    && mkdir -p /var/lib/txmon-alerts /var/lib/txmon-tls/ca /var/lib/txmon-tls/server /var/lib/txmon-tls/trust \
    && chown txmon:txmon /var/lib/txmon-alerts \
    && chown -R 999:999 /var/lib/txmon-tls && chmod 0700 /var/lib/txmon-tls/ca

# Same layout as the repository, so the commands are the ones used natively.
COPY utils/ ./utils/
COPY consumer/ ./consumer/
COPY producer/ ./producer/
# The Compose stack's kafka-tls and kafka-init jobs run the native stack's Kafka security code
# (stack/kafka_security.py, stack/kafka_init.py): one generator of certificates, users and ACLs for both.
COPY stack/__init__.py stack/common.py stack/kafka_security.py stack/kafka_init.py ./stack/

USER txmon
# docker-compose.yml sets the command of every service; this default is the consumer.
CMD ["python", "consumer/transaction_processor.py"]
