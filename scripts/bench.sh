#!/usr/bin/env bash
# Reproduces every figure in docs/benchmarks.md. Needs what scripts/test.sh sets up
# (PostgreSQL running, JIT_TEST_PG_URL); run that once first, or export the variable yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
export JIT_TEST_PG_URL="${JIT_TEST_PG_URL:-postgres://jit_test:jit_test@127.0.0.1:5432/jit_test}"

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

echo "== verify cost (criterion): 1 KiB body, against SHA-256(body) + HMAC(canonical) in the same run"
cargo bench -q -p jit-proto --bench verify -- --warm-up-time 1 --measurement-time 3 2>&1 | grep -E '^verify|time:'

echo "== API throughput and latency, start to ready, idle and loaded RSS (release build, server in its own process, 32 clients)"
cargo build -q --release -p jit-cli -p jit-bench
./target/release/jit-bench --db sqlite --clients 32 --seconds 10
./target/release/jit-bench --db postgres --clients 32 --seconds 10

echo "== revocation lateness (1,000 grants ending in the same minute; about 2.5 minutes)"
./target/release/jit-bench --mode lateness
