#!/usr/bin/env bash
# Tier 3 and up: integration tests through real clients against a throwaway cluster with the
# installed extension (run `make install` first; `make test` does). Extra arguments go to
# `cargo test`, e.g. scripts/integration-test.sh --test ledger.
# STRIPE_BILLING_EDITION=pure runs them against the pure-SQL edition instead, in a cluster set up
# like Supabase's: its superuser is supabase_admin, and the non-superuser postgres installs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d /tmp/stripe_billing_it.XXXXXX)"
trap '"$root/scripts/pg.sh" stop "$dir" || true; rm -rf "$dir"' EXIT
if [ "${STRIPE_BILLING_EDITION:-extension}" = pure ]; then
    # Also for the clusters tests start themselves (scripts/pg.sh reads it).
    export PG_SUPERUSER=supabase_admin
fi
# Durability is irrelevant for a cluster that is deleted afterwards.
STRIPE_BILLING_PG="$(PG_OPTS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" "$root/scripts/pg.sh" start "$dir")"
export STRIPE_BILLING_PG
cd "$root"
# Names the run in the log, where scripts/test-summary.sh adds up each run's results.
bin="$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)"
echo "==> integration tests: ${STRIPE_BILLING_EDITION:-extension} edition on PostgreSQL $("$bin/postgres" --version | awk '{print $3}')"
# The end-to-end tests start these binaries as real processes.
cargo build -p stripe-billing-worker -p stripe-emulator --bins
cargo test -p stripe-billing-tests "$@"
