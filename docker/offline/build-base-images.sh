#!/usr/bin/env bash
# Base images without an image registry (no Docker Hub: air-gapped networks, our CI).
#
#   docker/offline/build-base-images.sh          build every stand-in whose tag is missing or stale
#   docker/offline/build-base-images.sh --list   print the tags and whether each exists and is current
#
# The project's Dockerfiles and docker-compose.yml name public base images (python slim,
# Maven + Temurin JDK, Temurin JRE, postgres, apache/airflow, debian slim). This script builds a stand-in
# for each from what such networks do reach (a Debian mirror, PyPI, Maven Central, or their
# internal mirrors) and tags it with exactly that name, so the project's own files stay what
# users with a registry run:
#   1. debootstrap Debian bookworm (minbase) from the mirror in /etc/apt/sources.list.d/
#      debian.sources (or DEBIAN_MIRROR), with the host's apt sources and CA certificates
#      (/usr/local/share/ca-certificates/*.crt, e.g. a TLS-inspecting proxy's), and
#      `docker import` it as $TXMON_OFFLINE_BASE (txmon-offline/debian:bookworm)
#   2. docker/offline/<name>.Dockerfile on top of it, each tagged with the name the project
#      uses; a tag that exists locally is left alone while its recipe (the Dockerfile and the
#      files it copies, hashed into the label txmon.offline.recipe) is unchanged, rebuilt otherwise
# The names are read from the project's files (ARG *_IMAGE defaults, ${POSTGRES_IMAGE:-...});
# PYTHON_IMAGE, MAVEN_IMAGE, JRE_IMAGE, AIRFLOW_IMAGE, POSTGRES_IMAGE, DEBIAN_IMAGE override them.
# Inside an air-gapped network, point the builds at internal mirrors; the project's own
# images, built on these, inherit the settings:
#   DEBIAN_MIRROR    debootstrap's mirror (default: the host's apt sources, copied in as well)
#   PIP_INDEX_URL    written to the images' /etc/pip.conf
#   MAVEN_REPO_URL   Maven Central mirror: the Maven download and Maven's global settings.xml
# Needs root (debootstrap) and a running engine (docker/engine.sh up). Logs and timings:
# $TXMON_CACHE_DIR/offline-images/ (default ~/.cache/txmon), with debootstrap's .deb cache.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OFFLINE_DIR=$REPO_ROOT/docker/offline
BASE_TAG=${TXMON_OFFLINE_BASE:-txmon-offline/debian:bookworm}
SUITE=bookworm
WORK_DIR=${TXMON_CACHE_DIR:-$HOME/.cache/txmon}/offline-images
LOG_DIR=$WORK_DIR/logs
HOST_CA_DIR=${TXMON_HOST_CA_DIR:-/usr/local/share/ca-certificates}
HOST_SOURCES=/etc/apt/sources.list.d/debian.sources

log() { echo "offline-images: $*" >&2; }
die() {
    log "$*"
    exit 1
}

# The default of `ARG NAME=value` in a Dockerfile.
arg_default() {
    local value
    value=$(sed -n "s/^ARG $1=//p" "$2" | head -n 1)
    [[ -n $value ]] || die "no 'ARG $1=...' in $2"
    echo "$value"
}

PYTHON_IMAGE=${PYTHON_IMAGE:-$(arg_default PYTHON_IMAGE "$REPO_ROOT/Dockerfile")}
MAVEN_IMAGE=${MAVEN_IMAGE:-$(arg_default MAVEN_IMAGE "$REPO_ROOT/docker/kafka.Dockerfile")}
JRE_IMAGE=${JRE_IMAGE:-$(arg_default JRE_IMAGE "$REPO_ROOT/docker/kafka.Dockerfile")}
AIRFLOW_IMAGE=${AIRFLOW_IMAGE:-$(arg_default AIRFLOW_IMAGE "$REPO_ROOT/docker/airflow.Dockerfile")}
DEBIAN_IMAGE=${DEBIAN_IMAGE:-$(arg_default DEBIAN_IMAGE "$REPO_ROOT/docker/prometheus.Dockerfile")}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-$(sed -n 's/.*\${POSTGRES_IMAGE:-\([^}]*\)}.*/\1/p' "$REPO_ROOT/docker-compose.yml" | head -n 1)}
[[ -n $POSTGRES_IMAGE ]] || die "no \${POSTGRES_IMAGE:-...} in docker-compose.yml"

