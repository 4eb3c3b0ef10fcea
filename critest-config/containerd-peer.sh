#!/usr/bin/env bash
# A throwaway containerd 2.x + runc (built by install-containerd.sh through the Go
# module proxy) as the reference CRI peer of the benchmarks, and to check the
# offline test images (and critest itself) against.
#
#   containerd-peer.sh start    build containerd and runc if not yet done, start
#                               the local registry (registry.sh) and a
#                               containerd listening on $CRUST_PEER_SOCK
#   containerd-peer.sh stop     remove its pods, stop it, delete its state
#   containerd-peer.sh critest [FLAGS...]
#                               run ${CRITEST:-critest} against the peer with
#                               the offline test images, then remove the host
#                               SysV shared memory segments the run left behind
#   containerd-peer.sh env      print the settings (socket, dirs, binaries, pid
#                               file); builds nothing
#
# Everything is its own: root under ${CRUST_CACHE:-/var/cache/crust}/peer, state
# and socket under /run/crust-peer (socket: ${CRUST_PEER_SOCK:-/run/crust-peer/
# containerd.sock}), CNI configuration in its own directory (bridge crustpeer0,
# 10.89.0.0/16, plugins from /usr/lib/cni), the local registry as plain-HTTP
# mirror of registry.k8s.io, k8s.gcr.io, gcr.io and public.ecr.aws (benchmark
# images), and its own sandbox image
# 127.0.0.1:PORT/crust/pause:peer (pause:3.9 stays a plain test image).
# cgroupfs driver, restrict_oom_score_adj = true, NRI off. The pid of the running
# containerd is in $PIDFILE (env prints it): a benchmark that kills and starts
# it again writes the new one there.
#
# Quiet on success (except the critest output); on failure it prints what
# failed and the end of the relevant log. Optional: CRICTL (path of crictl)
# lets "stop" remove pods through CRI, which also tears their networks down.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

CACHE=${CRUST_CACHE:-/var/cache/crust}
PORT=${CRUST_REGISTRY_PORT:-5111}
RUNDIR=/run/crust-peer
SOCK=${CRUST_PEER_SOCK:-$RUNDIR/containerd.sock}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER=$CACHE/peer
ROOT=$PEER/root
STATE=$RUNDIR/state
CONF_DIR=$PEER/etc
CNI_CONF=$CONF_DIR/net.d
CERTS_D=$CONF_DIR/certs.d
IPAM_DIR=$PEER/ipam
CONFIG=$CONF_DIR/config.toml
PIDFILE=$RUNDIR/containerd.pid
LOG=$PEER/containerd.log
CNI_BIN=/usr/lib/cni
BRIDGE=crustpeer0
SANDBOX_IMAGE=127.0.0.1:$PORT/crust/pause:peer
MIRRORED=(registry.k8s.io k8s.gcr.io gcr.io public.ecr.aws)
# containerd, containerd-shim-runc-v2, ctr and runc
BIN=$("$HERE/install-containerd.sh" --dir)

ctr_() { "$BIN/ctr" --address "$SOCK" "$@"; }

answers() { [[ -S $SOCK ]] && ctr_ --connect-timeout 2s version >/dev/null 2>&1; }

