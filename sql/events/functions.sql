-- Ingestion: one transaction per delivery: verify -> store the event once (its id is the key) ->
-- apply its effects. A failure while applying is stored with the event (and can be re-applied
-- with billing.reprocess_events()); the delivery is still acknowledged so Stripe stops retrying.
-- Effects read billing._normalize_event(), which hides the differences between API versions.

-- Events being applied in this transaction, so that a customer link made while applying one
-- event does not re-enter it. Kept in a transaction-local setting that a failed
-- subtransaction rolls back with everything else.
CREATE OR REPLACE FUNCTION billing._is_being_applied(event_id text) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(event_id = ANY (string_to_array(nullif(current_setting('billing.applying_events', true), ''), ',')), false)
$$;
COMMENT ON FUNCTION billing._is_being_applied(text) IS 'Internal: whether the event is being applied further up this call chain.';

CREATE OR REPLACE FUNCTION billing._apply_in_subtransaction(ev jsonb) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    failure text;
BEGIN
    CASE
        WHEN ev ->> 'type' IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded',
                               'checkout.session.async_payment_failed') THEN
            PERFORM billing._apply_checkout_session(ev);
        WHEN ev ->> 'type' LIKE 'customer.subscription.%' AND ev ->> 'object_type' = 'subscription' THEN
            PERFORM billing._apply_subscription(ev);
        WHEN ev ->> 'type' IN ('invoice.paid', 'invoice.payment_succeeded', 'invoice.payment_failed') THEN
            PERFORM billing._apply_invoice(ev);
        ELSE
            NULL;  -- stored and acknowledged, no effect
    END CASE;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    -- Everything the effects did is rolled back; the caller stores the reason with the event.
    GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT;
    RETURN coalesce(failure, 'unknown error');
END
$$;
COMMENT ON FUNCTION billing._apply_in_subtransaction(jsonb) IS 'Internal: dispatches a normalised event to its effects (unknown types have none) in a subtransaction; returns the error message, or NULL on success.';

CREATE OR REPLACE FUNCTION billing._apply_stored_event(event_id text) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    e billing.stripe_events;
    failure text;
    outer_chain text := nullif(current_setting('billing.applying_events', true), '');
BEGIN
    -- The row lock makes concurrent deliveries and reprocess runs apply an event once.
    SELECT * INTO e FROM billing.stripe_events s WHERE s.id = event_id FOR UPDATE;
    IF NOT FOUND OR e.processed_at IS NOT NULL THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('billing.applying_events', concat_ws(',', outer_chain, event_id), true);
    failure := billing._apply_in_subtransaction(billing._normalize_event(e.payload::text));
    PERFORM set_config('billing.applying_events', coalesce(outer_chain, ''), true);
    UPDATE billing.stripe_events s
    SET attempts = s.attempts + 1, error = failure,
        processed_at = CASE WHEN failure IS NULL THEN clock_timestamp() END
    WHERE s.id = event_id;
    RETURN failure;
END
$$;
COMMENT ON FUNCTION billing._apply_stored_event(text) IS 'Internal: applies a stored event that is not processed yet (a redelivery of a failed event, a held event, reprocess) and records the outcome; returns the error or NULL.';

