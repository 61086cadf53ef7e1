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
# Fresh servers in B for each path: a path whose tunnel died mid-test (onetun) leaves iperf3
# busy with a dead client, and the hold server keeps every connection it was given.
srv=()
servers_up() {
  start_bg ip netns exec $nsb iperf3 -s -p 5201 >/dev/null 2>&1; srv=($!)
  ready_bg "$work/echo1" ip netns exec $nsb "$tk" tcp-echo 0.0.0.0:7; srv+=($!)
  ready_bg "$work/hold1" ip netns exec $nsb "$tk" hold-server 0.0.0.0:9; srv+=($!)
  ready_bg "$work/fire1" ip netns exec $nsb "$tk" firehose 0.0.0.0:19; srv+=($!)
}
servers_down() { stop "${srv[@]}"; }
hold_restart1() { stop "${srv[2]}"; ready_bg "$work/hold1" ip netns exec $nsb "$tk" hold-server 0.0.0.0:9; srv[2]=$!; }
AFTER_HOLD=hold_restart1

# --- wireguard-go <-> wireguard-go ------------------------------------------------------------
read -r p1 k1 < <("$tk" genkey); read -r p2 k2 < <("$tk" genkey)
tun_up wggo $nsa wga$tag "$p1" 100.101.0.1/32 51901 "$k2" 100.101.0.2/32 10.198.0.2:51902; wg_a=$TUN_PID
tun_up wggo $nsb wgb$tag "$p2" 100.101.0.2/32 51902 "$k1" 100.101.0.1/32 10.198.0.1:51901; wg_b=$TUN_PID
servers_up
measure wggo-wggo $nsa 100.101.0.2 5201 7 9 "$wg_a $wg_b" 19
stop "$wg_a"
servers_down

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
servers_up
measure nexd-wggo $nsa 127.0.0.1 15302 15303 15304 "$nexd_c $wg_b" 15305
stop "$nexd_c"
servers_down

# --- onetun (A) -> wireguard-go (B) -------------------------------------------------------------
# onetun has no listen port; wireguard-go takes its endpoint from the first handshake. One
# heavy figure can wedge or balloon it (seen: all half-closed connections fail, then echo
# reads time out; RSS near 1 GiB after the TCP runs), so each figure gets a fresh onetun, and a
# watchdog kills one above ONETUN_MAX_MIB RSS or older than ONETUN_MAX_SECS.
read -r p4 k4 < <("$tk" genkey)
ip netns exec $nsb wg set wgb$tag peer "$k4" allowed-ips 100.101.0.4/32
ip -n $nsb route add 100.101.0.4/32 dev wgb$tag
fw=(); for p in 5201:5201:TCP,UDP 15303:7:TCP 15304:9:TCP 15305:19:TCP; do
  IFS=: read -r lp rp proto <<<"$p"; fw+=("127.0.0.1:$lp:100.101.0.2:$rp:$proto")
done
onetun=
onetun_fresh() {
  [ -z "$onetun" ] || stop "$onetun"
  ip netns exec $nsa "$ONETUN" --endpoint-addr 10.198.0.2:51902 --endpoint-public-key "$k2" \
    --private-key "$p4" --source-peer-ip 100.101.0.4 --keep-alive 10 --log warn "${fw[@]}" >>"$work/onetun.log" 2>&1 &
  onetun=$!; pids+=($onetun)
  echo "$onetun $SECONDS" >"$work/onetun.pid"
  # Ready once an echo goes through the tunnel.
  for _ in $(seq 100); do timeout 5 ip netns exec $nsa "$tk" rtt 127.0.0.1:15303 1 8 >/dev/null 2>&1 && break; sleep 0.1; done
}
(
  for _ in $(seq 20000); do
    [ ! -e "$work/onetun.done" ] || exit 0
    [ -f "$work/onetun.pid" ] || { sleep 0.1; continue; }
    read -r op t0 <"$work/onetun.pid"
    v=$(awk '/VmRSS/{print int($2/1024)}' /proc/$op/status 2>/dev/null || true)
    if [ -n "$v" ] && [ "$v" -gt "$ONETUN_MAX_MIB" ]; then
      echo "killed at $v MiB RSS during $(cat "$work/phase")" >>"$work/onetun.killed"; kill "$op"
    elif [ -n "$v" ] && [ $((SECONDS - t0)) -gt "$ONETUN_MAX_SECS" ]; then
      echo "killed after ${ONETUN_MAX_SECS}s during $(cat "$work/phase")" >>"$work/onetun.killed"; kill "$op"
    fi
    sleep 0.1
  done
) &
pids+=($!)
# Shorter runs: a 5 s iperf3 upload took onetun past 1 GiB RSS (it queues what it reads from
# the local socket without backpressure), and a killed run yields no figure at all.
servers_up
ON_PHASE=onetun_fresh full_secs=$SECS SECS=$ONETUN_SECS
measure onetun-wggo $nsa 127.0.0.1 5201 15303 15304 '$onetun $wg_b' 15305
ON_PHASE= SECS=$full_secs
touch "$work/onetun.done"
ONETUN_NOTE=$(paste -sd ';' "$work/onetun.killed" 2>/dev/null | sed 's/;/; /g' || true)
# onetun's own complaints, counted by kind.
grep -v "Private key was passed" "$work/onetun.log" | sed -E 's/^ *[0-9T:.-]+Z +//; s/[0-9]+/N/g' |
  sort | uniq -c | sort -rn | head -5 >&2 || true
stop "$onetun" "$wg_b"
servers_down

# --- boringtun-cli <-> boringtun-cli ------------------------------------------------------------
read -r p5 k5 < <("$tk" genkey); read -r p6 k6 < <("$tk" genkey)
tun_up bt $nsa bta$tag "$p5" 100.102.0.1/32 51911 "$k6" 100.102.0.2/32 10.198.0.2:51912; bt_a=$TUN_PID
tun_up bt $nsb btb$tag "$p6" 100.102.0.2/32 51912 "$k5" 100.102.0.1/32 10.198.0.1:51911; bt_b=$TUN_PID
servers_up
measure bt-bt $nsa 100.102.0.2 5201 7 9 "$bt_a $bt_b" 19
stop "$bt_a" "$bt_b"
servers_down
