-- Accounts and teams (issue 23, item 1; DESIGN.md, "Accounts"): who may see and spend what.
-- Every function here is SECURITY DEFINER with a pinned search_path and checks the caller's
-- role itself; users never write the account tables directly.

-- The teams half of the owner test of the row-level security policies (billing._protect_table):
-- a row is the caller's when its user_id is theirs or one of these. SECURITY DEFINER so that it
-- reads account_members past that table's own policy (which uses it too); in a policy it runs
-- once per statement (an initPlan, or the hashed subplan's one build).
CREATE OR REPLACE FUNCTION billing._team_accounts() RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing.current_user_id();
BEGIN
    IF uid IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN ARRAY(SELECT m.account_id FROM billing.account_members m WHERE m.user_id = uid);
END
$$;
COMMENT ON FUNCTION billing._team_accounts() IS 'Internal: the teams the signed-in user is a member of (empty when none or not signed in): with their own id, the accounts whose rows the row-level security policies let them read.';

CREATE OR REPLACE FUNCTION billing._visible_accounts() RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing.current_user_id();
BEGIN
    IF uid IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN array_prepend(uid, billing._team_accounts());
END
$$;
COMMENT ON FUNCTION billing._visible_accounts() IS 'Internal: the accounts the signed-in user may read and use: their personal account (their own id) and every team they are a member of; empty when not signed in.';

CREATE OR REPLACE FUNCTION billing._account_role(account_id uuid, user_id uuid) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    -- A user is the owner of their personal account.
    SELECT CASE WHEN account_id = user_id THEN 'owner'
                ELSE (SELECT m.role FROM billing.account_members m
                      WHERE m.account_id = _account_role.account_id AND m.user_id = _account_role.user_id) END
$$;
COMMENT ON FUNCTION billing._account_role(uuid, uuid) IS 'Internal: the role (owner, admin, member) of user_id in account_id, owner for their personal account, NULL when they are not a member.';

-- Refuses unless the caller has one of the roles in account_id. Unknown teams and teams the
-- caller is not in get the same answer, so the error tells nobody which team ids exist.
CREATE OR REPLACE FUNCTION billing._require_account_role(account_id uuid, roles text[]) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    role text;
BEGIN
    PERFORM billing._check_not_null(account_id, 'account_id');
    role := billing._account_role(account_id, uid);
    IF role IS NULL OR NOT role = ANY (roles) THEN
        RAISE EXCEPTION 'permission denied: you are not % of account %', array_to_string(roles, ' or '), account_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only members with that role in the team may do this; billing.account_members lists yours.';
    END IF;
    RETURN role;
END
$$;
COMMENT ON FUNCTION billing._require_account_role(uuid, text[]) IS 'Internal: the signed-in caller''s role in account_id, or 42501 unless it is one of roles (28000 when not signed in, 22004 for a NULL account).';

CREATE OR REPLACE FUNCTION billing.create_team(name text) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    team uuid;
BEGIN
    PERFORM billing._check_not_null(name, 'name');
    IF length(btrim(name)) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'name must be 1 to 200 characters, not blank' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO billing.accounts (name, created_by) VALUES (btrim(name), uid) RETURNING id INTO team;
    INSERT INTO billing.account_members (account_id, user_id, role) VALUES (team, uid, 'owner');
    RETURN team;
END
$$;
COMMENT ON FUNCTION billing.create_team(text) IS 'For signed-in users: creates a team account named name (1 to 200 characters) with the caller as its owner and returns its id; buy for it with billing.request_checkout(..., account_id => id). 22004 for NULL, 22023 for a blank or long name.';

CREATE OR REPLACE FUNCTION billing._member_json(m billing.account_members) RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
    SELECT jsonb_build_object('account_id', m.account_id, 'user_id', m.user_id, 'role', m.role,
                              'spend_limit', m.spend_limit, 'added_at', m.added_at)
$$;
COMMENT ON FUNCTION billing._member_json(billing.account_members) IS 'Internal: the JSON shape the member functions return.';

-- Every membership change of a team locks the team's row first, so "at least one owner" holds
-- however many owners and admins change members at once.
CREATE OR REPLACE FUNCTION billing._lock_team(account_id uuid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM billing.accounts a WHERE a.id = account_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'permission denied: account % is not a team of yours', account_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Members are managed on teams (billing.create_team); a personal account has none.';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._lock_team(uuid) IS 'Internal: locks a team''s row for a membership change; 42501 when there is no such team (a personal account has no members).';

CREATE OR REPLACE FUNCTION billing.set_team_member(account_id uuid, user_id uuid, role text DEFAULT 'member',
                                                   spend_limit bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    mine text;
    theirs text;
    m billing.account_members;
BEGIN
    PERFORM billing._check_not_null(account_id, 'account_id');
    PERFORM billing._check_not_null(user_id, 'user_id');
    PERFORM billing._check_not_null(role, 'role');
    IF role NOT IN ('owner', 'admin', 'member') THEN
        RAISE EXCEPTION 'role must be owner, admin or member, got %', quote_literal(left(role, 40))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF spend_limit IS NOT NULL AND (spend_limit < 0 OR spend_limit > 1000000000000) THEN
        RAISE EXCEPTION 'spend_limit must be between 0 and 1000000000000 or NULL, got %', spend_limit
            USING ERRCODE = 'invalid_parameter_value', HINT = 'NULL means no limit of the member''s own.';
    END IF;
    IF user_id = account_id THEN
        RAISE EXCEPTION 'a team cannot be a member of itself' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    mine := billing._require_account_role(account_id, ARRAY['owner', 'admin']);
    PERFORM billing._lock_team(account_id);
    PERFORM billing._check_user_exists(user_id);
    theirs := billing._account_role(account_id, user_id);
    -- Admins manage members and admins; only an owner makes or changes an owner.
    IF mine <> 'owner' AND (role = 'owner' OR theirs = 'owner') THEN
        RAISE EXCEPTION 'permission denied: only an owner may make or change an owner'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF theirs = 'owner' AND role <> 'owner' THEN
        PERFORM billing._keep_an_owner(account_id, user_id);
    END IF;
    IF theirs IS NULL THEN
        PERFORM billing._check_free_seat(account_id);
    END IF;
    INSERT INTO billing.account_members AS a (account_id, user_id, role, spend_limit)
    VALUES (set_team_member.account_id, set_team_member.user_id, set_team_member.role, set_team_member.spend_limit)
    ON CONFLICT ON CONSTRAINT account_members_pkey
    DO UPDATE SET role = excluded.role, spend_limit = excluded.spend_limit
    RETURNING * INTO m;
    RETURN billing._member_json(m);
END
$$;
COMMENT ON FUNCTION billing.set_team_member(uuid, uuid, text, bigint) IS 'For a team''s owners and admins: adds user_id to the team, or changes their role and spend_limit (tokens per calendar month, UTC; NULL = none); returns the member. Only owners make or change owners, and the last owner stays one (BL021); a new member needs a free seat when the team''s subscription has seats (BL022, billing._team_seats). 42501 for callers without the role (or an unknown team), 22004 for NULLs, 22023 for a bad role or limit, P0002 for a user not in auth.users.';

CREATE OR REPLACE FUNCTION billing._keep_an_owner(account_id uuid, leaving uuid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM billing.account_members m
                   WHERE m.account_id = _keep_an_owner.account_id AND m.role = 'owner' AND m.user_id <> leaving) THEN
        RAISE EXCEPTION 'account % would be left without an owner', account_id
            USING ERRCODE = 'BL021', HINT = 'Make another member an owner first (billing.set_team_member).';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._keep_an_owner(uuid, uuid) IS 'Internal: BL021 unless the team keeps an owner other than leaving; call it with the team''s row locked.';

CREATE OR REPLACE FUNCTION billing.remove_team_member(account_id uuid, user_id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    mine text;
    theirs text;
BEGIN
    PERFORM billing._check_not_null(account_id, 'account_id');
    PERFORM billing._check_not_null(user_id, 'user_id');
    -- Anyone may leave; owners and admins remove others.
    mine := billing._require_account_role(account_id,
        CASE WHEN user_id = uid THEN ARRAY['owner', 'admin', 'member'] ELSE ARRAY['owner', 'admin'] END);
    PERFORM billing._lock_team(account_id);
    theirs := billing._account_role(account_id, user_id);
    IF theirs IS NULL THEN
        RETURN false;
    END IF;
    IF theirs = 'owner' THEN
        IF mine <> 'owner' THEN
            RAISE EXCEPTION 'permission denied: only an owner may remove an owner' USING ERRCODE = 'insufficient_privilege';
        END IF;
        PERFORM billing._keep_an_owner(account_id, user_id);
    END IF;
    -- Waits for the member's spend in flight (it holds their row), after which they can neither
    -- spend nor read the team's rows.
    DELETE FROM billing.account_members m
    WHERE m.account_id = remove_team_member.account_id AND m.user_id = remove_team_member.user_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION billing.remove_team_member(uuid, uuid) IS 'For a team''s owners and admins (and any member removing themselves): removes user_id from the team at once: their next spend and read of the team''s rows are refused. True when they were a member, false when not. Only owners remove owners, never the last one (BL021); 42501 for callers without the role, 22004 for NULLs.';

CREATE OR REPLACE FUNCTION billing.spend_account_tokens(account_id uuid, amount bigint, project_id uuid DEFAULT NULL,
                                                        reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    m billing.account_members;
    key text;
    used bigint;
    result jsonb;
BEGIN
    PERFORM billing._check_not_null(account_id, 'account_id');
    IF account_id = uid THEN
        RETURN billing._spend(uid, amount, project_id, reason, idempotency_key, 'user');  -- spend_my_tokens
    END IF;
    PERFORM billing._check_not_null(amount, 'amount');
    IF idempotency_key IS NOT NULL AND length(idempotency_key) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The member's row, locked: their spends of this team run one at a time (so the limit holds
    -- under concurrency), and a removal waits for the spend in flight and then refuses the next.
    SELECT * INTO m FROM billing.account_members a
    WHERE a.account_id = spend_account_tokens.account_id AND a.user_id = uid
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'permission denied: you are not a member of account %', account_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Each member's keys are their own: the team's ledger stores them under the member's id.
    key := uid || ':' || idempotency_key;
    IF m.spend_limit IS NOT NULL AND amount > 0
       AND NOT EXISTS (SELECT FROM billing.token_spends s
                       WHERE s.user_id = spend_account_tokens.account_id AND s.key_scope = 'user' AND s.idempotency_key = key) THEN
        SELECT coalesce(sum(s.amount), 0) INTO used FROM billing.token_spends s
        WHERE s.user_id = spend_account_tokens.account_id AND s.spent_by = uid
          AND s.created_at >= date_trunc('month', now(), 'UTC');
        IF used + amount > m.spend_limit THEN
            RAISE EXCEPTION 'spend limit reached: % of your % tokens this month spent, requested %', used, m.spend_limit, amount
                USING ERRCODE = 'BL020',
                      HINT = 'A team owner or admin sets the limit (billing.set_team_member); it starts again on the 1st (UTC).';
        END IF;
    END IF;
    result := billing._spend(account_id, amount, project_id, reason, key, 'user');
    IF NOT (result ->> 'duplicate')::boolean THEN
        UPDATE billing.token_spends s SET spent_by = uid WHERE s.id = (result ->> 'spend_id')::bigint;
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION billing.spend_account_tokens(uuid, bigint, uuid, text, text) IS 'For signed-in users: spends tokens of an account they belong to: their own id (as billing.spend_my_tokens) or a team of theirs, recording who spent (token_spends.spent_by). A member with a spend_limit is refused beyond it for the calendar month (BL020); BL001 when the wallet is short, 42501 for non-members (and members just removed). Idempotency keys (1 to 200 characters for teams) are each member''s own.';

-- The active account of billing.has_feature / feature_limit: a header the app sends with the
-- request (PostgREST puts headers in request.headers), so a policy's (select has_feature(...))
-- stays one call per statement; without it the personal account.
CREATE OR REPLACE FUNCTION billing.active_account() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing.current_user_id();
    headers text := current_setting('request.headers', true);
    chosen text;
BEGIN
    IF uid IS NULL THEN
        RETURN NULL;
    END IF;
    IF headers IS NOT NULL AND headers <> '' THEN
        BEGIN
            chosen := headers::jsonb ->> 'x-billing-account';
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'request.headers is not valid JSON' USING ERRCODE = 'invalid_text_representation';
        END;
    END IF;
    IF chosen IS NULL OR chosen = '' THEN
        RETURN uid;
    END IF;
    IF chosen !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RAISE EXCEPTION 'the X-Billing-Account header is not an account id (uuid)' USING ERRCODE = 'invalid_text_representation';
    END IF;
    -- An account the caller does not belong to is nobody's: they get nothing from it.
    IF chosen::uuid = ANY (billing._visible_accounts()) THEN
        RETURN chosen::uuid;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION billing.active_account() IS 'The signed-in user''s active account: the X-Billing-Account request header (request.headers) when it names an account they belong to, NULL when it names another (and when not signed in), else their personal account (their own id). billing.has_feature(feature) and billing.feature_limit(feature) answer for it. 22P02 for a header that is not a uuid.';
