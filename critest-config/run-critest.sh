#!/usr/bin/env bash
# Runs critest against a throwaway crustd: temporary root and state dirs, its own
# socket, its own CNI config, NRI on its own socket, and the local registry as a
# plain-HTTP mirror of the upstream registries critest names. Writes a junit report, prints
# `critest: N passed, N failed, N skipped`, and fails when a spec fails that
# known-failures.txt does not list, or critest skips a spec that the skipped-specs
# file does not account for.
#
# Usage: run-critest.sh [OPTIONS] [-- CRITEST_ARGS...]
#   --crustd PATH          the crustd binary (default: target/debug/crustd)
#   --endpoint unix:///P   run against the crustd already serving there instead (its
#                          config is the caller's: CNI, the registry as mirror); the
#                          pods the run leaves are removed at the end; its NRI socket,
#                          if it serves NRI, is $CRUST_NRI_SOCKET
#   --cri-tools DIR        crictl and critest from DIR (default: install-cri-tools.sh)
#   --registry HOST:PORT   the local registry, started by the caller (default:
#                          registry.sh starts it on 127.0.0.1:${CRUST_REGISTRY_PORT:-5111})
#   --skipped-specs FILE   why critest skips what it skips (default: skipped-specs.txt)
#   --label TEXT           the summary lines start with `TEXT:` (default: critest)
#   --keep                 keep the temporary dir (logs, junit.xml) even on success
#   --focused              CRITEST_ARGS focus on some specs: the others are skipped by design
#   CRITEST_ARGS           passed on, e.g. --ginkgo.focus='image'
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../scripts/lib.sh"
need_root

crustd="$CRUST_TOP/target/debug/crustd"
endpoint=""
tools=""
registry=""
skipped="$here/skipped-specs.txt"
label=critest
keep=0
focused=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --crustd) crustd="$2"; shift 2 ;;
    --endpoint) endpoint="$2"; shift 2 ;;
    --cri-tools) tools="$2"; shift 2 ;;
    --registry) registry="$2"; shift 2 ;;
    --skipped-specs) skipped="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --focused) focused=(--focused); shift ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
case "$endpoint" in
  "") [ -x "$crustd" ] || die "no crustd at $crustd: build it first (cargo build)" ;;
  unix:///*) ;;
  *) die "--endpoint $endpoint: expected unix:///PATH" ;;
esac
[ -f "$skipped" ] || die "no skipped-specs file $skipped"

apt_install containernetworking-plugins iptables
[ -n "$tools" ] || tools="$("$here/install-cri-tools.sh")"
[ -x "$tools/critest" ] && [ -x "$tools/crictl" ] || die "no crictl and critest in $tools"
if [ -z "$registry" ]; then
  "$here/registry.sh"
  registry="127.0.0.1:${CRUST_REGISTRY_PORT:-5111}"
fi

# Short: shim sockets live under its state dir, and a socket path has 107 bytes.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/crust-ct.XXXXXX")"
# A container's root in a pod user namespace is an unprivileged host user: it must be
# able to search down to the state dir (as under /run), or crustd claims no user
# namespaces.
chmod 0711 "$tmp"
shm_before="$(shm_segments)"
pid=""
nri_socket="${CRUST_NRI_SOCKET:-}"
if [ -n "$endpoint" ]; then
  sock="${endpoint#unix://}"
else
  sock="$tmp/crust.sock"
  write_crustd_config "$tmp" "$registry"
  # NRI on its own socket, for critest's NRI specs. Their plugins hold a hook for up
  # to 2 s on purpose: a request timeout well above that keeps a loaded machine from
  # dropping them.
  nri_socket="$tmp/nri.sock"
  printf '\n[nri]\nenable = true\nsocket_path = "%s"\nrequest_timeout_ms = 10000\n' \
    "$nri_socket" >>"$tmp/config.toml"
  write_cni_config "$tmp/net.d" crust-critest crustct0 10.87.0.0/16
  "$crustd" --config "$tmp/config.toml" >"$tmp/crustd.log" 2>&1 &
  pid=$!
fi

# crustd_alive: the throwaway crustd still runs, or the given endpoint still answers.
crustd_alive() {
  if [ -n "$pid" ]; then
    kill -0 "$pid" 2>/dev/null
  else
    wait_for_crustd "$sock" "$tools/crictl" 10
  fi
}

# crustd_log_tail N: the last N lines of the throwaway crustd's log (the caller of a
# crustd given by --endpoint knows where its log is).
crustd_log_tail() {
  [ -z "$pid" ] || tail -n "$1" "$tmp/crustd.log" >&2
}

cleanup() {
  local rc=$?
  # Pods outlive crustd by design: remove what the run left before stopping it, then
  # sweep up after a crustd that could not (shims, pid holders, mounts, the bridge).
  if crustd_alive; then
    timeout 120 "$tools/crictl" --runtime-endpoint "unix://$sock" rmp --all --force \
      >/dev/null 2>&1 || true
  fi
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    pkill -KILL -f -- "--state $tmp/" 2>/dev/null || true
    pkill -KILL -f -- "--pin $tmp/" 2>/dev/null || true
    awk -v p="$tmp/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
    ip link del crustct0 2>/dev/null || true
  fi
  # The HostIpc specs leave SysV shared memory segments on the host.
  remove_new_shm "$shm_before"
  keep_or_remove "$label" "$tmp" "$rc" "$keep"
}
trap cleanup EXIT

if ! wait_for_crustd "$sock" "$tools/crictl" 30; then
  echo "$label: crustd did not answer on $sock" >&2
  crustd_log_tail 50
  exit 1
fi

set +e
"$tools/critest" \
  --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
  --test-images-file "$here/test-images.yaml" \
  --ginkgo.no-color --ginkgo.junit-report "$tmp/junit.xml" \
  ${nri_socket:+--nri-socket "$nri_socket"} \
  "${extra[@]}" >"$tmp/critest.log" 2>&1
set -e
if ! crustd_alive; then
  echo "$label: crustd died during the run" >&2
  crustd_log_tail 80
  exit 1
fi
[ -s "$tmp/junit.xml" ] || { tail -n 80 "$tmp/critest.log" >&2; die "critest wrote no junit report"; }
if ! python3 "$here/junit-report.py" "${focused[@]}" --label="$label" --skipped-specs="$skipped" \
  "$tmp/junit.xml" "$here/known-failures.txt"; then
  [ -z "$pid" ] || echo "--- crustd log (last lines)" >&2
  crustd_log_tail 40
  exit 1
fi
