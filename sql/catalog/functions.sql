-- The catalog: resolving Stripe prices to plans, through every price a plan ever had.

CREATE OR REPLACE FUNCTION billing._plan_of_price(price_id text) RETURNS billing.plans
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    p billing.plans;
BEGIN
    SELECT pl.* INTO p FROM billing.plan_prices pp JOIN billing.plans pl ON pl.id = pp.plan_id
    WHERE pp.stripe_price_id = _plan_of_price.price_id;
    RETURN p;
END
$$;
COMMENT ON FUNCTION billing._plan_of_price(text) IS 'Internal: the plan a Stripe price sells or sold, or a row of NULLs when the catalog does not know the price.';

CREATE OR REPLACE FUNCTION billing._plan_for_price(price_id text) RETURNS billing.plans
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    p billing.plans := billing._plan_of_price(price_id);
BEGIN
    IF p.id IS NULL THEN
        RAISE EXCEPTION 'unknown price %: no row in billing.plans has this stripe_price_id', coalesce(price_id, '(none)')
            USING ERRCODE = 'BL006',
                  HINT = 'Add the plan to billing.plans, then run SELECT billing.reprocess_events().';
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION billing._plan_for_price(text) IS 'Internal: the plan a Stripe price sells or sold, or error BL006 (the event is kept and can be re-applied once the catalog has it).';

CREATE OR REPLACE FUNCTION billing._record_plan_price() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO billing.plan_prices AS pp (stripe_price_id, plan_id) VALUES (NEW.stripe_price_id, NEW.id)
    ON CONFLICT (stripe_price_id) DO UPDATE SET plan_id = excluded.plan_id WHERE pp.plan_id <> excluded.plan_id;
    -- Subscriptions whose price the catalog did not know until now get their plan.
    UPDATE billing.subscriptions s SET plan_id = NEW.id, updated_at = now()
    WHERE s.stripe_price_id = NEW.stripe_price_id AND s.plan_id IS NULL;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION billing._record_plan_price() IS 'Internal (trigger): keeps every price a plan sells in billing.plan_prices and gives waiting subscriptions on it their plan.';

-- A price as Stripe reports it (a price event's normalised data, or a retrieved Price): kept
-- when newer than what the catalog has, so events in any order, redelivered, or racing a
-- retrieval leave the newest report. A price's unit amount never changes in Stripe (only
-- active, metadata and the like can be updated), so the amount is the same whichever wins.
CREATE OR REPLACE FUNCTION billing._sync_price(price_id text, data jsonb, as_of timestamptz) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF price_id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO billing.prices AS p (stripe_price_id, unit_amount, currency, recurring_interval, interval_count,
                                     active, synced_at)
    VALUES (price_id, (data ->> 'unit_amount')::numeric, lower(data ->> 'currency'), data ->> 'interval',
            (data ->> 'interval_count')::integer, (data ->> 'active')::boolean, as_of)
    ON CONFLICT (stripe_price_id) DO UPDATE
    SET unit_amount = excluded.unit_amount, currency = excluded.currency,
        recurring_interval = excluded.recurring_interval, interval_count = excluded.interval_count,
        active = excluded.active, synced_at = excluded.synced_at
    WHERE p.synced_at <= excluded.synced_at;
END
$$;
COMMENT ON FUNCTION billing._sync_price(text, jsonb, timestamptz) IS 'Internal: records a price''s public fields (the normalised data of a Price) in billing.prices as of a time, unless the catalog already has a newer report.';

CREATE OR REPLACE FUNCTION billing._apply_price(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM billing._sync_price(ev ->> 'object_id', ev -> 'data', to_timestamp((ev ->> 'created')::bigint));
END
$$;
COMMENT ON FUNCTION billing._apply_price(jsonb) IS 'Internal: price.created and price.updated keep the price''s amount, currency and interval in billing.prices (as of the event''s time).';

-- The pricing page's catalog: what each plan sells and what Stripe charges for it, readable by
-- anyone (anon too), without the plans' metadata (your own notes, which may not be public).
-- A plain view, run with its owner's rights: billing.plans and billing.prices stay private to
-- anon, who sees these columns only.
CREATE OR REPLACE VIEW billing.public_catalog AS
SELECT pl.id AS plan_id, pl.name, pl.kind, pl.monthly_tokens, pl.tokens, pl.stripe_price_id AS price_id,
       pr.unit_amount AS amount, pr.currency, pr.recurring_interval, pr.interval_count,
       pl.active AND coalesce(pr.active, true) AS active
FROM billing.plans pl
LEFT JOIN billing.prices pr ON pr.stripe_price_id = pl.stripe_price_id;
COMMENT ON VIEW billing.public_catalog IS 'The catalog for a pricing page, one row per plan with its current price''s amount as synced from Stripe (billing.prices); readable by anon and authenticated; no metadata.';
COMMENT ON COLUMN billing.public_catalog.plan_id IS 'The plan (billing.plans.id).';
COMMENT ON COLUMN billing.public_catalog.name IS 'Display name.';
COMMENT ON COLUMN billing.public_catalog.kind IS 'subscription or token_pack.';
COMMENT ON COLUMN billing.public_catalog.monthly_tokens IS 'Subscription plans: tokens for each paid billing period.';
COMMENT ON COLUMN billing.public_catalog.tokens IS 'Token packs: tokens per purchase.';
COMMENT ON COLUMN billing.public_catalog.price_id IS 'The Stripe price the plan sells now (pass it to billing.request_checkout).';
COMMENT ON COLUMN billing.public_catalog.amount IS 'What the price costs, in the currency''s smallest unit (cents); NULL until Stripe''s price is synced (price events, or the worker''s retrieval), and for prices without a unit amount (tiered).';
COMMENT ON COLUMN billing.public_catalog.currency IS 'Three-letter ISO currency code (lower case); NULL until synced.';
COMMENT ON COLUMN billing.public_catalog.recurring_interval IS 'day, week, month or year for a subscription price; NULL for a one-time price or until synced.';
COMMENT ON COLUMN billing.public_catalog.interval_count IS 'Intervals per billing period (3 with month: quarterly); NULL for a one-time price or until synced.';
COMMENT ON COLUMN billing.public_catalog.active IS 'Whether it can be bought: the plan is active and Stripe has not archived the price.';
