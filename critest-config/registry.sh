#!/usr/bin/env bash
# Local image registry for running the CRI validation suite (critest) offline.
#
#   registry.sh [start]  install what is missing, start Debian's docker-registry
#                        on 127.0.0.1:${CRUST_REGISTRY_PORT:-5111} (plain HTTP),
#                        build every image critest uses from Debian packages and
#                        push each under its upstream repository path and tag,
#                        e.g. registry.k8s.io/e2e-test-images/busybox:1.29-2 as
#                        127.0.0.1:5111/e2e-test-images/busybox:1.29-2
#   registry.sh stop     stop the registry started by this script
#   registry.sh list     list the images (upstream name, path:tag, type, digest)
#
# A runtime under test must use this registry as a plain-HTTP mirror of
# registry.k8s.io, k8s.gcr.io and gcr.io (no spec uses docker.io names); the
# benchmark mode (critest -benchmark) also needs public.ecr.aws mirrored.
#
# Everything lives under ${CRUST_CACHE:-/var/cache/crust}: registry storage,
# downloaded .debs, built images, logs, pid file. Quiet on success; on failure
# it prints what failed and the end of the relevant log.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

CACHE=${CRUST_CACHE:-/var/cache/crust}
PORT=${CRUST_REGISTRY_PORT:-5111}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
BUILD=$HERE/images/build.py
LOGDIR=$CACHE/logs
PIDFILE=$CACHE/registry.pid
CONFIG=$CACHE/registry.yml





fetch_debs() {
	local dir=$CACHE/debs p missing=()
	mkdir -p "$dir"
	for p in $("$PY" "$BUILD" debs); do
		compgen -G "$dir/${p}_*.deb" >/dev/null || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	local log=$LOGDIR/apt-download.log
	local -a get=(apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}")
	if ! (cd "$dir" && "${get[@]}") >"$log" 2>&1; then
		{ apt-get update -qq && (cd "$dir" && "${get[@]}"); } >"$log" 2>&1 ||
			fail "downloading ${missing[*]} failed" "$log"
	fi
}

answers() {
	"$PY" - "$PORT" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen("http://127.0.0.1:%s/v2/" % sys.argv[1], timeout=2).read()
except Exception:
    sys.exit(1)
EOF
}

our_pid() { # prints the pid of the registry we started, if it still runs
	local pid
	[[ -f $PIDFILE ]] || return 1
	pid=$(<"$PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "docker-registry serve $CONFIG" &&
		echo "$pid"
}

start_registry() {
	answers && return 0
	local log=$LOGDIR/registry.log pid
	mkdir -p "$CACHE/registry"
	if ! pid=$(our_pid); then
		write_registry_config "$CONFIG" "$CACHE/registry" "127.0.0.1:$PORT"
		: >"$log"
		# not handing our lock (or any other descriptor) to the daemon
		spawn_detached "$log" docker-registry serve "$CONFIG"
		pid=$!
		echo "$pid" >"$PIDFILE"
	fi
	local i
	for ((i = 0; i < 150; i++)); do
		answers && return 0
		kill -0 "$pid" 2>/dev/null || fail "docker-registry exited" "$log"
		sleep 0.2
	done
	fail "docker-registry does not answer on http://127.0.0.1:$PORT/v2/" "$log"
}

stop_registry() {
	local pid i
	if pid=$(our_pid); then
		stop_pid "$pid"
	fi
	rm -f "$PIDFILE"
}

main() {
	local cmd=${1:-start}
	case $cmd in
	start | stop | list) ;;
	*)
		echo "usage: $0 [start|stop|list]" >&2
		exit 2
		;;
	esac
	mkdir -p "$CACHE" "$LOGDIR"
	exec 9>"$CACHE/registry.lock"
	flock -w 900 9 || fail "another registry.sh holds $CACHE/registry.lock"
	case $cmd in
	stop)
		stop_registry
		;;
	list)
		"$PY" "$BUILD" list --cache "$CACHE"
		;;
	start)
		apt_install docker-registry python3 gcc libc6-dev
		start_registry
		fetch_debs
		step build-images "$PY" "$BUILD" build --cache "$CACHE"
		step push-images \
			"$PY" "$BUILD" push --cache "$CACHE" --registry "127.0.0.1:$PORT"
		;;
	esac
}

main "$@"
