#!/usr/bin/env bash
# The real services tripline's tests run against, installed and started by the project itself:
#   Mosquitto    from Debian's packages, with scripts/mosquitto/mosquitto.conf.in
#   Cassandra    Apache Cassandra 5.0 (cassandra-all and its dependencies from Maven Central),
#                one node on loopback with scripts/cassandra/{cassandra.yaml,jvm17.options},
#                password authentication on (user cassandra, password cassandra)
#
# usage: scripts/services.sh start|stop|restart|status [mosquitto|cassandra]
#        scripts/services.sh reload mosquitto   re-read the auth listener's password and ACL files
#        scripts/services.sh env      print `export` lines with the services' addresses
#
# State (data, logs, PIDs, fetched jars) lives in $TRIPLINE_SERVICES_DIR (default ./.services,
# ignored by git). Processes are stopped by their recorded PID only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${TRIPLINE_SERVICES_DIR:-$ROOT/.services}"

CASSANDRA_VERSION="5.0.9"
# Pinned: without a pom, the short `dependency:` prefix resolves the newest plugin, which may
# need a newer Maven than the machine's.
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
CASSANDRA_HEAP="${TRIPLINE_TEST_CASSANDRA_HEAP:-1G}"
CASSANDRA_START_TIMEOUT_S="${TRIPLINE_TEST_CASSANDRA_START_TIMEOUT_S:-300}"
MQTT_PORT="${TRIPLINE_TEST_MQTT_PORT:-11883}"
MQTT_AUTH_PORT="${TRIPLINE_TEST_MQTT_AUTH_PORT:-11884}"
MQTT_TLS_PORT="${TRIPLINE_TEST_MQTT_TLS_PORT:-11885}"
CQL_PORT="${TRIPLINE_TEST_CQL_PORT:-19042}"
STORAGE_PORT="${TRIPLINE_TEST_STORAGE_PORT:-17000}"
# Cassandra runs with PasswordAuthenticator; its default superuser.
CQL_USER=cassandra
CQL_PASSWORD=cassandra

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

pid_of() { # service -> prints the recorded PID if that process is alive
  local pidfile="$STATE_DIR/$1/pid"
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [[ ! -f "$STATE_DIR/.apt-updated" ]]; then
    apt-get update -qq && mkdir -p "$STATE_DIR" && touch "$STATE_DIR/.apt-updated"
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------------------------------- tls

# A test certificate authority and what it signs, in $STATE_DIR/tls: `server` (127.0.0.1 and
# localhost: Mosquitto's TLS listener, Cassandra's client encryption, the embedded endpoint in
# tests) and `tripline` (a client certificate, CN=tripline). Tests sign vehicles' certificates
# with the same authority (ca.key).
ensure_tls() {
  local dir="$STATE_DIR/tls"
  [[ -f "$dir/tripline.pem" ]] && return
  command -v openssl >/dev/null || { log "installing openssl from Debian's packages"; apt_install openssl; }
  rm -rf "$dir" && mkdir -p "$dir"
  log "creating the test certificate authority in $dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tripline test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  sign_tls "$dir" server localhost "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
  sign_tls "$dir" tripline tripline "extendedKeyUsage=clientAuth"
  # Cassandra's PEM keystore: the key and its certificate in one file.
  cat "$dir/server.key" "$dir/server.pem" >"$dir/server-bundle.pem"
  chmod 600 "$dir"/*.key "$dir/server-bundle.pem"
}

sign_tls() { # dir name common-name extensions
  local dir="$1" name="$2" cn="$3" extensions="$4"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n%s\n' "$extensions" >"$dir/$name.ext"
  openssl x509 -req -days 3650 -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# ---------------------------------------------------------------------------------- mosquitto

install_mosquitto() {
  if command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null; then return; fi
  log "installing mosquitto and mosquitto-clients from Debian's packages"
  apt_install mosquitto mosquitto-clients
}

mosquitto_version() {
  mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t '$SYS/broker/version' -C 1 -W 2 2>/dev/null
}

start_mosquitto() {
  install_mosquitto
  local dir="$STATE_DIR/mosquitto"
  if pid_of mosquitto >/dev/null; then log "mosquitto already running"; return; fi
  mkdir -p "$dir/auth"
  touch "$dir/auth/passwords" "$dir/auth/acl"
  chmod 600 "$dir/auth/passwords"
  ensure_tls
  sed -e "s|@STATE@|$dir|g" -e "s|@PORT@|$MQTT_PORT|g" -e "s|@AUTH_PORT@|$MQTT_AUTH_PORT|g" \
    -e "s|@TLS_PORT@|$MQTT_TLS_PORT|g" -e "s|@TLS@|$STATE_DIR/tls|g" \
    "$ROOT/scripts/mosquitto/mosquitto.conf.in" >"$dir/mosquitto.conf"
  local started=$SECONDS
  setsid nohup mosquitto -c "$dir/mosquitto.conf" >"$dir/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  local version
  until version="$(mosquitto_version)"; do
    if ! pid_of mosquitto >/dev/null; then
      log "mosquitto exited during start; log tail:"
      tail -n 30 "$dir/mosquitto.log" "$dir/stdout.log" >&2 || true
      exit 1
    fi
    ((SECONDS - started < 30)) || die "mosquitto did not answer within 30 s"
    sleep 0.2
  done
  log "$version ready on 127.0.0.1:$MQTT_PORT after $((SECONDS - started)) s"
}

# ---------------------------------------------------------------------------------- cassandra

java17() {
  local candidates=("${JAVA_HOME:-}/bin/java" /usr/lib/jvm/java-17-openjdk-*/bin/java "$(command -v java || true)")
  local java
  for java in "${candidates[@]}"; do
    [[ -x "$java" ]] || continue
    if "$java" -version 2>&1 | grep -q 'version "17'; then echo "$java"; return; fi
  done
  log "installing openjdk-17-jre-headless from Debian's packages"
  apt_install openjdk-17-jre-headless
  echo /usr/lib/jvm/java-17-openjdk-amd64/bin/java
}

