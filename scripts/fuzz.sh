#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 300), one after the other, on the
# committed corpora in fuzz/corpus/ (new finds are added there; `cargo fuzz cmin` before
# committing keeps them small). Installs cargo-fuzz from crates.io if missing. The stable
# toolchain accepts cargo-fuzz's -Z flags with RUSTC_BOOTSTRAP=1.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-300}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(verify keyring slash interactive callback api_bodies)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O 2>&1 | tail -1
for t in "${targets[@]}"; do
  echo "==> fuzz $t for ${secs}s"
  # -print_final_stats prints the execution count that docs/fuzzing.md reports.
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|ERROR|panicked|SUMMARY' || true
  # cargo fuzz exits non-zero on a crash; grep above swallows it, so check the artifacts.
  if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/oom-*" >/dev/null \
     || compgen -G "artifacts/$t/timeout-*" >/dev/null; then
    echo "fuzz target $t failed: see fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
