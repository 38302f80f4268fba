-- stripe_billing: tables. Installed by CREATE EXTENSION into schema billing.
-- Every table and column carries COMMENT ON; user-data tables are registered with
-- pg_extension_config_dump so pg_dump keeps their rows.

CREATE TABLE billing.config (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    checkout_success_url text CHECK (checkout_success_url ~ '^https?://'),
    checkout_cancel_url text CHECK (checkout_cancel_url ~ '^https?://'),
    portal_return_url text CHECK (portal_return_url ~ '^https?://'),
    webhook_tolerance_seconds integer CHECK (webhook_tolerance_seconds >= 0),
    request_max_attempts integer CHECK (request_max_attempts BETWEEN 1 AND 100)
);
COMMENT ON TABLE billing.config IS 'Optional single-row settings: default Checkout/Portal URLs, webhook tolerance, request retry limit. Without a row (or with NULLs) the documented defaults apply. Privileged roles only.';
COMMENT ON COLUMN billing.config.id IS 'Always true: keeps the table to one row.';
COMMENT ON COLUMN billing.config.checkout_success_url IS 'Default success_url for billing.request_checkout when the caller passes none.';
COMMENT ON COLUMN billing.config.checkout_cancel_url IS 'Default cancel_url for billing.request_checkout when the caller passes none.';
COMMENT ON COLUMN billing.config.portal_return_url IS 'Default return_url for billing.request_portal when the caller passes none.';
COMMENT ON COLUMN billing.config.webhook_tolerance_seconds IS 'Maximum age (either direction) of a webhook signature timestamp; 0 disables the check; NULL = 300.';
COMMENT ON COLUMN billing.config.request_max_attempts IS 'How many times the worker tries an outbound Stripe request before failing it; NULL = 5.';

-- Orders state changes: Stripe's event time, then a rank (subscription objects outrank invoices
-- reporting the same second), then the event id as a deterministic tie-breaker.
CREATE TYPE billing.event_version AS (created timestamptz, rank smallint, event_id text);
COMMENT ON TYPE billing.event_version IS 'Position of an event in the state order: (created, rank, event id). A field group changes only when the new version is greater.';

CREATE TABLE billing.webhook_secrets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    secret text NOT NULL UNIQUE CHECK (secret ~ '^whsec_[A-Za-z0-9_]+$'),
    livemode boolean NOT NULL DEFAULT false,
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);
COMMENT ON TABLE billing.webhook_secrets IS 'Webhook signing secrets (whsec_...). Several may be valid at once while a secret rotates. Privileged roles only: never readable by clients.';
COMMENT ON COLUMN billing.webhook_secrets.id IS 'Surrogate key.';
COMMENT ON COLUMN billing.webhook_secrets.secret IS 'The endpoint signing secret exactly as Stripe shows it, including the whsec_ prefix.';
COMMENT ON COLUMN billing.webhook_secrets.livemode IS 'Whether this secret signs live-mode (true) or test-mode (false) events; an event whose livemode differs is rejected.';
COMMENT ON COLUMN billing.webhook_secrets.description IS 'Free text, e.g. which endpoint or dashboard this secret belongs to.';
COMMENT ON COLUMN billing.webhook_secrets.created_at IS 'When the secret was added.';
COMMENT ON COLUMN billing.webhook_secrets.expires_at IS 'After this time the secret no longer verifies (set it when rotating out an old secret); NULL = no end.';

