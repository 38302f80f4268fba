-- stripe_billing: webhook ingestion (ARCHITECTURE.md §1, §2, §4).
-- One transaction per delivery: verify -> store the event once (its id is the key) -> apply its
-- effects. A failure while applying is stored with the event (and can be re-applied with
-- billing.reprocess_events()); the delivery is still acknowledged so Stripe stops retrying.
-- Effects read billing.normalize_event(), which hides the differences between API versions.
--
-- Only the SECURITY DEFINER entry points pin search_path. The internal functions run inside
-- them and inherit it; they are executable by privileged roles only and qualify every name,
-- and without a SET clause the small SQL ones are inlined and the others skip a settings
-- switch per call, which matters on the webhook hot path.

CREATE FUNCTION billing.unix_time(value jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN jsonb_typeof(value) = 'number' THEN to_timestamp(value::text::double precision) END
$$;
COMMENT ON FUNCTION billing.unix_time(jsonb) IS 'Internal: a Stripe Unix timestamp (JSON number) as timestamptz; NULL for anything else.';

CREATE FUNCTION billing.event_version(ev jsonb, rank smallint) RETURNS billing.event_version
LANGUAGE sql IMMUTABLE
AS $$
    SELECT ROW(billing.unix_time(ev -> 'created'), rank, ev ->> 'id')::billing.event_version
$$;
COMMENT ON FUNCTION billing.event_version(jsonb, smallint) IS 'Internal: the (created, rank, id) position of a normalised event; subscription objects rank 1, invoices 0.';

CREATE FUNCTION billing.is_newer(candidate billing.event_version, current billing.event_version) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT current IS NULL OR (current).created IS NULL OR candidate > current
$$;
COMMENT ON FUNCTION billing.is_newer(billing.event_version, billing.event_version) IS 'Internal: whether an event may overwrite a field group last set by the event at current.';

CREATE FUNCTION billing.plan_for_price(price_id text) RETURNS billing.plans
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    p billing.plans;
BEGIN
    SELECT * INTO p FROM billing.plans WHERE stripe_price_id = price_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown price %: no row in billing.plans has this stripe_price_id', coalesce(price_id, '(none)')
            USING ERRCODE = 'BL006',
                  HINT = 'Add the plan to billing.plans, then run SELECT billing.reprocess_events().';
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION billing.plan_for_price(text) IS 'Internal: the catalog row for a Stripe price, or error BL006 (the event is kept and can be re-applied once the catalog has it).';

CREATE FUNCTION billing.uuid_or_null(value text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN value ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN value::uuid END
$$;
COMMENT ON FUNCTION billing.uuid_or_null(text) IS 'Internal: value as uuid when it is one, else NULL.';

-- Which app user an event concerns: an explicit user id set by our Checkout requests
-- (client_reference_id or metadata.user_id), else the user linked to the Stripe customer, else
-- the owner of the subscription row.
CREATE FUNCTION billing.resolve_user(explicit_user text, customer text, subscription_id text) RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    uid uuid := billing.uuid_or_null(explicit_user);
BEGIN
    IF uid IS NULL AND customer IS NOT NULL THEN
        SELECT c.user_id INTO uid FROM billing.customers c WHERE c.stripe_customer_id = customer;
    END IF;
    IF uid IS NULL AND subscription_id IS NOT NULL THEN
        SELECT s.user_id INTO uid FROM billing.subscriptions s WHERE s.stripe_subscription_id = subscription_id;
    END IF;
    IF uid IS NULL THEN
        RAISE EXCEPTION 'cannot tell which user customer % belongs to', coalesce(customer, '(none)')
            USING ERRCODE = 'BL007',
                  HINT = 'The event is kept; it is applied automatically once checkout links the customer to a user, or by billing.reprocess_events().';
    END IF;
    RETURN uid;
END
$$;
COMMENT ON FUNCTION billing.resolve_user(text, text, text) IS 'Internal: the user an event concerns, or error BL007 when nothing links it to one yet.';

-- Events being applied in this transaction, so that a customer link made while applying one
-- event does not re-enter it. Kept in a transaction-local setting that a failed
-- subtransaction rolls back with everything else.
CREATE FUNCTION billing.is_being_applied(event_id text) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(event_id = ANY (string_to_array(nullif(current_setting('billing.applying_events', true), ''), ',')), false)
$$;
COMMENT ON FUNCTION billing.is_being_applied(text) IS 'Internal: whether the event is being applied further up this call chain.';

CREATE FUNCTION billing.link_customer(user_id uuid, stripe_customer_id text, email text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    existing billing.customers;
    held record;
BEGIN
    PERFORM billing.check_not_null(user_id, 'user_id');
    PERFORM billing.check_not_null(stripe_customer_id, 'stripe_customer_id');
    IF stripe_customer_id !~ '^cus_[A-Za-z0-9]+$' THEN
        RAISE EXCEPTION 'stripe_customer_id must be a Stripe customer id (cus_...), got %', quote_literal(left(stripe_customer_id, 60))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO billing.customers AS c (user_id, stripe_customer_id, email)
    VALUES (link_customer.user_id, link_customer.stripe_customer_id, link_customer.email)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        -- Events that arrived before this link could not be attributed; apply them now.
        FOR held IN SELECT e.id FROM billing.stripe_events e
                    WHERE e.stripe_customer_id = link_customer.stripe_customer_id AND e.processed_at IS NULL
                      AND NOT billing.is_being_applied(e.id)
                    ORDER BY e.created, e.id LOOP
            PERFORM billing.apply_stored_event(held.id);
        END LOOP;
        RETURN stripe_customer_id;
    END IF;
    SELECT * INTO existing FROM billing.customers c
    WHERE c.user_id = link_customer.user_id OR c.stripe_customer_id = link_customer.stripe_customer_id
    ORDER BY c.user_id = link_customer.user_id DESC LIMIT 1;
    IF existing.user_id = user_id AND existing.stripe_customer_id = stripe_customer_id THEN
        RETURN stripe_customer_id;
    END IF;
    IF existing.user_id = user_id THEN
        RAISE EXCEPTION 'user % already has Stripe customer %', user_id, existing.stripe_customer_id
            USING ERRCODE = 'BL008', DETAIL = format('refusing to link %s as well', stripe_customer_id);
    END IF;
    RAISE EXCEPTION 'Stripe customer % already belongs to another user', stripe_customer_id
        USING ERRCODE = 'BL008';
END
$$;
COMMENT ON FUNCTION billing.link_customer(uuid, text, text) IS 'Privileged (worker, webhooks): links a user to their Stripe customer, one to one; idempotent. A new link applies events held back because their customer was unknown.';

CREATE FUNCTION billing.upsert_subscription_link(sub_id text, uid uuid, customer text) RETURNS void
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
COMMENT ON FUNCTION billing.upsert_subscription_link(text, uuid, text) IS 'Internal: makes sure a subscription row exists for its user before other events fill it in.';

CREATE FUNCTION billing.apply_checkout_session(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s jsonb := ev -> 'data';
    uid uuid;
    plan billing.plans;
    tokens bigint;
BEGIN
    uid := billing.resolve_user(coalesce(s ->> 'client_reference_id', s -> 'metadata' ->> 'user_id'),
                                ev ->> 'customer', s ->> 'subscription');
    IF ev ->> 'customer' IS NOT NULL THEN
        PERFORM billing.link_customer(uid, ev ->> 'customer');
    END IF;
    IF s ->> 'mode' = 'subscription' AND s ->> 'subscription' IS NOT NULL THEN
        PERFORM billing.upsert_subscription_link(s ->> 'subscription', uid, ev ->> 'customer');
    ELSIF s ->> 'mode' = 'payment' THEN
        IF ev ->> 'type' = 'checkout.session.async_payment_failed' THEN
            PERFORM pg_notify('billing_payment_failed', uid::text);
            RETURN;
        END IF;
        -- A delayed payment method (bank debit) completes the session unpaid; the tokens come
        -- with checkout.session.async_payment_succeeded.
        IF s ->> 'payment_status' = 'paid' OR ev ->> 'type' = 'checkout.session.async_payment_succeeded' THEN
            plan := billing.plan_for_price(s -> 'metadata' ->> 'price_id');
            IF plan.kind <> 'token_pack' THEN
                RAISE EXCEPTION 'price % is a subscription plan but was paid in payment mode', plan.stripe_price_id
                    USING ERRCODE = 'BL006';
            END IF;
            tokens := coalesce((s -> 'metadata' ->> 'tokens')::bigint, plan.tokens);
            PERFORM billing.insert_grant(uid, tokens, 'payg_purchase', NULL,
                billing.uuid_or_null(s -> 'metadata' ->> 'project_id'), s ->> 'id',
                jsonb_build_object('session_id', s ->> 'id', 'amount_paid', s -> 'amount_total',
                                   'currency', s -> 'currency', 'price_id', plan.stripe_price_id,
                                   'event_id', ev ->> 'id'));
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION billing.apply_checkout_session(jsonb) IS 'Internal: checkout.session.* effects: link customer and user; grant a paid token pack (keyed by the session id); record the subscription.';

CREATE FUNCTION billing.apply_subscription(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s jsonb := ev -> 'data';
    uid uuid := billing.resolve_user(s -> 'metadata' ->> 'user_id', ev ->> 'customer', s ->> 'id');
    plan billing.plans := billing.plan_for_price(s ->> 'price_id');
    v billing.event_version := billing.event_version(ev, 1::smallint);
BEGIN
    INSERT INTO billing.subscriptions AS cur (stripe_subscription_id, user_id, stripe_customer_id, plan_id,
        stripe_price_id, status, current_period_start, current_period_end, cancel_at_period_end, cancel_at,
        canceled_at, ended_at, object_version, status_version, period_version)
    VALUES (s ->> 'id', uid, ev ->> 'customer', plan.id, plan.stripe_price_id, s ->> 'status',
        billing.unix_time(s -> 'current_period_start'), billing.unix_time(s -> 'current_period_end'),
        (s ->> 'cancel_at_period_end')::boolean, billing.unix_time(s -> 'cancel_at'),
        billing.unix_time(s -> 'canceled_at'), billing.unix_time(s -> 'ended_at'), v, v, v)
    ON CONFLICT (stripe_subscription_id) DO UPDATE SET
        stripe_customer_id = coalesce(cur.stripe_customer_id, excluded.stripe_customer_id),
        plan_id = CASE WHEN billing.is_newer(v, cur.object_version) THEN excluded.plan_id ELSE cur.plan_id END,
        stripe_price_id = CASE WHEN billing.is_newer(v, cur.object_version) THEN excluded.stripe_price_id ELSE cur.stripe_price_id END,
        cancel_at_period_end = CASE WHEN billing.is_newer(v, cur.object_version) THEN excluded.cancel_at_period_end ELSE cur.cancel_at_period_end END,
        cancel_at = CASE WHEN billing.is_newer(v, cur.object_version) THEN excluded.cancel_at ELSE cur.cancel_at END,
        canceled_at = CASE WHEN billing.is_newer(v, cur.object_version) THEN excluded.canceled_at ELSE cur.canceled_at END,
        ended_at = CASE WHEN billing.is_newer(v, cur.object_version) THEN excluded.ended_at ELSE cur.ended_at END,
        object_version = CASE WHEN billing.is_newer(v, cur.object_version) THEN v ELSE cur.object_version END,
        status = CASE WHEN billing.is_newer(v, cur.status_version) THEN excluded.status ELSE cur.status END,
        status_version = CASE WHEN billing.is_newer(v, cur.status_version) THEN v ELSE cur.status_version END,
        current_period_start = CASE WHEN billing.is_newer(v, cur.period_version) THEN excluded.current_period_start ELSE cur.current_period_start END,
        current_period_end = CASE WHEN billing.is_newer(v, cur.period_version) THEN excluded.current_period_end ELSE cur.current_period_end END,
        period_version = CASE WHEN billing.is_newer(v, cur.period_version) THEN v ELSE cur.period_version END,
        updated_at = now();
END
$$;
COMMENT ON FUNCTION billing.apply_subscription(jsonb) IS 'Internal: customer.subscription.* effects: status, plan, periods and cancellation, each only if this event is newer than the one that last set it.';

-- How many tokens a paid subscription invoice grants, and why (README "Proration"):
--   subscription_create / subscription_cycle: the plan's monthly_tokens x quantity for the period;
--   subscription_update (a proration invoice after a plan change): the difference between the new
--   and the old plan's monthly_tokens when it is an upgrade that was charged (amount_paid > 0),
--   nothing for downgrades; the new allowance starts in full at the next renewal;
--   any other billing_reason (manual, threshold, ...): nothing.
CREATE FUNCTION billing.invoice_grant(inv jsonb, OUT tokens bigint, OUT source text, OUT plan billing.plans,
                                      OUT period_end timestamptz)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    line jsonb;
    old_tokens bigint;
BEGIN
    -- main_line, upgrade_line and replaced_price_id come from billing.normalize_event.
    IF inv ->> 'billing_reason' IN ('subscription_create', 'subscription_cycle') THEN
        line := inv -> 'main_line';
        plan := billing.plan_for_price(line ->> 'price_id');
        tokens := plan.monthly_tokens * greatest(coalesce((line ->> 'quantity')::bigint, 1), 1);
        source := CASE inv ->> 'billing_reason' WHEN 'subscription_create' THEN 'subscription_start' ELSE 'plan' END;
    ELSIF inv ->> 'billing_reason' = 'subscription_update' AND coalesce((inv ->> 'amount_paid')::bigint, 0) > 0 THEN
        line := inv -> 'upgrade_line';
        plan := billing.plan_for_price(line ->> 'price_id');
        SELECT p.monthly_tokens INTO old_tokens FROM billing.plans p WHERE p.stripe_price_id = inv ->> 'replaced_price_id';
        tokens := greatest(plan.monthly_tokens - coalesce(old_tokens, plan.monthly_tokens), 0);
        source := 'plan_upgrade';
    END IF;
    IF tokens IS NOT NULL AND NOT plan.rollover THEN
        period_end := billing.unix_time(line -> 'period_end');
    END IF;
END
$$;
COMMENT ON FUNCTION billing.invoice_grant(jsonb) IS 'Internal: tokens, source, plan and expiry a paid subscription invoice grants (the documented proration rule lives here).';

CREATE FUNCTION billing.update_subscription_from_invoice(sub_id text, v billing.event_version, period_start timestamptz,
                                                         period_end timestamptz, customer text) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE billing.subscriptions s SET
        stripe_customer_id = coalesce(s.stripe_customer_id, customer),
        status = CASE WHEN billing.is_newer(v, s.status_version) THEN 'active' ELSE s.status END,
        status_version = CASE WHEN billing.is_newer(v, s.status_version) THEN v ELSE s.status_version END,
        current_period_start = CASE WHEN period_end IS NOT NULL AND billing.is_newer(v, s.period_version) THEN period_start ELSE s.current_period_start END,
        current_period_end = CASE WHEN period_end IS NOT NULL AND billing.is_newer(v, s.period_version) THEN period_end ELSE s.current_period_end END,
        period_version = CASE WHEN period_end IS NOT NULL AND billing.is_newer(v, s.period_version) THEN v ELSE s.period_version END,
        updated_at = now()
    WHERE s.stripe_subscription_id = sub_id
      AND (billing.is_newer(v, s.status_version) OR (period_end IS NOT NULL AND billing.is_newer(v, s.period_version))
           OR (s.stripe_customer_id IS NULL AND customer IS NOT NULL));
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION billing.update_subscription_from_invoice(text, billing.event_version, timestamptz, timestamptz, text) IS 'Internal: a paid invoice reports its subscription active for the period it paid, where that is newer than what the row holds; true when a row changed.';

CREATE FUNCTION billing.apply_invoice(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    inv jsonb := ev -> 'data';
    sub_id text := inv ->> 'subscription';
    uid uuid;
    g record;
    v billing.event_version := billing.event_version(ev, 0::smallint);
    period_start timestamptz;
    period_end timestamptz;
BEGIN
    IF sub_id IS NULL THEN
        RETURN;  -- a one-off invoice: nothing of ours
    END IF;
    -- Our checkouts put the user id in the subscription's metadata; only without it look further.
    uid := coalesce(billing.uuid_or_null(inv -> 'subscription_metadata' ->> 'user_id'),
                    billing.resolve_user(NULL, ev ->> 'customer', sub_id));
    IF ev ->> 'type' = 'invoice.payment_failed' THEN
        PERFORM billing.upsert_subscription_link(sub_id, uid, ev ->> 'customer');
        -- A failed first invoice leaves the subscription incomplete (Stripe reports that itself).
        IF inv ->> 'billing_reason' IS DISTINCT FROM 'subscription_create' THEN
            UPDATE billing.subscriptions s SET status = 'past_due', status_version = v, updated_at = now()
            WHERE s.stripe_subscription_id = sub_id AND billing.is_newer(v, s.status_version);
        END IF;
        PERFORM pg_notify('billing_payment_failed', uid::text);
        RETURN;
    END IF;

    -- invoice.paid: the period it paid for is current, and the subscription is active.
    period_start := billing.unix_time(inv -> 'main_line' -> 'period_start');
    period_end := billing.unix_time(inv -> 'main_line' -> 'period_end');
    -- Usually the row exists and this event changes nothing (the subscription event of the same
    -- second outranks it): then nothing is written.
    IF NOT billing.update_subscription_from_invoice(sub_id, v, period_start, period_end, ev ->> 'customer')
       AND NOT EXISTS (SELECT FROM billing.subscriptions s WHERE s.stripe_subscription_id = sub_id) THEN
        INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, stripe_customer_id, status,
            status_version, current_period_start, current_period_end, period_version)
        VALUES (sub_id, uid, ev ->> 'customer', 'active', v, period_start, period_end,
                CASE WHEN period_end IS NOT NULL THEN v END)
        ON CONFLICT (stripe_subscription_id) DO NOTHING;
        IF NOT FOUND THEN
            -- A concurrent event created the row first; it is visible now.
            PERFORM billing.update_subscription_from_invoice(sub_id, v, period_start, period_end, ev ->> 'customer');
        END IF;
    END IF;

    SELECT * INTO g FROM billing.invoice_grant(inv);
    IF coalesce(g.tokens, 0) > 0 THEN
        PERFORM billing.insert_grant(uid, g.tokens, g.source, g.period_end, NULL, inv ->> 'id',
            jsonb_build_object('invoice_id', inv ->> 'id', 'subscription_id', sub_id,
                               'billing_reason', inv ->> 'billing_reason', 'amount_paid', inv -> 'amount_paid',
                               'currency', inv -> 'currency', 'plan_id', (g.plan).id, 'event_id', ev ->> 'id'));
    END IF;
END
$$;
COMMENT ON FUNCTION billing.apply_invoice(jsonb) IS 'Internal: invoice.paid grants the period''s tokens once per invoice (keyed by its id) and updates the period; invoice.payment_failed marks the subscription past_due and NOTIFYs billing_payment_failed with the user id.';

CREATE FUNCTION billing.apply_in_subtransaction(ev jsonb) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    failure text;
BEGIN
    CASE
        WHEN ev ->> 'type' IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded',
                               'checkout.session.async_payment_failed') THEN
            PERFORM billing.apply_checkout_session(ev);
        WHEN ev ->> 'type' LIKE 'customer.subscription.%' AND ev ->> 'object_type' = 'subscription' THEN
            PERFORM billing.apply_subscription(ev);
        WHEN ev ->> 'type' IN ('invoice.paid', 'invoice.payment_succeeded', 'invoice.payment_failed') THEN
            PERFORM billing.apply_invoice(ev);
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
COMMENT ON FUNCTION billing.apply_in_subtransaction(jsonb) IS 'Internal: dispatches a normalised event to its effects (unknown types have none) in a subtransaction; returns the error message, or NULL on success.';

CREATE FUNCTION billing.apply_stored_event(event_id text) RETURNS text
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
    failure := billing.apply_in_subtransaction(billing.normalize_event(e.payload::text));
    PERFORM set_config('billing.applying_events', coalesce(outer_chain, ''), true);
    UPDATE billing.stripe_events s
    SET attempts = s.attempts + 1, error = failure,
        processed_at = CASE WHEN failure IS NULL THEN clock_timestamp() END
    WHERE s.id = event_id;
    RETURN failure;
END
$$;
COMMENT ON FUNCTION billing.apply_stored_event(text) IS 'Internal: applies a stored event that is not processed yet (a redelivery of a failed event, a held event, reprocess) and records the outcome; returns the error or NULL.';

CREATE FUNCTION billing.handle_stripe_webhook(payload text, header text) RETURNS jsonb
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
    matched := billing.verify_webhook_signature(payload, header, secrets, (billing.settings()).webhook_tolerance_seconds);
    ev := billing.normalize_event(payload);
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
            billing.unix_time(ev -> 'created'), payload::json, ev ->> 'customer', clock_timestamp(), 1)
    ON CONFLICT (id) DO NOTHING
    RETURNING id INTO inserted;
    IF inserted IS NOT NULL THEN
        failure := billing.apply_in_subtransaction(ev);
        IF failure IS NOT NULL THEN
            UPDATE billing.stripe_events s SET processed_at = NULL, error = failure WHERE s.id = inserted;
        END IF;
        RETURN jsonb_build_object('received', true, 'event_id', inserted, 'type', ev ->> 'type',
            'duplicate', false, 'processed', failure IS NULL, 'error', failure);
    END IF;
    -- A redelivery of an event that failed before gets another chance; one that succeeded is a no-op.
    PERFORM billing.apply_stored_event(ev ->> 'id');
    SELECT * INTO e FROM billing.stripe_events s WHERE s.id = ev ->> 'id';
    RETURN jsonb_build_object('received', true, 'event_id', e.id, 'type', e.type,
        'duplicate', true, 'processed', e.processed_at IS NOT NULL, 'error', e.error);
END
$$;
COMMENT ON FUNCTION billing.handle_stripe_webhook(text, text) IS 'Privileged: verifies a Stripe webhook (raw body, Stripe-Signature header) against billing.webhook_secrets, stores the event once and applies its effects, all in the caller''s transaction. Returns {received, event_id, type, duplicate, processed, error}. Raises for bad signatures (nothing stored) and BL003 when no secret is configured.';

CREATE FUNCTION billing.stripe_webhook(json) RETURNS jsonb
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

CREATE FUNCTION billing.reprocess_events(max_events integer DEFAULT 1000) RETURNS jsonb
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
        IF billing.apply_stored_event(e.id) IS NOT NULL THEN
            still_failing := still_failing + 1;
        END IF;
    END LOOP;
    RETURN jsonb_build_object('reprocessed', tried, 'succeeded', tried - still_failing, 'still_failing', still_failing);
END
$$;
COMMENT ON FUNCTION billing.reprocess_events(integer) IS 'Privileged: re-applies stored events that failed (oldest first), e.g. after adding a missing price to billing.plans. Each event''s effects happen at most once.';
