# Source me (bash or zsh):  source scripts/env.sh
# Puts the repo-local tools installed by scripts/tools.sh on PATH:
#   .tools/venv/bin first (moto_server, cfn-lint, aws, cargo-lambda -> `cargo lambda`, python-zig),
#   .tools/sam/bin after it (sam), .tools/checkov/bin last (checkov). The order matters: `sam build` with BuildMethod rust-cargolambda
#   runs cargo-lambda/cargo-zigbuild, which must find the python that has ziglang (the first venv).
# Safe to source repeatedly: the entries are moved to the front, never duplicated.
# No `set -e` here: this file runs inside the caller's shell.

if [ -n "${BASH_SOURCE:-}" ]; then
  _rs_env_src="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION:-}" ]; then
  # shellcheck disable=SC2296
  _rs_env_src="${(%):-%x}"
else
  _rs_env_src="$0"
fi
RETAIL_SYNC_ROOT="$(cd "$(dirname "$_rs_env_src")/.." && pwd)"
export RETAIL_SYNC_ROOT

_rs_path=":${PATH}:"
for _rs_dir in "$RETAIL_SYNC_ROOT/.tools/venv/bin" "$RETAIL_SYNC_ROOT/.tools/sam/bin" "$RETAIL_SYNC_ROOT/.tools/checkov/bin"; do
  _rs_path="${_rs_path//:${_rs_dir}:/:}"
done
_rs_path="${_rs_path#:}"
_rs_path="${_rs_path%:}"
export PATH="$RETAIL_SYNC_ROOT/.tools/venv/bin:$RETAIL_SYNC_ROOT/.tools/sam/bin:$RETAIL_SYNC_ROOT/.tools/checkov/bin${_rs_path:+:$_rs_path}"

if [ ! -x "$RETAIL_SYNC_ROOT/.tools/venv/bin/python" ] || [ ! -x "$RETAIL_SYNC_ROOT/.tools/sam/bin/sam" ] \
   || [ ! -x "$RETAIL_SYNC_ROOT/.tools/checkov/bin/checkov" ]; then
  echo "scripts/env.sh: tools missing; run: bash scripts/tools.sh" >&2
fi

# BuildMethod rust-cargolambda is a SAM CLI beta feature; this opts in so a plain `sam build` works
# (samconfig.toml stays yours: `sam deploy --guided` writes your environment's parameters there).
export SAM_CLI_BETA_RUST_CARGO_LAMBDA="${SAM_CLI_BETA_RUST_CARGO_LAMBDA:-1}"

# SAM CLI would otherwise try to send telemetry (no network here, and not wanted in CI).
export SAM_CLI_TELEMETRY="${SAM_CLI_TELEMETRY:-0}"

unset _rs_env_src _rs_path _rs_dir
