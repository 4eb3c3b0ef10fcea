#!/usr/bin/env bash
# Runs the Kubernetes node e2e suite (e2e_node.test of install-kubernetes.sh) against a
# throwaway crustd: temporary root and state dirs, its own socket and CNI config, the
# local registry as a plain-HTTP mirror of the upstream registries, as run-critest.sh
# does. The suite starts etcd, kube-apiserver and a namespace controller in its own
# process and kubelet as a child, with crust as kubelet's remote runtime. Writes a junit
# report, prints `node-e2e: N passed, N failed, N skipped`, and fails when a spec fails
# that node-e2e/known-failures.txt does not list, or is skipped for a reason that
# node-e2e/skipped-specs.txt does not give.
#
# Usage: node-e2e.sh [--crustd PATH] [--keep] [--focus REGEX] [--skip REGEX] [--procs N]
#                    [-- E2E_ARGS...]
#   --crustd PATH  the crustd binary (default: target/debug/crustd)
#   --keep         keep the temporary dir (logs, junit.xml) even on success
#   --focus REGEX  the specs to run (default: NodeConformance)
#   --skip REGEX   specs to leave out of the focus
#   --procs N      ginkgo processes running specs side by side (default 1; the specs
#                  marked [Serial] run alone at the end either way)
#   E2E_ARGS       passed on to e2e_node.test after ginkgo's `--`
#
# The run happens in a mount namespace of its own: there kubelet's root dir
# (/var/lib/kubelet, fixed in the suite) and its log dirs (/var/log/pods,
# /var/log/containers) are temporary dirs, and, on a host whose PID 1 is not systemd,
# the suite does not find systemd-run (it would start kubelet as a transient systemd
# unit when it does). kubelet runs with the suite's settings for a node without
# systemd plus what this host needs: the cgroupfs driver, failCgroupV1: false, no swap
# check, crustd in a cgroup of its own named as kubelet's runtime cgroup, and no system
# cgroup (kubelet would move every process of the host's root cgroup into it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../scripts/lib.sh"
need_root

crustd="$CRUST_TOP/target/debug/crustd"
keep=0
focus=NodeConformance
skip=""
procs=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --crustd) crustd="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --focus) focus="$2"; shift 2 ;;
    --skip) skip="$2"; shift 2 ;;
    --procs) procs="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
[ -x "$crustd" ] || die "no crustd at $crustd: build it first (cargo build)"
crustd="$(cd "$(dirname "$crustd")" && pwd)/$(basename "$crustd")"

apt_install containernetworking-plugins iptables python3
k8s="$("$here/node-e2e-prepare.sh")"
tools="$("$here/install-cri-tools.sh")"
port="${CRUST_REGISTRY_PORT:-5111}"

# Short: shim sockets live under its state dir, and a socket path has 107 bytes.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/crust-ne.XXXXXX")"
chmod 0711 "$tmp"
sock="$tmp/crust.sock"
write_crustd_config "$tmp" "127.0.0.1:$port"
# The RuntimeClass specs name the handler test-handler, as containerd's and CRI-O's
# node e2e configs define it.
printf '\n[runtime]\nhandlers = ["test-handler"]\n' >>"$tmp/config.toml"
write_cni_config "$tmp/net.d" crust-node-e2e crustne0 10.89.0.0/16
runtime_cgroup=/crust-node-e2e
cat >"$tmp/kubelet-base.yaml" <<YAML
# The suite's default (test/e2e_node/jenkins/default-kubelet-config.yaml) and what
# this host needs.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /
podCIDR: "10.100.0.0/24"
volumeStatsAggPeriod: 10s
fileCheckFrequency: 10s
evictionPressureTransitionPeriod: 30s
evictionHard:
  memory.available: 250Mi
  nodefs.available: 10%
  nodefs.inodesFree: 5%
evictionMinimumReclaim:
  nodefs.available: 5%
  nodefs.inodesFree: 5%
serializeImagePulls: false
failSwapOn: false
failCgroupV1: false
YAML

# The dirs the run gets private copies of; those that do not exist yet are made as
# mount points and removed afterwards.
private_dirs=(/var/lib/kubelet /var/log/pods /var/log/containers)
made_dirs=()
for d in "${private_dirs[@]}"; do
  [ -d "$d" ] || { mkdir -p "$d"; made_dirs+=("$d"); }
done
# The cgroup v1 hierarchies. Those that take crustd into the runtime cgroup leave out
# cpuset (its cpus and mems must be set first; kubelet reports nothing from it) and
# named ones. kubelet makes kubepods and kubelet in each: none may exist already.
cgroup_mounts=()
cgroup_dirs=()
while read -r type mnt opts; do
  cgroup_mounts+=("$mnt")
  [ -e "$mnt/kubepods" ] && die "$mnt/kubepods exists: is another kubelet running?"
  [ "$type" = cgroup ] || continue
  case ",$opts," in *,cpuset,* | *,name=*) continue ;; esac
  cgroup_dirs+=("$mnt$runtime_cgroup")
