# shellcheck shell=bash
# Helpers of the scripts that scripts/vm/run runs in the test guest. There the repo is
# /crust (read-only), the binaries under test (crustd, crust-shim, crictl, critest) are
# in /crust-run/bin, and the local registry's storage is at /var/lib/crust-registry.
. /crust/scripts/lib.sh

VM_BIN=/crust-run/bin
VM_REGISTRY=127.0.0.1:${CRUST_REGISTRY_PORT:-5111}
VM_ENDPOINT=unix:///run/crust/crust.sock

# vm_start_registry: Debian's docker-registry serving the storage disk read-only, as a
# transient unit (test-registry.service).
vm_start_registry() {
  local i
  systemctl is-active --quiet test-registry.service && return 0
  # The disk's mount (fstab, nofail) waits for its device: start it and wait for it.
  [ -b /dev/vdb ] || die "no registry disk (scripts/vm/run --registry attaches it)"
  systemctl start "$(systemd-escape --path --suffix=mount /var/lib/crust-registry)" ||
    die "could not mount the registry disk at /var/lib/crust-registry"
  [ -d /var/lib/crust-registry/docker ] || die "no registry storage on the registry disk"
  mkdir -p /etc/crust-vm
  write_registry_config /etc/crust-vm/registry.yml /var/lib/crust-registry "$VM_REGISTRY" readonly
  systemd-run --quiet --unit=test-registry --property=Restart=no \
    /usr/bin/docker-registry serve /etc/crust-vm/registry.yml
  for ((i = 0; i < 150; i++)); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://$VM_REGISTRY/v2/" 2>/dev/null && return 0
    sleep 0.2
  done
  journalctl -u test-registry --no-pager -n 20 >&2
  die "docker-registry does not answer on http://$VM_REGISTRY/v2/"
}

# vm_install_crustd DRIVER: crustd and crust-shim from the share in /usr/local/bin,
# crictl too, scripts/crustd.service as the unit, /etc/crust/config.toml with the
# local registry as mirror, the cgroup driver DRIVER and NRI on, a CNI config; then (re)starts
# the service and waits until crustd answers.
vm_install_crustd() {
  local driver="$1"
  install -m 0755 "$VM_BIN/crustd" "$VM_BIN/crust-shim" "$VM_BIN/crictl" /usr/local/bin/
  install -m 0644 /crust/scripts/crustd.service /etc/systemd/system/crustd.service
  mkdir -p /etc/crust
  {
    printf 'log_level = "info"\n\n[cgroup]\ndriver = "%s"\n' "$driver"
    # NRI on its default socket (critest's NRI specs); a request timeout well above
    # the 2 s its plugins hold a hook on purpose, on a guest without KVM.
    printf '\n[nri]\nenable = true\nrequest_timeout_ms = 10000\n'
    crustd_mirror_tables "$VM_REGISTRY"
  } >/etc/crust/config.toml
  printf 'runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 30\n' "$VM_ENDPOINT" "$VM_ENDPOINT" \
    >/etc/crictl.yaml
  ls /etc/cni/net.d/*.conflist >/dev/null 2>&1 || write_cni_config /etc/cni/net.d crust crust0 10.88.0.0/16
  systemctl daemon-reload
  systemctl enable --quiet crustd.service
  if ! systemctl restart crustd.service ||
    ! wait_for_crustd /run/crust/crust.sock /usr/local/bin/crictl 60; then
    vm_crustd_log 50
    die "crustd.service did not start"
  fi
}

# vm_crustd_log N: the last N lines of crustd's log (the service's journal) to stderr,
# and the whole of it to the share, where the host keeps it (crustd.log in the run's
# share dir).
vm_crustd_log() {
  echo "--- crustd.service log (last $1 lines; all of it in crustd.log of the run's share):" >&2
  journalctl -u crustd.service --no-pager -o short-monotonic -n "$1" >&2 || true
  journalctl -u crustd.service --no-pager -o short-monotonic >/crust-run/crustd.log 2>&1 || true
}

# vm_driver_arg DRIVER: checks a --cgroup-driver value.
vm_driver_arg() {
  case "$1" in
    systemd | cgroupfs) echo "$1" ;;
    *) die "--cgroup-driver $1: expected systemd or cgroupfs" ;;
  esac
}
