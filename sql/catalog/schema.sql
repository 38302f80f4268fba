-- The catalog: what each Stripe price sells.

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
    -- Metered overage (sql/overage/): how far below zero a subscriber may spend per period, and
    -- the Stripe Billing Meter event that bills it.
    overage_limit bigint CHECK (overage_limit > 0 AND overage_limit <= 1000000000000),
    meter_event_name text CHECK (length(meter_event_name) BETWEEN 1 AND 100),
    CONSTRAINT plans_overage_fits_kind CHECK ((overage_limit IS NULL) = (meter_event_name IS NULL)
                                              AND (overage_limit IS NULL OR kind = 'subscription')),
    CONSTRAINT plans_tokens_match_kind CHECK (
        (kind = 'subscription' AND monthly_tokens IS NOT NULL AND tokens IS NULL)
        OR (kind = 'token_pack' AND tokens IS NOT NULL AND monthly_tokens IS NULL AND NOT rollover))
);
COMMENT ON TABLE billing.plans IS 'The catalog: subscription plans and token packs, one row per Stripe price. Readable by authenticated users; edited by privileged roles.';
COMMENT ON COLUMN billing.plans.id IS 'Your own short name for the plan, e.g. pro or pack_1000.';
COMMENT ON COLUMN billing.plans.stripe_price_id IS 'The Stripe price (price_...) this row sells now. Changing it keeps the old price in billing.plan_prices, so existing subscribers keep the plan.';
COMMENT ON COLUMN billing.plans.name IS 'Display name.';
COMMENT ON COLUMN billing.plans.kind IS 'subscription (Checkout mode subscription) or token_pack (Checkout mode payment).';
COMMENT ON COLUMN billing.plans.monthly_tokens IS 'Subscription plans: tokens granted for each paid billing period.';
COMMENT ON COLUMN billing.plans.tokens IS 'Token packs: tokens granted once per paid purchase.';
COMMENT ON COLUMN billing.plans.rollover IS 'Subscription plans: when true, period grants never expire; when false they expire at the end of the period they pay for.';
COMMENT ON COLUMN billing.plans.active IS 'Inactive plans cannot be bought; existing subscriptions keep working.';
COMMENT ON COLUMN billing.plans.metadata IS 'Free-form JSON object for your app (features, limits, ...).';
COMMENT ON COLUMN billing.plans.created_at IS 'When the row was added.';
COMMENT ON COLUMN billing.plans.overage_limit IS 'Subscription plans: how many tokens a subscriber may spend beyond their balance per billing period, billed by Stripe through the meter named by meter_event_name (docs/tokens.md, "Metered overage"); NULL = no overage, a spend beyond the balance fails with BL001.';
COMMENT ON COLUMN billing.plans.meter_event_name IS 'The event_name of the Stripe Billing Meter that bills this plan''s overage (its subscription must include a metered price on that meter); set together with overage_limit.';

SELECT pg_catalog.pg_extension_config_dump('billing.plans', '');

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

-- What Stripe says each price costs, synced from price.created / price.updated events and from the
-- worker's GET /v1/prices/{id} (a proration line is valued against it: sql/effects/invoice.sql).
-- Its own table, not columns of plan_prices: Stripe sends a price's events when the price is
-- made, usually before anyone adds its plan row, and a row keyed by the price alone keeps them
-- in any order.
CREATE TABLE billing.prices (
    stripe_price_id text PRIMARY KEY CHECK (length(stripe_price_id) BETWEEN 1 AND 255),
    unit_amount numeric CHECK (unit_amount >= 0),
    currency text CHECK (currency ~ '^[a-z]{3}$'),
    recurring_interval text CHECK (recurring_interval IN ('day', 'week', 'month', 'year')),
    interval_count integer CHECK (interval_count > 0),
    active boolean,
    synced_at timestamptz NOT NULL
);
COMMENT ON TABLE billing.prices IS 'Stripe''s public fields of each price, synced from its price.created and price.updated events and from the worker''s retrieval (GET /v1/prices/{id}) when an invoice needs an amount the table lacks. Privileged roles only; billing.public_catalog shows the catalog''s prices to anyone.';
COMMENT ON COLUMN billing.prices.stripe_price_id IS 'The Stripe price (price_...).';
COMMENT ON COLUMN billing.prices.unit_amount IS 'The price in the currency''s smallest unit (cents), from Stripe''s unit_amount_decimal (fractions of a cent kept); NULL for a price without one (tiered, customer-chosen amounts).';
COMMENT ON COLUMN billing.prices.currency IS 'Three-letter ISO currency code, lower case, as Stripe sends it.';
COMMENT ON COLUMN billing.prices.recurring_interval IS 'recurring.interval: day, week, month or year; NULL for a one-time price.';
COMMENT ON COLUMN billing.prices.interval_count IS 'recurring.interval_count: how many intervals one billing period is; NULL for a one-time price.';
COMMENT ON COLUMN billing.prices.active IS 'Whether Stripe lets the price be used for new purchases.';
COMMENT ON COLUMN billing.prices.synced_at IS 'As of when Stripe said so: the event''s created time, or the retrieval''s answer time; an older report never overwrites a newer one.';

SELECT pg_catalog.pg_extension_config_dump('billing.prices', '');

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
