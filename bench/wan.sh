# The WAN rows (sourced by bench/run.sh): a `testkit wan-relay` between the two WireGuard
# endpoints delays, drops and queues their datagrams (this kernel has no netem). Namespace A
# holds the clients and the sending endpoint, B the servers, the far endpoint and the relay:
#
#   A: client -> [nexd | wireguard-go] 10.197.0.1:51801 --veth--> B: relay 10.197.0.2:52000
#   B: relay 127.0.0.1:52001 --lo--> [nexd | wireguard-go] 127.0.0.1:51802 -> servers
#
# Each tunnel pair is set up once and measured over every path in WAN_PATHS (the relay is
# restarted with the path's settings in between; sessions survive that). Fills
# R[wan-PAIR-PATH,fwd|rev|drops] (iperf3 single stream, Mbit/s; RcvbufErrors in A/B) and
# R[wan-PAIR-client-closes|server-closes,cps|cfail|cmax|cover] (short connections over
# WAN_CONN_PATH).
#   WAN_SECS (10)          iperf3 seconds per run (slow start is part of the figure)
#   WAN_RUNS (1)           runs per figure (median)
#   WAN_CONN_SECS (45)     short connections: long enough for nexd's tunnel ports (28,232)
#                          to wrap within the server's 60 s TIME-WAIT
#   WAN_CONN_THREADS (32)  clients, each connecting back to back
#   WAN_PATHS, WAN_PAIRS   subsets, e.g. WAN_PATHS="loss20" WAN_PAIRS="nexd-wggo wggo-wggo"
#   WAN_PEER_CC            congestion control of the namespaces' Linux TCP (default: the
#                          kernel's, bbr here), e.g. cubic

WAN_SECS=${WAN_SECS:-10}
WAN_RUNS=${WAN_RUNS:-1}
WAN_CONN_SECS=${WAN_CONN_SECS:-45}
WAN_CONN_THREADS=${WAN_CONN_THREADS:-32}
read -r -a WAN_PATHS <<<"${WAN_PATHS:-rtt40 loss20 bneck100}"
read -r -a WAN_PAIRS <<<"${WAN_PAIRS:-wggo-wggo nexd-wggo nexd-nexd}"
declare -A WAN_ARGS=(
  [rtt40]="--delay-ms 20"
  [loss20]="--delay-ms 10 --loss 0.3"
  [bneck100]="--delay-ms 50 --rate-mbit 100 --queue-bytes 1250000"
  [conn20]="--delay-ms 10"
)
declare -A WAN_LABEL=(
  [rtt40]="40 ms RTT, no loss"
  [loss20]="20 ms RTT, 0.3 % loss each way"
  [bneck100]="100 ms RTT, 100 Mbit/s bottleneck, 1.25 MB (one BDP) drop-tail queue"
  [conn20]="20 ms RTT, no loss"
)
WAN_CONN_PATH=conn20

wna=nexd-wan-a-$tag; wnb=nexd-wan-b-$tag
ip netns add $wna; nss+=($wna); ip netns add $wnb; nss+=($wnb)
# The Linux TCP of the iperf3 ends (the senders over wireguard-go): this kernel defaults to
# BBR, which ignores random loss; WAN_PEER_CC=cubic compares with the most common default.
# (iperf3 -C as root: a namespace may only select the init namespace's allowed algorithms.)
IPERF_CC=()
[ -n "${WAN_PEER_CC:-}" ] && IPERF_CC=(-C "$WAN_PEER_CC")
ip link add nxwa$tag netns $wna type veth peer name nxwb$tag netns $wnb
ip -n $wna addr add 10.197.0.1/24 dev nxwa$tag; ip -n $wnb addr add 10.197.0.2/24 dev nxwb$tag
for n in $wna $wnb; do ip -n $n link set lo up; done
ip -n $wna link set nxwa$tag up; ip -n $wnb link set nxwb$tag up
WAN_A_EP=10.197.0.1:51801 WAN_RELAY_A=10.197.0.2:52000 WAN_RELAY_B=127.0.0.1:52001 WAN_B_EP=127.0.0.1:51802

