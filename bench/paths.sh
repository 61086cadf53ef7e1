# The paths through network namespaces (sourced by bench/run.sh after the loopback paths).
# Namespace A holds the clients (and nexd / onetun on the egress side), namespace B the
# servers on 0.0.0.0, so every tunnel address assigned in B reaches them. Tunnel devices are
# named with the script's PID: wireguard-go and boringtun UAPI sockets in /var/run/wireguard
# are shared by all namespaces.

nsa=nexd-bench-a-$tag; nsb=nexd-bench-b-$tag
ip netns add $nsa; nss+=($nsa); ip netns add $nsb; nss+=($nsb)
ip link add nxba$tag netns $nsa type veth peer name nxbb$tag netns $nsb
ip -n $nsa addr add 10.198.0.1/24 dev nxba$tag; ip -n $nsb addr add 10.198.0.2/24 dev nxbb$tag
for n in $nsa $nsb; do ip -n $n link set lo up; done
ip -n $nsa link set nxba$tag up; ip -n $nsb link set nxbb$tag up
start_bg ip netns exec $nsb iperf3 -s -p 5201 >/dev/null 2>&1
ready_bg "$work/echo1" ip netns exec $nsb "$tk" tcp-echo 0.0.0.0:7
ready_bg "$work/hold1" ip netns exec $nsb "$tk" hold-server 0.0.0.0:9
ready_bg "$work/fire1" ip netns exec $nsb "$tk" firehose 0.0.0.0:19

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

# --- wireguard-go <-> wireguard-go ------------------------------------------------------------
read -r p1 k1 < <("$tk" genkey); read -r p2 k2 < <("$tk" genkey)
tun_up wggo $nsa wga$tag "$p1" 100.101.0.1/32 51901 "$k2" 100.101.0.2/32 10.198.0.2:51902; wg_a=$TUN_PID
tun_up wggo $nsb wgb$tag "$p2" 100.101.0.2/32 51902 "$k1" 100.101.0.1/32 10.198.0.1:51901; wg_b=$TUN_PID
measure wggo-wggo $nsa 100.101.0.2 5201 7 9 "$wg_a $wg_b" 19
stop "$wg_a"

# --- nexd (A) <-> wireguard-go (B) ------------------------------------------------------------
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
stop "$nexd_c"

# --- onetun (A) -> wireguard-go (B) -------------------------------------------------------------
# onetun learns no listen port; wireguard-go takes its endpoint from the first handshake.
read -r p4 k4 < <("$tk" genkey)
ip netns exec $nsb wg set wgb$tag peer "$k4" allowed-ips 100.101.0.4/32
ip -n $nsb route add 100.101.0.4/32 dev wgb$tag
fw=(); for p in 5201:5201:TCP,UDP 15303:7:TCP 15304:9:TCP 15305:19:TCP; do
  IFS=: read -r lp rp proto <<<"$p"; fw+=("127.0.0.1:$lp:100.101.0.2:$rp:$proto")
done
ip netns exec $nsa "$ONETUN" --endpoint-addr 10.198.0.2:51902 --endpoint-public-key "$k2" \
  --private-key "$p4" --source-peer-ip 100.101.0.4 --keep-alive 10 --log warn "${fw[@]}" >"$work/onetun.log" 2>&1 &
onetun=$!; pids+=($onetun)
# onetun may stall or balloon: kill it above ONETUN_MAX_MIB RSS or after ONETUN_MAX_SECS; the
# figures still to come then fail and read "-", and the note says why.
(
  for _ in $(seq $((ONETUN_MAX_SECS * 10))); do
    v=$(awk '/VmRSS/{print int($2/1024)}' /proc/$onetun/status 2>/dev/null) || exit 0
    [ -n "$v" ] || exit 0
    if [ "$v" -gt "$ONETUN_MAX_MIB" ]; then echo "killed at $v MiB RSS during $(cat "$work/phase")" >"$work/onetun.killed"; kill $onetun; exit 0; fi
    sleep 0.1
  done
  echo "killed after ${ONETUN_MAX_SECS}s, during $(cat "$work/phase")" >"$work/onetun.killed"; kill $onetun 2>/dev/null
) &
pids+=($!)
for _ in $(seq 100); do ip netns exec $nsa "$tk" rtt 127.0.0.1:15303 1 8 >/dev/null 2>&1 && break; sleep 0.1; done
measure onetun-wggo $nsa 127.0.0.1 5201 15303 15304 "$onetun $wg_b" 15305
ONETUN_NOTE=$(cat "$work/onetun.killed" 2>/dev/null || true)
tail -5 "$work/onetun.log" >&2
stop "$onetun" "$wg_b"

# --- boringtun-cli <-> boringtun-cli ------------------------------------------------------------
read -r p5 k5 < <("$tk" genkey); read -r p6 k6 < <("$tk" genkey)
tun_up bt $nsa bta$tag "$p5" 100.102.0.1/32 51911 "$k6" 100.102.0.2/32 10.198.0.2:51912; bt_a=$TUN_PID
tun_up bt $nsb btb$tag "$p6" 100.102.0.2/32 51912 "$k5" 100.102.0.1/32 10.198.0.1:51911; bt_b=$TUN_PID
measure bt-bt $nsa 100.102.0.2 5201 7 9 "$bt_a $bt_b" 19
stop "$bt_a" "$bt_b"
