-- The outbound request queue: what the worker asks Stripe for (Checkout and Portal sessions for
-- users, and objects the event effects need to see as Stripe has them now).

CREATE TABLE billing.stripe_requests (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('checkout', 'portal', 'refresh', 'line_items', 'meter_event', 'top_up', 'seats')),
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
    finished_at timestamptz,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- A claim exists exactly while the row runs, and an outcome exactly once it is over.
    CONSTRAINT stripe_requests_claim_matches_status CHECK (CASE WHEN status = 'running'
        THEN locked_by IS NOT NULL AND locked_until IS NOT NULL AND claimed_at IS NOT NULL
        ELSE locked_by IS NULL AND locked_until IS NULL END),
    CONSTRAINT stripe_requests_finished_matches_status CHECK ((status IN ('succeeded', 'failed')) = (finished_at IS NOT NULL)),
    CONSTRAINT stripe_requests_outcome_matches_status CHECK ((status <> 'succeeded' OR result IS NOT NULL)
                                                            AND (status <> 'failed' OR error IS NOT NULL))
);
CREATE INDEX stripe_requests_ready_idx ON billing.stripe_requests (run_after)
    WHERE status IN ('pending', 'running');
CREATE INDEX stripe_requests_user_idx ON billing.stripe_requests (user_id, created_at);
-- A caller's Idempotency-Key names one request of theirs for as long as the row is kept.
CREATE UNIQUE INDEX stripe_requests_idempotency_idx ON billing.stripe_requests (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- One retrieval of an object in flight at a time, however many events ask for it.
CREATE UNIQUE INDEX stripe_requests_one_retrieval_idx ON billing.stripe_requests (kind, (params ->> 'object_id'))
    WHERE kind IN ('refresh', 'line_items') AND status IN ('pending', 'running');
-- One auto top-up charge in flight per user, however many spends cross the threshold at once.
CREATE UNIQUE INDEX stripe_requests_one_top_up_idx ON billing.stripe_requests (user_id)
    WHERE kind = 'top_up' AND status IN ('pending', 'running');
-- One seat change in flight per team: each names an absolute quantity checked against the
-- members when it was asked, so a second one waits until the first is settled.
CREATE UNIQUE INDEX stripe_requests_one_seat_change_idx ON billing.stripe_requests (user_id)
    WHERE kind = 'seats' AND status IN ('pending', 'running');
COMMENT ON TABLE billing.stripe_requests IS 'Outbound Stripe calls for the worker: pending -> running -> succeeded | failed. Inserting a row NOTIFYs channel billing_stripe_requests with the row id.';
COMMENT ON COLUMN billing.stripe_requests.id IS 'Request id; also the root of the Stripe Idempotency-Key.';
COMMENT ON COLUMN billing.stripe_requests.user_id IS 'The user the request is for.';
COMMENT ON COLUMN billing.stripe_requests.kind IS 'checkout or portal (a user''s session), refresh (retrieve a subscription whose same-second events disagree, an invoice''s payments, a credit note''s refund no event reported, the invoices a PaymentIntent paid when a refund or dispute needs them, or a price whose amount the catalog lacks) or line_items (retrieve what a Checkout Session sold, or every line of an invoice), or meter_event (report a spend''s metered overage to Stripe, POST /v1/billing/meter_events), or top_up (charge the card saved at checkout for an auto top-up''s pack, off-session), or seats (change a team subscription''s quantity, POST /v1/subscriptions/{id}; billing.request_seat_change).';
COMMENT ON COLUMN billing.stripe_requests.params IS 'Validated parameters (price, mode, URLs, project, coupon, email; object_id for retrievals).';
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
COMMENT ON COLUMN billing.stripe_requests.idempotency_key IS 'The caller''s Idempotency-Key header (request.headers), if any: the same key from the same user returns this request again instead of queuing another.';

SELECT pg_catalog.pg_extension_config_dump('billing.stripe_requests', '');
