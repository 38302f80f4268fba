-- The worker's side of the request queue: claims (fairly: one user at a time, oldest first,
-- with a lease), outcomes written back under the claim's attempt number, retries with a growing
-- delay, and what follows a request that failed for good. The callers' side (what may be asked
-- for) is sql/requests/functions.sql.

-- One follow-up whichever way a request failed for good (fail_request, or a lease run out on the
-- last attempt): before, a top-up's lease running out left auto top-up on and the user untold.
CREATE OR REPLACE FUNCTION billing._request_failed(r billing.stripe_requests, code text, message text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    -- An auto top-up's charge failed for good, or the Checkout link for one could not be made
    -- (sql/topups/functions.sql). A meter event's overage follows by trigger (sql/overage/).
    IF r.kind = 'top_up' THEN
        PERFORM billing._top_up_failed(r.id, code, message);
    ELSIF r.kind = 'checkout' AND r.params ? 'top_up_request' THEN
        PERFORM billing._top_up_link_ready(r);
    ELSIF r.kind = 'seats' THEN
        -- Nobody may be awaiting it any more (the worker was down, retries took hours): the
        -- team's members read why its seats did not change (sql/accounts/seats.sql).
        PERFORM billing._notify(r.user_id, 'seat_change_failed', 'seats:' || r.id,
            jsonb_build_object('request_id', r.id, 'quantity', r.params -> 'quantity',
                               'from_quantity', r.params -> 'from_quantity', 'code', code, 'message', message));
    END IF;
END
$$;
COMMENT ON FUNCTION billing._request_failed(billing.stripe_requests, text, text) IS 'Internal (fail_request, _give_up_abandoned_requests): what a request that failed for good sets off, whichever way it failed: a top_up turns auto top-up off and tells the user (billing._top_up_failed); the Checkout link of a failed top-up tells the user without a link (billing._top_up_link_ready); a seat change writes a seat_change_failed notification for the team.';

CREATE OR REPLACE FUNCTION billing._give_up_abandoned_requests() RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    max_attempts integer := (billing._settings()).request_max_attempts;
    r billing.stripe_requests;
BEGIN
    -- A worker that died mid-request leaves its row running; once the lease is over the row is
    -- retried, or failed (as if the worker had reported it) when it has used all its attempts.
    FOR r IN
        UPDATE billing.stripe_requests s
        SET status = 'failed', error = format('gave up after %s attempts (the worker stopped responding)', s.attempts),
            finished_at = now(), locked_by = NULL, locked_until = NULL
        WHERE s.status = 'running' AND s.locked_until < clock_timestamp() AND s.attempts >= max_attempts
        RETURNING s.*
    LOOP
        PERFORM billing._request_failed(r, NULL, r.error);
    END LOOP;
END
$$;
COMMENT ON FUNCTION billing._give_up_abandoned_requests() IS 'Internal (claims): fails the running requests whose lease ran out after their last allowed attempt, with what any request failing for good sets off (billing._request_failed).';

CREATE OR REPLACE FUNCTION billing.claim_requests(worker text, max_count integer DEFAULT 1, lease_seconds integer DEFAULT 60)
RETURNS TABLE (id uuid, kind text, user_id uuid, params jsonb, attempts integer, stripe_customer_id text,
               waited_seconds double precision)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM billing._check_not_null(worker, 'worker');
    IF max_count IS NULL OR max_count < 1 OR max_count > 1000 OR lease_seconds IS NULL OR lease_seconds < 1 THEN
        RAISE EXCEPTION 'max_count must be 1 to 1000 and lease_seconds positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM billing._give_up_abandoned_requests();

    -- Fair across users: each claim takes at most one request per user (the oldest), never one
    -- of a user whose other request is running, and the oldest users' requests first. One
    -- account queueing many requests cannot hold up everyone else. (Two workers claiming in the
    -- same instant may each take one of a user's requests; the worker copes with that.)
    RETURN QUERY
    WITH candidates AS (
        SELECT DISTINCT ON (r.user_id) r.id, r.user_id, r.run_after, r.created_at
        FROM billing.stripe_requests r
        WHERE r.status IN ('pending', 'running') AND r.run_after <= clock_timestamp()
          AND (r.status = 'pending' OR r.locked_until < clock_timestamp())
        ORDER BY r.user_id, r.run_after, r.created_at
    ), fair AS (
        SELECT c.id FROM candidates c
        WHERE NOT EXISTS (SELECT FROM billing.stripe_requests o
                          WHERE o.user_id = c.user_id AND o.status = 'running' AND o.id <> c.id
                            AND o.locked_until >= clock_timestamp())
        ORDER BY c.run_after, c.created_at
        LIMIT max_count * 4
    ), ready AS (
        -- When the row became claimable: its run_after, or for a row taken over from a worker
        -- that died, the end of that worker's lease.
        SELECT r.id, CASE WHEN r.status = 'running' THEN greatest(r.run_after, r.locked_until) ELSE r.run_after END AS ready_at
        FROM billing.stripe_requests r JOIN fair f ON f.id = r.id
        WHERE r.status IN ('pending', 'running') AND r.run_after <= clock_timestamp()
          AND (r.status = 'pending' OR r.locked_until < clock_timestamp())
        ORDER BY r.run_after, r.created_at
        LIMIT max_count
        FOR UPDATE OF r SKIP LOCKED)
    UPDATE billing.stripe_requests r
    SET status = 'running', attempts = r.attempts + 1, locked_by = worker, claimed_at = clock_timestamp(),
        locked_until = clock_timestamp() + make_interval(secs => lease_seconds)
    FROM ready WHERE r.id = ready.id
    RETURNING r.id, r.kind, r.user_id, r.params, r.attempts,
        (SELECT c.stripe_customer_id FROM billing.customers c WHERE c.user_id = r.user_id),
        greatest(extract(epoch FROM clock_timestamp() - ready.ready_at)::double precision, 0);
END
$$;
COMMENT ON FUNCTION billing.claim_requests(text, integer, integer) IS 'Worker: claims up to max_count ready requests (pending, or running past their lease) for lease_seconds, at most one per user and none of a user with a request running, oldest first, skipping rows other workers hold. waited_seconds: how long each had been ready to claim (the worker''s claim latency).';

CREATE OR REPLACE FUNCTION billing.claim_request(request_id uuid, worker text, lease_seconds integer DEFAULT 60)
RETURNS TABLE (id uuid, kind text, user_id uuid, params jsonb, attempts integer, stripe_customer_id text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM billing._check_not_null(request_id, 'request_id');
    PERFORM billing._check_not_null(worker, 'worker');
    IF lease_seconds IS NULL OR lease_seconds < 1 THEN
        RAISE EXCEPTION 'lease_seconds must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM billing._give_up_abandoned_requests();
    -- The rules of claim_requests for one row: ready (pending, or running past its lease, and
    -- not waiting out a retry delay), no other request of the user running, and not locked by
    -- another worker's claim in progress. Whoever claims first owns it until the lease ends.
    RETURN QUERY
    WITH ready AS (
        SELECT r.id FROM billing.stripe_requests r
        WHERE r.id = claim_request.request_id
          AND r.status IN ('pending', 'running') AND r.run_after <= clock_timestamp()
          AND (r.status = 'pending' OR r.locked_until < clock_timestamp())
          AND NOT EXISTS (SELECT FROM billing.stripe_requests o
                          WHERE o.user_id = r.user_id AND o.status = 'running' AND o.id <> r.id
                            AND o.locked_until >= clock_timestamp())
        FOR UPDATE OF r SKIP LOCKED)
    UPDATE billing.stripe_requests r
    SET status = 'running', attempts = r.attempts + 1, locked_by = worker, claimed_at = clock_timestamp(),
        locked_until = clock_timestamp() + make_interval(secs => lease_seconds)
    FROM ready WHERE r.id = ready.id
    RETURNING r.id, r.kind, r.user_id, r.params, r.attempts,
        (SELECT c.stripe_customer_id FROM billing.customers c WHERE c.user_id = r.user_id);
END
$$;
COMMENT ON FUNCTION billing.claim_request(uuid, text, integer) IS 'Worker: claims one given request for lease_seconds under the rules of claim_requests (ready, no other request of the user running, not held by another worker); no row when it cannot. The HTTP API serves the request it just queued this way, at once.';

CREATE OR REPLACE FUNCTION billing.finish_request(request_id uuid, worker text, result jsonb, attempt integer DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done billing.stripe_requests;
BEGIN
    IF result IS NULL OR jsonb_typeof(result) <> 'object' THEN
        RAISE EXCEPTION 'result must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE billing.stripe_requests r
    SET status = 'succeeded', result = finish_request.result, error = NULL, finished_at = now(),
        locked_by = NULL, locked_until = NULL
    WHERE r.id = request_id AND r.status = 'running' AND r.locked_by = worker
      AND (attempt IS NULL OR r.attempts = attempt)
    RETURNING r.* INTO done;
    -- The Checkout link for a failed auto top-up exists now: tell the user (sql/topups/functions.sql).
    IF done.kind = 'checkout' AND done.params ? 'top_up_request' THEN
        PERFORM billing._top_up_link_ready(done);
    END IF;
    RETURN done.id IS NOT NULL;
END
$$;
COMMENT ON FUNCTION billing.finish_request(uuid, text, jsonb, integer) IS 'Worker: marks a claimed request succeeded with its result ({url, session_id, ...}); false when the claim was lost. Pass the attempts value the claim returned as attempt so that a late worker cannot finish a newer claim of the same row.';

CREATE OR REPLACE FUNCTION billing._retry_delay(attempts integer) RETURNS interval
LANGUAGE sql VOLATILE
AS $$
    -- Doubling from 1 s up to 60 s, with jitter in the upper half so that requests that failed
    -- together do not come back together.
    SELECT make_interval(secs => least(60, power(2, greatest(attempts, 1) - 1)) * (0.5 + random() / 2))
$$;
COMMENT ON FUNCTION billing._retry_delay(integer) IS 'Internal: how long a request that failed transiently waits before it may be claimed again, after its n-th attempt.';

CREATE OR REPLACE FUNCTION billing.fail_request(request_id uuid, worker text, error text, attempt integer,
                                                retryable boolean DEFAULT false, stripe_code text DEFAULT NULL,
                                                stripe_param text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r billing.stripe_requests;
    max_attempts integer := (billing._settings()).request_max_attempts;
    customer text;
    again boolean;
    message text := left(error, 2000);
BEGIN
    PERFORM billing._check_not_null(error, 'error');
    PERFORM billing._check_not_null(attempt, 'attempt');
    SELECT * INTO r FROM billing.stripe_requests s
    WHERE s.id = request_id AND s.status = 'running' AND s.locked_by = worker AND s.attempts = attempt
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- the claim was lost: a newer claim decides
    END IF;
    again := coalesce(retryable, false) AND r.attempts < max_attempts;
    -- Stripe no longer has the user's customer (deleted, or from another account or mode): the
    -- link goes, and a checkout is tried again with a new customer.
    IF stripe_code = 'resource_missing' AND stripe_param = 'customer' AND r.kind IN ('checkout', 'portal') THEN
        SELECT c.stripe_customer_id INTO customer FROM billing.customers c WHERE c.user_id = r.user_id;
        IF customer IS NOT NULL THEN
            PERFORM billing._forget_customer(customer);
        END IF;
        again := r.kind = 'checkout' AND r.attempts < max_attempts;
        IF r.kind = 'portal' THEN
            message := 'no billing account any more: the Stripe customer was deleted; make a purchase first';
        END IF;
    END IF;
    UPDATE billing.stripe_requests s
    SET status = CASE WHEN again THEN 'pending' ELSE 'failed' END,
        run_after = CASE WHEN again AND stripe_code IS DISTINCT FROM 'resource_missing'
                         THEN clock_timestamp() + billing._retry_delay(r.attempts) ELSE s.run_after END,
        error = message,
        finished_at = CASE WHEN again THEN NULL ELSE now() END,
        locked_by = NULL, locked_until = NULL
    WHERE s.id = request_id;
    IF NOT again THEN
        PERFORM billing._request_failed(r, stripe_code, message);
    END IF;
    RETURN CASE WHEN again THEN 'pending' ELSE 'failed' END;
END
$$;
COMMENT ON FUNCTION billing.fail_request(uuid, text, text, integer, boolean, text, text) IS 'Worker: records a failed attempt of the claim with this attempt number. A retryable failure (network, 429, 5xx) goes back to the queue after a growing delay until request_max_attempts; Stripe answering that the user''s customer is missing forgets that customer and retries a checkout with a new one; anything else fails for good. Returns the new status, NULL when the claim was lost.';
