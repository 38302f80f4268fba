-- Operations: the figures an operator watches, in one call, so that "is it keeping up?" needs
-- no hand-written SQL. The worker's /metrics endpoint reads the same function on every scrape.
-- Each figure reads a partial or small index, never the whole history.

CREATE OR REPLACE FUNCTION billing.health()
RETURNS TABLE (
    requests_pending bigint,
    requests_running bigint,
    oldest_pending_seconds double precision,
    oldest_running_seconds double precision,
    events_held bigint,
    events_failed bigint,
    oldest_held_seconds double precision,
    oldest_failed_seconds double precision,
    last_webhook_test timestamptz,
    last_webhook_live timestamptz,
    seconds_since_webhook_test double precision,
    seconds_since_webhook_live double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    WITH queue AS (
        -- The live part of the queue only (stripe_requests_ready_idx).
        SELECT count(*) FILTER (WHERE r.status = 'pending') AS pending,
               count(*) FILTER (WHERE r.status = 'running') AS running,
               min(r.created_at) FILTER (WHERE r.status = 'pending') AS oldest_pending,
               min(r.claimed_at) FILTER (WHERE r.status = 'running') AS oldest_running
        FROM billing.stripe_requests r
        WHERE r.status IN ('pending', 'running')
    ), unapplied AS (
        -- Held: waiting for something that applies them by itself (their user becoming known,
        -- BL007; data the worker fetches from Stripe, BL010). Failed: anything else, which
        -- waits for the operator (say, a price missing from the catalog) and
        -- billing.reprocess_events().
        SELECT count(*) FILTER (WHERE e.held) AS held,
               count(*) FILTER (WHERE NOT e.held) AS failed,
               min(e.received_at) FILTER (WHERE e.held) AS oldest_held,
               min(e.received_at) FILTER (WHERE NOT e.held) AS oldest_failed
        FROM (SELECT s.received_at, coalesce(s.error_code IN ('BL007', 'BL010'), false) AS held
              FROM billing.stripe_events s WHERE s.processed_at IS NULL) e
    ), webhooks AS (
        SELECT (SELECT max(s.received_at) FROM billing.stripe_events s
                WHERE s.source = 'webhook' AND NOT s.livemode) AS test,
               (SELECT max(s.received_at) FROM billing.stripe_events s
                WHERE s.source = 'webhook' AND s.livemode) AS live
    )
    SELECT q.pending, q.running,
           extract(epoch FROM now() - q.oldest_pending)::double precision,
           extract(epoch FROM now() - q.oldest_running)::double precision,
           u.held, u.failed,
           extract(epoch FROM now() - u.oldest_held)::double precision,
           extract(epoch FROM now() - u.oldest_failed)::double precision,
           w.test, w.live,
           extract(epoch FROM now() - w.test)::double precision,
           extract(epoch FROM now() - w.live)::double precision
    FROM queue q, unapplied u, webhooks w
$$;
COMMENT ON FUNCTION billing.health() IS 'Privileged (monitoring): one row of figures. requests_pending/running: the queue; oldest_pending_seconds (since created) and oldest_running_seconds (since claimed). events_held: stored events waiting for their user (BL007) or for data the worker fetches (BL010), which apply by themselves; events_failed: events that failed otherwise and wait for billing.reprocess_events(); oldest_*_seconds: since the oldest of each was received. last_webhook_test/live: when the newest event of each mode arrived by webhook, and seconds_since_webhook_*. NULL ages: none. Grant EXECUTE on it to a monitoring role to show the figures without access to the tables.';
