# ZooKeeper and the Kafka broker (Kafka 3.9.x, ZooKeeper mode), built from the same
# stack/kafka/pom.xml the native stack (stack/apache_kafka.py) resolves, so both run the same
# jars with the same java command line. One image serves both services: the first argument
# of docker/kafka-entrypoint.sh picks which.
#
# Build context: the repository root (see docker-compose.yml).

ARG MAVEN_IMAGE=maven:3.9.9-eclipse-temurin-17
ARG JRE_IMAGE=eclipse-temurin:17.0.15_6-jre-jammy

# --- Stage 1: resolve the broker's runtime classpath into one folder of jars. ---------------
FROM ${MAVEN_IMAGE} AS jars
WORKDIR /build
# Only the pom: this layer (and the ~50 MB download) is rebuilt when the Kafka pin changes.
COPY stack/kafka/pom.xml ./pom.xml
# Same Maven invocation as stack/apache_kafka.py (runtime scope: no test or provided jars).
RUN mvn -q -B -f pom.xml dependency:copy-dependencies \
        -DoutputDirectory=/build/lib -DincludeScope=runtime

# --- Stage 2: a JRE and the jars; no Maven, no JDK. -----------------------------------------
FROM ${JRE_IMAGE}

# A fixed non-root uid, so files in the named data volumes keep one owner across rebuilds.
RUN groupadd --system --gid 10001 kafka \
    && useradd --system --uid 10001 --gid kafka --no-create-home --shell /usr/sbin/nologin kafka \
    && mkdir -p /var/lib/zookeeper /var/lib/kafka/data /opt/kafka/config \
    && chown kafka:kafka /var/lib/zookeeper /var/lib/kafka/data
# Docker seeds an empty named volume from the image's directory, ownership included: the
# volumes docker-compose.yml mounts on these paths start out writable by the kafka user.

COPY --from=jars /build/lib/ /opt/kafka/lib/
# The native stack's logging config: quiet (WARN), to stdout, which Docker collects.
COPY stack/kafka/log4j.properties /opt/kafka/config/log4j.properties
COPY --chmod=0755 docker/kafka-entrypoint.sh /usr/local/bin/kafka-entrypoint.sh

USER kafka
ENTRYPOINT ["/usr/local/bin/kafka-entrypoint.sh"]
CMD ["kafka"]
