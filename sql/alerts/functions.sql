-- Low-balance alerts and expiry warnings (sql/alerts/schema.sql; DESIGN.md, "Alerts").

-- Called once by billing._spend after a spend, with the balance before and after it: the spend
-- computed the balance after for its answer, and before = after + amount, so this costs the
-- spend one index probe of billing.balance_alerts and no scan of the grants.
CREATE OR REPLACE FUNCTION billing._after_spend_alerts(user_id uuid, project_id uuid, balance_before bigint,
                                                       balance_after bigint) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    a billing.balance_alerts;
    threshold bigint;
BEGIN
    SELECT * INTO a FROM billing.balance_alerts x
    WHERE x.user_id = _after_spend_alerts.user_id
      AND coalesce(x.project_id, billing._no_project()) = coalesce(_after_spend_alerts.project_id, billing._no_project());
    IF FOUND AND NOT (a.enabled AND a.armed) THEN
        RETURN;
    END IF;
    threshold := coalesce(a.threshold, (billing._settings()).low_balance_threshold);
    IF threshold IS NULL OR NOT (balance_before > threshold AND threshold >= balance_after) THEN
        RETURN;
    END IF;
    IF a.id IS NULL THEN
        -- The operator's default fires for a balance without a row: the row records that it did.
        INSERT INTO billing.balance_alerts AS x (user_id, project_id)
        VALUES (_after_spend_alerts.user_id, _after_spend_alerts.project_id)
        ON CONFLICT (user_id, coalesce(project_id, billing._no_project())) DO NOTHING;
        SELECT * INTO STRICT a FROM billing.balance_alerts x
        WHERE x.user_id = _after_spend_alerts.user_id
          AND coalesce(x.project_id, billing._no_project()) = coalesce(_after_spend_alerts.project_id, billing._no_project());
    END IF;
    -- Disarm under the row's lock: of two spends that both saw the crossing, the second waits
    -- here, finds the row disarmed and writes nothing.
    UPDATE billing.balance_alerts x SET armed = false, generation = x.generation + 1, fired_at = now()
    WHERE x.id = a.id AND x.armed AND x.enabled
    RETURNING * INTO a;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM billing._notify(user_id, 'low_balance', format('low_balance:%s:%s', a.id, a.generation),
        jsonb_build_object('threshold', threshold, 'balance', balance_after, 'project_id', project_id));
END
$$;
COMMENT ON FUNCTION billing._after_spend_alerts(uuid, uuid, bigint, bigint) IS 'Internal: after a spend, writes one low_balance notification when it took the balance from above its threshold to at or below it and the alert is armed, and disarms it.';

-- Called by billing._insert_grant for each new grant (restorations included: every grant goes
-- through it). Cheap when there is nothing to do: the balance is summed only for a disarmed row.
CREATE OR REPLACE FUNCTION billing._rearm_balance_alert(user_id uuid, project_id uuid) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    UPDATE billing.balance_alerts x SET armed = true
    WHERE x.user_id = _rearm_balance_alert.user_id
      AND coalesce(x.project_id, billing._no_project()) = coalesce(_rearm_balance_alert.project_id, billing._no_project())
      AND NOT x.armed
      AND billing._live_balance(x.user_id, x.project_id)
          > coalesce(x.threshold, (billing._settings()).low_balance_threshold, -1);
END
$$;
COMMENT ON FUNCTION billing._rearm_balance_alert(uuid, uuid) IS 'Internal: re-arms a balance''s fired low-balance alert once a grant has lifted the balance above its threshold again.';

CREATE OR REPLACE FUNCTION billing.set_low_balance_alert(user_id uuid, threshold bigint, project_id uuid DEFAULT NULL,
                                                         enabled boolean DEFAULT true) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    a billing.balance_alerts;
