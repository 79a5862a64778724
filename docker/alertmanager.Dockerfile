# Alertmanager from Debian's package (0.25 on bookworm, as the amtool the unit tests use), built
# like docker/prometheus.Dockerfile: no registry image beyond Debian's. The configuration is
# mounted, not copied (docker-compose.yml):
#   ./docker/alertmanager/alertmanager.yml -> /etc/alertmanager/alertmanager.yml
#
# Build context: the repository root (nothing is copied from it).

ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

# policy-rc.d: the package's postinst must not try to start the server during the build.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update \
    && apt-get install -y --no-install-recommends prometheus-alertmanager \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && mkdir -p /var/lib/prometheus/alertmanager \
    && chown prometheus:prometheus /var/lib/prometheus/alertmanager

# The package created the prometheus user; its silences and notification log live in
# /var/lib/prometheus/alertmanager: mount a named volume there (Docker seeds it with that owner).
USER prometheus
EXPOSE 9093
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
# One instance: no cluster gossip (an empty --cluster.listen-address turns it off).
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", \
     "--storage.path=/var/lib/prometheus/alertmanager", \
     "--web.listen-address=:9093", \
     "--cluster.listen-address="]