# stand-in name -> tag, in build order (python first: postgres and airflow build on it).
NAMES=(python maven jre postgres airflow debian)
declare -A TAGS=(
    [python]=$PYTHON_IMAGE
    [maven]=$MAVEN_IMAGE
    [jre]=$JRE_IMAGE
    [postgres]=$POSTGRES_IMAGE
    [airflow]=$AIRFLOW_IMAGE
    [debian]=$DEBIAN_IMAGE
)

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# A hash of stand-in $1's recipe: its Dockerfile and the files of docker/offline it COPYs. Built
# into the image as a label, so an image built from an older recipe is rebuilt, not reused.
recipe() {
    local dockerfile=$OFFLINE_DIR/$1.Dockerfile
    {
        cat "$dockerfile"
        sed -n 's/^COPY \([^-][^ ]*\) .*/\1/p' "$dockerfile" | while read -r file; do cat "$OFFLINE_DIR/$file"; done
    } | sha256sum | cut -c 1-16
}

# Stand-in $1 is present and built from today's recipe.
current() {
    [[ $(docker image inspect -f '{{ index .Config.Labels "txmon.offline.recipe" }}' "${TAGS[$1]}" 2>/dev/null) == "$(recipe "$1")" ]]
}

debian_mirror() {
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local uri=""
    if [[ -f $HOST_SOURCES ]]; then
        # The first stanza's URIs (the main archive; the security archive comes after it).
        uri=$(awk '/^URIs:/ {print $2; exit}' "$HOST_SOURCES")
    elif [[ -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $3 == "'"$SUITE"'" {print $2; exit}' /etc/apt/sources.list)
    fi
    [[ -n $uri ]] || die "no Debian mirror found in $HOST_SOURCES or /etc/apt/sources.list: set DEBIAN_MIRROR"
    echo "$uri"
}

as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

build_base() {
    local mirror rootfs started=$SECONDS
    mirror=$(debian_mirror)
    if ! command -v debootstrap >/dev/null 2>&1; then
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
    fi
    rootfs=$WORK_DIR/rootfs
    as_root rm -rf "$rootfs"
    mkdir -p "$WORK_DIR"
    log "debootstrap $SUITE from $mirror (log: $LOG_DIR/base.log)"
    # --cache-dir keeps the downloaded .debs for the next machine-local rebuild.
    mkdir -p "$WORK_DIR/debs"
    as_root debootstrap --variant=minbase --include=ca-certificates --cache-dir="$WORK_DIR/debs" \
        "$SUITE" "$rootfs" "$mirror" \
        >"$LOG_DIR/base.log" 2>&1 || die "debootstrap failed: see $LOG_DIR/base.log"

    # The host's apt sources (security updates included) replace debootstrap's one line.
    if [[ -f $HOST_SOURCES ]]; then
        as_root cp "$HOST_SOURCES" "$rootfs/etc/apt/sources.list.d/debian.sources"
        as_root rm -f "$rootfs/etc/apt/sources.list"
    fi
    # Local CAs (a proxy that inspects TLS, an internal mirror's CA) for apt, pip, curl and,
    # through ca-certificates-java, Maven; pip is pointed at the system bundle explicitly
    # because it otherwise trusts only its own copy of certifi.
    if compgen -G "$HOST_CA_DIR/*.crt" >/dev/null; then
        as_root cp "$HOST_CA_DIR"/*.crt "$rootfs/usr/local/share/ca-certificates/"
    fi
    as_root chroot "$rootfs" update-ca-certificates >>"$LOG_DIR/base.log" 2>&1
    {
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n'
        if [[ -n ${PIP_INDEX_URL:-} ]]; then printf 'index-url = %s\n' "$PIP_INDEX_URL"; fi
    } | as_root tee "$rootfs/etc/pip.conf" >/dev/null
    as_root chroot "$rootfs" apt-get clean
    as_root rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin

    # An imported image has no environment at all: PATH set here, so that `ENV PATH=...:$PATH`
    # in a Dockerfile built on it does not expand to an empty tail.
    as_root tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        - "$BASE_TAG" >/dev/null
    as_root rm -rf "$rootfs"
    TIMES[base]=$((SECONDS - started))
    log "$BASE_TAG imported in ${TIMES[base]}s"
}

# Build stand-in $1 in the background of the caller; its output goes to a log file and its
# duration to $LOG_DIR/<name>.seconds.
build_one() {
    local name=$1 tag=${TAGS[$1]} started=$SECONDS
    log "building $tag from docker/offline/$name.Dockerfile (log: $LOG_DIR/$name.log)"
    # The classic builder: the CLI's BuildKit path needs the buildx plugin, which these
    # machines do not have (Compose brings its own BuildKit client for the project's images).
    if DOCKER_BUILDKIT=0 docker build --force-rm --label "txmon.offline.recipe=$(recipe "$name")" \
        --build-arg "BASE_IMAGE=$BASE_TAG" \
        --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
        ${MAVEN_REPO_URL:+--build-arg "MAVEN_REPO_URL=$MAVEN_REPO_URL"} \
        -f "$OFFLINE_DIR/$name.Dockerfile" -t "$tag" "$OFFLINE_DIR" >"$LOG_DIR/$name.log" 2>&1; then
        echo $((SECONDS - started)) >"$LOG_DIR/$name.seconds"
        log "$tag built in $((SECONDS - started))s"
    else
        log "building $tag FAILED after $((SECONDS - started))s; last lines of $LOG_DIR/$name.log:"
        tail -n 25 "$LOG_DIR/$name.log" >&2
        return 1
    fi
}

list() {
    local name
    for name in base "${NAMES[@]}"; do
        local tag=${TAGS[$name]:-$BASE_TAG}
        if [[ $name != base ]] && have_image "$tag" && ! current "$name"; then
            echo "stale    $tag"
        elif have_image "$tag"; then echo "present  $tag"; else echo "missing  $tag"; fi
    done
}

main() {
    docker info >/dev/null 2>&1 || die "no Docker engine answers: start one (docker/engine.sh up)"
    mkdir -p "$LOG_DIR"
    local started=$SECONDS missing=() name
    for name in "${NAMES[@]}"; do
        current "$name" || missing+=("$name")
    done
    if ((${#missing[@]} == 0)); then
        log "every base image is present: ${TAGS[*]}"
        return
    fi
    declare -gA TIMES=()
    have_image "$BASE_TAG" || build_base
    rm -f "$LOG_DIR"/*.seconds

    local -A pids=()
    wants() { [[ " ${missing[*]} " == *" $1 "* ]]; }
    # python first when postgres or airflow need it; maven, jre and debian meanwhile.
    for name in python maven jre debian; do
        if wants "$name"; then
            build_one "$name" &
            pids[$name]=$!
        fi
    done
    local failed=0
    if [[ -n ${pids[python]:-} ]]; then
        wait "${pids[python]}" || failed=1
        unset 'pids[python]'
    fi
    if ((failed == 0)); then
        for name in postgres airflow; do
            if wants "$name"; then
                build_one "$name" &
                pids[$name]=$!
            fi
        done
    fi
    for name in "${!pids[@]}"; do
        wait "${pids[$name]}" || failed=1
    done
    ((failed == 0)) || die "a stand-in failed to build (logs in $LOG_DIR)"
    # The classic builder keeps a multi-stage build's first stage as an untagged image.
    docker image prune --force --filter label=txmon.offline.stage=builder >/dev/null

    # On stdout, one line per image built: what `python -m deploy` and the tests report.
    log "timings (the stand-ins build in parallel):"
    if [[ -n ${TIMES[base]:-} ]]; then printf 'built %s %s\n' "$BASE_TAG" "${TIMES[base]}"; fi
    for name in "${missing[@]}"; do
        printf 'built %s %s\n' "${TAGS[$name]}" "$(cat "$LOG_DIR/$name.seconds")"
    done
    log "all base images present after $((SECONDS - started))s"
}

case "${1:-}" in
    "") main ;;
    --list) list ;;
    *)
        echo "usage: $(basename "$0") [--list]" >&2
        exit 64
        ;;
esac
