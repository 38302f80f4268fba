-- Subscriptions: the version order that keeps an older event from overwriting a newer state,
-- and the row writes the effects share.

CREATE OR REPLACE FUNCTION billing._event_version(ev jsonb, rank smallint) RETURNS billing.event_version
LANGUAGE sql IMMUTABLE
AS $$
    SELECT ROW(billing._unix_time(ev -> 'created'), rank, ev ->> 'id')::billing.event_version
$$;
COMMENT ON FUNCTION billing._event_version(jsonb, smallint) IS 'Internal: the (created, rank, id) position of a normalised event; subscription objects rank 1, invoices 0.';

CREATE OR REPLACE FUNCTION billing._is_newer(candidate billing.event_version, current billing.event_version) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT current IS NULL OR (current).created IS NULL OR candidate > current
$$;
COMMENT ON FUNCTION billing._is_newer(billing.event_version, billing.event_version) IS 'Internal: whether an event may overwrite a field group last set by the event at current.';

CREATE OR REPLACE FUNCTION billing._upsert_subscription_link(sub_id text, uid uuid, customer text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO billing.subscriptions AS s (stripe_subscription_id, user_id, stripe_customer_id)
    VALUES (sub_id, uid, customer)
    ON CONFLICT (stripe_subscription_id) DO UPDATE
        SET stripe_customer_id = excluded.stripe_customer_id
        WHERE s.stripe_customer_id IS NULL AND excluded.stripe_customer_id IS NOT NULL;
END
$$;
COMMENT ON FUNCTION billing._upsert_subscription_link(text, uuid, text) IS 'Internal: makes sure a subscription row exists for its user before other events fill it in.';

CREATE OR REPLACE FUNCTION billing._update_subscription_from_invoice(sub_id text, v billing.event_version, period_start timestamptz,
                                                          period_end timestamptz, customer text) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE billing.subscriptions s SET
        stripe_customer_id = coalesce(s.stripe_customer_id, customer),
        status = CASE WHEN billing._is_newer(v, s.status_version) THEN 'active' ELSE s.status END,
        status_version = CASE WHEN billing._is_newer(v, s.status_version) THEN v ELSE s.status_version END,
        current_period_start = CASE WHEN period_end IS NOT NULL AND billing._is_newer(v, s.period_version) THEN period_start ELSE s.current_period_start END,
        current_period_end = CASE WHEN period_end IS NOT NULL AND billing._is_newer(v, s.period_version) THEN period_end ELSE s.current_period_end END,
        period_version = CASE WHEN period_end IS NOT NULL AND billing._is_newer(v, s.period_version) THEN v ELSE s.period_version END,
        updated_at = now()
    WHERE s.stripe_subscription_id = sub_id
      AND (billing._is_newer(v, s.status_version) OR (period_end IS NOT NULL AND billing._is_newer(v, s.period_version))
           OR (s.stripe_customer_id IS NULL AND customer IS NOT NULL));
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION billing._update_subscription_from_invoice(text, billing.event_version, timestamptz, timestamptz, text) IS 'Internal: a paid invoice reports its subscription active for the period it paid, where that is newer than what the row holds; true when a row changed.';
