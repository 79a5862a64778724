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
# `exec` replaces this shell with java, so the JVM is PID 1 and gets `docker stop`'s SIGTERM
# itself; its shutdown hook then does Kafka's controlled shutdown (keep stop_grace_period
# above the few seconds that takes).
set -euo pipefail

LIB_DIR=${KAFKA_LIB_DIR:-/opt/kafka/lib}
LOG4J_PROPERTIES=${KAFKA_LOG4J_PROPERTIES:-/opt/kafka/config/log4j.properties}
# Rendered on every start into a writable place: the image runs as a non-root user.
RENDER_DIR=${KAFKA_RENDER_DIR:-/tmp/kafka-config}

usage() {
    echo "usage: $(basename "$0") zookeeper|kafka" >&2
    exit 64
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
${ZOOKEEPER_EXTRA_PROPERTIES:-}
EOF
}

render_kafka() {
    # Two listeners because one address cannot serve both sides: containers reach the broker
    # as kafka:29092 on the Compose network, the host reaches it through the published port
    # as localhost:<KAFKA_HOST_PORT>. Whatever a client bootstraps from, it then connects to
    # the advertised address of the listener it came in on.
    cat <<EOF
# Rendered by kafka-entrypoint.sh on every start; edit the environment, not this file.
broker.id=${KAFKA_BROKER_ID:-0}
listeners=${KAFKA_LISTENERS:-INTERNAL://0.0.0.0:29092,EXTERNAL://0.0.0.0:9092}
advertised.listeners=${KAFKA_ADVERTISED_LISTENERS:?set KAFKA_ADVERTISED_LISTENERS, e.g. INTERNAL://kafka:29092,EXTERNAL://localhost:9092}
listener.security.protocol.map=${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:-INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT}
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
${KAFKA_EXTRA_PROPERTIES:-}
EOF
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

mkdir -p "$RENDER_DIR"
# Render to a temporary file first: a failed render (a required variable missing) must not
# leave a half-written file behind that looks valid.
"$render" >"$config.tmp"
mv "$config.tmp" "$config"

# The heap options may hold several flags ("-Xms256m -Xmx512m"): split them into words.
read -r -a heap_args <<<"$heap"

exec java "${heap_args[@]}" \
    -Djava.awt.headless=true \
    -XX:+ExitOnOutOfMemoryError \
    "-Dlog4j.configuration=file:$LOG4J_PROPERTIES" \
    -cp "$LIB_DIR/*" \
    "$main_class" \
    "$config"
