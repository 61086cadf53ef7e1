#!/usr/bin/env bash
# Benchmark, all on this machine, in one run (needs root for namespaces). Paths:
#   direct loopback (ceiling) | nexd <-> nexd on loopback | nexd <-> wireguard-go peer (netns) |
#   wireguard-go <-> wireguard-go (TUN in two namespaces)
# Figures: iperf3 TCP single stream forward/reverse and 4 streams, request/response RTT
# p50/p99, new TCP connections per second through one rule (bytes verified), UDP throughput
# at 1392-byte payloads with < 1% loss, CPU seconds per GB moved, RSS idle and with CONNS
# idle connections open. Throughput figures are medians of RUNS runs of SECS seconds.
#   SECS=1 RUNS=1 CONNS=200 bench/run.sh      smoke run, well under a minute
#   OUT=docs/benchmarks.md bench/run.sh       also writes the markdown table there
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SECS=${SECS:-5}
RUNS=${RUNS:-3}
CONNS=${CONNS:-10000}
SLOW=${SLOW:-30}
OUT=${OUT:-}
[ "$(id -u)" -eq 0 ] || { echo "bench/run.sh needs root (network namespaces)"; exit 1; }
scripts/install-deps.sh
cargo build --release --workspace --bins -q
bin=$PWD/target/release
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

median() { sort -n | awk '{a[NR]=$1} END{ if (NR==0) print 0; else print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
in_ns() { if [ -n "$1" ]; then ip netns exec "$1" "${@:2}"; else "${@:2}"; fi; }
# The receiver line's rate in Mbit/s (the SUM line when there are several streams).
mbits() {
  awk '/receiver/ { sum = ($0 ~ /SUM/); if (sum || !seen_sum) { v = $(NF-2); u = $(NF-1); seen_sum = seen_sum || sum } }
       END { m = (u ~ /^G/) ? 1000 : (u ~ /^K/) ? 0.001 : 1; printf "%.0f\n", v * m }'
}
iperf_tcp() { # ns host port [extra] -> median receiver Mbit/s
  local ns=$1 host=$2 port=$3; shift 3
  for _ in $(seq "$RUNS"); do
    in_ns "$ns" iperf3 -c "$host" -p "$port" -t "$SECS" -f m "$@" 2>/dev/null | mbits
  done | median
}
udp_best() { # ns host port -> highest received Mbit/s among offered rates with loss < 1%
  local ns=$1 host=$2 port=$3 best=0
  for rate in 100M 200M 400M 800M 1600M; do
    local line mb loss
    line=$(in_ns "$ns" iperf3 -c "$host" -p "$port" -u -b "$rate" -l 1392 -t "$SECS" -f m 2>/dev/null | grep receiver || true)
    mb=$(awk '{for(i=1;i<=NF;i++) if($i=="Mbits/sec"){print $(i-1); exit}}' <<<"$line")
    loss=$(grep -o '([0-9.e+-]*%)' <<<"$line" | tr -d '()%' || echo 100)
    [ -n "$mb" ] || break
    awk -v l="${loss:-100}" 'BEGIN{exit !(l < 1)}' || break
    best=$mb
  done
  echo "$best"
}
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
rss_mib() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' "/proc/$p/status"))); done; awk -v k=$t 'BEGIN{printf "%.1f", k/1024}'; }
wait_log() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout waiting for $2 in $1" >&2; cat "$1" >&2; exit 1; }
conf() { printf '[Interface]\nPrivateKey = %s\nAddress = %s\nListenPort = %s\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s\nEndpoint = %s\n' "$@"; }
start_bg() { "$@" & pids+=($!); }
ready_bg() { # out-file command... : start and wait for "ready" on stdout
  local out=$1; shift
  "$@" >"$out" & pids+=($!)
  wait_log "$out" ready
}

declare -A R
# measure LABEL NS HOST IPERF_PORT ECHO_PORT HOLD_PORT "PIDS(cpu/rss)" FIREHOSE_PORT
measure() {
  local label=$1 ns=$2 host=$3 ip=$4 ep=$5 hp=$6 procs=$7 fp=${8:-}
  echo "== $label" >&2
  R[$label,fwd]=$(iperf_tcp "$ns" "$host" "$ip")
  R[$label,rev]=$(iperf_tcp "$ns" "$host" "$ip" -R)
  R[$label,p4]=$(iperf_tcp "$ns" "$host" "$ip" -P 4)
  local rtt; rtt=$(in_ns "$ns" "$tk" rtt "$host:$ep" 2000 64)
  R[$label,p50]=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' <<<"$rtt")
  R[$label,p99]=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$rtt")
  local cr; cr=$(in_ns "$ns" "$tk" conn-rate "$host:$ep" 4 "$SECS")
  R[$label,cps]=$(sed -n 's/.*conn_per_sec=\([0-9]*\).*/\1/p' <<<"$cr")
  R[$label,cfail]=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$cr")
  R[$label,udp]=$(udp_best "$ns" "$host" "$ip")
  R[$label,cpu]=-; R[$label,rss0]=-; R[$label,rssn]=-; R[$label,slow]=-
  if [ -n "$procs" ]; then
    R[$label,rss0]=$(rss_mib $procs)
    local c0 c1 mb
    c0=$(cpu_ticks $procs)
    mb=$(in_ns "$ns" iperf3 -c "$host" -p "$ip" -t "$SECS" -f m 2>/dev/null | mbits)
    c1=$(cpu_ticks $procs)
    R[$label,cpu]=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v mb="$mb" -v s="$SECS" 'BEGIN{ gb=mb*s/8/1000; if (gb>0) printf "%.2f", t/hz/gb; else print "-" }')
    if [ -n "$fp" ]; then
      # A reader taking 256 KiB/s from a sender that never stops: memory must stay flat.
      in_ns "$ns" "$tk" slow-read "$host:$fp" "$SLOW" 256 >"$work/slow.out" 2>&1 &
      local sp=$! lo=999999 hi=0 v
      sleep 2
      for _ in $(seq $((SLOW > 3 ? SLOW - 3 : 1))); do
        v=$(rss_mib $procs)
        lo=$(awk -v a="$lo" -v b="$v" 'BEGIN{print (b<a)?b:a}'); hi=$(awk -v a="$hi" -v b="$v" 'BEGIN{print (b>a)?b:a}')
        sleep 1
      done
      wait "$sp" || true
      R[$label,slow]="$lo–$hi"
    fi
    if [ -n "$hp" ]; then
      exec {fd}> >(in_ns "$ns" "$tk" hold-conns "$host:$hp" "$CONNS" >"$work/hold.out" 2>&1)
      for _ in $(seq 600); do grep -q "ready\|error\|testkit" "$work/hold.out" 2>/dev/null && break; sleep 0.1; done
      if grep -q ready "$work/hold.out"; then R[$label,rssn]=$(rss_mib $procs); else R[$label,rssn]="fail"; cat "$work/hold.out" >&2; fi
      exec {fd}>&-
      sleep 1
    fi
  fi
}

