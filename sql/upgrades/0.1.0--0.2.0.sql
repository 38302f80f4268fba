-- The hand-written part of the 0.1.0 -> 0.2.0 upgrade: changes to state (tables, types, indexes,
-- triggers, policies) and to function signatures. The code files of sql/manifest.txt are
-- replayed where the @replay line stands, so everything they define is up to date after it.

-- Internal functions now start with an underscore. Renaming keeps the objects that depend on
-- them (policies, the live-grant index, the trigger) pointing at them; the replayed code below
-- then gives each its current body.
ALTER FUNCTION billing.no_project() RENAME TO _no_project;
COMMENT ON FUNCTION billing._no_project() IS 'Internal: stands for "no project" in the live-grant index, so one index serves user and project balances.';
ALTER FUNCTION billing.is_privileged() RENAME TO _is_privileged;
ALTER FUNCTION billing.require_user() RENAME TO _require_user;
ALTER FUNCTION billing.check_not_null(anyelement, text) RENAME TO _check_not_null;
ALTER FUNCTION billing.check_user_exists(uuid) RENAME TO _check_user_exists;
ALTER FUNCTION billing.check_project(uuid, uuid) RENAME TO _check_project;
ALTER FUNCTION billing.settings() RENAME TO _settings;
ALTER FUNCTION billing.check_url(text, text) RENAME TO _check_url;
ALTER FUNCTION billing.request_json(billing.stripe_requests) RENAME TO _request_json;
ALTER FUNCTION billing.notify_stripe_request() RENAME TO _notify_stripe_request;
ALTER FUNCTION billing.grant_json(billing.token_grants, boolean) RENAME TO _grant_json;
ALTER FUNCTION billing.live_balance(uuid, uuid) RENAME TO _live_balance;
ALTER FUNCTION billing.unix_time(jsonb) RENAME TO _unix_time;
ALTER FUNCTION billing.uuid_or_null(text) RENAME TO _uuid_or_null;
ALTER FUNCTION billing.event_version(jsonb, smallint) RENAME TO _event_version;
ALTER FUNCTION billing.is_newer(billing.event_version, billing.event_version) RENAME TO _is_newer;
ALTER FUNCTION billing.plan_for_price(text) RENAME TO _plan_for_price;
ALTER FUNCTION billing.resolve_user(text, text, text) RENAME TO _resolve_user;
ALTER FUNCTION billing.upsert_subscription_link(text, uuid, text) RENAME TO _upsert_subscription_link;
ALTER FUNCTION billing.apply_checkout_session(jsonb) RENAME TO _apply_checkout_session;
ALTER FUNCTION billing.apply_invoice(jsonb) RENAME TO _apply_invoice;
ALTER FUNCTION billing.normalize_event(text) RENAME TO _normalize_event;
ALTER FUNCTION billing.verify_webhook_signature(text, text, text[], integer) RENAME TO _verify_webhook_signature;

-- Replaced by other functions, or their signatures changed: the replayed code creates the new ones.
-- (Applying events no longer re-enters itself, so the chain of events being applied is gone.)
DROP FUNCTION billing.is_being_applied(text);
DROP FUNCTION billing.apply_subscription(jsonb);
DROP FUNCTION billing.invoice_grant(jsonb);
DROP FUNCTION billing.update_subscription_from_invoice(text, billing.event_version, timestamptz, timestamptz, text);
DROP FUNCTION billing.apply_in_subtransaction(jsonb);
DROP FUNCTION billing.apply_stored_event(text);
DROP FUNCTION billing.spend(uuid, bigint, uuid, text, text);
DROP FUNCTION billing.fail_request(uuid, text, text, integer, integer);
DROP FUNCTION billing.insert_grant(uuid, bigint, text, timestamptz, uuid, text, jsonb);
DROP FUNCTION billing.reprocess_events(integer);
DROP FUNCTION billing.claim_requests(text, integer, integer);

