#!/usr/bin/env bash
# The benchmark (not a test): crustd against containerd 2.x (with runc, both built
# by install-containerd.sh), the same CRI workload on each, in the same run; prints
# the figures side by side with the ratio crust/containerd, medians over the runs.
# Figures are never judged: it exits 0 when the benchmark ran, non-zero only when
# something failed to run.
#
# Usage: bench.sh [--out DIR] [--runs N] [--phases LIST] [--pods N] [--fleet N]
#                 [--burst-pods N] [--density-pods N] [--density-secs N]
#                 [--pull-rounds N] [--no-pull] [--no-critest] [--no-containerd]
#   --out DIR          keep the results there (default: a new dir under ${TMPDIR:-/tmp})
#   --runs N           runs of crust-bench per runtime, each against freshly started
#                      daemons, the runtimes' order swapped every run (default 2);
#                      the table shows each figure's median over the runs
#   --phases LIST      crust-bench's phases (default all: classic,bursts,exec-burst,
#                      density,recovery,pulls)
#   --pods N           classic: pods per pod start phase (default 50)
#   --fleet N          classic: pods kept running for the List calls (default 100)
#   --burst-pods N     pods of each burst, started 10 and 50 at a time (default 100)
#   --density-pods N   pods running in the density and recovery phases (default 300)
#   --density-secs N   seconds of kubelet-like polling in the density phase (default 60)
#   --pull-rounds N    cold pulls per runtime of bench-pull.sh (default 2)
#   --no-pull          skip bench-pull.sh (the ~100 MB image)
#   --no-critest       skip critest -benchmark
#   --no-containerd    crust alone, for quick iterations: no peer, no ratios
# A smoke run: bench.sh --no-critest --no-pull --pods 5 --fleet 10 --burst-pods 20
#   --density-pods 20 --density-secs 10
#
# Steps: builds crustd, crust-shim and crust-bench in release, and containerd and runc
# (install-containerd.sh, cached); builds the pull phase's images (bench-images.py)
# and pushes them to the local registry; runs bench-pull.sh (the ~100 MB multi-layer
# image). Then each run starts a throwaway crustd (temp root, state and socket, its
# own CNI config: the same plugins as the peer's, on bridge crustbench0) and the
# containerd peer (containerd-peer.sh: its own CNI config and sandbox image, same
# local registry, cgroupfs), runs crust-bench against each in turn and stops both.
# crust-bench's phases: classic (pod start serial and 2 in parallel, teardown,
# ExecSync, List* with 100 pods / 200 containers, daemon RSS, shim + pause memory per
# container), bursts (100 pods 10 and 50 at a time), exec-burst (ExecSync during a
# burst), density (300 pods, kubelet-like polling for 60 s: call times, daemon RSS and
# CPU, memory per pod), recovery (SIGKILL of the daemon with those pods, restarted by
# crust-bench as it was started: time to a ready Status and a complete
# ListContainers) and pulls (5 images at once, one of 30 layers, cold). The daemons
# of the last run then serve `critest -benchmark` with benchmark-params.yaml. The
# results stay in DIR: crust.N.json, containerd.N.json (run N), pull.tsv,
# critest-*/ (the JSON critest writes), logs/, table.txt (bench-report.py, which
# also merges the runs of several such dirs). Everything started is stopped and
# removed at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

out=""
runs=2
phases="classic,bursts,exec-burst,density,recovery,pulls"
pods=50
fleet=100
burst_pods=100
density_pods=300
density_secs=60
pull_rounds=2
do_pull=1
do_critest=1
do_peer=1
number() { [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "$0: $1 needs a number above 0" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "$0: --out needs a dir" >&2; exit 2; }; out="$2"; shift 2 ;;
    --runs) number "$1" "${2:-}"; runs="$2"; shift 2 ;;
    --phases) [ $# -ge 2 ] || { echo "$0: --phases needs a list" >&2; exit 2; }; phases="$2"; shift 2 ;;
    --pods) number "$1" "${2:-}"; pods="$2"; shift 2 ;;
    --fleet) number "$1" "${2:-}"; fleet="$2"; shift 2 ;;
    --burst-pods) number "$1" "${2:-}"; burst_pods="$2"; shift 2 ;;
    --density-pods) number "$1" "${2:-}"; density_pods="$2"; shift 2 ;;
    --density-secs) number "$1" "${2:-}"; density_secs="$2"; shift 2 ;;
    --pull-rounds) number "$1" "${2:-}"; pull_rounds="$2"; shift 2 ;;
    --no-pull) do_pull=0; shift ;;
    --no-critest) do_critest=0; shift ;;
    --no-containerd) do_peer=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "$0: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ -n "$out" ] || out="$(mktemp -d "${TMPDIR:-/tmp}/crust-bench.$(date +%Y%m%d-%H%M%S).XXXX")"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
export CRUST_LOG_DIR="$out/logs"
. "$here/../scripts/lib.sh"
need_root

