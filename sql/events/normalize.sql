-- Event normalisation, the one implementation both editions run (DESIGN.md, "Events in SQL"):
-- billing._normalize_event turns a Stripe event of any API shape we read (2023-08-16, and
-- 2025-03-31 "basil" and later) into one flat JSON value the effects read, so no effect ever
-- needs to know which shape an event came in. The golden files under tests/fixtures/events/
-- pin its output for a customer's whole life in each shape (tests/tests/event_normalizer.rs).
--
-- Shape differences hidden here:
-- - periods: subscription.current_period_* before basil, items.data[].current_period_* after;
-- - invoice → subscription: invoice.subscription (and subscription_details.metadata) before,
--   invoice.parent.subscription_details.{subscription,metadata} after;
-- - a line's price: price.id or plan.id before, pricing.price_details.price after;
-- - a line's unit amount: price.unit_amount_decimal or price.unit_amount (the expanded Price)
--   before, pricing.unit_amount_decimal after (null on proration lines: not read there);
-- - a line's proration flag: proration before; after, parent.subscription_item_details.proration
--   or, for a line an invoice item made, parent.invoice_item_details.proration;
-- - a charge's invoice (before basil only) and an invoice's payments (basil: invoice_payment
--   objects, or the invoice retrieved with expand[]=payments);
-- - a credit note's refunds: refund (an id) before basil, refunds[] with amounts after; from
--   2025-05-28.basil its pre_payment_amount and post_payment_amount (type mixed).
--
-- Reading is lenient, because a field of an unexpected JSON type must not make an event that
-- Stripe will redeliver for days fail: a value of another type reads as absent, a reference may
-- be an id or an expanded object, and list elements that are not objects are skipped. What the
-- values mean is decided by the effects, not here.
--
-- Speed: this runs on every delivery, and parsing the body is already most of its cost. The
-- readers below are SQL functions with a RETURN body, which the planner inlines into the one
-- expression that builds each object; values stay JSON (no conversions), nested fields are read
-- by path (no intermediate copies), and lists are read element by element in PL/pgSQL (cheaper
-- than a query per list).

