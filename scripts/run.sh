#!/usr/bin/env bash
# The main command: builds the services and shows how each is configured.
# (Replaced by the local devnet once it exists.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p lightcl-poller -p lightcl-validator -p lightcl-engine-driver
for b in lightcl-poller lightcl-validator lightcl-engine-driver; do
  echo "================ $b ================"
  "target/release/$b" --help
done
