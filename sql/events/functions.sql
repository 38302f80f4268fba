-- Ingestion: every event, however it arrives (a signed webhook delivery, an event fetched from
-- Stripe's events API, an object the worker retrieved), goes through billing._ingest: store it
-- once (its id is the key) and apply its effects, in the caller's transaction. A failure while
-- applying is stored with the event and its SQLSTATE; the delivery is still acknowledged so
-- Stripe stops retrying. Events waiting for something (their user, data from Stripe) are applied
-- as soon as another event of the same customer or object is (DESIGN.md, "Ingestion").
--
-- Effects never apply other events, so applying cannot re-enter itself: the row lock of the event
-- being applied (and the lock of its customer) are the only guards.

-- Dispatches a normalised event to its effects in a subtransaction: whatever they did is rolled
-- back when they fail, and the reason comes back as (message, SQLSTATE). An effect that needs data
-- from Stripe raises BL010 with the retrieval it needs as JSON detail; the retrieval is queued here,
-- after the rollback, so that it survives.
CREATE OR REPLACE FUNCTION billing._apply(ev jsonb, OUT message text, OUT code text)
LANGUAGE plpgsql
AS $$
DECLARE
    detail text;
    wanted jsonb;
BEGIN
    BEGIN
        CASE
            WHEN ev ->> 'type' IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded',
                                   'checkout.session.async_payment_failed', 'checkout.session.expired') THEN
                PERFORM billing._apply_checkout_session(ev);
            WHEN ev ->> 'type' LIKE 'customer.subscription.%' AND ev ->> 'object_type' = 'subscription' THEN
                PERFORM billing._apply_subscription(ev, 1::smallint);
            WHEN ev ->> 'type' = 'billing.subscription.retrieved' THEN
                PERFORM billing._apply_subscription(ev, 2::smallint);
            -- Not invoice.payment_succeeded: invoice.paid reports every payment it does (and invoices
            -- paid out of band), and a second report of one invoice would compute its grant again
            -- from the catalog as it is by then.
            WHEN ev ->> 'type' IN ('invoice.paid', 'invoice.payment_failed', 'invoice.payment_action_required') THEN
                PERFORM billing._apply_invoice(ev);
            WHEN ev ->> 'type' IN ('customer.created', 'customer.updated', 'customer.deleted') THEN
                PERFORM billing._apply_customer(ev);
            WHEN ev ->> 'type' = 'billing.invoice.retrieved' THEN
                PERFORM billing._apply_retrieved_invoice(ev);
            -- The money behind purchases, by the object the event reports.
            WHEN ev ->> 'object_type' = 'charge' AND ev ->> 'type' LIKE 'charge.%' THEN
                PERFORM billing._apply_charge(ev);
            -- charge.refund.updated: before acacia, the only report of a charge's refund failing.
            -- billing.refund.retrieved: a credit note's refund that no event reported.
            WHEN ev ->> 'object_type' = 'refund'
                 AND (ev ->> 'type' LIKE 'refund.%' OR ev ->> 'type' IN ('charge.refund.updated', 'billing.refund.retrieved')) THEN
                PERFORM billing._apply_refund(ev);
            WHEN ev ->> 'object_type' = 'dispute' AND ev ->> 'type' LIKE 'charge.dispute.%' THEN
                PERFORM billing._apply_dispute(ev);
            WHEN ev ->> 'object_type' = 'credit_note' AND ev ->> 'type' LIKE 'credit_note.%' THEN
                PERFORM billing._apply_credit_note(ev);
            WHEN ev ->> 'object_type' = 'invoice_payment' AND ev ->> 'type' LIKE 'invoice_payment.%' THEN
                PERFORM billing._apply_invoice_payment(ev);
            WHEN ev ->> 'object_type' = 'price' AND ev ->> 'type' IN ('price.created', 'price.updated') THEN
                PERFORM billing._apply_price(ev);
            -- Auto top-ups: granted only from Stripe's report of the money (sql/topups/functions.sql).
            WHEN ev ->> 'object_type' = 'payment_intent'
                 AND ev ->> 'type' IN ('payment_intent.succeeded', 'payment_intent.payment_failed') THEN
                PERFORM billing._apply_payment_intent(ev);
            ELSE
                NULL;  -- stored and acknowledged, no effect
        END CASE;
    EXCEPTION
        -- A deadlock or serialization failure is not the event's fault: it goes to the caller,
        -- whose whole transaction is tried again (the worker retries before answering Stripe).
        WHEN deadlock_detected OR serialization_failure THEN
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, code = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
            IF code = 'BL010' THEN
                wanted := detail::jsonb;
                PERFORM billing._request_retrieval(wanted ->> 'kind', (wanted ->> 'user_id')::uuid, wanted ->> 'object_id');
            END IF;
    END;
