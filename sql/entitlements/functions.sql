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

-- The one place that says which subscriptions entitle a user: today the user's own. When
-- accounts arrive (issue 23, item 1), the owner test becomes the user's active account's.
CREATE OR REPLACE FUNCTION billing._feature_grants(user_id uuid, grace_seconds integer)
RETURNS TABLE (feature text, plan_id text, limit_value bigint)
LANGUAGE sql STABLE PARALLEL SAFE
-- A plain SQL body, so the planner inlines it into the callers' queries, where their test of
-- the feature becomes a probe of plan_features' key.
AS $$
    SELECT f.feature, f.plan_id, f.limit_value
    FROM billing.subscriptions s
    JOIN billing.plan_features f ON f.plan_id = s.plan_id
    WHERE s.user_id = _feature_grants.user_id
      AND (s.status IN ('active', 'trialing')
           OR (s.status = 'past_due'
               AND coalesce(s.status_since, s.updated_at) > now() - make_interval(secs => grace_seconds)))
$$;
COMMENT ON FUNCTION billing._feature_grants(uuid, integer) IS 'Internal: the plan_features rows of the plans of user_id''s subscriptions that are active, trialing, or past_due for less than grace_seconds.';

CREATE OR REPLACE FUNCTION billing.has_feature(feature text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing.current_user_id();
BEGIN
    PERFORM billing._check_feature_key(feature);
    IF uid IS NULL THEN
        RETURN false;  -- anon, or a role without a user: nobody's subscription
    END IF;
    RETURN EXISTS (SELECT FROM billing._feature_grants(uid, (billing._settings()).past_due_grace_seconds) g
                   WHERE g.feature = has_feature.feature);
END
$$;
COMMENT ON FUNCTION billing.has_feature(text) IS 'Whether the signed-in user (billing.current_user_id()) may use feature: true when a subscription of theirs is active, trialing, or past_due for less than billing.config.past_due_grace_seconds, and its plan has the feature in billing.plan_features. False for unknown features, anon and users without such a subscription; 22004 for NULL, 22023 for a malformed key. In RLS policies write (select billing.has_feature(''export'')) so it runs once per statement.';

CREATE OR REPLACE FUNCTION billing.feature_limit(feature text) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing.current_user_id();
    unlimited boolean;
    largest bigint;
BEGIN
    PERFORM billing._check_feature_key(feature);
    IF uid IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT bool_or(g.limit_value IS NULL), max(g.limit_value) INTO unlimited, largest
    FROM billing._feature_grants(uid, (billing._settings()).past_due_grace_seconds) g
    WHERE g.feature = feature_limit.feature;
    -- Several qualifying plans: the most generous wins, and no limit beats any limit.
    RETURN CASE WHEN unlimited THEN NULL ELSE largest END;
END
$$;
COMMENT ON FUNCTION billing.feature_limit(text) IS 'The signed-in user''s limit of feature: the largest billing.plan_features.limit_value among the plans that give them the feature (as billing.has_feature decides). NULL when there is no limit to apply: the user has the feature without a limit, or does not have it (unknown features, anon, no qualifying subscription), so check billing.has_feature first. 22004 for NULL, 22023 for a malformed key. In RLS policies write (select billing.feature_limit(''projects'')).';

-- What the app shows ("your plan includes ..."): every feature at once, by the same rule.
CREATE OR REPLACE FUNCTION billing.my_features()
RETURNS TABLE (feature text, limit_value bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT g.feature, CASE WHEN bool_or(g.limit_value IS NULL) THEN NULL ELSE max(g.limit_value) END
    FROM billing._feature_grants(billing._require_user(), (billing._settings()).past_due_grace_seconds) g
    GROUP BY g.feature
    ORDER BY g.feature;
END
$$;
COMMENT ON FUNCTION billing.my_features() IS 'For signed-in users: every feature they have now, one row each with its limit as billing.feature_limit gives it (NULL = no limit); no rows without a qualifying subscription; 28000 when not signed in. From supabase-js: supabase.schema(''billing'').rpc(''my_features'').';