our_pid() { # prints the pid of the containerd we started, if it still runs
	local pid
	[[ -f $PIDFILE ]] || return 1
	pid=$(<"$PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$BIN/containerd --config $CONFIG " &&
		echo "$pid"
}

fill() { # template output NAME=VALUE...
	local in=$1 out=$2 kv
	shift 2
	local -a expr=()
	for kv in "$@"; do
		expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
	done
	sed "${expr[@]}" "$in" >"$out.tmp"
	mv "$out.tmp" "$out"
}

write_config() {
	mkdir -p "$CNI_CONF" "$CERTS_D" "$IPAM_DIR" "$ROOT" "$STATE"
	fill "$HERE/containerd/config.toml.in" "$CONFIG" \
		ROOT="$ROOT" STATE="$STATE" SOCK="$SOCK" SANDBOX_IMAGE="$SANDBOX_IMAGE" \
		RUNC="$BIN/runc" SHIM="$BIN/containerd-shim-runc-v2" CNI_BIN="$CNI_BIN" \
		CNI_CONF="$CNI_CONF" CERTS_D="$CERTS_D"
	fill "$HERE/containerd/net.conflist.in" "$CNI_CONF/10-crust-peer.conflist" IPAM_DIR="$IPAM_DIR"
	cp "$HERE/containerd/loopback.conf" "$CNI_CONF/99-loopback.conf"
	local host
	for host in "${MIRRORED[@]}"; do
		mkdir -p "$CERTS_D/$host"
		fill "$HERE/containerd/hosts.toml.in" "$CERTS_D/$host/hosts.toml" \
			UPSTREAM="$host" SERVER="https://$host" PORT="$PORT"
	done
	mkdir -p "$CERTS_D/127.0.0.1:$PORT"
	fill "$HERE/containerd/hosts.toml.in" "$CERTS_D/127.0.0.1:$PORT/hosts.toml" \
		UPSTREAM="127.0.0.1:$PORT" SERVER="http://127.0.0.1:$PORT" PORT="$PORT"
}

start() {
	apt_install containernetworking-plugins iptables iproute2
	step install-containerd "$HERE/install-containerd.sh" >/dev/null
	[[ -x $CNI_BIN/bridge && -x $CNI_BIN/portmap && -x $CNI_BIN/loopback ]] ||
		fail "CNI plugins missing in $CNI_BIN"
	"$HERE/registry.sh" start
	if our_pid >/dev/null && answers; then
		return 0
	fi
	answers && fail "something else already answers on $SOCK"
	mkdir -p "$RUNDIR" "$(dirname "$SOCK")"
	write_config
	: >"$LOG"
	# not handing our lock (or any other descriptor) to the daemon
	# its shim found beside it and on PATH too, never Debian's
	PATH="$BIN:$PATH" spawn_detached "$LOG" "$BIN/containerd" --config "$CONFIG"
	local pid=$! i
	echo "$pid" >"$PIDFILE"
	for ((i = 0; i < 150; i++)); do
		answers && return 0
		kill -0 "$pid" 2>/dev/null || fail "containerd exited" "$LOG"
		sleep 0.2
	done
	fail "containerd does not answer on $SOCK" "$LOG"
}

peer_shims() { # pids of the shims serving our socket
	local d
	for d in /proc/[0-9]*; do
		tr '\0' '\n' 2>/dev/null <"$d/cmdline" | grep -qxF -- "$SOCK" &&
			tr '\0' '\n' 2>/dev/null <"$d/cmdline" | head -n1 | grep -q 'containerd-shim' &&
			echo "${d#/proc/}"
	done
	return 0
}

stop() {
	local pid i log=$PEER/stop.log
	: >"$log"
	if pid=$(our_pid) && answers; then
		local crictl=${CRICTL:-$(command -v crictl || true)}
		if [[ -n $crictl && -x $crictl ]]; then
			"$crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
				--timeout 60s rmp -fa >>"$log" 2>&1 || true
		fi
		local ns id
		for ns in $(ctr_ namespaces ls -q 2>>"$log"); do
			for id in $(ctr_ -n "$ns" tasks ls -q 2>>"$log"); do
				ctr_ -n "$ns" tasks kill -s SIGKILL "$id" >>"$log" 2>&1 || true
			done
			for id in $(ctr_ -n "$ns" tasks ls -q 2>>"$log"); do
				for ((i = 0; i < 25; i++)); do
					ctr_ -n "$ns" tasks delete "$id" >>"$log" 2>&1 && break
					sleep 0.2
				done
			done
		done
	fi
	if pid=$(our_pid); then
		stop_pid "$pid"
	fi
	rm -f "$PIDFILE"
	for pid in $(peer_shims); do
		kill -9 "$pid" 2>/dev/null || true
	done
	# runc containers of ours that outlived their shims
	if [[ -d $STATE/runc && -x $BIN/runc ]]; then
		local root
		for root in "$STATE"/runc/*; do
			[[ -d $root ]] || continue
			for id in $("$BIN/runc" --root "$root" list -q 2>>"$log"); do
				"$BIN/runc" --root "$root" delete -f "$id" >>"$log" 2>&1 || true
			done
		done
	fi
	# mounts left under our directories (deepest first)
	local m
	for m in $(awk -v a="$ROOT" -v b="$STATE" \
		'index($5, a) == 1 || index($5, b) == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2); do
		umount -l "$m" >>"$log" 2>&1 || true
	done
	rm -rf "$ROOT" "$STATE" "$IPAM_DIR" "$RUNDIR/containerd.sock.ttrpc"
	[[ $SOCK == "$RUNDIR"/* ]] && rm -f "$SOCK" "$SOCK.ttrpc"
	# empty directories containerd (its shims' sockets) and libcni create at fixed
	# places
	rmdir /var/lib/cni/results /var/lib/cni /run/containerd/s /run/containerd 2>/dev/null || true
	rmdir "$RUNDIR" 2>/dev/null || true
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link delete "$BRIDGE" >>"$log" 2>&1 || true
	fi
}

shm_ids() { # ids of the SysV shared memory segments nobody is attached to
	ipcs -m 2>/dev/null | awk '$2 ~ /^[0-9]+$/ && $6 == 0 { print $2 }' | sort
}

run_critest() {
	local critest=${CRITEST:-critest}
	command -v "$critest" >/dev/null || fail "no critest binary (set CRITEST)"
	answers || fail "the peer does not run; start it first"
	local before rc=0 id
	before=$(shm_ids)
	"$critest" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
		--test-images-file "$HERE/test-images.yaml" "$@" || rc=$?
	# the HostIpc specs create segments on the host and leave them
	for id in $(comm -13 <(echo "$before") <(shm_ids)); do
		ipcrm -m "$id" 2>/dev/null || true
	done
	return "$rc"
}

main() {
	local cmd=${1:-}
	case $cmd in
	start | stop | critest | env) ;;
	*)
		echo "usage: $0 start|stop|critest [critest flags]|env" >&2
		exit 2
		;;
	esac
	shift
	mkdir -p "$PEER"
	if [[ $cmd == env ]]; then
		printf 'CRUST_PEER_SOCK=%s\nROOT=%s\nSTATE=%s\nCONFIG=%s\nLOG=%s\nBIN=%s\nPIDFILE=%s\n' \
			"$SOCK" "$ROOT" "$STATE" "$CONFIG" "$LOG" "$BIN" "$PIDFILE"
		return 0
	fi
	if [[ $cmd == critest ]]; then
		run_critest "$@"
		return
	fi
	exec 8>"$PEER/lock"
	flock -w 300 8 || fail "another containerd-peer.sh holds $PEER/lock"
	"$cmd"
}

main "$@"
