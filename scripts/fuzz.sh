#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 300), one after the other, on the
# committed corpora in fuzz/corpus/ (new finds are added there; `cargo fuzz cmin` before
# committing keeps them small). Installs cargo-fuzz from crates.io if missing. The stable
# toolchain accepts cargo-fuzz's -Z flags with RUSTC_BOOTSTRAP=1.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# With JIT_FUZZ_SCRATCH=1 (the test command sets it) new finds go to a temporary directory and
# the committed corpora are only read.
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
scratch=""
if [ "${JIT_FUZZ_SCRATCH:-0}" = 1 ]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
fi
for t in "${targets[@]}"; do
  echo "==> fuzz $t for ${secs}s"
  dirs=("corpus/$t")
  if [ -n "$scratch" ]; then
    mkdir -p "$scratch/$t"
    dirs=("$scratch/$t" "corpus/$t")
  fi
  # -print_final_stats prints the execution count that docs/fuzzing.md reports.
  log="$(mktemp)"
  set +e
  cargo fuzz run -O "$t" "${dirs[@]}" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|DONE' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -60 "$log" >&2
    echo "fuzz target $t failed (exit $rc): the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  rm -f "$log"
done