wan_relay=
wan_relay_up() { # PATH
  ready_bg "$work/relay.out" ip netns exec $wnb "$tk" wan-relay --listen-a $WAN_RELAY_A --listen-b $WAN_RELAY_B \
    --peer-b $WAN_B_EP --peer-a $WAN_A_EP ${WAN_ARGS[$1]}
  wan_relay=$!
}
wan_relay_down() { # LABEL: the relay prints its counters on SIGTERM
  stop "$wan_relay"
  sed -n "s/^counters /  relay $1 /p" "$work/relay.out" >&2
}
udp_rcvbuf_errors() { ip netns exec "$1" awk '/^Udp:/ { if (n++) print $6 }' /proc/net/snmp; }

wan_servers=()
wan_servers_up() {
  start_bg ip netns exec $wnb iperf3 -s -p 5201 >/dev/null 2>&1; wan_servers=($!)
  ready_bg "$work/wecho" ip netns exec $wnb "$tk" tcp-echo 0.0.0.0:7; wan_servers+=($!)
  ready_bg "$work/wreply" ip netns exec $wnb "$tk" tcp-reply-close 0.0.0.0:8 32; wan_servers+=($!)
}

# wan_measure PAIR HOST IPERF_PORT ECHO_PORT REPLY_PORT CONN(0/1): every path of WAN_PATHS,
# then (when CONN is 1) short connections over WAN_CONN_PATH, to the echo server (the client
# closes first) and to the reply-and-close server (the server closes first, and holds each
# 4-tuple in TIME-WAIT for 60 s: a client that reuses one too soon stalls).
wan_measure() {
  local pair=$1 host=$2 ip=$3 ep=$4 rp=$5 conn=$6 p k a0 b0
  for p in "${WAN_PATHS[@]}"; do
    k=wan-$pair-$p
    echo "== $k" >&2
    wan_relay_up "$p"
    # The first handshake crosses the path too: wait until an echo gets through.
    for _ in $(seq 30); do client $wna 10 "$tk" rtt "$host:$ep" 1 8 >/dev/null 2>&1 && break; sleep 0.5; done
    a0=$(udp_rcvbuf_errors $wna); b0=$(udp_rcvbuf_errors $wnb)
    phase "WAN $k forward"
    R[$k,fwd]=$(SECS=$WAN_SECS RUNS=$WAN_RUNS iperf_tcp $wna "$host" "$ip" "${IPERF_CC[@]}")
    phase "WAN $k reverse"
    R[$k,rev]=$(SECS=$WAN_SECS RUNS=$WAN_RUNS iperf_tcp $wna "$host" "$ip" -R "${IPERF_CC[@]}")
    R[$k,drops]="$(($(udp_rcvbuf_errors $wna) - a0)) / $(($(udp_rcvbuf_errors $wnb) - b0))"
    wan_relay_down "$k"
    echo "   fwd ${R[$k,fwd]:--} rev ${R[$k,rev]:--} Mbit/s, RcvbufErrors A/B ${R[$k,drops]}" >&2
  done
  [ "$conn" = 1 ] || return 0
  local mode port out
  for mode in client-closes server-closes; do
    k=wan-$pair-$mode; port=$ep
    [ $mode = client-closes ] || port=$rp
    echo "== $k short connections" >&2
    wan_relay_up $WAN_CONN_PATH
    for _ in $(seq 30); do client $wna 10 "$tk" rtt "$host:$ep" 1 8 >/dev/null 2>&1 && break; sleep 0.5; done
    phase "WAN $k connections"
    out=$(client $wna $((WAN_CONN_SECS + 60)) "$tk" conn-rate "$host:$port" "$WAN_CONN_THREADS" "$WAN_CONN_SECS" $mode 2>/dev/null || true)
    R[$k,cps]=$(field conn_per_sec <<<"$out"); R[$k,cfail]=$(field failed <<<"$out")
    R[$k,cmax]=$(field max_ms <<<"$out"); R[$k,cover]=$(field over_500ms <<<"$out")
    wan_relay_down "$k"
    echo "   $out" >&2
  done
}

# wan_log_if_failed PAIR LOG... : a missing figure shows the end of the pair's nexd logs.
wan_log_if_failed() {
  local pair=$1 p; shift
  for p in "${WAN_PATHS[@]}"; do
    if [ "${R[wan-$pair-$p,fwd]:--}" = - ] || [ "${R[wan-$pair-$p,rev]:--}" = - ]; then
      for l in "$@"; do echo "--- $l (last lines)" >&2; tail -20 "$l" >&2; done
      return 0
    fi
  done
}

