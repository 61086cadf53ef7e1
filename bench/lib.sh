# Helpers for bench/run.sh (sourced): process bookkeeping, iperf3/testkit wrappers and
# `measure`, which fills R[path,figure]. Needs: SECS RUNS CONNS SLOW work tk pids.

median() { sort -n | awk '{a[NR]=$1} END{ if (NR==0) print "-"; else print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
in_ns() { if [ -n "$1" ]; then ip netns exec "$1" "${@:2}"; else "${@:2}"; fi; }
# Every client gets a hard time limit: a stalled tunnel (onetun) must not hang the run.
client() { local ns=$1 lim=$2; shift 2; in_ns "$ns" timeout -k 5 "$lim" "$@"; }

# iperf3 -J -> receiver Mbit/s (sum over streams); nothing when the run failed.
iperf_mbits() { jq -r 'select(.end.sum_received != null) | .end.sum_received.bits_per_second / 1e6 | floor' 2>/dev/null || true; }
iperf_tcp() { # ns host port [extra] -> median receiver Mbit/s over RUNS runs
  local ns=$1 host=$2 port=$3; shift 3
  local out v
  for _ in $(seq "$RUNS"); do
    out=$(client "$ns" $((SECS + 30)) iperf3 -c "$host" -p "$port" -t "$SECS" -J --connect-timeout 5000 "$@" 2>/dev/null || true)
    v=$(iperf_mbits <<<"$out")
    if [ -n "$v" ]; then echo "$v"; else
      echo "iperf3 -c $host -p $port $*: $(jq -r '.error // empty' <<<"$out" 2>/dev/null || true) (no figure)" >&2
    fi
  done | median
}
# iperf3 UDP at a rate -> "Mbit/s loss%" as seen by the receiver; nothing when it failed.
iperf_udp() { # ns host port rate secs
  client "$1" $(($5 + 30)) iperf3 -c "$2" -p "$3" -u -b "$4" -l 1392 -t "$5" -J --connect-timeout 5000 2>/dev/null |
    jq -r 'select(.end.sum_received != null) | "\(.end.sum_received.bits_per_second / 1e6 | floor) \(.end.sum_received.lost_percent * 100 | round / 100)"' 2>/dev/null || true
}
udp_measure() { # ns host port -> sets UDP_MB UDP_LOSS UDP_RATE
  # Short probes find the highest offered rate with < 1% loss (the lowest if none), then RUNS
  # runs of SECS seconds at that rate give the medians. Every rate is probed: on a shared
  # machine one probe can lose packets to a burst of other load, and must not end the sweep.
  local ns=$1 host=$2 port=$3 rate best=10M out probe=$(((SECS + 1) / 2))
  for rate in 10M 50M 100M 200M 400M 800M 1600M; do
    out=$(iperf_udp "$ns" "$host" "$port" "$rate" "$probe")
    if [ -n "$out" ] && awk -v l="${out#* }" 'BEGIN{exit !(l < 1)}'; then best=$rate; fi
  done
  local runs; runs=$(for _ in $(seq "$RUNS"); do iperf_udp "$ns" "$host" "$port" "$best" "$SECS"; done)
  UDP_RATE=$best
  UDP_MB=$(awk 'NF==2{print $1}' <<<"$runs" | median)
  UDP_LOSS=$(awk 'NF==2{print $2}' <<<"$runs" | median)
}
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
rss_mib() { # pid... -> summed RSS in MiB, "-" when one of them is gone
  local t=0 v p
  for p in "$@"; do
    v=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || true)
    [ -n "$v" ] || { echo -; return; }
    t=$((t + v))
  done
  awk -v k=$t 'BEGIN{printf "%.1f", k/1024}'
}
wait_log() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout waiting for $2 in $1" >&2; cat "$1" >&2; exit 1; }
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "timeout waiting for $1" >&2; exit 1; }
conf() { printf '[Interface]\nPrivateKey = %s\nAddress = %s\nListenPort = %s\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s\nEndpoint = %s\n' "$@"; }
start_bg() { "$@" & pids+=($!); }
ready_bg() { # out-file command... : start and wait for "ready" on stdout
  local out=$1; shift
  "$@" >"$out" & pids+=($!)
  wait_log "$out" ready
}
stop() { # pid... : a path's tunnel processes, at its teardown
  local p; for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
# Before each figure: note what measure is doing (for watchdog notes) and run the path's
# ON_PHASE hook (onetun gets a fresh process per figure).
phase() { echo "$1" >"$work/phase"; "${ON_PHASE:-:}"; }
field() { sed -n "s/.*$1=\\([0-9]*\\).*/\\1/p"; }

declare -A R
# ratio A B -> " (A/Bx)" when both are numbers
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b+0>0) printf " (%.2fx)", a/b; }'; }
# target NAME VALUE OP LIMIT : one line "- [x] NAME: VALUE OP LIMIT"
target() {
  local ok
  ok=$(awk -v a="$2" -v b="$4" -v op="$3" 'BEGIN{ if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/) print "?"; else if ((op==">=" && a+0>=b+0) || (op=="<=" && a+0<=b+0)) print "x"; else print " " }')
  echo "- [$ok] $1: $2 $3 $4"
}
# measure LABEL NS HOST IPERF_PORT ECHO_PORT HOLD_PORT 'PIDS(cpu/rss)' FIREHOSE_PORT
# PIDS may name variables ('$onetun $wg_b'): they are read again before each use.
measure() {
  local label=$1 ns=$2 host=$3 ip=$4 ep=$5 hp=$6 procs_spec=$7 fp=${8:-} procs v
  procs_now() { eval "echo $procs_spec"; }
  echo "== $label" >&2
  phase "TCP forward"
  R[$label,fwd]=$(iperf_tcp "$ns" "$host" "$ip")
  phase "TCP reverse"
  R[$label,rev]=$(iperf_tcp "$ns" "$host" "$ip" -R)
  phase "TCP 4 streams"
  R[$label,p4]=$(iperf_tcp "$ns" "$host" "$ip" -P 4)
  phase "RTT"
  local rtts; rtts=$(for _ in $(seq "$RUNS"); do client "$ns" 120 "$tk" rtt "$host:$ep" 2000 64 2>/dev/null || true; done)
  R[$label,p50]=$(field p50_us <<<"$rtts" | median)
  R[$label,p99]=$(field p99_us <<<"$rtts" | median)
  # Every connection writes 32 bytes and must read the same 32 back (testkit conn-rate).
  phase "connections/s"
  local crs; crs=$(for _ in $(seq "$RUNS"); do client "$ns" $((SECS + 30)) "$tk" conn-rate "$host:$ep" 4 "$SECS" 2>/dev/null || true; done)
  R[$label,cps]=$(field conn_per_sec <<<"$crs" | median)
  # 4 clients measure mostly latency; 16 keep the tunnel busy: its capacity.
  local crs16; crs16=$(for _ in $(seq "$RUNS"); do client "$ns" $((SECS + 30)) "$tk" conn-rate "$host:$ep" 16 "$SECS" 2>/dev/null || true; done)
  R[$label,cps16]=$(field conn_per_sec <<<"$crs16" | median)
  R[$label,cfail]=$(printf '%s\n%s\n' "$crs" "$crs16" | field failed | awk '{s+=$1} END{print NR ? s : "-"}')
  phase "UDP"
  udp_measure "$ns" "$host" "$ip"
  R[$label,udp]=$UDP_MB; R[$label,udploss]=$UDP_LOSS; R[$label,udprate]=$UDP_RATE
  R[$label,cpu]=-; R[$label,rss0]=-; R[$label,rssn]=-; R[$label,busy]=-; R[$label,slow]=-
  [ -n "$procs_spec" ] || return 0
  phase "RSS idle"
  R[$label,rss0]=$(rss_mib $(procs_now))
  phase "CPU"
  local c0 c1 mb
  procs=$(procs_now)
  c0=$(cpu_ticks $procs)
  mb=$(client "$ns" $((SECS + 30)) iperf3 -c "$host" -p "$ip" -t "$SECS" -J --connect-timeout 5000 2>/dev/null | iperf_mbits || true)
  c1=$(cpu_ticks $procs)
  R[$label,cpu]=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v mb="${mb:-0}" -v s="$SECS" 'BEGIN{ gb=mb*s/8/1000; if (gb>0) printf "%.2f", t/hz/gb; else print "-" }')
  # Idle connections first, on a path that has not been through the slow-reader stress.
  if [ -n "$hp" ]; then
    phase "idle connections"
    procs=$(procs_now)
    exec {fd}> >(client "$ns" 300 "$tk" hold-conns "$host:$hp" "$CONNS" >"$work/hold.out" 2>&1)
    for _ in $(seq 900); do grep -q "ready\|error\|testkit" "$work/hold.out" 2>/dev/null && break; sleep 0.1; done
    if grep -q ready "$work/hold.out"; then
      # The client's connect() returns before a proxy has finished its side (nexd accepts
      # locally, then connects through the tunnel): take the highest of a few samples.
      local top=0
      for _ in 1 2 3 4 5; do
        v=$(rss_mib $procs)
        top=$(awk -v a="$top" -v b="$v" 'BEGIN{print (b ~ /^[0-9.]+$/ && b>a)?b:a}')
        sleep 1
      done
      R[$label,rssn]=$top
      # A transfer while they stay open: a stack that visits every connection per packet
      # slows down here.
      phase "TCP forward, connections held"
      R[$label,busy]=$(RUNS=1 iperf_tcp "$ns" "$host" "$ip")
    else
      R[$label,rssn]="fail: $(sed -n 's/^testkit: //p' "$work/hold.out" | head -1)"
      [ "${R[$label,rssn]}" != "fail: " ] || R[$label,rssn]="fail: not all open after 90 s"
    fi
    exec {fd}>&-
    # The hold server never closes what it accepted, so the proxy would keep 10,000
    # half-closed flows: a fresh hold server lets them all close before the next figure.
    "${AFTER_HOLD:-:}"
    for _ in $(seq 30); do
      v=$(rss_mib $procs)
      awk -v v="$v" -v r="${R[$label,rss0]}" 'BEGIN{exit !(v !~ /^[0-9.]+$/ || v <= r * 1.5 + 5)}' && break
      sleep 0.5
    done
  fi
  if [ -n "$fp" ]; then
    phase "slow reader"
    # A reader taking 256 KiB/s from a sender that never stops: memory must stay flat.
    procs=$(procs_now)
    client "$ns" $((SLOW + 30)) "$tk" slow-read "$host:$fp" "$SLOW" 256 >"$work/slow.out" 2>&1 &
    local sp=$! lo=999999 hi=0
    sleep 2
    for _ in $(seq $((SLOW > 3 ? SLOW - 3 : 1))); do
      v=$(rss_mib $procs)
      [ "$v" != - ] || break
      lo=$(awk -v a="$lo" -v b="$v" 'BEGIN{print (b<a)?b:a}'); hi=$(awk -v a="$hi" -v b="$v" 'BEGIN{print (b>a)?b:a}')
      sleep 1
    done
    wait "$sp" || true
    R[$label,slow]="$lo–$hi"
    [ "$hi" != 0 ] || R[$label,slow]=-
    grep -q "^read" "$work/slow.out" || R[$label,slow]="${R[$label,slow]} (reader failed)"
  fi
}

