#!/usr/bin/env bash
# Installs kubelet, the node e2e test binary (e2e_node.test, `go test -c` of
# k8s.io/kubernetes/test/e2e_node), agnhost, the suite's test program, and the sample
# device plugin of Kubernetes $KUBERNETES_VERSION, built from source fetched through the
# Go module proxy, into $CRUST_CACHE/kubernetes-$KUBERNETES_VERSION/ and prints that
# directory. agnhost-root/ there holds the files of the agnhost image (the binary,
# porter's certificate and key), sampledeviceplugin the sample device plugin image's
# one file; ginkgo, the suite's runner at the version Kubernetes pins, runs specs in
# parallel.
#
# k8s.io/kubernetes is not meant to be required as a module: its go.mod points each
# staging module (k8s.io/api, k8s.io/client-go, ...) at ./staging/src with version
# v0.0.0. The build goes through a wrapper module that requires it and replaces each of
# those staging modules with its published v0.<minor>.<patch> release, as upstream tags
# them together. Flags as upstream's `make` uses them: version stamped, -trimpath,
# tags selinux,notest,grpcnotrace, static (CGO off) so both builds share one cache.
# Idempotent: an existing build is kept. Takes tens of minutes on 2 cores.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

version="${KUBERNETES_VERSION:-v1.37.2}"
dest="$CRUST_CACHE/kubernetes-$version"
if [ -x "$dest/kubelet" ] && [ -x "$dest/e2e_node.test" ] && [ -x "$dest/ginkgo" ] &&
  [ -x "$dest/agnhost-root/agnhost" ] && [ -x "$dest/sampledeviceplugin" ]; then
  echo "$dest"
  exit 0
fi
[[ "$version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "KUBERNETES_VERSION must be v1.MINOR.PATCH, not $version"
minor="${BASH_REMATCH[1]}"
staging_version="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
need_go
export GOPATH="$CRUST_CACHE/go" GOMODCACHE="$CRUST_CACHE/go/mod" GOCACHE="$CRUST_CACHE/go/build"
export GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$dest" "$GOPATH"
exec 8>"$dest.lock"
flock -w 7200 8 || die "another install holds $dest.lock"
if [ -x "$dest/kubelet" ] && [ -x "$dest/e2e_node.test" ] && [ -x "$dest/ginkgo" ] &&
  [ -x "$dest/agnhost-root/agnhost" ] && [ -x "$dest/sampledeviceplugin" ]; then
  echo "$dest"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step go-mod-download-kubernetes sh -c \
  "cd '$work' && go mod download -json k8s.io/kubernetes@$version >'$work/mod.json'"
gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' "$work/mod.json")"
[ -f "$gomod" ] || die "kubernetes $version: no go.mod in go mod download's answer"
# The staging modules: required at v0.0.0 and replaced by a path under ./staging.
staging="$(
  comm -12 \
    <(awk '/^require \(/,/^\)/' "$gomod" | awk '$2 == "v0.0.0" { print $1 }' | sort -u) \
    <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod" | sort -u)
)"
[ -n "$staging" ] || die "kubernetes $version: no staging modules found in $gomod"
godirective="$(awk '$1 == "go" { print $2; exit }' "$gomod")"
{
  printf 'module crust.build/kubernetes\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' \
    "$godirective" "$version"
  for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
  printf ')\n'
} >"$work/go.mod"
# The module's own commit time stands for the build date, so that rebuilds match.
step go-list-kubernetes sh -c \
  "cd '$work' && go list -m -f '{{.Time.UTC.Format \"2006-01-02T15:04:05Z\"}}' k8s.io/kubernetes >'$work/date'"
ldflags="-s -w"
for kv in "gitVersion=$version" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
  "buildDate=$(cat "$work/date")"; do
  ldflags+=" -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
done
buildflags=(-trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags")

timed() { # timed NAME CMD...: step, and the elapsed seconds into $dest/build-times
  local start=$SECONDS
  step "$@"
  echo "$1 $((SECONDS - start))s" >>"$dest/build-times"
}
if [ ! -x "$dest/kubelet" ]; then
  timed build-kubelet sh -c 'cd "$1" && shift && exec "$@"' _ "$work" \
    go build "${buildflags[@]}" -o "$work/kubelet" k8s.io/kubernetes/cmd/kubelet
  "$work/kubelet" --version | grep -qx "Kubernetes $version" ||
    die "the built kubelet reports $("$work/kubelet" --version), not Kubernetes $version"
  install -m 0755 "$work/kubelet" "$dest/"
fi
if [ ! -x "$dest/e2e_node.test" ]; then
  timed build-e2e-node sh -c 'cd "$1" && shift && exec "$@"' _ "$work" \
  go test -c "${buildflags[@]}" -o "$work/e2e_node.test" k8s.io/kubernetes/test/e2e_node
  install -m 0755 "$work/e2e_node.test" "$dest/"
fi
if [ ! -x "$dest/ginkgo" ]; then
  timed build-ginkgo sh -c 'cd "$1" && shift && exec "$@"' _ "$work" \
    go build -trimpath -o "$work/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
  install -m 0755 "$work/ginkgo" "$dest/"
fi
if [ ! -x "$dest/sampledeviceplugin" ]; then
  timed build-sample-device-plugin sh -c 'cd "$1" && shift && exec "$@"' _ "$work" \
    go build "${buildflags[@]}" -o "$work/sampledeviceplugin" \
    k8s.io/kubernetes/test/images/sample-device-plugin
  install -m 0755 "$work/sampledeviceplugin" "$dest/"
fi
if [ -x "$dest/agnhost-root/agnhost" ]; then
  echo "$dest"
  exit 0
fi
timed build-agnhost sh -c 'cd "$1" && shift && exec "$@"' _ "$work" \
  go build "${buildflags[@]}" -o "$work/agnhost" k8s.io/kubernetes/test/images/agnhost
src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/mod.json")"
rm -rf "$dest/agnhost-root"
mkdir -p "$work/agnhost-root"
install -m 0755 "$work/agnhost" "$work/agnhost-root/"
install -m 0644 "$src/test/images/agnhost/porter/localhost.crt" \
  "$src/test/images/agnhost/porter/localhost.key" "$work/agnhost-root/"
mv "$work/agnhost-root" "$dest/"
echo "$dest"
