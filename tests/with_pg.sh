#!/usr/bin/env bash
# Runs a command with a private PostgreSQL server for the tests that need
# one, e.g.
#
#   tests/with_pg.sh cargo test --lib store
#   tests/with_pg.sh cargo test --test store_pg
#
# It creates a throw-away cluster in a temporary folder (initdb, trust
# authentication, listening only on a unix socket in that folder, so no port
# can clash), exports its URL as TRANSPONDER_TEST_PG (and, as
# TRANSPONDER_TEST_PG_RESTART, a command that restarts it), runs the command, and
# stops and removes the cluster however the command ends. PostgreSQL refuses
# to run as root: as root (CI) the cluster runs as the package's `postgres`
# user. Needs PostgreSQL's server binaries (Debian: `postgresql`;
# tests/run.sh installs it).
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "with_pg.sh: PostgreSQL's server is not installed (Debian: apt-get install postgresql)" >&2
  exit 2
fi

dir=$(mktemp -d /tmp/transponder-pg.XXXXXX)
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$dir"
  as_owner=(runuser -u postgres --)
fi

stop() {
  "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || :
  rm -rf "$dir"
}
trap stop EXIT

"${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
  --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 2; }
# Only the socket in $dir; enough connections for tests running in parallel
# (each store holds three).
"${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-c listen_addresses= -k $dir -c max_connections=300" start >/dev/null ||
  { cat "$dir/server.log" >&2; exit 2; }

# The socket folder goes in the URL's host, percent-encoded.
export TRANSPONDER_TEST_PG="postgresql://postgres@${dir//\//%2F}/postgres"
# A restart (fast: every session is cut), for tests of reconnecting.
export TRANSPONDER_TEST_PG_RESTART="${as_owner[*]} $bindir/pg_ctl -D $dir/data -l $dir/server.log -m fast -w restart >/dev/null"
echo "with_pg.sh: PostgreSQL ($("$bindir/postgres" --version)) at $TRANSPONDER_TEST_PG" >&2
status=0
"$@" || status=$?
exit "$status"
