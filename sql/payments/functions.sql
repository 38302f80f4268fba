-- Following the money: purchases and their payments, the reversed share of each purchase, and
-- the ledger entries that bring every grant to its purchase's share (DESIGN.md, "Refunds and
-- disputes").
--
-- The rule, in one place: a grant's net revoked tokens are always
--     round(grant tokens x reversed / amount paid)   (all of them once everything is reversed)
-- where reversed = per charge, (refunded + disputed funds withdrawn) / the charge's amount x the
-- part of the charge that paid this purchase, + the post-payment part of credit notes (less what
-- they refunded, already among the refunds; a mixed note's pre-payment part lowered what was due
-- and gives nothing back), at most the amount paid. Every report about the
-- money (in any order, any number of times) updates the facts, then _settle_purchase moves each
-- grant from what it has to that target: revoking more, or restoring. Applying a report twice,
-- or reports in another order, ends in the same ledger.
--
-- This file holds the facts and the reversed share they give; moving the grants to it (revoking,
-- restoring, settling) and the debts that leaves are in sql/payments/reversals.sql.

-- A purchase and the reports about its money can arrive in concurrent transactions (a refund
-- event beside the session's), and neither would see the other's uncommitted rows. Both sides
-- take a transaction lock on the payment (or the invoice) before reading or writing, so the
-- second waits for the first and then sees it.
CREATE OR REPLACE FUNCTION billing._lock_payment(payment text) RETURNS void
LANGUAGE sql
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('billing.payment:' || payment, 0)) WHERE payment IS NOT NULL
$$;
COMMENT ON FUNCTION billing._lock_payment(text) IS 'Internal: serialises, until commit, the transactions that tie a payment (PaymentIntent, charge) or invoice to a purchase and those that report about its money.';

CREATE OR REPLACE FUNCTION billing._record_purchase(id text, user_id uuid, project_id uuid, customer text,
                                                    amount_paid bigint, currency text) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO billing.purchases (id, user_id, project_id, stripe_customer_id, amount_paid, currency)
    VALUES (_record_purchase.id, _record_purchase.user_id, _record_purchase.project_id, _record_purchase.customer,
            greatest(coalesce(_record_purchase.amount_paid, 0), 0), lower(_record_purchase.currency))
    ON CONFLICT (id) DO NOTHING;
END
$$;
COMMENT ON FUNCTION billing._record_purchase(text, uuid, uuid, text, bigint, text) IS 'Internal: records what funded a grant (a paid Checkout Session or invoice), once.';

