#!/usr/bin/env bash
# Exec latency benchmark (not a test): the round trip of `crictl exec CONTAINER true`
# (CRI Exec, then the streaming session over SPDY until the exit status) against a
# throwaway crustd and against the containerd 2.x peer (with runc), in the same run.
#
# Usage: bench-exec.sh [--count N] [--transport spdy|websocket] [--crustd PATH]
#   --count N       execs per runtime (default 200)
#   --transport T   crictl's streaming transport (default spdy)
#   --crustd PATH   the crustd to measure (default: a release build, made by cargo
#                   when out of date); crust-shim must be beside it
#
# Each runtime gets one pod with a busybox container running `sleep 3600`; then one
# untimed warm-up exec and N timed ones, one after another. Prints per runtime the
# p50, p90, p99 and max in milliseconds, and the ratio containerd/crust of p50 and p99.
# Never judges the numbers: exits 0 when the benchmark ran, non-zero only when
# something failed to run (its logs are then kept).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
count=200
transport=spdy
crustd=""
while [ $# -gt 0 ]; do
  case "$1" in
    --count)
      [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$0: --count needs a number above 0" >&2; exit 2; }
      count="$2"
      shift 2
      ;;
    --transport)
      [ $# -ge 2 ] && [[ $2 =~ ^(spdy|websocket)$ ]] || { echo "$0: --transport is spdy or websocket" >&2; exit 2; }
      transport="$2"
      shift 2
      ;;
    --crustd) crustd="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "$0: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Short: shim sockets live under its state dir, and a socket path has 107 bytes.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/crust-bx.XXXXXX")"
export CRUST_LOG_DIR="$tmp/logs"
mkdir -p "$CRUST_LOG_DIR"
. "$here/../scripts/lib.sh"
need_root

image=registry.k8s.io/e2e-test-images/busybox:1.29-2
port="${CRUST_REGISTRY_PORT:-5111}"
registry="127.0.0.1:$port"
log="$CRUST_LOG_DIR/bench.log"
crustd_pid=""
peer_started=0
peer_sock=""
peer_pod=""

