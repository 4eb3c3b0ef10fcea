#!/usr/bin/env bash
# What a run of the Kubernetes node e2e suite needs, on this host or for the test
# guest: kubelet, e2e_node.test and ginkgo (install-kubernetes.sh), and the suite's
# images built (busybox from Debian's source, agnhost, the sample device plugin, ...)
# and pushed to the local registry, which it starts. Prints the Kubernetes build dir.
# Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../scripts/lib.sh"

k8s="$("$here/install-kubernetes.sh")"
busybox="$("$here/build-busybox.sh")"
"$here/registry.sh"
step node-e2e-images python3 "$here/images/node_e2e.py" build --cache "$CRUST_CACHE" \
  --agnhost-root "$k8s/agnhost-root" --busybox "$busybox" \
  --sample-device-plugin "$k8s/sampledeviceplugin"
step node-e2e-images-push python3 "$here/images/node_e2e.py" push --cache "$CRUST_CACHE" \
  --registry "127.0.0.1:${CRUST_REGISTRY_PORT:-5111}"
echo "$k8s"
