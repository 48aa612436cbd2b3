#!/usr/bin/env bash
# Local PostgreSQL and Apache Kafka (KRaft, single node) on loopback, without Docker.
#   services.sh up|down|status|env
# PostgreSQL comes from Debian's packages; Kafka from Maven Central through deploy/local/kafka/pom.xml.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${SINK_SERVICES_DIR:-$repo/.services}
pg_port=${SINK_PG_PORT:-54329}
kafka_port=${SINK_KAFKA_PORT:-19092}
controller_port=${SINK_KAFKA_CONTROLLER_PORT:-19093}
pg_dir=$state/postgres
kafka_dir=$state/kafka
kafka_libs=$kafka_dir/libs
kafka_log=$kafka_dir/server.log
pg_log=$pg_dir/server.log
database_url="postgresql://sink:sink@127.0.0.1:$pg_port/sink"
bootstrap="127.0.0.1:$kafka_port"

say() { printf 'services: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

as_pg_owner() {
    # initdb refuses to run as root: run PostgreSQL as Debian's postgres user when we are root.
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

pg_bin() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && echo "$dir"
}

ensure_postgres_installed() {
    pg_bin >/dev/null && return 0
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        say "installing PostgreSQL from Debian's packages"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        # The package starts a default cluster on 5432; we run our own on $pg_port.
        command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | while read -r v c _; do
            pg_ctlcluster "$v" "$c" stop 2>/dev/null || true
        done
        pg_bin >/dev/null && return 0
    fi
    die "PostgreSQL server binaries not found under /usr/lib/postgresql. Install them: sudo apt-get install postgresql"
}

# Run as root, PostgreSQL runs as the postgres user, which may not be able to reach a clone under
# a private home directory: then its data goes to a folder of its own, one per clone.
choose_pg_dir() {
    if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$repo"; then
        pg_dir=/var/tmp/pg-kafka-sink-$(printf '%s' "$repo" | sha256sum | cut -c1-12)/postgres
        pg_log=$pg_dir/server.log
    fi
}
choose_pg_dir

pg_running() { [ -f "$pg_dir/data/postmaster.pid" ] && as_pg_owner "$(pg_bin)/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; }

postgres_up() {
    ensure_postgres_installed
    choose_pg_dir
    local bin; bin=$(pg_bin)
    if pg_running; then say "PostgreSQL already running on 127.0.0.1:$pg_port"; return 0; fi
    mkdir -p "$pg_dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$pg_dir"
    if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
        say "initialising PostgreSQL data directory $pg_dir/data"
        local pwfile; pwfile=$(mktemp); echo sink >"$pwfile"; chmod 644 "$pwfile"
        as_pg_owner "$bin/initdb" -D "$pg_dir/data" -U sink --pwfile="$pwfile" -A scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$pg_dir/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$pg_dir/initdb.log" >&2; die "initdb failed"; }
        rm -f "$pwfile"
    fi
    # Settings for a disposable test server: loopback only, our own socket directory.
    as_pg_owner "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$pg_dir -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_prepared_transactions=10" \
        start >/dev/null || { tail -n 20 "$pg_log" >&2; die "PostgreSQL did not start; log: $pg_log"; }
    PGPASSWORD=sink psql -h 127.0.0.1 -p "$pg_port" -U sink -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'sink'" | grep -q 1 \
        || PGPASSWORD=sink psql -q -h 127.0.0.1 -p "$pg_port" -U sink -d postgres -c "CREATE DATABASE sink"
    say "PostgreSQL up on 127.0.0.1:$pg_port (log: $pg_log)"
}

postgres_down() {
    if pg_running; then as_pg_owner "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null; say "PostgreSQL stopped"; else say "PostgreSQL not running"; fi
}

postgres_status() {
    if pg_bin >/dev/null && pg_running; then echo "postgres: running on 127.0.0.1:$pg_port (log: $pg_log)"; else echo "postgres: stopped"; return 1; fi
}

# --- Kafka -----------------------------------------------------------------------------------

kafka_pid() { [ -f "$kafka_dir/kafka.pid" ] && kill -0 "$(cat "$kafka_dir/kafka.pid")" 2>/dev/null && cat "$kafka_dir/kafka.pid"; }

ensure_kafka_libs() {
    command -v java >/dev/null || die "java not found: install a Java 17 runtime (sudo apt-get install openjdk-17-jre-headless)"
    local stamp; stamp=$(sha256sum "$here/kafka/pom.xml" | cut -c1-16)
    [ -f "$kafka_libs/.complete-$stamp" ] && return 0
    command -v mvn >/dev/null || die "mvn not found: install Maven (sudo apt-get install maven) to fetch Kafka from Maven Central"
    say "resolving Apache Kafka from Maven Central (cached in ~/.m2 for reruns)"
    rm -rf "$kafka_libs"; mkdir -p "$kafka_libs"
    mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$kafka_libs" >"$kafka_dir/mvn.log" 2>&1 \
        || { tail -n 30 "$kafka_dir/mvn.log" >&2; die "mvn could not resolve Kafka; log: $kafka_dir/mvn.log"; }
    touch "$kafka_libs/.complete-$stamp"
}

kafka_config() {
    cat >"$kafka_dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$kafka_dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
auto.create.topics.enable=false
log.flush.interval.messages=9223372036854775807
PROPS
    cat >"$kafka_dir/log4j2.properties" <<PROPS
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$kafka_log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
PROPS
}

kafka_java() {
    java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$kafka_dir/log4j2.properties" \
        -cp "$kafka_libs/*" "$@"
}

kafka_answers() {
    # A metadata request through librdkafka when the project's environment is there, else a TCP probe.
    local py=${PYTHON:-$repo/.venv/bin/python}
    if [ -x "$py" ] && "$py" -c "import confluent_kafka" 2>/dev/null; then
        "$py" - "$bootstrap" <<'PY' >/dev/null 2>&1
import sys
from confluent_kafka.admin import AdminClient
AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=5)
PY
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null
    fi
}

kafka_up() {
    mkdir -p "$kafka_dir"
    if kafka_pid >/dev/null; then say "Kafka already running on $bootstrap"; return 0; fi
    ensure_kafka_libs
    kafka_config
    if [ ! -f "$kafka_dir/data/meta.properties" ]; then
        say "formatting Kafka KRaft storage"
        kafka_java kafka.tools.StorageTool format --standalone -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
            -c "$kafka_dir/server.properties" >"$kafka_dir/format.log" 2>&1 \
            || kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
                -c "$kafka_dir/server.properties" >"$kafka_dir/format.log" 2>&1 \
            || { cat "$kafka_dir/format.log" >&2; die "formatting Kafka storage failed"; }
    fi
    : >"$kafka_log"
    # setsid: the broker outlives the shell, or test, that started it (and its process group).
    setsid nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$kafka_dir/log4j2.properties" \
        -cp "$kafka_libs/*" kafka.Kafka "$kafka_dir/server.properties" \
        >"$kafka_dir/stdout.log" 2>&1 &
    echo $! >"$kafka_dir/kafka.pid"
    local deadline=$((SECONDS + 120))
    until grep -q "Kafka Server started" "$kafka_log" 2>/dev/null && kafka_answers; do
        kafka_pid >/dev/null || { tail -n 30 "$kafka_dir/stdout.log" "$kafka_log" >&2; die "Kafka exited during start; log: $kafka_log"; }
        [ $SECONDS -lt $deadline ] || die "Kafka did not answer within 120 s; log: $kafka_log"
        sleep 1
    done
    say "Kafka up on $bootstrap (log: $kafka_log)"
}

kafka_down() {
    local pid
    if pid=$(kafka_pid); then
        kill "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$kafka_dir/kafka.pid"
        say "Kafka stopped"
    else
        say "Kafka not running"
    fi
}

kafka_status() {
    if kafka_pid >/dev/null; then echo "kafka: running on $bootstrap, pid $(kafka_pid) (log: $kafka_log)"; else echo "kafka: stopped"; return 1; fi
}

print_env() {
    echo "export SINK_TEST_DATABASE_URL=$database_url"
    echo "export SINK_TEST_KAFKA_BOOTSTRAP=$bootstrap"
    # The server's log, for tests that look for what PostgreSQL logged (autovacuum cancels).
    echo "export SINK_TEST_POSTGRES_LOG=$pg_log"
    # The broker's log directory, for tests that corrupt a record batch on disk.
    echo "export SINK_TEST_KAFKA_DATA=$kafka_dir/data"
}

case "${1:-}" in
    up) postgres_up; kafka_up ;;
    down) kafka_down; postgres_down ;;
    status) rc=0; postgres_status || rc=1; kafka_status || rc=1; exit $rc ;;
    env) print_env ;;
    postgres-up) postgres_up ;;
    kafka-up) kafka_up ;;
    # For failure tests: a PostgreSQL restart (fast shutdown, as in a failover) and a broker restart.
    postgres-restart) postgres_down; postgres_up ;;
    kafka-restart) kafka_down; kafka_up ;;
    *) echo "usage: $0 up|down|status|env (also postgres-up|kafka-up|postgres-restart|kafka-restart)" >&2; exit 2 ;;
esac