cleanup() {
  local rc=$?
  set +e
  if [ -n "$crustd_pid" ]; then
    "$crictl" -r "unix://$sock" rmp --all --force >>"$log" 2>&1
    kill -TERM "$crustd_pid" 2>/dev/null && wait "$crustd_pid" 2>/dev/null
    ip link del crustbx0 2>/dev/null
    # crustd's pins (namespaces, /dev/shm) are mounts under its dirs.
    awk -v p="$tmp/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null; done
  fi
  if [ -n "$peer_pod" ]; then
    "$crictl" -r "unix://$peer_sock" rmp --force "$peer_pod" >>"$log" 2>&1
  fi
  if [ "$peer_started" = 1 ]; then
    CRICTL="${crictl:-}" "$here/containerd-peer.sh" stop >>"$log" 2>&1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "bench-exec: failed; logs kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what the benchmark needs
apt_install "${CRUST_DEBIAN_PACKAGES[@]}" python3
tools="$("$here/install-cri-tools.sh")"
crictl="$tools/crictl"
step registry "$here/registry.sh" start
if [ -z "$crustd" ]; then
  need_rust
  step build-crust cargo build --release --quiet --manifest-path "$CRUST_TOP/Cargo.toml" \
    -p crust-runtime -p crust-shim --bins
  crustd="${CARGO_TARGET_DIR:-$CRUST_TOP/target}/release/crustd"
fi
[ -x "$crustd" ] || fail "no crustd at $crustd"

# --- a throwaway crustd
sock="$tmp/crust.sock"
write_crustd_config "$tmp" "$registry"
write_cni_config "$tmp/net.d" crust-bench-exec crustbx0 10.86.0.0/16
"$crustd" --config "$tmp/config.toml" >"$CRUST_LOG_DIR/crustd.log" 2>&1 &
crustd_pid=$!
wait_for_crustd "$sock" "$crictl" 30 || {
  tail -n 40 "$CRUST_LOG_DIR/crustd.log" >&2
  fail "crustd did not answer on $sock"
}

# --- the containerd peer
peer_env="$("$here/containerd-peer.sh" env)"
peer_sock="$(sed -n 's/^CRUST_PEER_SOCK=//p' <<<"$peer_env")"
peer_bin="$(sed -n 's/^BIN=//p' <<<"$peer_env")"
if ! { [ -S "$peer_sock" ] && "$peer_bin/ctr" --address "$peer_sock" --connect-timeout 2s version >/dev/null 2>&1; }; then
  peer_started=1
fi
step containerd-peer "$here/containerd-peer.sh" start

crust_name="crust $("$crictl" -r "unix://$sock" version 2>/dev/null | awk '/^RuntimeVersion/ { print $2 }')"
containerd_name="containerd $("$peer_bin/containerd" --version | awk '{ print $3 }')"

cri() { # SOCK ARGS...
  local s="$1"
  shift
  "$crictl" -r "unix://$s" -i "unix://$s" --timeout 60s "$@"
}

# start_pod SOCK NAME: a pod with one busybox container sleeping; prints "POD CTR".
start_pod() {
  local s="$1" name="$2" pod ctr
  cat >"$tmp/$name-pod.json" <<EOF
{"metadata": {"name": "$name", "namespace": "bench", "uid": "$name-uid", "attempt": 0},
 "linux": {}, "log_directory": "$tmp/$name-logs"}
EOF
  cat >"$tmp/$name-ctr.json" <<EOF
{"metadata": {"name": "sleeper"}, "image": {"image": "$image"},
 "command": ["sleep", "3600"], "log_path": "sleeper.log", "linux": {}}
EOF
  cri "$s" pull "$image" >>"$log" 2>&1
  pod="$(cri "$s" runp "$tmp/$name-pod.json" 2>>"$log")"
  ctr="$(cri "$s" create "$pod" "$tmp/$name-ctr.json" "$tmp/$name-pod.json" 2>>"$log")"
  cri "$s" start "$ctr" >>"$log" 2>&1
  echo "$pod $ctr"
}

# measure SOCK CTR OUT: one warm-up exec, then COUNT timed ones, ms per line in OUT.
measure() {
  local s="$1" ctr="$2" out="$3" i t0 t1
  cri "$s" exec --transport "$transport" "$ctr" true >>"$log" 2>&1 ||
    fail "exec in $ctr on $s failed"
  : >"$out"
  for ((i = 0; i < count; i++)); do
    t0=$(date +%s%N)
    cri "$s" exec --transport "$transport" "$ctr" true >>"$log" 2>&1 ||
      fail "exec $i in $ctr on $s failed"
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000)) >>"$out"
  done
}

read -r _ crust_ctr < <(start_pod "$sock" crust-bench) || fail "crust pod"
read -r peer_pod peer_ctr < <(start_pod "$peer_sock" peer-bench) || fail "containerd pod"
[ -n "$crust_ctr" ] && [ -n "$peer_ctr" ] || fail "could not start the benchmark pods"

step "crust-exec-x$count" measure "$sock" "$crust_ctr" "$tmp/crust.us"
step "containerd-exec-x$count" measure "$peer_sock" "$peer_ctr" "$tmp/containerd.us"

python3 - "$tmp/crust.us" "$crust_name" "$tmp/containerd.us" "$containerd_name" \
  "$count" "$transport" <<'EOF'
import sys

def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, round(p / 100 * len(xs) + 0.5) - 1))
    return xs[k]

crust_f, crust_n, peer_f, peer_n, count, transport = sys.argv[1:]
rows = []
for f, name in ((crust_f, crust_n), (peer_f, peer_n)):
    ms = [int(l) / 1000 for l in open(f) if l.strip()]
    rows.append((name, pct(ms, 50), pct(ms, 90), pct(ms, 99), max(ms)))
print(f"exec round trip, crictl exec ... true, {count} sequential execs each, transport {transport}")
print(f"{'runtime':<24}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}")
for name, p50, p90, p99, mx in rows:
    print(f"{name:<24}{p50:>10.1f}{p90:>10.1f}{p99:>10.1f}{mx:>10.1f}")
(_, c50, _, c99, _), (_, d50, _, d99, _) = rows
print(f"containerd/crust: p50 {d50 / c50:.2f}x, p99 {d99 / c99:.2f}x")
EOF