BEGIN
    PERFORM billing._check_user_exists(user_id);
    PERFORM billing._check_not_null(enabled, 'enabled');
    IF threshold < 0 OR threshold > 1000000000000 THEN
        RAISE EXCEPTION 'threshold must be between 0 and 1000000000000, got %', threshold
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to follow the operator''s default (billing.config.low_balance_threshold).';
    END IF;
    PERFORM billing._check_project(user_id, project_id);
    -- Setting a threshold arms the alert: a spend still notifies only when it crosses it.
    INSERT INTO billing.balance_alerts AS x (user_id, project_id, threshold, enabled, armed)
    VALUES (set_low_balance_alert.user_id, set_low_balance_alert.project_id, set_low_balance_alert.threshold,
            set_low_balance_alert.enabled, true)
    ON CONFLICT (user_id, coalesce(project_id, billing._no_project()))
    DO UPDATE SET threshold = excluded.threshold, enabled = excluded.enabled, armed = true, updated_at = now()
    RETURNING * INTO a;
    RETURN jsonb_build_object('user_id', a.user_id, 'project_id', a.project_id, 'threshold', a.threshold,
        'effective_threshold', CASE WHEN a.enabled THEN coalesce(a.threshold, (billing._settings()).low_balance_threshold) END,
        'enabled', a.enabled);
END
$$;
COMMENT ON FUNCTION billing.set_low_balance_alert(uuid, bigint, uuid, boolean) IS 'Privileged: sets the low-balance threshold of a user''s own balance (project_id NULL) or of one of their projects (0 to 1000000000000; NULL = the operator''s default), or turns its alerts off (enabled false). Arms the alert.';

