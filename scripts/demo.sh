#!/usr/bin/env bash
# `make demo`: the whole product loop, offline, on a throwaway cluster.
#   PostgreSQL + stripe_billing  <-SQL->  stripe-billing-worker  <-HTTP->  local Stripe emulator
# A user buys a subscription and a token pack, spends tokens, renews, buys packs through a
# Payment Link, has half of that refunded, opens the portal and cancels; every step prints what
# the database says and is checked against what it must say. The script exits non-zero at the first wrong outcome.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# Every binary the demo runs, from a clean clone (one -p per package: a --bin filter would
# apply to every package named).
cargo build -q -p stripe-billing-worker --bins
cargo build -q -p stripe-emulator --bins
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

dir="$(mktemp -d /tmp/stripe_billing_demo.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    "$root/scripts/pg.sh" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() {
    echo "DEMO FAILED: $*" >&2
    for log in "$dir"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
    exit 1
}
dsn="$("$root/scripts/pg.sh" start "$dir")"
sql() { psql "$dsn" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# Runs SQL the way PostgREST does for a signed-in user.
USER_ID="8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f"
as_user() {
    sql -c "BEGIN; SET LOCAL ROLE authenticated;
            SET LOCAL request.jwt.claims = '{\"sub\":\"$USER_ID\",\"role\":\"authenticated\",\"email\":\"ada@example.com\"}';" \
        -c "$1" -c "COMMIT;"
}
table() { psql "$dsn" -X -q -v ON_ERROR_STOP=1 -P footer=off -c "$1"; }

steps="$dir/steps.tsv"
# Records a step's result and checks it: record NAME VALUE [EXPECTED (a bash pattern)].
record() {
    printf '%s\t%s\n' "$1" "$2" >>"$steps"
    if [ $# -ge 3 ] && [[ "$2" != $3 ]]; then
        fail "$1: got '$2', expected '$3'"
    fi
}

say "1. Install the extension and the catalog"
sql <<'SQL'
CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN BYPASSRLS;
CREATE EXTENSION stripe_billing;
SELECT billing.apply_grants();
INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES ('pro', 'price_pro', 'Pro', 'subscription', 1000);
INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES ('pack', 'price_pack', '500 tokens', 'token_pack', 500);
INSERT INTO billing.config (checkout_success_url, checkout_cancel_url, portal_return_url)
VALUES ('https://app.example.com/thanks', 'https://app.example.com/pricing', 'https://app.example.com/account');
INSERT INTO billing.webhook_secrets (secret, description) VALUES ('whsec_demo', 'local emulator');
SQL
table "SELECT id, stripe_price_id, kind, monthly_tokens, tokens FROM billing.plans ORDER BY id"
record "security report" "$(sql -c "SELECT count(*) FROM billing.security_report()") problems" "0 problems"

say "2. Webhook signatures in SQL"
now=$(date +%s)
body='{"id":"evt_demo","object":"event"}'
header=$(sql -c "SELECT billing.stripe_signature_header('$body', 'whsec_demo', $now)")
echo "header:           $header"
record "signature valid" "$(sql -c "SELECT billing.stripe_signature_is_valid('$body', '$header', 'whsec_demo')")" "t"
record "tampered body" "$(sql -c "SELECT billing.stripe_signature_is_valid('{\"id\":\"evt_demo\",\"object\":\"evil\"}', '$header', 'whsec_demo')")" "f"
stale=$(sql -c "SELECT billing.stripe_signature_header('$body', 'whsec_demo', $((now - 3600)))")
# An hour-old signature must be refused (replay protection): the step fails if it is accepted.
record "construct_event, stale" "$(sql -c "SELECT billing.construct_event('$body', '$stale', 'whsec_demo')" 2>&1 | head -1)" \
    "*Stripe-Signature timestamp is outside the tolerance zone*"
echo "construct_event, stale:    $(tail -n 1 "$steps" | cut -f 2)"

say "3. Start the Stripe emulator and the worker"
"$bin/stripe-emulator" --listen 127.0.0.1:0 --webhook-secret whsec_demo \
    --price price_pro:recurring:2000 --price price_pack:one_time:900 >"$dir/emulator.out" 2>"$dir/emulator.log" &
pids+=($!)
for _ in $(seq 200); do grep -q '^listening on ' "$dir/emulator.out" 2>/dev/null && break; sleep 0.05; done
stripe="$(sed -n 's/^listening on //p' "$dir/emulator.out")"
DATABASE_URL="$dsn" STRIPE_SECRET_KEY=sk_test_emulator STRIPE_API_BASE="$stripe" \
    "$bin/stripe-billing-worker" --listen 127.0.0.1:0 --poll-interval-ms 500 >"$dir/worker.out" 2>"$dir/worker.log" &
pids+=($!)
for _ in $(seq 200); do grep -q '^listening on ' "$dir/worker.out" 2>/dev/null && break; sleep 0.05; done
worker="$(sed -n 's/^listening on //p' "$dir/worker.out")"
[ -n "$stripe" ] && [ -n "$worker" ] || fail "the emulator or the worker did not start"
curl -sf -X POST "$stripe/_emulator/webhook" -H 'content-type: application/json' \
    -d "{\"url\":\"$worker/api/stripe/webhook\",\"secret\":\"whsec_demo\"}" >/dev/null
echo "emulator: $stripe   worker: $worker (webhooks at $worker/api/stripe/webhook)"

control() { curl -sf -X POST "$stripe/_emulator/$1" -H 'content-type: application/json' -d "${2:-{\}}"; }
# Event types and delivery statuses of a control call, e.g. "checkout.session.completed:200";
# every delivery must have been answered 200.
delivered() {
    local summary
    summary=$(sql -c "SELECT string_agg((e->>'type') || ':' || coalesce(e->'delivery'->>'status', '-'), ', ') FROM jsonb_array_elements(\$\$$1\$\$::jsonb->'events') e")
    echo "webhooks: $summary"
    if sql -c "SELECT bool_or(coalesce(e->'delivery'->>'status', '') <> '200') FROM jsonb_array_elements(\$\$$1\$\$::jsonb->'events') e" | grep -q t; then
        fail "a webhook was not accepted: $summary"
    fi
}
balance() { as_user "SELECT billing.token_balance()"; }
# Polls `sql` until it prints `want` (events and retrievals are asynchronous); prints it.
wait_for() {
    local got=""
    for _ in $(seq 100); do
        got=$(sql -c "$1")
        [ "$got" = "$2" ] && break
        sleep 0.1
    done
    echo "$got"
}

# Requests a Checkout Session as the user, waits for the worker's URL, then has the emulator
# complete it as paid, which sends the webhooks to the worker.
buy() {
    local what="$1" price="$2" request result url
    request=$(as_user "SELECT billing.request_checkout('$price')")
    result=$(as_user "SELECT billing.await_request('$request', 5000)")
    echo "await_request: $result"
    url=$(sql -c "SELECT \$\$$result\$\$::jsonb->>'url'")
    record "$what checkout" "$url" "$stripe/pay/cs_test_*"
    delivered "$(control "checkout/$(sql -c "SELECT \$\$$result\$\$::jsonb->>'session_id'")/complete" '{"payment_status":"paid"}')"
}

say "4. The user subscribes to Pro"
buy subscription price_pro
record "paid: balance" "$(balance)" "1000"

say "5. The user spends 120 tokens"
as_user "SELECT billing.spend_my_tokens(120, reason => 'image generation', idempotency_key => 'job-1')"
record "spent 120: balance" "$(balance)" "880"

say "6. A renewal: Stripe drafts the invoice at the period's end and charges it an hour later"
sub=$(sql -c "SELECT stripe_subscription_id FROM billing.subscriptions")
delivered "$(control "subscriptions/$sub/renew")"
record "renewed: balance" "$(balance)" "1880"

say "7. The user buys a token pack"
buy "token pack" pack
record "pack paid: balance" "$(balance)" "2380"

say "8. Two more packs through a Payment Link (no metadata of ours: the worker fetches the line items)"
customer=$(sql -c "SELECT stripe_customer_id FROM billing.customers")
link=$(control checkout/external "{\"price\":\"price_pack\",\"quantity\":2,\"customer\":\"$customer\",\"client_reference_id\":\"$USER_ID\"}")
delivered "$link"
record "link packs: balance" "$(wait_for "SELECT billing.token_balance('$USER_ID')" 3380)" "3380"

say "9. Half of the Payment Link purchase is refunded: half its tokens are taken back"
intent=$(sql -c "SELECT (e->>'payload')::jsonb->'data'->'object'->>'payment_intent' FROM jsonb_array_elements(\$\$$link\$\$::jsonb->'events') e WHERE e->>'type' = 'checkout.session.completed'")
charge=$(sql -c "SELECT \$\$$(curl -sf -H 'Authorization: Bearer sk_test_emulator' "$stripe/v1/payment_intents/$intent")\$\$::jsonb->>'latest_charge'")
delivered "$(control "charges/$charge/refund" '{"amount":900}')"
record "refunded: balance" "$(wait_for "SELECT billing.token_balance('$USER_ID')" 2880)" "2880"
record "refunded: revoked" "$(sql -c "SELECT sum(tokens) FROM billing.token_reversals WHERE kind = 'revoke'")" "500"

say "10. The user opens the customer portal"
request=$(as_user "SELECT billing.request_portal()")
result=$(as_user "SELECT billing.await_request('$request', 5000)")
echo "await_request: $result"
record "portal" "$(sql -c "SELECT \$\$$result\$\$::jsonb->>'url'")" "$stripe/p/session/*"

say "11. The user cancels"
delivered "$(control "subscriptions/$sub/cancel" '{"at_period_end":false}')"
record "cancelled: status" "$(as_user "SELECT status FROM billing.subscriptions")" "canceled"
record "cancelled: balance" "$(balance)" "2880"
record "events not applied" "$(sql -c "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL")" "0"

say "Summary"
summary="$(printf '%-24s %s\n' "step" "result"
    while IFS=$'\t' read -r step value; do printf '%-24s %s\n' "$step" "$value"; done <"$steps")"
echo "$summary"
# docs/local-testing.md shows this summary; it must stay what the demo prints.
"$root/scripts/docs-transcript.py" demo <<<"$summary" || fail "docs/local-testing.md shows another summary"
echo
table "SELECT source, tokens, spent, spendable, state, expires_at::date FROM billing.token_grant_balances ORDER BY grant_id"
table "SELECT type, count(*) AS events, bool_and(processed_at IS NOT NULL) AS applied FROM billing.stripe_events GROUP BY type ORDER BY min(created), type"
echo "demo: every step had the expected outcome"

say "Shutting down"
