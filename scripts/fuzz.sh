#!/usr/bin/env bash
# Fuzzes ingest and the SQS batch handler with cargo-fuzz (libFuzzer), each target for SECONDS (default
# 60), and prints libFuzzer's figures (executions, coverage, crashes). Not part of the test command: the
# regular suite replays the corpus instead (shared/fuzzing/tests/corpus.rs).
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]      targets: ingest sqs_batch (default both)
#
# Installs cargo-fuzz into .tools/cargo-fuzz the first time. The seed corpus is built from events/
# (every sample envelope and every line of the sample streams) into target/fuzz-corpus/<target>, where
# libFuzzer also keeps what it finds; inputs worth keeping for good go to fuzz/corpus/<target>/ (the
# replay test reads them). A crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
#
# The machine has only the stable toolchain: cargo-fuzz needs nightly for its sanitizer flags, so the
# script builds without a sanitizer (`-s none`: safe Rust needs none to catch panics, which is what we
# look for) and lets the stable compiler accept cargo-fuzz's `-Z` flags with RUSTC_BOOTSTRAP=1, for this
# build only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(ingest sqs_batch)

if [ ! -x .tools/cargo-fuzz/bin/cargo-fuzz ]; then
  echo "[fuzz] installing cargo-fuzz into .tools/cargo-fuzz"
  cargo install --quiet --locked --root .tools/cargo-fuzz cargo-fuzz@0.13.1
fi
export PATH="$PWD/.tools/cargo-fuzz/bin:$PATH"

for target in "${targets[@]}"; do
  corpus="target/fuzz-corpus/$target"
  mkdir -p "$corpus" "fuzz/corpus/$target"
  # The seeds: one file per sample envelope and per stream line.
  for f in events/samples/*.json; do cp "$f" "$corpus/seed-$(basename "$f")"; done
  i=0
  for f in events/streams/*.jsonl; do
    while IFS= read -r line; do
      [ -n "$line" ] || continue
      i=$((i + 1))
      printf '%s' "$line" >"$corpus/seed-line-$i"
    done <"$f"
  done
  echo "[fuzz] $target for ${seconds}s"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" \
    "../$corpus" "../fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -close_fd_mask=1 -print_final_stats=1 -max_len=70000) 2>&1 |
    grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|Done |stat::|==[0-9]+== ERROR|SUMMARY|panicked|Test unit written)' || true
  # cargo fuzz exits non-zero on a crash; the pipe hides it, so check for the artifact.
  if compgen -G "fuzz/artifacts/$target/crash-*" >/dev/null; then
    echo "[fuzz] $target crashed: see fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
