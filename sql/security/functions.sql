-- Access control, part 2: the roles' API and the functions that grant and audit it.
--   anon:          the PostgREST webhook entry point billing.stripe_webhook(json) and the
--                  pricing page's billing.public_catalog.
--   authenticated: reads its own rows (RLS), the catalog, its balance; spends its own tokens;
--                  requests Checkout / Portal sessions for itself and awaits them.
--   service_role:  everything (grants, catalog, events, secrets, the worker API).
-- The roles may not exist when the extension is installed: billing.apply_grants() grants to
-- whichever exist and can be run again after creating them.

CREATE OR REPLACE FUNCTION billing._protect_table(t regclass, own_rows boolean) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
    IF own_rows AND NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = t AND p.polname = 'own_rows') THEN
        -- The caller's accounts: their own id, then their teams' (billing._team_accounts). Every
        -- row is tested (the privileged arm rules out an index), so the common case stays one
        -- uuid comparison: the teams' hashed lookup runs only for members of a team.
        EXECUTE format($p$CREATE POLICY own_rows ON %s FOR SELECT
                          USING (user_id = (SELECT billing.current_user_id())
                                 OR ((SELECT cardinality(billing._team_accounts()) > 0)
                                     AND user_id IN (SELECT unnest(billing._team_accounts()))))$p$, t);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = t AND p.polname = 'privileged') THEN
        EXECUTE format($p$CREATE POLICY privileged ON %s FOR ALL
                          USING ((SELECT billing._is_privileged())) WITH CHECK ((SELECT billing._is_privileged()))$p$, t);
    END IF;
END
$$;
COMMENT ON FUNCTION billing._protect_table(regclass, boolean) IS 'Internal: row-level security for a table: privileged roles may do anything, and with own_rows users may read the rows whose user_id is one of their accounts (their own id or a team of theirs, billing._team_accounts()).';