END
$$;
COMMENT ON FUNCTION billing._apply(jsonb) IS 'Internal: applies a normalised event''s effects (unknown types have none) in a subtransaction; returns the error message and SQLSTATE, or NULLs on success. Deadlocks and serialization failures are raised to the caller, which retries the whole delivery.';

CREATE OR REPLACE FUNCTION billing._apply_stored_event(event_id text, OUT message text, OUT code text,
                                                       OUT applied boolean)
LANGUAGE plpgsql
AS $$
DECLARE
    e billing.stripe_events;
BEGIN
    applied := false;
    -- Most redeliveries are of applied events (Stripe's retries, every catch-up's margin): they
    -- need neither the row lock (a write) nor anything after it.
    IF EXISTS (SELECT FROM billing.stripe_events s WHERE s.id = event_id AND s.processed_at IS NOT NULL) THEN
        RETURN;
    END IF;
    -- One lock order on every path that applies events (DESIGN.md, "Ingestion"): the customer's
    -- lock, then the event's row. An event's customer never changes once stored, so it can be
    -- read before either lock.
    PERFORM billing._lock_customer((SELECT s.stripe_customer_id FROM billing.stripe_events s WHERE s.id = event_id));
    -- The row lock makes concurrent deliveries and reprocess runs apply an event once.
    SELECT * INTO e FROM billing.stripe_events s WHERE s.id = event_id FOR UPDATE;
    IF NOT FOUND OR e.processed_at IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT * INTO message, code FROM billing._apply(billing._normalize_event(e.payload::text));
    UPDATE billing.stripe_events s
    SET attempts = s.attempts + 1, error = message, error_code = code,
        processed_at = CASE WHEN message IS NULL THEN clock_timestamp() END
    WHERE s.id = event_id;
    applied := message IS NULL;
END
$$;
COMMENT ON FUNCTION billing._apply_stored_event(text) IS 'Internal: applies a stored event that is not processed yet (a redelivery of a failed event, a waiting event, reprocess) and records the outcome; returns the error and SQLSTATE (NULLs on success) and whether this call applied it (its callers then wake the waiting events of its customer or object).';

-- Events wait when their user is not known yet (BL007) or data they need is being retrieved from
-- Stripe (BL010). Whatever another event of the same customer or object does (link the customer,
-- create the subscription row, deliver line items) may be what they wait for, so they are tried
-- again, in Stripe's order, until a pass changes nothing.
CREATE OR REPLACE FUNCTION billing._apply_waiting(customer text, object_id text) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    w record;
    applied integer := 0;
    progress boolean := true;
