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

-- "Is this account subscribed, to what, until when": one call for an app's paywall. Runs as the
-- caller (no SECURITY DEFINER): row-level security decides what a signed-in user can see, as for
-- billing.token_balance. Without an account it answers for the active one, the account
-- billing.has_feature answers for, so a paywall and an RLS policy never disagree on a team.
CREATE OR REPLACE FUNCTION billing.subscription_status(user_id uuid DEFAULT NULL)
RETURNS TABLE (active boolean, status text, plan_id text, plan_name text, stripe_price_id text,
               stripe_subscription_id text, current_period_end timestamptz,
               cancel_at_period_end boolean, cancel_at timestamptz, trial_end timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    who uuid := subscription_status.user_id;
BEGIN
    IF who IS NULL AND billing.current_user_id() IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL when the caller is not signed in'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Signed-in users call billing.my_subscription(); the server passes the user id.';
    END IF;
    IF who IS NULL THEN
        -- NULL when the X-Billing-Account header names an account not the caller's: like
        -- has_feature, such an account is not subscribed as far as they can tell.
        who := billing.active_account();
    ELSIF NOT who = ANY (billing._visible_accounts()) AND NOT billing._is_privileged() THEN
        RAISE EXCEPTION 'permission denied: you can only read your own subscription or that of a team you belong to'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The subscription that decides access: an active one first (active, trialing, then
    -- past_due), then the latest of the rest, so a user who resubscribed after canceling sees
    -- the new subscription and one who never subscribed gets a row with active = false.
    RETURN QUERY
    WITH best AS (
        SELECT s.*, p.name AS plan_name
        FROM billing.subscriptions s LEFT JOIN billing.plans p ON p.id = s.plan_id
        WHERE s.user_id = who
        ORDER BY CASE s.status WHEN 'active' THEN 0 WHEN 'trialing' THEN 1 WHEN 'past_due' THEN 2 ELSE 3 END,
                 s.current_period_end DESC NULLS LAST, s.created_at DESC, s.stripe_subscription_id
        LIMIT 1
    )
    SELECT coalesce(b.status IN ('active', 'trialing', 'past_due'), false), b.status, b.plan_id, b.plan_name,
           b.stripe_price_id, b.stripe_subscription_id, b.current_period_end, coalesce(b.cancel_at_period_end, false),
           b.cancel_at, b.trial_end
    FROM (SELECT 1) one LEFT JOIN best b ON true;
END
$$;
COMMENT ON FUNCTION billing.subscription_status(uuid) IS 'Whether an account is subscribed (user_id: a user''s id or a team''s, which its members may read, any for privileged roles; default: the caller''s active account, billing.active_account(), the one billing.has_feature answers for: the team named by the X-Billing-Account header, else their personal account; a header naming an account not theirs gives the row of no subscription), to which plan and until when: exactly one row. active is true for the statuses Stripe still serves: active, trialing, and past_due (Stripe is retrying the renewal payment; when it gives up the status becomes canceled or unpaid, per the account''s retry settings); false for unpaid, paused, incomplete, incomplete_expired, canceled and when there is no subscription. With several subscriptions, an active one wins (active, trialing, past_due), then the latest. cancel_at_period_end true: active until current_period_end, then it ends.';

CREATE OR REPLACE FUNCTION billing.my_subscription()
RETURNS TABLE (active boolean, status text, plan_id text, plan_name text, stripe_price_id text,
               stripe_subscription_id text, current_period_end timestamptz,
               cancel_at_period_end boolean, cancel_at timestamptz, trial_end timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM billing._require_user();
    RETURN QUERY SELECT * FROM billing.subscription_status(NULL);
END
$$;
COMMENT ON FUNCTION billing.my_subscription() IS 'For signed-in users: billing.subscription_status of the caller''s active account (billing.active_account(): the team named by the X-Billing-Account header, else their personal account, as for billing.has_feature; SQLSTATE 28000 when not signed in). From supabase-js: supabase.schema(''billing'').rpc(''my_subscription'').single().';
