#!/usr/bin/env bash
# Installs crictl and critest of cri-tools $CRI_TOOLS_VERSION, built from source fetched
# through the Go module proxy, into $CRUST_CACHE/cri-tools-$CRI_TOOLS_VERSION/ and
# prints that directory. critest is the test binary of cmd/critest (`go test -c`).
# Idempotent: an existing build is kept.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

version="${CRI_TOOLS_VERSION:-v1.37.0}"
dest="$CRUST_CACHE/cri-tools-$version"
if [ -x "$dest/critest" ] && [ -x "$dest/crictl" ]; then
  echo "$dest"
  exit 0
fi
need_go
export GOPATH="$CRUST_CACHE/go" GOMODCACHE="$CRUST_CACHE/go/mod" GOCACHE="$CRUST_CACHE/go/build"
export GOFLAGS=-mod=mod
mkdir -p "$dest" "$GOPATH"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
step go-mod-download-cri-tools sh -c \
  "cd '$work' && go mod download -json sigs.k8s.io/cri-tools@$version >'$work/mod.json'"
src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/mod.json")"
[ -d "$src" ] || die "cri-tools $version: no source directory in go mod download's answer"
step build-critest sh -c "cd '$src' && go test -c -o '$work/critest' ./cmd/critest"
step build-crictl sh -c "cd '$src' && go build -o '$work/crictl' ./cmd/crictl"
install -m 0755 "$work/critest" "$work/crictl" "$dest/"
echo "$dest"
