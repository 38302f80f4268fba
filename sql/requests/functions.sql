-- The outbound request queue. Clients queue Checkout and Portal sessions; the worker claims rows
-- with FOR UPDATE SKIP LOCKED, calls Stripe and writes the result back.

CREATE OR REPLACE FUNCTION billing._notify_stripe_request() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Only the id: NOTIFY is a wake-up, the table is the queue.
    PERFORM pg_notify('billing_stripe_requests', NEW.id::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION billing._notify_stripe_request() IS 'Internal (trigger): wakes the worker (channel billing_stripe_requests, payload = request id).';

CREATE OR REPLACE FUNCTION billing._check_url(url text, name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF url IS NULL THEN
        RAISE EXCEPTION '% is required: pass it or set a default in billing.config', name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF url !~ '^https?://[^\s]+$' OR length(url) > 2048 THEN
        RAISE EXCEPTION '% must be an http(s) URL of at most 2048 characters', name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN url;
END
$$;
COMMENT ON FUNCTION billing._check_url(text, text) IS 'Internal: validates a redirect URL for Checkout or the Portal.';

CREATE OR REPLACE FUNCTION billing.request_checkout(price_id text, mode text DEFAULT NULL, success_url text DEFAULT NULL,
                                         cancel_url text DEFAULT NULL, project_id uuid DEFAULT NULL,
                                         coupon text DEFAULT NULL, allow_promotion_codes boolean DEFAULT false,
                                         quantity integer DEFAULT 1)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    plan billing.plans;
    cfg billing.config := billing._settings();
    expected_mode text;
    request_id uuid;
BEGIN
    PERFORM billing._check_not_null(price_id, 'price_id');
    SELECT * INTO plan FROM billing.plans p WHERE p.stripe_price_id = price_id OR p.id = price_id
    ORDER BY p.stripe_price_id = price_id DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown price %', quote_literal(left(price_id, 100))
            USING ERRCODE = 'no_data_found', HINT = 'Pass a stripe_price_id or plan id from billing.plans.';
    END IF;
    IF NOT plan.active THEN
        RAISE EXCEPTION 'plan % is not for sale any more', plan.id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    expected_mode := CASE plan.kind WHEN 'subscription' THEN 'subscription' ELSE 'payment' END;
    IF mode IS NOT NULL AND mode NOT IN ('subscription', 'payment') THEN
        RAISE EXCEPTION 'mode must be subscription or payment, got %', quote_literal(left(mode, 40))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF mode IS DISTINCT FROM expected_mode AND mode IS NOT NULL THEN
        RAISE EXCEPTION 'mode % does not fit plan %, which is a %', mode, plan.id, replace(plan.kind, '_', ' ')
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Use mode %s, or leave mode NULL.', expected_mode);
    END IF;
    IF quantity IS NULL OR quantity < 1 OR quantity > 100 OR (plan.kind = 'subscription' AND quantity <> 1) THEN
        RAISE EXCEPTION 'quantity must be 1 for subscriptions and 1 to 100 for token packs, got %', quantity
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The grant made when it is paid must be possible: refuse now rather than take money then.
    IF plan.kind = 'token_pack' AND plan.tokens * quantity > 1000000000000 THEN
        RAISE EXCEPTION '% x % tokens is more than one grant may hold (1000000000000)', quantity, plan.tokens
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coupon IS NOT NULL AND coupon !~ '^[A-Za-z0-9_-]{1,100}$' THEN
        RAISE EXCEPTION 'coupon must be a Stripe coupon id (letters, digits, _ and -)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coupon IS NOT NULL AND allow_promotion_codes THEN
        RAISE EXCEPTION 'pass either coupon or allow_promotion_codes, not both'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Stripe Checkout rejects a session with both.';
    END IF;
    PERFORM billing._check_project(uid, project_id);
    IF plan.kind = 'subscription' AND EXISTS (
        SELECT FROM billing.subscriptions s
        WHERE s.user_id = uid AND s.status IN ('active', 'trialing', 'past_due', 'unpaid', 'paused')) THEN
        RAISE EXCEPTION 'you already have a subscription'
            USING ERRCODE = 'BL005', HINT = 'Change plans in the customer portal: billing.request_portal().';
    END IF;
    INSERT INTO billing.stripe_requests (user_id, kind, params)
    VALUES (uid, 'checkout', jsonb_strip_nulls(jsonb_build_object(
        'price_id', plan.stripe_price_id,
        'plan_id', plan.id,
        'mode', expected_mode,
        'quantity', quantity,
        'tokens', CASE WHEN plan.kind = 'token_pack' THEN plan.tokens * quantity END,
        'success_url', billing._check_url(coalesce(success_url, cfg.checkout_success_url), 'success_url'),
        'cancel_url', billing._check_url(coalesce(cancel_url, cfg.checkout_cancel_url), 'cancel_url'),
        'project_id', project_id,
        'coupon', coupon,
        'allow_promotion_codes', CASE WHEN allow_promotion_codes THEN true END,
        'email', nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')))
    RETURNING id INTO request_id;
    RETURN request_id;
END
$$;
COMMENT ON FUNCTION billing.request_checkout(text, text, text, text, uuid, text, boolean, integer) IS 'For signed-in users: queues a Stripe Checkout Session for the caller (mode subscription for plans, payment for token packs) and returns the request id; then call billing.await_request(id) for the URL.';

CREATE OR REPLACE FUNCTION billing.request_portal(return_url text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    request_id uuid;
BEGIN
    IF NOT EXISTS (SELECT FROM billing.customers c WHERE c.user_id = uid) THEN
        RAISE EXCEPTION 'no billing account yet, make a purchase first'
            USING ERRCODE = 'BL002', HINT = 'The customer portal opens once the user has a Stripe customer.';
    END IF;
    INSERT INTO billing.stripe_requests (user_id, kind, params)
    VALUES (uid, 'portal', jsonb_build_object('return_url',
        billing._check_url(coalesce(return_url, (billing._settings()).portal_return_url), 'return_url')))
    RETURNING id INTO request_id;
    RETURN request_id;
END
$$;
COMMENT ON FUNCTION billing.request_portal(text) IS 'For signed-in users: queues a Stripe Customer Portal session; fails with BL002 when the caller has no Stripe customer yet.';

CREATE OR REPLACE FUNCTION billing._request_json(r billing.stripe_requests) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RETURN jsonb_build_object('id', r.id, 'kind', r.kind, 'status', r.status,
        'url', r.result ->> 'url', 'session_id', r.result ->> 'session_id', 'error', r.error);
END
$$;
COMMENT ON FUNCTION billing._request_json(billing.stripe_requests) IS 'Internal: the JSON shape billing.await_request returns.';

CREATE OR REPLACE FUNCTION billing.await_request(request_id uuid, timeout_ms integer DEFAULT 10000) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    r billing.stripe_requests;
    deadline timestamptz;
BEGIN
    PERFORM billing._check_not_null(request_id, 'request_id');
    IF timeout_ms IS NULL OR timeout_ms < 0 OR timeout_ms > 60000 THEN
        RAISE EXCEPTION 'timeout_ms must be between 0 and 60000, got %', timeout_ms
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'await_request needs READ COMMITTED isolation to see the worker''s result'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    deadline := clock_timestamp() + make_interval(secs => timeout_ms / 1000.0);
    LOOP
        -- Each statement takes a new snapshot under READ COMMITTED, so this sees the worker's commit.
        SELECT * INTO r FROM billing.stripe_requests s WHERE s.id = request_id AND s.user_id = uid;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'request % not found', request_id USING ERRCODE = 'no_data_found';
        END IF;
        EXIT WHEN r.status IN ('succeeded', 'failed') OR clock_timestamp() >= deadline;
        PERFORM pg_sleep(least(0.05, greatest(extract(epoch FROM deadline - clock_timestamp()), 0)));
    END LOOP;
    RETURN billing._request_json(r);
END
$$;
COMMENT ON FUNCTION billing.await_request(uuid, integer) IS 'For signed-in users: waits up to timeout_ms for the worker to finish one of the caller''s requests and returns {id, kind, status, url, session_id, error}; status is still pending/running on timeout.';

-- Worker API -------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION billing.claim_requests(worker text, max_count integer DEFAULT 1, lease_seconds integer DEFAULT 60)
RETURNS TABLE (id uuid, kind text, user_id uuid, params jsonb, attempts integer, stripe_customer_id text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    max_attempts integer := (billing._settings()).request_max_attempts;
BEGIN
    PERFORM billing._check_not_null(worker, 'worker');
    IF max_count IS NULL OR max_count < 1 OR max_count > 1000 OR lease_seconds IS NULL OR lease_seconds < 1 THEN
        RAISE EXCEPTION 'max_count must be 1 to 1000 and lease_seconds positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A worker that died mid-request leaves its row running; once the lease is over the row is
    -- retried, or failed when it has used all its attempts.
    UPDATE billing.stripe_requests r
    SET status = 'failed', error = format('gave up after %s attempts (the worker stopped responding)', r.attempts),
        finished_at = now(), locked_by = NULL, locked_until = NULL
    WHERE r.status = 'running' AND r.locked_until < clock_timestamp() AND r.attempts >= max_attempts;

    RETURN QUERY
    WITH ready AS (
        SELECT r.id FROM billing.stripe_requests r
        WHERE r.status IN ('pending', 'running') AND r.run_after <= clock_timestamp()
          AND (r.status = 'pending' OR r.locked_until < clock_timestamp())
        ORDER BY r.run_after, r.created_at
        LIMIT max_count
        FOR UPDATE SKIP LOCKED)
    UPDATE billing.stripe_requests r
    SET status = 'running', attempts = r.attempts + 1, locked_by = worker, claimed_at = clock_timestamp(),
        locked_until = clock_timestamp() + make_interval(secs => lease_seconds)
    FROM ready WHERE r.id = ready.id
    RETURNING r.id, r.kind, r.user_id, r.params, r.attempts,
        (SELECT c.stripe_customer_id FROM billing.customers c WHERE c.user_id = r.user_id);
END
$$;
COMMENT ON FUNCTION billing.claim_requests(text, integer, integer) IS 'Worker: claims up to max_count ready requests (pending, or running past their lease) for lease_seconds, skipping rows other workers hold.';

CREATE OR REPLACE FUNCTION billing.finish_request(request_id uuid, worker text, result jsonb, attempt integer DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF result IS NULL OR jsonb_typeof(result) <> 'object' THEN
        RAISE EXCEPTION 'result must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE billing.stripe_requests r
    SET status = 'succeeded', result = finish_request.result, error = NULL, finished_at = now(),
        locked_by = NULL, locked_until = NULL
    WHERE r.id = request_id AND r.status = 'running' AND r.locked_by = worker
      AND (attempt IS NULL OR r.attempts = attempt);
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION billing.finish_request(uuid, text, jsonb, integer) IS 'Worker: marks a claimed request succeeded with its result ({url, session_id, ...}); false when the claim was lost. Pass the attempts value the claim returned as attempt so that a late worker cannot finish a newer claim of the same row.';

CREATE OR REPLACE FUNCTION billing.fail_request(request_id uuid, worker text, error text, retry_after_ms integer DEFAULT NULL,
                                     attempt integer DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_attempts integer := (billing._settings()).request_max_attempts;
    new_status text;
BEGIN
    PERFORM billing._check_not_null(error, 'error');
    UPDATE billing.stripe_requests r
    SET status = CASE WHEN retry_after_ms IS NOT NULL AND r.attempts < max_attempts THEN 'pending' ELSE 'failed' END,
        run_after = CASE WHEN retry_after_ms IS NOT NULL
                         THEN clock_timestamp() + make_interval(secs => greatest(retry_after_ms, 0) / 1000.0)
                         ELSE r.run_after END,
        error = left(fail_request.error, 2000),
        finished_at = CASE WHEN retry_after_ms IS NOT NULL AND r.attempts < max_attempts THEN NULL ELSE now() END,
        locked_by = NULL, locked_until = NULL
    WHERE r.id = request_id AND r.status = 'running' AND r.locked_by = worker
      AND (attempt IS NULL OR r.attempts = attempt)
    RETURNING r.status INTO new_status;
    RETURN new_status;
END
$$;
COMMENT ON FUNCTION billing.fail_request(uuid, text, text, integer, integer) IS 'Worker: records a failed attempt; with retry_after_ms the request goes back to pending (until request_max_attempts), else it fails for good. Returns the new status, NULL when the claim was lost (attempt fences off a newer claim, as in finish_request).';

CREATE OR REPLACE FUNCTION billing._request_retrieval(kind text, user_id uuid, object_id text) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    -- One retrieval of an object in flight at a time, however many events ask for it.
    INSERT INTO billing.stripe_requests (user_id, kind, params)
    VALUES (_request_retrieval.user_id, _request_retrieval.kind, jsonb_build_object('object_id', _request_retrieval.object_id))
    ON CONFLICT (kind, (params ->> 'object_id')) WHERE kind IN ('refresh', 'line_items') AND status IN ('pending', 'running')
    DO NOTHING;
END
$$;
COMMENT ON FUNCTION billing._request_retrieval(text, uuid, text) IS 'Internal: asks the worker to retrieve an object from Stripe (refresh: a subscription; line_items: what a Checkout Session sold), once while one is in flight.';
