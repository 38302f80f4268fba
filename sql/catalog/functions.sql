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
