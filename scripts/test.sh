#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the tools it needs (scripts/tools.sh: moto server,
# cfn-lint, SAM CLI, checkov, cargo-lambda into .tools/) and lints and scans the SAM template with them while
# it checks formatting and Rust lints, starts a moto server for the AWS adapter and end-to-end tests
# (stopped on exit), builds the tests and the function binaries for the Lambda runtime API test
# (cargo-lambda) in one build, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# One debug build serves clippy-free test, functions and CLI; no release builds here.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Each step says when it began (seconds since the start), so a slow phase shows in CI's log.
step() { printf '\n== %s (at %ds)\n' "$*" "$SECONDS"; }

mkdir -p "$CARGO_TARGET_DIR"
# Every background job is stopped on exit, with what it started (tools.sh stamps a virtualenv only once it
# is complete, so an interrupted install is redone by the next run).
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
pids=()
trap 'for pid in "${pids[@]}"; do kill_tree "$pid"; done' EXIT

# The tools install (downloads and unpacking, about 2.5 minutes from nothing), then the template is linted
# and scanned with them, while the Rust code is checked: neither needs the other. The output is shown once
# both are through.
tools_and_template() {
  bash scripts/tools.sh
  # shellcheck source=scripts/env.sh
  source scripts/env.sh
  step "SAM template"
  cfn-lint infra/template.yaml
  (cd infra && sam validate --lint --region us-east-1)
  # The security scan: 0 failures; each skipped check carries its reason beside the resource (Metadata).
  checkov -f infra/template.yaml --framework cloudformation --skip-download --compact --quiet
}
step "tools and the SAM template (in the background: $CARGO_TARGET_DIR/tools.log)"
tools_log="$CARGO_TARGET_DIR/tools.log"
tools_and_template >"$tools_log" 2>&1 &
tools_pid=$!
pids+=("$tools_pid")

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tools and the SAM template"
if ! wait "$tools_pid"; then
  cat "$tools_log"
  echo "installing the tools or linting the template failed (output above)" >&2
  exit 1
fi
cat "$tools_log"
# shellcheck source=scripts/env.sh
source scripts/env.sh

step "moto server"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
moto_log="$CARGO_TARGET_DIR/moto-server.log"
# Through the launcher: moto with its DynamoDB requests applied one at a time (scripts/moto_server.py).
python scripts/moto_server.py -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 || \
     python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  sleep 0.2
done
export RETAIL_SYNC_MOTO_ENDPOINT="http://127.0.0.1:$port"
echo "moto server on $RETAIL_SYNC_MOTO_ENDPOINT (log: $moto_log)"

# One build of every target with the features `cargo test --workspace` resolves: the function binaries the
# Lambda runtime API test runs under cargo-lambda, and the tests, which the next step then only runs.
# Building a few functions by name (`-p ingest …`) resolved other features for the shared dependencies
# (no dev-dependencies), and the test build compiled about 170 crates again, the AWS SDK among them.
step "build: every target, the function binaries among them"
cargo build --workspace --all-targets --locked

step "tests"
cargo test --workspace --locked
step "done"
