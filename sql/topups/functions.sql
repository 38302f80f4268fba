-- Auto top-up (docs/tokens.md, "Auto top-up"). The spend that takes a user's balance from above
-- their threshold to it or below queues one top_up request (billing._after_spend_top_up, called
-- once by billing._spend); the worker charges the card saved at checkout off-session with a
-- PaymentIntent; the tokens come only from Stripe's payment_intent.succeeded (grant key = the
-- PaymentIntent), so a lost answer or a repeated event grants once, and the PaymentIntent is a
-- purchase like any other, so refunds and disputes take its tokens back. A declined charge, or
-- one that needs the user's authentication, turns auto top-up off and tells the user, with a
-- Checkout link for the same pack when the operator has a default success URL.

-- The pack a top-up buys and what one costs; NULL amount when it cannot be bought now.
CREATE OR REPLACE FUNCTION billing._top_up_pack(plan_id text, OUT plan billing.plans, OUT amount bigint,
                                                OUT currency text)
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_column
DECLARE
    price billing.prices;
BEGIN
    SELECT * INTO plan FROM billing.plans p WHERE p.id = _top_up_pack.plan_id;
    IF NOT FOUND OR plan.kind <> 'token_pack' OR NOT plan.active THEN
        plan := NULL;
        RETURN;
    END IF;
    SELECT * INTO price FROM billing.prices p WHERE p.stripe_price_id = plan.stripe_price_id;
    -- A one-time price of a whole amount: a PaymentIntent takes an integer amount.
    IF price.unit_amount > 0 AND price.unit_amount = trunc(price.unit_amount) AND price.currency IS NOT NULL
       AND price.recurring_interval IS NULL THEN
        amount := price.unit_amount::bigint;
        currency := price.currency;
    END IF;
END
$$;
COMMENT ON FUNCTION billing._top_up_pack(text) IS 'Internal: the token pack an auto top-up buys, with its price''s amount and currency from billing.prices; plan NULL when it is not an active pack, amount NULL when its one-time price is not known.';

CREATE OR REPLACE FUNCTION billing._auto_top_up_json(s billing.auto_top_ups) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object('user_id', s.user_id, 'plan_id', s.plan_id, 'threshold', s.threshold,
        'monthly_count_limit', s.monthly_count_limit, 'monthly_amount_limit', s.monthly_amount_limit,
        'enabled', s.enabled, 'disabled_reason', s.disabled_reason,
        'count_this_month', CASE WHEN s.period_start = date_trunc('month', now() AT TIME ZONE 'UTC')::date
                                 THEN s.period_count ELSE 0 END,
        'amount_this_month', CASE WHEN s.period_start = date_trunc('month', now() AT TIME ZONE 'UTC')::date
                                  THEN s.period_amount ELSE 0 END)
$$;
COMMENT ON FUNCTION billing._auto_top_up_json(billing.auto_top_ups) IS 'Internal: the JSON shape the auto top-up functions return (the settings and this month''s use).';

-- One place for the rules of the settings, whoever sets them.
CREATE OR REPLACE FUNCTION billing._set_auto_top_up(uid uuid, plan_id text, threshold bigint,
                                                    monthly_count_limit integer, monthly_amount_limit bigint,
                                                    enabled boolean)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    pack record;
    s billing.auto_top_ups;
