-- Identity: who is calling. PostgREST and Supabase put the verified JWT claims in the
-- setting request.jwt.claims; the user id is its "sub" claim (what auth.uid() reads).

CREATE OR REPLACE FUNCTION billing.current_user_id() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    claims text := current_setting('request.jwt.claims', true);
    sub text;
BEGIN
    IF claims IS NOT NULL AND claims <> '' THEN
        BEGIN
            sub := claims::jsonb ->> 'sub';
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'request.jwt.claims is not valid JSON'
                USING ERRCODE = 'invalid_text_representation',
                      HINT = 'Set it to the verified JWT payload, e.g. {"sub":"<user uuid>","role":"authenticated"}.';
        END;
    END IF;
    -- Older PostgREST versions set one setting per claim.
    sub := coalesce(sub, nullif(current_setting('request.jwt.claim.sub', true), ''));
    IF sub IS NULL THEN
        RETURN NULL;
    END IF;
    IF sub !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RAISE EXCEPTION 'the JWT sub claim is not a user id (uuid)'
            USING ERRCODE = 'invalid_text_representation',
                  HINT = 'stripe_billing keys users by uuid, as Supabase auth.users.id.';
    END IF;
    RETURN sub::uuid;
END
$$;
COMMENT ON FUNCTION billing.current_user_id() IS 'The calling user''s id: the sub claim of request.jwt.claims (as auth.uid() in Supabase), NULL when there is none.';

CREATE OR REPLACE FUNCTION billing._require_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing.current_user_id();
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'not authenticated: no user id in request.jwt.claims'
            USING ERRCODE = 'invalid_authorization_specification',
                  HINT = 'Call this as a signed-in user (role authenticated with a JWT whose sub is the user id).';
    END IF;
    RETURN uid;
END
$$;
COMMENT ON FUNCTION billing._require_user() IS 'Internal: billing.current_user_id(), or an error (SQLSTATE 28000) when the caller is not signed in.';

CREATE OR REPLACE FUNCTION billing._is_privileged() RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- PL/pgSQL so the catalog lookups are planned once per session, not on every call.
    RETURN (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user)
        OR pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'billing'), 'MEMBER')
        OR (EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role')
            AND pg_has_role(current_user, 'service_role', 'MEMBER'));
END
$$;
COMMENT ON FUNCTION billing._is_privileged() IS 'Internal: true when the current role may act for any user: a superuser, a BYPASSRLS role, the schema owner, or a member of service_role.';

CREATE OR REPLACE FUNCTION billing._check_user_exists(user_id uuid) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    present boolean;
BEGIN
    PERFORM billing._check_not_null(user_id, 'user_id');
    -- On Supabase the users live in auth.users; elsewhere any uuid is a user. A team's account
    -- id stands where a user id does (a grant to the team's wallet).
    IF to_regclass('auth.users') IS NOT NULL AND NOT EXISTS (SELECT FROM billing.accounts a WHERE a.id = user_id) THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM auth.users WHERE id = $1)' INTO present USING user_id;
        IF NOT present THEN
            RAISE EXCEPTION 'unknown user %', user_id
                USING ERRCODE = 'no_data_found', HINT = 'The id is not in auth.users.';
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION billing._check_user_exists(uuid) IS 'Internal: raises P0002 when auth.users exists (Supabase) and has no such user, nor is it a team''s account id.';
