-- stripe_billing: access control (ARCHITECTURE.md §6). Runs last.
--   anon:          only the PostgREST webhook entry point billing.stripe_webhook(json).
--   authenticated: reads its own rows (RLS), the catalog, its balance; spends its own tokens;
--                  requests Checkout / Portal sessions for itself and awaits them.
--   service_role:  everything (grants, catalog, events, secrets, the worker API).
-- The roles may not exist when the extension is installed: billing.apply_grants() grants to
-- whichever exist and can be run again after creating them.

-- The functions written in Rust (extension/src) are created by pgrx; their comments live here.
COMMENT ON FUNCTION billing.stripe_signature_is_valid(text, text, text, integer, timestamptz) IS 'True when header is a valid Stripe-Signature for the exact raw payload with secret, within tolerance_seconds (default 300, 0 or NULL: no time check) of at (default now()). Never raises; NULLs give false.';
COMMENT ON FUNCTION billing.construct_event(text, text, text, integer, timestamptz) IS 'Verifies like stripe_signature_is_valid and returns the payload as jsonb; raises 28000 (no header), 22P02 (malformed header), 22023 (no v1), 28P01 (no match), 22008 (outside tolerance), 55000 (no secret), 22004 (NULL payload) or 22032 (not JSON).';
COMMENT ON FUNCTION billing.stripe_signature_header(text, text, bigint) IS 'The Stripe-Signature header Stripe would send for payload signed with secret at Unix time t. For tests and local tooling.';
COMMENT ON FUNCTION billing.verify_webhook_signature(text, text, text[], integer) IS 'Internal: verifies against several secrets (rotation) and returns the 1-based position of the first that matches; raises like construct_event otherwise.';
COMMENT ON FUNCTION billing.normalize_event(text) IS 'Internal: the API-version-independent view of a Stripe event that the webhook effects read (both the 2023-08-16 and the basil shapes); raises 22P02 for non-JSON and 22023 for JSON that is not an event.';

CREATE VIEW billing.token_grant_balances WITH (security_invoker = true) AS
SELECT g.id AS grant_id, g.user_id, g.project_id, g.source, g.tokens,
       g.tokens - g.remaining AS spent,
       CASE WHEN g.expires_at <= now() THEN 0 ELSE g.remaining END AS spendable,
       CASE WHEN g.expires_at <= now() THEN g.remaining ELSE 0 END AS expired,
       CASE WHEN g.remaining = 0 THEN 'spent' WHEN g.expires_at <= now() THEN 'expired' ELSE 'active' END AS state,
       g.expires_at, g.grant_key, g.metadata, g.created_at
FROM billing.token_grants g;
COMMENT ON VIEW billing.token_grant_balances IS 'Per-grant breakdown: spent, spendable and expired tokens of each grant. Row-level security applies (users see their own).';
COMMENT ON COLUMN billing.token_grant_balances.grant_id IS 'The grant.';
COMMENT ON COLUMN billing.token_grant_balances.user_id IS 'Owner.';
COMMENT ON COLUMN billing.token_grant_balances.project_id IS 'Project scope or NULL.';
COMMENT ON COLUMN billing.token_grant_balances.source IS 'Why the grant was made.';
COMMENT ON COLUMN billing.token_grant_balances.tokens IS 'Tokens granted.';
COMMENT ON COLUMN billing.token_grant_balances.spent IS 'Tokens spends took from it.';
COMMENT ON COLUMN billing.token_grant_balances.spendable IS 'Tokens still spendable now.';
COMMENT ON COLUMN billing.token_grant_balances.expired IS 'Tokens lost to expiry.';
COMMENT ON COLUMN billing.token_grant_balances.state IS 'active, spent or expired.';
COMMENT ON COLUMN billing.token_grant_balances.expires_at IS 'Expiry, NULL for never.';
COMMENT ON COLUMN billing.token_grant_balances.grant_key IS 'Idempotency key of the grant.';
COMMENT ON COLUMN billing.token_grant_balances.metadata IS 'Context of the grant.';
COMMENT ON COLUMN billing.token_grant_balances.created_at IS 'When it was granted.';

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
                          USING ((SELECT billing.is_privileged())) WITH CHECK ((SELECT billing.is_privileged()))$p$, t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['config', 'webhook_secrets', 'stripe_events', 'plans'] LOOP
        EXECUTE format('ALTER TABLE billing.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY privileged ON billing.%I FOR ALL
                          USING ((SELECT billing.is_privileged())) WITH CHECK ((SELECT billing.is_privileged()))$p$, t);
    END LOOP;
    CREATE POLICY catalog_readable ON billing.plans FOR SELECT USING (true);
END
$$;

