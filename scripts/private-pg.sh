#!/usr/bin/env bash
# A private, relocatable copy of the system PostgreSQL 15 (binaries, extension directory and
# server headers) under DIR, for a second checkout that must install its own build of the
# extension without overwriting the system's (PostgreSQL finds its share and lib directories
# relative to its binaries). Prints the copy's pg_config; use it as
#   make test PG_CONFIG="$(scripts/private-pg.sh /tmp/pg-mine)"
set -euo pipefail
dir="${1:?usage: private-pg.sh DIR}"
src="$(/usr/lib/postgresql/15/bin/pg_config --bindir)/.."
if [ ! -x "$dir/usr/lib/postgresql/15/bin/pg_config" ]; then
    mkdir -p "$dir/usr/lib/postgresql" "$dir/usr/share/postgresql" "$dir/usr/include/postgresql"
    cp -a "$(cd "$src" && pwd)" "$dir/usr/lib/postgresql/"
    cp -a /usr/share/postgresql/15 "$dir/usr/share/postgresql/"
    cp -a /usr/include/postgresql/15 "$dir/usr/include/postgresql/"
    # The test clusters run as the postgres OS user when started by root.
    if [ "$(id -u)" -eq 0 ]; then chmod -R a+rX "$dir"; fi
fi
echo "$(cd "$dir" && pwd)/usr/lib/postgresql/15/bin/pg_config"
