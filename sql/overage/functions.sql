-- Metered overage (DESIGN.md, "Metered overage"): a spend beyond the balance goes on as overage
-- when the user's active subscription's plan allows it and the period has room, and is reported
-- to Stripe as one Billing Meter event per spend through the request queue (kind meter_event).

-- Called by billing._spend once its allocations have taken the whole balance (sql/ledger/functions.sql).
CREATE OR REPLACE FUNCTION billing._take_overage(user_id uuid, project_id uuid, spend_id bigint, tokens bigint)
RETURNS boolean
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    s record;
    used bigint;
    ident text;
    request uuid;
BEGIN
    -- A plan's overage is the subscriber's own: project balances never go below zero.
    IF project_id IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT sub.stripe_subscription_id, sub.stripe_customer_id, sub.current_period_start, sub.current_period_end,
           p.overage_limit, p.meter_event_name
    INTO s
    FROM billing.subscriptions sub JOIN billing.plans p ON p.id = sub.plan_id
    WHERE sub.user_id = _take_overage.user_id AND sub.status = 'active' AND p.overage_limit IS NOT NULL
      AND sub.stripe_customer_id IS NOT NULL
      AND sub.current_period_start <= now() AND now() < sub.current_period_end
    ORDER BY sub.current_period_end DESC, sub.stripe_subscription_id
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- One user's overage spends count the period's use one at a time. A lock of its own: the
    -- spend may hold no grant row (an empty balance), and event effects lock subscription rows
    -- before grants, so locking the subscription here could deadlock with them.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('billing.overage:' || user_id, 0));
    SELECT coalesce(sum(o.tokens), 0) INTO used FROM billing.token_overages o
    WHERE o.stripe_subscription_id = s.stripe_subscription_id AND o.period_start = s.current_period_start;
    IF used + tokens > s.overage_limit THEN
        RETURN false;
    END IF;
    -- Random, not derived from the spend id: ids restart in another database (a restore, test
    -- and live side by side) reporting to the same Stripe account, whose identifiers must not.
    ident := 'ovg_' || replace(gen_random_uuid()::text, '-', '');
    INSERT INTO billing.stripe_requests (user_id, kind, params)
    VALUES (user_id, 'meter_event', jsonb_build_object(
        'event_name', s.meter_event_name, 'stripe_customer_id', s.stripe_customer_id, 'value', tokens,
        'identifier', ident, 'timestamp', floor(extract(epoch FROM now()))::bigint,
        'spend_id', spend_id))
    RETURNING id INTO request;
    INSERT INTO billing.token_overages (user_id, spend_id, stripe_subscription_id, period_start, period_end, tokens,
                                        identifier, request_id)
    VALUES (user_id, spend_id, s.stripe_subscription_id, s.current_period_start, s.current_period_end, tokens,
            ident, request);
    RETURN true;
END
$$;
COMMENT ON FUNCTION billing._take_overage(uuid, uuid, bigint, bigint) IS 'Internal: records tokens a spend could not take from the balance as overage, and queues its meter event, when the user''s active subscription''s plan allows overage and the current period has room; false (the spend then fails with BL001) otherwise.';

CREATE OR REPLACE FUNCTION billing._record_meter_outcome() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE billing.token_overages o
    SET status = CASE WHEN NEW.status = 'succeeded' THEN 'reported' ELSE 'failed' END,
        reported_at = CASE WHEN NEW.status = 'succeeded' THEN now() END
    WHERE o.request_id = NEW.id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION billing._record_meter_outcome() IS 'Internal (trigger): a meter_event request that succeeded marks its overage reported; one that failed for good, failed.';