BEGIN
    PERFORM billing._check_not_null(plan_id, 'plan_id');
    PERFORM billing._check_not_null(threshold, 'threshold');
    PERFORM billing._check_not_null(monthly_count_limit, 'monthly_count_limit');
    PERFORM billing._check_not_null(monthly_amount_limit, 'monthly_amount_limit');
    PERFORM billing._check_not_null(enabled, 'enabled');
    IF NOT EXISTS (SELECT FROM billing.plans p WHERE p.id = _set_auto_top_up.plan_id) THEN
        RAISE EXCEPTION 'unknown plan %', quote_literal(left(plan_id, 100))
            USING ERRCODE = 'no_data_found', HINT = 'Pass the id of a token pack from billing.plans.';
    END IF;
    SELECT * INTO pack FROM billing._top_up_pack(plan_id);
    IF (pack.plan).id IS NULL THEN
        RAISE EXCEPTION 'plan % is not a token pack for sale', plan_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Auto top-up buys an active plan of kind token_pack.';
    END IF;
    IF pack.amount IS NULL THEN
        RAISE EXCEPTION 'the price of pack % is not known yet', plan_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'billing.prices learns it from Stripe''s price.created and price.updated events (enable them on the webhook endpoint); the pack needs a one-time price of a fixed amount.';
    END IF;
    IF threshold < 0 OR threshold > 1000000000000 THEN
        RAISE EXCEPTION 'threshold must be between 0 and 1000000000000, got %', threshold
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF monthly_count_limit < 1 OR monthly_count_limit > 100 THEN
        RAISE EXCEPTION 'monthly_count_limit must be between 1 and 100, got %', monthly_count_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A limit below one pack could never allow a top-up.
    IF monthly_amount_limit < pack.amount OR monthly_amount_limit > 100000000 THEN
        RAISE EXCEPTION 'monthly_amount_limit must be between one pack (% %) and 100000000, got %',
                        pack.amount, pack.currency, monthly_amount_limit
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Amounts are in the smallest unit of the pack price''s currency (cents).';
    END IF;
    INSERT INTO billing.auto_top_ups AS a (user_id, plan_id, threshold, monthly_count_limit, monthly_amount_limit,
                                           enabled, disabled_reason)
    VALUES (uid, plan_id, threshold, monthly_count_limit, monthly_amount_limit, enabled,
            CASE WHEN NOT enabled THEN 'turned off' END)
    ON CONFLICT (user_id) DO UPDATE
    SET plan_id = excluded.plan_id, threshold = excluded.threshold, monthly_count_limit = excluded.monthly_count_limit,
        monthly_amount_limit = excluded.monthly_amount_limit, enabled = excluded.enabled,
        disabled_reason = excluded.disabled_reason, updated_at = now()
    RETURNING * INTO s;
    RETURN billing._auto_top_up_json(s);
END
$$;
COMMENT ON FUNCTION billing._set_auto_top_up(uuid, text, bigint, integer, bigint, boolean) IS 'Internal: validates and stores a user''s auto top-up settings (22004 for a NULL, P0002 for an unknown plan, 22023 for a plan that is not a pack for sale or a value out of bounds, 55000 while the pack''s price is not known).';

