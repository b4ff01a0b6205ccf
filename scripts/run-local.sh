#!/usr/bin/env bash
# The product's main job on this machine, no cloud: the sample POS day (events/streams/pos-day.jsonl)
# through the embedded backend (wired from infra/template.yaml) with the reference ERP and loyalty
# simulators. Prints a progress bar and a summary; writes the JSON report to local-report.json in cargo's
# target directory. The first argument is the input (a file or directory); the rest go to
# `retail-sync local run` after the script's own (e.g. --report elsewhere, which replaces the script's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
input="${1:-events/streams}"
shift || true
exec cargo run --quiet -p retail-sync-cli --bin retail-sync -- \
  local run "$input" --fresh --report "$CARGO_TARGET_DIR/local-report.json" "$@"