CREATE OR REPLACE FUNCTION billing.token_overage(user_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    who uuid := coalesce(user_id, billing.current_user_id());
    s record;
    used bigint;
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL when the caller is not signed in'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A team's overage is its members' to read, as its balance is (billing.token_balance).
    IF NOT who = ANY (billing._visible_accounts()) AND NOT billing._is_privileged() THEN
        RAISE EXCEPTION 'permission denied: you can only read your own overage or that of a team you belong to'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The subscription billing._take_overage would charge now.
    SELECT sub.stripe_subscription_id, sub.current_period_start, sub.current_period_end, p.overage_limit
    INTO s
    FROM billing.subscriptions sub JOIN billing.plans p ON p.id = sub.plan_id
    WHERE sub.user_id = who AND sub.status = 'active' AND p.overage_limit IS NOT NULL
      AND sub.stripe_customer_id IS NOT NULL
      AND sub.current_period_start <= now() AND now() < sub.current_period_end
    ORDER BY sub.current_period_end DESC, sub.stripe_subscription_id
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('allowed', false, 'limit', 0, 'used', 0, 'left', 0);
    END IF;
    SELECT coalesce(sum(o.tokens), 0) INTO used FROM billing.token_overages o
    WHERE o.stripe_subscription_id = s.stripe_subscription_id AND o.period_start = s.current_period_start;
    RETURN jsonb_build_object('allowed', true, 'limit', s.overage_limit, 'used', used,
        'left', greatest(s.overage_limit - used, 0), 'subscription', s.stripe_subscription_id,
        'period_start', s.current_period_start, 'period_end', s.current_period_end);
END
$$;
COMMENT ON FUNCTION billing.token_overage(uuid) IS 'Metered overage of an account (default: the caller''s personal one; a team''s for its members) in the current billing period: {allowed, limit, used, left, subscription, period_start, period_end}. allowed is false (and the rest 0) without an active subscription whose plan allows overage. The balance itself never goes below zero: overage is what Stripe bills, not a debt.';

-- A meter event that failed for good (Stripe down for longer than the request's attempts last, a
-- worker that stopped on the last attempt, a refusal) leaves usage Stripe never billed. Stripe
-- takes an event whose timestamp is within the past 35 calendar days (the API reference of
-- POST /v1/billing/meter_events, `timestamp`), so until then the operator can send it again,
-- with the same timestamp and identifier, which keeps it one event: Stripe refuses an identifier
-- it already holds for at least 24 hours (the reference of `identifier`), and the worker counts
-- that refusal as delivered. A day of the 35 is kept in hand for the queue's own retries and for
-- however Stripe counts a calendar day.
CREATE OR REPLACE FUNCTION billing._meter_window_start() RETURNS timestamptz
LANGUAGE sql STABLE
RETURN now() - interval '34 days';
COMMENT ON FUNCTION billing._meter_window_start() IS 'Internal: the oldest spend time whose meter event may still be sent to Stripe (which takes timestamps up to 35 calendar days back; a day kept in hand). billing.retry_failed_meter_events and the doctor use it.';

CREATE OR REPLACE FUNCTION billing.retry_failed_meter_events(max_events integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o record;
    request uuid;
    requeued integer := 0;
    too_old integer;
    too_old_tokens bigint;
BEGIN
    PERFORM billing._check_not_null(max_events, 'max_events');
    IF max_events < 1 OR max_events > 100000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 100000, got %', max_events
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Each failed overage once, whoever else retries at the same time: the row lock and its
    -- status (pending once queued again) keep a second caller off it.
    FOR o IN
        SELECT ov.id, ov.user_id, ov.spend_id, ov.tokens, ov.identifier, ov.created_at,
               coalesce(r.params, jsonb_build_object(
                   'event_name', p.meter_event_name, 'stripe_customer_id', sub.stripe_customer_id,
                   'value', ov.tokens, 'identifier', ov.identifier,
                   'timestamp', floor(extract(epoch FROM ov.created_at))::bigint, 'spend_id', ov.spend_id)) AS params
        FROM billing.token_overages ov
        -- The failed request's parameters are the event as it was first sent; once it is pruned,
        -- the same event is made again from the overage and its subscription.
        LEFT JOIN billing.stripe_requests r ON r.id = ov.request_id
        LEFT JOIN billing.subscriptions sub ON sub.stripe_subscription_id = ov.stripe_subscription_id
        LEFT JOIN billing.plans p ON p.id = sub.plan_id
        WHERE ov.status = 'failed' AND ov.created_at >= billing._meter_window_start()
        ORDER BY ov.created_at, ov.id
        LIMIT max_events
        FOR UPDATE OF ov SKIP LOCKED
    LOOP
        IF o.params ->> 'event_name' IS NULL OR o.params ->> 'stripe_customer_id' IS NULL THEN
            CONTINUE;  -- nothing left to say which meter or customer: counted below as left
        END IF;
        INSERT INTO billing.stripe_requests (user_id, kind, params)
        VALUES (o.user_id, 'meter_event', o.params)
        RETURNING id INTO request;
        UPDATE billing.token_overages ov SET status = 'pending', request_id = request WHERE ov.id = o.id;
        requeued := requeued + 1;
    END LOOP;
    SELECT count(*), coalesce(sum(ov.tokens), 0) INTO too_old, too_old_tokens
    FROM billing.token_overages ov
    WHERE ov.status = 'failed' AND ov.created_at < billing._meter_window_start();
    RETURN jsonb_build_object('requeued', requeued,
        'still_failed', (SELECT count(*) FROM billing.token_overages ov WHERE ov.status = 'failed'),
        'too_old', too_old, 'too_old_tokens', too_old_tokens);
END
$$;
COMMENT ON FUNCTION billing.retry_failed_meter_events(integer) IS 'Privileged: queues again, oldest first and at most max_events (1 to 100000), the meter events of overage that failed for good (billing.token_overages status failed) and whose spend is still within Stripe''s window (the past 34 days: Stripe takes timestamps up to 35 calendar days back), each with its first timestamp and identifier, so Stripe bills it once. Returns {requeued, still_failed, too_old, too_old_tokens}: too_old counts failed overage Stripe no longer takes, to bill another way. Run it soon after the cause is fixed: for 24 hours after an event''s first attempt Stripe refuses a second event with its identifier, so one that did reach Stripe is not billed twice.';
