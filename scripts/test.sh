#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit, property, in-memory engine and
# end-to-end tests (two nexd on loopback; wireguard-go, PostgreSQL and curl in network
# namespaces, which need root: as a normal user those tests say SKIPPED).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
