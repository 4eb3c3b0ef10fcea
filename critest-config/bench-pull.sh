#!/usr/bin/env bash
# Image pull benchmark (not a test): crustd against the containerd 2.x peer (with runc)
# pulling the same multi-layer image (about 100 MB of gzip'd layers, built from
# Debian packages by images/build.py) from the local registry, in the same run.
#
# Usage: bench-pull.sh [--rounds N] [--tsv FILE]
#   --rounds N   pulls per runtime (default 3)
#   --tsv FILE   also keep the raw results there (one line per pull: runtime,
#                round, wall ms, RSS before, peak RSS, RSS after (KiB), logged ms)
#
# Installs what it needs, builds crustd (release) when cargo finds it out of date,
# starts the local registry (registry.sh), a throwaway crustd (temp root, state
# and socket; the registry as mirror of registry.k8s.io, gcr.io and k8s.gcr.io)
# and the containerd peer (containerd-peer.sh). Each round pulls with crust, then
# with containerd; before each pull the image and all its blobs and snapshots are
# removed from that runtime (and checked gone on disk), and the page cache is
# dropped so both pull cold. Both runtimes unpack while pulling (crust into its
# snapshots, containerd into its overlayfs snapshotter).
#
# Prints a table: each pull's wall time (crictl pull, ms), the daemon's RSS before
# the pull, its peak RSS during the pull (VmHWM, reset just before the pull) and
# its RSS after; per runtime the median wall time and the highest peak RSS; the
# ratios containerd/crust. Never judges the numbers: exits 0 when the benchmark
# ran, non-zero only when something failed to run (its logs are then kept).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

