#!/usr/bin/env bash
# Runs critest against a throwaway crustd: temporary root and state dirs, its own
# socket, its own CNI config, and the local registry as a plain-HTTP mirror of the
# upstream registries critest names. Writes a junit report, prints
# `critest: N passed, N failed, N skipped`, and fails when a spec fails that
# known-failures.txt does not list.
#
# Usage: run-critest.sh [--crustd PATH] [--keep] [--focused] [-- CRITEST_ARGS...]
#   --crustd PATH  the crustd binary (default: target/debug/crustd)
#   --keep         keep the temporary dir (logs, junit.xml) even on success
#   --focused      CRITEST_ARGS focus on some specs: the others are skipped by design
#   CRITEST_ARGS   passed on, e.g. --ginkgo.focus='image'
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../scripts/lib.sh"
need_root

crustd="$CRUST_TOP/target/debug/crustd"
keep=0
focused=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --crustd) crustd="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --focused) focused=(--focused); shift ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
[ -x "$crustd" ] || die "no crustd at $crustd: build it first (cargo build)"

apt_install containernetworking-plugins iptables
tools="$("$here/install-cri-tools.sh")"
"$here/registry.sh"
port="${CRUST_REGISTRY_PORT:-5111}"

# Short: shim sockets live under its state dir, and a socket path has 107 bytes.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/crust-ct.XXXXXX")"
# A container's root in a pod user namespace is an unprivileged host user: it must be
# able to search down to the state dir (as under /run), or crustd claims no user
# namespaces.
chmod 0711 "$tmp"
sock="$tmp/crust.sock"
write_crustd_config "$tmp" "127.0.0.1:$port"
write_cni_config "$tmp/net.d" crust-critest crustct0 10.87.0.0/16

shm_before="$(ipcs -m 2>/dev/null | awk 'NR>3 && $2 ~ /^[0-9]+$/ {print $2}' | sort)"
"$crustd" --config "$tmp/config.toml" >"$tmp/crustd.log" 2>&1 &
pid=$!

cleanup() {
  local rc=$?
  # Pods outlive crustd by design: remove what the run left before stopping it, then
  # sweep up after a crustd that could not (shims, pid holders, mounts, the bridge).
  if kill -0 "$pid" 2>/dev/null; then
    timeout 120 "$tools/crictl" --runtime-endpoint "unix://$sock" rmp --all --force \
      >/dev/null 2>&1 || true
  fi
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  pkill -KILL -f -- "--state $tmp/" 2>/dev/null || true
  pkill -KILL -f -- "--pin $tmp/" 2>/dev/null || true
  awk -v p="$tmp/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link del crustct0 2>/dev/null || true
  # The HostIpc specs leave SysV shared memory segments on the host.
  local shm_after id
  shm_after="$(ipcs -m 2>/dev/null | awk 'NR>3 && $2 ~ /^[0-9]+$/ {print $2}' | sort)"
  for id in $(comm -13 <(echo "$shm_before") <(echo "$shm_after")); do
    ipcrm -m "$id" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] || [ "$keep" = 1 ]; then
    echo "critest: logs and junit.xml kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT

if ! wait_for_crustd "$sock" "$tools/crictl" 30; then
  echo "critest: crustd did not answer on $sock; its log:" >&2
  tail -n 50 "$tmp/crustd.log" >&2
  exit 1
fi

set +e
"$tools/critest" \
  --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
  --test-images-file "$here/test-images.yaml" \
  --ginkgo.no-color --ginkgo.junit-report "$tmp/junit.xml" \
  "${extra[@]}" >"$tmp/critest.log" 2>&1
set -e
if ! kill -0 "$pid" 2>/dev/null; then
  echo "critest: crustd died during the run; its log:" >&2
  tail -n 80 "$tmp/crustd.log" >&2
  exit 1
fi
[ -s "$tmp/junit.xml" ] || { tail -n 80 "$tmp/critest.log" >&2; die "critest wrote no junit report"; }
if ! python3 "$here/junit-report.py" "${focused[@]}" "$tmp/junit.xml" "$here/known-failures.txt"; then
  echo "--- crustd log (last lines)" >&2
  tail -n 40 "$tmp/crustd.log" >&2
  exit 1
fi
