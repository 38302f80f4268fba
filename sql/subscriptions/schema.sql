-- Subscriptions: the state of each Stripe subscription, kept out-of-order safe.

-- Orders state changes: Stripe's event time, then a rank (subscription objects outrank invoices
-- reporting the same second), then the event id as a deterministic tie-breaker.
CREATE TYPE billing.event_version AS (created timestamptz, rank smallint, event_id text);
COMMENT ON TYPE billing.event_version IS 'Position of an event in the state order: (created, rank, event id). A field group changes only when the new version is greater.';

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

SELECT pg_catalog.pg_extension_config_dump('billing.subscriptions', '');