CREATE OR REPLACE FUNCTION billing.set_my_low_balance_alert(threshold bigint, project_id uuid DEFAULT NULL,
                                                            enabled boolean DEFAULT true,
                                                            account_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A team's alert is the team's money, so it is set by those who buy for it (owners and
    -- admins), the same rule as its checkout: billing._buying_account.
    RETURN billing.set_low_balance_alert(billing._buying_account(account_id), threshold, project_id, enabled);
END
$$;
COMMENT ON FUNCTION billing.set_my_low_balance_alert(bigint, uuid, boolean, uuid) IS 'For signed-in users: billing.set_low_balance_alert on the caller''s own balance or project (account_id NULL or their id), or on a team''s when they are its owner or admin (42501 for members and others). The notification goes to the account: every member of a team reads it. From supabase-js: supabase.schema(''billing'').rpc(''set_my_low_balance_alert'', { threshold: 100 }).';

-- SECURITY DEFINER for the config row alone, which client roles may not read; the callers check
-- whose settings they show with the caller's own rights.
CREATE OR REPLACE FUNCTION billing._alert_defaults(OUT low_balance_threshold bigint, OUT expiry_warning_days integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c billing.config := billing._settings();
BEGIN
    low_balance_threshold := c.low_balance_threshold;
    expiry_warning_days := c.expiry_warning_days;
END
$$;
COMMENT ON FUNCTION billing._alert_defaults() IS 'Internal: the operator''s alert defaults (billing.config.low_balance_threshold and expiry_warning_days, with their documented defaults), readable by signed-in users.';

CREATE OR REPLACE FUNCTION billing.credit_settings(user_id uuid DEFAULT NULL)
RETURNS TABLE (project_id uuid, low_balance_threshold bigint, threshold_from text, armed boolean,
               expiry_warning_days integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    who uuid := coalesce(user_id, billing.current_user_id());
    c record;
BEGIN
    SELECT * INTO c FROM billing._alert_defaults();
    IF who IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL when the caller is not signed in'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A team's settings are readable by its members, as its balance_alerts rows already are.
    IF NOT who = ANY (billing._visible_accounts()) AND NOT billing._is_privileged() THEN
        RAISE EXCEPTION 'permission denied: you can only read your own credit settings or those of a team you belong to'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The user's own balance always, then each project balance with a setting of its own.
    RETURN QUERY
    SELECT b.project_id,
           CASE WHEN coalesce(a.enabled, true) THEN coalesce(a.threshold, c.low_balance_threshold) END,
           CASE WHEN NOT coalesce(a.enabled, true) THEN 'off' WHEN a.threshold IS NOT NULL THEN 'user'
                WHEN c.low_balance_threshold IS NOT NULL THEN 'default' ELSE 'off' END,
           coalesce(a.armed, true), c.expiry_warning_days
    FROM (SELECT NULL::uuid AS project_id
          UNION ALL
          SELECT x.project_id FROM billing.balance_alerts x WHERE x.user_id = who AND x.project_id IS NOT NULL) b
    LEFT JOIN billing.balance_alerts a
           ON a.user_id = who AND coalesce(a.project_id, billing._no_project()) = coalesce(b.project_id, billing._no_project())
    ORDER BY b.project_id NULLS FIRST;
END
$$;
COMMENT ON FUNCTION billing.credit_settings(uuid) IS 'An account''s (default: the caller''s personal one; a team''s for its members; any for privileged roles) low-balance alerts and expiry warning window: one row for their own balance (project_id NULL) and one per project with a setting of its own. threshold_from: user (their own threshold), default (billing.config.low_balance_threshold) or off; armed false: the alert fired and waits for the balance to rise above the threshold again.';

CREATE OR REPLACE FUNCTION billing.my_credit_settings(account_id uuid DEFAULT NULL)
RETURNS TABLE (project_id uuid, low_balance_threshold bigint, threshold_from text, armed boolean,
               expiry_warning_days integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
BEGIN
    RETURN QUERY SELECT * FROM billing.credit_settings(coalesce(account_id, uid));
END
$$;
COMMENT ON FUNCTION billing.my_credit_settings(uuid) IS 'For signed-in users: billing.credit_settings of the caller''s own account (account_id NULL) or of a team they belong to (42501 otherwise; 28000 when not signed in).';

CREATE OR REPLACE FUNCTION billing.warn_expiring_grants(max_warnings integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    window_days integer := (billing._settings()).expiry_warning_days;
    g record;
    written integer := 0;
BEGIN
    PERFORM billing._check_not_null(max_warnings, 'max_warnings');
    IF max_warnings < 1 OR max_warnings > 100000 THEN
        RAISE EXCEPTION 'max_warnings must be between 1 and 100000, got %', max_warnings
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF window_days = 0 THEN
        RETURN 0;
    END IF;
    -- A range scan of token_grants_expiring_idx over (now, now + window]: spent grants are not
    -- in it and expired ones lie before it, so the cost follows the grants expiring soon.
    FOR g IN
        SELECT t.id, t.user_id, t.project_id, t.remaining, t.expires_at FROM billing.token_grants t
        WHERE t.remaining > 0 AND t.expires_at IS NOT NULL
          AND t.expires_at > now() AND t.expires_at <= now() + make_interval(days => window_days)
          AND NOT EXISTS (SELECT FROM billing.expiry_warnings w WHERE w.grant_id = t.id)
        ORDER BY t.expires_at
        LIMIT max_warnings
    LOOP
        -- The key makes a warning once: of two sweeps at once, the second waits on the first's
        -- row and skips the grant.
        INSERT INTO billing.expiry_warnings (grant_id, user_id) VALUES (g.id, g.user_id)
        ON CONFLICT (grant_id) DO NOTHING;
        IF FOUND THEN
            PERFORM billing._notify(g.user_id, 'tokens_expiring', 'tokens_expiring:' || g.id,
                jsonb_build_object('grant_id', g.id, 'project_id', g.project_id, 'remaining', g.remaining,
                                   'expires_at', g.expires_at));
            written := written + 1;
        END IF;
    END LOOP;
    RETURN written;
END
$$;
COMMENT ON FUNCTION billing.warn_expiring_grants(integer) IS 'Privileged: writes one tokens_expiring notification (grant_id, project_id, remaining, expires_at) for each unspent grant expiring within billing.config.expiry_warning_days that was not warned yet, at most max_warnings (1 to 100000) per call; returns how many it wrote. The worker runs it with billing.prune(); operators may run it from pg_cron.';
