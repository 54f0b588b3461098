#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the multi-worker compile tests, and print the
# URL to use. Installs Debian's package when it is missing. Usage: eval "$(bash .ci/postgres.sh)"
set -euo pipefail
PORT="${PIPEC_PG_PORT:-55432}"
ROOT="${PIPEC_PG_DIR:-/tmp/pipec-pg}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi
BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")"
if ! "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" >/dev/null 2>&1; then
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    chown postgres "$ROOT"
    su postgres -s /bin/sh -c "$BIN/initdb -D $ROOT/data -A trust -U postgres >/dev/null"
    su postgres -s /bin/sh -c "$BIN/pg_ctl -D $ROOT/data -l $ROOT/log -w -o '-p $PORT -k $ROOT -c listen_addresses=127.0.0.1 -c max_connections=200' start >/dev/null"
fi
"$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='pipec'" | grep -q 1 \
    || "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres pipec
echo "export PIPEC_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$PORT/pipec"
