# Stand-in for maven:3.9.9-eclipse-temurin-17, built without a registry (see
# build-base-images.sh): Debian bookworm's OpenJDK 17 and Maven 3.9.9 as published on Maven
# Central (the distribution is an artifact there, org.apache.maven:apache-maven), checked
# against the SHA-512 Apache publishes for it.
ARG BASE_IMAGE=txmon-offline/debian:bookworm
FROM ${BASE_IMAGE}

ARG MAVEN_VERSION=3.9.9
ARG MAVEN_SHA512=a555254d6b53d267965a3404ecb14e53c3827c09c3b94b5678835887ab404556bfaf78dcfe03ba76fa2508649dca8531c74bca4d5846513522404d48e8c4ac8b
# A Maven Central mirror inside an air-gapped network (--build-arg MAVEN_REPO_URL=...): the
# download comes from it, and Maven's global settings.xml makes it the mirror of everything.
ARG MAVEN_REPO_URL=https://repo.maven.apache.org/maven2

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jdk-headless curl \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/java \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")" /opt/java/openjdk

RUN curl -fsSL -o /tmp/maven.tar.gz \
        "$MAVEN_REPO_URL/org/apache/maven/apache-maven/$MAVEN_VERSION/apache-maven-$MAVEN_VERSION-bin.tar.gz" \
    && echo "$MAVEN_SHA512  /tmp/maven.tar.gz" | sha512sum -c - \
    && mkdir -p /usr/share/maven \
    && tar -xzf /tmp/maven.tar.gz -C /usr/share/maven --strip-components=1 \
    && rm /tmp/maven.tar.gz \
    && ln -s /usr/share/maven/bin/mvn /usr/bin/mvn \
    && if [ "$MAVEN_REPO_URL" != https://repo.maven.apache.org/maven2 ]; then \
        printf '<settings><mirrors><mirror><id>internal</id><mirrorOf>*</mirrorOf><url>%s</url></mirror></mirrors></settings>\n' \
            "$MAVEN_REPO_URL" >/usr/share/maven/conf/settings.xml; \
    fi \
    && mvn -v

ENV JAVA_HOME=/opt/java/openjdk \
    MAVEN_HOME=/usr/share/maven
CMD ["mvn"]
