-- Entitlements: "may the current user use this feature, and how much of it" (issue 23, item 3),
-- cheap enough to sit in an app's row-level security policies (DESIGN.md, "Entitlements").
--
-- Written as (select billing.has_feature('export')) in a policy, the call is an initPlan: it
-- runs once per statement, not once per row. Both functions are SECURITY DEFINER so that anon
-- and users read neither billing.subscriptions nor billing.plan_features through their own
-- policies (anon has no grant on them at all; it simply gets false), and they pin search_path.

CREATE OR REPLACE FUNCTION billing._check_feature_key(feature text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM billing._check_not_null(feature, 'feature');
    -- The same rule as billing.plan_features.feature's CHECK: a key that could never be stored
    -- is a caller's mistake (a typo, a display name), not a feature nobody has.
    IF feature !~ '^[a-z][a-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'feature % is not a feature key', quote_literal(left(feature, 80))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A key is a lower-case letter, then up to 62 of a-z, 0-9, _, . and -, as in billing.plan_features.feature.';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._check_feature_key(text) IS 'Internal: raises 22004 for a NULL feature and 22023 for one that is not a feature key (the billing.plan_features.feature rule).';

-- The one place that says what entitles an account (a user's personal account is their id; a
-- team's is its billing.accounts.id): its qualifying subscriptions' plans, and the packs it paid
-- for less than each feature's days ago. The callers pick the account and the feature.
CREATE OR REPLACE FUNCTION billing._feature_grants(user_id uuid, grace_seconds integer)
RETURNS TABLE (feature text, plan_id text, limit_value bigint)
LANGUAGE sql STABLE PARALLEL SAFE
-- A plain SQL body (one UNION ALL query), so the planner inlines it into the callers' queries,
-- where their test of the feature becomes a probe of plan_features' key in each branch.
AS $$
    SELECT f.feature, f.plan_id, f.limit_value
    FROM billing.subscriptions s
    JOIN billing.plan_features f ON f.plan_id = s.plan_id
    WHERE s.user_id = _feature_grants.user_id
      AND (s.status IN ('active', 'trialing')
           OR (s.status = 'past_due'
               AND coalesce(s.status_since, s.updated_at) > now() - make_interval(secs => grace_seconds)))
    UNION ALL
    SELECT f.feature, f.plan_id, f.limit_value
    FROM billing.pack_passes p
    JOIN billing.plan_features f ON f.plan_id = p.plan_id
    WHERE p.user_id = _feature_grants.user_id
      AND p.ended_at IS NULL
      AND p.bought_at > now() - make_interval(days => f.days)
$$;
COMMENT ON FUNCTION billing._feature_grants(uuid, integer) IS 'Internal: the plan_features rows that entitle account user_id (a user''s own id or a team''s) now: those of the plans of its subscriptions that are active, trialing, or past_due for less than grace_seconds, and those with days of the token packs it bought (billing.pack_passes, not ended) less than days ago.';

-- Recorded wherever a paid pack is granted (sql/effects/checkout.sql, the auto top-up's
-- PaymentIntent in sql/topups/functions.sql), before the purchase is settled, so that a refund
-- reported earlier ends the pass in the same transaction.
CREATE OR REPLACE FUNCTION billing._record_pack_pass(purchase_id text, plan_id text, user_id uuid, bought_at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    IF plan_id IS NULL THEN
        RETURN;  -- a top-up whose pack is not known (an older PaymentIntent without plan_id)
    END IF;
    INSERT INTO billing.pack_passes AS p (purchase_id, plan_id, user_id, bought_at)
    VALUES (_record_pack_pass.purchase_id, _record_pack_pass.plan_id, _record_pack_pass.user_id,
            coalesce(_record_pack_pass.bought_at, now()))
    -- The same purchase granted again (a duplicate, or async_payment_succeeded after completed):
    -- the earliest report's time, so the order of delivery does not move it.
    ON CONFLICT (purchase_id, plan_id) DO UPDATE SET bought_at = excluded.bought_at
    WHERE excluded.bought_at < p.bought_at;
END
$$;
COMMENT ON FUNCTION billing._record_pack_pass(text, text, uuid, timestamptz) IS 'Internal: records that purchase_id paid for token pack plan_id of account user_id at bought_at (Stripe''s time, the earliest reported), once per purchase and pack; nothing for a NULL plan_id.';

-- Whether a pass stands follows the purchase's facts, recomputed at every settlement: ended
-- while everything paid has gone back, standing again if it returns (a dispute won).
CREATE OR REPLACE FUNCTION billing._settle_pack_passes(purchase_id text, wholly_reversed boolean) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    UPDATE billing.pack_passes p
    SET ended_at = CASE WHEN wholly_reversed THEN coalesce(p.ended_at, now()) END
    WHERE p.purchase_id = _settle_pack_passes.purchase_id
      AND (p.ended_at IS NULL) = wholly_reversed;
END
$$;
COMMENT ON FUNCTION billing._settle_pack_passes(text, boolean) IS 'Internal: ends the pack passes of a purchase whose payment went back in full (wholly_reversed), or reopens them when it no longer has.';

CREATE OR REPLACE FUNCTION billing._check_feature_days() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind text;
BEGIN
    SELECT p.kind INTO kind FROM billing.plans p WHERE p.id = NEW.plan_id;
    IF kind = 'token_pack' AND NEW.days IS NULL THEN
        RAISE EXCEPTION 'feature % of token pack % needs days', NEW.feature, NEW.plan_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A pack''s feature lasts days (1 to 3650) after each paid purchase of the pack.';
    ELSIF kind = 'subscription' AND NEW.days IS NOT NULL THEN
        RAISE EXCEPTION 'feature % of subscription plan % takes no days', NEW.feature, NEW.plan_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A subscription''s features last as long as the subscription is active, trialing or past_due within the grace; leave days NULL.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION billing._check_feature_days() IS 'Internal (trigger): a billing.plan_features row of a token pack needs days, one of a subscription plan may not have them (22023).';

-- has_feature/feature_limit answer for an account: the active one (billing.active_account(): the
-- X-Billing-Account header, else the personal account), or the one named, which must be one of
-- the caller's (billing._visible_accounts()); any other account gives nothing.
CREATE OR REPLACE FUNCTION billing._feature_account(account_id uuid) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF account_id IS NULL THEN
        RETURN billing.active_account();
    END IF;
    RETURN CASE WHEN account_id = ANY (billing._visible_accounts()) THEN account_id END;
END
$$;
COMMENT ON FUNCTION billing._feature_account(uuid) IS 'Internal: the account billing.has_feature and billing.feature_limit answer for: account_id when it is one of the caller''s, NULL when it is not; with account_id NULL the active account (billing.active_account()).';

CREATE OR REPLACE FUNCTION billing.has_feature(feature text, account_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct uuid;
BEGIN
    PERFORM billing._check_feature_key(feature);
    acct := billing._feature_account(account_id);
    IF acct IS NULL THEN
        RETURN false;  -- anon, a role without a user, or an account not the caller's
    END IF;
    RETURN EXISTS (SELECT FROM billing._feature_grants(acct, (billing._settings()).past_due_grace_seconds) g
                   WHERE g.feature = has_feature.feature);
END
$$;
COMMENT ON FUNCTION billing.has_feature(text, uuid) IS 'Whether the signed-in user may use feature through account_id (their own id or a team they belong to; NULL = the active account, billing.active_account()): true when a subscription of that account is active, trialing, or past_due for less than billing.config.past_due_grace_seconds, and its plan has the feature in billing.plan_features, or when it paid for a token pack with the feature less than its days ago (billing.pack_passes). False for unknown features, anon, accounts not the caller''s, and accounts without such a subscription; 22004 for NULL feature, 22023 for a malformed key.';

CREATE OR REPLACE FUNCTION billing.has_feature(feature text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT billing.has_feature(feature, NULL::uuid)
$$;
COMMENT ON FUNCTION billing.has_feature(text) IS 'Whether the signed-in user''s active account (billing.active_account(): the team named by the X-Billing-Account header, else their personal account) may use feature: billing.has_feature(feature, NULL). False for unknown features and anon; 22004 for NULL, 22023 for a malformed key. In RLS policies write (select billing.has_feature(''export'')) so it runs once per statement.';

CREATE OR REPLACE FUNCTION billing.feature_limit(feature text, account_id uuid) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct uuid;
    unlimited boolean;
    largest bigint;
BEGIN
    PERFORM billing._check_feature_key(feature);
    acct := billing._feature_account(account_id);
    IF acct IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT bool_or(g.limit_value IS NULL), max(g.limit_value) INTO unlimited, largest
    FROM billing._feature_grants(acct, (billing._settings()).past_due_grace_seconds) g
    WHERE g.feature = feature_limit.feature;
    -- Several qualifying plans: the most generous wins, and no limit beats any limit.
    RETURN CASE WHEN unlimited THEN NULL ELSE largest END;
END
$$;
COMMENT ON FUNCTION billing.feature_limit(text, uuid) IS 'The limit of feature for account_id (their own id or a team of the signed-in user; NULL = the active account): the largest billing.plan_features.limit_value among the plans that give the account the feature (as billing.has_feature decides). NULL when there is no limit to apply (no limit, or no feature: check billing.has_feature first). 22004 for NULL feature, 22023 for a malformed key.';

CREATE OR REPLACE FUNCTION billing.feature_limit(feature text) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT billing.feature_limit(feature, NULL::uuid)
$$;
COMMENT ON FUNCTION billing.feature_limit(text) IS 'The signed-in user''s active account''s limit of feature (billing.feature_limit(feature, NULL)): the largest billing.plan_features.limit_value among the plans that give it the feature. NULL when there is no limit to apply: no limit, or no feature (unknown features, anon, no qualifying subscription), so check billing.has_feature first. 22004 for NULL, 22023 for a malformed key. In RLS policies write (select billing.feature_limit(''projects'')).';

-- What the app shows ("your plan includes ..."): every feature at once, by the same rule.
CREATE OR REPLACE FUNCTION billing.my_features()
RETURNS TABLE (feature text, limit_value bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM billing._require_user();
    RETURN QUERY
    SELECT g.feature, CASE WHEN bool_or(g.limit_value IS NULL) THEN NULL ELSE max(g.limit_value) END
    FROM billing._feature_grants(billing.active_account(), (billing._settings()).past_due_grace_seconds) g
    GROUP BY g.feature
    ORDER BY g.feature;
END
$$;
COMMENT ON FUNCTION billing.my_features() IS 'For signed-in users: every feature their active account (billing.active_account(): the team named by the X-Billing-Account header, else their personal account) has now, one row each with its limit as billing.feature_limit gives it (NULL = no limit); no rows without a qualifying subscription; 28000 when not signed in. From supabase-js: supabase.schema(''billing'').rpc(''my_features'').';