# Two nexd on loopback, A egress -> B ingress to the root-namespace servers of the direct path
# (iperf3 15301, echo 15307, hold 15308, firehose 15309, discard 15310). A listens on 15302
# (iperf3 TCP and UDP), 15303 (echo), 15304 (hold), 15305 (firehose), 15313 (discard), and
# runs a SOCKS5 server on 15306. Sets nexd_a and nexd_b.
nexd_pair_up() {
  local pa ka pb kb
  read -r pa ka < <("$tk" genkey); read -r pb kb < <("$tk" genkey)
  conf "$pa" 100.100.0.1/32 15311 "$kb" 100.100.0.2/32 127.0.0.1:15312 >"$work/a.conf"
  conf "$pb" 100.100.0.2/32 15312 "$ka" 100.100.0.1/32 127.0.0.1:15311 >"$work/b.conf"
  start_bg "$bin/nexd" --state-dir "$work/sb" --unix-socket "$work/b.sock" proxy --config "$work/b.conf" \
    --ingress tcp:5201:127.0.0.1:15301 --ingress udp:5201:127.0.0.1:15301 \
    --ingress tcp:7:127.0.0.1:15307 --ingress tcp:9:127.0.0.1:15308 --ingress tcp:19:127.0.0.1:15309 \
    --ingress tcp:21:127.0.0.1:15310 2>"$work/b.log"
  nexd_b=$!
  start_bg "$bin/nexd" --state-dir "$work/sa" --unix-socket "$work/a.sock" proxy --config "$work/a.conf" \
    --egress tcp:15302:100.100.0.2:5201 --egress udp:15302:100.100.0.2:5201 \
    --egress tcp:15303:100.100.0.2:7 --egress tcp:15304:100.100.0.2:9 --egress tcp:15305:100.100.0.2:19 \
    --egress tcp:15313:100.100.0.2:21 --socks5 15306 2>"$work/a.log"
  nexd_a=$!
  wait_log "$work/a.log" "nexd proxy running"; wait_log "$work/b.log" "nexd proxy running"
}

