#!/usr/bin/env bash
# Builds the NRI test plugin (NRI's Go stub, through the Go module proxy) to OUT.
# Usage: build.sh OUT
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../../scripts/lib.sh"
out="${1:?usage: build.sh OUT}"
need_go
export GOPATH="$CRUST_CACHE/go" GOMODCACHE="$CRUST_CACHE/go/mod" GOCACHE="$CRUST_CACHE/go/build"
export GOFLAGS=-mod=mod
mkdir -p "$GOPATH" "$(dirname "$out")"
cd "$here"
go build -o "$out" .