CREATE OR REPLACE FUNCTION billing.handle_stripe_webhook(payload text, header text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    secrets text[];
    modes boolean[];
    matched integer;
    ev jsonb;
    inserted text;
    failure text;
    e billing.stripe_events;
BEGIN
    SELECT array_agg(w.secret ORDER BY w.id), array_agg(w.livemode ORDER BY w.id) INTO secrets, modes
    FROM billing.webhook_secrets w WHERE w.expires_at IS NULL OR w.expires_at > now();
    IF secrets IS NULL THEN
        RAISE EXCEPTION 'billing is not configured: no webhook signing secret'
            USING ERRCODE = 'BL003',
                  HINT = 'INSERT INTO billing.webhook_secrets (secret, livemode) VALUES (''whsec_...'', false);';
    END IF;
    matched := billing._verify_webhook_signature(payload, header, secrets, (billing._settings()).webhook_tolerance_seconds);
    ev := billing._normalize_event(payload);
    IF (ev ->> 'livemode')::boolean IS DISTINCT FROM modes[matched] THEN
        RAISE EXCEPTION 'a % event was signed with a % secret', CASE WHEN (ev ->> 'livemode')::boolean THEN 'live-mode' ELSE 'test-mode' END,
            CASE WHEN modes[matched] THEN 'live-mode' ELSE 'test-mode' END
            USING ERRCODE = 'invalid_authorization_specification',
                  HINT = 'Each webhook_secrets row says which mode it signs; add the secret of this mode''s endpoint.';
    END IF;

    -- Stored as processed up front: if the effects fail, the row is corrected below. A new
    -- event thus needs one write, and a customer link made while applying it does not re-enter it.
    INSERT INTO billing.stripe_events (id, type, api_version, livemode, created, payload, stripe_customer_id,
                                       processed_at, attempts)
    VALUES (ev ->> 'id', ev ->> 'type', ev ->> 'api_version', (ev ->> 'livemode')::boolean,
            billing._unix_time(ev -> 'created'), payload::json, ev ->> 'customer', clock_timestamp(), 1)
    ON CONFLICT (id) DO NOTHING
    RETURNING id INTO inserted;
    IF inserted IS NOT NULL THEN
        failure := billing._apply_in_subtransaction(ev);
        IF failure IS NOT NULL THEN
            UPDATE billing.stripe_events s SET processed_at = NULL, error = failure WHERE s.id = inserted;
        END IF;
        RETURN jsonb_build_object('received', true, 'event_id', inserted, 'type', ev ->> 'type',
            'duplicate', false, 'processed', failure IS NULL, 'error', failure);
    END IF;
    -- A redelivery of an event that failed before gets another chance; one that succeeded is a no-op.
    PERFORM billing._apply_stored_event(ev ->> 'id');
    SELECT * INTO e FROM billing.stripe_events s WHERE s.id = ev ->> 'id';
    RETURN jsonb_build_object('received', true, 'event_id', e.id, 'type', e.type,
        'duplicate', true, 'processed', e.processed_at IS NOT NULL, 'error', e.error);
END
$$;
COMMENT ON FUNCTION billing.handle_stripe_webhook(text, text) IS 'Privileged: verifies a Stripe webhook (raw body, Stripe-Signature header) against billing.webhook_secrets, stores the event once and applies its effects, all in the caller''s transaction. Returns {received, event_id, type, duplicate, processed, error}. Raises for bad signatures (nothing stored) and BL003 when no secret is configured.';

CREATE OR REPLACE FUNCTION billing.stripe_webhook(json) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    headers jsonb;
BEGIN
    BEGIN
        headers := nullif(current_setting('request.headers', true), '')::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        headers := NULL;
    END;
    -- json keeps the exact bytes of the request body; its text is what Stripe signed.
    RETURN billing.handle_stripe_webhook($1::text, headers ->> 'stripe-signature');
END
$$;
COMMENT ON FUNCTION billing.stripe_webhook(json) IS 'PostgREST entry point (POST /rpc/stripe_webhook with Content-Type: application/json): the raw body arrives as the single unnamed json argument, the signature from the stripe-signature request header. Executable by anon.';

CREATE OR REPLACE FUNCTION billing.reprocess_events(max_events integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record;
    tried integer := 0;
    still_failing integer := 0;
BEGIN
    IF max_events IS NULL OR max_events < 1 THEN
        RAISE EXCEPTION 'max_events must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR e IN SELECT s.id FROM billing.stripe_events s WHERE s.processed_at IS NULL
             ORDER BY s.created, s.id LIMIT max_events LOOP
        tried := tried + 1;
        IF billing._apply_stored_event(e.id) IS NOT NULL THEN
            still_failing := still_failing + 1;
        END IF;
    END LOOP;
    RETURN jsonb_build_object('reprocessed', tried, 'succeeded', tried - still_failing, 'still_failing', still_failing);
END
$$;
COMMENT ON FUNCTION billing.reprocess_events(integer) IS 'Privileged: re-applies stored events that failed (oldest first), e.g. after adding a missing price to billing.plans. Each event''s effects happen at most once.';