BEGIN
    IF customer IS NULL AND object_id IS NULL THEN
        RETURN 0;
    END IF;
    WHILE progress LOOP
        progress := false;
        FOR w IN SELECT e.id, e.created, e.received_at FROM billing.stripe_events e
                 WHERE e.processed_at IS NULL AND e.error_code IN ('BL007', 'BL010')
                   AND (e.stripe_customer_id = customer OR e.object_id = _apply_waiting.object_id)
                 UNION
                 -- An invoice waiting for a price's amount (sql/effects/invoice.sql) says so in its
                 -- error. A branch of its own, read only for a price, so every other delivery keeps
                 -- to the two indexes above.
                 SELECT e.id, e.created, e.received_at FROM billing.stripe_events e
                 WHERE starts_with(_apply_waiting.object_id, 'price_')
                   AND e.processed_at IS NULL AND e.error_code = 'BL010'
                   AND e.error = 'waiting for the price ' || _apply_waiting.object_id || ' from Stripe'
                 ORDER BY 2, 3
                 LIMIT 200 LOOP
            IF (billing._apply_stored_event(w.id)).applied THEN
                applied := applied + 1;
                progress := true;
            END IF;
        END LOOP;
    END LOOP;
    RETURN applied;
END
$$;
COMMENT ON FUNCTION billing._apply_waiting(text, text) IS 'Internal: applies the events of a customer or object that wait for their user (BL007) or for data from Stripe (BL010), and for a price the invoices waiting for its amount; returns how many now applied.';

CREATE OR REPLACE FUNCTION billing._event_result(e billing.stripe_events, duplicate boolean) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object('received', true, 'event_id', e.id, 'type', e.type, 'duplicate', duplicate,
        'processed', e.processed_at IS NOT NULL, 'error', e.error, 'code', e.error_code)
$$;
COMMENT ON FUNCTION billing._event_result(billing.stripe_events, boolean) IS 'Internal: the JSON an ingestion returns: {received, event_id, type, duplicate, processed, error, code}.';

