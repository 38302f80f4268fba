-- The pure-SQL edition's twin of extension/src/event.rs: billing._normalize_event, with the
-- signature, volatility and errors pgrx generates for the Rust function, reading events the way
-- core/src/event does (DESIGN.md, "Events in SQL" and "Two editions"). Its comment is the
-- extension's (sql/security/finalize.sql). The helpers mirror core/src/event/input.rs: a field
-- of an unexpected JSON type reads as absent ("lenient"), and a reference may be an id or an
-- expanded object. tests/tests/editions_events.rs compares both editions on every fixture event.

-- Lenient<Cow<str>>: the string, or NULL for any other JSON type.
CREATE OR REPLACE FUNCTION billing._lenient_text(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(value) = 'string' THEN value #>> '{}' END;
COMMENT ON FUNCTION billing._lenient_text(jsonb) IS 'Internal (pure-SQL edition): a JSON string as text, NULL for anything else.';

-- Lenient<i64>: an integer that fits 64 bits; a fraction, or a number too large, reads as absent.
CREATE OR REPLACE FUNCTION billing._lenient_int(value jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(value) = 'number' AND (value #>> '{}') ~ '^-?[0-9]+$'
                 AND value::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
            THEN value::numeric::bigint END;
COMMENT ON FUNCTION billing._lenient_int(jsonb) IS 'Internal (pure-SQL edition): a JSON integer that fits a bigint, NULL for anything else.';

-- Lenient<bool>.
CREATE OR REPLACE FUNCTION billing._lenient_bool(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(value) = 'boolean' THEN value::boolean END;
COMMENT ON FUNCTION billing._lenient_bool(jsonb) IS 'Internal (pure-SQL edition): a JSON boolean, NULL for anything else.';

-- Metadata: an object, or an empty one for anything else.
CREATE OR REPLACE FUNCTION billing._lenient_map(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(value) = 'object' THEN value ELSE '{}'::jsonb END;
COMMENT ON FUNCTION billing._lenient_map(jsonb) IS 'Internal (pure-SQL edition): a JSON object, or {} for anything else.';

-- Expandable: an id string (empty means none), or an expanded object's "id".
CREATE OR REPLACE FUNCTION billing._reference(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE pg_catalog.jsonb_typeof(value)
    WHEN 'string' THEN nullif(value #>> '{}', '')
    WHEN 'object' THEN billing._lenient_text(value -> 'id')
END;
COMMENT ON FUNCTION billing._reference(jsonb) IS 'Internal (pure-SQL edition): the id a Stripe reference names, whether it is an id or an expanded object; NULL for none.';

-- An expanded object whose "id" is neither a string nor null cannot be read at all, and neither
-- can whatever holds it (the extension's reader fails there instead of reading it as absent).
CREATE OR REPLACE FUNCTION billing._reference_readable(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_typeof(value) IS DISTINCT FROM 'object'
    OR coalesce(pg_catalog.jsonb_typeof(value -> 'id'), 'null') IN ('string', 'null');
COMMENT ON FUNCTION billing._reference_readable(jsonb) IS 'Internal (pure-SQL edition): false for an expanded object whose id is neither a string nor null, which makes what holds it unreadable.';

-- The twins loop over arrays with PL/pgSQL statements rather than querying them: each query a
-- function runs costs several times what reading a field does.

-- The elements of a JSON array when every one is an object whose references named in refs read;
-- otherwise none (the extension reads a list whole or not at all). A Stripe list passes its
-- "data"; anything that is not an array has no elements.
CREATE OR REPLACE FUNCTION billing._readable_items(items jsonb, refs text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    i integer;
BEGIN
    IF pg_catalog.jsonb_typeof(items) IS DISTINCT FROM 'array' THEN
        RETURN '[]'::jsonb;
    END IF;
    FOR i IN 0 .. pg_catalog.jsonb_array_length(items) - 1 LOOP
        IF billing._readable_object(items -> i, refs) IS NULL THEN
            RETURN '[]'::jsonb;
        END IF;
    END LOOP;
    RETURN items;
END
$$;
COMMENT ON FUNCTION billing._readable_items(jsonb, text[]) IS 'Internal (pure-SQL edition): the elements of a JSON array if all of them can be read, else none.';

-- A nested object whose references all read, else NULL (the extension drops it whole).
CREATE OR REPLACE FUNCTION billing._readable_object(value jsonb, refs text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    name text;
BEGIN
    IF pg_catalog.jsonb_typeof(value) IS DISTINCT FROM 'object' THEN
        RETURN NULL;
    END IF;
    FOREACH name IN ARRAY refs LOOP
        IF NOT billing._reference_readable(value -> name) THEN
            RETURN NULL;
        END IF;
    END LOOP;
    RETURN value;
END
$$;
COMMENT ON FUNCTION billing._readable_object(jsonb, text[]) IS 'Internal (pure-SQL edition): a JSON object if the references named in refs can be read, else NULL.';

CREATE OR REPLACE FUNCTION billing._normalize_checkout_session(o jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'id', billing._lenient_text(o -> 'id'),
    'mode', billing._lenient_text(o -> 'mode'),
    'status', billing._lenient_text(o -> 'status'),
    'payment_status', billing._lenient_text(o -> 'payment_status'),
    'client_reference_id', billing._lenient_text(o -> 'client_reference_id'),
    'subscription', billing._reference(o -> 'subscription'),
    'invoice', billing._reference(o -> 'invoice'),
    'payment_intent', billing._reference(o -> 'payment_intent'),
    'amount_total', billing._lenient_int(o -> 'amount_total'),
    'currency', billing._lenient_text(o -> 'currency'),
    'metadata', billing._lenient_map(o -> 'metadata'));
COMMENT ON FUNCTION billing._normalize_checkout_session(jsonb) IS 'Internal (pure-SQL edition): the normalised data of a Checkout Session, as core/src/event reads it.';

CREATE OR REPLACE FUNCTION billing._normalize_subscription(o jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    list jsonb;
    item jsonb;
    items jsonb := '[]'::jsonb;
    i integer;
BEGIN
    list := billing._readable_items(o -> 'items' -> 'data', '{price,plan}');
    FOR i IN 0 .. pg_catalog.jsonb_array_length(list) - 1 LOOP
        item := list -> i;
        items := items || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'price_id', coalesce(billing._reference(item -> 'price'), billing._reference(item -> 'plan')),
            'quantity', billing._lenient_int(item -> 'quantity'),
            'current_period_start', billing._lenient_int(item -> 'current_period_start'),
            'current_period_end', billing._lenient_int(item -> 'current_period_end')));
    END LOOP;
    -- Very old payloads name the price only on the subscription (plan, quantity).
    IF items = '[]'::jsonb AND billing._reference(o -> 'plan') IS NOT NULL THEN
        items := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'price_id', billing._reference(o -> 'plan'), 'quantity', billing._lenient_int(o -> 'quantity'),
            'current_period_start', NULL, 'current_period_end', NULL));
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'id', billing._lenient_text(o -> 'id'),
        'status', billing._lenient_text(o -> 'status'),
        'items', items,
        'current_period_start', coalesce(billing._lenient_int(o -> 'current_period_start'),
                                                    (items -> 0 ->> 'current_period_start')::bigint),
        'current_period_end', coalesce(billing._lenient_int(o -> 'current_period_end'),
                                                  (items -> 0 ->> 'current_period_end')::bigint),
        'cancel_at_period_end', coalesce(billing._lenient_bool(o -> 'cancel_at_period_end'), false),
        'cancel_at', billing._lenient_int(o -> 'cancel_at'),
        'canceled_at', billing._lenient_int(o -> 'canceled_at'),
        'ended_at', billing._lenient_int(o -> 'ended_at'),
        'trial_start', billing._lenient_int(o -> 'trial_start'),
        'trial_end', billing._lenient_int(o -> 'trial_end'),
        'pause_collection', CASE WHEN pg_catalog.jsonb_typeof(o -> 'pause_collection') = 'object' THEN
            pg_catalog.jsonb_build_object('behavior', billing._lenient_text(o -> 'pause_collection' -> 'behavior'),
                                          'resumes_at', billing._lenient_int(o -> 'pause_collection' -> 'resumes_at')) END,
        'metadata', billing._lenient_map(o -> 'metadata'));
END
$$;
COMMENT ON FUNCTION billing._normalize_subscription(jsonb) IS 'Internal (pure-SQL edition): the normalised data of a subscription (periods from the subscription before basil, from its first item after), as core/src/event reads it.';

CREATE OR REPLACE FUNCTION billing._normalize_invoice(o jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    -- subscription_details under parent (basil and later) or on the invoice (before); either
    -- is dropped whole when its subscription reference cannot be read.
    from_parent jsonb := o -> 'parent' -> 'subscription_details';
    legacy jsonb := o -> 'subscription_details';
    list jsonb;
    item jsonb;
    payments jsonb := '[]'::jsonb;
    lines jsonb := '[]'::jsonb;
    i integer;
BEGIN
    from_parent := billing._readable_object(from_parent, '{subscription}');
    legacy := billing._readable_object(legacy, '{subscription}');
    -- What paid it (basil, retrieved with expand[]=payments); a payment whose references do not
    -- read is left out.
    list := billing._readable_items(o -> 'payments' -> 'data', '{invoice}');
    FOR i IN 0 .. pg_catalog.jsonb_array_length(list) - 1 LOOP
        item := billing._readable_object(list -> i -> 'payment', '{payment_intent,charge}');
        CONTINUE WHEN item IS NULL;
        payments := payments || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'payment_intent', billing._reference(item -> 'payment_intent'),
            'charge', billing._reference(item -> 'charge')));
    END LOOP;
    list := billing._readable_items(o -> 'lines' -> 'data', '{price,plan}');
    FOR i IN 0 .. pg_catalog.jsonb_array_length(list) - 1 LOOP
        item := list -> i;
        lines := lines || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'price_id', coalesce(billing._reference(item -> 'pricing' -> 'price_details' -> 'price'),
                                 billing._reference(item -> 'price'), billing._reference(item -> 'plan')),
            'amount', billing._lenient_int(item -> 'amount'),
            'quantity', billing._lenient_int(item -> 'quantity'),
            'proration', coalesce(billing._lenient_bool(item -> 'parent' -> 'subscription_item_details' -> 'proration'),
                                  billing._lenient_bool(item -> 'proration'), false),
            'period_start', billing._lenient_int(item -> 'period' -> 'start'),
            'period_end', billing._lenient_int(item -> 'period' -> 'end')));
    END LOOP;
    RETURN pg_catalog.jsonb_build_object(
        'id', billing._lenient_text(o -> 'id'),
        'status', billing._lenient_text(o -> 'status'),
        'billing_reason', billing._lenient_text(o -> 'billing_reason'),
        'amount_paid', billing._lenient_int(o -> 'amount_paid'),
        'amount_due', billing._lenient_int(o -> 'amount_due'),
        'total', billing._lenient_int(o -> 'total'),
        'currency', billing._lenient_text(o -> 'currency'),
        'hosted_invoice_url', billing._lenient_text(o -> 'hosted_invoice_url'),
        'subscription', coalesce(billing._reference(from_parent -> 'subscription'), billing._reference(o -> 'subscription')),
        'subscription_metadata', coalesce(
            CASE WHEN pg_catalog.jsonb_typeof(from_parent -> 'metadata') = 'object' THEN from_parent -> 'metadata' END,
            CASE WHEN pg_catalog.jsonb_typeof(legacy -> 'metadata') = 'object' THEN legacy -> 'metadata' END,
            '{}'::jsonb),
        'payment_intent', billing._reference(o -> 'payment_intent'),
        'charge', billing._reference(o -> 'charge'),
        'payments', payments,
        'lines', lines);
END
$$;
COMMENT ON FUNCTION billing._normalize_invoice(jsonb) IS 'Internal (pure-SQL edition): the normalised data of an invoice (its subscription, line prices and proration flags in either API shape, and what paid it), as core/src/event reads it.';

CREATE OR REPLACE FUNCTION billing._normalize_customer(o jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'id', billing._lenient_text(o -> 'id'),
    'deleted', coalesce(billing._lenient_bool(o -> 'deleted'), false),
    'email', billing._lenient_text(o -> 'email'),
    'metadata', billing._lenient_map(o -> 'metadata'));
COMMENT ON FUNCTION billing._normalize_customer(jsonb) IS 'Internal (pure-SQL edition): the normalised data of a customer, as core/src/event reads it.';

-- The refunds a credit note made: refunds[] with amounts from basil on, a single refund id before.
CREATE OR REPLACE FUNCTION billing._credit_note_refunds(o jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    list jsonb := billing._readable_items(o -> 'refunds', '{refund}');
    refunds jsonb := '[]'::jsonb;
    i integer;
BEGIN
    FOR i IN 0 .. pg_catalog.jsonb_array_length(list) - 1 LOOP
        refunds := refunds || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'refund', billing._reference(list -> i -> 'refund'),
            'amount_refunded', billing._lenient_int(list -> i -> 'amount_refunded')));
    END LOOP;
    IF refunds = '[]'::jsonb AND billing._reference(o -> 'refund') IS NOT NULL THEN
        refunds := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'refund', billing._reference(o -> 'refund'), 'amount_refunded', NULL));
    END IF;
    RETURN refunds;
END
$$;
COMMENT ON FUNCTION billing._credit_note_refunds(jsonb) IS 'Internal (pure-SQL edition): the refunds of a credit note (refunds[] from basil on, refund before), as core/src/event reads them.';

-- The money behind purchases (core/src/event/money.rs).
CREATE OR REPLACE FUNCTION billing._normalize_money(kind text, o jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE kind
    WHEN 'charge' THEN pg_catalog.jsonb_build_object(
        'id', billing._lenient_text(o -> 'id'),
        'payment_intent', billing._reference(o -> 'payment_intent'),
        'invoice', billing._reference(o -> 'invoice'),
        'amount', billing._lenient_int(o -> 'amount'),
        'amount_refunded', billing._lenient_int(o -> 'amount_refunded'),
        'currency', billing._lenient_text(o -> 'currency'))
    WHEN 'refund' THEN pg_catalog.jsonb_build_object(
        'id', billing._lenient_text(o -> 'id'),
        'charge', billing._reference(o -> 'charge'),
        'payment_intent', billing._reference(o -> 'payment_intent'),
        'amount', billing._lenient_int(o -> 'amount'),
        'currency', billing._lenient_text(o -> 'currency'),
        'status', billing._lenient_text(o -> 'status'))
    WHEN 'dispute' THEN pg_catalog.jsonb_build_object(
        'id', billing._lenient_text(o -> 'id'),
        'charge', billing._reference(o -> 'charge'),
        'payment_intent', billing._reference(o -> 'payment_intent'),
        'amount', billing._lenient_int(o -> 'amount'),
        'currency', billing._lenient_text(o -> 'currency'),
        'status', billing._lenient_text(o -> 'status'))
    WHEN 'credit_note' THEN pg_catalog.jsonb_build_object(
        'id', billing._lenient_text(o -> 'id'),
        'invoice', billing._reference(o -> 'invoice'),
        'status', billing._lenient_text(o -> 'status'),
        'type', billing._lenient_text(o -> 'type'),
        'total', billing._lenient_int(o -> 'total'),
        'out_of_band_amount', billing._lenient_int(o -> 'out_of_band_amount'),
        'currency', billing._lenient_text(o -> 'currency'),
        'refunds', billing._credit_note_refunds(o))
    WHEN 'invoice_payment' THEN pg_catalog.jsonb_build_object(
        'id', billing._lenient_text(o -> 'id'),
        'invoice', billing._reference(o -> 'invoice'),
        'status', billing._lenient_text(o -> 'status'),
        'amount_paid', billing._lenient_int(o -> 'amount_paid'),
        'payment_intent', billing._reference(billing._readable_object(o -> 'payment', '{payment_intent,charge}') -> 'payment_intent'),
        'charge', billing._reference(billing._readable_object(o -> 'payment', '{payment_intent,charge}') -> 'charge'))
END;
COMMENT ON FUNCTION billing._normalize_money(text, jsonb) IS 'Internal (pure-SQL edition): the normalised data of a charge, refund, dispute, credit note or invoice payment, as core/src/event reads it.';

CREATE OR REPLACE FUNCTION billing._normalize_event(payload text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    event jsonb;
    data jsonb;
    object jsonb;
    kind text;
    refs text[];
    customer text;
    normalized jsonb;
BEGIN
    BEGIN
        event := payload::jsonb;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'the webhook payload is not valid JSON'
            USING ERRCODE = 'invalid_json_text', DETAIL = SQLERRM,
                  HINT = 'The body verified, so the sender holds the secret: check what it sends.';
    END;
    IF pg_catalog.jsonb_typeof(event) <> 'object' THEN
        PERFORM billing._not_an_event('it is not a JSON object');
    END IF;
    -- The extension reads "data" as an object, absent or null meaning no data.object. Like any
    -- serde reader it also takes a one-element array for the object's one field, calls a longer
    -- one a syntax error, and any other JSON type makes the body unreadable; it reports these
    -- before anything else.
    data := event -> 'data';
    IF pg_catalog.jsonb_typeof(data) = 'array' AND pg_catalog.jsonb_array_length(data) > 1 THEN
        RAISE EXCEPTION 'the webhook payload is not valid JSON'
            USING ERRCODE = 'invalid_json_text', DETAIL = 'data is an array longer than the one field it is read into',
                  HINT = 'The body verified, so the sender holds the secret: check what it sends.';
    END IF;
    IF pg_catalog.jsonb_typeof(data) = 'array' AND pg_catalog.jsonb_array_length(data) = 1 THEN
        data := pg_catalog.jsonb_build_object('object', data -> 0);
    END IF;
    IF pg_catalog.jsonb_typeof(data) NOT IN ('object', 'null') THEN
        PERFORM billing._not_an_event('it is not a JSON object');
    END IF;
    object := data -> 'object';
    IF billing._lenient_text(event -> 'object') IS DISTINCT FROM 'event' THEN
        PERFORM billing._not_an_event('its "object" is not "event"');
    END IF;
    IF billing._lenient_text(event -> 'id') !~ '^evt_[A-Za-z0-9_]+$' OR pg_catalog.octet_length(event ->> 'id') > 255
       OR billing._lenient_text(event -> 'id') IS NULL THEN
        PERFORM billing._not_an_event('it has no valid evt_ id');
    END IF;
    IF coalesce(billing._lenient_text(event -> 'type'), '') = '' OR pg_catalog.octet_length(event ->> 'type') > 255 THEN
        PERFORM billing._not_an_event('it has no type');
    END IF;
    IF billing._lenient_int(event -> 'created') IS NULL THEN
        PERFORM billing._not_an_event('it has no integer created time');
    END IF;
    IF pg_catalog.jsonb_typeof(object) IS DISTINCT FROM 'object' THEN
        PERFORM billing._not_an_event('it has no data.object');
    END IF;
    kind := billing._lenient_text(object -> 'object');
    -- The references each object type reads; one that cannot be read makes the object unreadable.
    refs := CASE kind WHEN 'checkout.session' THEN '{customer,subscription,invoice,payment_intent}'
                      WHEN 'subscription' THEN '{customer,plan}'
                      WHEN 'invoice' THEN '{customer,subscription,payment_intent,charge}'
                      WHEN 'charge' THEN '{customer,payment_intent,invoice}'
                      WHEN 'refund' THEN '{customer,charge,payment_intent}'
                      WHEN 'dispute' THEN '{charge,payment_intent}'
                      WHEN 'credit_note' THEN '{customer,invoice,refund}'
                      WHEN 'invoice_payment' THEN '{invoice}' END;
    IF refs IS NOT NULL AND billing._readable_object(object, refs) IS NULL THEN
        PERFORM billing._not_an_event('its data.object cannot be read');
    END IF;
    CASE kind
        WHEN 'checkout.session' THEN
            customer := billing._reference(object -> 'customer');
            normalized := billing._normalize_checkout_session(object);
        WHEN 'subscription' THEN
            customer := billing._reference(object -> 'customer');
            normalized := billing._normalize_subscription(object);
        WHEN 'invoice' THEN
            customer := billing._reference(object -> 'customer');
            normalized := billing._normalize_invoice(object);
        WHEN 'customer' THEN
            customer := billing._lenient_text(object -> 'id');
            normalized := billing._normalize_customer(object);
        WHEN 'charge', 'refund', 'credit_note' THEN
            customer := billing._reference(object -> 'customer');
            normalized := billing._normalize_money(kind, object);
        WHEN 'dispute', 'invoice_payment' THEN
            normalized := billing._normalize_money(kind, object);
        ELSE
            normalized := '{}'::jsonb;
    END CASE;
    RETURN pg_catalog.jsonb_build_object(
        'id', event ->> 'id',
        'type', event ->> 'type',
        'created', billing._lenient_int(event -> 'created'),
        'livemode', coalesce(billing._lenient_bool(event -> 'livemode'), false),
        'api_version', billing._lenient_text(event -> 'api_version'),
        'object_type', kind,
        'object_id', billing._lenient_text(object -> 'id'),
        'customer', customer,
        'data', normalized);
END
$$;

-- Raises the extension's error for a body that is JSON but not a Stripe event.
CREATE OR REPLACE FUNCTION billing._not_an_event(reason text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION 'the payload is not a Stripe event: %', reason
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Stripe events have object "event", an evt_ id, a type, created and data.object.';
END
$$;
COMMENT ON FUNCTION billing._not_an_event(text) IS 'Internal (pure-SQL edition): raises 22023 for a body that is JSON but not a Stripe event, with the extension''s message and hint.';