CREATE TABLE billing.plans (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    stripe_price_id text NOT NULL UNIQUE CHECK (length(stripe_price_id) BETWEEN 1 AND 255),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind text NOT NULL CHECK (kind IN ('subscription', 'token_pack')),
    monthly_tokens bigint CHECK (monthly_tokens > 0 AND monthly_tokens <= 1000000000000),
    tokens bigint CHECK (tokens > 0 AND tokens <= 1000000000000),
    rollover boolean NOT NULL DEFAULT false,
    active boolean NOT NULL DEFAULT true,
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT plans_tokens_match_kind CHECK (
        (kind = 'subscription' AND monthly_tokens IS NOT NULL AND tokens IS NULL)
        OR (kind = 'token_pack' AND tokens IS NOT NULL AND monthly_tokens IS NULL AND NOT rollover))
);
COMMENT ON TABLE billing.plans IS 'The catalog: subscription plans and token packs, one row per Stripe price. Readable by authenticated users; edited by privileged roles.';
COMMENT ON COLUMN billing.plans.id IS 'Your own short name for the plan, e.g. pro or pack_1000.';
COMMENT ON COLUMN billing.plans.stripe_price_id IS 'The Stripe price (price_...) this row sells; webhooks resolve plans by it.';
COMMENT ON COLUMN billing.plans.name IS 'Display name.';
COMMENT ON COLUMN billing.plans.kind IS 'subscription (Checkout mode subscription) or token_pack (Checkout mode payment).';
COMMENT ON COLUMN billing.plans.monthly_tokens IS 'Subscription plans: tokens granted for each paid billing period.';
COMMENT ON COLUMN billing.plans.tokens IS 'Token packs: tokens granted once per paid purchase.';
COMMENT ON COLUMN billing.plans.rollover IS 'Subscription plans: when true, period grants never expire; when false they expire at the end of the period they pay for.';
COMMENT ON COLUMN billing.plans.active IS 'Inactive plans cannot be bought; existing subscriptions keep working.';
COMMENT ON COLUMN billing.plans.metadata IS 'Free-form JSON object for your app (features, limits, ...).';
COMMENT ON COLUMN billing.plans.created_at IS 'When the row was added.';

CREATE TABLE billing.projects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    name text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_user_id_idx ON billing.projects (user_id);
COMMENT ON TABLE billing.projects IS 'Optional scopes for tokens: a grant or spend with a project_id draws from that project''s own balance.';
COMMENT ON COLUMN billing.projects.id IS 'Project id (use your app''s own project ids if it has them).';
COMMENT ON COLUMN billing.projects.user_id IS 'The user who owns the project and its tokens.';
COMMENT ON COLUMN billing.projects.name IS 'Display name.';
COMMENT ON COLUMN billing.projects.created_at IS 'When the row was added.';

