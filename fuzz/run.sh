#!/usr/bin/env bash
# Fuzzes crust's parsers of untrusted bytes with cargo fuzz (libFuzzer):
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# builds every target in fuzz/fuzz_targets, then runs each (or those named) for
# SECONDS (default 5), one after another, one process each, starting from its
# committed seeds in fuzz/corpus/<target>. The inputs a run finds go to a scratch
# corpus in fuzz/target/corpus/<target>, kept between runs and never committed
# (`cargo fuzz cmin` it into fuzz/corpus to keep what is worth keeping). A crash
# leaves its input in fuzz/artifacts/<target>/ and fails the run. Prints one line per
# target and a summary.
#
# Needs a stable toolchain only: cargo fuzz's instrumentation flags are unstable
# options, which RUSTC_BOOTSTRAP=1 lets a stable rustc take.
# CRUST_FUZZ_TOOLCHAIN=nightly builds with that toolchain instead. Installs
# cargo-fuzz (into ~/.cargo/bin) when it is missing.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
need_rust

SECONDS_EACH=${1:-5}
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || die "usage: fuzz/run.sh [SECONDS] [TARGET...]"
shift $(($# > 0 ? 1 : 0))
FUZZ_DIR="$CRUST_TOP/fuzz"
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
  step cargo-fuzz-install cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" ||
    die "cannot install cargo-fuzz"
fi

if [ -n "${CRUST_FUZZ_TOOLCHAIN:-}" ]; then
  fuzz() { cargo "+$CRUST_FUZZ_TOOLCHAIN" fuzz "$@"; }
else
  fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi

# -a: debug assertions and overflow checks, so an overflow is a crash too.
cd "$CRUST_TOP"
step fuzz-build fuzz build -a || die "building the fuzz targets failed"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(fuzz list)
fi

# The tar target unpacks into a sandbox under TMPDIR: one that goes with the run.
TMPDIR=$(mktemp -d "$FUZZ_DIR/target/tmp.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

failed=0
total=0
for t in "${targets[@]}"; do
  [ -f "$FUZZ_DIR/fuzz_targets/$t.rs" ] || die "no fuzz target $t"
  scratch="$FUZZ_DIR/target/corpus/$t"
  seeds="$FUZZ_DIR/corpus/$t"
  mkdir -p "$scratch" "$seeds"
  max_len=4096
  [ "$t" = tar_unpack ] && max_len=65536
  log="$CRUST_LOG_DIR/fuzz-$t.log"
  rc=0
  fuzz run -a "$t" "$scratch" "$seeds" -- -max_total_time="$SECONDS_EACH" \
    -max_len="$max_len" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  execs=$(awk '/^stat::number_of_executed_units:/ { n = $NF } END { print n + 0 }' "$log")
  units=$(find "$scratch" -type f | wc -l)
  total=$((total + execs))
  if [ "$rc" -eq 0 ]; then
    printf '%-16s %6d s %12d execs %6d inputs\n' "$t" "$SECONDS_EACH" "$execs" "$units"
  else
    failed=$((failed + 1))
    printf '%-16s FAILED (exit %d), log: %s\n' "$t" "$rc" "$log" >&2
    grep -E '^(==[0-9]+==|thread |SUMMARY|artifact_prefix|Test unit written)' "$log" | head -n 20 >&2 || true
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: $failed of ${#targets[@]} targets failed" >&2
  exit 1
fi
plural=s
[ "${#targets[@]}" -eq 1 ] && plural=
echo "fuzz: ${#targets[@]} target$plural, $SECONDS_EACH s each, $total execs, no crash"
