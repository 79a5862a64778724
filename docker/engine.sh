#!/usr/bin/env bash
# A Docker engine and the Compose v2 plugin on a machine that may have neither running
# (CI, a fresh Debian box without systemd, an air-gapped host).
#
#   docker/engine.sh up       install what is missing, start dockerd unless one answers
#   docker/engine.sh down     stop the dockerd that `up` started (by its PID); never another
#   docker/engine.sh status   say which daemon answers and who started it
#
# What `up` does, each step only when needed:
#   - `dockerd` missing       apt-get install docker.io (Debian's engine, 20.10 on bookworm)
#   - `docker compose` fails  build the plugin from the Go module proxy (no GitHub needed) and
#                             install it as a CLI plugin; the binary is cached across runs
#   - `docker info` fails     start dockerd detached, its output in a log file, and wait
# A daemon that already answers `docker info` is reused and left alone by `down`.
#
# Cache and state: $TXMON_CACHE_DIR (default ~/.cache/txmon)/docker-engine/
#   dockerd.pid, dockerd.log   the daemon this script started
#   docker-compose-<version>   the plugin built from source (~2 min the first time)
set -euo pipefail

COMPOSE_VERSION=${TXMON_COMPOSE_VERSION:-v2.29.7}
STATE_DIR=${TXMON_CACHE_DIR:-$HOME/.cache/txmon}/docker-engine
PID_FILE=$STATE_DIR/dockerd.pid
LOG_FILE=$STATE_DIR/dockerd.log
PLUGIN_DIR=${DOCKER_CLI_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}
START_TIMEOUT_S=${TXMON_DOCKERD_START_TIMEOUT:-60}

log() { echo "engine: $*" >&2; }
die() {
    log "$*"
    exit 1
}

as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

ensure_client() {
    # Both halves: a machine may ship the client alone (ours do: /usr/local/bin/docker), and a
    # client without dockerd cannot start an engine.
    command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 && return
    log "no docker engine (dockerd): apt-get install docker.io"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
}

ensure_compose() {
    if docker compose version >/dev/null 2>&1; then
        return
    fi
    local cached=$STATE_DIR/docker-compose-$COMPOSE_VERSION
    if [[ ! -x $cached ]]; then
        command -v go >/dev/null 2>&1 || die "the Compose v2 plugin is missing and there is no Go toolchain to build it: apt-get install golang-go (or install docker-compose-plugin from Docker's apt repository)"
        log "building the Compose plugin $COMPOSE_VERSION from the Go module proxy (~2 min, once)"
        local gobin
        gobin=$(mktemp -d)
        # The module's main package is .../cmd; the binary comes out named `cmd`. The -X flag
        # is what Docker's release build sets, so `docker compose version` names the version.
        GOBIN=$gobin go install \
            -ldflags "-X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
            "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION" >&2
        mkdir -p "$STATE_DIR"
        mv "$gobin/cmd" "$cached.tmp"
        mv "$cached.tmp" "$cached"
        rmdir "$gobin"
    fi
    as_root mkdir -p "$PLUGIN_DIR"
    as_root install -m 0755 "$cached" "$PLUGIN_DIR/docker-compose"
    docker compose version >&2 || die "installed $PLUGIN_DIR/docker-compose but 'docker compose version' still fails"
}

# The PID of the dockerd this script started, if it still runs.
our_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(<"$PID_FILE")
    if [[ -n $pid ]] && [[ $(ps -o comm= -p "$pid" 2>/dev/null) == dockerd ]]; then
        echo "$pid"
    else
        return 1
    fi
}

start_daemon() {
    if docker info >/dev/null 2>&1; then
        if pid=$(our_pid); then
            log "dockerd answers (started by this script, PID $pid)"
        else
            log "dockerd answers (not started by this script: reusing it, leaving it running)"
        fi
        return
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed: apt-get install docker.io"
    mkdir -p "$STATE_DIR"
    rm -f "$PID_FILE"
    log "starting dockerd (log: $LOG_FILE)"
    # dockerd writes its own PID into --pidfile, which also marks it as ours for `down`.
    # setsid: its own session, so a Ctrl-C or a CI step ending does not reach it; stdin,
    # stdout and stderr detached, so nothing waits on its output.
    as_root setsid dockerd --pidfile "$PID_FILE" >"$LOG_FILE" 2>&1 </dev/null &
    local launcher=$!
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$launcher" 2>/dev/null && ! our_pid >/dev/null; then
            tail -n 20 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "dockerd exited during start-up (full log: $LOG_FILE)"
        fi
        ((SECONDS < deadline)) || die "dockerd did not answer 'docker info' within ${START_TIMEOUT_S}s (log: $LOG_FILE)"
        sleep 0.5
    done
    log "dockerd is up (PID $(<"$PID_FILE"))"
}

stop_daemon() {
    local pid
    if ! pid=$(our_pid); then
        rm -f "$PID_FILE"
        log "no dockerd started by this script is running; nothing to stop"
        return
    fi
    log "stopping dockerd (PID $pid)"
    as_root kill -TERM "$pid"
    # dockerd stops its containers first (10 s each by default, in parallel).
    for _ in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "dockerd (PID $pid) still runs after 60 s; sending SIGKILL"
        as_root kill -KILL "$pid"
    fi
    rm -f "$PID_FILE"
    log "dockerd stopped"
}

case "${1:-}" in
    up)
        ensure_client
        ensure_compose
        start_daemon
        ;;
    down)
        stop_daemon
        ;;
    status)
        if docker info >/dev/null 2>&1; then
            if pid=$(our_pid); then echo "dockerd answers: started by docker/engine.sh, PID $pid"; else echo "dockerd answers: not started by docker/engine.sh"; fi
        else
            echo "no Docker engine answers"
            exit 1
        fi
        ;;
    *)
        echo "usage: $(basename "$0") up|down|status" >&2
        exit 64
        ;;
esac
