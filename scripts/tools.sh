#!/usr/bin/env bash
# Install the project's Python-distributed tools into the repo-local, gitignored .tools/ folder.
#
#   .tools/venv  moto[server] (AWS emulator), cfn-lint, awscli, cargo-lambda (+ ziglang for cross builds)
#   .tools/sam   aws-sam-cli alone (it pins boto3/botocore, so it gets a virtualenv of its own)
#   .tools/checkov  checkov alone (the template's security scan; its pins clash with cfn-lint's)
#
# Idempotent: each virtualenv carries a stamp with the hash of its requirement lines (and the Python
# version); when the stamp matches, nothing is reinstalled. Change a pin below and the next run rebuilds
# that virtualenv from scratch. Use `source scripts/env.sh` afterwards to put the tools on PATH.
#
# Env: PYTHON (default python3, must be >= 3.9; machines here have 3.11), TOOLS_FORCE=1 to rebuild.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
PYTHON="${PYTHON:-python3}"

# Pinned with `pip index versions NAME` (newest that installs on Python 3.11).
# ziglang is pinned explicitly: cargo-lambda only asks for ziglang>=0.10, and zig 0.16 is reported to
# break the aws-lc-sys cross build, while 0.17.1 is known to work.
VENV_REQS=(
  "moto[server]==5.2.5"
  "cfn-lint==1.58.0"
  "awscli==1.46.3"
  "cargo-lambda==1.9.2"
  "ziglang==0.17.1"
)
# pip itself is upgraded first (the resolver in newer pip handles the boto3/botocore pin web better).
PIP_VERSION=26.3
SAM_REQS=(
  "aws-sam-cli==1.170.0"
)
CHECKOV_REQS=(
  "checkov==3.3.30"
)

log() { printf '[tools] %s\n' "$*"; }

start=$SECONDS
pyver="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

# stamp_for NAME REQ... -> the hash that identifies one virtualenv's wanted contents
stamp_for() {
  printf '%s\n' "python=$pyver" "$@" | sha256sum | cut -d' ' -f1
}

# ensure_venv NAME REQ...
ensure_venv() {
  local name="$1"; shift
  local dir="$TOOLS/$name"
  local stamp_file="$dir/.retail-sync-stamp"
  local want; want="$(stamp_for "pip==$PIP_VERSION" "$@")"

  if [[ "${TOOLS_FORCE:-0}" != 1 && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want" \
        && -x "$dir/bin/python" ]]; then
    log "$name: up to date (${dir#"$ROOT"/})"
    return 0
  fi

  log "$name: creating virtualenv at ${dir#"$ROOT"/} (python $pyver)"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  log "$name: installing $*"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "pip==$PIP_VERSION"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  # The stamp is written last: an interrupted run leaves no stamp and the next run starts over.
  printf '%s\n' "$want" >"$stamp_file"
  log "$name: installed"
}

mkdir -p "$TOOLS"
ensure_venv venv "${VENV_REQS[@]}"
ensure_venv sam "${SAM_REQS[@]}"
ensure_venv checkov "${CHECKOV_REQS[@]}"

V="$TOOLS/venv/bin"
S="$TOOLS/sam/bin"
C="$TOOLS/checkov/bin"
log "versions:"
printf '  moto          %s\n' "$("$V/python" -c 'import moto; print(moto.__version__)')"
printf '  cfn-lint      %s\n' "$("$V/cfn-lint" --version 2>&1 | awk '{print $NF}')"
printf '  awscli        %s\n' "$("$V/aws" --version 2>&1 | awk '{print $1}')"
printf '  cargo-lambda  %s\n' "$("$V/cargo-lambda" lambda --version 2>&1 | head -n1)"
printf '  ziglang       %s\n' "$("$V/python" -m ziglang version 2>&1)"
printf '  sam           %s\n' "$(SAM_CLI_TELEMETRY=0 "$S/sam" --version 2>&1)"
printf '  checkov       %s\n' "$("$C/checkov" --version 2>&1)"
log "done in $((SECONDS - start))s; use: source scripts/env.sh"
