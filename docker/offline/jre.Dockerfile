# Stand-in for eclipse-temurin:17.0.15_6-jre-jammy, built without a registry (see
# build-base-images.sh): Debian bookworm's OpenJDK 17 runtime, at /opt/java/openjdk as in
# the Temurin images. The host's CA certificates (in the base image) reach Java's trust store.
ARG BASE_IMAGE=txmon-offline/debian:bookworm
FROM ${BASE_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/java \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java/openjdk \
    && java -version

ENV JAVA_HOME=/opt/java/openjdk
