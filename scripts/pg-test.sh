#!/usr/bin/env bash
# Tier 2: #[pg_test] functions, run by cargo-pgrx inside a temporary Postgres it manages.
# Postgres refuses to run as root, so as root the instance runs as the `postgres` OS user.
set -euo pipefail
cd "$(dirname "$0")/../extension"
if [ "$(id -u)" -eq 0 ]; then
    pgdata="$(mktemp -d /tmp/stripe_billing_pgtest.XXXXXX)"
    chown postgres: "$pgdata"
    trap 'rm -rf "$pgdata"' EXIT
    cargo pgrx test pg15 --runas postgres --pgdata "$pgdata/data"
else
    cargo pgrx test pg15
fi
