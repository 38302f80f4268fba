-- Effects of customer.subscription.* events.

CREATE OR REPLACE FUNCTION billing._apply_subscription(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s jsonb := ev -> 'data';
    uid uuid := billing._resolve_user(s -> 'metadata' ->> 'user_id', ev ->> 'customer', s ->> 'id');
    plan billing.plans := billing._plan_for_price(s ->> 'price_id');
    v billing.event_version := billing._event_version(ev, 1::smallint);
BEGIN
    INSERT INTO billing.subscriptions AS cur (stripe_subscription_id, user_id, stripe_customer_id, plan_id,
        stripe_price_id, status, current_period_start, current_period_end, cancel_at_period_end, cancel_at,
        canceled_at, ended_at, object_version, status_version, period_version)
    VALUES (s ->> 'id', uid, ev ->> 'customer', plan.id, plan.stripe_price_id, s ->> 'status',
        billing._unix_time(s -> 'current_period_start'), billing._unix_time(s -> 'current_period_end'),
        (s ->> 'cancel_at_period_end')::boolean, billing._unix_time(s -> 'cancel_at'),
        billing._unix_time(s -> 'canceled_at'), billing._unix_time(s -> 'ended_at'), v, v, v)
    ON CONFLICT (stripe_subscription_id) DO UPDATE SET
        stripe_customer_id = coalesce(cur.stripe_customer_id, excluded.stripe_customer_id),
        plan_id = CASE WHEN billing._is_newer(v, cur.object_version) THEN excluded.plan_id ELSE cur.plan_id END,
        stripe_price_id = CASE WHEN billing._is_newer(v, cur.object_version) THEN excluded.stripe_price_id ELSE cur.stripe_price_id END,
        cancel_at_period_end = CASE WHEN billing._is_newer(v, cur.object_version) THEN excluded.cancel_at_period_end ELSE cur.cancel_at_period_end END,
        cancel_at = CASE WHEN billing._is_newer(v, cur.object_version) THEN excluded.cancel_at ELSE cur.cancel_at END,
        canceled_at = CASE WHEN billing._is_newer(v, cur.object_version) THEN excluded.canceled_at ELSE cur.canceled_at END,
        ended_at = CASE WHEN billing._is_newer(v, cur.object_version) THEN excluded.ended_at ELSE cur.ended_at END,
        object_version = CASE WHEN billing._is_newer(v, cur.object_version) THEN v ELSE cur.object_version END,
        status = CASE WHEN billing._is_newer(v, cur.status_version) THEN excluded.status ELSE cur.status END,
        status_version = CASE WHEN billing._is_newer(v, cur.status_version) THEN v ELSE cur.status_version END,
        current_period_start = CASE WHEN billing._is_newer(v, cur.period_version) THEN excluded.current_period_start ELSE cur.current_period_start END,
        current_period_end = CASE WHEN billing._is_newer(v, cur.period_version) THEN excluded.current_period_end ELSE cur.current_period_end END,
        period_version = CASE WHEN billing._is_newer(v, cur.period_version) THEN v ELSE cur.period_version END,
        updated_at = now();
END
$$;
COMMENT ON FUNCTION billing._apply_subscription(jsonb) IS 'Internal: customer.subscription.* effects: status, plan, periods and cancellation, each only if this event is newer than the one that last set it.';
