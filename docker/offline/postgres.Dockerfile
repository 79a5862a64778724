# Stand-in for postgres:16.10, built without a registry (see build-base-images.sh).
# PostgreSQL 16 has no Debian bookworm package (bookworm ships 15, and apt.postgresql.org is
# another registry), so the server binaries come from PyPI: the pgserver wheel bundles a
# relocatable PostgreSQL 16 (x86_64 only), pinned by hash. postgres-entrypoint.sh honours
# the official image's variables and /docker-entrypoint-initdb.d.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG BASE_IMAGE=txmon-offline/debian:bookworm

FROM ${PYTHON_IMAGE} AS binaries
# build-base-images.sh deletes this stage's untagged image afterwards, by this label.
LABEL txmon.offline.stage=builder
ARG PGSERVER_VERSION=0.1.4
ARG PGSERVER_SHA256=d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813
# pip, not a hard-coded URL: a PyPI mirror configured for pip (PIP_INDEX_URL) is used as is.
# zipfile does not restore file modes, hence the chmod. The wheel's vendored libpq sits
# beside the other libraries; ldconfig below makes them found (the wheel used an RPATH).
RUN printf 'pgserver==%s --hash=sha256:%s\n' "$PGSERVER_VERSION" "$PGSERVER_SHA256" >/tmp/pgserver.txt \
    && pip download --no-deps --only-binary=:all: --require-hashes -r /tmp/pgserver.txt -d /tmp/wheel \
    && python -m zipfile -e /tmp/wheel/pgserver-*.whl /tmp/pgserver \
    && mv /tmp/pgserver/pgserver/pginstall /opt/postgresql \
    && mv /tmp/pgserver/pgserver.libs/* /opt/postgresql/lib/ \
    && rm -rf /opt/postgresql/include /opt/postgresql/lib/*.a \
    && chmod -R a+rX /opt/postgresql && chmod a+x /opt/postgresql/bin/*

FROM ${BASE_IMAGE}
# uid/gid 999 as in the official image, so a data volume keeps its owner.
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d \
    && chown -R postgres:postgres /var/lib/postgresql \
    && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/16/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PG_MAJOR=16 \
    PGDATA=/var/lib/postgresql/data
COPY --from=binaries /opt/postgresql /usr/lib/postgresql/16
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN echo /usr/lib/postgresql/16/lib >/etc/ld.so.conf.d/postgresql.conf && ldconfig \
    && chmod 0755 /usr/local/bin/docker-entrypoint.sh \
    && postgres --version && initdb --version && psql --version

VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
# The official image's choice: SIGINT is PostgreSQL's fast shutdown.
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