# tun_up KIND NS IFACE PRIVATE ADDR PORT PEER_PUB PEER_ALLOWED PEER_ENDPOINT -> TUN_PID
# KIND wggo or bt: a userspace WireGuard TUN device configured over its UAPI socket by `wg`.
tun_up() {
  local kind=$1 ns=$2 ifc=$3
  if [ "$kind" = wggo ]; then
    WG_PROCESS_FOREGROUND=1 ip netns exec "$ns" wireguard-go -f "$ifc" >"$work/$ifc.log" 2>&1 &
  else
    ip netns exec "$ns" "$BORINGTUN" --foreground --disable-drop-privileges --log "$work/$ifc.log" "$ifc" >/dev/null 2>&1 &
  fi
  TUN_PID=$!; pids+=($TUN_PID)
  wait_sock "/var/run/wireguard/$ifc.sock"
  echo "$4" >"$work/$ifc.key"
  ip netns exec "$ns" wg set "$ifc" private-key "$work/$ifc.key" listen-port "$6" peer "$7" allowed-ips "$8" endpoint "$9"
  ip -n "$ns" addr add "$5" dev "$ifc"; ip -n "$ns" link set "$ifc" mtu 1420 up
  ip -n "$ns" route add "$8" dev "$ifc" 2>/dev/null || true
}

