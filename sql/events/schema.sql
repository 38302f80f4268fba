-- The event store: webhook signing secrets, and every verified Stripe event with the outcome of
-- applying it.

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

SELECT pg_catalog.pg_extension_config_dump('billing.webhook_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_events', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.webhook_secrets', 'id')::regclass, '');
