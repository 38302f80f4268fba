-- Seats (issue 23, item 2): a team's subscription's quantity is how many members it may have.
-- Every subscription a team owns is a team plan, so no plan flag is needed: a personal account
-- has no members to count. The quantity changes only in Stripe: a team buys its first seats at
-- Checkout and changes them through the queue (billing.request_seat_change); what Stripe then
-- reports (the worker's answer, the customer.subscription.updated event) sets it here.

-- The team's live subscription: the one whose seats count (the largest quantity with several).
CREATE OR REPLACE FUNCTION billing._team_subscription(account_id uuid) RETURNS billing.subscriptions
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.* FROM billing.subscriptions s
    WHERE s.user_id = _team_subscription.account_id AND s.status IN ('active', 'trialing', 'past_due')
    ORDER BY s.quantity DESC NULLS LAST, s.created_at DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION billing._team_subscription(uuid) IS 'Internal: a team''s active, trialing or past_due subscription whose quantity is its seats (the largest, with several); NULL when it has none.';

CREATE OR REPLACE FUNCTION billing._team_members(account_id uuid) RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM billing.account_members m WHERE m.account_id = _team_members.account_id
$$;
COMMENT ON FUNCTION billing._team_members(uuid) IS 'Internal: how many members (owners and admins included) a team has: the seats they take.';

-- A seat change not answered yet counts at once when it lowers the seats, so members cannot be
-- added meanwhile into seats that are about to go.
CREATE OR REPLACE FUNCTION billing._team_seats(account_id uuid) RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT least((billing._team_subscription(_team_seats.account_id)).quantity,
                 (SELECT (r.params ->> 'quantity')::bigint FROM billing.stripe_requests r
                  WHERE r.user_id = _team_seats.account_id AND r.kind = 'seats' AND r.status IN ('pending', 'running')))
$$;
COMMENT ON FUNCTION billing._team_seats(uuid) IS 'Internal: how many members a team may have: the quantity of its active, trialing or past_due subscription (the largest, with several), or the seats a pending seat change asks for when fewer; NULL = no limit (no such subscription, or its quantity not reported yet).';

-- Called with the team's row locked (billing._lock_team), so members are added one at a time
-- and concurrent adds cannot both take the last seat: each counts after the previous committed.
CREATE OR REPLACE FUNCTION billing._check_free_seat(account_id uuid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seats bigint := billing._team_seats(account_id);
    taken bigint := billing._team_members(account_id);
BEGIN
    IF seats IS NULL THEN
        RETURN;
    END IF;
    IF taken >= seats THEN
        RAISE EXCEPTION 'no free seat: account % has % seats and % members', account_id, seats, taken
            USING ERRCODE = 'BL022',
                  HINT = 'An owner or admin buys more seats (billing.request_seat_change), or removes a member first.';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._check_free_seat(uuid) IS 'Internal: BL022 when the team''s members (owners and admins included) already fill its seats (billing._team_seats); call it with the team''s row locked.';

-- The one rule for a number of seats, at Checkout and for a change: 1 to 10000 (a bound of
-- ours, so that a typo cannot bill thousands of seats), and never fewer than the members.
CREATE OR REPLACE FUNCTION billing._check_seat_count(account_id uuid, quantity bigint) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    taken bigint := billing._team_members(account_id);
BEGIN
    PERFORM billing._check_not_null(quantity, 'quantity');
    IF quantity NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'a team''s seats must be 1 to 10000, got %', quantity USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF quantity < taken THEN
        RAISE EXCEPTION 'fewer seats than members: account % has % members, % seats asked', account_id, taken, quantity
            USING ERRCODE = 'BL023',
                  HINT = 'Remove members first (billing.remove_team_member), then lower the seats.';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._check_seat_count(uuid, bigint) IS 'Internal: 22023 unless quantity is 1 to 10000, BL023 when it is below the team''s members (owners and admins included); call it with the team''s row locked.';

CREATE OR REPLACE FUNCTION billing.request_seat_change(account_id uuid, quantity integer) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg billing.config := billing._settings();
    sub billing.subscriptions;
    params jsonb;
    key text := billing._idempotency_key();
    prior billing.stripe_requests;
    request_id uuid;
BEGIN
    PERFORM billing._check_not_null(account_id, 'account_id');
    PERFORM billing._require_account_role(account_id, ARRAY['owner', 'admin']);
    PERFORM billing._check_not_null(quantity, 'quantity');
    -- The membership lock: a member added meanwhile is counted, and one added after counts the
    -- seats this change asks for (billing._team_seats).
    PERFORM billing._lock_team(account_id);
    -- The caller asked for a number of seats; the rest is what the request found, which its
    -- own success changes (the old quantity), so a retry after a lost answer matches on the number.
    prior := billing._request_by_key(account_id, key);
    IF prior.id IS NOT NULL THEN
        IF prior.kind <> 'seats' OR (prior.params ->> 'quantity')::integer IS DISTINCT FROM quantity THEN
            PERFORM billing._key_reused(key);
        END IF;
        RETURN prior.id;
    END IF;
    PERFORM billing._check_seat_count(account_id, quantity);
    sub := billing._team_subscription(account_id);
    IF sub.stripe_subscription_id IS NULL THEN
        RAISE EXCEPTION 'account % has no active, trialing or past_due subscription', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A team buys its first seats at Checkout: billing.request_checkout(price, quantity => seats, account_id => team).';
    END IF;
    IF sub.stripe_item_id IS NULL OR sub.quantity IS NULL THEN
        RAISE EXCEPTION 'the seats of subscription % are not known yet', sub.stripe_subscription_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Its item and quantity come with Stripe''s next report of it (a customer.subscription.* webhook).';
    END IF;
    params := jsonb_build_object(
        'subscription_id', sub.stripe_subscription_id,
        'item_id', sub.stripe_item_id,
        'quantity', quantity,
        'from_quantity', sub.quantity,
        'proration_behavior', coalesce(cfg.seat_proration_behavior, 'create_prorations'));
    IF EXISTS (SELECT FROM billing.stripe_requests r
               WHERE r.user_id = request_seat_change.account_id AND r.kind = 'seats' AND r.status IN ('pending', 'running')) THEN
        RAISE EXCEPTION 'a seat change of account % is in progress', account_id
            USING ERRCODE = 'BL024', HINT = 'Wait for it (billing.await_request) and ask again.';
    END IF;
    IF quantity = sub.quantity THEN
        RAISE EXCEPTION 'account % has % seats already', account_id, quantity USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO billing.stripe_requests (user_id, kind, params, idempotency_key)
    VALUES (account_id, 'seats', params, key)
    RETURNING id INTO request_id;
    RETURN request_id;
END
$$;
COMMENT ON FUNCTION billing.request_seat_change(uuid, integer) IS 'For a team''s owners and admins: queues a change of the team''s seats (its subscription item''s quantity) to quantity and returns the request id; the worker asks Stripe with billing.config.seat_proration_behavior, and Stripe''s answer sets billing.subscriptions.quantity (await with billing.await_request). Refused: fewer seats than members (BL023), another change in progress (BL024), the same number (22023), not 1 to 10000 (22023), no live subscription or its seats not reported yet (55000), callers who are not owner or admin (42501), NULLs (22004). An Idempotency-Key in request.headers returns the request made with that key before.';