-- The policies name a renamed function; re-stating them gives their expressions the column
-- name a fresh install has.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'subscriptions', 'token_grants', 'token_spends', 'token_spend_allocations',
                             'stripe_requests', 'projects', 'config', 'webhook_secrets', 'stripe_events', 'plans'] LOOP
        EXECUTE format($p$ALTER POLICY privileged ON billing.%I
                          USING ((SELECT billing._is_privileged())) WITH CHECK ((SELECT billing._is_privileged()))$p$, t);
    END LOOP;
END
$$;

-- Settings for the token rules of 0.2.0.
ALTER TABLE billing.config
    ADD COLUMN renewal_grace_seconds integer CHECK (renewal_grace_seconds >= 0),
    ADD COLUMN free_invoice_tokens text CHECK (free_invoice_tokens IN ('plan', 'none')),
    ADD COLUMN collect_tax_ids boolean,
    ADD COLUMN save_payment_method boolean,
    ADD COLUMN redirect_origins text[] CHECK (cardinality(redirect_origins) = 0
        OR (' ' || array_to_string(redirect_origins, ' ')) ~ '^( https?://[a-z0-9.-]+(:[0-9]{1,5})?)+$'),
    ADD COLUMN max_pending_requests integer CHECK (max_pending_requests BETWEEN 1 AND 1000),
    ADD COLUMN request_retention_days integer CHECK (request_retention_days >= 1),
    ADD COLUMN event_retention_days integer CHECK (event_retention_days >= 31),
    ADD COLUMN debt_policy text CHECK (debt_policy IN ('collect', 'write_off'));
COMMENT ON TABLE billing.config IS 'Optional single-row settings: default Checkout/Portal URLs, webhook tolerance, request retry limit, token rules. Without a row (or with NULLs) the documented defaults apply. Privileged roles only.';
COMMENT ON COLUMN billing.config.renewal_grace_seconds IS 'How long a plan period''s tokens stay spendable after the period ends, so a renewal paid a little late (Stripe charges about an hour after the period starts) leaves no gap; NULL = 86400 (one day).';
COMMENT ON COLUMN billing.config.free_invoice_tokens IS 'What a paid invoice of amount 0 (a trial, a 100%-off coupon) grants: plan = the plan''s allowance as if paid, none = nothing; NULL = plan.';
COMMENT ON COLUMN billing.config.collect_tax_ids IS 'Whether Checkout collects business tax IDs (tax_id_collection, with customer_update[name] and [address] = auto as Stripe requires for an existing customer); NULL = true.';
COMMENT ON COLUMN billing.config.redirect_origins IS 'Origins (scheme://host[:port], lower case) that success, cancel and return URLs passed by callers may point to, besides the origins of the default URLs above; anything else is refused (BL013). NULL = only the defaults'' origins.';
COMMENT ON COLUMN billing.config.max_pending_requests IS 'How many checkout and portal requests one user may have queued or running at once (BL011 beyond); NULL = 5.';
COMMENT ON COLUMN billing.config.request_retention_days IS 'billing.prune() deletes finished requests older than this; NULL = 30.';
COMMENT ON COLUMN billing.config.event_retention_days IS 'billing.prune() deletes applied events older than this (at least 31: Stripe redelivers for 3 days and lists events for 30); NULL = 90.';
COMMENT ON COLUMN billing.config.debt_policy IS 'What happens to tokens a refund, dispute or credit note takes back after they were spent: collect = recorded as a debt that later grants pay off first, write_off = recorded and written off at once; NULL = collect.';
COMMENT ON COLUMN billing.config.save_payment_method IS 'Whether a token pack''s card is saved to the customer for the next purchase (payment_intent_data[setup_future_usage] = on_session); NULL = true.';

