#!/usr/bin/env bash
# Entrypoint of the ZooKeeper/Kafka image (docker/kafka.Dockerfile).
#
#   kafka-entrypoint.sh zookeeper   render zk.properties from the environment, run ZooKeeper
#   kafka-entrypoint.sh kafka       render server.properties from the environment, run the broker
#
# The properties mirror stack/apache_kafka.py's zookeeper_properties() and kafka_properties(),
# and the final `exec java ...` is the same command line the native stack runs, so a broker
# problem reproduced natively is the same broker problem as in Compose. Only what differs
# between containers and a laptop (addresses, listeners, paths) comes from the environment.
#
# Security (docs/security.md), on when its secrets are in the environment (docker-compose.yml sets
# them from .env; without them both servers run as the native stack's plaintext default):
#   ZOOKEEPER_KAFKA_PASSWORD  ZooKeeper takes SASL (DIGEST-MD5) logins only, of the user `kafka`;
#                             the broker logs in as it and puts ACLs on the znodes it creates
#   KAFKA_BROKER_PASSWORD     both listeners are SASL_SSL (SCRAM-SHA-512) with the ACL authorizer;
#                             the key store and the rest of the TLS properties come from
#                             KAFKA_TLS_DIR, made by the kafka-tls job (python -m stack.kafka_security tls)
#
# `exec` replaces this shell with java, so the JVM is PID 1 and gets `docker stop`'s SIGTERM
# itself; its shutdown hook then does Kafka's controlled shutdown (keep stop_grace_period
# above the few seconds that takes).
set -euo pipefail

LIB_DIR=${KAFKA_LIB_DIR:-/opt/kafka/lib}
LOG4J_PROPERTIES=${KAFKA_LOG4J_PROPERTIES:-/opt/kafka/config/log4j.properties}
# Rendered on every start into a writable place: the image runs as a non-root user.
RENDER_DIR=${KAFKA_RENDER_DIR:-/tmp/kafka-config}
TLS_DIR=${KAFKA_TLS_DIR:-/var/lib/txmon/kafka-tls}
MECHANISM=SCRAM-SHA-512
JAVA_SECURITY_ARGS=()

usage() {
    echo "usage: $(basename "$0") zookeeper|kafka" >&2
    exit 64
}

# A password goes into JAAS files (double-quoted) and ConfigCommand's [key=value,...] syntax:
# keep it to characters neither misreads (.env's generated secrets are URL-safe base64).
check_password() {
    local name=$1 value=$2
    if [[ ! $value =~ ^[A-Za-z0-9._~+/-]+$ ]]; then
        echo "$name may hold only letters, digits and . _ ~ + / - (generate one with:" \
            "python -c 'import secrets; print(secrets.token_urlsafe(48))')" >&2
        exit 1
    fi
}

# The JAAS file the JVM reads (-Djava.security.auth.login.config): `Server` holds ZooKeeper's
# one user, `Client` the broker's (and ConfigCommand's) login to ZooKeeper.
render_zookeeper_jaas() {
    local jaas="$RENDER_DIR/jaas.conf"
    if [[ $1 == server ]]; then
        printf 'Server {\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n    user_kafka="%s";\n};\n' \
            "$ZOOKEEPER_KAFKA_PASSWORD" >"$jaas.tmp"
    else
        printf 'Client {\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n    username="kafka"\n    password="%s";\n};\n' \
            "$ZOOKEEPER_KAFKA_PASSWORD" >"$jaas.tmp"
    fi
    mv "$jaas.tmp" "$jaas"
    JAVA_SECURITY_ARGS+=("-Djava.security.auth.login.config=$jaas")
}

render_zookeeper_security() {
    [[ -n ${ZOOKEEPER_KAFKA_PASSWORD:-} ]] || return 0
    cat <<EOF
# SASL (DIGEST-MD5) logins only: a client that does not authenticate gets no session.
authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider
enforce.auth.enabled=true
enforce.auth.schemes=sasl
EOF
}

scram_jaas() {
    printf 'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="%s";' \
        "$KAFKA_BROKER_PASSWORD"
}