# --- servers in the root namespace -----------------------------------------------------------
start_bg iperf3 -s -p 15301 -B 127.0.0.1 >/dev/null
ready_bg "$work/echo0" "$tk" tcp-echo 127.0.0.1:15307
ready_bg "$work/hold0" "$tk" hold-server 127.0.0.1:15308
ready_bg "$work/fire0" "$tk" firehose 127.0.0.1:15309
sleep 0.3
measure direct "" 127.0.0.1 15301 15307 "" ""

# --- nexd <-> nexd on loopback ---------------------------------------------------------------
read -r pa ka < <("$tk" genkey); read -r pb kb < <("$tk" genkey)
conf "$pa" 100.100.0.1/32 15311 "$kb" 100.100.0.2/32 127.0.0.1:15312 >"$work/a.conf"
conf "$pb" 100.100.0.2/32 15312 "$ka" 100.100.0.1/32 127.0.0.1:15311 >"$work/b.conf"
start_bg "$bin/nexd" --state-dir "$work/sb" --unix-socket "$work/b.sock" proxy --config "$work/b.conf" \
  --ingress tcp:5201:127.0.0.1:15301 --ingress udp:5201:127.0.0.1:15301 \
  --ingress tcp:7:127.0.0.1:15307 --ingress tcp:9:127.0.0.1:15308 --ingress tcp:19:127.0.0.1:15309 2>"$work/b.log"
nexd_b=$!
start_bg "$bin/nexd" --state-dir "$work/sa" --unix-socket "$work/a.sock" proxy --config "$work/a.conf" \
  --egress tcp:15302:100.100.0.2:5201 --egress udp:15302:100.100.0.2:5201 \
  --egress tcp:15303:100.100.0.2:7 --egress tcp:15304:100.100.0.2:9 --egress tcp:15305:100.100.0.2:19 2>"$work/a.log"
nexd_a=$!
wait_log "$work/a.log" "nexd proxy running"; wait_log "$work/b.log" "nexd proxy running"
measure nexd-nexd "" 127.0.0.1 15302 15303 15304 "$nexd_a $nexd_b" 15305