-- The one ingestion path. source: webhook, api or retrieved. A new event needs one write when its
-- effects succeed: it is stored as processed, and the row is corrected when they fail.
CREATE OR REPLACE FUNCTION billing._ingest(payload text, source text, ev jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    inserted billing.stripe_events;
    failure record;
BEGIN
    ev := coalesce(ev, billing._normalize_event(payload));
    PERFORM billing._lock_customer(ev ->> 'customer');
    INSERT INTO billing.stripe_events AS s (id, type, api_version, livemode, created, payload, stripe_customer_id,
                                            object_id, source, processed_at, attempts)
    VALUES (ev ->> 'id', ev ->> 'type', ev ->> 'api_version', (ev ->> 'livemode')::boolean,
            billing._unix_time(ev -> 'created'), payload::json, ev ->> 'customer', ev ->> 'object_id',
            _ingest.source, clock_timestamp(), 1)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO inserted;
    IF inserted.id IS NULL THEN
        -- A redelivery: one that failed before gets another chance; one that applied is a no-op.
        failure := billing._apply_stored_event(ev ->> 'id');
        IF failure.applied THEN
            PERFORM billing._apply_waiting(ev ->> 'customer', ev ->> 'object_id');
        END IF;
        SELECT * INTO inserted FROM billing.stripe_events s WHERE s.id = ev ->> 'id';
        RETURN billing._event_result(inserted, true);
    END IF;
    failure := billing._apply(ev);
    IF failure.message IS NOT NULL THEN
        UPDATE billing.stripe_events s SET processed_at = NULL, error = failure.message, error_code = failure.code
        WHERE s.id = inserted.id
        RETURNING * INTO inserted;
    ELSE
        PERFORM billing._apply_waiting(ev ->> 'customer', ev ->> 'object_id');
    END IF;
    RETURN billing._event_result(inserted, false);
END
$$;
COMMENT ON FUNCTION billing._ingest(text, text, jsonb) IS 'Internal: stores an event once and applies it (then whatever waited for it); the path of webhooks, events fetched from the API and retrieved objects.';

-- Signing secrets may also live in Supabase Vault (the supabase_vault extension), so that they
-- are stored encrypted: a secret named stripe_webhook_secret_test or stripe_webhook_secret_live,
-- optionally followed by _<anything> (several at once while one rotates), signs events of the
-- mode its name says. Vault is read only where it is installed.
CREATE OR REPLACE FUNCTION billing._vault_webhook_secrets(OUT secret text, OUT livemode boolean)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Most installs have no Vault: a cache lookup says so without the catalog query below, which
    -- would otherwise run on every delivery.
    IF pg_catalog.to_regnamespace('vault') IS NULL THEN
        RETURN;
    END IF;
    -- From the catalog: naming a relation in a schema the caller may not use is an error, and a
    -- caller that may not read Vault (the doctor as a service_role member) gets no secrets.
    IF NOT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'vault' AND c.relname = 'decrypted_secrets'
                     AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')) THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT v.decrypted_secret, (substring(v.name FROM '^stripe_webhook_secret_(test|live)') = 'live')
        FROM vault.decrypted_secrets v
        WHERE v.name ~ '^stripe_webhook_secret_(test|live)(_.*)?$' AND v.decrypted_secret <> ''
        ORDER BY v.name;
END
$$;
COMMENT ON FUNCTION billing._vault_webhook_secrets() IS 'Internal: webhook signing secrets kept in Supabase Vault (vault.decrypted_secrets, when installed and readable by the caller) under the names stripe_webhook_secret_test[_...] and stripe_webhook_secret_live[_...], with the mode the name says.';

CREATE OR REPLACE FUNCTION billing.handle_stripe_webhook(payload text, header text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    secrets text[];
    modes boolean[];
    matched integer;
    ev jsonb;
BEGIN
    SELECT array_agg(k.secret ORDER BY k.source, k.position), array_agg(k.livemode ORDER BY k.source, k.position)
    INTO secrets, modes
    FROM (SELECT 1 AS source, w.id AS position, w.secret, w.livemode
          FROM billing.webhook_secrets w WHERE w.expires_at IS NULL OR w.expires_at > now()
          UNION ALL
          SELECT 2, v.n, v.secret, v.livemode
          FROM billing._vault_webhook_secrets() WITH ORDINALITY AS v(secret, livemode, n)) k;
    IF secrets IS NULL THEN
        RAISE EXCEPTION 'billing is not configured: no webhook signing secret'
            USING ERRCODE = 'BL003',
                  HINT = 'INSERT INTO billing.webhook_secrets (secret, livemode) VALUES (''whsec_...'', false); or, with Supabase Vault, SELECT vault.create_secret(''whsec_...'', ''stripe_webhook_secret_test'');';
    END IF;
    matched := billing._verify_webhook_signature(payload, header, secrets, (billing._settings()).webhook_tolerance_seconds);
    ev := billing._normalize_event(payload);
    IF (ev ->> 'livemode')::boolean IS DISTINCT FROM modes[matched] THEN
        RAISE EXCEPTION 'a % event was signed with a % secret', CASE WHEN (ev ->> 'livemode')::boolean THEN 'live-mode' ELSE 'test-mode' END,
            CASE WHEN modes[matched] THEN 'live-mode' ELSE 'test-mode' END
            USING ERRCODE = 'BL009',
                  HINT = 'Each webhook_secrets row (or Vault secret name) says which mode it signs; add the secret of this mode''s endpoint.';
    END IF;
    RETURN billing._ingest(payload, 'webhook', ev);
END
$$;
COMMENT ON FUNCTION billing.handle_stripe_webhook(text, text) IS 'Privileged: verifies a Stripe webhook (raw body, Stripe-Signature header) against billing.webhook_secrets and the stripe_webhook_secret_* secrets of Supabase Vault, stores the event once and applies its effects, all in the caller''s transaction. Returns {received, event_id, type, duplicate, processed, error, code}. Raises for bad signatures (nothing stored), BL009 for a mode mismatch and BL003 when no secret is configured.';

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

CREATE OR REPLACE FUNCTION billing.ingest_retrieved(request_id uuid, object jsonb, retrieved_at timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM billing._check_not_null(request_id, 'request_id');
    IF object IS NULL OR jsonb_typeof(object) <> 'object' OR object ->> 'object' IS NULL OR object ->> 'id' IS NULL THEN
        RAISE EXCEPTION 'object must be a Stripe object with "object" and "id"' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Stored as an event of ours, keyed by the request, so a repeated call applies it once; its
    -- time is when Stripe answered, which makes it newer than every event created before.
    RETURN billing._ingest_object('evt_retrieved_' || replace(request_id::text, '-', ''), object, retrieved_at);
END
$$;
COMMENT ON FUNCTION billing.ingest_retrieved(uuid, jsonb, timestamptz) IS 'Worker: applies an object retrieved from Stripe for a refresh request as the authoritative state at retrieved_at (Stripe''s Date header), through the same store-and-apply path as events; idempotent per request.';

CREATE OR REPLACE FUNCTION billing.store_line_items(session_id text, line_items jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF session_id IS NULL OR session_id !~ '^cs_[A-Za-z0-9_]+$' THEN
        RAISE EXCEPTION 'session_id must be a Checkout Session id (cs_...)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF line_items IS NULL OR jsonb_typeof(line_items -> 'data') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'line_items must be Stripe''s list object ({"object": "list", "data": [...]})'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM billing.checkout_line_items l WHERE l.session_id = store_line_items.session_id;
    INSERT INTO billing.checkout_line_items (session_id, position, price_id, quantity, amount_total, currency)
    SELECT store_line_items.session_id, (i.n - 1)::integer,
           coalesce(i.item -> 'price' ->> 'id', i.item ->> 'price'),
           (i.item ->> 'quantity')::bigint, (i.item ->> 'amount_total')::bigint, i.item ->> 'currency'
    FROM jsonb_array_elements(line_items -> 'data') WITH ORDINALITY AS i(item, n);
    RETURN billing._apply_waiting(NULL, session_id);
END
$$;
COMMENT ON FUNCTION billing.store_line_items(text, jsonb) IS 'Worker: stores what a Checkout Session sold (Stripe''s line_items list) and applies the events that waited for it; returns how many applied.';

CREATE OR REPLACE FUNCTION billing.store_invoice_lines(invoice_id text, lines jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF invoice_id IS NULL OR invoice_id !~ '^in_[A-Za-z0-9_]+$' THEN
        RAISE EXCEPTION 'invoice_id must be an invoice id (in_...)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lines IS NULL OR jsonb_typeof(lines -> 'data') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'lines must be Stripe''s list object ({"object": "list", "data": [...]})'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Lines are retrieved for an invoice that has more than a page of them, so an empty list is a
    -- wrong answer: refused, the retrieval fails where the operator sees it, rather than succeed
    -- while the event keeps waiting for lines that read as "not retrieved yet".
    IF jsonb_array_length(lines -> 'data') = 0 THEN
        RAISE EXCEPTION 'lines of % must not be empty', invoice_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM billing.invoice_lines l WHERE l.invoice_id = store_invoice_lines.invoice_id;
    -- Read as the lines of an event are, in either API shape.
    INSERT INTO billing.invoice_lines (invoice_id, position, price_id, amount, quantity, proration, unit_amount,
                                       period_start, period_end)
    SELECT store_invoice_lines.invoice_id, (i.n - 1)::integer, i.line ->> 'price_id', (i.line ->> 'amount')::bigint,
           (i.line ->> 'quantity')::bigint, (i.line ->> 'proration')::boolean, (i.line ->> 'unit_amount')::numeric,
           billing._unix_time(i.line -> 'period_start'), billing._unix_time(i.line -> 'period_end')
    FROM jsonb_array_elements((billing._normalize_invoice_lists(jsonb_build_object('lines', lines)))[1])
         WITH ORDINALITY AS i(line, n);
    RETURN billing._apply_waiting(NULL, invoice_id);
END
$$;
COMMENT ON FUNCTION billing.store_invoice_lines(text, jsonb) IS 'Worker: stores every line of an invoice (Stripe''s list of the invoice''s lines, all pages, in its order) and applies the events that waited for them; returns how many applied.';

CREATE OR REPLACE FUNCTION billing.store_invoice_payments(payment_intent text, payments jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p jsonb;
    paid integer := 0;
BEGIN
    IF payment_intent IS NULL OR payment_intent !~ '^pi_[A-Za-z0-9_]+$' THEN
        RAISE EXCEPTION 'payment_intent must be a PaymentIntent id (pi_...)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF payments IS NULL OR jsonb_typeof(payments -> 'data') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'payments must be Stripe''s list object ({"object": "list", "data": [...]})'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- In the payment's lock, as every transaction that ties it to a purchase or reports its money.
    PERFORM billing._lock_payment(payment_intent);
    -- Only what this PaymentIntent paid: a list that names another payment is a wrong answer.
    FOR p IN SELECT value FROM jsonb_array_elements(payments -> 'data') LOOP
        IF jsonb_typeof(p) <> 'object' OR billing._json_ref(p #> '{payment,payment_intent}') #>> '{}' IS DISTINCT FROM payment_intent THEN
            RAISE EXCEPTION 'payments of % must all be paid by it', payment_intent USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CONTINUE WHEN p ->> 'status' IS DISTINCT FROM 'paid';
        PERFORM billing._link_invoice_payment(p);
        paid := paid + 1;
    END LOOP;
    INSERT INTO billing.payment_lookups AS l (payment, invoices) VALUES (store_invoice_payments.payment_intent, paid)
    ON CONFLICT (payment) DO UPDATE SET invoices = excluded.invoices, looked_up_at = now();
    -- What the payment's refunds and disputes, recorded before anything named their purchases,
    -- take from the purchases it paid.
    PERFORM billing._settle_payment(NULL, payment_intent, format('payments of %s looked up', payment_intent), NULL);
    RETURN paid;
END
$$;
COMMENT ON FUNCTION billing.store_invoice_payments(text, jsonb) IS 'Worker: stores which invoices a PaymentIntent paid (Stripe''s list of its invoice payments, GET /v1/invoice_payments, all pages), so its refunds and disputes find the purchases, and settles those purchases; returns how many invoices it paid.';

CREATE OR REPLACE FUNCTION billing.store_price(price jsonb, as_of timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF price IS NULL OR price ->> 'object' IS DISTINCT FROM 'price' OR coalesce(price ->> 'id', '') !~ '^price_[A-Za-z0-9_]+$' THEN
        RAISE EXCEPTION 'price must be a Stripe Price object (object "price", id price_...)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must be the time of Stripe''s answer' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM billing._sync_price(price ->> 'id', billing._normalize_price(price), as_of);
    RETURN billing._apply_waiting(NULL, price ->> 'id');
END
$$;
COMMENT ON FUNCTION billing.store_price(jsonb, timestamptz) IS 'Worker: stores a price retrieved from Stripe (GET /v1/prices/{id}) in billing.prices as of the answer''s time and applies the invoice events that waited for its amount; returns how many applied.';

CREATE OR REPLACE FUNCTION billing.reprocess_events(max_events integer DEFAULT 1000,
                                                    include_waiting boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record;
    outcome record;
    tried integer := 0;
    still_failing integer := 0;
    waiting bigint;
BEGIN
    IF max_events IS NULL OR max_events < 1 THEN
        RAISE EXCEPTION 'max_events must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Events waiting for their user (BL007) or for data from Stripe (BL010) apply by themselves
    -- the moment it arrives; on a shared Stripe account there may be thousands of them (customers
    -- this app never knew), and they must not stand in front of the failures an operator fixed.
    FOR e IN SELECT s.id, s.stripe_customer_id, s.object_id FROM billing.stripe_events s
             WHERE s.processed_at IS NULL
               AND (include_waiting OR s.error_code IS NULL OR s.error_code NOT IN ('BL007', 'BL010'))
             ORDER BY s.created, s.received_at LIMIT max_events LOOP
        tried := tried + 1;
        outcome := billing._apply_stored_event(e.id);
        IF outcome.message IS NOT NULL THEN
            still_failing := still_failing + 1;
        ELSIF outcome.applied THEN
            -- Whatever it did may be what the waiting events of its customer or object wait for.
            PERFORM billing._apply_waiting(e.stripe_customer_id, e.object_id);
        END IF;
    END LOOP;
    SELECT count(*) INTO waiting FROM billing.stripe_events s
    WHERE s.processed_at IS NULL AND s.error_code IN ('BL007', 'BL010');
    RETURN jsonb_build_object('reprocessed', tried, 'succeeded', tried - still_failing, 'still_failing', still_failing,
                              'waiting', waiting);
END
$$;
COMMENT ON FUNCTION billing.reprocess_events(integer, boolean) IS 'Privileged: re-applies stored events that failed (oldest first), e.g. after adding a missing price to billing.plans; events waiting for their user or for data from Stripe apply by themselves and are left out unless include_waiting. Returns {reprocessed, succeeded, still_failing, waiting}. Each event''s effects happen at most once.';

CREATE OR REPLACE FUNCTION billing.prune() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg billing.config := billing._settings();
    expired integer;
    requests integer;
    events integer;
    warnings integer;
BEGIN
    -- A checkout or portal request nobody served within a day is no use to its user any more
    -- (a Checkout Session itself lasts 24 hours).
    UPDATE billing.stripe_requests r
    SET status = 'failed', error = 'expired: not served within a day', finished_at = now()
    WHERE r.status = 'pending' AND r.kind IN ('checkout', 'portal') AND r.created_at < now() - interval '1 day';
    GET DIAGNOSTICS expired = ROW_COUNT;
    DELETE FROM billing.stripe_requests r
    WHERE r.status IN ('succeeded', 'failed')
      AND r.finished_at < now() - make_interval(days => cfg.request_retention_days);
    GET DIAGNOSTICS requests = ROW_COUNT;
    -- Applied events only: Stripe redelivers for 3 days and lists events for 30, so an id kept
    -- longer than that can never be seen again; what they granted stays in the ledger (whose grant
    -- keys also stop a second grant). Waiting or failed events stay until they apply.
    DELETE FROM billing.stripe_events e
    WHERE e.processed_at IS NOT NULL
      AND e.received_at < now() - make_interval(days => cfg.event_retention_days);
    GET DIAGNOSTICS events = ROW_COUNT;
    -- An expiry warning's row is what stops billing.warn_expiring_grants() warning its grant
    -- twice, so it stays while the sweep could still pick the grant: one with tokens left that
    -- has not expired. A grant's remaining never grows and its expires_at never changes, so once
    -- spent out or expired it is never swept again. An expired grant's row waits a day more, for
    -- a sweep whose transaction began before the expiry and reads the grant as live; the
    -- notification itself stays in billing.notifications, keyed by the grant.
    DELETE FROM billing.expiry_warnings w
    USING billing.token_grants t
    WHERE t.id = w.grant_id
      AND (t.remaining = 0 OR t.expires_at < now() - interval '1 day');
    GET DIAGNOSTICS warnings = ROW_COUNT;
    RETURN jsonb_build_object('requests_expired', expired, 'requests_deleted', requests, 'events_deleted', events,
                              'expiry_warnings_deleted', warnings);
END
$$;
COMMENT ON FUNCTION billing.prune() IS 'Privileged (pg_cron, or the worker): expires checkout and portal requests queued for over a day, deletes finished requests older than request_retention_days, applied events older than event_retention_days, and the expiry warnings (billing.expiry_warnings) of grants spent out or expired over a day ago, which no sweep can warn again. Returns the counts {requests_expired, requests_deleted, events_deleted, expiry_warnings_deleted}. Never touches the ledger, waiting or failed events.';