-- Every price a plan sold, so moving a plan to a new price keeps its subscribers.
CREATE TABLE billing.plan_prices (
    stripe_price_id text PRIMARY KEY CHECK (length(stripe_price_id) BETWEEN 1 AND 255),
    plan_id text NOT NULL REFERENCES billing.plans (id) ON UPDATE CASCADE ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plan_prices_plan_id_idx ON billing.plan_prices (plan_id);
COMMENT ON TABLE billing.plan_prices IS 'Every Stripe price that ever sold a plan, filled from billing.plans.stripe_price_id: when a plan moves to a new price, subscribers on the old one keep their plan. Privileged roles only.';
COMMENT ON COLUMN billing.plan_prices.stripe_price_id IS 'A Stripe price (price_...).';
COMMENT ON COLUMN billing.plan_prices.plan_id IS 'The plan it sells (or sold).';
COMMENT ON COLUMN billing.plan_prices.created_at IS 'When the price was first seen on the plan.';
SELECT pg_catalog.pg_extension_config_dump('billing.plan_prices', '');
INSERT INTO billing.plan_prices (stripe_price_id, plan_id, created_at) SELECT stripe_price_id, id, created_at FROM billing.plans;
CREATE TABLE billing.coupons (
    id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,100}$'),
    description text CHECK (length(description) <= 500),
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.coupons IS 'The Stripe coupons callers may pass to billing.request_checkout; any other coupon is refused (BL012), so internal coupons stay internal. Promotion codes (allow_promotion_codes) are Stripe''s to check. Privileged roles only.';
COMMENT ON COLUMN billing.coupons.id IS 'The Stripe coupon id.';
COMMENT ON COLUMN billing.coupons.description IS 'What it is for (your notes).';
COMMENT ON COLUMN billing.coupons.active IS 'Inactive coupons are refused like unknown ones.';
COMMENT ON COLUMN billing.coupons.created_at IS 'When the row was added.';
SELECT pg_catalog.pg_extension_config_dump('billing.coupons', '');
COMMENT ON COLUMN billing.plans.stripe_price_id IS 'The Stripe price (price_...) this row sells now. Changing it keeps the old price in billing.plan_prices, so existing subscribers keep the plan.';

-- A user's spend keys and the server's no longer share one namespace. 0.1.0 keys stay the
-- server's.
ALTER TABLE billing.token_spends
    ADD COLUMN key_scope text NOT NULL DEFAULT 'server' CHECK (key_scope IN ('server', 'user')),
    DROP CONSTRAINT token_spends_idempotency_key,
    ADD CONSTRAINT token_spends_idempotency_key UNIQUE (user_id, key_scope, idempotency_key);
COMMENT ON COLUMN billing.token_spends.idempotency_key IS 'Repeating a spend with the same key (per user and key_scope) returns the first result instead of spending again.';
COMMENT ON COLUMN billing.token_spends.key_scope IS 'Whose idempotency key it is: server (billing.spend_tokens) or user (billing.spend_my_tokens); a user can never claim a key your back end will use.';

-- Customers deleted in Stripe are remembered, so no late event links one again.
CREATE TABLE billing.deleted_customers (
    stripe_customer_id text PRIMARY KEY CHECK (stripe_customer_id ~ '^cus_[A-Za-z0-9]+$'),
    user_id uuid,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.deleted_customers IS 'Stripe customers deleted in Stripe (customer.deleted, or Stripe answering that it has no such customer): their link is gone and they are never linked again, whatever order events arrive in. Privileged roles only.';
COMMENT ON COLUMN billing.deleted_customers.stripe_customer_id IS 'The deleted Stripe customer (cus_...).';
COMMENT ON COLUMN billing.deleted_customers.user_id IS 'The user it was linked to, if any.';
COMMENT ON COLUMN billing.deleted_customers.deleted_at IS 'When the deletion was recorded.';
SELECT pg_catalog.pg_extension_config_dump('billing.deleted_customers', '');

-- Subscriptions: one version for the whole reported state, without event ids (they are random
-- and must never order anything); invoices no longer report a subscription's state.
ALTER TYPE billing.event_version DROP ATTRIBUTE event_id CASCADE;
COMMENT ON TYPE billing.event_version IS 'When a state report was made: (Stripe''s created time, rank: 1 = event, 2 = object retrieved from the API, which outranks events of the same second).';
ALTER TABLE billing.subscriptions
    ADD COLUMN trial_end timestamptz,
    ADD COLUMN pause_collection text CHECK (pause_collection IN ('keep_as_draft', 'mark_uncollectible', 'void')),
    ADD COLUMN version billing.event_version;
UPDATE billing.subscriptions
SET version = ROW((greatest(object_version, status_version, period_version)).created, 1)::billing.event_version
WHERE greatest(object_version, status_version, period_version) IS NOT NULL;
ALTER TABLE billing.subscriptions DROP COLUMN object_version, DROP COLUMN status_version, DROP COLUMN period_version;
COMMENT ON TABLE billing.subscriptions IS 'Stripe subscriptions as last reported by Stripe (subscription events, or the object retrieved from the API): an older report never overwrites a newer one, and canceled and incomplete_expired are final.';
COMMENT ON COLUMN billing.subscriptions.plan_id IS 'The catalog plan of the subscription''s price (its first item whose price is in billing.plan_prices); NULL while the price is not in the catalog.';
COMMENT ON COLUMN billing.subscriptions.stripe_price_id IS 'The Stripe price behind plan_id (else the first item''s price).';
COMMENT ON COLUMN billing.subscriptions.status IS 'Stripe status; NULL until Stripe reports one. Access: trialing, active (and past_due during retries). canceled and incomplete_expired never change again.';
COMMENT ON COLUMN billing.subscriptions.trial_end IS 'End of the trial, if the subscription has or had one.';
COMMENT ON COLUMN billing.subscriptions.pause_collection IS 'When payment collection is paused, how Stripe treats new invoices (keep_as_draft, mark_uncollectible or void); the status stays active. NULL when collecting.';
COMMENT ON COLUMN billing.subscriptions.version IS 'When (Stripe time, rank) the state in this row was reported; a report replaces it only when newer. NULL until a subscription report arrives.';

-- Events: the SQLSTATE of a failure, the object and the source of each event; waiting events are
-- found by customer or object.
ALTER TABLE billing.stripe_events
    ADD COLUMN error_code text CHECK (error_code ~ '^[0-9A-Z]{5}$'),
    ADD COLUMN object_id text,
    ADD COLUMN source text NOT NULL DEFAULT 'webhook' CHECK (source IN ('webhook', 'api', 'retrieved'));
-- 0.1.0 stored only messages; these are its two kinds of expected failure.
UPDATE billing.stripe_events
SET error_code = CASE WHEN error LIKE 'unknown price %' THEN 'BL006'
                      WHEN error LIKE 'cannot tell which user %' THEN 'BL007'
                      ELSE 'XX000' END
WHERE error IS NOT NULL;
UPDATE billing.stripe_events SET object_id = payload -> 'data' -> 'object' ->> 'id';
ALTER TABLE billing.stripe_events
    ADD CONSTRAINT stripe_events_error_has_code CHECK ((error IS NULL) = (error_code IS NULL)),
    ADD CONSTRAINT stripe_events_processed_or_failed CHECK (processed_at IS NULL OR error IS NULL);
DROP INDEX billing.stripe_events_customer_failed_idx;
-- No query asks for failed events by their error any more; reprocessing and health() ask for
-- unprocessed ones.
DROP INDEX billing.stripe_events_failed_idx;
CREATE INDEX stripe_events_unprocessed_idx ON billing.stripe_events (created, received_at)
    WHERE processed_at IS NULL;
CREATE INDEX stripe_events_waiting_customer_idx ON billing.stripe_events (stripe_customer_id)
    WHERE processed_at IS NULL;
CREATE INDEX stripe_events_waiting_object_idx ON billing.stripe_events (object_id)
    WHERE processed_at IS NULL;
-- The newest webhook of each mode, for billing.health().
CREATE INDEX stripe_events_webhook_received_idx ON billing.stripe_events (livemode, received_at)
    WHERE source = 'webhook';
COMMENT ON COLUMN billing.stripe_events.stripe_customer_id IS 'The customer the event concerns, if any: a waiting event is retried when another event of this customer is applied or the customer is linked.';
COMMENT ON COLUMN billing.stripe_events.error IS 'Why applying failed (e.g. unknown price); cleared once it applies (automatically, or by billing.reprocess_events()).';
COMMENT ON COLUMN billing.stripe_events.error_code IS 'The SQLSTATE of error (e.g. BL006 unknown price, BL007 user not known yet).';
COMMENT ON COLUMN billing.stripe_events.object_id IS 'The id of data.object (a session, subscription, invoice, ...).';
COMMENT ON COLUMN billing.stripe_events.source IS 'How it arrived: webhook (signed delivery), api (fetched from Stripe''s events API) or retrieved (an object the worker retrieved from Stripe, stored as an event).';

CREATE TABLE billing.checkout_line_items (
    session_id text NOT NULL CHECK (session_id ~ '^cs_[A-Za-z0-9_]+$'),
    position integer NOT NULL CHECK (position >= 0),
    price_id text,
    quantity bigint CHECK (quantity >= 0),
    amount_total bigint,
    currency text,
    retrieved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, position)
);
COMMENT ON TABLE billing.checkout_line_items IS 'What a Checkout Session sold, retrieved from Stripe (webhooks do not carry line items) for sessions our checkout did not create: Payment Links, the Dashboard, your own back end. Privileged roles only.';
COMMENT ON COLUMN billing.checkout_line_items.session_id IS 'The Checkout Session (cs_...).';
COMMENT ON COLUMN billing.checkout_line_items.position IS 'Order of the line within the session, from 0.';
COMMENT ON COLUMN billing.checkout_line_items.price_id IS 'The Stripe price of the line.';
COMMENT ON COLUMN billing.checkout_line_items.quantity IS 'How many were bought.';
COMMENT ON COLUMN billing.checkout_line_items.amount_total IS 'What the line cost after discounts and taxes, in the smallest currency unit.';
COMMENT ON COLUMN billing.checkout_line_items.currency IS 'Three-letter currency code.';
COMMENT ON COLUMN billing.checkout_line_items.retrieved_at IS 'When the worker retrieved it from Stripe.';
SELECT pg_catalog.pg_extension_config_dump('billing.checkout_line_items', '');

-- Requests: retrievals for the event effects, and the database keeps status, claim and outcome
-- in agreement (0.1.0 did so by convention, so existing rows comply).
ALTER TABLE billing.stripe_requests DROP CONSTRAINT stripe_requests_kind_check;
ALTER TABLE billing.stripe_requests
    ADD CONSTRAINT stripe_requests_kind_check CHECK (kind IN ('checkout', 'portal', 'refresh', 'line_items')),
    ADD CONSTRAINT stripe_requests_claim_matches_status CHECK (CASE WHEN status = 'running'
        THEN locked_by IS NOT NULL AND locked_until IS NOT NULL AND claimed_at IS NOT NULL
        ELSE locked_by IS NULL AND locked_until IS NULL END),
    ADD CONSTRAINT stripe_requests_finished_matches_status CHECK ((status IN ('succeeded', 'failed')) = (finished_at IS NOT NULL)),
    ADD CONSTRAINT stripe_requests_outcome_matches_status CHECK ((status <> 'succeeded' OR result IS NOT NULL)
                                                            AND (status <> 'failed' OR error IS NOT NULL));
CREATE UNIQUE INDEX stripe_requests_one_retrieval_idx ON billing.stripe_requests (kind, (params ->> 'object_id'))
    WHERE kind IN ('refresh', 'line_items') AND status IN ('pending', 'running');
COMMENT ON TABLE billing.stripe_requests IS 'Outbound Stripe calls for the worker: pending -> running -> succeeded | failed. Inserting a row NOTIFYs channel billing_stripe_requests with the row id.';
COMMENT ON COLUMN billing.stripe_requests.kind IS 'checkout or portal (a user''s session), refresh (retrieve a subscription whose same-second events disagree) or line_items (retrieve what a Checkout Session sold).';
COMMENT ON COLUMN billing.stripe_requests.params IS 'Validated parameters (price, mode, URLs, project, coupon, email; object_id for retrievals).';

-- Notifications replace the billing_payment_failed channel, whose payload was a user id; they,
-- the money tables and the catch-up state are new, so their state files are included whole.
-- @include sql/notifications/schema.sql

-- @include sql/payments/schema.sql

-- @include sql/sync/schema.sql

-- Purchases of 0.1.0 grants, from what their metadata kept (the payments that paid them are
-- learned when Stripe reports them again: a charge before basil names its invoice).
INSERT INTO billing.purchases (id, user_id, project_id, amount_paid, currency, created_at)
SELECT DISTINCT ON (split_part(g.grant_key, ':', 1)) split_part(g.grant_key, ':', 1), g.user_id, g.project_id,
       greatest(coalesce((g.metadata ->> 'amount_paid')::bigint, 0), 0), lower(g.metadata ->> 'currency'), g.created_at
FROM billing.token_grants g
WHERE g.grant_key ~ '^(cs|in)_[A-Za-z0-9_]+(:upgrade)?$'
  AND g.source IN ('payg_purchase', 'subscription_start', 'plan', 'plan_upgrade')
ORDER BY split_part(g.grant_key, ':', 1), g.id;
UPDATE billing.token_grants g SET purchase_id = split_part(g.grant_key, ':', 1)
WHERE g.grant_key ~ '^(cs|in)_[A-Za-z0-9_]+(:upgrade)?$'
  AND g.source IN ('payg_purchase', 'subscription_start', 'plan', 'plan_upgrade');

-- A caller's Idempotency-Key (the HTTP API's header, or PostgREST's request.headers) names one request.
ALTER TABLE billing.stripe_requests ADD COLUMN idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255);
CREATE UNIQUE INDEX stripe_requests_idempotency_idx ON billing.stripe_requests (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
COMMENT ON COLUMN billing.stripe_requests.idempotency_key IS 'The caller''s Idempotency-Key header (request.headers), if any: the same key from the same user returns this request again instead of queuing another.';

-- @replay

-- Triggers and policies that need the functions above.
CREATE TRIGGER plans_record_price AFTER INSERT OR UPDATE OF stripe_price_id ON billing.plans
    FOR EACH ROW EXECUTE FUNCTION billing._record_plan_price();
CREATE TRIGGER token_grants_start_full BEFORE INSERT ON billing.token_grants
    FOR EACH ROW EXECUTE FUNCTION billing._starts_full();
CREATE TRIGGER token_grants_books BEFORE UPDATE OF remaining, tokens, user_id, project_id, purchase_id ON billing.token_grants
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION billing._refuse_ledger_edit();
CREATE TRIGGER token_spends_books BEFORE UPDATE OF amount, user_id, project_id, kind ON billing.token_spends
    FOR EACH ROW EXECUTE FUNCTION billing._refuse_ledger_edit();
CREATE TRIGGER token_spend_allocations_take AFTER INSERT ON billing.token_spend_allocations
    FOR EACH ROW EXECUTE FUNCTION billing._take_from_grant();
CREATE TRIGGER token_spend_allocations_books BEFORE UPDATE OR DELETE ON billing.token_spend_allocations
    FOR EACH ROW EXECUTE FUNCTION billing._refuse_ledger_edit();
SELECT billing._protect_table(t::regclass, own_rows => true)
FROM unnest(ARRAY['billing.notifications', 'billing.purchases', 'billing.token_reversals', 'billing.token_debts',
                  'billing.token_debt_settlements']) AS t;
-- @include sql/payments/triggers.sql

SELECT billing._protect_table(t::regclass, own_rows => false)
FROM unnest(ARRAY['billing.plan_prices', 'billing.deleted_customers', 'billing.checkout_line_items', 'billing.coupons',
                  'billing.purchase_payments', 'billing.stripe_charges', 'billing.stripe_refunds', 'billing.stripe_disputes',
                  'billing.stripe_credit_notes', 'billing.event_sync']) AS t;
CREATE EVENT TRIGGER billing_new_functions_private ON ddl_command_end
    WHEN TAG IN ('CREATE FUNCTION', 'CREATE PROCEDURE')
    EXECUTE FUNCTION billing._new_functions_private();
