#!/usr/bin/env bash
# Quick throughput comparison, all on this machine, in one run (needs root for namespaces):
#   direct loopback (ceiling) | nexd <-> nexd on loopback | wireguard-go <-> wireguard-go (TUN in
#   two namespaces) | nexd <-> wireguard-go peer
# iperf3, one TCP stream, forward and reverse, median of RUNS runs of SECS seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SECS=${SECS:-5}
RUNS=${RUNS:-3}
[ "$(id -u)" -eq 0 ] || { echo "bench/quick.sh needs root (network namespaces)"; exit 1; }
scripts/install-deps.sh
cargo build --release --workspace --bins -q
bin=$PWD/target/release
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

median() { sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# iperf3 client run inside an optional namespace: prints Mbit/s received.
iperf() { # ns host port [extra]
  local ns=$1 host=$2 port=$3; shift 3
  local pre=()
  [ -n "$ns" ] && pre=(ip netns exec "$ns")
  for _ in $(seq "$RUNS"); do
    "${pre[@]}" iperf3 -c "$host" -p "$port" -t "$SECS" -f m "$@" 2>/dev/null | awk '/receiver/{print $(NF-2)}'
  done | median
}
genkey() { $bin/testkit genkey; }
wait_log() { for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout waiting for $2 in $1"; cat "$1"; exit 1; }

conf() { # private address port peer_public peer_allowed peer_endpoint
  printf '[Interface]\nPrivateKey = %s\nAddress = %s\nListenPort = %s\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s\nEndpoint = %s\n' "$@"
}

# --- direct loopback -------------------------------------------------------------------------
iperf3 -s -p 15301 -D --logfile "$work/iperf-direct.log" -I "$work/iperf-direct.pid"
pids+=("$(cat "$work/iperf-direct.pid" 2>/dev/null || echo 0)")
sleep 0.3
direct_f=$(iperf "" 127.0.0.1 15301)
direct_r=$(iperf "" 127.0.0.1 15301 -R)

# --- nexd <-> nexd on loopback ---------------------------------------------------------------
read -r pa ka < <(genkey); read -r pb kb < <(genkey)
conf "$pa" 100.100.0.1/32 15311 "$kb" 100.100.0.2/32 127.0.0.1:15312 >"$work/a.conf"
conf "$pb" 100.100.0.2/32 15312 "$ka" 100.100.0.1/32 127.0.0.1:15311 >"$work/b.conf"
$bin/nexd --state-dir "$work/sb" --unix-socket "$work/b.sock" proxy --config "$work/b.conf" --ingress tcp:5201:127.0.0.1:15301 2>"$work/b.log" & pids+=($!)
$bin/nexd --state-dir "$work/sa" --unix-socket "$work/a.sock" proxy --config "$work/a.conf" --egress tcp:15302:100.100.0.2:5201 2>"$work/a.log" & pids+=($!)
wait_log "$work/a.log" "nexd proxy running"; wait_log "$work/b.log" "nexd proxy running"
nexd_f=$(iperf "" 127.0.0.1 15302)
nexd_r=$(iperf "" 127.0.0.1 15302 -R)

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
  for _ in $(seq 100); do [ -S "/var/run/wireguard/$ifc.sock" ] && break; sleep 0.1; done
  echo "$3" >"$work/$ifc.key"
  ip netns exec "$ns" wg set "$ifc" private-key "$work/$ifc.key" listen-port "$5" peer "$6" allowed-ips "$7" endpoint "$8"
  ip -n "$ns" addr add "$4" dev "$ifc"; ip -n "$ns" link set "$ifc" mtu 1420 up
  ip -n "$ns" route add "$7" dev "$ifc" 2>/dev/null || true
}
# wireguard-go <-> wireguard-go
read -r p1 k1 < <(genkey); read -r p2 k2 < <(genkey)
wg_up $nsa wgba$tag "$p1" 100.101.0.1/32 51901 "$k2" 100.101.0.2/32 10.198.0.2:51902
wg_up $nsb wgbb$tag "$p2" 100.101.0.2/32 51902 "$k1" 100.101.0.1/32 10.198.0.1:51901
ip netns exec $nsb iperf3 -s -B 100.101.0.2 -p 5201 -D -I "$work/ib.pid"
sleep 0.5
wg_f=$(iperf $nsa 100.101.0.2 5201)
wg_r=$(iperf $nsa 100.101.0.2 5201 -R)

# nexd (ns A) <-> wireguard-go (ns B): egress to the iperf3 server behind wireguard-go
read -r p3 k3 < <(genkey)
ip netns exec $nsb wg set wgbb$tag peer "$k3" allowed-ips 100.101.0.3/32 endpoint 10.198.0.1:51903
ip -n $nsb route add 100.101.0.3/32 dev wgbb$tag
conf "$p3" 100.101.0.3/32 51903 "$k2" 100.101.0.2/32 10.198.0.2:51902 >"$work/c.conf"
ip netns exec $nsa $bin/nexd --state-dir "$work/sc" --unix-socket "$work/c.sock" proxy --config "$work/c.conf" --egress tcp:15303:100.101.0.2:5201 2>"$work/c.log" & pids+=($!)
wait_log "$work/c.log" "nexd proxy running"
mix_f=$(iperf $nsa 127.0.0.1 15303)
mix_r=$(iperf $nsa 127.0.0.1 15303 -R)
kill "$(cat "$work/ib.pid")" 2>/dev/null || true
kill "$(cat "$work/iperf-direct.pid")" 2>/dev/null || true

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2fx", a/b; else print "-" }'; }
printf '\niperf3 single TCP stream, Mbit/s (median of %s x %ss), %s, %s cores\n' "$RUNS" "$SECS" "$(date -u +%F)" "$(nproc)"
printf '%-34s %10s %10s %12s\n' path forward reverse "vs wg-go"
printf '%-34s %10s %10s %12s\n' "direct loopback (ceiling)" "$direct_f" "$direct_r" "$(ratio "$direct_f" "$wg_f")"
printf '%-34s %10s %10s %12s\n' "nexd <-> nexd (loopback)" "$nexd_f" "$nexd_r" "$(ratio "$nexd_f" "$wg_f")"
printf '%-34s %10s %10s %12s\n' "nexd <-> wireguard-go (netns)" "$mix_f" "$mix_r" "$(ratio "$mix_f" "$wg_f")"
printf '%-34s %10s %10s %12s\n' "wireguard-go <-> wireguard-go" "$wg_f" "$wg_r" "1.00x"
