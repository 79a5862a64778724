# Airflow 3.3.2 plus what the project's DAG tasks import. The project's own code (utils/,
# consumer/, producer/) and the DAGs are bind-mounted by docker-compose.yml, not copied: they
# change together with the DAGs, and an edit should not need an image rebuild.
#
# Build context: the repository root.

ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

# requirements.txt minus two lines:
#   apache-airflow  the base image is that exact pin, installed against Airflow's constraints
#                   file; reinstalling it from our list could let pip swap its dependencies.
#                   It is passed again below pinned to the image's own version, as Airflow's
#                   "extending the image" guide advises, so nothing we add can move it.
#   pgserver        PostgreSQL binaries for the native local stack; Compose runs its own servers.
# Everything else (the pipeline's libraries, the postgres provider, matplotlib for report
# charts, psutil for system metrics, the console's web stack that requirements.txt includes) stays
# pinned exactly as in the native venv the DAG tests use.
# --chown: the RUN below runs as the base image's airflow user and writes into /tmp/txmon.
COPY --chown=airflow:0 requirements.txt requirements-console.txt requirements-pipeline.txt /tmp/txmon/
RUN grep -v -E '^(apache-airflow|pgserver)==' /tmp/txmon/requirements.txt >/tmp/txmon/requirements-airflow.txt \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/txmon/requirements-airflow.txt

# Directories mounted as named volumes or bind mounts. Group 0 and group-write because the
# containers may run as any uid (AIRFLOW_UID) with gid 0, as Airflow's image supports; Docker
# seeds an empty named volume from these directories, ownership and mode included.
#   auth  SimpleAuthManager's password file (written by airflow-init), so 0770: not world-readable.
#   logs  task logs, shared by the scheduler (writes) and the API server (shows them).
#   data  AIRFLOW_DATA_DIR: reports and metrics (./airflow-data on the host).
USER root
RUN mkdir -p /opt/airflow/auth /opt/airflow/logs /opt/airflow/data /opt/airflow/txmon \
    && chown airflow:0 /opt/airflow/auth /opt/airflow/logs /opt/airflow/data /opt/airflow/txmon \
    && chmod 2770 /opt/airflow/auth \
    && chmod 2775 /opt/airflow/logs /opt/airflow/data
USER airflow
