# Stand-in for python:3.11.13-slim-bookworm, built without a registry (see build-base-images.sh).
# Debian bookworm's Python 3.11 with a virtual environment at /usr/local: `python`, `python3`
# and `pip` come first on PATH as in the official image, and `pip install` as root writes to
# /usr/local instead of into Debian's own packages.
ARG BASE_IMAGE=txmon-offline/debian:bookworm
FROM ${BASE_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local \
    && python --version && pip --version

CMD ["python3"]