CREATE OR REPLACE FUNCTION billing.client_api()
RETURNS TABLE (role_name text, object_name text, privilege text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
    VALUES
        ('anon', 'billing.stripe_webhook(json)', 'EXECUTE'),
        ('anon', 'billing.public_catalog', 'SELECT'),
        -- Entitlements sit in app policies that anon's queries run too: false/NULL for anon.
        ('anon', 'billing.has_feature(text)', 'EXECUTE'),
        ('anon', 'billing.feature_limit(text)', 'EXECUTE'),
        ('authenticated', 'billing.public_catalog', 'SELECT'),
        ('authenticated', 'billing.current_user_id()', 'EXECUTE'),
        ('authenticated', 'billing._is_privileged()', 'EXECUTE'),
        ('authenticated', 'billing._no_project()', 'EXECUTE'),
        ('authenticated', 'billing._live_balance(uuid,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.token_balance(uuid,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.spend_my_tokens(bigint,uuid,text,text)', 'EXECUTE'),
        ('authenticated', 'billing.subscription_status(uuid)', 'EXECUTE'),
        ('authenticated', 'billing.my_subscription()', 'EXECUTE'),
        ('authenticated', 'billing.has_feature(text)', 'EXECUTE'),
        ('authenticated', 'billing.feature_limit(text)', 'EXECUTE'),
        ('authenticated', 'billing.my_features()', 'EXECUTE'),
        -- Accounts and teams (sql/accounts/functions.sql).
        ('authenticated', 'billing._visible_accounts()', 'EXECUTE'),
        ('authenticated', 'billing._team_accounts()', 'EXECUTE'),
        ('authenticated', 'billing.active_account()', 'EXECUTE'),
        ('authenticated', 'billing.has_feature(text,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.feature_limit(text,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.create_team(text)', 'EXECUTE'),
        ('authenticated', 'billing.set_team_member(uuid,uuid,text,bigint)', 'EXECUTE'),
        ('authenticated', 'billing.remove_team_member(uuid,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.spend_account_tokens(uuid,bigint,uuid,text,text)', 'EXECUTE'),
        ('authenticated', 'billing.request_seat_change(uuid,integer)', 'EXECUTE'),
        ('authenticated', 'billing.accounts', 'SELECT'),
        ('authenticated', 'billing.account_members', 'SELECT'),
        ('authenticated', 'billing._require_user()', 'EXECUTE'),
        ('authenticated', 'billing.request_checkout(text,text,text,text,uuid,text,boolean,integer,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.request_portal(text,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.await_request(uuid,integer)', 'EXECUTE'),
        ('authenticated', 'billing.plans', 'SELECT'),
        ('authenticated', 'billing.projects', 'SELECT'),
        ('authenticated', 'billing.customers', 'SELECT'),
        ('authenticated', 'billing.subscriptions', 'SELECT'),
        ('authenticated', 'billing.token_grants', 'SELECT'),
        ('authenticated', 'billing.token_spends', 'SELECT'),
        ('authenticated', 'billing.token_spend_allocations', 'SELECT'),
        ('authenticated', 'billing.token_grant_balances', 'SELECT'),
        ('authenticated', 'billing.stripe_requests', 'SELECT'),
        ('authenticated', 'billing.notifications', 'SELECT'),
        ('authenticated', 'billing.token_debt(uuid,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.purchases', 'SELECT'),
        ('authenticated', 'billing.token_reversals', 'SELECT'),
        ('authenticated', 'billing.token_debts', 'SELECT'),
        ('authenticated', 'billing.token_debt_settlements', 'SELECT'),
        ('authenticated', 'billing.token_overage(uuid)', 'EXECUTE'),
        ('authenticated', 'billing.token_overages', 'SELECT'),
        ('authenticated', 'billing.set_my_low_balance_alert(bigint,uuid,boolean,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.my_credit_settings(uuid)', 'EXECUTE'),
        ('authenticated', 'billing.credit_settings(uuid)', 'EXECUTE'),
        ('authenticated', 'billing._alert_defaults()', 'EXECUTE'),
        ('authenticated', 'billing.balance_alerts', 'SELECT'),
        ('authenticated', 'billing.expiry_warnings', 'SELECT'),
        ('authenticated', 'billing.auto_top_ups', 'SELECT'),
        ('authenticated', 'billing.pack_passes', 'SELECT'),
        ('authenticated', 'billing.set_my_auto_top_up(text,bigint,integer,bigint,uuid)', 'EXECUTE'),
        ('authenticated', 'billing.disable_my_auto_top_up(uuid)', 'EXECUTE')
$$;
COMMENT ON FUNCTION billing.client_api() IS 'The complete list of what the client roles anon and authenticated may use; billing.apply_grants() grants exactly this and billing.security_report() flags anything more.';

CREATE OR REPLACE FUNCTION billing.apply_grants() RETURNS text
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

CREATE OR REPLACE FUNCTION billing.security_report()
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
    UNION ALL
    -- Functions every role may execute: a client role that exists later would inherit them.
    SELECT 'function', p.oid::regprocedure::text, 'executable by PUBLIC'
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) acl
    WHERE n.nspname = 'billing' AND acl.grantee = 0 AND acl.privilege_type = 'EXECUTE'
    UNION ALL
    -- Functions created in billing later start executable by PUBLIC unless the event trigger
    -- takes that back, or the owner's default privileges no longer grant it: only a default
    -- without IN SCHEMA can revoke it, and it covers every schema. The pure-SQL edition has the
    -- event trigger only where its installer may create one (a superuser, or supautils).
    SELECT 'event trigger', 'billing_new_functions_private',
           format('missing or disabled: new functions in billing would be executable by PUBLIC (create it as a superuser, or run ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC)',
                  n.nspowner::regrole)
    FROM pg_namespace n
    WHERE n.nspname = 'billing'
      AND NOT EXISTS (SELECT FROM pg_event_trigger e WHERE e.evtname = 'billing_new_functions_private' AND e.evtenabled <> 'D')
      AND EXISTS (SELECT FROM aclexplode(coalesce((SELECT d.defaclacl FROM pg_default_acl d
                                                   WHERE d.defaclrole = n.nspowner AND d.defaclnamespace = 0
                                                     AND d.defaclobjtype = 'f'),
                                                  acldefault('f', n.nspowner))) acl
                  WHERE acl.grantee = 0 AND acl.privilege_type = 'EXECUTE')
    ORDER BY 1, 2, 3
$$;
COMMENT ON FUNCTION billing.security_report() IS 'Lists security problems: tables without row-level security, SECURITY DEFINER functions without a pinned search_path, anything anon or authenticated can execute or touch beyond billing.client_api(), functions executable by PUBLIC, and functions added later becoming executable by PUBLIC (no event trigger, and the owner''s default privileges still grant it). Empty means clean.';

CREATE OR REPLACE FUNCTION billing._new_functions_private() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    obj record;
BEGIN
    -- Postgres lets PUBLIC execute every new function, and a per-schema default privilege
    -- cannot take that back; this does, for every function created in billing later.
    FOR obj IN SELECT c.objid FROM pg_event_trigger_ddl_commands() c
               WHERE c.schema_name = 'billing' AND c.object_type IN ('function', 'procedure') LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', obj.objid::regprocedure);
    END LOOP;
END
$$;
COMMENT ON FUNCTION billing._new_functions_private() IS 'Internal (event trigger): a function created in schema billing is not executable by PUBLIC; billing.apply_grants() decides who may run it.';
