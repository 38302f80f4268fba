-- The catalog: resolving Stripe prices to plans.

CREATE OR REPLACE FUNCTION billing._plan_for_price(price_id text) RETURNS billing.plans
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    p billing.plans;
BEGIN
    SELECT * INTO p FROM billing.plans WHERE stripe_price_id = price_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown price %: no row in billing.plans has this stripe_price_id', coalesce(price_id, '(none)')
            USING ERRCODE = 'BL006',
                  HINT = 'Add the plan to billing.plans, then run SELECT billing.reprocess_events().';
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION billing._plan_for_price(text) IS 'Internal: the catalog row for a Stripe price, or error BL006 (the event is kept and can be re-applied once the catalog has it).';
