-- Effects of what Stripe reports about the money behind purchases: charge.*, refund.*,
-- charge.dispute.*, credit_note.* and invoice_payment.* events, and invoices retrieved with their
-- payments. Each records the report (the newest, or the further status, wins), learns which
-- purchase a payment paid, and settles that purchase (sql/payments/functions.sql). A report that
-- arrives before its purchase is settled when the purchase is; only a basil refund or dispute of a
-- payment nothing links asks the worker to look that payment up (_ask_payment_lookup).

-- How far along a status is (a further status replaces the row whatever the order of arrival).
CREATE OR REPLACE FUNCTION billing._money_status_rank(object_type text, status text) RETURNS smallint
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE object_type
        WHEN 'refund' THEN CASE WHEN status IN ('failed', 'canceled') THEN 3 WHEN status = 'succeeded' THEN 2 ELSE 1 END
        WHEN 'dispute' THEN CASE WHEN status IN ('won', 'lost', 'warning_closed', 'prevented') THEN 3
                                 WHEN status IN ('needs_response', 'under_review') THEN 2 ELSE 1 END
        WHEN 'credit_note' THEN CASE WHEN status = 'void' THEN 2 ELSE 1 END
        ELSE 1 END::smallint
$$;
COMMENT ON FUNCTION billing._money_status_rank(text, text) IS 'Internal: the rank of a refund, dispute or credit note status; final statuses outrank the others.';

