# The analysts' console (python -m console serve): the pipeline's lean image plus the web stack.
#
#   docker build -f docker/console.Dockerfile -t txmon-console .

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY requirements-pipeline.txt requirements-console.txt ./
RUN pip install -r requirements-console.txt

RUN groupadd --system --gid 10001 txmon \
    && useradd --system --uid 10001 --gid txmon --no-create-home --shell /usr/sbin/nologin txmon

# The console reads the rule sets and the rules (consumer/) and replays rejected messages.
COPY utils/ ./utils/
COPY consumer/ ./consumer/
COPY console/ ./console/

USER txmon
EXPOSE 8000
CMD ["python", "-m", "console", "serve"]
