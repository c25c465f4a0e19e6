#!/usr/bin/env bash
# Build, start and stop the test HAPI FHIR R4 JPA server (H2 in memory, FHIR at /fhir).
#
#   tests/hapi/hapi.sh build               resolve dependencies (cached in ~/.m2) and compile
#   tests/hapi/hapi.sh start [--port N]    start on 127.0.0.1 (a free port unless N is given),
#                                          wait for /fhir/metadata, print the base URL on stdout
#   tests/hapi/hapi.sh stop                stop the server started from the same state directory
#   tests/hapi/hapi.sh url                 print the base URL of the running server
#
# Environment:
#   HAPI_STATE_DIR      where pid, port and log files go (default: tests/hapi/target/run); give
#                       each concurrently running server its own
#   HAPI_START_TIMEOUT  seconds to wait for /fhir/metadata (default 300)
#   HAPI_JAVA_OPTS      JVM options (default: -Xms256m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1)
#   MAVEN_ARGS_EXTRA    extra arguments for mvn, e.g. -Dmaven.repo.local=/tmp/m2
#
# Everything but the base URL goes to stderr, so `url=$(tests/hapi/hapi.sh start)` works.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"
CLASSPATH_FILE="$TARGET/classpath.txt"
STAMP="$TARGET/build.stamp"
STATE_DIR="${HAPI_STATE_DIR:-$TARGET/run}"
PID_FILE="$STATE_DIR/hapi.pid"
PORT_FILE="$STATE_DIR/hapi.port"
LOG_FILE="$STATE_DIR/hapi.log"
START_TIMEOUT="${HAPI_START_TIMEOUT:-300}"
# 2 cores / 24 GiB. Measured here (start / RSS after start / RSS after 10k resources):
#   these defaults (serial GC, C1 JIT only)  25-31 s / 575 MB / 800 MB, 10k loaded in 24 s
#   serial GC, full JIT                      27-32 s / 650-700 MB / 865-890 MB, 23-33 s
#   JVM defaults (G1, full JIT)              33-35 s / 900-960 MB / ~1 GB, 22-29 s
# On a busier machine C2 compiling competes harder with start-up (once 57 s against 26 s).
JAVA_OPTS="${HAPI_JAVA_OPTS:--Xms256m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1}"

log() { printf 'hapi.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=SCRIPTDIR/../java-build.sh
source "$HERE/../java-build.sh"

cmd_build() {
	require java mvn
	if is_built; then
		log "build is up to date ($TARGET)"
		return 0
	fi
	maven_build "the HAPI launcher (a first run downloads ~350 MB into the Maven repository)"
}

# The pid in the pid file, if that process is alive and is our launcher (not a reused pid).
running_pid() {
	[[ -f "$PID_FILE" ]] || return 1
	local pid
	pid="$(cat "$PID_FILE")"
	[[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'org.referraladapter.hapi.HapiLauncher' || return 1
	echo "$pid"
}

base_url() { echo "http://127.0.0.1:$(cat "$PORT_FILE")/fhir"; }

fail_start() {
	local pid="$1" why="$2"
	log "error: $why"
	if [[ -f "$LOG_FILE" ]]; then
		log "last lines of $LOG_FILE:"
		tail -n 40 "$LOG_FILE" >&2
	fi
	if [[ -n "$pid" ]]; then
		kill "$pid" 2>/dev/null || true
	fi
	rm -f "$PID_FILE" "$PORT_FILE"
	exit 1
}

cmd_start() {
	local port=0
	while [[ $# -gt 0 ]]; do
		case "$1" in
			--port) [[ $# -ge 2 ]] || die "--port needs a number"; port="$2"; shift 2 ;;
			--port=*) port="${1#--port=}"; shift ;;
			*) die "unknown option for start: $1" ;;
		esac
	done
	[[ "$port" =~ ^[0-9]+$ ]] || die "--port needs a number, got '$port'"
	require java mvn curl

	local pid
	if pid="$(running_pid)"; then
		die "already running (pid $pid) at $(base_url); run '$0 stop' first or set HAPI_STATE_DIR"
	fi
	# Tomcat binds only after the whole context is up (~20 s): fail before that for a taken port.
	if ((port != 0)) && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "port $port on 127.0.0.1 is already in use"
	fi
	cmd_build
	mkdir -p "$STATE_DIR"
	rm -f "$PORT_FILE" "$PID_FILE"

	local started_at=$SECONDS
	# setsid: the server outlives the shell that started it (pytest, a terminal).
	# shellcheck disable=SC2086  # JAVA_OPTS is a list of words on purpose
	setsid java $JAVA_OPTS -cp "$TARGET/classes:$(cat "$CLASSPATH_FILE")" \
		org.referraladapter.hapi.HapiLauncher \
		--server.port="$port" --hapi.launcher.port-file="$PORT_FILE" \
		</dev/null >"$LOG_FILE" 2>&1 &
	pid=$!
	echo "$pid" >"$PID_FILE"
	log "starting (pid $pid, log $LOG_FILE)"

	while ((SECONDS - started_at < START_TIMEOUT)); do
		kill -0 "$pid" 2>/dev/null || fail_start "" "the server exited during start-up"
		if [[ -s "$PORT_FILE" ]] && curl -sf -o /dev/null --max-time 10 "$(base_url)/metadata"; then
			log "ready after $((SECONDS - started_at)) s"
			base_url
			return 0
		fi
		sleep 0.5
	done
	fail_start "$pid" "/fhir/metadata did not answer within ${START_TIMEOUT} s"
}

cmd_stop() {
	local pid
	if ! pid="$(running_pid)"; then
		log "not running"
		rm -f "$PID_FILE" "$PORT_FILE"
		return 0
	fi
	kill "$pid"
	local waited=0
	while kill -0 "$pid" 2>/dev/null && ((waited < 60)); do
		sleep 0.5
		waited=$((waited + 1))
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid did not stop within 30 s; killing it"
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$PID_FILE" "$PORT_FILE"
	log "stopped (pid $pid)"
}

cmd_url() {
	running_pid >/dev/null || die "not running"
	base_url
}

case "${1:-}" in
	build) shift; cmd_build "$@" ;;
	start) shift; cmd_start "$@" ;;
	stop) shift; cmd_stop "$@" ;;
	url) shift; cmd_url "$@" ;;
	*) echo "usage: $0 build | start [--port N] | stop | url" >&2; exit 2 ;;
esac