cassandra_lib() { echo "$STATE_DIR/cassandra-$CASSANDRA_VERSION/lib"; }

fetch_cassandra() {
  local lib
  lib="$(cassandra_lib)"
  [[ -f "$lib/cassandra-all-$CASSANDRA_VERSION.jar" ]] && return
  command -v mvn >/dev/null || { log "installing maven from Debian's packages"; apt_install maven; }
  log "fetching Apache Cassandra $CASSANDRA_VERSION and its dependencies from Maven Central"
  rm -rf "$lib.partial"
  mvn -B -q -f "$ROOT/scripts/cassandra/pom.xml" -Dcassandra.version="$CASSANDRA_VERSION" \
    "$DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$lib.partial" \
    || die "could not fetch Cassandra from Maven Central"
  mv "$lib.partial" "$lib"
}

cassandra_version() {
  python3 "$ROOT/scripts/cql_probe.py" 127.0.0.1 "$CQL_PORT" 3 "$CQL_USER" "$CQL_PASSWORD" 2>/dev/null
}

start_cassandra() {
  local dir="$STATE_DIR/cassandra"
  if pid_of cassandra >/dev/null; then log "cassandra already running"; wait_cassandra; return; fi
  fetch_cassandra
  local java lib
  java="$(java17)"
  lib="$(cassandra_lib)"
  mkdir -p "$dir/data" "$dir/logs" "$dir/triggers"
  ensure_tls
  sed -e "s|@CQL_PORT@|$CQL_PORT|g" -e "s|@STORAGE_PORT@|$STORAGE_PORT|g" -e "s|@TLS@|$STATE_DIR/tls|g" \
    "$ROOT/scripts/cassandra/cassandra.yaml" >"$dir/cassandra.yaml"
  local jamm
  jamm="$(ls "$lib"/jamm-*.jar | head -n 1)"
  date +%s >"$dir/started_at"
  # The equivalent of `bin/cassandra -f -R`: CassandraDaemon in the foreground of its own
  # process (our launcher has no root check to override).
  setsid nohup "$java" "@$ROOT/scripts/cassandra/jvm17.options" \
    -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP" -javaagent:"$jamm" \
    -Dcassandra-foreground=yes \
    -Dcassandra.config="file://$dir/cassandra.yaml" \
    -Dcassandra.storagedir="$dir/data" \
    -Dcassandra.logdir="$dir/logs" \
    -Dcassandra.triggers_dir="$dir/triggers" \
    -Dlogback.configurationFile="file://$ROOT/scripts/cassandra/logback.xml" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=100 \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -Dcassandra.initial_token=0 \
    -Dcassandra.native_transport_port="$CQL_PORT" \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon \
    >"$dir/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  wait_cassandra
}

