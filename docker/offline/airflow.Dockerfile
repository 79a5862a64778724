# Stand-in for apache/airflow:3.3.2-python3.11, built without a registry (see
# build-base-images.sh): the python stand-in plus Apache Airflow from PyPI, laid out like the
# official image where docker/airflow.Dockerfile and docker-compose.yml look:
#   user `airflow`, uid 50000, gid 0; AIRFLOW_HOME=/opt/airflow; AIRFLOW_VERSION set;
#   pip as that user installs next to Airflow (a venv in ~/.local, first on PATH);
#   curl for healthchecks; dumb-init as PID 1 and an /entrypoint that waits for the
#   metadata database, then runs `airflow <command>` (or bash/python as given).
# Airflow's constraints file lives on GitHub, which these machines cannot reach: Airflow is
# pinned, its dependencies resolve to their newest compatible releases.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG AIRFLOW_VERSION=3.3.2
ARG AIRFLOW_UID=50000
ENV AIRFLOW_VERSION=${AIRFLOW_VERSION} \
    AIRFLOW_UID=${AIRFLOW_UID} \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_USER_HOME_DIR=/home/airflow \
    PATH=/home/airflow/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl dumb-init \
    && rm -rf /var/lib/apt/lists/*

# Group 0 owns what the containers write, and /etc/passwd is group-writable: a container run
# with any uid and gid 0 (docker-compose.yml's AIRFLOW_UID) adds itself to it at start.
RUN useradd --uid "$AIRFLOW_UID" --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
    && mkdir -p /opt/airflow \
    && chown airflow:0 /opt/airflow /home/airflow \
    && chmod 2775 /opt/airflow /home/airflow \
    && chmod g+w /etc/passwd

COPY airflow-entrypoint.sh /entrypoint
RUN chmod 0755 /entrypoint

USER airflow
RUN python -m venv /home/airflow/.local \
    && pip install "apache-airflow==${AIRFLOW_VERSION}" \
    && airflow version

WORKDIR /opt/airflow
EXPOSE 8080
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD []
