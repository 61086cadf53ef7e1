#!/usr/bin/env bash
# Benchmark, all on this machine, in one run (needs root for namespaces). Each path is set up,
# measured and torn down in turn:
#   direct loopback (ceiling) | nexd <-> nexd on loopback | nexd <-> wireguard-go (netns) |
#   wireguard-go <-> wireguard-go (TUN, two namespaces) | boringtun-cli <-> boringtun-cli (TUN) |
#   onetun -> wireguard-go (onetun forwards a local port into the tunnel, egress only)
# Figures: iperf3 TCP single stream forward/reverse and 4 streams, request/response RTT
# p50/p99, new TCP connections per second through one rule (bytes verified), UDP throughput
# and loss at 1392-byte payloads, CPU seconds per GB moved, RSS idle, with CONNS idle
# connections and under a slow reader for SLOW seconds. Medians of RUNS runs of SECS seconds.
#   onetun runs last SECS=ONETUN_SECS (2) and get a fresh onetun per figure (see bench/paths.sh).
#   bench/run.sh                            full run, prints the table (about 24 minutes)
#   OUT=docs/benchmarks.md bench/run.sh     also writes the table and docs/benchmarks.png
#   bench/run.sh --smoke                    nexd <-> nexd only, debug build, ~30 s; exit 1 if a
#                                           figure is missing or a connection failed
#   bench/run.sh --nexd                     nexd <-> nexd only, release build, every figure
#                                           (a few minutes): for trying a change quickly
#   bench/run.sh --wan                      the WAN rows only (bench/wan.sh: a userspace relay
#                                           with delay, loss and a bottleneck between the
#                                           WireGuard endpoints), release build, ~6 minutes;
#                                           with OUT set, replaces only OUT's WAN section
# A full run ends with the WAN rows too (about 6 minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SMOKE=0 NEXD_ONLY=0 WAN_ONLY=0
[ "${1:-}" = --smoke ] && SMOKE=1
[ "${1:-}" = --nexd ] && NEXD_ONLY=1
[ "${1:-}" = --wan ] && WAN_ONLY=1
[ "$(id -u)" -eq 0 ] || { echo "bench/run.sh needs root (network namespaces)"; exit 1; }
source bench/lib.sh
source bench/tools.sh
scripts/install-deps.sh
if [ $SMOKE = 1 ]; then
  SECS=1 RUNS=1 CONNS=200 SLOW=4 OUT=
  cargo build --workspace --bins -q
  bin=$PWD/target/debug
else
  SECS=${SECS:-5} RUNS=${RUNS:-3} CONNS=${CONNS:-10000} SLOW=${SLOW:-30} OUT=${OUT:-}
  [ $WAN_ONLY = 1 ] || tools_install
  cargo build --release --workspace --bins -q
  bin=$PWD/target/release
fi
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
ONETUN_MAX_MIB=${ONETUN_MAX_MIB:-1024}
ONETUN_MAX_SECS=${ONETUN_MAX_SECS:-300}
ONETUN_SECS=${ONETUN_SECS:-2}
tk=$bin/testkit
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
work=$(mktemp -d)
pids=()
nss=()
tag=$$
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in "${nss[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

if [ $WAN_ONLY = 1 ]; then
  source bench/wan.sh
  source bench/wan_report.sh
  exit 0
fi

# --- direct loopback: servers in the root namespace ------------------------------------------
start_bg iperf3 -s -p 15301 -B 127.0.0.1 >/dev/null 2>&1
ready_bg "$work/echo0" "$tk" tcp-echo 127.0.0.1:15307
ready_bg "$work/hold0" "$tk" hold-server 127.0.0.1:15308; hold0=$!
hold_restart0() { stop "$hold0"; ready_bg "$work/hold0" "$tk" hold-server 127.0.0.1:15308; hold0=$!; }
ready_bg "$work/fire0" "$tk" firehose 127.0.0.1:15309
ready_bg "$work/disc0" "$bin/stream_rate" discard 127.0.0.1:15310
[ $SMOKE = 1 ] || [ $NEXD_ONLY = 1 ] || measure direct "" 127.0.0.1 15301 15307 "" ""

# --- nexd <-> nexd on loopback ---------------------------------------------------------------
nexd_pair_up
AFTER_HOLD=hold_restart0
measure nexd-nexd "" 127.0.0.1 15302 15303 15304 "$nexd_a $nexd_b" 15305
[ $SMOKE = 1 ] || socks_vs_rule nexd-nexd
stop "$nexd_a" "$nexd_b"

if [ $NEXD_ONLY = 1 ]; then
  for k in fwd rev p4 p50 p99 cps cps16 cfail udp udploss cpu rss0 rssn busy slow sx_up_rule sx_up_socks sx_down_rule sx_down_socks; do printf '%s=%s ' "$k" "${R[nexd-nexd,$k]}"; done
  echo
  exit 0
fi
if [ $SMOKE = 1 ]; then
  bad=0
  for k in fwd rev p4 p50 p99 cps cps16 udp cpu rss0 rssn busy; do
    [[ "${R[nexd-nexd,$k]}" =~ ^[0-9.]+$ ]] || { echo "smoke: nexd-nexd $k = ${R[nexd-nexd,$k]}" >&2; bad=1; }
  done
  [ "${R[nexd-nexd,cfail]}" = 0 ] || { echo "smoke: ${R[nexd-nexd,cfail]} failed connections" >&2; bad=1; }
  for k in fwd rev p4 p50 cps cps16 udp udploss cfail cpu rss0 rssn busy slow; do printf '%s=%s ' "$k" "${R[nexd-nexd,$k]}"; done
  echo
  [ $bad = 0 ] && echo "bench smoke: ok" || echo "bench smoke: FAILED"
  exit $bad
fi

source bench/paths.sh
source bench/report.sh
source bench/wan.sh
source bench/wan_report.sh
