#!/usr/bin/env bash
# CPU profiles of nexd <-> nexd (release code built with `--profile profiling`: symbols and
# debug info kept; set up as in bench/run.sh) under
#   (a) one iperf3 TCP stream and (b) the new-connections/s test (testkit conn-rate, 4 clients),
# sampled with perf (cpu-clock, DWARF call graphs) in both nexd processes at once, rendered as
# flame graphs by inferno: docs/profiles/{tcp-stream,conn-rate}.svg, the top frames (self and
# inclusive time) as text next to them, and system calls and context switches per connection
# in each nexd (perf stat, conn-rate.syscalls.txt). Needs root. PSECS (default 8) seconds each.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "bench/profile.sh needs root"; exit 1; }
source bench/lib.sh
source bench/tools.sh
PSECS=${PSECS:-8}
command -v perf >/dev/null || { echo "profile: perf not found (Debian: linux-perf)"; exit 1; }
[ -x "$TOOLS/bin/inferno-flamegraph" ] || cargo install --locked --quiet --root "$TOOLS" inferno
cargo build --profile profiling --workspace --bins -q
bin=$PWD/target/profiling
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
  perf report -i "$work/$name.data" --no-children -g none --sort dso,symbol --percent-limit 0.5 --stdio 2>/dev/null |
    grep -v "^$" | sed "s/ *-  *- *$//; s/ *$//" | head -70 >"$out/$name.top.txt" || true
  # Inclusive time per frame from the folded stacks (frames on every stack left out): where
  # the time goes below the runtime.
  python3 - "$work/$name.folded" >"$out/$name.inclusive.txt" <<'PY'
import sys
inc, tot = {}, 0
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    n = int(n)
    tot += n
    for f in set(stack.split(";")):
        inc[f] = inc.get(f, 0) + n
rows = sorted(((v, k) for k, v in inc.items() if v < 0.98 * tot), reverse=True)[:80]
for v, k in rows:
    print(f"{100 * v / tot:6.2f}% {k[:200]}")
PY
  echo "wrote $out/$name.svg $out/$name.top.txt $out/$name.inclusive.txt" >&2
}
profile tcp-stream iperf3 -c 127.0.0.1 -p 15302 -t "$PSECS" -f m
profile conn-rate "$tk" conn-rate 127.0.0.1:15303 4 "$PSECS"

# System calls and context switches per connection, in each nexd separately.
ev=cs,page-faults
for sc in sendto recvfrom epoll_wait futex mmap munmap accept4 connect close epoll_ctl write; do ev+=,syscalls:sys_enter_$sc; done
{
  echo "# per connection, testkit conn-rate 127.0.0.1:15303 4 clients, perf stat -p on one nexd at a time"
  for who in A B; do
    p=$nexd_a; [ $who = B ] && p=$nexd_b
    "$tk" conn-rate 127.0.0.1:15303 4 "$PSECS" >"$work/cr" &
    l=$!
    # Counted over the middle of the run; scaled by the share of the run counted.
    perf stat -x, -e "$ev" -p "$p" -o "$work/stat$who" -- sleep $((PSECS - 2)) 2>/dev/null || true
    wait "$l"
    echo "nexd $who ($( [ $who = A ] && echo egress || echo ingress)): $(cat "$work/cr")"
    awk -F, -v n="$(field ok <"$work/cr")" -v share="$(awk -v a=$((PSECS - 2)) -v b="$PSECS" 'BEGIN{print a/b}')" \
      '/^[0-9]/ { sub(/^syscalls:sys_enter_/, "", $3); printf "  %-12s %6.2f\n", $3, $1 / (n * share) }' "$work/stat$who"
  done
} >"$out/conn-rate.syscalls.txt"
cat "$out/conn-rate.syscalls.txt" >&2
