# stripe_billing — the two commands a newcomer needs:
#   make demo   set up, build, and run the product end to end on a throwaway cluster
#   make test   set up, build, and run every test tier
SHELL := /bin/bash
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
export PG_CONFIG
# Installing into the system PostgreSQL needs root; a sudo user gets --sudo (not needed for a
# private copy from scripts/private-pg.sh that the user owns).
SUDO := $(if $(filter 0,$(shell id -u)),,$(if $(shell test -w "$$($(PG_CONFIG) --sharedir)/extension" && echo w),,sudo))
PGRX_INSTALL := cargo pgrx install --pg-config $(PG_CONFIG) -p stripe_billing $(if $(SUDO),--sudo)

.PHONY: fixtures-stripe setup install install-release install-debug install-history upgrade-script supabase-sql package test test-tiers test-unit test-pg test-integration test-integration-pg17 lint demo bench

setup:
	@scripts/setup.sh

# The release build: what a database you keep should run (signature checks are about 25 times
# faster than in a debug build).
install: setup
	$(PGRX_INSTALL) --release

install-release: install

# A debug build, quicker to compile: for the tests and the demo, which install into throwaway
# clusters or private copies.
install-debug: setup
	$(PGRX_INSTALL)

# Released install scripts, so the upgrade test can install an old version and upgrade it.
install-history: install-debug
	$(SUDO) install -m 644 sql/releases/*.sql "$$($(PG_CONFIG) --sharedir)/extension/"

# Regenerates the upgrade script of the version in development (sql/upgrades/ + code),
# and (the same binary) the pure-SQL edition's migrations, which come from the same sources.
upgrade-script: install-debug
	cargo run -q -p xtask -- upgrade-script
	$(SUDO) install -m 644 sql/generated/stripe_billing--*--*.sql "$$($(PG_CONFIG) --sharedir)/extension/"

# The pure-SQL edition for hosted Supabase: supabase/stripe_billing--<version>.sql (and the
# upgrade migration of the version in development), and docs/sql-reference.md from the same
# sources' COMMENT ONs. Needs no PostgreSQL.
supabase-sql:
	cargo run -q -p xtask -- supabase-sql
	cargo run -q -p xtask -- sql-reference

# Two tarballs for machines without a toolchain: the built extension (library, control file,
# install and upgrade scripts) laid out under the PostgreSQL directories, to unpack at /; and
# the worker (release binary, systemd unit, example environment file).
package: setup
	scripts/package.sh

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test-unit:
	cargo test -p stripe-billing-core -p stripe-billing-worker -p stripe-emulator -p shipped-sql

test-pg: setup
	scripts/pg-test.sh

# The whole integration suite twice: against the extension, then against the pure-SQL edition
# installed by a non-superuser in a Supabase-like cluster.
test-integration: install-history
	scripts/integration-test.sh
	STRIPE_BILLING_EDITION=pure scripts/integration-test.sh

# The pure-SQL edition's run again on PostgreSQL 17, which hosted Supabase runs (Debian 12 has only
# 15): its server comes from scripts/pg17.sh, without a build of the extension or a pg_dump of 17,
# so the few tests that need one skip that part (tests/README.md).
test-integration-pg17: setup
	pg_config="$$(scripts/pg17.sh)" && STRIPE_BILLING_EDITION=pure STRIPE_BILLING_SERVER_ONLY=1 \
		PG_CONFIG="$$pg_config" scripts/integration-test.sh

# Every tier, logged, then one closing line with the totals of all of them.
test: setup
	@mkdir -p target
	@set -o pipefail; $(MAKE) --no-print-directory test-tiers 2>&1 | tee target/test.log
	@scripts/test-summary.sh target/test.log

test-tiers: lint test-unit test-pg test-integration test-integration-pg17

# Regenerates the Stripe emulator's fixtures from their sources (the SDK types fetched with
# npm, the shared Stripe reference data); not part of `test`, the output is committed. See the
# README.md next to the scripts.
STRIPE_FIXTURES_DERIVE ?= emulator/fixtures/derive
fixtures-stripe:
	$(STRIPE_FIXTURES_DERIVE)/regenerate.sh
	git status --short -- $(STRIPE_FIXTURES_DERIVE)/..

demo: install-debug
	scripts/demo.sh

# `make bench` runs every benchmark; `make bench renewal api` only those named (the names are
# scripts/bench.sh's arguments, not targets).
BENCH_NAMES := $(filter-out bench,$(MAKECMDGOALS))
bench: install-release
	scripts/bench.sh $(BENCH_NAMES)
ifneq ($(filter bench,$(MAKECMDGOALS)),)
$(BENCH_NAMES):
	@:
endif