CREATE OR REPLACE FUNCTION billing._apply_charge(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    c jsonb := ev -> 'data';
BEGIN
    PERFORM billing._lock_payment(coalesce(c ->> 'payment_intent', c ->> 'id'));
    INSERT INTO billing.stripe_charges AS s (id, payment_intent, invoice, amount, amount_refunded, currency, reported_at)
    VALUES (c ->> 'id', c ->> 'payment_intent', c ->> 'invoice', (c ->> 'amount')::bigint,
            coalesce((c ->> 'amount_refunded')::bigint, 0), c ->> 'currency', billing._unix_time(ev -> 'created'))
    ON CONFLICT (id) DO UPDATE
    SET payment_intent = coalesce(s.payment_intent, excluded.payment_intent),
        invoice = coalesce(s.invoice, excluded.invoice),
        amount = coalesce(s.amount, excluded.amount),
        -- A snapshot: the newest report's total, not the largest ever (a refund can fail). Two
        -- reports of one second cannot be ordered; the larger counts until a refund says otherwise.
        amount_refunded = CASE WHEN (excluded.reported_at, excluded.amount_refunded) > (s.reported_at, s.amount_refunded)
                               THEN excluded.amount_refunded ELSE s.amount_refunded END,
        reported_at = greatest(s.reported_at, excluded.reported_at),
        updated_at = now();
    -- Before basil a charge names its invoice; a charge of a paid session is linked through its
    -- PaymentIntent already.
    PERFORM billing._link_payment(c ->> 'id', c ->> 'invoice');
    PERFORM billing._link_payment(c ->> 'payment_intent', c ->> 'invoice');
    PERFORM billing._settle_payment(c ->> 'id', c ->> 'payment_intent',
        format('charge %s: %s of %s refunded', c ->> 'id', coalesce(c ->> 'amount_refunded', '0'), c ->> 'amount'),
        ev ->> 'id');
END
$$;
COMMENT ON FUNCTION billing._apply_charge(jsonb) IS 'Internal: charge.* events: records the charge''s refunded total as of the newest report and its invoice (before basil), then settles the purchases it paid.';

CREATE OR REPLACE FUNCTION billing._apply_refund(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    r jsonb := ev -> 'data';
    rank smallint := billing._money_status_rank('refund', r ->> 'status');
BEGIN
    PERFORM billing._lock_payment(coalesce(r ->> 'payment_intent', r ->> 'charge'));
    INSERT INTO billing.stripe_refunds AS s (id, charge, payment_intent, amount, status, status_rank, reported_at)
    VALUES (r ->> 'id', r ->> 'charge', r ->> 'payment_intent', coalesce((r ->> 'amount')::bigint, 0),
            coalesce(r ->> 'status', 'pending'), rank, billing._unix_time(ev -> 'created'))
    ON CONFLICT (id) DO UPDATE
    SET status = excluded.status, amount = excluded.amount, status_rank = excluded.status_rank,
        reported_at = excluded.reported_at, charge = coalesce(s.charge, excluded.charge),
        payment_intent = coalesce(s.payment_intent, excluded.payment_intent), updated_at = now()
    WHERE (excluded.status_rank, excluded.reported_at) >= (s.status_rank, s.reported_at);
    -- When it ended, whichever report of its end came first (the charge's reports before then
    -- may count it; _purchase_reversed).
    IF r ->> 'status' IN ('failed', 'canceled') THEN
        UPDATE billing.stripe_refunds s SET ended_at = least(s.ended_at, billing._unix_time(ev -> 'created'))
        WHERE s.id = r ->> 'id';
    END IF;
    PERFORM billing._ask_payment_lookup(ev);
    PERFORM billing._settle_payment(r ->> 'charge', r ->> 'payment_intent',
        format('refund %s of %s: %s', r ->> 'id', coalesce(r ->> 'charge', r ->> 'payment_intent'), r ->> 'status'),
        ev ->> 'id');
END
$$;
COMMENT ON FUNCTION billing._apply_refund(jsonb) IS 'Internal: refund.* and charge.refund.updated events: records the refund and when it failed or was canceled (then it moved no money), then settles the purchases its payment paid.';

CREATE OR REPLACE FUNCTION billing._apply_dispute(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    d jsonb := ev -> 'data';
    rank smallint := billing._money_status_rank('dispute', d ->> 'status');
BEGIN
    PERFORM billing._lock_payment(coalesce(d ->> 'payment_intent', d ->> 'charge'));
    INSERT INTO billing.stripe_disputes AS s (id, charge, payment_intent, amount, status, status_rank, reported_at)
    VALUES (d ->> 'id', d ->> 'charge', d ->> 'payment_intent', coalesce((d ->> 'amount')::bigint, 0),
            coalesce(d ->> 'status', 'needs_response'), rank, billing._unix_time(ev -> 'created'))
    ON CONFLICT (id) DO UPDATE
    SET status = excluded.status, amount = excluded.amount, status_rank = excluded.status_rank,
        reported_at = excluded.reported_at, charge = coalesce(s.charge, excluded.charge),
        payment_intent = coalesce(s.payment_intent, excluded.payment_intent), updated_at = now()
    WHERE (excluded.status_rank, excluded.reported_at) >= (s.status_rank, s.reported_at);
    PERFORM billing._ask_payment_lookup(ev);
    PERFORM billing._settle_payment(d ->> 'charge', d ->> 'payment_intent',
        format('dispute %s of %s: %s', d ->> 'id', coalesce(d ->> 'charge', d ->> 'payment_intent'), d ->> 'status'),
        ev ->> 'id');
END
$$;
COMMENT ON FUNCTION billing._apply_dispute(jsonb) IS 'Internal: charge.dispute.* events: records the dispute (funds withdrawn while it is open, back when won), then settles the purchases its payment paid.';

CREATE OR REPLACE FUNCTION billing._apply_credit_note(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    n jsonb := ev -> 'data';
    rank smallint := billing._money_status_rank('credit_note', n ->> 'status');
BEGIN
    IF n ->> 'invoice' IS NULL THEN
        RETURN;
    END IF;
    PERFORM billing._lock_payment(n ->> 'invoice');
    INSERT INTO billing.stripe_credit_notes AS s (id, invoice, note_type, status, total, out_of_band_amount,
                                                  post_payment_amount, refunds, status_rank, reported_at)
    VALUES (n ->> 'id', n ->> 'invoice', n ->> 'type', coalesce(n ->> 'status', 'issued'),
            coalesce((n ->> 'total')::bigint, 0), (n ->> 'out_of_band_amount')::bigint,
            (n ->> 'post_payment_amount')::bigint, coalesce(n -> 'refunds', '[]'),
            rank, billing._unix_time(ev -> 'created'))
    ON CONFLICT (id) DO UPDATE
    SET status = excluded.status, total = excluded.total, out_of_band_amount = excluded.out_of_band_amount,
        post_payment_amount = excluded.post_payment_amount, refunds = excluded.refunds, note_type = excluded.note_type, status_rank = excluded.status_rank,
        reported_at = excluded.reported_at, updated_at = now()
    WHERE (excluded.status_rank, excluded.reported_at) >= (s.status_rank, s.reported_at);
    PERFORM billing._settle_purchase(n ->> 'invoice',
        format('credit note %s of invoice %s: %s', n ->> 'id', n ->> 'invoice', n ->> 'status'), ev ->> 'id');
END
$$;
COMMENT ON FUNCTION billing._apply_credit_note(jsonb) IS 'Internal: credit_note.* events: records the credit note (void gives its credit back), then settles its invoice''s purchase.';

CREATE OR REPLACE FUNCTION billing._apply_invoice_payment(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    p jsonb := ev -> 'data';
BEGIN
    IF billing._link_invoice_payment(p) THEN
        -- Every purchase of the payment: a part of it newly known changes the others' shares.
        PERFORM billing._settle_payment(p ->> 'charge', p ->> 'payment_intent',
            format('payment of invoice %s', p ->> 'invoice'), ev ->> 'id');
    END IF;
END
$$;
COMMENT ON FUNCTION billing._apply_invoice_payment(jsonb) IS 'Internal: invoice_payment.* events (basil and later): learns which PaymentIntent paid an invoice and how much of it, then settles the purchases that payment paid.';

-- An invoice payment (normalised, or as the list endpoint answers it) links its payment to its
-- invoice with the part of the payment that paid it.
CREATE OR REPLACE FUNCTION billing._link_invoice_payment(p jsonb) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    invoice text := billing._json_ref(p -> 'invoice') #>> '{}';
    amount bigint := (billing._json_number(p -> 'amount_paid') #>> '{}')::bigint;
BEGIN
    -- Every link is recorded (no short-circuit), whichever of them is new.
    RETURN billing._link_payment(coalesce(p ->> 'payment_intent', billing._json_ref(p #> '{payment,payment_intent}') #>> '{}'),
                                 invoice, amount)::int
         + billing._link_payment(coalesce(p ->> 'charge', billing._json_ref(p #> '{payment,charge}') #>> '{}'),
                                 invoice, amount)::int > 0;
END
$$;
COMMENT ON FUNCTION billing._link_invoice_payment(jsonb) IS 'Internal: links the PaymentIntent or charge of an invoice payment to its invoice with its amount_paid; true when anything is new.';

-- From basil on invoice events name no payment, so a refund or dispute of a payment no purchase
-- is linked to may be of a renewal whose invoice_payment.paid the endpoint does not receive. The
-- worker then lists the PaymentIntent's invoice payments, once per payment
-- (billing.store_invoice_payments), and the answer links them and settles what they paid. The
-- refund or dispute itself does not wait: it is recorded like any report that arrives before
-- its purchase, and counts the moment a link names the purchase. Asked only here, where the
-- money goes back, never per renewal. Before basil invoices and charges name their payments, so
-- there is nothing to ask.
CREATE OR REPLACE FUNCTION billing._ask_payment_lookup(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    intent text := ev -> 'data' ->> 'payment_intent';
BEGIN
    IF intent IS NULL OR intent !~ '^pi_[A-Za-z0-9_]+$' OR coalesce(ev ->> 'api_version', '') < '2025-03-31'
       OR EXISTS (SELECT FROM billing._purchases_of(ev -> 'data' ->> 'charge', intent))
       OR EXISTS (SELECT FROM billing.payment_lookups l WHERE l.payment = intent) THEN
        RETURN;
    END IF;
    -- The request is nobody's: its user is derived from the payment, so lookups of different
    -- payments run side by side and no user's own requests wait for them.
    PERFORM billing._request_retrieval('refresh', md5('billing.payment:' || intent)::uuid, intent);
END
$$;
COMMENT ON FUNCTION billing._ask_payment_lookup(jsonb) IS 'Internal: for a basil refund or dispute of a PaymentIntent that no purchase is linked to and that was never looked up, queues the worker''s list of its invoice payments (the event itself applies at once).';

CREATE OR REPLACE FUNCTION billing._apply_retrieved_invoice(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    inv jsonb := ev -> 'data';
    p jsonb;
    learned boolean := false;
BEGIN
    learned := billing._link_payments(inv ->> 'id', inv ->> 'payment_intent', inv ->> 'charge');
    FOR p IN SELECT value FROM jsonb_array_elements(coalesce(inv -> 'payments', '[]')) LOOP
        learned := billing._link_invoice_payment(p || jsonb_build_object('invoice', inv ->> 'id')) OR learned;
    END LOOP;
    IF learned THEN
        PERFORM billing._settle_purchase(inv ->> 'id', format('payment of invoice %s', inv ->> 'id'), ev ->> 'id');
    END IF;
END
$$;
COMMENT ON FUNCTION billing._apply_retrieved_invoice(jsonb) IS 'Internal: an invoice the worker retrieved with its payments (basil and later do not send them with invoice events): learns which payments paid it, then settles its purchase.';
