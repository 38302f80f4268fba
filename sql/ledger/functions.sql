-- The token ledger: granting, spending and balances. A spend takes from grants soonest-expiring
-- first, never-expiring last, then oldest, locking each grant row it takes from, so concurrent
-- spends for one user serialise and can never overspend.

CREATE OR REPLACE FUNCTION billing._grant_json(g billing.token_grants, duplicate boolean) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RETURN jsonb_build_object('grant_id', g.id, 'user_id', g.user_id, 'project_id', g.project_id,
        'source', g.source, 'tokens', g.tokens, 'remaining', g.remaining,
        'expires_at', g.expires_at, 'grant_key', g.grant_key, 'duplicate', duplicate);
END
$$;
COMMENT ON FUNCTION billing._grant_json(billing.token_grants, boolean) IS 'Internal: the JSON shape grant functions return.';

-- Inserts a grant without argument checks; callers validate. Internal (no SET clause: it runs
-- inside SECURITY DEFINER callers and inherits their pinned search_path). A repeated grant_key returns the
-- existing grant (duplicate = true) when it describes the same grant, and fails otherwise.
CREATE OR REPLACE FUNCTION billing._insert_grant(user_id uuid, tokens bigint, source text, expires_at timestamptz,
                                     project_id uuid, grant_key text, metadata jsonb,
                                     purchase_id text DEFAULT NULL, collect_debts boolean DEFAULT true,
                                     OUT g billing.token_grants, OUT duplicate boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    -- remaining starts at tokens (billing._starts_full sets it).
    INSERT INTO billing.token_grants AS t (user_id, project_id, source, tokens, expires_at, grant_key, metadata,
                                           purchase_id)
    VALUES (_insert_grant.user_id, _insert_grant.project_id, _insert_grant.source, _insert_grant.tokens,
            _insert_grant.expires_at, _insert_grant.grant_key, coalesce(_insert_grant.metadata, '{}'),
            _insert_grant.purchase_id)
    ON CONFLICT (grant_key) DO NOTHING
    RETURNING * INTO g;
    duplicate := NOT FOUND;
    IF NOT duplicate THEN
        -- Later grants pay off debts first (sql/payments/reversals.sql).
        IF collect_debts AND (billing._settings()).debt_policy = 'collect' AND billing._collect_debts(g) > 0 THEN
            SELECT * INTO g FROM billing.token_grants t WHERE t.id = g.id;
        END IF;
        -- Low-balance alerts: the balance rose (sql/alerts/functions.sql).
        PERFORM billing._rearm_balance_alert(g.user_id, g.project_id);
        RETURN;
    END IF;
    SELECT * INTO STRICT g FROM billing.token_grants t WHERE t.grant_key = _insert_grant.grant_key;
    IF g.user_id IS DISTINCT FROM _insert_grant.user_id OR g.project_id IS DISTINCT FROM _insert_grant.project_id
       OR g.tokens <> _insert_grant.tokens THEN
        RAISE EXCEPTION 'grant_key % was already used for a different grant', grant_key
            USING ERRCODE = 'BL004',
                  DETAIL = format('existing grant %s: %s tokens for user %s', g.id, g.tokens, g.user_id),
                  HINT = 'A grant key identifies one grant (e.g. one Stripe invoice); use a new key for a new grant.';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._insert_grant(uuid, bigint, text, timestamptz, uuid, text, jsonb, text, boolean) IS 'Internal: inserts a grant, idempotent on grant_key, recording the purchase that funded it; a new grant first pays off the balance''s debts (unless collect_debts is false). Returns the grant and whether it existed already. Use billing.grant_tokens.';

CREATE OR REPLACE FUNCTION billing.grant_tokens(user_id uuid, tokens bigint, source text DEFAULT 'manual',
                                     expires_at timestamptz DEFAULT NULL, project_id uuid DEFAULT NULL,
                                     grant_key text DEFAULT NULL, metadata jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inserted record;
BEGIN
    PERFORM billing._check_user_exists(user_id);
    PERFORM billing._check_not_null(tokens, 'tokens');
    IF tokens <= 0 OR tokens > 1000000000000 THEN
        RAISE EXCEPTION 'tokens must be between 1 and 1000000000000, got %', tokens
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM billing._check_not_null(source, 'source');
    IF source !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'source must be a short lower-case identifier such as manual or promo, got %', quote_literal(left(source, 60))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF expires_at IS NOT NULL AND (NOT isfinite(expires_at) OR expires_at <= now()) THEN
        RAISE EXCEPTION 'expires_at must be a finite time in the future, got %', expires_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for tokens that never expire.';
    END IF;
    IF grant_key IS NOT NULL AND (length(grant_key) = 0 OR length(grant_key) > 255) THEN
        RAISE EXCEPTION 'grant_key must be 1 to 255 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF metadata IS NOT NULL AND jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM billing._check_project(user_id, project_id);
    SELECT * INTO inserted FROM billing._insert_grant(user_id, tokens, source, expires_at, project_id, grant_key, metadata);
    RETURN billing._grant_json(inserted.g, inserted.duplicate);
END
$$;
COMMENT ON FUNCTION billing.grant_tokens(uuid, bigint, text, timestamptz, uuid, text, jsonb) IS 'Privileged: gives tokens to a user (or one of their projects). A repeated grant_key returns the existing grant with duplicate = true and grants nothing.';

-- The shared core of spend_tokens and spend_my_tokens.
CREATE OR REPLACE FUNCTION billing._spend(user_id uuid, amount bigint, project_id uuid, reason text, idempotency_key text,
                                          key_scope text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_spend_id bigint;
    existing billing.token_spends;
    left_to_take bigint := amount;
    take bigint;
    g record;
    balance_after bigint;
    balance_before bigint;
BEGIN
    PERFORM billing._check_not_null(user_id, 'user_id');
    PERFORM billing._check_not_null(amount, 'amount');
    IF amount <= 0 OR amount > 1000000000000 THEN
        RAISE EXCEPTION 'amount must be between 1 and 1000000000000, got %', amount
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF reason IS NOT NULL AND length(reason) > 500 THEN
        RAISE EXCEPTION 'reason must be at most 500 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF idempotency_key IS NOT NULL AND (length(idempotency_key) = 0 OR length(idempotency_key) > 255) THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM billing._check_project(user_id, project_id);

    -- Claim the idempotency key first: a concurrent spend with the same key waits here for the
    -- first one to commit and then finds its row.
    INSERT INTO billing.token_spends AS s (user_id, project_id, amount, reason, idempotency_key, key_scope)
    VALUES (_spend.user_id, _spend.project_id, _spend.amount, _spend.reason, _spend.idempotency_key, _spend.key_scope)
    ON CONFLICT ON CONSTRAINT token_spends_idempotency_key DO NOTHING
    RETURNING s.id INTO new_spend_id;
    IF new_spend_id IS NULL THEN
        SELECT * INTO STRICT existing FROM billing.token_spends s
        WHERE s.user_id = _spend.user_id AND s.key_scope = _spend.key_scope AND s.idempotency_key = _spend.idempotency_key;
        IF existing.amount <> amount OR existing.project_id IS DISTINCT FROM project_id THEN
            RAISE EXCEPTION 'idempotency_key % was already used for a different spend', idempotency_key
                USING ERRCODE = 'BL004',
                      DETAIL = format('the first spend took %s tokens', existing.amount);
        END IF;
        RETURN jsonb_build_object('spend_id', existing.id, 'amount', existing.amount,
            'balance', billing._live_balance(user_id, project_id), 'duplicate', true);
    END IF;

    FOR g IN
        SELECT t.id, t.remaining FROM billing.token_grants t
        WHERE t.user_id = _spend.user_id
          AND coalesce(t.project_id, billing._no_project()) = coalesce(_spend.project_id, billing._no_project())
          AND t.remaining > 0 AND coalesce(t.expires_at, 'infinity'::timestamptz) > now()
        ORDER BY coalesce(t.expires_at, 'infinity'::timestamptz), t.created_at, t.id
        FOR UPDATE
    LOOP
        take := least(g.remaining, left_to_take);
        -- The allocation's trigger takes the tokens from the grant (billing._take_from_grant).
        INSERT INTO billing.token_spend_allocations (spend_id, grant_id, user_id, tokens)
        VALUES (new_spend_id, g.id, _spend.user_id, take);
        left_to_take := left_to_take - take;
        EXIT WHEN left_to_take = 0;
    END LOOP;
    -- Metered overage (sql/overage/functions.sql): a plan may let the rest go on as overage
    -- that Stripe bills; otherwise the spend fails and its allocations roll back with it.
    IF left_to_take > 0
       AND NOT billing._take_overage(_spend.user_id, _spend.project_id, new_spend_id, left_to_take) THEN
        RAISE EXCEPTION 'insufficient tokens: balance %, requested %', amount - left_to_take, amount
            USING ERRCODE = 'BL001',
                  HINT = 'Buy a token pack or wait for the next plan period.';
    END IF;
    balance_after := billing._live_balance(user_id, project_id);

    -- What the spend took from the balance: the amount less any metered overage (left_to_take
    -- after _take_overage), so the balance before is the one after plus it, with no second scan.
    balance_before := balance_after + amount - left_to_take;
    -- Low-balance alerts (sql/alerts/functions.sql).
    PERFORM billing._after_spend_alerts(user_id, project_id, balance_before, balance_after);

    -- Auto top-up (sql/topups/functions.sql).
    PERFORM billing._after_spend_top_up(user_id, project_id, balance_before, balance_after);
    RETURN jsonb_build_object('spend_id', new_spend_id, 'amount', amount,
        'balance', balance_after, 'duplicate', false);
END
$$;
COMMENT ON FUNCTION billing._spend(uuid, bigint, uuid, text, text, text) IS 'Internal: the spend algorithm behind billing.spend_tokens and billing.spend_my_tokens.';

CREATE OR REPLACE FUNCTION billing.spend_tokens(user_id uuid, amount bigint, project_id uuid DEFAULT NULL,
                                     reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN billing._spend(user_id, amount, project_id, reason, idempotency_key, 'server');
END
$$;
COMMENT ON FUNCTION billing.spend_tokens(uuid, bigint, uuid, text, text) IS 'Privileged: spends a user''s tokens, soonest-expiring grants first. Fails with BL001 and changes nothing when the balance is short, unless the user''s subscription plan allows metered overage with room left this period (the rest is then recorded in billing.token_overages and billed by Stripe); a repeated idempotency_key returns the first result with duplicate = true.';

CREATE OR REPLACE FUNCTION billing.spend_my_tokens(amount bigint, project_id uuid DEFAULT NULL,
                                        reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN billing._spend(billing._require_user(), amount, project_id, reason, idempotency_key, 'user');
END
$$;
COMMENT ON FUNCTION billing.spend_my_tokens(bigint, uuid, text, text) IS 'For signed-in users: billing.spend_tokens on the caller''s own tokens. Idempotency keys are the user''s own: they never collide with the keys of billing.spend_tokens.';

CREATE OR REPLACE FUNCTION billing._live_balance(user_id uuid, project_id uuid) RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_column
DECLARE
    total bigint;
BEGIN
    -- One range scan of token_grants_live_idx: expired grants are never visited.
    SELECT coalesce(sum(t.remaining), 0) INTO total FROM billing.token_grants t
    WHERE t.user_id = _live_balance.user_id
      AND coalesce(t.project_id, billing._no_project()) = coalesce(_live_balance.project_id, billing._no_project())
      AND t.remaining > 0 AND coalesce(t.expires_at, 'infinity'::timestamptz) > now();
    RETURN total;
END
$$;
COMMENT ON FUNCTION billing._live_balance(uuid, uuid) IS 'Internal: spendable tokens of a (user, project) as the current role can see them (row-level security applies; it runs as the caller).';

CREATE OR REPLACE FUNCTION billing.token_balance(user_id uuid DEFAULT NULL, project_id uuid DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who uuid := coalesce(user_id, billing.current_user_id());
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL when the caller is not signed in'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT who = ANY (billing._visible_accounts()) AND NOT billing._is_privileged() THEN
        RAISE EXCEPTION 'permission denied: you can only read your own balance or that of a team you belong to'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN billing._live_balance(who, project_id);
END
$$;
COMMENT ON FUNCTION billing.token_balance(uuid, uuid) IS 'Spendable tokens of an account (default: the caller''s personal one; a team''s for its members), for its own balance (project_id NULL) or one project. Expired grants stop counting at expires_at.';

CREATE OR REPLACE FUNCTION billing._check_project(user_id uuid, project_id uuid) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner uuid;
BEGIN
    IF project_id IS NULL THEN
        RETURN;
    END IF;
    SELECT p.user_id INTO owner FROM billing.projects p WHERE p.id = _check_project.project_id;
    IF NOT FOUND OR owner IS DISTINCT FROM _check_project.user_id THEN
        RAISE EXCEPTION 'unknown project % for user %', project_id, user_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Create it first: INSERT INTO billing.projects (id, user_id, name) ...';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._check_project(uuid, uuid) IS 'Internal: raises P0002 unless project_id is NULL or a project owned by user_id.';

CREATE OR REPLACE VIEW billing.token_grant_balances WITH (security_invoker = true) AS
SELECT g.id AS grant_id, g.user_id, g.project_id, g.source, g.tokens,
       g.tokens - g.remaining AS spent,
       CASE WHEN g.expires_at <= now() THEN 0 ELSE g.remaining END AS spendable,
       CASE WHEN g.expires_at <= now() THEN g.remaining ELSE 0 END AS expired,
       CASE WHEN g.remaining = 0 THEN 'spent' WHEN g.expires_at <= now() THEN 'expired' ELSE 'active' END AS state,
       g.expires_at, g.grant_key, g.metadata, g.created_at, g.purchase_id
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
COMMENT ON COLUMN billing.token_grant_balances.purchase_id IS 'The purchase that funded it, or NULL.';

-- The ledger's bookkeeping triggers (sql/ledger/triggers.sql).

CREATE OR REPLACE FUNCTION billing._starts_full() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.remaining := NEW.tokens;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION billing._starts_full() IS 'Internal (trigger): a new grant has all its tokens and a new debt is owed in full; only allocations take from a grant, only settlements from a debt.';

CREATE OR REPLACE FUNCTION billing._take_from_grant() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- remaining >= 0 (a CHECK) makes an allocation beyond what is left fail.
    UPDATE billing.token_grants g SET remaining = g.remaining - NEW.tokens
    WHERE g.id = NEW.grant_id AND g.user_id = NEW.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'allocation names grant % of another user', NEW.grant_id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION billing._take_from_grant() IS 'Internal (trigger): an allocation takes its tokens from its grant, the only way a grant''s remaining changes.';

CREATE OR REPLACE FUNCTION billing._refuse_ledger_edit() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'the token ledger is append-only: % of %.% is refused', lower(TG_OP), TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'Grant tokens with billing.grant_tokens and take them with billing.spend_tokens; a grant''s remaining follows its allocations.';
END
$$;
COMMENT ON FUNCTION billing._refuse_ledger_edit() IS 'Internal (trigger): refuses edits that would let the books disagree (a grant''s tokens or remaining, a spend''s amount, any allocation).';