# --- wireguard-go <-> wireguard-go ----------------------------------------------------------
wan_wggo-wggo() {
  wan_servers_up
  read -r p1 k1 < <("$tk" genkey); read -r p2 k2 < <("$tk" genkey)
  tun_up wggo $wna wwa$tag "$p1" 100.103.0.1/32 51801 "$k2" 100.103.0.2/32 $WAN_RELAY_A; w1=$TUN_PID
  tun_up wggo $wnb wwb$tag "$p2" 100.103.0.2/32 51802 "$k1" 100.103.0.1/32 $WAN_RELAY_B; w2=$TUN_PID
  wan_measure wggo-wggo 100.103.0.2 5201 7 8 1
  stop "$w1" "$w2" "${wan_servers[@]}"
}

# --- nexd (A) -> wireguard-go (B) -------------------------------------------------------------
wan_nexd-wggo() {
  wan_servers_up
  read -r p3 k3 < <("$tk" genkey); read -r p4 k4 < <("$tk" genkey)
  conf "$p3" 100.103.0.1/32 51801 "$k4" 100.103.0.2/32 $WAN_RELAY_A >"$work/wan-c.conf"
  start_bg ip netns exec $wna "$bin/nexd" --state-dir "$work/wsc" --unix-socket "$work/wc.sock" proxy --config "$work/wan-c.conf" \
    --egress tcp:15302:100.103.0.2:5201 --egress tcp:15303:100.103.0.2:7 --egress tcp:15304:100.103.0.2:8 2>"$work/wan-c.log"
  n1=$!
  wait_log "$work/wan-c.log" "nexd proxy running"
  tun_up wggo $wnb wwc$tag "$p4" 100.103.0.2/32 51802 "$k3" 100.103.0.1/32 $WAN_RELAY_B; w3=$TUN_PID
  wan_measure nexd-wggo 127.0.0.1 15302 15303 15304 1
  wan_log_if_failed nexd-wggo "$work/wan-c.log"
  stop "$n1" "$w3" "${wan_servers[@]}"
}

# --- nexd (A) <-> nexd (B) ------------------------------------------------------------------
wan_nexd-nexd() {
  wan_servers_up
  read -r p5 k5 < <("$tk" genkey); read -r p6 k6 < <("$tk" genkey)
  conf "$p5" 100.103.0.1/32 51801 "$k6" 100.103.0.2/32 $WAN_RELAY_A >"$work/wan-d.conf"
  conf "$p6" 100.103.0.2/32 51802 "$k5" 100.103.0.1/32 $WAN_RELAY_B >"$work/wan-e.conf"
  start_bg ip netns exec $wnb "$bin/nexd" --state-dir "$work/wse" --unix-socket "$work/we.sock" proxy --config "$work/wan-e.conf" \
    --ingress tcp:5201:127.0.0.1:5201 --ingress tcp:7:127.0.0.1:7 --ingress tcp:8:127.0.0.1:8 2>"$work/wan-e.log"
  n3=$!
  start_bg ip netns exec $wna "$bin/nexd" --state-dir "$work/wsd" --unix-socket "$work/wd.sock" proxy --config "$work/wan-d.conf" \
    --egress tcp:15302:100.103.0.2:5201 --egress tcp:15303:100.103.0.2:7 --egress tcp:15304:100.103.0.2:8 2>"$work/wan-d.log"
  n2=$!
  wait_log "$work/wan-d.log" "nexd proxy running"; wait_log "$work/wan-e.log" "nexd proxy running"
  wan_measure nexd-nexd 127.0.0.1 15302 15303 15304 0
  wan_log_if_failed nexd-nexd "$work/wan-d.log" "$work/wan-e.log"
  stop "$n2" "$n3" "${wan_servers[@]}"
}

for pair in "${WAN_PAIRS[@]}"; do
  declare -F "wan_$pair" >/dev/null || { echo "bench: unknown WAN pair $pair" >&2; exit 64; }
  "wan_$pair"
done
