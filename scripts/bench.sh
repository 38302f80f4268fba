#!/usr/bin/env bash
# `make bench`: release builds, a throwaway cluster, and every benchmark printed as a table of
# rates and ratios against baselines measured in the same run. Arguments pick benchmarks
# (signature, ledger, webhook, worker, renewal, api, meter, alerts, history, entitlements, top_up); none runs all. The extension must already
# be installed in release mode (`make bench` does that).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# One -p per package: the benchmarks start the emulator and the worker as processes.
cargo build --release -p xtask -p stripe-emulator -p stripe-billing-worker --bins
dir="$(mktemp -d /tmp/stripe_billing_bench.XXXXXX)"
trap '"$root/scripts/pg.sh" stop "$dir" || true; rm -rf "$dir"' EXIT
# Commits do not wait for the disk, so the figures measure the work, not this VM's fsync.
STRIPE_BILLING_PG="$(PG_OPTS="-c synchronous_commit=off -c shared_buffers=256MB" "$root/scripts/pg.sh" start "$dir")"
export STRIPE_BILLING_PG
echo "# stripe_billing benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $("$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)/postgres" --version | awk '{print $3}')"
"${CARGO_TARGET_DIR:-$root/target}/release/xtask" bench "$@"
