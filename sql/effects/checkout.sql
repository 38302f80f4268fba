-- Effects of checkout.session.* events.

CREATE OR REPLACE FUNCTION billing._apply_checkout_session(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s jsonb := ev -> 'data';
    uid uuid;
    plan billing.plans;
    tokens bigint;
BEGIN
    uid := billing._resolve_user(coalesce(s ->> 'client_reference_id', s -> 'metadata' ->> 'user_id'),
                                ev ->> 'customer', s ->> 'subscription');
    IF ev ->> 'customer' IS NOT NULL THEN
        PERFORM billing.link_customer(uid, ev ->> 'customer');
    END IF;
    IF s ->> 'mode' = 'subscription' AND s ->> 'subscription' IS NOT NULL THEN
        PERFORM billing._upsert_subscription_link(s ->> 'subscription', uid, ev ->> 'customer');
    ELSIF s ->> 'mode' = 'payment' THEN
        IF ev ->> 'type' = 'checkout.session.async_payment_failed' THEN
            PERFORM pg_notify('billing_payment_failed', uid::text);
            RETURN;
        END IF;
        -- A delayed payment method (bank debit) completes the session unpaid; the tokens come
        -- with checkout.session.async_payment_succeeded.
        IF s ->> 'payment_status' = 'paid' OR ev ->> 'type' = 'checkout.session.async_payment_succeeded' THEN
            plan := billing._plan_for_price(s -> 'metadata' ->> 'price_id');
            IF plan.kind <> 'token_pack' THEN
                RAISE EXCEPTION 'price % is a subscription plan but was paid in payment mode', plan.stripe_price_id
                    USING ERRCODE = 'BL006';
            END IF;
            tokens := coalesce((s -> 'metadata' ->> 'tokens')::bigint, plan.tokens);
            PERFORM billing._insert_grant(uid, tokens, 'payg_purchase', NULL,
                billing._uuid_or_null(s -> 'metadata' ->> 'project_id'), s ->> 'id',
                jsonb_build_object('session_id', s ->> 'id', 'amount_paid', s -> 'amount_total',
                                   'currency', s -> 'currency', 'price_id', plan.stripe_price_id,
                                   'event_id', ev ->> 'id'));
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION billing._apply_checkout_session(jsonb) IS 'Internal: checkout.session.* effects: link customer and user; grant a paid token pack (keyed by the session id); record the subscription.';
