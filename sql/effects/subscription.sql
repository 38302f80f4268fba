-- Effects of customer.subscription.* events and of subscriptions retrieved from Stripe: the
-- ordering rules are described at the top of sql/subscriptions/functions.sql.

CREATE OR REPLACE FUNCTION billing._apply_subscription(ev jsonb, rank smallint) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s jsonb := ev -> 'data';
    sub_id text := s ->> 'id';
    uid uuid := billing._resolve_user(s -> 'metadata' ->> 'user_id', ev ->> 'customer', sub_id);
    v billing.event_version := billing._event_version(ev, rank);
    item jsonb;
    plan billing.plans;
    price text;
    quantity bigint;
    item_id text;
    cur billing.subscriptions;
    new billing.subscriptions;
    winner text;
BEGIN
    -- The plan: the first item whose price the catalog sells as a subscription; add-on items
    -- with other prices are ignored. Without one the row keeps the first price and waits for
    -- the catalog (billing._record_plan_price fills plan_id when the price is added).
    FOR item IN SELECT value FROM jsonb_array_elements(coalesce(s -> 'items', '[]')) LOOP
        plan := billing._plan_of_price(item ->> 'price_id');
        IF plan.kind = 'subscription' THEN
            price := item ->> 'price_id';
            quantity := (item ->> 'quantity')::bigint;
            item_id := item ->> 'item_id';
            EXIT;
        END IF;
        plan := NULL;
    END LOOP;
    PERFORM billing._upsert_subscription_link(sub_id, uid, ev ->> 'customer');
    SELECT * INTO cur FROM billing.subscriptions c WHERE c.stripe_subscription_id = sub_id FOR UPDATE;
    new := cur;
    new.plan_id := plan.id;
    new.stripe_price_id := coalesce(price, s -> 'items' -> 0 ->> 'price_id');
    -- The plan item's quantity: a team's seats (billing._team_seats). Without a catalog plan,
    -- the first item's, like the price.
    new.quantity := coalesce(quantity, (s -> 'items' -> 0 ->> 'quantity')::bigint);
    -- Its item, which a seat change updates (billing.request_seat_change).
    item_id := coalesce(item_id, CASE WHEN plan.id IS NULL THEN s -> 'items' -> 0 ->> 'item_id' END);
    new.stripe_item_id := CASE WHEN item_id ~ '^si_[A-Za-z0-9_]+$' THEN item_id END;
    new.status := s ->> 'status';
    new.current_period_start := billing._unix_time(s -> 'current_period_start');
    new.current_period_end := billing._unix_time(s -> 'current_period_end');
    new.cancel_at_period_end := coalesce((s ->> 'cancel_at_period_end')::boolean, false);
    new.cancel_at := billing._unix_time(s -> 'cancel_at');
    new.canceled_at := billing._unix_time(s -> 'canceled_at');
    new.ended_at := billing._unix_time(s -> 'ended_at');
    new.trial_end := billing._unix_time(s -> 'trial_end');
    new.pause_collection := s -> 'pause_collection' ->> 'behavior';
    new.version := v;
    IF billing._is_final(cur.status) THEN
        RETURN;  -- Stripe never changes a final subscription again
    END IF;
    IF NOT billing._is_newer(v, cur.version) THEN
        IF v = cur.version AND (v).rank = 2 THEN
            -- Two of Stripe's answers in one second (a seat change's, a retrieval's): one
            -- account's requests run one at a time (billing.claim_requests), so the answer
            -- applied later was given later, and it wins.
            NULL;
        ELSIF v = cur.version AND (new.plan_id, new.stripe_price_id, new.status, new.current_period_start,
                new.current_period_end, new.cancel_at_period_end, new.cancel_at, new.canceled_at,
                new.ended_at, new.trial_end, new.pause_collection, new.quantity, new.stripe_item_id)
             IS DISTINCT FROM (cur.plan_id, cur.stripe_price_id, cur.status, cur.current_period_start,
                cur.current_period_end, cur.cancel_at_period_end, cur.cancel_at, cur.canceled_at,
                cur.ended_at, cur.trial_end, cur.pause_collection, cur.quantity, cur.stripe_item_id) THEN
            winner := billing._same_second_winner(cur.status, new.status);
            IF winner IS NULL OR new.status IS NOT DISTINCT FROM cur.status THEN
                -- Two different reports of one second, and the lifecycle cannot order them.
                PERFORM billing._request_retrieval('refresh', uid, sub_id);
                RETURN;
            ELSIF winner IS DISTINCT FROM new.status THEN
                RETURN;
            END IF;
        ELSE
            -- An older report changes none of the state, but may tell when the status began.
            PERFORM billing._date_status_from_older_report(sub_id, new.status, (v).created);
            RETURN;
        END IF;
    END IF;
    -- When the current status began (past_due's grace counts from it): kept while reports
    -- repeat the status, restarted at this report's time when the status changes.
    IF new.status IS DISTINCT FROM cur.status OR cur.status_since IS NULL THEN
        new.status_since := (v).created;
        new.previous_status_at := (cur.version).created;  -- the newest report until now, of the old status
    END IF;
    UPDATE billing.subscriptions c SET
        plan_id = new.plan_id, stripe_price_id = new.stripe_price_id, status = new.status,
        status_since = new.status_since, previous_status_at = new.previous_status_at,
        current_period_start = new.current_period_start, current_period_end = new.current_period_end,
        cancel_at_period_end = new.cancel_at_period_end, cancel_at = new.cancel_at,
        canceled_at = new.canceled_at, ended_at = new.ended_at, trial_end = new.trial_end,
        pause_collection = new.pause_collection, quantity = new.quantity,
        stripe_item_id = new.stripe_item_id, version = new.version, updated_at = now()
    WHERE c.stripe_subscription_id = sub_id;
END
$$;
COMMENT ON FUNCTION billing._apply_subscription(jsonb, smallint) IS 'Internal: applies a report of a subscription (an event, rank 1, or the object retrieved from Stripe, rank 2) when it is newer than the row''s state; same-second reports are ordered by the lifecycle or settled by retrieving the subscription.';

-- When the current status began, whatever order reports arrive in (the grace of past_due counts
-- from it): a newer report that changes the status starts it at its own time, and an older one
-- can only move it. An older report of the current status, made after the newest known report
-- of another status, moves status_since back to itself; an older report of another status made
-- after status_since shows the run began later, at a report we no longer have, so status_since
-- moves up to the newest report (version), which is never earlier than the truth. Exact for any
-- order of up to three reports; never earlier than the truth for any number.
CREATE OR REPLACE FUNCTION billing._date_status_from_older_report(sub_id text, reported_status text, reported_at timestamptz)
RETURNS void
LANGUAGE sql
AS $$
    UPDATE billing.subscriptions c SET
        status_since = CASE WHEN c.status = reported_status THEN least(c.status_since, reported_at)
                            WHEN reported_at > c.status_since THEN (c.version).created
                            ELSE c.status_since END,
        previous_status_at = CASE WHEN c.status = reported_status THEN c.previous_status_at
                                  ELSE greatest(c.previous_status_at, reported_at) END
    WHERE c.stripe_subscription_id = sub_id
      AND reported_status IS NOT NULL AND reported_at IS NOT NULL AND c.status_since IS NOT NULL
      AND reported_at < (c.version).created
      AND (c.previous_status_at IS NULL OR reported_at > c.previous_status_at)
$$;
COMMENT ON FUNCTION billing._date_status_from_older_report(text, text, timestamptz) IS 'Internal: corrects a subscription''s status_since (and previous_status_at) with a report older than its state, so that when the current status began does not depend on the order reports arrived in.';
