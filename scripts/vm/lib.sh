# shellcheck shell=bash
# Helpers of the test guest's host-side scripts. Source it after scripts/lib.sh.

CRUST_VM_DIR="$CRUST_TOP/scripts/vm"
CRUST_VM_CACHE="$CRUST_CACHE/vm"

# vm_image_key: a hash of everything the guest image is made of (the package list,
# the build script and the files copied into the image); a new key means a new image.
vm_image_key() {
  (cd "$CRUST_VM_DIR" && find packages build-image image -type f -print0 | sort -z |
    xargs -0 sha256sum) | sha256sum | cut -c1-16
}

# vm_image_dir: the cache dir of the current image (it may not exist yet).
vm_image_dir() {
  echo "$CRUST_VM_CACHE/image-$(vm_image_key)"
}

# vm_accel: "kvm" where /dev/kvm can run a stock kernel, else "tcg". PVM's kvm
# (module kvm_pvm) hangs a stock Debian kernel at boot.
vm_accel() {
  if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then
    echo kvm
  else
    echo tcg
  fi
}

# vm_prepare [--session]: what a guest run of crust's tests needs on the host:
# crustd and crust-shim built (debug), crictl and critest, the local registry filled
# with the test images, and the image; with --session (scripts/vm/test's) also the
# test binaries of runtime/tests/systemd_driver.rs and runtime/tests/checkpoint.rs and
# the node e2e suite's binaries and images. Sets VM_RUN_ARGS to scripts/vm/run's options that hand them to the
# guest.
vm_prepare() {
  local target="${CARGO_TARGET_DIR:-$CRUST_TOP/target}/debug" tools
  need_rust
  (cd "$CRUST_TOP" && step vm-cargo-build cargo build --locked --bins)
  tools="$("$CRUST_TOP/critest-config/install-cri-tools.sh")"
  "$CRUST_TOP/critest-config/registry.sh"
  "$CRUST_VM_DIR/build-image" >/dev/null
  # shellcheck disable=SC2034 # read by the scripts that source this file
  VM_RUN_ARGS=(--registry --put "$target/crustd" --put "$target/crust-shim"
    --put "$tools/crictl" --put "$tools/critest")
  [ "${1:-}" = --session ] || return 0
  # The node e2e suite's binaries (and its images, pushed to the registry).
  local k8s
  k8s="$("$CRUST_TOP/critest-config/node-e2e-prepare.sh")"
  VM_RUN_ARGS+=(--put "$k8s/kubelet" --put "$k8s/e2e_node.test" --put "$k8s/ginkgo")
  local json="$CRUST_LOG_DIR/vm-cargo-test-build.json" exe name
  (cd "$CRUST_TOP" && step vm-cargo-test-build sh -c "cargo test --locked -p crust-runtime \
    --test systemd_driver --test checkpoint --no-run --message-format=json >'$json'")
  for name in systemd_driver checkpoint; do
    exe="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == sys.argv[2]:
        print(m["executable"])' "$json" "$name")"
    [ -x "$exe" ] || die "cargo built no $name test binary (see $json)"
    VM_RUN_ARGS+=(--put "$exe")
  done
}