CREATE TABLE billing.customers (
    user_id uuid PRIMARY KEY,
    stripe_customer_id text NOT NULL UNIQUE CHECK (stripe_customer_id ~ '^cus_[A-Za-z0-9]+$'),
    email text,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.customers IS 'One Stripe customer per user and one user per Stripe customer.';
COMMENT ON COLUMN billing.customers.user_id IS 'The app user (Supabase auth.users.id).';
COMMENT ON COLUMN billing.customers.stripe_customer_id IS 'The Stripe customer (cus_...).';
COMMENT ON COLUMN billing.customers.email IS 'Email the customer was created with, if known.';
COMMENT ON COLUMN billing.customers.created_at IS 'When the link was stored.';

CREATE TABLE billing.subscriptions (
    stripe_subscription_id text PRIMARY KEY CHECK (stripe_subscription_id ~ '^sub_[A-Za-z0-9]+$'),
    user_id uuid NOT NULL,
    stripe_customer_id text,
    plan_id text REFERENCES billing.plans (id),
    stripe_price_id text,
    status text CHECK (status IN ('incomplete', 'incomplete_expired', 'trialing', 'active',
                                  'past_due', 'canceled', 'unpaid', 'paused')),
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    cancel_at timestamptz,
    canceled_at timestamptz,
    ended_at timestamptz,
    object_version billing.event_version,
    status_version billing.event_version,
    period_version billing.event_version,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_user_id_idx ON billing.subscriptions (user_id);
COMMENT ON TABLE billing.subscriptions IS 'Stripe subscriptions as last reported by webhooks. Each group of fields remembers the event that last set it, so an older event never overwrites a newer state.';
COMMENT ON COLUMN billing.subscriptions.stripe_subscription_id IS 'The Stripe subscription (sub_...).';
COMMENT ON COLUMN billing.subscriptions.user_id IS 'The app user who owns the subscription.';
COMMENT ON COLUMN billing.subscriptions.stripe_customer_id IS 'The Stripe customer billed.';
COMMENT ON COLUMN billing.subscriptions.plan_id IS 'The catalog plan of the subscription''s price.';
COMMENT ON COLUMN billing.subscriptions.stripe_price_id IS 'The Stripe price of the subscription''s first item.';
COMMENT ON COLUMN billing.subscriptions.status IS 'Stripe status; NULL until an event reports one. Access: trialing, active (and past_due during retries).';
COMMENT ON COLUMN billing.subscriptions.current_period_start IS 'Start of the current billing period.';
COMMENT ON COLUMN billing.subscriptions.current_period_end IS 'End of the current billing period.';
COMMENT ON COLUMN billing.subscriptions.cancel_at_period_end IS 'True when the customer cancelled and the subscription ends with the current period.';
COMMENT ON COLUMN billing.subscriptions.cancel_at IS 'When a scheduled cancellation takes effect.';
COMMENT ON COLUMN billing.subscriptions.canceled_at IS 'When the cancellation was requested.';
COMMENT ON COLUMN billing.subscriptions.ended_at IS 'When the subscription ended.';
COMMENT ON COLUMN billing.subscriptions.object_version IS 'Event (created, rank, id) that last set plan and cancellation fields.';
COMMENT ON COLUMN billing.subscriptions.status_version IS 'Event (created, rank, id) that last set status.';
COMMENT ON COLUMN billing.subscriptions.period_version IS 'Event (created, rank, id) that last set the period.';
COMMENT ON COLUMN billing.subscriptions.created_at IS 'When the row was first written.';
COMMENT ON COLUMN billing.subscriptions.updated_at IS 'When the row was last changed.';

CREATE FUNCTION billing.no_project() RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '00000000-0000-0000-0000-000000000000'::uuid $$;
COMMENT ON FUNCTION billing.no_project() IS 'Stands for "no project" in the live-grant index, so one index serves user and project balances.';

CREATE TABLE billing.token_grants (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    source text NOT NULL CHECK (source ~ '^[a-z][a-z0-9_]{0,39}$'),
    tokens bigint NOT NULL CHECK (tokens > 0 AND tokens <= 1000000000000),
    remaining bigint NOT NULL CHECK (remaining >= 0),
    expires_at timestamptz,
    grant_key text UNIQUE CHECK (length(grant_key) BETWEEN 1 AND 255),
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_grants_remaining_le_tokens CHECK (remaining <= tokens)
);
-- The live set only: spent-out grants leave this index, and expired ones sit before now() in
-- it, so one range scan (expiry > now(), never-expiring sorted last as infinity) reads only
-- spendable grants, in spend order: balances and spends cost the same however long the
-- history grows.
CREATE INDEX token_grants_live_idx ON billing.token_grants
    (user_id, coalesce(project_id, billing.no_project()), coalesce(expires_at, 'infinity'::timestamptz))
    WHERE remaining > 0;
CREATE INDEX token_grants_user_idx ON billing.token_grants (user_id, created_at);
COMMENT ON TABLE billing.token_grants IS 'Tokens given to a user (optionally per project): plan periods, token pack purchases, manual grants. remaining is what spends have not taken yet.';
COMMENT ON COLUMN billing.token_grants.id IS 'Surrogate key; also the tie-breaker of the spend order.';
COMMENT ON COLUMN billing.token_grants.user_id IS 'The user who may spend the tokens.';
COMMENT ON COLUMN billing.token_grants.project_id IS 'NULL for the user''s own balance, or the project whose balance this grant belongs to.';
COMMENT ON COLUMN billing.token_grants.source IS 'Why: subscription_start, plan, plan_upgrade, payg_purchase, manual, ...';
COMMENT ON COLUMN billing.token_grants.tokens IS 'Tokens granted.';
COMMENT ON COLUMN billing.token_grants.remaining IS 'Tokens not yet spent. Balance = sum(remaining) of unexpired grants.';
COMMENT ON COLUMN billing.token_grants.expires_at IS 'From this instant the remainder no longer counts; NULL never expires.';
COMMENT ON COLUMN billing.token_grants.grant_key IS 'Idempotency key (Stripe invoice or checkout session id, or your own): a second grant with the same key is impossible.';
COMMENT ON COLUMN billing.token_grants.metadata IS 'Context for the grant (session id, amount paid, invoice, ...).';
COMMENT ON COLUMN billing.token_grants.created_at IS 'When the grant was made.';

CREATE TABLE billing.token_spends (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    amount bigint NOT NULL CHECK (amount > 0),
    reason text CHECK (length(reason) <= 500),
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_spends_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX token_spends_user_idx ON billing.token_spends (user_id, created_at);
COMMENT ON TABLE billing.token_spends IS 'Tokens spent. Each spend is allocated to one or more grants in billing.token_spend_allocations.';
COMMENT ON COLUMN billing.token_spends.id IS 'Surrogate key.';
COMMENT ON COLUMN billing.token_spends.user_id IS 'Whose tokens were spent.';
COMMENT ON COLUMN billing.token_spends.project_id IS 'The project balance spent from, or NULL for the user''s own balance.';
COMMENT ON COLUMN billing.token_spends.amount IS 'Tokens spent.';
COMMENT ON COLUMN billing.token_spends.reason IS 'Free text for the user''s history, e.g. "image generation".';
COMMENT ON COLUMN billing.token_spends.idempotency_key IS 'Repeating a spend with the same key (per user) returns the first result instead of spending again.';
COMMENT ON COLUMN billing.token_spends.created_at IS 'When the spend happened.';

CREATE TABLE billing.token_spend_allocations (
    spend_id bigint NOT NULL REFERENCES billing.token_spends (id),
    grant_id bigint NOT NULL REFERENCES billing.token_grants (id),
    user_id uuid NOT NULL,
    tokens bigint NOT NULL CHECK (tokens > 0),
    PRIMARY KEY (spend_id, grant_id)
);
CREATE INDEX token_spend_allocations_grant_idx ON billing.token_spend_allocations (grant_id);
COMMENT ON TABLE billing.token_spend_allocations IS 'Which grants each spend drew from: sum(tokens) per spend equals its amount, and per grant equals tokens - remaining.';
COMMENT ON COLUMN billing.token_spend_allocations.spend_id IS 'The spend.';
COMMENT ON COLUMN billing.token_spend_allocations.grant_id IS 'The grant drawn from.';
COMMENT ON COLUMN billing.token_spend_allocations.user_id IS 'Owner of spend and grant (kept for row-level security).';
COMMENT ON COLUMN billing.token_spend_allocations.tokens IS 'Tokens taken from this grant.';

CREATE TABLE billing.stripe_events (
    id text PRIMARY KEY CHECK (id ~ '^evt_[A-Za-z0-9_]+$'),
    type text NOT NULL,
    api_version text,
    livemode boolean NOT NULL,
    created timestamptz NOT NULL,
    payload json NOT NULL,
    stripe_customer_id text,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    error text
);
-- Payloads are a few KB each: lz4 compresses them several times faster than the default
-- pglz. Servers built without lz4 keep the default.
DO $$
BEGIN
    ALTER TABLE billing.stripe_events ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END
$$;
CREATE INDEX stripe_events_failed_idx ON billing.stripe_events (received_at) WHERE error IS NOT NULL;
CREATE INDEX stripe_events_customer_failed_idx ON billing.stripe_events (stripe_customer_id)
    WHERE error IS NOT NULL;
COMMENT ON TABLE billing.stripe_events IS 'Every verified Stripe event, stored once (the id is the key), with the result of applying it. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_events.id IS 'Stripe event id (evt_...).';
COMMENT ON COLUMN billing.stripe_events.type IS 'Event type, e.g. invoice.paid.';
COMMENT ON COLUMN billing.stripe_events.api_version IS 'The API version that shaped data.object.';
COMMENT ON COLUMN billing.stripe_events.livemode IS 'Whether the event came from live mode.';
COMMENT ON COLUMN billing.stripe_events.created IS 'Stripe''s creation time of the event; orders state changes.';
COMMENT ON COLUMN billing.stripe_events.payload IS 'The event exactly as Stripe sent it (json keeps the signed bytes; cast to jsonb for heavy querying).';
COMMENT ON COLUMN billing.stripe_events.stripe_customer_id IS 'The customer the event concerns, if any (used to retry held events once the customer is linked).';
COMMENT ON COLUMN billing.stripe_events.received_at IS 'First delivery time.';
COMMENT ON COLUMN billing.stripe_events.processed_at IS 'When its effects were applied; NULL while pending or failed.';
COMMENT ON COLUMN billing.stripe_events.attempts IS 'How many times applying it was tried.';
COMMENT ON COLUMN billing.stripe_events.error IS 'Why applying failed (e.g. unknown price); cleared once billing.reprocess_events() applies it.';

CREATE TABLE billing.stripe_requests (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('customer', 'checkout', 'portal')),
    params jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    run_after timestamptz NOT NULL DEFAULT now(),
    locked_by text,
    locked_until timestamptz,
    claimed_at timestamptz,
    result jsonb,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX stripe_requests_ready_idx ON billing.stripe_requests (run_after)
    WHERE status IN ('pending', 'running');
CREATE INDEX stripe_requests_user_idx ON billing.stripe_requests (user_id, created_at);
COMMENT ON TABLE billing.stripe_requests IS 'Outbound Stripe calls for the worker: pending -> running -> succeeded | failed. Inserting a row NOTIFYs channel billing_stripe_requests with the row id.';
COMMENT ON COLUMN billing.stripe_requests.id IS 'Request id; also the root of the Stripe Idempotency-Key.';
COMMENT ON COLUMN billing.stripe_requests.user_id IS 'The user the request is for.';
COMMENT ON COLUMN billing.stripe_requests.kind IS 'customer, checkout or portal.';
COMMENT ON COLUMN billing.stripe_requests.params IS 'Validated parameters (price, mode, URLs, project, coupon, email).';
COMMENT ON COLUMN billing.stripe_requests.status IS 'pending, running (claimed by a worker), succeeded or failed.';
COMMENT ON COLUMN billing.stripe_requests.attempts IS 'How many times a worker has claimed it.';
COMMENT ON COLUMN billing.stripe_requests.run_after IS 'Not claimed before this time (retry backoff).';
COMMENT ON COLUMN billing.stripe_requests.locked_by IS 'The worker holding the claim.';
COMMENT ON COLUMN billing.stripe_requests.locked_until IS 'Lease end: a running row past it is claimed again (its worker died).';
COMMENT ON COLUMN billing.stripe_requests.claimed_at IS 'When a worker last claimed it (claimed_at - created_at is the queue wait).';
COMMENT ON COLUMN billing.stripe_requests.result IS 'On success: url, session_id and other results.';
COMMENT ON COLUMN billing.stripe_requests.error IS 'On failure: Stripe''s or our message.';
COMMENT ON COLUMN billing.stripe_requests.created_at IS 'When it was requested.';
COMMENT ON COLUMN billing.stripe_requests.finished_at IS 'When it succeeded or failed.';

CREATE FUNCTION billing.notify_stripe_request() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Only the id: NOTIFY is a wake-up, the table is the queue.
    PERFORM pg_notify('billing_stripe_requests', NEW.id::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION billing.notify_stripe_request() IS 'Trigger: wakes the worker (channel billing_stripe_requests, payload = request id).';
CREATE TRIGGER stripe_requests_notify AFTER INSERT ON billing.stripe_requests
    FOR EACH ROW EXECUTE FUNCTION billing.notify_stripe_request();

SELECT pg_catalog.pg_extension_config_dump('billing.config', '');
SELECT pg_catalog.pg_extension_config_dump('billing.webhook_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('billing.plans', '');
SELECT pg_catalog.pg_extension_config_dump('billing.projects', '');
SELECT pg_catalog.pg_extension_config_dump('billing.customers', '');
SELECT pg_catalog.pg_extension_config_dump('billing.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_grants', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_spends', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_spend_allocations', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_events', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_requests', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.webhook_secrets', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_grants', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_spends', 'id')::regclass, '');
