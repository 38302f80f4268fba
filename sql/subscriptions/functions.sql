-- Subscriptions: applying Stripe's reports of a subscription in any delivery order.
--
-- A report (a customer.subscription.* event, or the subscription retrieved from the API)
-- replaces the row's state only when it is newer: (Stripe's created time, rank). Stripe's times
-- have one-second resolution and event ids are random, so two reports of the same second are
-- told apart by the lifecycle: canceled and incomplete_expired are final and never change again,
-- and incomplete is where every subscription starts. Where even that cannot tell (active vs
-- past_due in the same second), the row keeps its state and the worker is asked to retrieve
-- the subscription, which then applies as the newest report.

CREATE OR REPLACE FUNCTION billing._event_version(ev jsonb, rank smallint) RETURNS billing.event_version
LANGUAGE sql IMMUTABLE
AS $$
    SELECT ROW(billing._unix_time(ev -> 'created'), rank)::billing.event_version
$$;
COMMENT ON FUNCTION billing._event_version(jsonb, smallint) IS 'Internal: the (created, rank) of a normalised report; events rank 1, retrieved objects 2.';

CREATE OR REPLACE FUNCTION billing._is_newer(candidate billing.event_version, current billing.event_version) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT current IS NULL OR (current).created IS NULL OR candidate > current
$$;
COMMENT ON FUNCTION billing._is_newer(billing.event_version, billing.event_version) IS 'Internal: whether a report may replace the state last set by a report at current.';

CREATE OR REPLACE FUNCTION billing._is_final(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(status IN ('canceled', 'incomplete_expired'), false)
$$;
COMMENT ON FUNCTION billing._is_final(text) IS 'Internal: whether a subscription status is final in Stripe (canceled, incomplete_expired).';

CREATE OR REPLACE FUNCTION billing._same_second_winner(current text, candidate text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN billing._is_final(current) THEN current
        WHEN billing._is_final(candidate) THEN candidate
        WHEN current = 'incomplete' THEN candidate
        WHEN candidate = 'incomplete' THEN current
    END
$$;
COMMENT ON FUNCTION billing._same_second_winner(text, text) IS 'Internal: which of two different statuses reported in the same second is the later one by the lifecycle (final ones last, incomplete first); NULL when the lifecycle cannot tell.';

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
COMMENT ON FUNCTION billing._upsert_subscription_link(text, uuid, text) IS 'Internal: makes sure a subscription row exists for its user before reports fill it in.';