# --- two namespaces joined by veth ----------------------------------------------------------
nsa=nexd-bench-a-$tag; nsb=nexd-bench-b-$tag
ip netns add $nsa; nss+=($nsa); ip netns add $nsb; nss+=($nsb)
ip link add nxba$tag netns $nsa type veth peer name nxbb$tag netns $nsb
ip -n $nsa addr add 10.198.0.1/24 dev nxba$tag; ip -n $nsb addr add 10.198.0.2/24 dev nxbb$tag
for n in $nsa $nsb; do ip -n $n link set lo up; done
ip -n $nsa link set nxba$tag up; ip -n $nsb link set nxbb$tag up
wg_up() { # ns iface private addr port peer_pub peer_allowed peer_ep
  local ns=$1 ifc=$2
  WG_PROCESS_FOREGROUND=1 ip netns exec "$ns" wireguard-go -f "$ifc" >/dev/null 2>&1 & pids+=($!)
  eval "wgpid_$ifc=$!"
  for _ in $(seq 100); do [ -S "/var/run/wireguard/$ifc.sock" ] && break; sleep 0.1; done
  echo "$3" >"$work/$ifc.key"
  ip netns exec "$ns" wg set "$ifc" private-key "$work/$ifc.key" listen-port "$5" peer "$6" allowed-ips "$7" endpoint "$8"
  ip -n "$ns" addr add "$4" dev "$ifc"; ip -n "$ns" link set "$ifc" mtu 1420 up
  ip -n "$ns" route add "$7" dev "$ifc" 2>/dev/null || true
}
read -r p1 k1 < <("$tk" genkey); read -r p2 k2 < <("$tk" genkey)
wg_up $nsa wga$tag "$p1" 100.101.0.1/32 51901 "$k2" 100.101.0.2/32 10.198.0.2:51902
wg_up $nsb wgb$tag "$p2" 100.101.0.2/32 51902 "$k1" 100.101.0.1/32 10.198.0.1:51901
eval "wg_a=\$wgpid_wga$tag; wg_b=\$wgpid_wgb$tag"
start_bg ip netns exec $nsb iperf3 -s -B 100.101.0.2 -p 5201 >/dev/null
ready_bg "$work/echo1" ip netns exec $nsb "$tk" tcp-echo 100.101.0.2:7
ready_bg "$work/hold1" ip netns exec $nsb "$tk" hold-server 100.101.0.2:9
ready_bg "$work/fire1" ip netns exec $nsb "$tk" firehose 100.101.0.2:19
sleep 0.5
measure wggo-wggo $nsa 100.101.0.2 5201 7 9 "$wg_a $wg_b" 19

# nexd (ns A) <-> wireguard-go (ns B)
read -r p3 k3 < <("$tk" genkey)
ip netns exec $nsb wg set wgb$tag peer "$k3" allowed-ips 100.101.0.3/32 endpoint 10.198.0.1:51903
ip -n $nsb route add 100.101.0.3/32 dev wgb$tag
conf "$p3" 100.101.0.3/32 51903 "$k2" 100.101.0.2/32 10.198.0.2:51902 >"$work/c.conf"
start_bg ip netns exec $nsa "$bin/nexd" --state-dir "$work/sc" --unix-socket "$work/c.sock" proxy --config "$work/c.conf" \
  --egress tcp:15302:100.101.0.2:5201 --egress udp:15302:100.101.0.2:5201 \
  --egress tcp:15303:100.101.0.2:7 --egress tcp:15304:100.101.0.2:9 --egress tcp:15305:100.101.0.2:19 2>"$work/c.log"
nexd_c=$!
wait_log "$work/c.log" "nexd proxy running"
measure nexd-wggo $nsa 127.0.0.1 15302 15303 15304 "$nexd_c $wg_b" 15305

# --- table -----------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b+0>0) printf " (%.2fx)", a/b; }'; }
table() {
  echo "| figure | direct loopback | nexd ↔ nexd | nexd ↔ wireguard-go | wireguard-go ↔ wireguard-go |"
  echo "|---|---|---|---|---|"
  row() { # name key
    printf '| %s |' "$1"
    for p in direct nexd-nexd nexd-wggo wggo-wggo; do printf ' %s%s |' "${R[$p,$2]}" "$(ratio "${R[$p,$2]}" "${R[wggo-wggo,$2]}")"; done
    echo
  }
  row "TCP 1 stream forward, Mbit/s" fwd
  row "TCP 1 stream reverse, Mbit/s" rev
  row "TCP 4 streams, Mbit/s" p4
  row "RTT p50, µs (64 B request/response)" p50
  row "RTT p99, µs" p99
  row "new TCP connections/s (4 clients, 32 B echoed)" cps
  row "  failed connections" cfail
  row "UDP 1392 B payload (largest unfragmented at MTU 1420), Mbit/s at < 1% loss" udp
  row "CPU s per GB (both tunnel processes)" cpu
  row "RSS idle, MiB (both tunnel processes)" rss0
  row "RSS with $CONNS idle TCP connections, MiB" rssn
  row "RSS min–max over ${SLOW}s, reader at 256 KiB/s from a fast sender, MiB" slow
}
echo
echo "nexd benchmark: $(date -u +%F), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), SECS=$SECS RUNS=$RUNS; ratios are against wireguard-go ↔ wireguard-go"
table | tee "$work/table.md"
if [ -n "$OUT" ]; then
  {
    echo "# Benchmarks"
    echo
    echo "Measured by \`sudo OUT=docs/benchmarks.md bench/run.sh\` on $(date -u +%F): $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), everything on one machine; release build; median of $RUNS runs of ${SECS}s."
    echo "Ratios in parentheses are against wireguard-go ↔ wireguard-go (TUN devices in two network namespaces, same run)."
    echo "nexd ↔ nexd: egress on A → WireGuard over loopback → ingress on B → local server. nexd ↔ wireguard-go: nexd egress in one namespace, wireguard-go and the servers in another."
    echo "RSS and CPU are the sum of both tunnel processes of the path (nexd ↔ wireguard-go counts nexd and the wireguard-go peer)."
    echo
    cat "$work/table.md"
  } >"$OUT"
  echo "wrote $OUT"
fi
