#!/usr/bin/env bash
# CPU profiles of nexd <-> nexd (release build, set up as in bench/run.sh) under
#   (a) one iperf3 TCP stream and (b) the new-connections/s test (testkit conn-rate, 4 clients),
# sampled with perf (cpu-clock, DWARF call graphs) in both nexd processes at once, rendered as
# flame graphs by inferno: docs/profiles/{tcp-stream,conn-rate}.svg, and the top frames
# (self time) as text next to them. Needs root. PSECS (default 8) seconds per profile.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "bench/profile.sh needs root"; exit 1; }
source bench/lib.sh
source bench/tools.sh
PSECS=${PSECS:-8}
command -v perf >/dev/null || { echo "profile: perf not found (Debian: linux-perf)"; exit 1; }
[ -x "$TOOLS/bin/inferno-flamegraph" ] || cargo install --locked --quiet --root "$TOOLS" inferno
cargo build --release --workspace --bins -q
bin=$PWD/target/release
tk=$bin/testkit
out=docs/profiles
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
start_bg iperf3 -s -p 15301 -B 127.0.0.1 >/dev/null 2>&1
ready_bg "$work/echo0" "$tk" tcp-echo 127.0.0.1:15307
ready_bg "$work/hold0" "$tk" hold-server 127.0.0.1:15308
ready_bg "$work/fire0" "$tk" firehose 127.0.0.1:15309
nexd_pair_up

# profile NAME LOAD-COMMAND... : perf on both nexd while the load runs for PSECS seconds.
profile() {
  local name=$1; shift
  echo "== $name: $*" >&2
  "$@" >"$work/$name.load" 2>&1 &
  local load=$!
  timeout -s INT $((PSECS - 1)) perf record -q -e cpu-clock -F 499 -g --call-graph dwarf,16384 \
    -p "$nexd_a,$nexd_b" -o "$work/$name.data" 2>/dev/null || true
  wait "$load" || true
  cat "$work/$name.load" >&2
  perf script -i "$work/$name.data" 2>/dev/null | "$TOOLS/bin/inferno-collapse-perf" >"$work/$name.folded"
  "$TOOLS/bin/inferno-flamegraph" --title "nexd <-> nexd: $name (both processes)" <"$work/$name.folded" >"$out/$name.svg"
  perf report -i "$work/$name.data" --no-children -g none --sort comm,dso,symbol --percent-limit 0.5 --stdio 2>/dev/null |
    grep -v "^$" | head -70 >"$out/$name.top.txt"
  # Inclusive time per frame (children), from the folded stacks: where the time goes below.
  awk '{ n = $NF; $NF = ""; split($0, f, ";"); delete seen; for (i in f) { if (!(f[i] in seen)) { seen[f[i]] = 1; inc[f[i]] += n } } tot += n }
       END { for (k in inc) printf "%6.2f%% %s\n", 100 * inc[k] / tot, k }' "$work/$name.folded" | sort -rn | head -60 >"$out/$name.inclusive.txt"
  echo "wrote $out/$name.svg $out/$name.top.txt $out/$name.inclusive.txt" >&2
}
profile tcp-stream iperf3 -c 127.0.0.1 -p 15302 -t "$PSECS" -f m
profile conn-rate "$tk" conn-rate 127.0.0.1:15303 4 "$PSECS"
