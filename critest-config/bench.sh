#!/usr/bin/env bash
# The benchmark (not a test): crustd against containerd (Debian's, with runc),
# the same CRI workload on each, in the same run; prints the figures side by side
# with the ratio crust/containerd. Figures are never judged: it exits 0 when the
# benchmark ran, non-zero only when something failed to run.
#
# Usage: bench.sh [--out DIR] [--pods N] [--pull-rounds N] [--no-pull] [--no-critest]
#                 [--no-containerd]
#   --out DIR         keep the results there (default: a new dir under ${TMPDIR:-/tmp})
#   --pods N          pods per pod start phase of crust-bench (default 50)
#   --pull-rounds N   cold pulls per runtime of bench-pull.sh (default 2)
#   --no-pull         skip the pull benchmark
#   --no-critest      skip critest -benchmark
#   --no-containerd   crust alone, for quick iterations: no peer, no ratios
#
# Steps: builds crustd, crust-shim and crust-bench in release; runs bench-pull.sh
# (the ~100 MB multi-layer image); starts a throwaway crustd (temp root, state and
# socket, its own CNI config: the same plugins as the peer's, on bridge
# crustbench0) and the containerd peer (containerd-peer.sh: its own CNI config and
# sandbox image, same local registry); runs crust-bench against each in turn (pod
# start serial and 2 in parallel, teardown, ExecSync, List* with 100 pods / 200
# containers, daemon RSS and CPU time, shim + pause RSS/PSS per container), then
# `critest -benchmark` with benchmark-params.yaml against each. The results stay
# in DIR: crust.json, containerd.json, pull.tsv, critest-*/ (the JSON critest
# writes), logs/, table.txt. Everything started is removed and stopped at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

out=""
pods=50
pull_rounds=2
do_pull=1
do_critest=1
do_peer=1
number() { [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "$0: $1 needs a number above 0" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "$0: --out needs a dir" >&2; exit 2; }; out="$2"; shift 2 ;;
    --pods) number "$1" "${2:-}"; pods="$2"; shift 2 ;;
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
sock="$tmp/crust.sock"
crustd_pid=""
peer_started=0
peer_sock=""

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

cleanup() {
  local rc=$?
  set +e
  if [ -n "$crustd_pid" ] && kill -0 "$crustd_pid" 2>/dev/null; then
    timeout 180 "$crictl" -r "unix://$sock" --timeout 60s rmp --all --force >>"$CRUST_LOG_DIR/cleanup.log" 2>&1
    stop_pid "$crustd_pid"
  fi
  # what a crustd that could not remove its pods leaves: shims, pid holders, mounts
  local p m
  for p in $(procs_under "$tmp/"); do
    kill -KILL "$p" 2>/dev/null
  done
  awk -v p="$tmp/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  ip link del "$bridge" 2>/dev/null
  if [ "$peer_started" = 1 ]; then
    CRICTL="${crictl:-}" "$here/containerd-peer.sh" stop >>"$CRUST_LOG_DIR/cleanup.log" 2>&1
  fi
  [ "$rc" -eq 0 ] || cp "$tmp/crustd.log" "$CRUST_LOG_DIR/" 2>/dev/null
  rm -rf "$tmp"
  if [ "$rc" -ne 0 ]; then
    echo "bench: failed; logs kept in $out/logs" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what the benchmark needs
apt_install containerd runc containernetworking-plugins iptables iproute2 python3
tools="$("$here/install-cri-tools.sh")"
crictl="$tools/crictl"
step registry "$here/registry.sh" start
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

# --- the pull benchmark (its own throwaway crustd; the peer, if it starts it)
if [ "$do_pull" = 1 ]; then
  echo "bench: pull benchmark (bench-pull.sh --rounds $pull_rounds)" >&2
  step pull "$here/bench-pull.sh" --rounds "$pull_rounds" --tsv "$out/pull.tsv"
fi

# --- a throwaway crustd
write_crustd_config "$tmp" "$registry"
# critest's image benchmarks pull from public.ecr.aws (the peer mirrors it too)
printf '\n[registry.mirrors."public.ecr.aws"]\nendpoints = ["http://%s"]\n' "$registry" \
  >>"$tmp/config.toml"
# the peer's plugins (containerd-peer.sh), on a bridge and subnet of our own
cat >"$tmp/net.d/10-crust-bench.conflist" <<JSON
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
        "dataDir": "$tmp/ipam",
        "ranges": [[{ "subnet": "10.86.0.0/16", "gateway": "10.86.0.1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
    { "type": "loopback" }
  ]
}
JSON
: >"$tmp/crustd.log"
spawn_detached "$tmp/crustd.log" "$bin/crustd" --config "$tmp/config.toml"
crustd_pid=$!
wait_for_crustd "$sock" "$crictl" 30 || fail "crustd did not answer on $sock" "$tmp/crustd.log"

# --- the containerd peer
if [ "$do_peer" = 1 ]; then
  peer_env="$("$here/containerd-peer.sh" env)"
  peer_sock="$(sed -n 's/^CRUST_PEER_SOCK=//p' <<<"$peer_env")"
  peer_config="$(sed -n 's/^CONFIG=//p' <<<"$peer_env")"
  if ! { [ -S "$peer_sock" ] && ctr --address "$peer_sock" --connect-timeout 2s version >/dev/null 2>&1; }; then
    peer_started=1
  fi
  step containerd-peer "$here/containerd-peer.sh" start
  containerd_pid=""
  for d in /proc/[0-9]*; do
    if [ "$(tr '\0' ' ' 2>/dev/null <"$d/cmdline")" = "containerd --config $peer_config " ]; then
      containerd_pid="${d#/proc/}"
      break
    fi
  done
  [ -n "$containerd_pid" ] || fail "cannot find the containerd process of $peer_config"
fi

# --- crust-bench against each, one after the other
bench() { # LABEL SOCK PID SHIM SHIM_ARG
  echo "bench: crust-bench against $1" >&2
  step "crust-bench-$1" "$bin/crust-bench" --endpoint "unix://$2" --label "$1" \
    --daemon-pid "$3" --shim-name "$4" --shim-arg "$5" --pods "$pods" --out "$out/$1.json"
}
bench crust "$sock" "$crustd_pid" crust-shim "$tmp/"
if [ "$do_peer" = 1 ]; then
  bench containerd "$peer_sock" "$containerd_pid" containerd-shim-runc-v2 "$peer_sock"
fi

# --- critest -benchmark against each
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
kill -0 "$crustd_pid" 2>/dev/null || fail "crustd died during the benchmark" "$tmp/crustd.log"
cp "$tmp/crustd.log" "$CRUST_LOG_DIR/"

echo >&2
python3 "$here/bench-report.py" "$out" crust containerd
echo
echo "results: $out"