-- The readers keep a value as JSON when it has the type the effects expect, and give NULL
-- otherwise. Each is one expression over its argument, so it costs a field lookup or two and no
-- conversion. A number is not checked for being whole: Stripe sends amounts and times as
-- integers, and an effect that casts anything else to bigint fails with 22P02, stored with the
-- event for the operator.
CREATE OR REPLACE FUNCTION billing._json_string(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(value) = 'string' THEN value END;
COMMENT ON FUNCTION billing._json_string(jsonb) IS 'Internal: a JSON string, NULL for any other JSON type (event normalisation reads leniently).';

CREATE OR REPLACE FUNCTION billing._json_number(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(value) = 'number' THEN value END;
COMMENT ON FUNCTION billing._json_number(jsonb) IS 'Internal: a JSON number, NULL for any other JSON type (event normalisation reads leniently).';

CREATE OR REPLACE FUNCTION billing._json_boolean(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(value) = 'boolean' THEN value END;
COMMENT ON FUNCTION billing._json_boolean(jsonb) IS 'Internal: a JSON boolean, NULL for any other JSON type (event normalisation reads leniently).';

-- A decimal: Stripe sends unit amounts as integers (price.unit_amount) or as decimal strings
-- (unit_amount_decimal, "at most 12 decimal places"); both read as a JSON number, anything else
-- (NULL, a malformed string) as absent.
CREATE OR REPLACE FUNCTION billing._json_decimal(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE pg_catalog.jsonb_typeof(value)
    WHEN 'number' THEN value
    WHEN 'string' THEN CASE WHEN (value #>> '{}') ~ '^-?[0-9]{1,20}(\.[0-9]{1,12})?$'
                            THEN pg_catalog.to_jsonb((value #>> '{}')::numeric) END END;
COMMENT ON FUNCTION billing._json_decimal(jsonb) IS 'Internal: a JSON number, or a decimal string (unit_amount_decimal) as a number; NULL for anything else (event normalisation reads leniently).';

-- Metadata: an object, or an empty one for anything else.
CREATE OR REPLACE FUNCTION billing._json_map(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(value) = 'object' THEN value ELSE '{}'::jsonb END;
COMMENT ON FUNCTION billing._json_map(jsonb) IS 'Internal: a JSON object, or {} for anything else (event normalisation reads leniently).';

-- A Stripe reference ("expandable" field): an id string (empty means none) or an expanded
-- object's id.
CREATE OR REPLACE FUNCTION billing._json_ref(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN NULLIF(CASE pg_catalog.jsonb_typeof(value)
    WHEN 'string' THEN value
    WHEN 'object' THEN billing._json_string(value -> 'id')
END, '""'::jsonb);
COMMENT ON FUNCTION billing._json_ref(jsonb) IS 'Internal: the id a Stripe reference names, whether it is an id or an expanded object, as a JSON string; NULL for none or anything else.';

-- The normalised data of each object type the effects read. Objects are one expression each;
-- lists are read element by element with PL/pgSQL expressions, which costs less than a query.
CREATE OR REPLACE FUNCTION billing._normalize_checkout_session(o jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'id', billing._json_string(o -> 'id'),
    'mode', billing._json_string(o -> 'mode'),
    'status', billing._json_string(o -> 'status'),
    'payment_status', billing._json_string(o -> 'payment_status'),
    'client_reference_id', billing._json_string(o -> 'client_reference_id'),
    'subscription', billing._json_ref(o -> 'subscription'),
    'invoice', billing._json_ref(o -> 'invoice'),
    'payment_intent', billing._json_ref(o -> 'payment_intent'),
    'amount_total', billing._json_number(o -> 'amount_total'),
    'currency', billing._json_string(o -> 'currency'),
    'metadata', billing._json_map(o -> 'metadata'));
COMMENT ON FUNCTION billing._normalize_checkout_session(jsonb) IS 'Internal: the normalised data of a Checkout Session.';

-- Every item in Stripe's order; very old payloads name the price only on the subscription.
CREATE OR REPLACE FUNCTION billing._normalize_subscription_items(o jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    list jsonb := o #> '{items,data}';
    item jsonb;
    items jsonb[] := '{}';
BEGIN
    IF pg_catalog.jsonb_typeof(list) = 'array' THEN
        FOR i IN 0 .. pg_catalog.jsonb_array_length(list) - 1 LOOP
            item := list -> i;
            CONTINUE WHEN pg_catalog.jsonb_typeof(item) <> 'object';
            items := items || pg_catalog.jsonb_build_object(
                'item_id', billing._json_string(item -> 'id'),
                'price_id', coalesce(billing._json_ref(item -> 'price'), billing._json_ref(item -> 'plan')),
                'quantity', billing._json_number(item -> 'quantity'),
                'current_period_start', billing._json_number(item -> 'current_period_start'),
                'current_period_end', billing._json_number(item -> 'current_period_end'));
        END LOOP;
    END IF;
    IF items = '{}' AND billing._json_ref(o -> 'plan') IS NOT NULL THEN
        items := ARRAY[pg_catalog.jsonb_build_object('item_id', NULL, 'price_id', billing._json_ref(o -> 'plan'),
            'quantity', billing._json_number(o -> 'quantity'), 'current_period_start', NULL, 'current_period_end', NULL)];
    END IF;
    RETURN pg_catalog.to_jsonb(items);
END
$$;
COMMENT ON FUNCTION billing._normalize_subscription_items(jsonb) IS 'Internal: the normalised items of a subscription (the item''s id, price, quantity, and the item''s period from basil on).';

CREATE OR REPLACE FUNCTION billing._normalize_subscription(o jsonb, items jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'id', billing._json_string(o -> 'id'),
    'status', billing._json_string(o -> 'status'),
    'items', items,
    -- The subscription's period before basil, its first item's from basil on.
    'current_period_start', coalesce(billing._json_number(o -> 'current_period_start'), items #> '{0,current_period_start}'),
    'current_period_end', coalesce(billing._json_number(o -> 'current_period_end'), items #> '{0,current_period_end}'),
    'cancel_at_period_end', coalesce(billing._json_boolean(o -> 'cancel_at_period_end'), 'false'),
    'cancel_at', billing._json_number(o -> 'cancel_at'),
    'canceled_at', billing._json_number(o -> 'canceled_at'),
    'ended_at', billing._json_number(o -> 'ended_at'),
    'trial_start', billing._json_number(o -> 'trial_start'),
    'trial_end', billing._json_number(o -> 'trial_end'),
    'pause_collection', CASE WHEN pg_catalog.jsonb_typeof(o -> 'pause_collection') = 'object' THEN
        pg_catalog.jsonb_build_object('behavior', billing._json_string(o #> '{pause_collection,behavior}'),
                                      'resumes_at', billing._json_number(o #> '{pause_collection,resumes_at}')) END,
    'metadata', billing._json_map(o -> 'metadata'));
COMMENT ON FUNCTION billing._normalize_subscription(jsonb, jsonb) IS 'Internal: the normalised data of a subscription, given its normalised items.';

-- A Price (price.created, price.updated, a retrieved price): its public fields for the catalog.
CREATE OR REPLACE FUNCTION billing._normalize_price(o jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'unit_amount', coalesce(billing._json_decimal(o -> 'unit_amount_decimal'), billing._json_number(o -> 'unit_amount')),
    'currency', billing._json_string(o -> 'currency'),
    'interval', billing._json_string(o #> '{recurring,interval}'),
    'interval_count', billing._json_number(o #> '{recurring,interval_count}'),
    'active', billing._json_boolean(o -> 'active'));
COMMENT ON FUNCTION billing._normalize_price(jsonb) IS 'Internal: the normalised data of a Price: unit amount (unit_amount_decimal, else unit_amount), currency, recurring interval and count, active.';

-- An invoice's lines (price, amount, quantity, proration flag and period, in either API shape)
-- and what paid it (basil, retrieved with expand[]=payments), as [lines, payments].
CREATE OR REPLACE FUNCTION billing._normalize_invoice_lists(o jsonb) RETURNS jsonb[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    list jsonb := o #> '{lines,data}';
    item jsonb;
    lines jsonb[] := '{}';
    payments jsonb[] := '{}';
BEGIN
    IF pg_catalog.jsonb_typeof(list) = 'array' THEN
        FOR i IN 0 .. pg_catalog.jsonb_array_length(list) - 1 LOOP
            item := list -> i;
            CONTINUE WHEN pg_catalog.jsonb_typeof(item) <> 'object';
            lines := lines || pg_catalog.jsonb_build_object(
                'price_id', coalesce(billing._json_ref(item #> '{pricing,price_details,price}'),
                                     billing._json_ref(item -> 'price'), billing._json_ref(item -> 'plan')),
                'amount', billing._json_number(item -> 'amount'),
                'quantity', billing._json_number(item -> 'quantity'),
                'proration', coalesce(billing._json_boolean(item #> '{parent,subscription_item_details,proration}'),
                                      billing._json_boolean(item #> '{parent,invoice_item_details,proration}'),
                                      billing._json_boolean(item -> 'proration'), 'false'),
                -- The price's unit amount, which a proration line's amount is a share of
                -- (sql/effects/invoice.sql): before basil the expanded line.price is the Price
                -- itself (its unit_amount_decimal or unit_amount, Stripe's OpenAPI); basil's
                -- line.pricing.unit_amount_decimal only on lines that are no proration, since
                -- Stripe sends null there on proration lines (recorded responses: emulator/README.md,
                -- rules table), and the effects then use the catalog's synced price. NULL for a
                -- price without one (tiered, custom unit amounts).
                'unit_amount', coalesce(billing._json_decimal(item #> '{price,unit_amount_decimal}'),
                                        billing._json_number(item #> '{price,unit_amount}'),
                                        CASE WHEN coalesce(billing._json_boolean(item #> '{parent,subscription_item_details,proration}'),
                                                               billing._json_boolean(item #> '{parent,invoice_item_details,proration}'),
                                                               billing._json_boolean(item -> 'proration'), 'false') <> 'true'
                                             THEN billing._json_decimal(item #> '{pricing,unit_amount_decimal}') END),
                'period_start', billing._json_number(item #> '{period,start}'),
                'period_end', billing._json_number(item #> '{period,end}'));
        END LOOP;
    END IF;
    list := o #> '{payments,data}';
    IF pg_catalog.jsonb_typeof(list) = 'array' THEN
        FOR i IN 0 .. pg_catalog.jsonb_array_length(list) - 1 LOOP
            item := list #> ARRAY[i::text, 'payment'];
            CONTINUE WHEN pg_catalog.jsonb_typeof(item) IS DISTINCT FROM 'object';
            payments := payments || pg_catalog.jsonb_build_object(
                'payment_intent', billing._json_ref(item -> 'payment_intent'),
                'charge', billing._json_ref(item -> 'charge'));
        END LOOP;
    END IF;
    RETURN ARRAY[pg_catalog.to_jsonb(lines), pg_catalog.to_jsonb(payments)];
END
$$;
COMMENT ON FUNCTION billing._normalize_invoice_lists(jsonb) IS 'Internal: an invoice''s normalised lines (price, amount, unit amount, quantity, proration flag and period, in either API shape) and payments (basil, retrieved with expand[]=payments), as an array of the two.';

CREATE OR REPLACE FUNCTION billing._normalize_invoice(o jsonb, lists jsonb[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'id', billing._json_string(o -> 'id'),
    'status', billing._json_string(o -> 'status'),
    'billing_reason', billing._json_string(o -> 'billing_reason'),
    'amount_paid', billing._json_number(o -> 'amount_paid'),
    'amount_due', billing._json_number(o -> 'amount_due'),
    'total', billing._json_number(o -> 'total'),
    'currency', billing._json_string(o -> 'currency'),
    'hosted_invoice_url', billing._json_string(o -> 'hosted_invoice_url'),
    'subscription', coalesce(billing._json_ref(o #> '{parent,subscription_details,subscription}'),
                             billing._json_ref(o -> 'subscription')),
    'subscription_metadata', coalesce(
        CASE WHEN pg_catalog.jsonb_typeof(o #> '{parent,subscription_details,metadata}') = 'object'
             THEN o #> '{parent,subscription_details,metadata}' END,
        CASE WHEN pg_catalog.jsonb_typeof(o #> '{subscription_details,metadata}') = 'object'
             THEN o #> '{subscription_details,metadata}' END,
        '{}'::jsonb),
    -- Before basil only; from basil on an invoice's payments are objects of their own.
    'payment_intent', billing._json_ref(o -> 'payment_intent'),
    'charge', billing._json_ref(o -> 'charge'),
    'payments', lists[2],
    'lines', lists[1],
    -- Stripe embeds one page of lines; true when the invoice has more than it carries.
    'lines_has_more', coalesce(billing._json_boolean(o #> '{lines,has_more}'), 'false'));
COMMENT ON FUNCTION billing._normalize_invoice(jsonb, jsonb[]) IS 'Internal: the normalised data of an invoice, given its normalised lines and payments; lines_has_more says the lines are one page of more.';

CREATE OR REPLACE FUNCTION billing._normalize_customer(o jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'id', billing._json_string(o -> 'id'),
    'deleted', coalesce(billing._json_boolean(o -> 'deleted'), 'false'),
    'email', billing._json_string(o -> 'email'),
    'metadata', billing._json_map(o -> 'metadata'));
COMMENT ON FUNCTION billing._normalize_customer(jsonb) IS 'Internal: the normalised data of a customer.';

-- The refunds a credit note made: refunds[] with amounts from basil on, a single refund id before.
CREATE OR REPLACE FUNCTION billing._normalize_credit_note_refunds(o jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    list jsonb := o -> 'refunds';
    item jsonb;
    refunds jsonb[] := '{}';
BEGIN
    IF pg_catalog.jsonb_typeof(list) = 'array' THEN
        FOR i IN 0 .. pg_catalog.jsonb_array_length(list) - 1 LOOP
            item := list -> i;
            CONTINUE WHEN pg_catalog.jsonb_typeof(item) <> 'object';
            refunds := refunds || pg_catalog.jsonb_build_object('refund', billing._json_ref(item -> 'refund'),
                                                                'amount_refunded', billing._json_number(item -> 'amount_refunded'));
        END LOOP;
    END IF;
    IF refunds = '{}' AND billing._json_ref(o -> 'refund') IS NOT NULL THEN
        refunds := ARRAY[pg_catalog.jsonb_build_object('refund', billing._json_ref(o -> 'refund'), 'amount_refunded', NULL)];
    END IF;
    RETURN pg_catalog.to_jsonb(refunds);
END
$$;
COMMENT ON FUNCTION billing._normalize_credit_note_refunds(jsonb) IS 'Internal: the refunds of a credit note (refunds[] from basil on, refund before).';

-- The money behind purchases: charges, refunds, disputes, credit notes, invoice payments.
CREATE OR REPLACE FUNCTION billing._normalize_money(object_type text, o jsonb, refunds jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE object_type
    WHEN 'charge' THEN pg_catalog.jsonb_build_object(
        'id', billing._json_string(o -> 'id'),
        'payment_intent', billing._json_ref(o -> 'payment_intent'),
        'invoice', billing._json_ref(o -> 'invoice'),
        'amount', billing._json_number(o -> 'amount'),
        'amount_refunded', billing._json_number(o -> 'amount_refunded'),
        'currency', billing._json_string(o -> 'currency'))
    WHEN 'refund' THEN pg_catalog.jsonb_build_object(
        'id', billing._json_string(o -> 'id'),
        'charge', billing._json_ref(o -> 'charge'),
        'payment_intent', billing._json_ref(o -> 'payment_intent'),
        'amount', billing._json_number(o -> 'amount'),
        'currency', billing._json_string(o -> 'currency'),
        'status', billing._json_string(o -> 'status'))
    WHEN 'dispute' THEN pg_catalog.jsonb_build_object(
        'id', billing._json_string(o -> 'id'),
        'charge', billing._json_ref(o -> 'charge'),
        'payment_intent', billing._json_ref(o -> 'payment_intent'),
        'amount', billing._json_number(o -> 'amount'),
        'currency', billing._json_string(o -> 'currency'),
        'status', billing._json_string(o -> 'status'))
    WHEN 'credit_note' THEN pg_catalog.jsonb_build_object(
        'id', billing._json_string(o -> 'id'),
        'invoice', billing._json_ref(o -> 'invoice'),
        'status', billing._json_string(o -> 'status'),
        'type', billing._json_string(o -> 'type'),
        'total', billing._json_number(o -> 'total'),
        'out_of_band_amount', billing._json_number(o -> 'out_of_band_amount'),
        -- From 2025-05-28.basil a credit note can be mixed: pre_payment_amount lowered what was
        -- due, post_payment_amount was refunded, credited or credited outside Stripe.
        'pre_payment_amount', billing._json_number(o -> 'pre_payment_amount'),
        'post_payment_amount', billing._json_number(o -> 'post_payment_amount'),
        'currency', billing._json_string(o -> 'currency'),
        'refunds', refunds)
    WHEN 'invoice_payment' THEN pg_catalog.jsonb_build_object(
        'id', billing._json_string(o -> 'id'),
        'invoice', billing._json_ref(o -> 'invoice'),
        'status', billing._json_string(o -> 'status'),
        'amount_paid', billing._json_number(o -> 'amount_paid'),
        'payment_intent', billing._json_ref(o #> '{payment,payment_intent}'),
        'charge', billing._json_ref(o #> '{payment,charge}'))
END;
COMMENT ON FUNCTION billing._normalize_money(text, jsonb, jsonb) IS 'Internal: the normalised data of a charge, refund, dispute, credit note (given its normalised refunds) or invoice payment.';

-- A PaymentIntent: what an auto top-up charged (sql/topups/functions.sql). The error of a failed
-- attempt is read flat, as its code and message are all the effect tells the user.
CREATE OR REPLACE FUNCTION billing._normalize_payment_intent(o jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'id', billing._json_string(o -> 'id'),
    'status', billing._json_string(o -> 'status'),
    'amount', billing._json_number(o -> 'amount'),
    'amount_received', billing._json_number(o -> 'amount_received'),
    'currency', billing._json_string(o -> 'currency'),
    'payment_method', billing._json_ref(o -> 'payment_method'),
    'latest_charge', billing._json_ref(o -> 'latest_charge'),
    'error_code', billing._json_string(o #> '{last_payment_error,code}'),
    'error_message', billing._json_string(o #> '{last_payment_error,message}'),
    'metadata', billing._json_map(o -> 'metadata'));
COMMENT ON FUNCTION billing._normalize_payment_intent(jsonb) IS 'Internal: the normalised data of a PaymentIntent (an auto top-up''s charge).';

-- Raises the error for a body that is JSON but not a Stripe event.
CREATE OR REPLACE FUNCTION billing._not_an_event(reason text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION 'the payload is not a Stripe event: %', reason
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Stripe events have object "event", an evt_ id, a type, created and data.object.';
END
$$;
COMMENT ON FUNCTION billing._not_an_event(text) IS 'Internal: raises 22023 for a body that is JSON but not a Stripe event, saying what is missing.';

CREATE OR REPLACE FUNCTION billing._normalize_event(payload text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    event jsonb;
    object jsonb;
    object_type text;
    normalized jsonb;
BEGIN
    BEGIN
        event := payload::jsonb;
    EXCEPTION WHEN untranslatable_character THEN
        -- jsonb cannot hold the escape \u0000, which json text may carry in a string nobody
        -- reads (a customer-entered name, say): read the event without it rather than refuse it.
        BEGIN
            event := pg_catalog.replace(payload, '\u0000', '')::jsonb;
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'the webhook payload is not valid JSON'
                USING ERRCODE = 'invalid_json_text', DETAIL = SQLERRM,
                      HINT = 'The body verified, so the sender holds the secret: check what it sends.';
        END;
    WHEN data_exception THEN
        RAISE EXCEPTION 'the webhook payload is not valid JSON'
            USING ERRCODE = 'invalid_json_text', DETAIL = SQLERRM,
                  HINT = 'The body verified, so the sender holds the secret: check what it sends.';
    END;
    -- Every delivery passes these checks, so they are one expression; only a body that fails
    -- them is checked again, one by one, to say why.
    IF NOT coalesce(pg_catalog.jsonb_typeof(event) = 'object' AND event -> 'object' = '"event"'
                    AND pg_catalog.jsonb_typeof(event -> 'id') = 'string' AND (event ->> 'id') ~ '^evt_[A-Za-z0-9_]+$'
                    AND pg_catalog.octet_length(event ->> 'id') <= 255
                    AND pg_catalog.jsonb_typeof(event -> 'type') = 'string'
                    AND pg_catalog.octet_length(event ->> 'type') BETWEEN 1 AND 255
                    AND pg_catalog.jsonb_typeof(event -> 'created') = 'number'
                    AND pg_catalog.scale((event -> 'created')::numeric) = 0
                    AND abs((event -> 'created')::numeric) <= 9223372036854775807, false) THEN
        IF pg_catalog.jsonb_typeof(event) <> 'object' THEN
            PERFORM billing._not_an_event('it is not a JSON object');
        END IF;
        IF event -> 'object' IS DISTINCT FROM '"event"' THEN
            PERFORM billing._not_an_event('its "object" is not "event"');
        END IF;
        IF pg_catalog.jsonb_typeof(event -> 'id') IS DISTINCT FROM 'string' OR (event ->> 'id') !~ '^evt_[A-Za-z0-9_]+$'
           OR pg_catalog.octet_length(event ->> 'id') > 255 THEN
            PERFORM billing._not_an_event('it has no valid evt_ id');
        END IF;
        IF pg_catalog.jsonb_typeof(event -> 'type') IS DISTINCT FROM 'string' OR event ->> 'type' = ''
           OR pg_catalog.octet_length(event ->> 'type') > 255 THEN
            PERFORM billing._not_an_event('it has no type');
        END IF;
        -- The one number that must be whole: event times order everything (DESIGN.md, "Ordering").
        IF pg_catalog.jsonb_typeof(event -> 'created') IS DISTINCT FROM 'number'
           OR pg_catalog.scale((event -> 'created')::numeric) <> 0
           OR abs((event -> 'created')::numeric) > 9223372036854775807 THEN
            PERFORM billing._not_an_event('it has no integer created time');
        END IF;
    END IF;
    object := event #> '{data,object}';
    IF pg_catalog.jsonb_typeof(object) IS DISTINCT FROM 'object' THEN
        PERFORM billing._not_an_event('it has no data.object');
    END IF;
    object_type := object ->> 'object';
    normalized := CASE object_type
        WHEN 'invoice' THEN billing._normalize_invoice(object, billing._normalize_invoice_lists(object))
        WHEN 'subscription' THEN billing._normalize_subscription(object, billing._normalize_subscription_items(object))
        WHEN 'checkout.session' THEN billing._normalize_checkout_session(object)
        WHEN 'customer' THEN billing._normalize_customer(object)
        WHEN 'credit_note' THEN billing._normalize_money(object_type, object, billing._normalize_credit_note_refunds(object))
        WHEN 'charge' THEN billing._normalize_money(object_type, object, NULL)
        WHEN 'refund' THEN billing._normalize_money(object_type, object, NULL)
        WHEN 'dispute' THEN billing._normalize_money(object_type, object, NULL)
        WHEN 'invoice_payment' THEN billing._normalize_money(object_type, object, NULL)
        WHEN 'price' THEN billing._normalize_price(object)
        WHEN 'payment_intent' THEN billing._normalize_payment_intent(object)
        ELSE '{}'::jsonb
    END;
    RETURN pg_catalog.jsonb_build_object(
        'id', event -> 'id',
        'type', event -> 'type',
        'created', event -> 'created',
        'livemode', coalesce(billing._json_boolean(event -> 'livemode'), 'false'),
        'api_version', billing._json_string(event -> 'api_version'),
        'object_type', billing._json_string(object -> 'object'),
        'object_id', billing._json_string(object -> 'id'),
        -- The Stripe customer the object belongs to (a customer object's is its own id); disputes
        -- and invoice payments are found through their charge or invoice instead.
        'customer', CASE WHEN object_type = 'customer' THEN billing._json_string(object -> 'id')
                         WHEN object_type IN ('checkout.session', 'subscription', 'invoice', 'charge', 'refund', 'credit_note',
                                              'payment_intent')
                         THEN billing._json_ref(object -> 'customer') END,
        'data', normalized);
END
$$;
COMMENT ON FUNCTION billing._normalize_event(text) IS 'Internal: the API-version-independent view of a Stripe event that the effects read (the 2023-08-16 and the basil shapes alike); raises 22032 for a body that is not JSON and 22023 for JSON that is not a Stripe event.';