CREATE OR REPLACE FUNCTION billing._link_payment(payment text, purchase_id text, amount bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    changed text;
BEGIN
    IF payment IS NULL OR purchase_id IS NULL OR payment !~ '^(pi|ch|py)_[A-Za-z0-9_]+$'
       OR purchase_id !~ '^(cs|in|pi)_[A-Za-z0-9_]+$' THEN
        RETURN false;
    END IF;
    PERFORM billing._lock_payment(payment);
    -- A link is learned once; its part of the payment when a source first says it.
    INSERT INTO billing.purchase_payments AS l (payment, purchase_id, amount)
    VALUES (_link_payment.payment, _link_payment.purchase_id,
            CASE WHEN _link_payment.amount >= 0 THEN _link_payment.amount END)
    ON CONFLICT (payment, purchase_id) DO UPDATE SET amount = excluded.amount
    WHERE l.amount IS NULL AND excluded.amount IS NOT NULL
    RETURNING l.payment INTO changed;
    RETURN changed IS NOT NULL;
END
$$;
COMMENT ON FUNCTION billing._link_payment(text, text, bigint) IS 'Internal: records that a PaymentIntent or charge paid a purchase, and the part of it that did when known; true when the link or its part is new.';

CREATE OR REPLACE FUNCTION billing._link_payments(purchase_id text, VARIADIC payments text[]) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    payment text;
    learned boolean := false;
BEGIN
    -- Every link is recorded (no short-circuit), whichever of them is new.
    FOREACH payment IN ARRAY payments LOOP
        learned := billing._link_payment(payment, purchase_id) OR learned;
    END LOOP;
    RETURN learned;
END
$$;
COMMENT ON FUNCTION billing._link_payments(text, text[]) IS 'Internal: records that each of the PaymentIntents or charges given (NULLs are skipped) paid a purchase; true when any link is new.';

-- The purchases a payment (a charge, a PaymentIntent, or both) paid, directly or through the
-- other id of the same payment.
CREATE OR REPLACE FUNCTION billing._purchases_of(charge text, payment_intent text) RETURNS SETOF text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN QUERY
    WITH ids AS (
        SELECT unnest(ARRAY[_purchases_of.charge, _purchases_of.payment_intent]) AS id
        UNION SELECT c.payment_intent FROM billing.stripe_charges c WHERE c.id = _purchases_of.charge
        UNION SELECT c.id FROM billing.stripe_charges c WHERE c.payment_intent = _purchases_of.payment_intent
    )
    SELECT DISTINCT p.purchase_id FROM billing.purchase_payments p JOIN ids ON p.payment = ids.id;
END
$$;
COMMENT ON FUNCTION billing._purchases_of(text, text) IS 'Internal: the purchases a charge or PaymentIntent paid.';

CREATE OR REPLACE FUNCTION billing._credit_note_refunded(n billing.stripe_credit_notes) RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- PL/pgSQL rather than SQL: its plan is cached, and this runs for every report.
    RETURN (
    -- basil and later say how much of each refund the note accounts for; before, the refund's
    -- own amount, as a refund event reported it or the worker retrieved it (pre-acacia Stripe
    -- sends no refund event for a charge's refund: _request_credit_note_refunds). Until then,
    -- everything post-payment not credited out of band is taken to be refunded.
    SELECT CASE
        WHEN jsonb_array_length(n.refunds) = 0 THEN 0
        WHEN bool_and(r ->> 'amount_refunded' IS NOT NULL) THEN sum((r ->> 'amount_refunded')::bigint)
        WHEN bool_and(s.amount IS NOT NULL) THEN sum(s.amount)
        ELSE greatest(coalesce(n.post_payment_amount, n.total) - coalesce(n.out_of_band_amount, 0), 0) END
    FROM jsonb_array_elements(CASE WHEN jsonb_array_length(n.refunds) = 0 THEN '[{}]'::jsonb ELSE n.refunds END) r
    LEFT JOIN billing.stripe_refunds s ON s.id = r ->> 'refund'
    );
END
$$;
COMMENT ON FUNCTION billing._credit_note_refunded(billing.stripe_credit_notes) IS 'Internal: how much of a credit note was a refund (counted with the charge''s refunds, not again as credit).';

-- What a credit note gives back besides its refunds: its post-payment part (a post_payment
-- note's total; from 2025-05-28.basil post_payment_amount, which a mixed note splits from the
-- pre_payment_amount that only lowered what was due) less what it refunded. A refund that
-- failed is in neither: it moved no money.
CREATE OR REPLACE FUNCTION billing._credit_note_credited(n billing.stripe_credit_notes) RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN n.status <> 'issued' OR n.note_type = 'pre_payment' THEN 0
                ELSE greatest(coalesce(n.post_payment_amount, n.total) - billing._credit_note_refunded(n), 0) END
$$;
COMMENT ON FUNCTION billing._credit_note_credited(billing.stripe_credit_notes) IS 'Internal: the money an issued credit note gives back other than by refund: its post-payment part (post_payment_amount from 2025-05-28.basil, else a post_payment note''s total) less what it refunded.';

-- A credit note's refund whose amount no event said (before basil a credit note names its refund
-- without an amount, and before acacia Stripe sends no refund.* event for a charge's refund) is
-- retrieved from Stripe; the retrieved refund settles the purchase again with its real amount
-- and status.
CREATE OR REPLACE FUNCTION billing._request_credit_note_refunds(p billing.purchases) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM billing._request_retrieval('refresh', p.user_id, r ->> 'refund')
    FROM billing.stripe_credit_notes n CROSS JOIN jsonb_array_elements(n.refunds) r
    WHERE n.invoice = p.id AND n.status = 'issued' AND r ->> 'amount_refunded' IS NULL
      AND r ->> 'refund' ~ '^re_[A-Za-z0-9_]+$'
      AND NOT EXISTS (SELECT FROM billing.stripe_refunds s WHERE s.id = r ->> 'refund');
END
$$;
COMMENT ON FUNCTION billing._request_credit_note_refunds(billing.purchases) IS 'Internal: asks the worker to retrieve the refunds of a purchase''s credit notes whose amount no event reported (refresh of the re_ id), once while one is in flight.';

-- Both ids of every payment of a purchase: a report may name only the charge or only the
-- PaymentIntent, and the purchase may know only the other one. One place, so settling and its
-- early exit (_purchase_has_reports) always follow the same links.
CREATE OR REPLACE FUNCTION billing._purchase_payment_ids(purchase_id text) RETURNS TABLE (intent text, charge text)
LANGUAGE sql STABLE
AS $$
    -- SQL, so the calling query inlines it.
    WITH pays AS (
        SELECT l.payment FROM billing.purchase_payments l WHERE l.purchase_id = _purchase_payment_ids.purchase_id
    ), intents AS (
        SELECT payment AS pi FROM pays WHERE payment LIKE 'pi\_%'
        UNION SELECT c.payment_intent FROM billing.stripe_charges c JOIN pays ON c.id = pays.payment
        WHERE c.payment_intent IS NOT NULL
    ), charges AS (
        SELECT payment AS ch FROM pays WHERE payment NOT LIKE 'pi\_%'
        UNION SELECT c.id FROM billing.stripe_charges c JOIN intents i ON c.payment_intent = i.pi
        UNION SELECT r.charge FROM billing.stripe_refunds r JOIN intents i ON r.payment_intent = i.pi
        WHERE r.charge IS NOT NULL
        UNION SELECT d.charge FROM billing.stripe_disputes d JOIN intents i ON d.payment_intent = i.pi
        WHERE d.charge IS NOT NULL
    )
    SELECT pi, NULL FROM intents UNION ALL SELECT NULL, ch FROM charges
$$;
COMMENT ON FUNCTION billing._purchase_payment_ids(text) IS 'Internal: the PaymentIntents (intent) and charges (charge) that paid a purchase, each id also through the other id of the same payment.';

-- Reversed per charge, never as money summed against the purchase: what went back of a charge
-- (refunds, disputed funds withdrawn) is a fraction of that charge, and the purchase loses that
-- fraction of the part of the charge that paid it. One PaymentIntent that paid invoices A and B
-- (basil) is refunded once for both: 500 of a 2,000 charge is a quarter, a quarter of A's 1,000
-- and of B's, 500 in all. Amounts of one charge are in one currency, so currencies never mix:
-- only fractions meet the purchase. The charge's amount is its own report; without one, the
-- parts of it known to have paid purchases add up to it, and without those the purchase's amount
-- paid is its whole part (the rule before basil: one payment, one purchase).
CREATE OR REPLACE FUNCTION billing._purchase_reversed(p billing.purchases) RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- PL/pgSQL rather than SQL: its plan is cached, and this runs for every report.
    RETURN (
    WITH ids AS (
        SELECT * FROM billing._purchase_payment_ids(p.id)
    ), charges AS (
        -- Each charge with its PaymentIntent, as any report names it.
        SELECT ids.charge AS ch,
               coalesce(c.payment_intent,
                        (SELECT r.payment_intent FROM billing.stripe_refunds r
                         WHERE r.charge = ids.charge AND r.payment_intent IS NOT NULL LIMIT 1),
                        (SELECT d.payment_intent FROM billing.stripe_disputes d
                         WHERE d.charge = ids.charge AND d.payment_intent IS NOT NULL LIMIT 1)) AS pi,
               c.amount
        FROM ids LEFT JOIN billing.stripe_charges c ON c.id = ids.charge
        WHERE ids.charge IS NOT NULL
    ), back AS (
        -- Per charge: the larger of what its live refunds add up to and what the charge's newest
        -- report says less the refunds that report may count but that failed or were canceled
        -- since (it was made no later than they ended). Either side can be incomplete for a
        -- while (before acacia no refund.* events come for charges; a report can be late); every
        -- order of delivery ends in the state Stripe ended in (DESIGN.md, "Refunds and disputes").
        -- Plus its disputes whose funds are withdrawn.
        SELECT ARRAY[ch.ch, ch.pi] AS pays, ch.amount,
            greatest(
                coalesce((SELECT sum(r.amount) FROM billing.stripe_refunds r
                          WHERE r.charge = ch.ch AND r.status IN ('pending', 'requires_action', 'succeeded')), 0),
                (SELECT c.amount_refunded - coalesce((SELECT sum(r.amount) FROM billing.stripe_refunds r
                                                      WHERE r.charge = c.id AND r.ended_at >= c.reported_at), 0)
                 FROM billing.stripe_charges c WHERE c.id = ch.ch))
            + coalesce((SELECT sum(d.amount) FROM billing.stripe_disputes d
                        WHERE d.charge = ch.ch AND d.status IN ('needs_response', 'under_review', 'lost')), 0) AS amount_back
        FROM charges ch
        UNION ALL
        -- Refunds and disputes of a PaymentIntent that name no charge.
        SELECT ARRAY[i.intent], NULL,
            coalesce((SELECT sum(r.amount) FROM billing.stripe_refunds r
                      WHERE r.payment_intent = i.intent AND r.charge IS NULL
                        AND r.status IN ('pending', 'requires_action', 'succeeded')), 0)
            + coalesce((SELECT sum(d.amount) FROM billing.stripe_disputes d
                        WHERE d.payment_intent = i.intent AND d.charge IS NULL
                          AND d.status IN ('needs_response', 'under_review', 'lost')), 0)
        FROM ids i WHERE i.intent IS NOT NULL
    ), shares AS (
        SELECT b.amount_back, part.amount AS part,
               coalesce(b.amount, (SELECT sum(x.part) FROM (SELECT max(l.amount) AS part FROM billing.purchase_payments l
                                                            WHERE l.payment = ANY (b.pays) GROUP BY l.purchase_id) x),
                        part.amount) AS whole
        FROM back b
        CROSS JOIN LATERAL (SELECT coalesce(max(l.amount), p.amount_paid) AS amount FROM billing.purchase_payments l
                            WHERE l.purchase_id = p.id AND l.payment = ANY (b.pays)) part
        WHERE b.amount_back > 0
    ), credited AS (
        SELECT coalesce(sum(billing._credit_note_credited(n)), 0) AS amount
        FROM billing.stripe_credit_notes n WHERE n.invoice = p.id
    )
    SELECT least(p.amount_paid,
                 round(coalesce((SELECT sum(s.part * least(1, s.amount_back::numeric / nullif(s.whole, 0))) FROM shares s), 0))::bigint
                 + credited.amount)
    FROM credited
    );
END
$$;
COMMENT ON FUNCTION billing._purchase_reversed(billing.purchases) IS 'Internal: how much of a purchase''s payment has gone back: per charge, the fraction of it refunded or disputed times the part of it that paid this purchase, plus post-payment credit notes; at most the amount paid.';

CREATE OR REPLACE FUNCTION billing._purchase_has_reports(purchase_id text) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- PL/pgSQL rather than SQL: its plan is cached, and this runs for every report.
    RETURN (
    SELECT EXISTS (SELECT FROM billing.token_reversals r WHERE r.purchase_id = _purchase_has_reports.purchase_id)
        OR EXISTS (SELECT FROM billing.stripe_credit_notes n WHERE n.invoice = _purchase_has_reports.purchase_id)
        OR EXISTS (SELECT FROM billing._purchase_payment_ids(_purchase_has_reports.purchase_id) i
                   WHERE EXISTS (SELECT FROM billing.stripe_charges c WHERE c.id = i.charge AND c.amount_refunded > 0)
                      OR EXISTS (SELECT FROM billing.stripe_refunds r WHERE r.charge = i.charge OR r.payment_intent = i.intent)
                      OR EXISTS (SELECT FROM billing.stripe_disputes d WHERE d.charge = i.charge OR d.payment_intent = i.intent))
    );
END
$$;
COMMENT ON FUNCTION billing._purchase_has_reports(text) IS 'Internal: whether anything was reported about a purchase''s money or revoked from its grants (when not, settling it has nothing to do).';

CREATE OR REPLACE FUNCTION billing._net_revoked(grant_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- PL/pgSQL rather than SQL: its plan is cached, and this runs for every report.
    RETURN (
    SELECT coalesce(sum(CASE r.kind WHEN 'revoke' THEN r.tokens ELSE -r.tokens END), 0)
    FROM billing.token_reversals r WHERE r.grant_id = _net_revoked.grant_id
    );
END
$$;
COMMENT ON FUNCTION billing._net_revoked(bigint) IS 'Internal: tokens revoked from a grant less those restored.';