# One TCP stream through A's SOCKS5 server against the same stream through a rule, measured by
# the same client (stream_rate), runs interleaved: up to the discard server, down from the
# firehose. Sets R[label,sx_up_rule], sx_up_socks, sx_down_rule, sx_down_socks (Mbit/s).
socks_vs_rule() { # label
  local label=$1 sr=$bin/stream_rate k v
  local -A acc=()
  for _ in $(seq "$RUNS"); do
    for k in up_rule up_socks down_rule down_socks; do
      case $k in
        up_rule) v=$(client "" $((SECS + 30)) "$sr" up 127.0.0.1:15313 "$SECS" || true) ;;
        up_socks) v=$(client "" $((SECS + 30)) "$sr" up 127.0.0.1:15306 "$SECS" 100.100.0.2:21 || true) ;;
        down_rule) v=$(client "" $((SECS + 30)) "$sr" down 127.0.0.1:15305 "$SECS" || true) ;;
        down_socks) v=$(client "" $((SECS + 30)) "$sr" down 127.0.0.1:15306 "$SECS" 100.100.0.2:19 || true) ;;
      esac
      acc[$k]+="$(awk '/^Mbit/{print $2}' <<<"$v") "
    done
  done
  for k in up_rule up_socks down_rule down_socks; do
    R[$label,sx_$k]=$(tr ' ' '\n' <<<"${acc[$k]}" | grep . | median || true)
  done
}