CREATE OR REPLACE FUNCTION billing.set_my_auto_top_up(plan_id text, threshold bigint, monthly_count_limit integer,
                                                      monthly_amount_limit bigint, account_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A team's top-up spends the team's money on its saved card: only those who buy for it
    -- (owners and admins, billing._buying_account) set it.
    RETURN billing._set_auto_top_up(billing._buying_account(account_id), plan_id, threshold, monthly_count_limit,
                                    monthly_amount_limit, true);
END
$$;
COMMENT ON FUNCTION billing.set_my_auto_top_up(text, bigint, integer, bigint, uuid) IS 'For signed-in users: turns on auto top-up for the caller''s own balance (account_id NULL or their id) or a team''s when they are its owner or admin (42501 for members and others), or changes it, or turns it on again after a failed charge: when a spend leaves the balance at or below threshold, the token pack plan_id is bought with the card saved at checkout (a team''s: the card saved at the team''s checkout), at most monthly_count_limit times and monthly_amount_limit (smallest currency unit) per calendar month. Returns the settings and this month''s use.';

CREATE OR REPLACE FUNCTION billing.disable_my_auto_top_up(account_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct uuid := billing._buying_account(account_id);
    s billing.auto_top_ups;
BEGIN
    UPDATE billing.auto_top_ups a SET enabled = false, disabled_reason = 'turned off by the user', updated_at = now()
    WHERE a.user_id = acct
    RETURNING * INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'auto top-up is not set up' USING ERRCODE = 'no_data_found',
            HINT = 'billing.set_my_auto_top_up sets it up.';
    END IF;
    RETURN billing._auto_top_up_json(s);
END
$$;
COMMENT ON FUNCTION billing.disable_my_auto_top_up(uuid) IS 'For signed-in users: turns the auto top-up of the caller''s own account (account_id NULL) or of a team they own or administer (42501 otherwise) off (P0002 when it was never set up); a top-up already queued still runs. billing.set_my_auto_top_up turns it on again.';

CREATE OR REPLACE FUNCTION billing.set_auto_top_up(user_id uuid, plan_id text, threshold bigint,
                                                   monthly_count_limit integer, monthly_amount_limit bigint,
                                                   enabled boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM billing._check_user_exists(user_id);
    RETURN billing._set_auto_top_up(user_id, plan_id, threshold, monthly_count_limit, monthly_amount_limit, enabled);
END
$$;
COMMENT ON FUNCTION billing.set_auto_top_up(uuid, text, bigint, integer, bigint, boolean) IS 'Privileged: sets any user''s auto top-up, like billing.set_my_auto_top_up; enabled false turns it off.';

-- Called once per spend by billing._spend. One primary-key probe when the spend crosses nothing.
CREATE OR REPLACE FUNCTION billing._after_spend_top_up(user_id uuid, project_id uuid, balance_before bigint,
                                                       balance_after bigint)
RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    s billing.auto_top_ups;
BEGIN
    -- Only the user's own balance is topped up (a pack bought by top-up goes there).
    IF project_id IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT * INTO s FROM billing.auto_top_ups a WHERE a.user_id = _after_spend_top_up.user_id;
    -- Crossing, not being below: the spends after the one that crossed queue nothing more.
    IF NOT FOUND OR NOT s.enabled OR balance_before <= s.threshold OR balance_after > s.threshold THEN
        RETURN;
    END IF;
    PERFORM billing._queue_top_up(_after_spend_top_up.user_id);
END
$$;
COMMENT ON FUNCTION billing._after_spend_top_up(uuid, uuid, bigint, bigint) IS 'Internal (billing._spend): when a spend takes the user''s own balance from above their auto top-up threshold to it or below, queues the top-up.';

CREATE OR REPLACE FUNCTION billing._queue_top_up(uid uuid) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s billing.auto_top_ups;
    pack record;
    month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    used_count integer;
    used_amount bigint;
    queued uuid;
BEGIN
    -- The row lock serialises the spends of one user that cross at once, and their counting.
    SELECT * INTO s FROM billing.auto_top_ups a WHERE a.user_id = uid AND a.enabled FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO pack FROM billing._top_up_pack(s.plan_id);
    IF pack.amount IS NULL THEN
        UPDATE billing.auto_top_ups a SET enabled = false, updated_at = now(),
            disabled_reason = format('the pack %s cannot be bought any more', s.plan_id)
        WHERE a.user_id = uid;
        PERFORM billing._notify(uid, 'top_up_failed', format('top_up_unavailable:%s:%s', uid, s.updated_at),
            jsonb_build_object('plan_id', s.plan_id, 'code', 'pack_unavailable',
                               'message', format('the pack %s cannot be bought any more', s.plan_id)));
        RETURN;
    END IF;
    used_count := CASE WHEN s.period_start = month THEN s.period_count ELSE 0 END;
    used_amount := CASE WHEN s.period_start = month THEN s.period_amount ELSE 0 END;
    IF used_count + 1 > s.monthly_count_limit OR used_amount + pack.amount > s.monthly_amount_limit THEN
        -- Once a month, whatever the number of spends that cross.
        PERFORM billing._notify(uid, 'top_up_limit_reached', format('top_up_limit:%s:%s', uid, month),
            jsonb_build_object('plan_id', s.plan_id, 'month', month, 'count', used_count, 'amount', used_amount,
                               'currency', pack.currency, 'monthly_count_limit', s.monthly_count_limit,
                               'monthly_amount_limit', s.monthly_amount_limit));
        RETURN;
    END IF;
    INSERT INTO billing.stripe_requests AS r (user_id, kind, params)
    VALUES (uid, 'top_up', jsonb_build_object('plan_id', (pack.plan).id, 'price_id', (pack.plan).stripe_price_id,
                                              'tokens', (pack.plan).tokens, 'amount', pack.amount,
                                              'currency', pack.currency))
    ON CONFLICT (user_id) WHERE kind = 'top_up' AND status IN ('pending', 'running') DO NOTHING
    RETURNING r.id INTO queued;
    IF queued IS NOT NULL THEN
        UPDATE billing.auto_top_ups a
        SET period_start = month, period_count = used_count + 1, period_amount = used_amount + pack.amount
        WHERE a.user_id = uid;
    END IF;
END
$$;
COMMENT ON FUNCTION billing._queue_top_up(uuid) IS 'Internal: queues one top_up request for the user within the monthly limits (one in flight at a time: stripe_requests_one_top_up_idx); past a limit, notifies top_up_limit_reached once a month instead.';

-- A top-up's charge failed for good (a decline, authentication required, no saved card): auto
-- top-up goes off until the user sets it again, and the user is told once, with a Checkout link
-- for the same pack when one can be made (its URL is in the notification once the worker has
-- created the session: billing._top_up_link_ready).
CREATE OR REPLACE FUNCTION billing._top_up_failed(request_id uuid, code text, message text) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    r billing.stripe_requests;
    cfg billing.config := billing._settings();
    pack record;
    reason text;
BEGIN
    SELECT * INTO r FROM billing.stripe_requests s WHERE s.id = request_id AND s.kind = 'top_up';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    reason := left(format('the charge of top-up %s failed: %s', r.id, concat_ws(': ', code, message)), 2000);
    -- The settings row lock orders the worker's report and the webhook's: the second sees the first's.
    PERFORM FROM billing.auto_top_ups a WHERE a.user_id = r.user_id FOR UPDATE;
    UPDATE billing.auto_top_ups a SET enabled = false, disabled_reason = reason, updated_at = now()
    WHERE a.user_id = r.user_id AND a.enabled;
    -- Told once: the notification is keyed by the top-up (billing._notify ignores a second),
    -- and its Checkout link is asked for once.
    IF EXISTS (SELECT FROM billing.stripe_requests c
               WHERE c.user_id = r.user_id AND c.kind = 'checkout' AND c.params ->> 'top_up_request' = r.id::text) THEN
        RETURN;
    END IF;
    SELECT * INTO pack FROM billing._top_up_pack(r.params ->> 'plan_id');
    IF cfg.checkout_success_url IS NULL OR pack.amount IS NULL THEN
        PERFORM billing._notify(r.user_id, 'top_up_failed', 'top_up:' || r.id,
            jsonb_build_object('request_id', r.id, 'plan_id', r.params ->> 'plan_id', 'code', code,
                               'message', message, 'checkout_url', NULL));
        RETURN;
    END IF;
    -- The link pays on-session and saves the card for the next top-up (save_for_off_session).
    INSERT INTO billing.stripe_requests (user_id, kind, params)
    VALUES (r.user_id, 'checkout', jsonb_strip_nulls(jsonb_build_object(
        'price_id', (pack.plan).stripe_price_id, 'plan_id', (pack.plan).id, 'mode', 'payment', 'quantity', 1,
        'tokens', (pack.plan).tokens, 'success_url', cfg.checkout_success_url, 'cancel_url', cfg.checkout_cancel_url,
        'collect_tax_ids', cfg.collect_tax_ids, 'save_payment_method', true, 'save_for_off_session', true,
        'top_up_request', r.id, 'top_up_code', code, 'top_up_message', left(message, 500))));
END
$$;
COMMENT ON FUNCTION billing._top_up_failed(uuid, text, text) IS 'Internal: a top-up''s charge failed for good (the worker''s answer or payment_intent.payment_failed, whichever comes first): turns auto top-up off and tells the user once (notification top_up_failed), with a Checkout link for the same pack when billing.config has a checkout_success_url.';

-- The Checkout link for a failed top-up is made, or could not be: now the user is told.
CREATE OR REPLACE FUNCTION billing._top_up_link_ready(c billing.stripe_requests) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM billing._notify(c.user_id, 'top_up_failed', 'top_up:' || (c.params ->> 'top_up_request'),
        jsonb_build_object('request_id', c.params ->> 'top_up_request', 'plan_id', c.params ->> 'plan_id',
                           'code', c.params ->> 'top_up_code', 'message', c.params ->> 'top_up_message',
                           'checkout_request_id', c.id, 'checkout_url', c.result ->> 'url'));
END
$$;
COMMENT ON FUNCTION billing._top_up_link_ready(billing.stripe_requests) IS 'Internal (finish_request, fail_request): the checkout request made for a failed top-up is over; notifies top_up_failed with its URL (NULL when it failed).';

-- payment_intent.* effects. Only PaymentIntents of our top-ups count (Checkout's are granted
-- from their sessions): the metadata names the request, and carries the tokens so that a top-up
-- whose request was pruned still grants.
CREATE OR REPLACE FUNCTION billing._apply_payment_intent(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    pi jsonb := ev -> 'data';
    r billing.stripe_requests;
    uid uuid;
    tokens bigint;
BEGIN
    SELECT * INTO r FROM billing.stripe_requests s
    WHERE s.id = billing._uuid_or_null(pi -> 'metadata' ->> 'request_id') AND s.kind = 'top_up';
    IF r.id IS NULL AND pi -> 'metadata' ->> 'top_up_tokens' IS NULL THEN
        RETURN;
    END IF;
    IF ev ->> 'type' = 'payment_intent.payment_failed' THEN
        PERFORM billing._top_up_failed(r.id, pi ->> 'error_code', pi ->> 'error_message');
        RETURN;
    END IF;
    uid := billing._resolve_user(pi -> 'metadata' ->> 'user_id', ev ->> 'customer', NULL);
    tokens := coalesce((r.params ->> 'tokens')::bigint, (pi -> 'metadata' ->> 'top_up_tokens')::bigint);
    PERFORM billing._lock_payment(pi ->> 'id');
    -- The PaymentIntent is the purchase: a refund or dispute of it takes its share back.
    PERFORM billing._record_purchase(pi ->> 'id', uid, NULL, ev ->> 'customer',
                                     coalesce((pi ->> 'amount_received')::bigint, (pi ->> 'amount')::bigint),
                                     pi ->> 'currency');
    PERFORM billing._link_payments(pi ->> 'id', pi ->> 'id', pi ->> 'latest_charge');
    PERFORM billing._insert_grant(uid, tokens, 'auto_top_up', NULL, NULL, pi ->> 'id',
        jsonb_strip_nulls(jsonb_build_object('payment_intent', pi ->> 'id', 'request_id', r.id,
            'plan_id', pi -> 'metadata' ->> 'plan_id', 'amount_paid', pi -> 'amount_received',
            'currency', pi -> 'currency', 'event_id', ev ->> 'id')), pi ->> 'id');
    -- The pack's features last from Stripe's time of this report (sql/entitlements/functions.sql).
    PERFORM billing._record_pack_pass(pi ->> 'id', coalesce(r.params ->> 'plan_id', pi -> 'metadata' ->> 'plan_id'),
                                      uid, billing._unix_time(ev -> 'created'));
    -- A refund or dispute reported before this event takes its share now (and ends the pass).
    PERFORM billing._settle_purchase(pi ->> 'id', format('payment of auto top-up %s', pi ->> 'id'), ev ->> 'id');
END
$$;
COMMENT ON FUNCTION billing._apply_payment_intent(jsonb) IS 'Internal: payment_intent.succeeded of an auto top-up grants its pack once (grant key = the PaymentIntent, source auto_top_up) and records it as a purchase and a pack pass (billing.pack_passes); payment_intent.payment_failed turns auto top-up off and tells the user (billing._top_up_failed). Other PaymentIntents are ignored.';