render_kafka_security() {
    if [[ -n ${ZOOKEEPER_KAFKA_PASSWORD:-} ]]; then
        echo "# The broker's znodes: writable by its ZooKeeper user only."
        echo "zookeeper.set.acl=true"
    fi
    [[ -n ${KAFKA_BROKER_PASSWORD:-} ]] || return 0
    # stack/kafka_security.broker_properties for two listeners; its listener-independent half
    # (key store, trust store, authorizer) is that module's file, appended as it is.
    cat <<EOF
sasl.enabled.mechanisms=$MECHANISM
sasl.mechanism.inter.broker.protocol=$MECHANISM
listener.name.internal.scram-sha-512.sasl.jaas.config=$(scram_jaas)
listener.name.external.scram-sha-512.sasl.jaas.config=$(scram_jaas)
EOF
    grep -v '^#' "$TLS_DIR/broker-tls.properties"
}

# How the healthcheck (and an operator inside the container) talks to the broker: as its user.
# The tools' 5 s request timeout is too short for a cold JVM's TLS handshake and SCRAM login on a
# busy machine (the healthcheck failed every time at a load of 40 on 2 cores; 6 s with this).
render_client() {
    echo "request.timeout.ms=30000"
    if [[ -n ${KAFKA_BROKER_PASSWORD:-} ]]; then
        cat <<EOF
security.protocol=SASL_SSL
sasl.mechanism=$MECHANISM
sasl.jaas.config=$(scram_jaas)
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
EOF
    else
        echo "security.protocol=PLAINTEXT"
    fi
}

# The broker's own SCRAM user must be in ZooKeeper before the broker starts (it logs in to
# itself with it): Kafka's ConfigCommand, as stack/kafka_security.create_broker_user runs it.
# Again whenever KAFKA_BROKER_PASSWORD changes (a JVM start costs seconds): the marker in the
# broker's data volume, which lives and dies with ZooKeeper's (cluster id), holds its digest.
create_broker_user() {
    local marker=${KAFKA_LOG_DIRS:-/var/lib/kafka/data}/.txmon-broker-user digest
    digest=$(printf '%s' "$KAFKA_BROKER_PASSWORD" | sha256sum | cut -d' ' -f1)
    if [[ -r $marker && $(<"$marker") == "$digest" ]]; then
        return 0
    fi
    java -Xmx128m -Djava.awt.headless=true ${JAVA_SECURITY_ARGS[@]+"${JAVA_SECURITY_ARGS[@]}"} \
        "-Dlog4j.configuration=file:$LOG4J_PROPERTIES" -cp "$LIB_DIR/*" \
        kafka.admin.ConfigCommand --zookeeper "${KAFKA_ZOOKEEPER_CONNECT:-zookeeper:2181}" --alter \
        --add-config "$MECHANISM=[iterations=8192,password=$KAFKA_BROKER_PASSWORD]" \
        --entity-type users --entity-name broker >/dev/null
    printf '%s\n' "$digest" >"$marker"
}

# ZOOKEEPER_EXTRA_PROPERTIES / KAFKA_EXTRA_PROPERTIES: newline-separated key=value lines
# appended last (Java keeps the last value of a repeated key), for one-off experiments
# without rebuilding the image.
render_zookeeper() {
    cat <<EOF
# Rendered by kafka-entrypoint.sh on every start; edit the environment, not this file.
dataDir=${ZOOKEEPER_DATA_DIR:-/var/lib/zookeeper}
clientPort=${ZOOKEEPER_CLIENT_PORT:-2181}
tickTime=2000
maxClientCnxns=0
# The admin server would take port 8080, which Airflow's UI wants.
admin.enableServer=false
# ruok is the container healthcheck; dump lists ephemeral nodes (a dead broker's registration).
4lw.commands.whitelist=ruok,srvr,mntr,dump
# Keep a few snapshots instead of letting the data volume grow forever.
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
    render_zookeeper_security
    printf '%s\n' "${ZOOKEEPER_EXTRA_PROPERTIES:-}"
}

