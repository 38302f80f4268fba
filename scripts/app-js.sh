#!/usr/bin/env bash
# The npm packages docs/app.md's JavaScript examples import (@supabase/supabase-js, @supabase/ssr,
# next, pg), at the versions pinned with their checksums in scripts/app-js/package-lock.json,
# installed once into a cache directory so tests/tests/app_docs.rs can run the examples for real
# (a second run finds them and costs nothing). Prints the node_modules directory.
# Optional dependencies are left out: they are Next's compiler and image optimiser builds for
# each platform, which a route handler run by Node does not use.
# STRIPE_BILLING_CACHE picks the cache directory, as for scripts/pg17.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$(id -u)" -eq 0 ]; then default_cache=/var/cache/stripe_billing; else default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/stripe_billing"; fi
# Named by the lock's checksum: changing a pin installs a new copy beside the old one.
lock="$(sha256sum "$root/scripts/app-js/package-lock.json" | cut -c1-12)"
dir="${STRIPE_BILLING_CACHE:-$default_cache}/app-js-$lock"

if [ ! -f "$dir/node_modules/.installed" ]; then
    printf '==> installing the npm packages of the app examples into %s\n' "$dir" >&2
    command -v npm >/dev/null || { echo "npm is missing: run scripts/setup.sh" >&2; exit 1; }
    # Built beside the final place and moved there whole, so an interrupted install is never
    # taken for a finished one.
    tmp="$dir.partial.$$"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp"
    cp "$root/scripts/app-js/package.json" "$root/scripts/app-js/package-lock.json" "$tmp/"
    (cd "$tmp" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    touch "$tmp/node_modules/.installed"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    trap - EXIT
fi
echo "$dir/node_modules"
