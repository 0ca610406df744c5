#!/usr/bin/env bash
# The Debian package, end to end, on this machine (run as root; scripts/test.sh runs it in CI):
# build it with cargo-deb, install it with dpkg -i, check the systemd units with
# systemd-analyze verify, run the installed binary as the jit user with the packaged
# configuration and a TLS certificate, make a signed call over HTTPS with the installed CLI,
# then remove and purge the package and check that the data is kept.
#
# It installs and removes the package `jit-access` and the `jit` user: do not run it on a host
# where jit-access is installed for real.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> package: %s\n' "$*"; }
fail() { printf 'package test FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i, a system user)"
if dpkg -s jit-access >/dev/null 2>&1; then
  fail "jit-access is already installed here; this test would remove it"
fi

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v adduser >/dev/null || need+=(adduser)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} with apt"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo-deb >/dev/null; then
  say "installing cargo-deb from crates.io"
  cargo install --locked --quiet cargo-deb
fi

say "building the package (release build)"
deb_log=$(mktemp)
if ! cargo deb -p jit-cli >"$deb_log" 2>&1; then
  cat "$deb_log" >&2
  fail "cargo deb failed"
fi
deb=$(tail -n 1 "$deb_log")
rm -f "$deb_log"
[ -f "$deb" ] || fail "cargo deb produced no package"
say "built $deb ($(stat -c %s "$deb") bytes; /usr/bin/jit is $(stat -c %s target/release/jit) bytes)"

work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  dpkg --purge jit-access >/dev/null 2>&1 || true
  rm -rf "$work" /var/lib/jit
  getent passwd jit >/dev/null && deluser --system --quiet jit >/dev/null 2>&1 || true
  getent group jit >/dev/null && delgroup --system --quiet jit >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "dpkg -i"
dpkg -i "$deb" >/dev/null
getent passwd jit >/dev/null || fail "no jit user"
[ "$(stat -c '%a %U' /var/lib/jit)" = "700 jit" ] || fail "/var/lib/jit is $(stat -c '%a %U' /var/lib/jit), want 700 jit"
for f in /etc/jit/server.toml /etc/jit/mattermost.toml; do
  [ "$(stat -c '%a %U:%G' "$f")" = "640 root:jit" ] || fail "$f is $(stat -c '%a %U:%G' "$f")"
done
for u in jit-server jit-mattermost; do
  unit=$(dpkg -L jit-access | grep "/$u.service\$") || fail "no $u.service in the package"
  grep -q '^ProtectSystem=strict' "$unit" || fail "$u: not ProtectSystem=strict"
  grep -q '^NoNewPrivileges=yes' "$unit" || fail "$u: no NoNewPrivileges"
  grep -q '^ReadWritePaths=/var/lib/jit' "$unit" || fail "$u: no ReadWritePaths"
done

say "systemd-analyze verify"
# --man=no: the units point at file:// documentation, which verify would try to open.
out=$(systemd-analyze verify --man=no \
  "$(dpkg -L jit-access | grep '/jit-server.service$')" \
  "$(dpkg -L jit-access | grep '/jit-mattermost.service$')" 2>&1) || fail "systemd-analyze verify: $out"
if printf '%s\n' "$out" | grep -i 'jit-\(server\|mattermost\)\.service' ; then
  fail "systemd-analyze verify reports the units above"
fi

say "TLS: a private CA and a certificate for 127.0.0.1 signed by it"
install -d -o root -g jit -m 0750 /etc/jit/tls
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=jit package test CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout /etc/jit/tls/key.pem -out "$work/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$work/leaf.ext"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/leaf.ext" -out /etc/jit/tls/cert.pem 2>/dev/null
install -m 0644 "$work/ca.pem" /etc/jit/tls/ca.pem
chown root:jit /etc/jit/tls/key.pem /etc/jit/tls/cert.pem
chmod 0640 /etc/jit/tls/key.pem /etc/jit/tls/cert.pem

say "the installed server, as jit, with the packaged configuration, over TLS on :$port"
cd /var/lib/jit
runuser -u jit -- env -i PATH=/usr/bin:/bin AWS_EC2_METADATA_DISABLED=true \
  JIT_LISTEN="127.0.0.1:$port" JIT_TLS_CERT_FILE=/etc/jit/tls/cert.pem \
  JIT_TLS_KEY_FILE=/etc/jit/tls/key.pem JIT_LOG_FORMAT=text \
  /usr/bin/jit server --config /etc/jit/server.toml >"$work/server.log" 2>&1 &
server_pid=$!
cd - >/dev/null
ready=""
for _ in $(seq 1 100); do
  if curl -fsS --cacert /etc/jit/tls/ca.pem "https://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
    ready=1; break
  fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.2
done
[ -n "$ready" ] || { cat "$work/server.log" >&2; fail "the installed server did not answer over HTTPS"; }
[ "$(stat -c '%a %U' /var/lib/jit/keys/backend.json)" = "600 jit" ] || fail "generated ring is not 600 jit"
[ "$(stat -c '%a %U' /var/lib/jit/jit.db)" = "600 jit" ] || fail "database is not 600 jit"
if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
  fail "plain HTTP answered on the TLS listener"
fi

say "a signed call over HTTPS with the installed CLI"
answer=$(runuser -u jit -- env -i PATH=/usr/bin:/bin SSL_CERT_FILE=/etc/jit/tls/ca.pem \
  /usr/bin/jit config --api "https://127.0.0.1:$port" --keys file:/var/lib/jit/keys/backend.json \
  --json show ch1 2>&1) || { cat "$work/server.log" >&2; fail "signed call: $answer"; }
say "answer: $answer"
# The same call unsigned is refused: the answer above was authenticated.
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert /etc/jit/tls/ca.pem \
  "https://127.0.0.1:$port/config/accounts?channel_id=ch1")
[ "$code" = 401 ] || fail "an unsigned call got $code, want 401"

kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""

say "dpkg --purge keeps the data unless asked"
dpkg --purge jit-access >/dev/null
[ -f /var/lib/jit/jit.db ] || fail "purge removed the database"
[ ! -e /etc/jit/server.toml ] || fail "purge left /etc/jit/server.toml"
[ ! -e /usr/bin/jit ] || fail "purge left /usr/bin/jit"
say "ok"