done < <(awk '$3 == "cgroup" || $3 == "cgroup2" { print $3, $2, $4 }' /proc/self/mounts)

shm_before="$(shm_segments)"
cleanup() {
  local rc=$? d
  # Pods outlive crustd by design: sweep up what the run left (shims, pid holders,
  # mounts, the bridge, cgroups kubelet made).
  pkill -KILL -f -- "--state $tmp/" 2>/dev/null || true
  pkill -KILL -f -- "--pin $tmp/" 2>/dev/null || true
  awk -v p="$tmp/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link del crustne0 2>/dev/null || true
  # Container processes whose shim was killed above: every process in kubepods is
  # this run's (none may exist before it).
  for d in "${cgroup_mounts[@]}"; do
    [ -d "$d/kubepods" ] || continue
    find "$d/kubepods" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  sleep 1
  for d in "${cgroup_mounts[@]}"; do
    for sub in "$d$runtime_cgroup" "$d/kubepods" "$d/kubelet"; do
      [ -d "$sub" ] && find "$sub" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
  for d in "${made_dirs[@]}"; do rmdir "$d" 2>/dev/null || true; done
  remove_new_shm "$shm_before"
  keep_or_remove node-e2e "$tmp" "$rc" "$keep"
}
trap cleanup EXIT

ginkgo_args=(
  --procs "$procs"
  --focus "$focus"
  --no-color
  --timeout 6h
  --output-dir "$tmp"
  --junit-report junit.xml
)
[ -n "$skip" ] && ginkgo_args+=(--skip "$skip")
e2e_args=(
  --container-runtime-endpoint "unix://$sock"
  --image-service-endpoint "unix://$sock"
  --prepull-images=false
  --kubelet-config-file "$tmp/kubelet-base.yaml"
  --kubelet-flags "--system-cgroups= --runtime-cgroups=$runtime_cgroup"
  --feature-gates PodAndContainerStatsFromCRI=true
  --report-dir "$tmp/report"
)
e2e_args+=("${extra[@]}")

# In the mount namespace: private dirs, crustd in its cgroup, the suite.
inner() {
  local d n=0
  for d in "${private_dirs[@]}"; do
    mkdir -p "$tmp/private/$n"
    mount --bind "$tmp/private/$n" "$d"
    n=$((n + 1))
  done
  if [ ! -d /run/systemd/system ] && command -v systemd-run >/dev/null; then
    mount --bind /dev/null "$(command -v systemd-run)"
  fi
  "$crustd" --config "$tmp/config.toml" >"$tmp/crustd.log" 2>&1 &
  local pid=$!
  for d in "${cgroup_dirs[@]}"; do
    mkdir -p "$d"
    echo "$pid" >"$d/cgroup.procs"
  done
  if ! wait_for_crustd "$sock" "$tools/crictl" 30; then
    echo "node-e2e: crustd did not answer on $sock; its log:" >&2
    tail -n 50 "$tmp/crustd.log" >&2
    return 1
  fi
  # ginkgo runs a suite in the suite binary's dir, and the suite writes its kubeconfig
  # and kubelet config there and looks for kubelet beside itself.
  mkdir -p "$tmp/suite"
  ln -s "$k8s/e2e_node.test" "$k8s/kubelet" "$tmp/suite/"
  local rc=0
  (cd "$tmp/suite" && "$k8s/ginkgo" "${ginkgo_args[@]}" ./e2e_node.test -- "${e2e_args[@]}") >"$tmp/e2e.log" 2>&1 || rc=$?
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "node-e2e: crustd died during the run; its log:" >&2
    tail -n 80 "$tmp/crustd.log" >&2
    return 1
  fi
  # The suite deletes its pods; remove what a failed spec left before stopping crustd.
  timeout 120 "$tools/crictl" --runtime-endpoint "unix://$sock" rmp --all --force \
    >/dev/null 2>&1 || true
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  return "$rc"
}

export -f inner wait_for_crustd
export tmp sock crustd tools k8s
rc=0
unshare --mount --propagation private -- bash -c "$(declare -p private_dirs cgroup_dirs ginkgo_args e2e_args); inner" \
  || rc=$?
[ -s "$tmp/junit.xml" ] || { tail -n 80 "$tmp/e2e.log" >&2; die "e2e_node.test wrote no junit report (exit $rc)"; }
if ! python3 "$here/junit-report.py" --label=node-e2e --focus-only "$tmp/junit.xml" \
  "$here/node-e2e/known-failures.txt"; then
  echo "--- crustd log (last lines)" >&2
  tail -n 40 "$tmp/crustd.log" >&2
  exit 1
fi