render_kafka() {
    local protocol_map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT
    [[ -z ${KAFKA_BROKER_PASSWORD:-} ]] || protocol_map=INTERNAL:SASL_SSL,EXTERNAL:SASL_SSL
    # Two listeners because one address cannot serve both sides: containers reach the broker
    # as kafka:29092 on the Compose network, the host reaches it through the published port
    # as localhost:<KAFKA_HOST_PORT>. Whatever a client bootstraps from, it then connects to
    # the advertised address of the listener it came in on.
    cat <<EOF
# Rendered by kafka-entrypoint.sh on every start; edit the environment, not this file.
broker.id=${KAFKA_BROKER_ID:-0}
listeners=${KAFKA_LISTENERS:-INTERNAL://0.0.0.0:29092,EXTERNAL://0.0.0.0:9092}
advertised.listeners=${KAFKA_ADVERTISED_LISTENERS:?set KAFKA_ADVERTISED_LISTENERS, e.g. INTERNAL://kafka:29092,EXTERNAL://localhost:9092}
listener.security.protocol.map=${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:-$protocol_map}
inter.broker.listener.name=${KAFKA_INTER_BROKER_LISTENER_NAME:-INTERNAL}
log.dirs=${KAFKA_LOG_DIRS:-/var/lib/kafka/data}
zookeeper.connect=${KAFKA_ZOOKEEPER_CONNECT:-zookeeper:2181}
zookeeper.session.timeout.ms=6000
num.partitions=${KAFKA_NUM_PARTITIONS:-6}
# One broker: nothing can be replicated. Three (docker-compose.cluster.yml): three copies of the
# internal topics and of topics created without a factor, and acks=all waits for two of them.
offsets.topic.replication.factor=${KAFKA_DEFAULT_REPLICATION_FACTOR:-1}
transaction.state.log.replication.factor=${KAFKA_DEFAULT_REPLICATION_FACTOR:-1}
transaction.state.log.min.isr=${KAFKA_MIN_INSYNC_REPLICAS:-1}
default.replication.factor=${KAFKA_DEFAULT_REPLICATION_FACTOR:-1}
min.insync.replicas=${KAFKA_MIN_INSYNC_REPLICAS:-1}
# A single consumer joins at once instead of waiting 3 s for others.
group.initial.rebalance.delay.ms=0
delete.topic.enable=true
# Records stamped more than an hour after the broker's clock are refused (utils/kafka_cleanup.py).
log.message.timestamp.after.max.ms=3600000
EOF
    render_kafka_security
    printf '%s\n' "${KAFKA_EXTRA_PROPERTIES:-}"
}

case "${1:-}" in
    zookeeper)
        main_class=org.apache.zookeeper.server.quorum.QuorumPeerMain
        config="$RENDER_DIR/zk.properties"
        heap=${ZOOKEEPER_HEAP_OPTS:--Xmx256m}
        render=render_zookeeper
        ;;
    kafka)
        main_class=kafka.Kafka
        config="$RENDER_DIR/server.properties"
        heap=${KAFKA_HEAP_OPTS:--Xmx512m}
        render=render_kafka
        ;;
    *)
        usage
        ;;
esac

# What is rendered below holds passwords: readable by this user only.
umask 077
mkdir -p "$RENDER_DIR"
if [[ -n ${ZOOKEEPER_KAFKA_PASSWORD:-} ]]; then
    check_password ZOOKEEPER_KAFKA_PASSWORD "$ZOOKEEPER_KAFKA_PASSWORD"
    if [[ $1 == zookeeper ]]; then render_zookeeper_jaas server; else render_zookeeper_jaas client; fi
fi
if [[ $1 == kafka && -n ${KAFKA_BROKER_PASSWORD:-} ]]; then
    check_password KAFKA_BROKER_PASSWORD "$KAFKA_BROKER_PASSWORD"
    if [[ ! -r $TLS_DIR/broker-tls.properties ]]; then
        echo "no $TLS_DIR/broker-tls.properties: the kafka-tls job makes it (docker compose logs kafka-tls)" >&2
        exit 1
    fi
fi
# Render to a temporary file first: a failed render (a required variable missing) must not
# leave a half-written file behind that looks valid.
"$render" >"$config.tmp"
mv "$config.tmp" "$config"
if [[ $1 == kafka ]]; then
    render_client >"$RENDER_DIR/client.properties"
    if [[ -n ${KAFKA_BROKER_PASSWORD:-} ]]; then
        create_broker_user
    fi
fi

# The heap options may hold several flags ("-Xms256m -Xmx512m"): split them into words.
read -r -a heap_args <<<"$heap"

exec java "${heap_args[@]}" \
    -Djava.awt.headless=true \
    -XX:+ExitOnOutOfMemoryError \
    ${JAVA_SECURITY_ARGS[@]+"${JAVA_SECURITY_ARGS[@]}"} \
    "-Dlog4j.configuration=file:$LOG4J_PROPERTIES" \
    -cp "$LIB_DIR/*" \
    "$main_class" \
    "$config"
