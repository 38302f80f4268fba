-- The outbound request queue, the callers' side. Users queue Checkout and Portal sessions;
-- effects queue retrievals. The rules about what may be asked for live here: caps, coupons,
-- redirect origins, one subscription per user. The worker's side (claims, outcomes, retries) is
-- sql/requests/worker.sql.

CREATE OR REPLACE FUNCTION billing._notify_stripe_request() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Only the id: NOTIFY is a wake-up, the table is the queue.
    PERFORM pg_notify('billing_stripe_requests', NEW.id::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION billing._notify_stripe_request() IS 'Internal (trigger): wakes the worker (channel billing_stripe_requests, payload = request id).';

CREATE OR REPLACE FUNCTION billing._origin(url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT lower(substring(url FROM '^(https?://[^/?#]+)'))
$$;
COMMENT ON FUNCTION billing._origin(text) IS 'Internal: the origin (scheme://host[:port], lower case) of an http(s) URL.';

CREATE OR REPLACE FUNCTION billing._check_url(url text, name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF url IS NULL THEN
        RAISE EXCEPTION '% is required: pass it or set a default in billing.config', name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF url !~ '^https?://[^\s/?#]+([/?#][^\s]*)?$' OR length(url) > 2048 THEN
        RAISE EXCEPTION '% must be an http(s) URL of at most 2048 characters', name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN url;
END
$$;
COMMENT ON FUNCTION billing._check_url(text, text) IS 'Internal: validates the form of a redirect URL for Checkout or the Portal.';

-- A caller's redirect URL must stay on the operator's own sites: anyone could otherwise mint a
-- genuine Stripe Checkout link of this account that lands on a site of their choosing.
CREATE OR REPLACE FUNCTION billing._check_redirect(url text, fallback text, name text, cfg billing.config) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF url IS NULL THEN
        RETURN billing._check_url(fallback, name);  -- the operator's own default
    END IF;
    PERFORM billing._check_url(url, name);
    IF NOT coalesce(billing._origin(url) = ANY (array_remove(cfg.redirect_origins || ARRAY[
            billing._origin(cfg.checkout_success_url), billing._origin(cfg.checkout_cancel_url),
            billing._origin(cfg.portal_return_url)], NULL)), false) THEN
        RAISE EXCEPTION '% must point to one of this app''s sites; % is not one', name, billing._origin(url)
            USING ERRCODE = 'BL013',
                  HINT = 'An operator adds origins to billing.config.redirect_origins.';
    END IF;
    RETURN url;
END
$$;
COMMENT ON FUNCTION billing._check_redirect(text, text, text, billing.config) IS 'Internal: a caller''s redirect URL, checked against the allowed origins (redirect_origins and the default URLs'' origins), or the default when the caller gave none.';

CREATE OR REPLACE FUNCTION billing._lock_user_requests(uid uuid) RETURNS void
LANGUAGE sql
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('billing.user:' || uid, 0))
$$;
COMMENT ON FUNCTION billing._lock_user_requests(uuid) IS 'Internal: serialises one user''s new requests until the end of the transaction, so the cap and the idempotency keys hold under concurrency.';

CREATE OR REPLACE FUNCTION billing._admit_user_request(uid uuid, cfg billing.config) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    open integer;
BEGIN
    -- One user's requests are admitted one at a time, so the cap holds under concurrency.
    PERFORM billing._lock_user_requests(uid);
    SELECT count(*) INTO open FROM billing.stripe_requests r
    WHERE r.user_id = uid AND r.kind IN ('checkout', 'portal') AND r.status IN ('pending', 'running');
    IF open >= cfg.max_pending_requests THEN
        RAISE EXCEPTION 'too many requests in progress (%); wait for them to finish', open
            USING ERRCODE = 'BL011',
                  HINT = 'billing.config.max_pending_requests sets how many one user may have queued.';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._admit_user_request(uuid, billing.config) IS 'Internal: serialises a user''s new requests and refuses one beyond billing.config.max_pending_requests (BL011).';

CREATE OR REPLACE FUNCTION billing._idempotency_key() RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    headers text := current_setting('request.headers', true);
    key text;
BEGIN
    IF headers IS NULL OR headers = '' THEN
        RETURN NULL;
    END IF;
    BEGIN
        key := headers::jsonb ->> 'idempotency-key';
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'request.headers is not valid JSON'
            USING ERRCODE = 'invalid_text_representation',
                  HINT = 'Set it to the request''s headers as a JSON object with lower-case names, as PostgREST does.';
    END;
    IF length(key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'the Idempotency-Key header must be 1 to 255 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN key;
END
$$;
COMMENT ON FUNCTION billing._idempotency_key() IS 'Internal: the caller''s Idempotency-Key header (request.headers, as PostgREST and the worker''s HTTP API set it), NULL without one.';

-- The key makes a retried HTTP call (a lost answer, a double click) return the request it
-- made the first time, whatever its state, as Stripe replays an idempotent request.
CREATE OR REPLACE FUNCTION billing._request_by_key(uid uuid, key text) RETURNS billing.stripe_requests
LANGUAGE plpgsql
AS $$
DECLARE
    r billing.stripe_requests;
BEGIN
    IF key IS NOT NULL THEN
        -- Two calls with one key wait for each other here: the second sees the first one's row.
        PERFORM billing._lock_user_requests(uid);
        SELECT * INTO r FROM billing.stripe_requests s WHERE s.user_id = uid AND s.idempotency_key = key;
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION billing._request_by_key(uuid, text) IS 'Internal: the request user uid made with this Idempotency-Key (all NULL when none, or no key), after serialising the user''s new requests.';

CREATE OR REPLACE FUNCTION billing._key_reused(key text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'Idempotency-Key % was used for a different request', quote_literal(left(key, 100))
        USING ERRCODE = 'BL004', HINT = 'Use a new key for a new request.';
END
$$;
COMMENT ON FUNCTION billing._key_reused(text) IS 'Internal: BL004, an Idempotency-Key used before for another request.';

CREATE OR REPLACE FUNCTION billing._replayed_request(uid uuid, for_kind text, for_params jsonb, key text) RETURNS uuid
LANGUAGE plpgsql
AS $$
DECLARE
    r billing.stripe_requests := billing._request_by_key(uid, key);
BEGIN
    -- (A replaced subscription checkout carries the session it expires: not the caller's input.)
    IF r.id IS NOT NULL AND (r.kind <> for_kind OR r.params - 'expire_session' <> for_params) THEN
        PERFORM billing._key_reused(key);
    END IF;
    RETURN r.id;
END
$$;
COMMENT ON FUNCTION billing._replayed_request(uuid, text, jsonb, text) IS 'Internal: the caller''s request made earlier with this Idempotency-Key, NULL when there is none; BL004 when the key was used for other parameters.';

CREATE OR REPLACE FUNCTION billing._buying_account(account_id uuid) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
BEGIN
    IF account_id IS NULL OR account_id = uid THEN
        RETURN uid;
    END IF;
    PERFORM billing._require_account_role(account_id, ARRAY['owner', 'admin']);
    RETURN account_id;
END
$$;
COMMENT ON FUNCTION billing._buying_account(uuid) IS 'Internal: the account a checkout or portal request is for: the caller''s own (account_id NULL or their id), or a team in which they are owner or admin (42501 otherwise; 28000 when not signed in).';

CREATE OR REPLACE FUNCTION billing.request_checkout(price_id text, mode text DEFAULT NULL, success_url text DEFAULT NULL,
                                         cancel_url text DEFAULT NULL, project_id uuid DEFAULT NULL,
                                         coupon text DEFAULT NULL, allow_promotion_codes boolean DEFAULT false,
                                         quantity integer DEFAULT 1, account_id uuid DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- The account that buys (its Stripe customer, subscription, grants): the caller's own, or a
    -- team they own or administer. Everything below is keyed by it.
    uid uuid := billing._buying_account(account_id);
    plan billing.plans;
    cfg billing.config := billing._settings();
    expected_mode text;
    params jsonb;
    open billing.stripe_requests;
    key text := billing._idempotency_key();
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
    -- A team's subscription is bought by the seat (sql/accounts/seats.sql); a person's is one.
    IF plan.kind = 'subscription' AND uid <> billing._require_user() THEN
        PERFORM billing._check_seat_count(uid, quantity);
    ELSIF quantity IS NULL OR quantity < 1 OR quantity > 100 OR (plan.kind = 'subscription' AND quantity <> 1) THEN
        RAISE EXCEPTION 'quantity must be 1 for a personal subscription and 1 to 100 for token packs, got %', quantity
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A team''s subscription takes its seats as quantity (1 to 10000).';
    END IF;
    -- The grant made when it is paid must be possible: refuse now rather than take money then.
    IF plan.kind = 'token_pack' AND plan.tokens * quantity > 1000000000000 THEN
        RAISE EXCEPTION '% x % tokens is more than one grant may hold (1000000000000)', quantity, plan.tokens
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coupon IS NOT NULL AND allow_promotion_codes THEN
        RAISE EXCEPTION 'pass either coupon or allow_promotion_codes, not both'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Stripe Checkout rejects a session with both.';
    END IF;
    -- Only coupons the operator offers: any coupon id would otherwise work for anyone.
    IF coupon IS NOT NULL AND NOT EXISTS (SELECT FROM billing.coupons c WHERE c.id = coupon AND c.active) THEN
        RAISE EXCEPTION 'coupon % is not offered', quote_literal(left(coupon, 100))
            USING ERRCODE = 'BL012', HINT = 'Coupons callers may use are listed in billing.coupons; promotion codes are entered on the Checkout page.';
    END IF;
    PERFORM billing._check_project(uid, project_id);
    params := jsonb_strip_nulls(jsonb_build_object(
        'price_id', plan.stripe_price_id,
        'plan_id', plan.id,
        'mode', expected_mode,
        'quantity', quantity,
        'tokens', CASE WHEN plan.kind = 'token_pack' THEN plan.tokens * quantity END,
        'success_url', billing._check_redirect(success_url, cfg.checkout_success_url, 'success_url', cfg),
        'cancel_url', billing._check_redirect(cancel_url, cfg.checkout_cancel_url, 'cancel_url', cfg),
        'project_id', project_id,
        'coupon', coupon,
        'allow_promotion_codes', CASE WHEN allow_promotion_codes THEN true END,
        'collect_tax_ids', cfg.collect_tax_ids,
        'save_payment_method', CASE WHEN plan.kind = 'token_pack' THEN cfg.save_payment_method END,
        -- A card saved for auto top-up must be chargeable off-session (sql/topups/functions.sql).
        'save_for_off_session', CASE WHEN plan.kind = 'token_pack' AND cfg.save_payment_method
                                      AND EXISTS (SELECT FROM billing.auto_top_ups a WHERE a.user_id = uid) THEN true END,
        'email', nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'));
    request_id := billing._replayed_request(uid, 'checkout', params, key);
    IF request_id IS NOT NULL THEN
        RETURN request_id;
    END IF;
    PERFORM billing._admit_user_request(uid, cfg);
    IF plan.kind = 'subscription' THEN
        IF EXISTS (SELECT FROM billing.subscriptions s
                   WHERE s.user_id = uid AND s.status IN ('active', 'trialing', 'past_due', 'unpaid', 'paused', 'incomplete')) THEN
            RAISE EXCEPTION 'you already have a subscription'
                USING ERRCODE = 'BL005', HINT = 'Change plans in the customer portal: billing.request_portal().';
        END IF;
        -- At most one subscription checkout may be open, or both could be paid. The same request
        -- again gets the open one; another one replaces it (the worker expires the old session
        -- first). Stripe expires an unpaid session after 24 hours.
        SELECT * INTO open FROM billing.stripe_requests r
        WHERE r.user_id = uid AND r.kind = 'checkout' AND r.params ->> 'mode' = 'subscription'
          AND (r.status IN ('pending', 'running')
               OR (r.status = 'succeeded' AND r.result ->> 'session_status' IS NULL
                   AND r.created_at > now() - interval '24 hours'))
        ORDER BY r.created_at DESC LIMIT 1;
        IF FOUND AND open.params = params THEN
            RETURN open.id;
        ELSIF FOUND AND open.status <> 'succeeded' THEN
            RAISE EXCEPTION 'another subscription checkout is being prepared'
                USING ERRCODE = 'BL005', HINT = 'Wait for it (billing.await_request) and try again.';
        ELSIF FOUND THEN
            params := params || jsonb_build_object('expire_session', open.result ->> 'session_id');
        END IF;
    END IF;
    INSERT INTO billing.stripe_requests (user_id, kind, params, idempotency_key) VALUES (uid, 'checkout', params, key)
    RETURNING id INTO request_id;
    RETURN request_id;
END
$$;
COMMENT ON FUNCTION billing.request_checkout(text, text, text, text, uuid, text, boolean, integer, uuid) IS 'For signed-in users: queues a Stripe Checkout Session for the caller, or with account_id for a team they own or administer (42501 otherwise) (mode subscription for plans, payment for token packs) and returns the request id; then call billing.await_request(id) for the URL. quantity: packs 1 to 100; a personal subscription 1; a team''s subscription its seats, 1 to 10000 and at least its members (BL023). Refuses what Stripe or the operator would: unknown or inactive plans, coupons not in billing.coupons (BL012), redirect URLs off the allowed origins (BL013), a second subscription (BL005), too many requests in progress (BL011). An Idempotency-Key in request.headers returns the request made with that key before (BL004 when its parameters differ).';

CREATE OR REPLACE FUNCTION billing.request_portal(return_url text DEFAULT NULL, account_id uuid DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._buying_account(account_id);
    cfg billing.config := billing._settings();
    url text;
    key text := billing._idempotency_key();
    request_id uuid;
BEGIN
    IF NOT EXISTS (SELECT FROM billing.customers c WHERE c.user_id = uid) THEN
        RAISE EXCEPTION 'no billing account yet, make a purchase first'
            USING ERRCODE = 'BL002', HINT = 'The customer portal opens once the user has a Stripe customer.';
    END IF;
    url := billing._check_redirect(return_url, cfg.portal_return_url, 'return_url', cfg);
    request_id := billing._replayed_request(uid, 'portal', jsonb_build_object('return_url', url), key);
    IF request_id IS NOT NULL THEN
        RETURN request_id;
    END IF;
    PERFORM billing._admit_user_request(uid, cfg);
    INSERT INTO billing.stripe_requests (user_id, kind, params, idempotency_key)
    VALUES (uid, 'portal', jsonb_build_object('return_url', url), key)
    RETURNING id INTO request_id;
    RETURN request_id;
END
$$;
COMMENT ON FUNCTION billing.request_portal(text, uuid) IS 'For signed-in users: queues a Stripe Customer Portal session for the caller, or with account_id for a team they own or administer (42501 otherwise); fails with BL002 when the caller has no Stripe customer yet, BL013 for a return URL off the allowed origins, BL011 with too many requests in progress. An Idempotency-Key in request.headers returns the request made with that key before (BL004 when its return URL differs).';

CREATE OR REPLACE FUNCTION billing._request_json(r billing.stripe_requests) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RETURN jsonb_build_object('id', r.id, 'kind', r.kind, 'status', r.status,
        'url', r.result ->> 'url', 'session_id', r.result ->> 'session_id', 'error', r.error);
END
$$;
COMMENT ON FUNCTION billing._request_json(billing.stripe_requests) IS 'Internal: the JSON shape billing.await_request returns.';

CREATE OR REPLACE FUNCTION billing._request_lock_key(request_id uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT hashtextextended('billing.request:' || request_id, 0)
$$;
COMMENT ON FUNCTION billing._request_lock_key(uuid) IS 'Internal: the advisory lock a worker holds while it serves a request; await_request waits on it.';

CREATE OR REPLACE FUNCTION billing.await_request(request_id uuid, timeout_ms integer DEFAULT 5000) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    uid uuid := billing._require_user();
    r billing.stripe_requests;
    statement_limit integer := (SELECT s.setting::integer FROM pg_settings s WHERE s.name = 'statement_timeout');
    old_lock_timeout text := current_setting('lock_timeout');
    deadline timestamptz;
    began timestamptz;
    left_ms integer;
    nap double precision := 0.002;
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
    -- Answer before the statement timeout would cut the call off (Supabase gives authenticated
    -- 8 s): a pending status is an answer the app can act on, an error 57014 is not.
    IF statement_limit > 0 THEN
        timeout_ms := least(timeout_ms, greatest(statement_limit - 500, 0));
    END IF;
    deadline := clock_timestamp() + make_interval(secs => timeout_ms / 1000.0);
    LOOP
        -- Each statement takes a new snapshot under READ COMMITTED, so this sees the worker's commit.
        -- The caller's own requests, and those they made for a team they still own or administer.
        SELECT * INTO r FROM billing.stripe_requests s
        WHERE s.id = request_id
          AND (s.user_id = uid OR billing._account_role(s.user_id, uid) IN ('owner', 'admin'));
        IF NOT FOUND THEN
            RAISE EXCEPTION 'request % not found', request_id USING ERRCODE = 'no_data_found';
        END IF;
        left_ms := floor(extract(epoch FROM deadline - clock_timestamp()) * 1000);
        EXIT WHEN r.status IN ('succeeded', 'failed') OR left_ms <= 0;
        -- A worker serving the request holds its lock until the outcome is committed: waiting
        -- for the lock wakes this call the moment the worker is done, without polling.
        began := clock_timestamp();
        BEGIN
            PERFORM set_config('lock_timeout', left_ms || 'ms', true);
            PERFORM pg_advisory_lock_shared(billing._request_lock_key(request_id));
            PERFORM pg_advisory_unlock_shared(billing._request_lock_key(request_id));
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- the deadline came first
        END;
        PERFORM set_config('lock_timeout', old_lock_timeout, true);
        IF clock_timestamp() - began < interval '1 millisecond' THEN
            -- No worker holds it yet (the row is still queued): a short nap, growing.
            PERFORM pg_sleep(least(nap, greatest(left_ms, 0) / 1000.0));
            nap := least(nap * 2, 0.05);
        END IF;
    END LOOP;
    RETURN billing._request_json(r);
END
$$;
COMMENT ON FUNCTION billing.await_request(uuid, integer) IS 'For signed-in users: waits up to timeout_ms (default 5000, and never past the statement timeout) for the worker to finish one of the caller''s requests and returns {id, kind, status, url, session_id, error}; status is still pending/running on timeout. It wakes as soon as the worker commits the outcome.';

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
COMMENT ON FUNCTION billing._request_retrieval(text, uuid, text) IS 'Internal: asks the worker to retrieve an object from Stripe (refresh: a subscription, an invoice with its payments, a credit note''s refund, a PaymentIntent''s invoice payments, or a price; line_items: what a Checkout Session sold, or every line of an invoice), once while one is in flight.';

CREATE OR REPLACE FUNCTION billing._record_session_status(request_id text, session_status text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    -- A session our checkout made is over (paid or expired): it no longer counts as open.
    UPDATE billing.stripe_requests r SET result = r.result || jsonb_build_object('session_status', session_status)
    WHERE r.id = billing._uuid_or_null(request_id) AND r.kind = 'checkout' AND r.status = 'succeeded';
END
$$;
COMMENT ON FUNCTION billing._record_session_status(text, text) IS 'Internal: records on a checkout request that its session completed or expired.';
