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
    error text,
    error_code text CHECK (error_code ~ '^[0-9A-Z]{5}$'),
    object_id text,
    source text NOT NULL DEFAULT 'webhook' CHECK (source IN ('webhook', 'api', 'retrieved')),
    CONSTRAINT stripe_events_error_has_code CHECK ((error IS NULL) = (error_code IS NULL)),
    CONSTRAINT stripe_events_processed_or_failed CHECK (processed_at IS NULL OR error IS NULL)
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
-- Events not applied, in the order reprocess_events() takes them; health() counts them.
CREATE INDEX stripe_events_unprocessed_idx ON billing.stripe_events (created, received_at)
    WHERE processed_at IS NULL;
-- Events waiting to be applied (their user unknown, data still being fetched, a price not in the
-- catalog) are retried when another event of the same customer or object is applied.
CREATE INDEX stripe_events_waiting_customer_idx ON billing.stripe_events (stripe_customer_id)
    WHERE processed_at IS NULL;
CREATE INDEX stripe_events_waiting_object_idx ON billing.stripe_events (object_id)
    WHERE processed_at IS NULL;
-- The newest webhook delivery of each mode, read by billing.health(): how long ago Stripe last
-- reached us, without reading the whole history.
CREATE INDEX stripe_events_webhook_received_idx ON billing.stripe_events (livemode, received_at)
    WHERE source = 'webhook';
COMMENT ON TABLE billing.stripe_events IS 'Every verified Stripe event, stored once (the id is the key), with the result of applying it. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_events.id IS 'Stripe event id (evt_...).';
COMMENT ON COLUMN billing.stripe_events.type IS 'Event type, e.g. invoice.paid.';
COMMENT ON COLUMN billing.stripe_events.api_version IS 'The API version that shaped data.object.';
COMMENT ON COLUMN billing.stripe_events.livemode IS 'Whether the event came from live mode.';
COMMENT ON COLUMN billing.stripe_events.created IS 'Stripe''s creation time of the event; orders state changes.';
COMMENT ON COLUMN billing.stripe_events.payload IS 'The event exactly as Stripe sent it (json keeps the signed bytes; cast to jsonb for heavy querying).';
COMMENT ON COLUMN billing.stripe_events.stripe_customer_id IS 'The customer the event concerns, if any: a waiting event is retried when another event of this customer is applied or the customer is linked.';
COMMENT ON COLUMN billing.stripe_events.received_at IS 'First delivery time.';
COMMENT ON COLUMN billing.stripe_events.processed_at IS 'When its effects were applied; NULL while pending or failed.';
COMMENT ON COLUMN billing.stripe_events.attempts IS 'How many times applying it was tried.';
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

-- Stripe embeds one page of an invoice's lines in its events (lines.has_more says there are
-- more): for a subscription invoice with more, the worker retrieves them all, and the invoice's
-- grants are computed from these (sql/effects/invoice.sql).
CREATE TABLE billing.invoice_lines (
    invoice_id text NOT NULL CHECK (invoice_id ~ '^in_[A-Za-z0-9_]+$'),
    position integer NOT NULL CHECK (position >= 0),
    price_id text,
    amount bigint,
    quantity bigint,
    proration boolean NOT NULL,
    unit_amount numeric,
    period_start timestamptz,
    period_end timestamptz,
    retrieved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_id, position)
);
COMMENT ON TABLE billing.invoice_lines IS 'Every line of a subscription invoice with more lines than its events carry (Stripe embeds one page), retrieved from Stripe and read instead of the embedded page. Privileged roles only.';
COMMENT ON COLUMN billing.invoice_lines.invoice_id IS 'The invoice (in_...).';
COMMENT ON COLUMN billing.invoice_lines.position IS 'Order of the line within the invoice, as Stripe lists them, from 0.';
COMMENT ON COLUMN billing.invoice_lines.price_id IS 'The Stripe price of the line.';
COMMENT ON COLUMN billing.invoice_lines.amount IS 'What the line charges (negative: a credit), in the smallest currency unit.';
COMMENT ON COLUMN billing.invoice_lines.quantity IS 'The line''s quantity.';
COMMENT ON COLUMN billing.invoice_lines.unit_amount IS 'The unit amount of the line''s price (a decimal, in the smallest currency unit), of which a proration line''s amount is a share; NULL when Stripe gives none (tiered prices).';
COMMENT ON COLUMN billing.invoice_lines.proration IS 'Whether the line is a proration (a plan change''s charge or credit) rather than a period.';
COMMENT ON COLUMN billing.invoice_lines.period_start IS 'Start of the period the line bills.';
COMMENT ON COLUMN billing.invoice_lines.period_end IS 'End of the period the line bills.';
COMMENT ON COLUMN billing.invoice_lines.retrieved_at IS 'When the worker retrieved it from Stripe.';

SELECT pg_catalog.pg_extension_config_dump('billing.webhook_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_events', '');
SELECT pg_catalog.pg_extension_config_dump('billing.checkout_line_items', '');
SELECT pg_catalog.pg_extension_config_dump('billing.invoice_lines', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.webhook_secrets', 'id')::regclass, '');
