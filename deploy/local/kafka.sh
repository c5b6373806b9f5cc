#!/usr/bin/env bash
# Apache Kafka, KRaft mode, single node (broker + controller), from Maven Central jars, on loopback.
source "$(dirname "$0")/common.sh"
NAME=kafka
VERSION="${KAFKA_VERSION:-4.1.1}"
DIR="$STATE_DIR/kafka"
LIBS="$STATE_DIR/kafka-$VERSION/libs"
PIDFILE="$DIR/kafka.pid"
LOGFILE="$DIR/kafka.log"
CONFIG="$DIR/server.properties"
HERE="$(cd "$(dirname "$0")" && pwd)"

install() {
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v java >/dev/null 2>&1 || die "$NAME" "Java 17+ is required to run Kafka"
  command -v mvn >/dev/null 2>&1 || die "$NAME" "Maven is required to fetch Kafka from Maven Central"
  log "$NAME" "fetching Apache Kafka $VERSION and its dependencies from Maven Central (first time only)"
  rm -rf "$LIBS" && mkdir -p "$LIBS"
  mvn -q -B -Dstyle.color=never -f "$HERE/kafka/pom.xml" -Dkafka.version="$VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS"
  touch "$LIBS/.complete"
}

write_config() {
  mkdir -p "$DIR/data"
  cat > "$CONFIG" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$LOCAL_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$LOCAL_KAFKA_PORT,CONTROLLER://127.0.0.1:$LOCAL_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$LOCAL_KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=3
num.network.threads=2
num.io.threads=2
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
CONF
}

java_cmd() { java -Xms128m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -cp "$LIBS/*" "$@"; }

started() { port_open "$LOCAL_KAFKA_PORT" && grep -q "Kafka Server started" "$LOGFILE"; }

up() {
  if pid_alive "$PIDFILE"; then log "$NAME" "already running on 127.0.0.1:$LOCAL_KAFKA_PORT"; return 0; fi
  install
  require_free_port "$NAME" "$LOCAL_KAFKA_PORT"
  require_free_port "$NAME" "$LOCAL_KAFKA_CONTROLLER_PORT"
  write_config
  if [[ ! -f "$DIR/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java_cmd kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$CONFIG" >"$DIR/format.log" 2>&1 \
      || die "$NAME" "formatting the storage failed; see $DIR/format.log"
  fi
  nohup java -Xms128m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$CONFIG" >"$LOGFILE" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  wait_until "$NAME" "$LOGFILE" "$PIDFILE" "$START_TIMEOUT" started
  log "$NAME" "ready on 127.0.0.1:$LOCAL_KAFKA_PORT (log: $LOGFILE)"
}

down() { stop_pidfile "$NAME" "$PIDFILE"; }

"${1:-up}"
