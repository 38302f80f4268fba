-- Effects of checkout.session.* events: link the customer to the user, record a subscription,
-- and grant a paid token pack.

-- What a paid payment-mode session grants, keyed by the session id (docs/events-and-refunds.md, "Token packs"):
--   a session our checkout created (its metadata names one of the user's checkout requests):
--   the tokens promised when it was requested (the pack's tokens x quantity then);
--   any other session (a Payment Link, the Dashboard, your own back end): what Stripe says it
--   sold, the tokens of every line whose price is a token pack x its quantity. Webhooks do not
--   carry line items, so the first time the worker retrieves them (BL010) and the event is
--   applied when they arrive.
CREATE OR REPLACE FUNCTION billing._grant_pack(uid uuid, ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s jsonb := ev -> 'data';
    ours billing.stripe_requests;
    line billing.checkout_line_items;
    plan billing.plans;
    tokens bigint := 0;
    project uuid;
    prices text[] := '{}';
    packs text[] := '{}';
BEGIN
    SELECT * INTO ours FROM billing.stripe_requests r
    WHERE r.id = billing._uuid_or_null(s -> 'metadata' ->> 'request_id') AND r.user_id = uid AND r.kind = 'checkout';
    IF FOUND THEN
        tokens := (ours.params ->> 'tokens')::bigint;
        project := billing._uuid_or_null(ours.params ->> 'project_id');
        prices := ARRAY[ours.params ->> 'price_id'];
        packs := ARRAY[ours.params ->> 'plan_id'];
    ELSE
        IF NOT EXISTS (SELECT FROM billing.checkout_line_items l WHERE l.session_id = s ->> 'id') THEN
            RAISE EXCEPTION 'waiting for the line items of % from Stripe', s ->> 'id'
                USING ERRCODE = 'BL010',
                      DETAIL = jsonb_build_object('kind', 'line_items', 'object_id', s ->> 'id', 'user_id', uid)::text,
                      HINT = 'The worker retrieves them; the event is applied when they arrive.';
        END IF;
        FOR line IN SELECT * FROM billing.checkout_line_items l WHERE l.session_id = s ->> 'id' ORDER BY l.position LOOP
            plan := billing._plan_of_price(line.price_id);
            IF plan.kind = 'token_pack' THEN
                tokens := tokens + plan.tokens * greatest(coalesce(line.quantity, 1), 1);
                prices := prices || line.price_id;
                packs := packs || plan.id;
            END IF;
        END LOOP;
        IF tokens = 0 THEN
            SELECT * INTO line FROM billing.checkout_line_items l WHERE l.session_id = s ->> 'id' ORDER BY l.position LIMIT 1;
            plan := billing._plan_for_price(line.price_id);  -- BL006 when the catalog does not know it
            RAISE EXCEPTION 'price % is not a token pack, but session % sold it in payment mode', line.price_id, s ->> 'id'
                USING ERRCODE = 'BL006';
        END IF;
    END IF;
    -- The purchase and the PaymentIntent that paid it, so a refund or dispute finds the grant.
    PERFORM billing._record_purchase(s ->> 'id', uid, project, ev ->> 'customer', (s ->> 'amount_total')::bigint,
                                     s ->> 'currency');
    PERFORM billing._link_payment(s ->> 'payment_intent', s ->> 'id');
    PERFORM billing._insert_grant(uid, tokens, 'payg_purchase', NULL, project, s ->> 'id',
        jsonb_strip_nulls(jsonb_build_object('session_id', s ->> 'id', 'amount_paid', s -> 'amount_total',
            'currency', s -> 'currency', 'price_ids', to_jsonb(prices), 'payment_intent', s -> 'payment_intent',
            'request_id', ours.id, 'event_id', ev ->> 'id')), s ->> 'id');
    -- The packs' features last from Stripe's time of this report (sql/entitlements/functions.sql).
    PERFORM billing._record_pack_pass(s ->> 'id', pack, uid, billing._unix_time(ev -> 'created'))
    FROM (SELECT DISTINCT unnest(packs) AS pack) x;
    -- A refund or dispute reported before this event takes its share now (and ends the passes).
    PERFORM billing._settle_purchase(s ->> 'id', format('payment of session %s', s ->> 'id'), ev ->> 'id');
END
$$;
COMMENT ON FUNCTION billing._grant_pack(uuid, jsonb) IS 'Internal: grants what a paid payment-mode Checkout Session bought, once (keyed by the session id), and records a pack pass per pack sold (billing.pack_passes); BL010 while its line items are being retrieved.';

CREATE OR REPLACE FUNCTION billing._apply_checkout_session(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s jsonb := ev -> 'data';
    uid uuid;
BEGIN
    IF ev ->> 'type' = 'checkout.session.expired' THEN
        PERFORM billing._record_session_status(s -> 'metadata' ->> 'request_id', 'expired');
        RETURN;
    END IF;
    uid := billing._resolve_user(coalesce(s ->> 'client_reference_id', s -> 'metadata' ->> 'user_id'),
                                 ev ->> 'customer', s ->> 'subscription');
    PERFORM billing._record_session_status(s -> 'metadata' ->> 'request_id', 'complete');
    IF ev ->> 'customer' IS NOT NULL THEN
        -- A session from elsewhere may carry a new customer for a user who has one: the user
        -- keeps the first, and the purchase still counts.
        PERFORM billing._link_customer(uid, ev ->> 'customer', NULL, strict => false);
    END IF;
    IF s ->> 'mode' = 'subscription' AND s ->> 'subscription' IS NOT NULL THEN
        PERFORM billing._upsert_subscription_link(s ->> 'subscription', uid, ev ->> 'customer');
    ELSIF s ->> 'mode' = 'payment' THEN
        IF ev ->> 'type' = 'checkout.session.async_payment_failed' THEN
            PERFORM billing._notify(uid, 'payment_failed', ev ->> 'id',
                jsonb_build_object('session_id', s ->> 'id', 'amount', s -> 'amount_total', 'currency', s -> 'currency'));
        -- Stripe's rule: fulfil unless the session is unpaid (paid, or no_payment_required for a
        -- 100%-off session). A delayed payment method completes it unpaid; the tokens then come
        -- with checkout.session.async_payment_succeeded.
        ELSIF s ->> 'payment_status' <> 'unpaid' OR ev ->> 'type' = 'checkout.session.async_payment_succeeded' THEN
            PERFORM billing._grant_pack(uid, ev);
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION billing._apply_checkout_session(jsonb) IS 'Internal: checkout.session.* effects: link customer and user; record the subscription; grant a paid (or free) token pack; notify a failed delayed payment; mark our request''s session completed or expired.';
