#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET (default 60) and
# fails on any crash, timeout, leak or over-limit allocation. Prints one line per target
# (inputs run, execs/s, corpus size) and a summary line. See docs/fuzzing.md.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#   FUZZ_TARGETS="rule config" scripts/fuzz.sh 30     # a subset
#   FUZZ_TOOLCHAIN=stable scripts/fuzz.sh 10           # force the no-sanitizer path
#   FUZZ_BUILD=dev scripts/fuzz.sh 20                  # quick-to-build targets (CI)
#
# With a nightly toolchain the targets are built with AddressSanitizer; otherwise with the
# default (stable) toolchain and `--sanitizer none`, where -malloc_limit_mb is not enforced
# (libFuzzer needs sanitizer malloc hooks for it) but -rss_limit_mb still is.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

secs=${1:-60}
targets=${FUZZ_TARGETS:-rule config state wg_datagram ip_packet api}
# No input may run 5 s (a hang), grow the process past 1 GiB (the targets peaked near
# 500 MB under ASan, most of it the allocator's quarantine), or allocate more than 16 MiB at
# once (the largest buffer nexd allocates on purpose is a 512 KiB socket buffer).
limits=(-timeout=5 -rss_limit_mb=1024 -malloc_limit_mb=16 -print_final_stats=1)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain=${FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ]; then
    if cargo +nightly --version >/dev/null 2>&1; then toolchain=nightly; else toolchain=stable; fi
fi
# Each toolchain and profile builds in its own target dir, so none invalidates another;
# nightly release uses cargo-fuzz's default, shared with `cargo +nightly fuzz run` by hand.
profile=${FUZZ_BUILD:-release}
if [ "$toolchain" = nightly ]; then
    fuzz=(cargo +nightly fuzz)
    cargo_version=$(cargo +nightly --version)
    build_opts=()
    dir=fuzz/target
else
    fuzz=(cargo fuzz)
    cargo_version=$(cargo --version)
    build_opts=(--sanitizer none)
    dir=fuzz/target/stable
fi
case $profile in
    release) ;;
    dev) build_opts+=(--dev) dir=$dir/dev ;;
    *) echo "fuzz: FUZZ_BUILD must be release or dev" >&2; exit 2 ;;
esac
build_opts+=(--target-dir "$dir")
# boringtun 0.6 pins curve25519-dalek 4.0.0-rc.3, whose SIMD backend asks nightly for the
# removed `stdsimd` feature; the portable backend builds everywhere.
export RUSTFLAGS="${RUSTFLAGS:-} --cfg curve25519_dalek_backend=\"serial\""

echo "fuzz: toolchain $toolchain ($cargo_version), $profile build, ${secs}s per target"
"${fuzz[@]}" build "${build_opts[@]}"

failed=0
for t in $targets; do
    # New inputs go to fuzz/grown (git-ignored); the committed seeds are only read.
    mkdir -p "fuzz/grown/$t"
    extra=()
    case $t in wg_datagram | ip_packet) extra=(-max_len=16384) ;; esac
    log=$(mktemp)
    # The outer timeout is a backstop should libFuzzer itself wedge.
    if timeout $((secs + 120)) "${fuzz[@]}" run "${build_opts[@]}" "$t" "fuzz/grown/$t" \
        "fuzz/corpus/$t" -- -max_total_time="$secs" "${limits[@]}" "${extra[@]}" >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=$((failed + 1))
        tail -n 60 "$log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    corpus=$(grep -o 'corp: [0-9]*/[0-9a-zA-Z]*' "$log" | tail -n 1 | cut -d' ' -f2)
    printf 'fuzz %-12s %-6s runs=%s exec/s=%s corpus=%s peak_rss_mb=%s\n' \
        "$t" "$status" "${runs:-?}" "${rate:-?}" "${corpus:-?}" "${rss:-?}"
    rm -f "$log"
done
count=$(wc -w <<<"$targets")
echo "fuzz: $((count - failed)) of $count targets ran clean; crash inputs are in fuzz/artifacts/"
[ "$failed" -eq 0 ]