rounds=3
tsv=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds)
      [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$0: --rounds needs a number above 0" >&2; exit 2; }
      rounds="$2"
      shift 2
      ;;
    --tsv)
      [ $# -ge 2 ] || { echo "$0: --tsv needs a file" >&2; exit 2; }
      tsv="$2"
      shift 2
      ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "$0: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Short: crustd refuses a state dir too long for the shim sockets under it.
tmp="$(mktemp -d /tmp/crust-bp.XXXXXX)"
export CRUST_LOG_DIR="$tmp/logs"
mkdir -p "$CRUST_LOG_DIR"
. "$here/../scripts/lib.sh"
need_root

image=registry.k8s.io/crust-bench/multilayer:100mb
port="${CRUST_REGISTRY_PORT:-5111}"
registry="127.0.0.1:$port"
report="$here/bench-pull-report.py"
results="$tmp/results.tsv"
log="$CRUST_LOG_DIR/bench.log"
crustd_pid=""
peer_started=0
peer_sock=""

cleanup() {
  local rc=$?
  set +e
  if [ -n "$crustd_pid" ]; then
    kill -TERM "$crustd_pid" 2>/dev/null && wait "$crustd_pid" 2>/dev/null
  fi
  if [ "$peer_started" = 1 ]; then
    CRICTL="${crictl:-}" "$here/containerd-peer.sh" stop >>"$log" 2>&1
  elif [ -n "$peer_sock" ] && [ -n "${crictl:-}" ]; then
    # a peer that ran before us keeps running, without our image
    "$crictl" -r "unix://$peer_sock" -i "unix://$peer_sock" rmi "$image" >>"$log" 2>&1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "bench-pull: failed; logs kept in $tmp" >&2
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
need_rust
step build-crustd cargo build --release --quiet --manifest-path "$CRUST_TOP/Cargo.toml" \
  -p crust-runtime --bin crustd
crustd="${CARGO_TARGET_DIR:-$CRUST_TOP/target}/release/crustd"
[ -x "$crustd" ] || fail "no crustd at $crustd after the build"

step image-facts python3 "$report" image "$registry" "${image#*/}"
facts="$CRUST_LOG_DIR/image-facts.log"
layers="$(awk '$1 == "layers" { print $2 }' "$facts")"
bytes="$(awk '$1 == "bytes" { print $2 }' "$facts")"
mapfile -t blobs < <(awk '$1 == "blob" { print $2 }' "$facts")
mapfile -t chains < <(awk '$1 == "chain" { print $2 }' "$facts")

# --- a throwaway crustd
sock="$tmp/crust.sock"
crust_root="$tmp/root"
write_crustd_config "$tmp" "$registry"
"$crustd" --config "$tmp/config.toml" >"$CRUST_LOG_DIR/crustd.log" 2>&1 &
crustd_pid=$!
wait_for_crustd "$sock" "$crictl" 30 || {
  tail -n 40 "$CRUST_LOG_DIR/crustd.log" >&2
  fail "crustd did not answer on $sock"
}

# --- the containerd peer
peer_env="$("$here/containerd-peer.sh" env)"
peer_sock="$(sed -n 's/^CRUST_PEER_SOCK=//p' <<<"$peer_env")"
peer_root="$(sed -n 's/^ROOT=//p' <<<"$peer_env")"
peer_bin="$(sed -n 's/^BIN=//p' <<<"$peer_env")"
peer_pidfile="$(sed -n 's/^PIDFILE=//p' <<<"$peer_env")"
if ! { [ -S "$peer_sock" ] && "$peer_bin/ctr" --address "$peer_sock" --connect-timeout 2s version >/dev/null 2>&1; }; then
  peer_started=1
fi
step containerd-peer "$here/containerd-peer.sh" start
containerd_pid="$(cat "$peer_pidfile")"
kill -0 "$containerd_pid" 2>/dev/null || fail "the containerd peer of $peer_pidfile does not run"

crust_name="crust $("$crictl" -r "unix://$sock" version 2>/dev/null | awk '/^RuntimeVersion/ { print $2 }')"
containerd_name="containerd $("$peer_bin/containerd" --version | awk '{ print $3 }')"

# --- helpers
cri() { # SOCK ARGS...
  local s="$1"
  shift
  "$crictl" -r "unix://$s" -i "unix://$s" --timeout 600s "$@"
}

status_kb() { # PID FIELD: a field of /proc/PID/status, in KiB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

hexes() { # the hex parts of the blobs and chain IDs of the image
  local d
  for d in "${blobs[@]}" "${chains[@]}"; do echo "${d#sha256:}"; done
}

left_on_disk() { # DIR: paths under DIR named after any blob or chain ID of the image
  local dir="$1" h
  [ -d "$dir" ] || return 0
  local -a expr=()
  for h in $(hexes); do
    expr+=(-o -name "*$h*")
  done
  find "$dir" \( "${expr[@]:1}" \) -print -quit 2>/dev/null || true
}

remove_crust() {
  cri "$sock" inspecti "$image" >/dev/null 2>&1 && cri "$sock" rmi "$image" >>"$log" 2>&1
  cri "$sock" inspecti "$image" >/dev/null 2>&1 && fail "crust still lists $image after rmi"
  # RemoveImage collects garbage right after it returns, in the background: nothing
  # of the image may be left once that has run.
  local i left
  for ((i = 0; i < 600; i++)); do
    left="$(left_on_disk "$crust_root/images")"
    [ -n "$left" ] || return 0
    sleep 0.1
  done
  fail "crust left on disk, 60 s after rmi: $left"
}

containerd_left() { # prints what containerd still holds of the image
  local ns="k8s.io" d c
  local content snapshots
  content="$("$peer_bin/ctr" --address "$peer_sock" -n "$ns" content ls -q 2>>"$log")"
  snapshots="$("$peer_bin/ctr" --address "$peer_sock" -n "$ns" snapshots ls 2>>"$log" | awk 'NR > 1 { print $1 }')"
  for d in "${blobs[@]}"; do
    grep -qxF "$d" <<<"$content" && echo "content $d"
  done
  for c in "${chains[@]}"; do
    grep -qxF "$c" <<<"$snapshots" && echo "snapshot $c"
  done
  left_on_disk "$peer_root/io.containerd.content.v1.content"
  # snapshot directories are numbered: their count must match the snapshots listed
  local dirs listed=0 n
  dirs="$(find "$peer_root/io.containerd.snapshotter.v1.overlayfs/snapshots" -mindepth 1 \
    -maxdepth 1 -type d 2>/dev/null | wc -l)"
  for n in $("$peer_bin/ctr" --address "$peer_sock" namespaces ls -q 2>>"$log"); do
    listed=$((listed + $("$peer_bin/ctr" --address "$peer_sock" -n "$n" snapshots ls 2>>"$log" | awk 'NR > 1' | wc -l)))
  done
  [ "$dirs" -le "$listed" ] || echo "overlayfs: $dirs snapshot dirs for $listed snapshots"
  return 0
}

remove_containerd() {
  cri "$peer_sock" inspecti "$image" >/dev/null 2>&1 && cri "$peer_sock" rmi "$image" >>"$log" 2>&1
  cri "$peer_sock" inspecti "$image" >/dev/null 2>&1 && fail "containerd still lists $image after rmi"
  # containerd collects garbage (and removes overlayfs dirs) asynchronously
  local i left
  for ((i = 0; i < 600; i++)); do
    left="$(containerd_left)"
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  fail "containerd still holds, 60 s after rmi: $left"
}

drop_caches=1
drop_page_cache() {
  sync
  if [ "$drop_caches" = 1 ] && ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    drop_caches=0
  fi
}

logged_ms() { # the elapsed time of crustd's last "image pulled" line, in ms
  grep 'image pulled' "$CRUST_LOG_DIR/crustd.log" | tail -n 1 |
    sed -n 's/.*elapsed=\([0-9.]*\)\(ms\|s\|µs\|us\).*/\1 \2/p' |
    awk '{ m = ($2 == "s") ? 1000 : ($2 == "ms") ? 1 : 0.001; printf "%d", $1 * m }'
}

pull_once() { # NAME SOCK PID ROUND
  local name="$1" s="$2" pid="$3" round="$4"
  drop_page_cache
  local before t0 t1 peak after logged="-"
  before="$(status_kb "$pid" VmRSS)"
  echo 5 >"/proc/$pid/clear_refs" # reset VmHWM to the current RSS
  t0="$(date +%s%N)"
  cri "$s" pull "$image" >>"$log" 2>&1 || fail "$name: crictl pull $image failed"
  t1="$(date +%s%N)"
  peak="$(status_kb "$pid" VmHWM)"
  after="$(status_kb "$pid" VmRSS)"
  if [ "$s" = "$sock" ]; then
    logged="$(logged_ms || true)"
    [ -n "$logged" ] || logged="-"
  fi
  printf '%s\t%d\t%d\t%d\t%d\t%d\t%s\n' "$name" "$round" $(((t1 - t0) / 1000000)) \
    "$before" "$peak" "$after" "$logged" >>"$results"
}

# --- the rounds, interleaved
: >"$results"
for ((r = 1; r <= rounds; r++)); do
  remove_crust
  pull_once "$crust_name" "$sock" "$crustd_pid" "$r"
  remove_containerd
  pull_once "$containerd_name" "$peer_sock" "$containerd_pid" "$r"
done
kill -0 "$crustd_pid" 2>/dev/null || fail "crustd died during the benchmark"
remove_crust
remove_containerd

note="$rounds round(s), interleaved; page cache dropped before each pull"
[ "$drop_caches" = 1 ] || note="$rounds round(s), interleaved; page cache NOT dropped (not permitted)"
python3 "$report" table "$results" "$image (from $registry)" "$layers" "$bytes" "$note"
[ -z "$tsv" ] || cp "$results" "$tsv"
