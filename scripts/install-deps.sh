#!/usr/bin/env bash
# Installs what the end-to-end tests need, when missing (Debian; needs root).
set -euo pipefail
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need wireguard-go wireguard-go
need wg wireguard-tools
need ip iproute2
need curl curl
need psql postgresql-client
need setpriv util-linux
need iperf3 iperf3
need jq jq
need nft nftables
need prlimit util-linux
need haproxy haproxy
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
# A stock gRPC client for tests/tests/api_hardening.rs (Debian's, under /usr/bin/python3).
/usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || python3 -c 'import grpc' >/dev/null 2>&1 ||
  missing+=(python3-grpcio)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root to install them (tests that need them will be skipped)" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
