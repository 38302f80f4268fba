#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for tests, benchmarks and the demo.
#   scripts/pg.sh start DIR    create (if needed) and start a cluster in DIR; prints a libpq
#                              connection string. It listens on a unix socket in DIR only, so
#                              it never clashes with another server's port.
#   scripts/pg.sh stop DIR     stop it (fast shutdown); a missing cluster is not an error
#   scripts/pg.sh restart DIR  restart it
# PG_OPTS adds server settings, e.g. PG_OPTS="-c fsync=off". PG_CONFIG picks the PostgreSQL
# installation (default: Debian's PostgreSQL 15), e.g. a private copy from scripts/private-pg.sh.
# PG_SUPERUSER names the bootstrap superuser (default postgres; the pure-SQL edition's tests use
# supabase_admin, as Supabase does, so that `postgres` can be the non-superuser installer).
# Postgres refuses to run as root, so as root the server runs as the `postgres` OS user.
set -euo pipefail

BIN="$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)"
cmd="${1:?usage: pg.sh start|stop|restart DIR}"
dir="${2:?usage: pg.sh start|stop|restart DIR}"

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$BIN/initdb" -D "$dir/data" -U "${PG_SUPERUSER:-postgres}" --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=200 ${PG_OPTS:-}" start >/dev/null \
        || { tail -n 30 "$dir/server.log" >&2; exit 1; }
    echo "host=$dir port=5432 user=${PG_SUPERUSER:-postgres} dbname=postgres"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
restart)
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w restart >/dev/null
    ;;
*)
    echo "usage: pg.sh start|stop|restart DIR" >&2
    exit 2
    ;;
esac
