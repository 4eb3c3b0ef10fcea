#!/usr/bin/env bash
# Installs the reference peer of the benchmarks: containerd $CONTAINERD_VERSION
# (containerd, containerd-shim-runc-v2, ctr) and runc $RUNC_VERSION, built from source
# fetched through the Go module proxy, into
# $CRUST_CACHE/containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION/ and prints that
# directory.
#
# Flags as the projects' own Makefiles use them for a release: containerd's binaries
# static (CGO off, so no btrfs snapshotter), tag urfave_cli_no_docs (the shim also
# no_grpc), version and package stamped; runc with cgo (its nsenter), tags
# `seccomp urfave_cli_no_docs` against Debian's libseccomp-dev, a PIE. Idempotent: an
# existing build is kept. A few minutes on 2 cores; the time of each build goes to
# build-times in that directory. With --dir it only prints the directory.
set -euo pipefail

containerd_version="${CONTAINERD_VERSION:-v2.4.2}"
runc_version="${RUNC_VERSION:-v1.3.7}"
dest="${CRUST_CACHE:-/var/cache/crust}/containerd-$containerd_version-runc-$runc_version"
if [ "${1:-}" = --dir ]; then
  echo "$dest"
  exit 0
fi
. "$(dirname "$0")/../scripts/lib.sh"
bins=(containerd containerd-shim-runc-v2 ctr runc)
built() {
  local b
  for b in "${bins[@]}"; do [ -x "$dest/$b" ] || return 1; done
}
if built; then
  echo "$dest"
  exit 0
fi
need_go
apt_install libseccomp-dev pkg-config gcc libc6-dev
export GOPATH="$CRUST_CACHE/go" GOMODCACHE="$CRUST_CACHE/go/mod" GOCACHE="$CRUST_CACHE/go/build"
export GOFLAGS=-mod=mod
mkdir -p "$dest" "$GOPATH"
exec 8>"$dest.lock"
flock -w 3600 8 || die "another install holds $dest.lock"
if built; then
  echo "$dest"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

download() { # NAME MODULE@VERSION: prints the module's source directory
  step "go-mod-download-$1" sh -c "cd '$work' && go mod download -json '$2' >'$work/$1.json'" ||
    exit 1
  local src
  src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/$1.json")"
  [ -d "$src" ] || die "$2: no source directory in go mod download's answer"
  echo "$src"
}
timed() { # timed NAME CMD...: step, and the elapsed seconds into $dest/build-times
  local start=$SECONDS
  step "$@"
  echo "$1 $((SECONDS - start))s" >>"$dest/build-times"
}

src="$(download containerd "github.com/containerd/containerd/v2@$containerd_version")"
pkg=github.com/containerd/containerd/v2
ldflags="-s -w -X $pkg/version.Version=$containerd_version -X $pkg/version.Package=$pkg"
for b in containerd ctr containerd-shim-runc-v2; do
  [ ! -x "$dest/$b" ] || continue
  tags=urfave_cli_no_docs
  [ "$b" != containerd-shim-runc-v2 ] || tags="$tags no_grpc"
  timed "build-$b" env CGO_ENABLED=0 sh -c 'cd "$1" && shift && exec "$@"' _ "$src" \
    go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$work/$b" "./cmd/$b"
  install -m 0755 "$work/$b" "$dest/"
done
"$dest/containerd" --version | grep -qF " $containerd_version " ||
  die "the built containerd reports $("$dest/containerd" --version), not $containerd_version"

if [ ! -x "$dest/runc" ]; then
  src="$(download runc "github.com/opencontainers/runc@$runc_version")"
  timed build-runc env CGO_ENABLED=1 sh -c 'cd "$1" && shift && exec "$@"' _ "$src" \
    go build -trimpath -buildmode=pie -tags "seccomp urfave_cli_no_docs" \
    -ldflags "-X main.gitCommit=$runc_version" -o "$work/runc" .
  "$work/runc" --version | grep -qx "runc version ${runc_version#v}" ||
    die "the built runc reports $("$work/runc" --version | head -n1), not $runc_version"
  "$work/runc" features | python3 -c \
    'import json, sys; sys.exit(not json.load(sys.stdin)["linux"]["seccomp"]["enabled"])' ||
    die "the built runc has no seccomp support"
  install -m 0755 "$work/runc" "$dest/"
fi
echo "$dest"