wait_cassandra() {
  local dir="$STATE_DIR/cassandra" version
  local started
  started="$(cat "$dir/started_at" 2>/dev/null || date +%s)"
  until version="$(cassandra_version)"; do
    if ! pid_of cassandra >/dev/null; then
      log "cassandra exited during start; log tail:"
      tail -n 40 "$dir/logs/system.log" "$dir/logs/stdout.log" >&2 || true
      exit 1
    fi
    if (($(date +%s) - started > CASSANDRA_START_TIMEOUT_S)); then
      log "cassandra did not answer a CQL query within $CASSANDRA_START_TIMEOUT_S s; log tail:"
      tail -n 40 "$dir/logs/system.log" >&2 || true
      exit 1
    fi
    sleep 1
  done
  log "cassandra $version ready on 127.0.0.1:$CQL_PORT after $(($(date +%s) - started)) s"
}

# ---------------------------------------------------------------------------------- common

stop_service() {
  local name="$1" pid
  if ! pid="$(pid_of "$name")"; then log "$name not running"; rm -f "$STATE_DIR/$name/pid"; return; fi
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= 60)); then log "$name did not stop within 30 s; killing"; kill -KILL "$pid"; fi
    sleep 0.5
    waited=$((waited + 1))
  done
  rm -f "$STATE_DIR/$name/pid"
  log "$name stopped"
}

status_service() {
  local name="$1" pid
  if pid="$(pid_of "$name")"; then
    case "$name" in
      mosquitto) echo "mosquitto: running (pid $pid) $(mosquitto_version || echo 'not answering')" ;;
      cassandra) echo "cassandra: running (pid $pid) $(cassandra_version || echo 'not answering')" ;;
    esac
  else
    echo "$name: stopped"
    return 1
  fi
}

print_env() {
  echo "export TRIPLINE_TEST_MQTT_URL=mqtt://127.0.0.1:$MQTT_PORT"
  echo "export TRIPLINE_TEST_MQTT_AUTH_URL=mqtt://127.0.0.1:$MQTT_AUTH_PORT"
  echo "export TRIPLINE_TEST_MQTT_AUTH_DIR=$STATE_DIR/mosquitto/auth"
  echo "export TRIPLINE_TEST_MQTT_TLS_URL=mqtts://127.0.0.1:$MQTT_TLS_PORT"
  echo "export TRIPLINE_TEST_TLS_DIR=$STATE_DIR/tls"
  echo "export TRIPLINE_TEST_CQL_NODES=127.0.0.1:$CQL_PORT"
  echo "export TRIPLINE_TEST_CQL_USERNAME=$CQL_USER"
  echo "export TRIPLINE_TEST_CQL_PASSWORD=$CQL_PASSWORD"
  echo "export TRIPLINE_SERVICES_SCRIPT=$ROOT/scripts/services.sh"
}

main() {
  local cmd="${1:-}" which="${2:-all}"
  local services=(mosquitto cassandra)
  [[ "$which" == all ]] || services=("$which")
  for s in "${services[@]}"; do
    [[ "$s" == mosquitto || "$s" == cassandra ]] || die "unknown service '$s' (mosquitto|cassandra)"
  done
  mkdir -p "$STATE_DIR"
  case "$cmd" in
    start) for s in "${services[@]}"; do "start_$s"; done ;;
    stop) for s in "${services[@]}"; do stop_service "$s"; done ;;
    restart) for s in "${services[@]}"; do stop_service "$s"; "start_$s"; done ;;
    reload) # Mosquitto re-reads its password and ACL files on SIGHUP.
      local pid
      pid="$(pid_of mosquitto)" || die "mosquitto is not running"
      kill -HUP "$pid" && log "mosquitto reloaded" ;;
    status)
      local rc=0
      for s in "${services[@]}"; do status_service "$s" || rc=1; done
      return $rc
      ;;
    env) print_env ;;
    *) die "usage: $0 start|stop|restart|status [mosquitto|cassandra] | reload mosquitto | env" ;;
  esac
}

main "$@"