port="${CRUST_REGISTRY_PORT:-5111}"
registry="127.0.0.1:$port"
bridge=crustbench0
# Short: shim sockets live under the state dir, and a socket path has 107 bytes.
tmp="$(mktemp -d /tmp/crust-bn.XXXXXX)"
# the running crustd's dir under $tmp (config, root, state, socket, log, pid file)
dir=""
sock=""
peer_started=0

# A critest run shares host ports and the CPU: wait until none runs.
waited=0
while pgrep -x critest >/dev/null; do
  [ "$waited" = 1 ] || echo "bench: waiting for a running critest to finish" >&2
  waited=1
  sleep 10
done

# crustd and crust-shim processes whose command line names DIR (our crustd, its
# shims and pid holders)
procs_under() {
  local d
  for d in /proc/[0-9]*; do
    case "$(cat "$d/comm" 2>/dev/null)" in crustd | crust-shim) ;; *) continue ;; esac
    tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -qF -- "$1" && echo "${d#/proc/}"
  done
  return 0
}

crustd_pid() { # the pid of the running crustd (the recovery phase starts a new one)
  local pid
  pid="$(cat "$dir/crustd.pid" 2>/dev/null)" && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start_crustd() { # DIR
  dir="$1"
  sock="$dir/crust.sock"
  write_crustd_config "$dir" "$registry"
  # critest's image benchmarks pull from public.ecr.aws (the peer mirrors it too)
  printf '\n[registry.mirrors."public.ecr.aws"]\nendpoints = ["http://%s"]\n' "$registry" \
    >>"$dir/config.toml"
  # the peer's plugins (containerd-peer.sh), on a bridge and subnet of our own
  cat >"$dir/net.d/10-crust-bench.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "crust-bench",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/ipam",
        "ranges": [[{ "subnet": "10.86.0.0/16", "gateway": "10.86.0.1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
    { "type": "loopback" }
  ]
}
JSON
  : >"$dir/crustd.log"
  spawn_detached "$dir/crustd.log" "$bin/crustd" --config "$dir/config.toml"
  echo "$!" >"$dir/crustd.pid"
  # the recovery phase SIGKILLs it: no word from this shell about that
  disown "$!"
  wait_for_crustd "$sock" "$crictl" 30 || fail "crustd did not answer on $sock" "$dir/crustd.log"
}

stop_crustd() { # removes its pods, stops it and everything it left, and its dir
  [ -n "$dir" ] || return 0
  local pid p m
  if pid="$(crustd_pid)"; then
    timeout 300 "$crictl" -r "unix://$sock" --timeout 60s rmp --all --force \
      >>"$CRUST_LOG_DIR/cleanup.log" 2>&1
    stop_pid "$pid"
  fi
  # what a crustd that could not remove its pods leaves: shims, pid holders, mounts,
  # and the containers' processes in the pods' cgroups (crust-bench's parent
  # /crust-bench/crust-*), which outlive their shims
  for p in $(procs_under "$dir/"); do
    kill -KILL "$p" 2>/dev/null
  done
  local cg
  for cg in /sys/fs/cgroup/crust-bench/crust-* /sys/fs/cgroup/*/crust-bench/crust-*; do
    [ -d "$cg" ] || continue
    find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  done
  sleep 0.5
  for cg in /sys/fs/cgroup/crust-bench/crust-* /sys/fs/cgroup/*/crust-bench/crust-*; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  awk -v p="$dir/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  ip link del "$bridge" 2>/dev/null
  cat "$dir/crustd.log" >>"$CRUST_LOG_DIR/crustd.log" 2>/dev/null
  rm -rf "$dir"
  dir=""
  return 0
}

stop_peer() {
  [ "$peer_started" = 1 ] || return 0
  CRICTL="${crictl:-}" "$here/containerd-peer.sh" stop >>"$CRUST_LOG_DIR/cleanup.log" 2>&1
  peer_started=0
}

cleanup() {
  local rc=$?
  set +e
  stop_crustd
  stop_peer
  rm -rf "$tmp"
  if [ "$rc" -ne 0 ]; then
    echo "bench: failed; logs kept in $out/logs" >&2
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
pull_args=()
if [[ ,$phases, == *,pulls,* ]]; then
  step bench-images-build python3 "$here/bench-images.py" build --cache "$CRUST_CACHE"
  step bench-images-push python3 "$here/bench-images.py" push --cache "$CRUST_CACHE" \
    --registry "$registry"
  while read -r kind name; do
    case "$kind" in
      parallel) pull_args+=(--pull-image "$name") ;;
      layers) pull_args+=(--layers-image "$name") ;;
    esac
  done < <(python3 "$here/bench-images.py" names)
fi
need_rust
echo "bench: building crustd, crust-shim and crust-bench (release)" >&2
# One package per build, as bench-pull.sh builds crustd: built together, their
# dependencies' features would unify differently and everything would build twice.
for pkg in crust-runtime crust-shim crust-bench; do
  step "build-$pkg" cargo build --release --quiet --manifest-path "$CRUST_TOP/Cargo.toml" \
    -p "$pkg" --bins
done
bin="${CARGO_TARGET_DIR:-$CRUST_TOP/target}/release"
for b in crustd crust-shim crust-bench; do
  [ -x "$bin/$b" ] || fail "no $b in $bin after the build"
done
if [ "$do_peer" = 1 ]; then
  echo "bench: building containerd and runc (once; cached)" >&2
  step install-containerd "$here/install-containerd.sh"
  peer_env="$("$here/containerd-peer.sh" env)"
  peer_sock="$(sed -n 's/^CRUST_PEER_SOCK=//p' <<<"$peer_env")"
  peer_config="$(sed -n 's/^CONFIG=//p' <<<"$peer_env")"
  peer_log="$(sed -n 's/^LOG=//p' <<<"$peer_env")"
  peer_bin="$(sed -n 's/^BIN=//p' <<<"$peer_env")"
  peer_pidfile="$(sed -n 's/^PIDFILE=//p' <<<"$peer_env")"
  if [ -S "$peer_sock" ] && "$peer_bin/ctr" --address "$peer_sock" --connect-timeout 2s \
    version >/dev/null 2>&1; then
    fail "a containerd peer already serves $peer_sock: the benchmark restarts and kills its own (containerd-peer.sh stop first)"
  fi
fi

# --- the pull benchmark (its own throwaway crustd; the peer, if it starts it)
if [ "$do_pull" = 1 ]; then
  echo "bench: pull benchmark (bench-pull.sh --rounds $pull_rounds)" >&2
  step pull "$here/bench-pull.sh" --rounds "$pull_rounds" --tsv "$out/pull.tsv"
fi

# --- crust-bench against each, the runs one after the other
bench() { # LABEL SOCK PID SHIM SHIM_ARG RUN RESTART RESTART_LOG RESTART_PIDFILE
  echo "bench: run $6: crust-bench against $1" >&2
  step "crust-bench-$1.$6" "$bin/crust-bench" --endpoint "unix://$2" --label "$1" \
    --daemon-pid "$3" --shim-name "$4" --shim-arg "$5" --phases "$phases" \
    --pods "$pods" --fleet "$fleet" --burst-pods "$burst_pods" \
    --density-pods "$density_pods" --density-secs "$density_secs" \
    --restart "$7" --restart-log "$8" --restart-pidfile "$9" "${pull_args[@]}" \
    --out "$out/$1.$6.json"
}
bench_crust() { # RUN
  bench crust "$sock" "$(crustd_pid)" crust-shim "$dir/" "$1" \
    "$bin/crustd --config $dir/config.toml" "$dir/crustd.log" "$dir/crustd.pid"
}
bench_peer() { # RUN
  bench containerd "$peer_sock" "$(cat "$peer_pidfile")" containerd-shim-runc-v2 \
    "$peer_sock" "$1" "env PATH=$peer_bin:$PATH $peer_bin/containerd --config $peer_config" \
    "$peer_log" "$peer_pidfile"
}
for ((run = 1; run <= runs; run++)); do
  start_crustd "$tmp/r$run"
  if [ "$do_peer" = 1 ]; then
    peer_started=1
    step "containerd-peer.$run" "$here/containerd-peer.sh" start
  fi
  if [ "$do_peer" = 0 ]; then
    bench_crust "$run"
  elif ((run % 2)); then
    bench_crust "$run"
    bench_peer "$run"
  else
    bench_peer "$run"
    bench_crust "$run"
  fi
  crustd_pid >/dev/null || fail "crustd died during the benchmark" "$dir/crustd.log"
  if ((run < runs)); then
    stop_crustd
    stop_peer
  fi
done

# --- critest -benchmark against each, on the daemons of the last run
critest_bench() { # LABEL SOCK
  echo "bench: critest -benchmark against $1" >&2
  mkdir -p "$out/critest-$1"
  # a failing spec costs its figures, not the run's
  step "critest-$1" "$tools/critest" -benchmark \
    --runtime-endpoint "unix://$2" --image-endpoint "unix://$2" \
    --test-images-file "$here/test-images.yaml" \
    --benchmarking-params-file "$here/benchmark-params.yaml" \
    --benchmarking-output-dir "$out/critest-$1" --ginkgo.no-color ||
    echo "bench: critest -benchmark against $1 failed; see $CRUST_LOG_DIR/critest-$1.log" >&2
}
if [ "$do_critest" = 1 ]; then
  critest_bench crust "$sock"
  [ "$do_peer" = 0 ] || critest_bench containerd "$peer_sock"
fi
crustd_pid >/dev/null || fail "crustd died during the benchmark" "$dir/crustd.log"

echo >&2
python3 "$here/bench-report.py" "$out" crust containerd
echo
echo "results: $out"
