#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit, property, in-memory engine and
# end-to-end tests (two nexd on loopback; wireguard-go, PostgreSQL and curl in network
# namespaces, which need root: as a normal user those tests say SKIPPED).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# Benchmark smoke run (nexd <-> nexd, debug build, a few seconds): one counted test.
smoke=0
if [ "$(id -u)" -ne 0 ]; then
  echo "bench smoke: SKIPPED (needs root)"
  echo "test result: ok. 0 passed; 0 failed; 1 ignored (bench smoke)" >>"$log"
elif timeout -k 5 120 bench/run.sh --smoke; then
  echo "test result: ok. 1 passed; 0 failed; 0 ignored (bench smoke)" >>"$log"
else
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (bench smoke)" >>"$log"
  smoke=1
fi
# One closing line over every test binary (cargo's last line is often a 0-test doc run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit $smoke
