-- Metered overage: tokens spent beyond the balance, within the subscription plan's
-- overage_limit per billing period, which Stripe bills through a Billing Meter (DESIGN.md,
-- "Metered overage"). Overage is not a debt: no grant ever pays it off, since Stripe invoices it.

CREATE TABLE billing.token_overages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    spend_id bigint NOT NULL UNIQUE REFERENCES billing.token_spends (id),
    stripe_subscription_id text NOT NULL REFERENCES billing.subscriptions (stripe_subscription_id),
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    tokens bigint NOT NULL CHECK (tokens > 0 AND tokens <= 1000000000000),
    identifier text NOT NULL UNIQUE CHECK (length(identifier) BETWEEN 1 AND 100),
    request_id uuid NOT NULL UNIQUE,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'reported', 'failed')),
    reported_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_overages_reported_when CHECK ((status = 'reported') = (reported_at IS NOT NULL))
);
-- What a period has used so far: one range scan per spend that goes into overage.
CREATE INDEX token_overages_period_idx ON billing.token_overages (stripe_subscription_id, period_start);
CREATE INDEX token_overages_user_idx ON billing.token_overages (user_id, created_at);
COMMENT ON TABLE billing.token_overages IS 'The part of a spend beyond the balance that the user''s subscription plan allowed as overage (billing.plans.overage_limit per period), one row per spend, each reported once to Stripe as a Billing Meter event. Users read their own rows.';
COMMENT ON COLUMN billing.token_overages.id IS 'Surrogate key.';
COMMENT ON COLUMN billing.token_overages.user_id IS 'Whose spend it was.';
COMMENT ON COLUMN billing.token_overages.spend_id IS 'The spend (billing.token_spends) whose uncovered part this is; its allocations cover the rest.';
COMMENT ON COLUMN billing.token_overages.stripe_subscription_id IS 'The subscription whose plan allowed it and whose metered price bills it.';
COMMENT ON COLUMN billing.token_overages.period_start IS 'Start of the billing period it counts against (the limit is per period).';
COMMENT ON COLUMN billing.token_overages.period_end IS 'End of that billing period.';
COMMENT ON COLUMN billing.token_overages.tokens IS 'Tokens spent beyond the balance: the meter event''s value.';
COMMENT ON COLUMN billing.token_overages.identifier IS 'The meter event''s identifier, by which Stripe refuses a second event of the same spend, whatever the worker''s retries.';
COMMENT ON COLUMN billing.token_overages.request_id IS 'The meter_event request (billing.stripe_requests) that reports it.';
COMMENT ON COLUMN billing.token_overages.status IS 'pending (queued for Stripe), reported (Stripe accepted the meter event) or failed (Stripe refused it, or the request used all its attempts: see the request''s error).';
COMMENT ON COLUMN billing.token_overages.reported_at IS 'When Stripe accepted the meter event; NULL until then.';
COMMENT ON COLUMN billing.token_overages.created_at IS 'When the spend went into overage (the meter event''s timestamp).';

SELECT pg_catalog.pg_extension_config_dump('billing.token_overages', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_overages', 'id')::regclass, '');