CREATE FUNCTION billing.client_api()
RETURNS TABLE (role_name text, object_name text, privilege text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
    VALUES
        ('anon', 'billing.stripe_webhook(json)', 'EXECUTE'),
        ('authenticated', 'billing.current_user_id()', 'EXECUTE'),
        ('authenticated', 'billing.is_privileged()', 'EXECUTE'),
        ('authenticated', 'billing.no_project()', 'EXECUTE'),
        ('authenticated', 'billing.live_balance(uuid,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.token_balance(uuid,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.spend_my_tokens(bigint,uuid,text,text)', 'EXECUTE'),
        ('authenticated', 'billing.request_checkout(text,text,text,text,uuid,text,boolean,integer)', 'EXECUTE'),
        ('authenticated', 'billing.request_portal(text)', 'EXECUTE'),
        ('authenticated', 'billing.await_request(uuid,integer)', 'EXECUTE'),
        ('authenticated', 'billing.plans', 'SELECT'),
        ('authenticated', 'billing.projects', 'SELECT'),
        ('authenticated', 'billing.customers', 'SELECT'),
        ('authenticated', 'billing.subscriptions', 'SELECT'),
        ('authenticated', 'billing.token_grants', 'SELECT'),
        ('authenticated', 'billing.token_spends', 'SELECT'),
        ('authenticated', 'billing.token_spend_allocations', 'SELECT'),
        ('authenticated', 'billing.token_grant_balances', 'SELECT'),
        ('authenticated', 'billing.stripe_requests', 'SELECT')
$$;
COMMENT ON FUNCTION billing.client_api() IS 'The complete list of what the client roles anon and authenticated may use; billing.apply_grants() grants exactly this and billing.security_report() flags anything more.';

CREATE FUNCTION billing.apply_grants() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
    applied text[] := '{}';
BEGIN
    REVOKE ALL ON ALL TABLES IN SCHEMA billing FROM PUBLIC;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA billing FROM PUBLIC;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC;
    -- Start the client roles from nothing, so a stray grant made by hand does not survive.
    FOR a IN SELECT r.rolname FROM pg_roles r WHERE r.rolname IN ('anon', 'authenticated') LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA billing FROM %I', a.rolname);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA billing FROM %I', a.rolname);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA billing FROM %I', a.rolname);
    END LOOP;
    FOR a IN SELECT c.role_name, c.object_name, c.privilege FROM billing.client_api() c
             WHERE EXISTS (SELECT FROM pg_roles r WHERE r.rolname = c.role_name) LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA billing TO %I', a.role_name);
        IF a.privilege = 'EXECUTE' THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', a.object_name, a.role_name);
        ELSE
            EXECUTE format('GRANT %s ON %s TO %I', a.privilege, a.object_name, a.role_name);
        END IF;
        applied := array_append(applied, a.role_name);
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT USAGE ON SCHEMA billing TO service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA billing TO service_role;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA billing TO service_role;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA billing TO service_role;
        applied := array_append(applied, 'service_role');
    END IF;
    RETURN 'granted to: ' || coalesce(nullif(array_to_string(ARRAY(SELECT DISTINCT unnest(applied) ORDER BY 1), ', '), ''), 'no client roles (none exist yet)');
END
$$;
COMMENT ON FUNCTION billing.apply_grants() IS 'Owner/superuser: grants anon, authenticated and service_role exactly what they may use (see billing.client_api()), for whichever of them exist. Run it again after creating those roles.';

CREATE FUNCTION billing.security_report()
RETURNS TABLE (object_type text, object_name text, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    -- Tables without row-level security.
    SELECT 'table', c.oid::regclass::text, 'row level security is not enabled'
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'billing' AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
    UNION ALL
    -- SECURITY DEFINER functions that do not pin search_path.
    SELECT 'function', p.oid::regprocedure::text, 'SECURITY DEFINER without a pinned search_path'
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'billing' AND p.prosecdef
      AND NOT EXISTS (SELECT FROM unnest(p.proconfig) cfg WHERE cfg LIKE 'search_path=%')
    UNION ALL
    -- Functions a client role can execute but should not.
    SELECT 'function', p.oid::regprocedure::text, format('executable by %s but not part of its API', r.rolname)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    CROSS JOIN pg_roles r
    WHERE n.nspname = 'billing' AND r.rolname IN ('anon', 'authenticated')
      AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
      AND NOT EXISTS (SELECT FROM billing.client_api() a
                      WHERE a.role_name = r.rolname AND a.privilege = 'EXECUTE'
                        AND to_regprocedure(a.object_name) = p.oid)
    UNION ALL
    -- Tables and views a client role can touch beyond its API.
    SELECT 'table', c.oid::regclass::text, format('%s has %s but should not', r.rolname, priv)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN pg_roles r
    CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) priv
    WHERE n.nspname = 'billing' AND c.relkind IN ('r', 'p', 'v') AND r.rolname IN ('anon', 'authenticated')
      AND has_table_privilege(r.oid, c.oid, priv)
      AND NOT EXISTS (SELECT FROM billing.client_api() a
                      WHERE a.role_name = r.rolname AND a.privilege = priv
                        AND a.privilege <> 'EXECUTE' AND to_regclass(a.object_name) = c.oid)
    ORDER BY 1, 2, 3
$$;
COMMENT ON FUNCTION billing.security_report() IS 'Lists security problems: tables without row-level security, SECURITY DEFINER functions without a pinned search_path, and anything anon or authenticated can execute or touch beyond billing.client_api(). Empty means clean.';

SELECT billing.apply_grants();
