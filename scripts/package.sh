#!/usr/bin/env bash
# `make package`: a release build of the extension as a tarball laid out under the PostgreSQL
# directories (the shared library, the control file, the install script and every upgrade
# script), for machines without a Rust toolchain. Unpack it at / (see docs/install.md). Then the
# worker's tarball.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
major="$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
version="$(sed -n "s/^default_version = '\(.*\)'/\1/p" extension/stripe_billing.control)"
if [ "$version" = "@CARGO_VERSION@" ]; then
    version="$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="stripe_billing"][0])')"
fi
out="$root/target/package"
stage="$out/stripe_billing-pg${major}"
rm -rf "$stage"
mkdir -p "$out"
cargo pgrx package -p stripe_billing --pg-config "$PG_CONFIG" --out-dir "$stage"
tarball="$out/stripe_billing-${version}-pg${major}-$(uname -m)-linux-gnu.tar.gz"
tar -C "$stage" -czf "$tarball" .
echo "contents:"
tar -tzf "$tarball" | grep -v '/$' | sed 's/^\.\//  \//'
echo "wrote $tarball"

# The worker: its release binary, the systemd unit and the example environment file, under one
# directory to unpack anywhere (docs/worker.md, "Deploying the worker", says where each goes).
cargo build --release -p stripe-billing-worker --bin stripe-billing-worker
wname="stripe-billing-worker-${version}-$(uname -m)-linux-gnu"
wstage="$out/$wname"
rm -rf "$wstage"
mkdir -p "$wstage"
install -m 755 "${CARGO_TARGET_DIR:-$root/target}/release/stripe-billing-worker" "$wstage/"
install -m 644 worker/deploy/stripe-billing-worker.service worker/deploy/worker.env.example "$wstage/"
wtarball="$out/$wname.tar.gz"
tar -C "$out" -czf "$wtarball" "$wname"
echo "contents:"
tar -tzf "$wtarball" | grep -v '/$' | sed 's/^/  /'
echo "wrote $wtarball"
