# Prometheus from Debian's package (2.42 on bookworm, as the promtool the unit tests use): no
# registry image beyond Debian's, which docker/offline/ builds a stand-in for. The configuration
# is mounted, not copied (docker-compose.yml):
#   ./docker/prometheus/prometheus.yml -> /etc/prometheus/prometheus.yml
#   ./docker/prometheus/alerts.yml     -> /etc/prometheus/alerts.yml
#
# Build context: the repository root (nothing is copied from it).

ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

# policy-rc.d: the package's postinst must not try to start the server during the build.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d

# The package created the prometheus user and its data folder /var/lib/prometheus/metrics2:
# mount a named volume there (Docker seeds it with that ownership).
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", \
     "--storage.tsdb.path=/var/lib/prometheus/metrics2", \
     "--storage.tsdb.retention.time=15d", \
     "--web.listen-address=:9090"]
