#!/usr/bin/env bash
# Demo: two nexd instances peered over loopback, no root, no TUN device.
#   curl → 127.0.0.1:$EGRESS → nexd A (egress) → WireGuard → nexd B (ingress :80) → HTTP server
# A 32 MiB file is fetched through the tunnel and checked by SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins -q
bin=target/debug
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
WG_A=$base; WG_B=$((base + 1)); HTTP=$((base + 2)); EGRESS=$((base + 3))
# Keys as wg(8) makes them: nexd genkey | nexd pubkey.
priv_a=$($bin/nexd genkey); pub_a=$(echo "$priv_a" | $bin/nexd pubkey)
priv_b=$($bin/nexd genkey); pub_b=$(echo "$priv_b" | $bin/nexd pubkey)

cat >"$work/a.conf" <<CONF
[Interface]
PrivateKey = $priv_a
Address = 100.100.0.1/32
ListenPort = $WG_A

[Peer]
PublicKey = $pub_b
AllowedIPs = 100.100.0.2/32
Endpoint = 127.0.0.1:$WG_B
CONF
cat >"$work/b.conf" <<CONF
[Interface]
PrivateKey = $priv_b
Address = 100.100.0.2/32
ListenPort = $WG_B

[Peer]
PublicKey = $pub_a
AllowedIPs = 100.100.0.1/32
Endpoint = 127.0.0.1:$WG_A
CONF

chmod 600 "$work/a.conf" "$work/b.conf"
head -c $((32 << 20)) /dev/urandom >"$work/file.bin"
$bin/testkit http-serve "127.0.0.1:$HTTP" "$work/file.bin" >"$work/http.out" &
pids+=($!)
$bin/nexd --state-dir "$work/state-b" --unix-socket "$work/b.sock" proxy --config "$work/b.conf" --ingress "tcp:80:127.0.0.1:$HTTP" 2>"$work/b.log" &
pids+=($!)
$bin/nexd --state-dir "$work/state-a" --unix-socket "$work/a.sock" proxy --config "$work/a.conf" --egress "tcp:$EGRESS:100.100.0.2:80" 2>"$work/a.log" &
pids+=($!)

for _ in $(seq 100); do
  grep -q "nexd proxy running" "$work/a.log" && grep -q "nexd proxy running" "$work/b.log" && grep -q ready "$work/http.out" && break
  sleep 0.1
done
grep -q "nexd proxy running" "$work/a.log" || { cat "$work/a.log"; exit 1; }

echo "nexd A: egress tcp:$EGRESS:100.100.0.2:80    nexd B: ingress tcp:80:127.0.0.1:$HTTP"
if command -v curl >/dev/null; then
  speed=$(curl -sS --max-time 60 -o "$work/fetched.bin" -w '%{speed_download}' "http://127.0.0.1:$EGRESS/file.bin")
  echo "fetched 32 MiB through the tunnel at $(awk -v s="$speed" 'BEGIN{printf "%.1f", s*8/1e6}') Mbit/s"
else
  exec 3<>"/dev/tcp/127.0.0.1/$EGRESS"
  printf 'GET /file.bin HTTP/1.0\r\n\r\n' >&3
  sed '1,/^\r$/d' <&3 >"$work/fetched.bin"
fi
want=$(sha256sum <"$work/file.bin" | cut -d' ' -f1)
got=$(sha256sum <"$work/fetched.bin" | cut -d' ' -f1)
echo "sha256 sent:     $want"
echo "sha256 received: $got"
[ "$want" = "$got" ] && echo "demo OK: bytes identical end to end" || { echo "demo FAILED"; exit 1; }
grep "handshake completed" "$work/a.log" | head -1
