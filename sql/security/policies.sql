-- Access control, part 1: row-level security on every table. Users see their own rows;
-- privileged roles see and change everything (DESIGN.md, "Security").

-- Row-level security: users see their own rows; privileged roles see and change everything.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'subscriptions', 'token_grants', 'token_spends',
                             'token_spend_allocations', 'stripe_requests', 'projects'] LOOP
        EXECUTE format('ALTER TABLE billing.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY own_rows ON billing.%I FOR SELECT
                          USING (user_id = (SELECT billing.current_user_id()))$p$, t);
        EXECUTE format($p$CREATE POLICY privileged ON billing.%I FOR ALL
                          USING ((SELECT billing._is_privileged())) WITH CHECK ((SELECT billing._is_privileged()))$p$, t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['config', 'webhook_secrets', 'stripe_events', 'plans'] LOOP
        EXECUTE format('ALTER TABLE billing.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY privileged ON billing.%I FOR ALL
                          USING ((SELECT billing._is_privileged())) WITH CHECK ((SELECT billing._is_privileged()))$p$, t);
    END LOOP;
    CREATE POLICY catalog_readable ON billing.plans FOR SELECT USING (true);
END
$$;
