-- Webhooks are not the only source: the worker reads Stripe's events API to catch up on
-- deliveries that never arrived, and adopts the customers and subscriptions of a Stripe account
-- that existed before the product (docs/worker.md, "Catching up and adopting an existing account"). Both go
-- through the one ingestion path, so a webhook and a catch-up of the same event apply once.

-- Stripe lists events of the last 30 days only.
CREATE OR REPLACE FUNCTION billing._events_api_window() RETURNS interval
LANGUAGE sql IMMUTABLE
AS $$ SELECT interval '30 days' $$;
COMMENT ON FUNCTION billing._events_api_window() IS 'Internal: how far back Stripe''s events API lists events (30 days).';

CREATE OR REPLACE FUNCTION billing.ingest_api_event(payload text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ev jsonb;
BEGIN
    PERFORM billing._check_not_null(payload, 'payload');
    ev := billing._normalize_event(payload);
    -- Our own synthetic events (retrieved and adopted objects) never come from Stripe.
    IF ev ->> 'type' LIKE 'billing.%' OR ev ->> 'id' LIKE 'evt\_retrieved\_%' OR ev ->> 'id' LIKE 'evt\_adopted\_%' THEN
        RAISE EXCEPTION 'event % is not one Stripe sends', ev ->> 'id'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN billing._ingest(payload, 'api', ev);
END
$$;
COMMENT ON FUNCTION billing.ingest_api_event(text) IS 'Worker: stores and applies an event fetched from Stripe''s events API with the secret key (authentic without a signature), through the same path as webhooks; an event already delivered is a duplicate and applies nothing twice.';

CREATE OR REPLACE FUNCTION billing.catch_up_since(margin_seconds integer DEFAULT 3600) RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known timestamptz;
BEGIN
    IF margin_seconds IS NULL OR margin_seconds < 0 OR margin_seconds > 86400 THEN
        RAISE EXCEPTION 'margin_seconds must be between 0 and 86400, got %', margin_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Where the last catch-up got to; before the first, the newest event Stripe sent us (a gap
    -- before it was never seen by this database); with neither, now: events older than the
    -- install are adopted with the backfill, not replayed.
    SELECT s.checked_until INTO known FROM billing.event_sync s;
    IF known IS NULL THEN
        SELECT max(e.created) INTO known FROM billing.stripe_events e WHERE e.source IN ('webhook', 'api');
    END IF;
    RETURN greatest(coalesce(known, now()) - make_interval(secs => margin_seconds),
                    now() - billing._events_api_window() + interval '1 minute');
END
$$;
COMMENT ON FUNCTION billing.catch_up_since(integer) IS 'Worker: the creation time from which the next catch-up lists Stripe''s events: where the last one got to (or the newest known event), less margin_seconds, and never beyond Stripe''s 30-day window.';

CREATE OR REPLACE FUNCTION billing.record_catch_up(checked_until timestamptz, listed integer, new integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM billing._check_not_null(checked_until, 'checked_until');
    IF checked_until > now() + interval '5 minutes' OR coalesce(listed, 0) < 0 OR coalesce(new, 0) < 0 THEN
        RAISE EXCEPTION 'checked_until must not be in the future and the counts not negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO billing.event_sync AS s (id, checked_until, last_run_at, last_run_listed, last_run_new)
    VALUES (true, record_catch_up.checked_until, now(), coalesce(listed, 0), coalesce(new, 0))
    ON CONFLICT (id) DO UPDATE
    SET checked_until = greatest(s.checked_until, excluded.checked_until), last_run_at = excluded.last_run_at,
        last_run_listed = excluded.last_run_listed, last_run_new = excluded.last_run_new;
END
$$;
COMMENT ON FUNCTION billing.record_catch_up(timestamptz, integer, integer) IS 'Worker: records a finished catch-up (it never moves checked_until back).';

-- A Stripe object applied as Stripe's current state, stored as an event of ours so the same
-- path applies it once (retrievals and adoption).
CREATE OR REPLACE FUNCTION billing._ingest_object(event_id text, object jsonb, at timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN billing._ingest(jsonb_build_object(
        'id', event_id, 'object', 'event',
        'type', 'billing.' || (object ->> 'object') || '.retrieved',
        'created', floor(extract(epoch FROM coalesce(at, now())))::bigint,
        'livemode', coalesce((object ->> 'livemode')::boolean, false), 'api_version', NULL,
        'data', jsonb_build_object('object', object))::text, 'retrieved');
END
$$;
COMMENT ON FUNCTION billing._ingest_object(text, jsonb, timestamptz) IS 'Internal: applies a Stripe object as its state at a given time, stored as a synthetic event billing.<object>.retrieved with the given id.';

CREATE OR REPLACE FUNCTION billing.adopt_customer(customer jsonb, user_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    cus text := customer ->> 'id';
    uid uuid := coalesce(user_id, billing._uuid_or_null(customer -> 'metadata' ->> 'user_id'));
    result jsonb := jsonb_build_object('customer', customer ->> 'id');
BEGIN
    IF customer IS NULL OR jsonb_typeof(customer) <> 'object' OR customer ->> 'object' IS DISTINCT FROM 'customer'
       OR cus !~ '^cus_[A-Za-z0-9]+$' THEN
        RAISE EXCEPTION 'customer must be a Stripe customer object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce((customer ->> 'deleted')::boolean, false) THEN
        RETURN result || jsonb_build_object('outcome', 'skipped', 'reason', 'deleted in Stripe');
    END IF;
    IF uid IS NULL THEN
        RETURN result || jsonb_build_object('outcome', 'skipped',
            'reason', 'no user: metadata.user_id is missing or not a uuid, and no mapping names it');
    END IF;
    result := result || jsonb_build_object('user_id', uid);
    PERFORM billing._lock_customer(cus);
    BEGIN
        IF billing._link_customer(uid, cus, customer ->> 'email', strict => true) THEN
            -- Events that waited for this customer's user apply now.
            RETURN result || jsonb_build_object('outcome', 'linked', 'events_applied', billing._apply_waiting(cus, NULL));
        END IF;
        RETURN result || jsonb_build_object('outcome', 'already_linked');
    EXCEPTION WHEN SQLSTATE 'BL008' THEN
        RETURN result || jsonb_build_object('outcome', 'skipped', 'reason', SQLERRM);
    END;
END
$$;
COMMENT ON FUNCTION billing.adopt_customer(jsonb, uuid) IS 'Worker (backfill): links an existing Stripe customer object to a user (user_id, else its metadata.user_id); idempotent. Returns {customer, user_id, outcome: linked | already_linked | skipped, reason}.';

CREATE OR REPLACE FUNCTION billing.adopt_subscription(subscription jsonb, retrieved_at timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sub text := subscription ->> 'id';
    -- customer is an id, or an object when expanded.
    cus text := coalesce(subscription -> 'customer' ->> 'id', subscription ->> 'customer');
    applied jsonb;
BEGIN
    IF subscription IS NULL OR jsonb_typeof(subscription) <> 'object' OR subscription ->> 'object' IS DISTINCT FROM 'subscription'
       OR sub !~ '^sub_[A-Za-z0-9]+$' THEN
        RAISE EXCEPTION 'subscription must be a Stripe subscription object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM billing._check_not_null(retrieved_at, 'retrieved_at');
    IF NOT EXISTS (SELECT FROM billing.customers c WHERE c.stripe_customer_id = cus) THEN
        RETURN jsonb_build_object('subscription', sub, 'outcome', 'skipped',
            'reason', format('its customer %s is not linked to a user', coalesce(cus, '(none)')));
    END IF;
    -- One synthetic event per subscription and second: adopting again later is a newer report.
    applied := billing._ingest_object(format('evt_adopted_%s_%s', sub, floor(extract(epoch FROM retrieved_at))::bigint),
                                      subscription, retrieved_at);
    RETURN jsonb_build_object('subscription', sub, 'status', subscription ->> 'status',
        'outcome', CASE WHEN (applied ->> 'processed')::boolean THEN 'adopted' ELSE 'failed' END,
        'reason', applied ->> 'error');
END
$$;
COMMENT ON FUNCTION billing.adopt_subscription(jsonb, timestamptz) IS 'Worker (backfill): records an existing Stripe subscription object as its state at retrieved_at, when its customer is linked, so its next invoices grant tokens. Idempotent. Returns {subscription, status, outcome: adopted | skipped | failed, reason}.';
