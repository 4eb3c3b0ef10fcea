#!/usr/bin/env bash
# Builds busybox from Debian's source package (with Debian's patches) in busybox's
# default configuration, every applet in, as the upstream busybox images have it, and
# prints the path of the binary, $CRUST_CACHE/busybox-src/busybox. Debian's binary
# package leaves out the applets whose tools Debian ships apart (top, nmeter, ...); the
# node e2e suite runs them. Dynamically linked, no standalone shell: the shell forks and
# execs applets, as the CRI specs need (CRITEST-NOTES.md in ../shared).
# The source comes through apt, from the deb-src twins of this host's apt sources.
# Idempotent: an existing build is kept.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

dir="$CRUST_CACHE/busybox-src"
if [ -x "$dir/busybox" ]; then
  echo "$dir/busybox"
  exit 0
fi
apt_install dpkg-dev gcc make libc6-dev bzip2 xz-utils
mkdir -p "$dir"
exec 8>"$dir.lock"
flock -w 900 8 || die "another build holds $dir.lock"
if [ -x "$dir/busybox" ]; then
  echo "$dir/busybox"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sources.list.d" "$work/lists/partial" "$work/get"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -e "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" >"$work/sources.list.d/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -e "$f" ] && sed -n 's/^deb /deb-src /p' "$f" >>"$work/sources.list.d/host.list"
done
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/sources.list.d"
  -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
step apt-source-lists apt-get "${apt_opts[@]}" update -qq
step apt-source-busybox sh -c 'cd "$1" && shift && exec "$@"' _ "$work/get" \
  apt-get "${apt_opts[@]}" source -qq busybox
src="$(find "$work/get" -mindepth 1 -maxdepth 1 -type d -name 'busybox-*' | head -n 1)"
[ -d "$src" ] || die "apt-get source busybox unpacked nothing"
mkdir -p "$work/build"
step busybox-defconfig make -C "$work/build" -f "$src/Makefile" KBUILD_SRC="$src" defconfig
step busybox-build make -C "$work/build" -j"$(nproc)" all SKIP_STRIP=y \
  BB_EXTRA_VERSION="$(basename "$work"/get/busybox_*.dsc .dsc)"
"$work/build/busybox" --list | grep -qx nmeter || die "the busybox built has no nmeter applet"
install -m 0755 "$work/build/busybox" "$dir/busybox.tmp"
mv "$dir/busybox.tmp" "$dir/busybox"
echo "$dir/busybox"
