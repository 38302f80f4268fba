-- Subscriptions: the state of each Stripe subscription, kept out-of-order safe.

-- Orders state changes: Stripe's time (one-second resolution), then the rank of the source (an
-- object retrieved from Stripe's API outranks an event of the same second). Event ids are random
-- and never break a tie: same-second ties are resolved by the subscription lifecycle, or by
-- asking Stripe (DESIGN.md, "Ordering").
CREATE TYPE billing.event_version AS (created timestamptz, rank smallint);
COMMENT ON TYPE billing.event_version IS 'When a state report was made: (Stripe''s created time, rank: 1 = event, 2 = object retrieved from the API, which outranks events of the same second).';

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
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    trial_end timestamptz,
    pause_collection text CHECK (pause_collection IN ('keep_as_draft', 'mark_uncollectible', 'void')),
    version billing.event_version,
    status_since timestamptz,
    previous_status_at timestamptz,
    quantity bigint CHECK (quantity >= 0),
    stripe_item_id text CHECK (stripe_item_id ~ '^si_[A-Za-z0-9_]+$')
);
CREATE INDEX subscriptions_user_id_idx ON billing.subscriptions (user_id);
COMMENT ON TABLE billing.subscriptions IS 'Stripe subscriptions as last reported by Stripe (subscription events, or the object retrieved from the API): an older report never overwrites a newer one, and canceled and incomplete_expired are final.';
COMMENT ON COLUMN billing.subscriptions.stripe_subscription_id IS 'The Stripe subscription (sub_...).';
COMMENT ON COLUMN billing.subscriptions.user_id IS 'The app user who owns the subscription.';
COMMENT ON COLUMN billing.subscriptions.stripe_customer_id IS 'The Stripe customer billed.';
COMMENT ON COLUMN billing.subscriptions.plan_id IS 'The catalog plan of the subscription''s price (its first item whose price is in billing.plan_prices); NULL while the price is not in the catalog.';
COMMENT ON COLUMN billing.subscriptions.stripe_price_id IS 'The Stripe price behind plan_id (else the first item''s price).';
COMMENT ON COLUMN billing.subscriptions.status IS 'Stripe status; NULL until Stripe reports one. Access: trialing, active (and past_due during retries). canceled and incomplete_expired never change again.';
COMMENT ON COLUMN billing.subscriptions.current_period_start IS 'Start of the current billing period.';
COMMENT ON COLUMN billing.subscriptions.current_period_end IS 'End of the current billing period.';
COMMENT ON COLUMN billing.subscriptions.cancel_at_period_end IS 'True when the customer cancelled and the subscription ends with the current period.';
COMMENT ON COLUMN billing.subscriptions.cancel_at IS 'When a scheduled cancellation takes effect.';
COMMENT ON COLUMN billing.subscriptions.canceled_at IS 'When the cancellation was requested.';
COMMENT ON COLUMN billing.subscriptions.ended_at IS 'When the subscription ended.';
COMMENT ON COLUMN billing.subscriptions.created_at IS 'When the row was first written.';
COMMENT ON COLUMN billing.subscriptions.updated_at IS 'When the row was last changed.';
COMMENT ON COLUMN billing.subscriptions.trial_end IS 'End of the trial, if the subscription has or had one.';
COMMENT ON COLUMN billing.subscriptions.pause_collection IS 'When payment collection is paused, how Stripe treats new invoices (keep_as_draft, mark_uncollectible or void); the status stays active. NULL when collecting.';
COMMENT ON COLUMN billing.subscriptions.status_since IS 'Stripe''s time of the first report of the current status (the event''s created time, or the time of the retrieval''s answer), whatever order the reports arrived in (never earlier than the truth): how long a past_due subscription has been past due, which billing.has_feature compares with past_due_grace_seconds. NULL until a report sets a status.';
COMMENT ON COLUMN billing.subscriptions.previous_status_at IS 'Stripe''s time of the newest known report of a status other than the current one: the current status began after it. With it, a report older than the row''s state corrects status_since in any delivery order. NULL when none is known.';
COMMENT ON COLUMN billing.subscriptions.version IS 'When (Stripe time, rank) the state in this row was reported; a report replaces it only when newer. NULL until a subscription report arrives.';

COMMENT ON COLUMN billing.subscriptions.quantity IS 'The quantity of the plan''s subscription item (else the first item''s) as last reported by Stripe: for a team''s subscription, its seats (billing._team_seats). NULL until a report carries it (0.2.0 rows until their next report).';
COMMENT ON COLUMN billing.subscriptions.stripe_item_id IS 'The subscription item (si_...) whose quantity is recorded: the one a seat change updates (billing.request_seat_change). NULL until a report carries it (0.2.0 rows until their next report).';

SELECT pg_catalog.pg_extension_config_dump('billing.subscriptions', '');
