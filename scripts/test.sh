#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a developer's: installs what the tests need
# (moto, cargo-lambda and cfn-lint in .venv, PostgreSQL 15 and promtool through apt if missing),
# starts PostgreSQL, creates the test role, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql-15 postgresql-client-15)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client-15)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} with apt"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python tools, in .venv (made here when missing, whichever tool is missing):
# - moto's server, for the AWS SDK tests (Secrets Manager, SSO Admin, Identity Store, DynamoDB,
#   EventBridge Scheduler), and the aws CLI, for the test that follows the old rotation runbook
#   literally;
# - cargo-lambda, whose emulator runs the Lambda function in crates/jit-lambda/tests/emulator.rs
#   (`cargo lambda watch` builds with this machine's cargo, so its Zig dependency, needed only to
#   cross-compile, is left out: --no-deps);
# - cfn-lint, for the CloudFormation template of the Lambda deployment (deploy/aws/template.yaml);
#   cfn-lint and cargo-lambda are pinned to the minor versions checked, so a new release cannot
#   fail the suite by itself.
if [ ! -x .venv/bin/pip ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if [ ! -x .venv/bin/moto_server ] || [ ! -x .venv/bin/aws ]; then
  say "installing moto[server] and awscli into .venv"
  .venv/bin/pip install -q 'moto[server]' awscli
fi
if [ ! -x .venv/bin/cargo-lambda ]; then
  say "installing cargo-lambda into .venv"
  .venv/bin/pip install -q --no-deps 'cargo-lambda==1.9.*'
fi
if [ ! -x .venv/bin/cfn-lint ]; then
  say "installing cfn-lint into .venv"
  .venv/bin/pip install -q 'cfn-lint==1.58.*'
fi
export JIT_MOTO_SERVER="$PWD/.venv/bin/moto_server"
export JIT_AWS_CLI="$PWD/.venv/bin/aws"
export JIT_CARGO_LAMBDA="$PWD/.venv/bin/cargo-lambda"
# Dummy credentials for the SDK's default chain in tests that build their own AWS clients the way
# production does; every AWS call in the suite goes to a moto server on 127.0.0.1.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
# No test may reach the cloud metadata address: an SDK chain that looks for credentials there
# is told not to.
export AWS_EC2_METADATA_DISABLED=true
command -v jq >/dev/null && command -v openssl >/dev/null || {
  say "installing jq and openssl with apt"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq openssl >/dev/null
}

# PostgreSQL: start the cluster if it is down, create the test role (allowed to create the
# per-test databases) and its database.
if ! pg_lsclusters -h 2>/dev/null | grep -q '^15 *main .*online'; then
  if ! pg_lsclusters -h 2>/dev/null | grep -q '^15 *main'; then
    say "creating PostgreSQL cluster 15/main"
    pg_createcluster 15 main >/dev/null
  fi
  say "starting PostgreSQL 15"
  pg_ctlcluster 15 main start
fi
su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jit_test') THEN
    CREATE ROLE jit_test LOGIN CREATEDB PASSWORD 'jit_test';
  END IF;
END $$;
SELECT 'CREATE DATABASE jit_test OWNER jit_test' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'jit_test')\gexec
SQL
export JIT_TEST_PG_URL="postgres://jit_test:jit_test@127.0.0.1:5432/jit_test"
# Drop databases left over by earlier runs.
psql "$JIT_TEST_PG_URL" -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'jit\\_t\\_%'" \
  | while read -r db; do psql "$JIT_TEST_PG_URL" -q -c "DROP DATABASE IF EXISTS $db" || true; done

# Alert rules: promtool (Debian's prometheus package) unit-tests deploy/prometheus/alerts.yml.
if ! command -v promtool >/dev/null 2>&1; then
  say "installing prometheus (for promtool) with apt"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
say "promtool test rules deploy/prometheus/alerts_test.yml"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

# The Lambda deployment's template: no finding at all, warnings included (a warning that must
# stay is suppressed in the template's Metadata, with the reason).
say "cfn-lint deploy/aws/template.yaml"
.venv/bin/cfn-lint deploy/aws/template.yaml

say "cargo test --workspace"
cargo test --workspace --all-targets --no-fail-fast "$@"

# A short run of every fuzz target (the committed corpora also replay inside `cargo test`, in
# crates/jit-fuzzing). Builds with cargo-fuzz into fuzz/target: about 9 minutes cold, seconds warm.
say "fuzz: 10 s per target (scripts/fuzz.sh)"
JIT_FUZZ_SCRATCH=1 scripts/fuzz.sh "${JIT_FUZZ_SECONDS:-10}"

# The Debian package end to end: build (release), dpkg -i, systemd-analyze verify, the installed
# server as the jit user over TLS answering a signed call, purge keeping the data. Needs root;
# JIT_PACKAGE_TEST=0 skips it (it installs and removes the package on this machine).
if [ "${JIT_PACKAGE_TEST:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null; then
  say "package: build, install, run, remove (scripts/package-test.sh)"
  scripts/package-test.sh
else
  say "package test skipped (needs root and dpkg; JIT_PACKAGE_TEST=${JIT_PACKAGE_TEST:-1})"
fi
