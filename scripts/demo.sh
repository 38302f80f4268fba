#!/usr/bin/env bash
# `make demo`: the whole product loop, offline, on a throwaway cluster.
#   PostgreSQL + stripe_billing  <-SQL->  stripe-billing-worker  <-HTTP->  local Stripe emulator
# A user buys a subscription and a token pack, spends tokens, renews, opens the portal and
# cancels; every step prints what the database really says. Everything is stopped at the end.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build -q -p stripe-billing-worker -p stripe-billing-tests --bin stripe-emulator
bin="$root/target/debug"

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

say "2. Webhook signatures in SQL"
now=$(date +%s)
body='{"id":"evt_demo","object":"event"}'
header=$(sql -c "SELECT billing.stripe_signature_header('$body', 'whsec_demo', $now)")
echo "header:           $header"
echo "valid:            $(sql -c "SELECT billing.stripe_signature_is_valid('$body', '$header', 'whsec_demo')")"
echo "tampered body:    $(sql -c "SELECT billing.stripe_signature_is_valid('{\"id\":\"evt_demo\",\"object\":\"evil\"}', '$header', 'whsec_demo')")"
stale=$(sql -c "SELECT billing.stripe_signature_header('$body', 'whsec_demo', $((now - 3600)))")
echo "construct_event, tampered: $(sql -c "SELECT billing.construct_event('{\"id\":1}', '$header', 'whsec_demo')" 2>&1 | head -1)"
echo "construct_event, stale:    $(sql -c "SELECT billing.construct_event('$body', '$stale', 'whsec_demo')" 2>&1 | head -1)"

say "3. Start the Stripe emulator and the worker"
"$bin/stripe-emulator" --listen 127.0.0.1:0 --webhook-secret whsec_demo \
    --price price_pro:recurring:2000 --price price_pack:one_time:900 >"$dir/emulator.out" 2>"$dir/emulator.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening on ' "$dir/emulator.out" 2>/dev/null && break; sleep 0.05; done
stripe="$(sed -n 's/^listening on //p' "$dir/emulator.out")"
DATABASE_URL="$dsn" STRIPE_SECRET_KEY=sk_test_emulator STRIPE_API_BASE="$stripe" \
    "$bin/stripe-billing-worker" --listen 127.0.0.1:0 --poll-interval-ms 500 >"$dir/worker.out" 2>"$dir/worker.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening on ' "$dir/worker.out" 2>/dev/null && break; sleep 0.05; done
worker="$(sed -n 's/^listening on //p' "$dir/worker.out")"
[ -n "$stripe" ] && [ -n "$worker" ] || { echo "emulator or worker did not start"; cat "$dir"/*.log; exit 1; }
curl -sf -X POST "$stripe/_emulator/webhook" -H 'content-type: application/json' \
    -d "{\"url\":\"$worker/api/stripe/webhook\",\"secret\":\"whsec_demo\"}" >/dev/null
echo "emulator: $stripe   worker: $worker (webhooks at $worker/api/stripe/webhook)"

control() { curl -sf -X POST "$stripe/_emulator/$1" -H 'content-type: application/json' -d "${2:-{\}}"; }
# Event types and delivery statuses of a control call, e.g. "checkout.session.completed:200".
delivered() { sql -c "SELECT string_agg((e->>'type') || ':' || coalesce(e->'delivery'->>'status', '-'), ', ') FROM jsonb_array_elements(\$\$$1\$\$::jsonb->'events') e"; }
steps="$dir/steps.tsv"
record() { printf '%s\t%s\n' "$1" "$2" >>"$steps"; }
balance() { as_user "SELECT billing.token_balance()"; }

# Requests a Checkout Session as the user, waits for the worker's URL, then has the emulator
# complete it as paid, which sends the webhooks to the worker.
buy() {
    local what="$1" price="$2" request result
    request=$(as_user "SELECT billing.request_checkout('$price')")
    result=$(as_user "SELECT billing.await_request('$request', 10000)")
    echo "await_request: $result"
    record "$what checkout" "$(sql -c "SELECT \$\$$result\$\$::jsonb->>'url'")"
    events=$(control "checkout/$(sql -c "SELECT \$\$$result\$\$::jsonb->>'session_id'")/complete" '{"payment_status":"paid"}')
    echo "webhooks: $(delivered "$events")"
}

say "4. The user subscribes to Pro"
buy subscription price_pro
record "paid: balance" "$(balance)"

say "5. The user spends 120 tokens"
echo "$(as_user "SELECT billing.spend_my_tokens(120, reason => 'image generation', idempotency_key => 'job-1')")"
record "spent 120: balance" "$(balance)"

say "6. A renewal invoice is paid"
sub=$(sql -c "SELECT stripe_subscription_id FROM billing.subscriptions")
events=$(control "subscriptions/$sub/renew")
echo "webhooks: $(delivered "$events")"
record "renewed: balance" "$(balance)"

say "7. The user buys a token pack"
buy "token pack" pack
record "pack paid: balance" "$(balance)"

say "8. The user opens the customer portal"
request=$(as_user "SELECT billing.request_portal()")
result=$(as_user "SELECT billing.await_request('$request', 10000)")
echo "await_request: $result"
record "portal" "$(sql -c "SELECT \$\$$result\$\$::jsonb->>'url'")"

say "9. The user cancels"
events=$(control "subscriptions/$sub/cancel" '{"at_period_end":false}')
echo "webhooks: $(delivered "$events")"
record "cancelled: status" "$(as_user "SELECT status FROM billing.subscriptions")"
record "cancelled: balance" "$(balance)"

say "Summary"
printf '%-24s %s\n' "step" "result"
while IFS=$'\t' read -r step value; do printf '%-24s %s\n' "$step" "$value"; done <"$steps"
echo
table "SELECT source, tokens, spent, spendable, state, expires_at::date FROM billing.token_grant_balances ORDER BY grant_id"
table "SELECT type, processed_at IS NOT NULL AS applied, error FROM billing.stripe_events ORDER BY received_at"

say "Shutting down"
