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

-- Notifications replace the billing_payment_failed channel, whose payload was a user id.
CREATE TABLE billing.notifications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,39}$'),
    payload jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    event_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_once_per_event UNIQUE (event_id, kind)
);
CREATE INDEX notifications_user_idx ON billing.notifications (user_id, created_at);
COMMENT ON TABLE billing.notifications IS 'Things the app should tell a user, written by webhook effects; each insert NOTIFYs channel billing_notifications with the row id only. Users read their own rows.';
COMMENT ON COLUMN billing.notifications.id IS 'Notification id; the payload of the billing_notifications NOTIFY.';
COMMENT ON COLUMN billing.notifications.user_id IS 'The user to tell.';
COMMENT ON COLUMN billing.notifications.kind IS 'payment_failed, payment_action_required, ...';
COMMENT ON COLUMN billing.notifications.payload IS 'Details for the app, e.g. the invoice and its hosted_invoice_url.';
COMMENT ON COLUMN billing.notifications.event_id IS 'The Stripe event that caused it (one notification of a kind per event).';
COMMENT ON COLUMN billing.notifications.created_at IS 'When it was written.';
SELECT pg_catalog.pg_extension_config_dump('billing.notifications', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.notifications', 'id')::regclass, '');

-- Refunds, disputes and credit notes: purchases, their payments, what Stripe reports about
-- them, and the reversals and debts that follow (the same definitions as a fresh install).
-- The money behind tokens: each purchase that funded grants, the Stripe payments that paid it,
-- what Stripe reports about those payments since (refunds, disputes, credit notes), and the
-- ledger entries that follow the money back: reversals of grants, and the debts left when
-- the tokens to take back were already spent (DESIGN.md, "Refunds and disputes").

CREATE TABLE billing.purchases (
    id text PRIMARY KEY CHECK (id ~ '^(cs|in)_[A-Za-z0-9_]+$'),
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    stripe_customer_id text,
    amount_paid bigint NOT NULL CHECK (amount_paid >= 0),
    currency text CHECK (currency ~ '^[a-z]{3}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purchases_user_idx ON billing.purchases (user_id, created_at);
COMMENT ON TABLE billing.purchases IS 'What funded paid grants: a paid Checkout Session (a token pack) or a paid subscription invoice. Refunds, disputes and credit notes of its payments take back the same share of its grants. Users read their own rows.';
COMMENT ON COLUMN billing.purchases.id IS 'The Checkout Session (cs_...) or invoice (in_...) id.';
COMMENT ON COLUMN billing.purchases.user_id IS 'The buyer.';
COMMENT ON COLUMN billing.purchases.project_id IS 'The project its tokens went to, or NULL.';
COMMENT ON COLUMN billing.purchases.stripe_customer_id IS 'The Stripe customer who paid.';
COMMENT ON COLUMN billing.purchases.amount_paid IS 'What was paid, in the currency''s smallest unit (the session''s amount_total, the invoice''s amount_paid); reversals are shares of it.';
COMMENT ON COLUMN billing.purchases.currency IS 'Three-letter ISO code, lower case.';
COMMENT ON COLUMN billing.purchases.created_at IS 'When the purchase was recorded.';

CREATE TABLE billing.purchase_payments (
    payment text PRIMARY KEY CHECK (payment ~ '^(pi|ch|py)_[A-Za-z0-9_]+$'),
    purchase_id text NOT NULL CHECK (purchase_id ~ '^(cs|in)_[A-Za-z0-9_]+$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purchase_payments_purchase_idx ON billing.purchase_payments (purchase_id);
COMMENT ON TABLE billing.purchase_payments IS 'Which PaymentIntent or charge paid which purchase, learned from sessions, invoices (before basil), charges, invoice payments (basil and later) and retrieved invoices. A payment may be known before its purchase is. Privileged roles only.';
COMMENT ON COLUMN billing.purchase_payments.payment IS 'PaymentIntent (pi_...) or charge (ch_..., py_...) id.';
COMMENT ON COLUMN billing.purchase_payments.purchase_id IS 'The Checkout Session or invoice it paid (not a foreign key: the purchase may arrive later).';
COMMENT ON COLUMN billing.purchase_payments.created_at IS 'When the link was learned.';

-- What Stripe reported about payments, one row per object. A report of a further status (a final
-- one above all) replaces the row whatever the order of arrival; among reports of equal rank the
-- newest wins (DESIGN.md, "Ordering").
CREATE TABLE billing.stripe_charges (
    id text PRIMARY KEY CHECK (id ~ '^(ch|py)_[A-Za-z0-9_]+$'),
    payment_intent text,
    invoice text,
    amount bigint CHECK (amount >= 0),
    amount_refunded bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    currency text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_charges_payment_intent_idx ON billing.stripe_charges (payment_intent);
COMMENT ON TABLE billing.stripe_charges IS 'Charges as charge.* events reported them; amount_refunded keeps the largest total reported (refunds only add up). Privileged roles only.';
COMMENT ON COLUMN billing.stripe_charges.id IS 'Charge id.';
COMMENT ON COLUMN billing.stripe_charges.payment_intent IS 'Its PaymentIntent.';
COMMENT ON COLUMN billing.stripe_charges.invoice IS 'Its invoice (API versions before basil report it).';
COMMENT ON COLUMN billing.stripe_charges.amount IS 'Amount charged.';
COMMENT ON COLUMN billing.stripe_charges.amount_refunded IS 'Total refunded so far.';
COMMENT ON COLUMN billing.stripe_charges.currency IS 'Currency.';
COMMENT ON COLUMN billing.stripe_charges.updated_at IS 'When a report last changed the row.';

CREATE TABLE billing.stripe_refunds (
    id text PRIMARY KEY CHECK (id ~ '^(re|pyr)_[A-Za-z0-9_]+$'),
    charge text,
    payment_intent text,
    amount bigint NOT NULL CHECK (amount >= 0),
    status text NOT NULL,
    status_rank smallint NOT NULL,
    reported_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_refunds_charge_idx ON billing.stripe_refunds (charge);
CREATE INDEX stripe_refunds_payment_intent_idx ON billing.stripe_refunds (payment_intent);
COMMENT ON TABLE billing.stripe_refunds IS 'Refunds as refund.* and charge.refund.updated events reported them. Failed and canceled refunds give nothing back. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_refunds.id IS 'Refund id.';
COMMENT ON COLUMN billing.stripe_refunds.charge IS 'The refunded charge.';
COMMENT ON COLUMN billing.stripe_refunds.payment_intent IS 'The refunded PaymentIntent.';
COMMENT ON COLUMN billing.stripe_refunds.amount IS 'Amount refunded.';
COMMENT ON COLUMN billing.stripe_refunds.status IS 'pending, requires_action, succeeded, failed or canceled.';
COMMENT ON COLUMN billing.stripe_refunds.status_rank IS 'How far along the status is; a report of a further status wins whenever it arrives, among equals the newest.';
COMMENT ON COLUMN billing.stripe_refunds.reported_at IS 'Stripe''s time of the report that set the row.';
COMMENT ON COLUMN billing.stripe_refunds.updated_at IS 'When a report last changed the row.';

CREATE TABLE billing.stripe_disputes (
    id text PRIMARY KEY CHECK (id ~ '^(du|dp)_[A-Za-z0-9_]+$'),
    charge text,
    payment_intent text,
    amount bigint NOT NULL CHECK (amount >= 0),
    status text NOT NULL,
    status_rank smallint NOT NULL,
    reported_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_disputes_charge_idx ON billing.stripe_disputes (charge);
COMMENT ON TABLE billing.stripe_disputes IS 'Disputes as charge.dispute.* events reported them. The disputed amount is taken back while the funds are withdrawn (needs_response, under_review) and for good when lost; won gives it back; inquiries (warning_*) take nothing. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_disputes.id IS 'Dispute id.';
COMMENT ON COLUMN billing.stripe_disputes.charge IS 'The disputed charge.';
COMMENT ON COLUMN billing.stripe_disputes.payment_intent IS 'The disputed PaymentIntent.';
COMMENT ON COLUMN billing.stripe_disputes.amount IS 'Disputed amount.';
COMMENT ON COLUMN billing.stripe_disputes.status IS 'Stripe''s dispute status.';
COMMENT ON COLUMN billing.stripe_disputes.status_rank IS 'How far along the status is; a report of a further status wins whenever it arrives, among equals the newest.';
COMMENT ON COLUMN billing.stripe_disputes.reported_at IS 'Stripe''s time of the report that set the row.';
COMMENT ON COLUMN billing.stripe_disputes.updated_at IS 'When a report last changed the row.';

CREATE TABLE billing.stripe_credit_notes (
    id text PRIMARY KEY CHECK (id ~ '^cn_[A-Za-z0-9_]+$'),
    invoice text NOT NULL,
    note_type text,
    status text NOT NULL,
    total bigint NOT NULL,
    out_of_band_amount bigint,
    refunds jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(refunds) = 'array'),
    status_rank smallint NOT NULL,
    reported_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_credit_notes_invoice_idx ON billing.stripe_credit_notes (invoice);
COMMENT ON TABLE billing.stripe_credit_notes IS 'Credit notes as credit_note.* events reported them. An issued post-payment credit note gives back its total; the part it refunded is already counted with the charge''s refunds. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_credit_notes.id IS 'Credit note id.';
COMMENT ON COLUMN billing.stripe_credit_notes.invoice IS 'The credited invoice.';
COMMENT ON COLUMN billing.stripe_credit_notes.note_type IS 'pre_payment (lowers what is due; nothing was paid for it) or post_payment.';
COMMENT ON COLUMN billing.stripe_credit_notes.status IS 'issued or void.';
COMMENT ON COLUMN billing.stripe_credit_notes.total IS 'Amount credited.';
COMMENT ON COLUMN billing.stripe_credit_notes.out_of_band_amount IS 'The part credited outside Stripe.';
COMMENT ON COLUMN billing.stripe_credit_notes.refunds IS 'The refunds it made: [{refund, amount_refunded}] (amount_refunded is NULL before basil).';
COMMENT ON COLUMN billing.stripe_credit_notes.status_rank IS 'How far along the status is; a report of a further status wins whenever it arrives, among equals the newest.';
COMMENT ON COLUMN billing.stripe_credit_notes.reported_at IS 'Stripe''s time of the report that set the row.';
COMMENT ON COLUMN billing.stripe_credit_notes.updated_at IS 'When a report last changed the row.';

-- Grants know what funded them.
ALTER TABLE billing.token_grants ADD COLUMN purchase_id text REFERENCES billing.purchases (id);
CREATE INDEX token_grants_purchase_idx ON billing.token_grants (purchase_id) WHERE purchase_id IS NOT NULL;
COMMENT ON COLUMN billing.token_grants.purchase_id IS 'The purchase that paid for the grant (NULL for manual grants); its refunds, disputes and credit notes take back a share of the grant.';

-- Spends are what users do, or what the ledger does on the money's account.
ALTER TABLE billing.token_spends ADD COLUMN kind text NOT NULL DEFAULT 'spend'
    CHECK (kind IN ('spend', 'revocation', 'debt_repayment'));
COMMENT ON COLUMN billing.token_spends.kind IS 'spend (billing.spend_tokens, spend_my_tokens), revocation (tokens taken back for a refund, dispute or credit note) or debt_repayment (a new grant paying off a debt).';

CREATE TABLE billing.token_reversals (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    purchase_id text NOT NULL REFERENCES billing.purchases (id),
    grant_id bigint NOT NULL REFERENCES billing.token_grants (id),
    kind text NOT NULL CHECK (kind IN ('revoke', 'restore')),
    tokens bigint NOT NULL CHECK (tokens > 0),
    taken bigint NOT NULL DEFAULT 0 CHECK (taken >= 0),
    debt bigint NOT NULL DEFAULT 0 CHECK (debt >= 0),
    debt_forgiven bigint NOT NULL DEFAULT 0 CHECK (debt_forgiven >= 0),
    spend_id bigint REFERENCES billing.token_spends (id),
    restored_grant_id bigint REFERENCES billing.token_grants (id),
    reason text NOT NULL CHECK (length(reason) <= 500),
    event_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- A revocation is what it took plus what it could not (the debt); a restoration is debt
    -- forgiven plus tokens given back by a new grant.
    CONSTRAINT token_reversals_adds_up CHECK (CASE kind
        WHEN 'revoke' THEN taken + debt = tokens AND debt_forgiven = 0 AND restored_grant_id IS NULL
                           AND (spend_id IS NOT NULL) = (taken > 0)
        ELSE taken = 0 AND debt = 0 AND spend_id IS NULL
             AND (restored_grant_id IS NOT NULL) = (tokens > debt_forgiven) AND debt_forgiven <= tokens END)
);
CREATE INDEX token_reversals_grant_idx ON billing.token_reversals (grant_id);
CREATE INDEX token_reversals_user_idx ON billing.token_reversals (user_id, created_at);
COMMENT ON TABLE billing.token_reversals IS 'Tokens taken back from a grant because its purchase was refunded, disputed or credited (revoke), and given back when a dispute is won or a credit note voided (restore). A grant''s net revoked tokens are always its purchase''s reversed share of it. Append-only; users read their own rows.';
COMMENT ON COLUMN billing.token_reversals.id IS 'Surrogate key.';
COMMENT ON COLUMN billing.token_reversals.user_id IS 'Owner of the grant.';
COMMENT ON COLUMN billing.token_reversals.project_id IS 'The grant''s project, or NULL.';
COMMENT ON COLUMN billing.token_reversals.purchase_id IS 'The purchase whose money moved.';
COMMENT ON COLUMN billing.token_reversals.grant_id IS 'The grant the tokens came from.';
COMMENT ON COLUMN billing.token_reversals.kind IS 'revoke or restore.';
COMMENT ON COLUMN billing.token_reversals.tokens IS 'Tokens revoked or restored.';
COMMENT ON COLUMN billing.token_reversals.taken IS 'revoke: tokens taken from the balance (the grant first, then the soonest-expiring others).';
COMMENT ON COLUMN billing.token_reversals.debt IS 'revoke: tokens already spent, recorded as a debt in billing.token_debts.';
COMMENT ON COLUMN billing.token_reversals.debt_forgiven IS 'restore: outstanding debt of this grant cancelled instead of giving tokens back.';
COMMENT ON COLUMN billing.token_reversals.spend_id IS 'revoke: the spend (kind revocation) that took the tokens.';
COMMENT ON COLUMN billing.token_reversals.restored_grant_id IS 'restore: the grant (source restored) that gave tokens back.';
COMMENT ON COLUMN billing.token_reversals.reason IS 'What moved the money, e.g. "refund re_... of charge ch_..." or "dispute du_... won".';
COMMENT ON COLUMN billing.token_reversals.event_id IS 'The Stripe event that caused it.';
COMMENT ON COLUMN billing.token_reversals.created_at IS 'When it happened.';

CREATE TABLE billing.token_debts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    reversal_id bigint NOT NULL UNIQUE REFERENCES billing.token_reversals (id),
    tokens bigint NOT NULL CHECK (tokens > 0),
    remaining bigint NOT NULL CHECK (remaining >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_debts_remaining_le_tokens CHECK (remaining <= tokens)
);
CREATE INDEX token_debts_open_idx ON billing.token_debts
    (user_id, coalesce(project_id, billing._no_project()), id) WHERE remaining > 0;
COMMENT ON TABLE billing.token_debts IS 'Tokens a revocation could not take because they were already spent. Later grants to the same user and project pay them off first (billing.config.debt_policy = collect, the default), or they are written off at once (write_off). remaining changes only through billing.token_debt_settlements. Users read their own rows.';
COMMENT ON COLUMN billing.token_debts.id IS 'Surrogate key; also the order in which debts are paid off.';
COMMENT ON COLUMN billing.token_debts.user_id IS 'Who owes the tokens.';
COMMENT ON COLUMN billing.token_debts.project_id IS 'The project balance that owes them, or NULL.';
COMMENT ON COLUMN billing.token_debts.reversal_id IS 'The revocation that left it.';
COMMENT ON COLUMN billing.token_debts.tokens IS 'Tokens owed at first.';
COMMENT ON COLUMN billing.token_debts.remaining IS 'Tokens still owed.';
COMMENT ON COLUMN billing.token_debts.created_at IS 'When it arose.';

CREATE TABLE billing.token_debt_settlements (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    debt_id bigint NOT NULL REFERENCES billing.token_debts (id),
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('repaid', 'forgiven', 'written_off')),
    tokens bigint NOT NULL CHECK (tokens > 0),
    spend_id bigint REFERENCES billing.token_spends (id),
    reversal_id bigint REFERENCES billing.token_reversals (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_debt_settlements_source CHECK (CASE kind
        WHEN 'repaid' THEN spend_id IS NOT NULL AND reversal_id IS NULL
        WHEN 'forgiven' THEN reversal_id IS NOT NULL AND spend_id IS NULL
        ELSE spend_id IS NULL AND reversal_id IS NULL END)
);
CREATE INDEX token_debt_settlements_debt_idx ON billing.token_debt_settlements (debt_id);
COMMENT ON TABLE billing.token_debt_settlements IS 'How debts were settled: repaid from a later grant (a spend of kind debt_repayment), forgiven when the money came back (a restore), or written off by policy. Each takes from its debt''s remaining. Append-only; users read their own rows.';
COMMENT ON COLUMN billing.token_debt_settlements.id IS 'Surrogate key.';
COMMENT ON COLUMN billing.token_debt_settlements.debt_id IS 'The debt.';
COMMENT ON COLUMN billing.token_debt_settlements.user_id IS 'Who owed it.';
COMMENT ON COLUMN billing.token_debt_settlements.kind IS 'repaid, forgiven or written_off.';
COMMENT ON COLUMN billing.token_debt_settlements.tokens IS 'Tokens of the debt settled.';
COMMENT ON COLUMN billing.token_debt_settlements.spend_id IS 'repaid: the spend that paid.';
COMMENT ON COLUMN billing.token_debt_settlements.reversal_id IS 'forgiven: the restoration that forgave it.';
COMMENT ON COLUMN billing.token_debt_settlements.created_at IS 'When.';

-- One call per statement: each call rewrites the extension's catalog row.
SELECT pg_catalog.pg_extension_config_dump('billing.purchases', '');
SELECT pg_catalog.pg_extension_config_dump('billing.purchase_payments', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_charges', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_refunds', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_disputes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_credit_notes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_reversals', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_debts', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_debt_settlements', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_reversals', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_debts', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_debt_settlements', 'id')::regclass, '');

-- Catching up with Stripe's events API.
CREATE TABLE billing.event_sync (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    checked_until timestamptz,
    last_run_at timestamptz,
    last_run_listed integer CHECK (last_run_listed >= 0),
    last_run_new integer CHECK (last_run_new >= 0)
);
COMMENT ON TABLE billing.event_sync IS 'One row: how far the worker has read Stripe''s events API (GET /v1/events). The next catch-up starts there, less a margin. Privileged roles only.';
COMMENT ON COLUMN billing.event_sync.id IS 'Always true: keeps the table to one row.';
COMMENT ON COLUMN billing.event_sync.checked_until IS 'Every event Stripe created before this instant has been listed and ingested.';
COMMENT ON COLUMN billing.event_sync.last_run_at IS 'When the last catch-up finished.';
COMMENT ON COLUMN billing.event_sync.last_run_listed IS 'Events the last catch-up listed.';
COMMENT ON COLUMN billing.event_sync.last_run_new IS 'Of those, events the database did not have yet (missed deliveries).';

SELECT pg_catalog.pg_extension_config_dump('billing.event_sync', '');

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
    FOR EACH ROW EXECUTE FUNCTION billing._grant_starts_full();
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
-- The books of reversals and debts are kept like the grants' (sql/ledger/triggers.sql): a debt
-- starts at its full amount, only a settlement takes from it, and nothing is edited afterwards.

CREATE TRIGGER token_debts_start_full BEFORE INSERT ON billing.token_debts
    FOR EACH ROW EXECUTE FUNCTION billing._debt_starts_full();
CREATE TRIGGER token_debts_books BEFORE UPDATE OF remaining, tokens, user_id, project_id, reversal_id ON billing.token_debts
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION billing._refuse_ledger_edit();
CREATE TRIGGER token_debt_settlements_take AFTER INSERT ON billing.token_debt_settlements
    FOR EACH ROW EXECUTE FUNCTION billing._settle_debt();
CREATE TRIGGER token_debt_settlements_books BEFORE UPDATE OR DELETE ON billing.token_debt_settlements
    FOR EACH ROW EXECUTE FUNCTION billing._refuse_ledger_edit();
CREATE TRIGGER token_reversals_books BEFORE UPDATE OR DELETE ON billing.token_reversals
    FOR EACH ROW EXECUTE FUNCTION billing._refuse_ledger_edit();

SELECT billing._protect_table(t::regclass, own_rows => false)
FROM unnest(ARRAY['billing.plan_prices', 'billing.deleted_customers', 'billing.checkout_line_items', 'billing.coupons',
                  'billing.purchase_payments', 'billing.stripe_charges', 'billing.stripe_refunds', 'billing.stripe_disputes',
                  'billing.stripe_credit_notes', 'billing.event_sync']) AS t;
CREATE EVENT TRIGGER billing_new_functions_private ON ddl_command_end
    WHEN TAG IN ('CREATE FUNCTION', 'CREATE PROCEDURE')
    EXECUTE FUNCTION billing._new_functions_private();
