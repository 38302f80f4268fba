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

-- The bookkeeping of taking tokens back, one rule for revocations and downgrades: the tokens
-- chosen (ids, takes: grants locked in spend order by the caller) leave through one spend of
-- kind revocation; the rest is owed (a debt, written off at once with debt_policy write_off),
-- or with revocation_scope grant recorded as not taken.
CREATE OR REPLACE FUNCTION billing._book_take(who uuid, balance_project uuid, purchase text, from_grant bigint,
                                              reversal_kind text, tokens bigint, ids bigint[], takes bigint[],
                                              reason text, event_id text, take_key text)
RETURNS billing.token_reversals
LANGUAGE plpgsql
AS $$
DECLARE
    cfg billing.config := billing._settings();
    taken bigint := coalesce((SELECT sum(x) FROM unnest(takes) AS x), 0);
    owed bigint := tokens - taken;
    not_taken bigint := 0;
    spend bigint;
    rev billing.token_reversals;
    debt billing.token_debts;
BEGIN
    IF taken > 0 THEN
        INSERT INTO billing.token_spends (user_id, project_id, amount, reason, kind)
        VALUES (who, balance_project, taken, left(reason, 500), 'revocation')
        RETURNING id INTO spend;
        INSERT INTO billing.token_spend_allocations (spend_id, grant_id, user_id, tokens)
        SELECT spend, a.id, who, a.take FROM unnest(ids, takes) AS a(id, take);
    END IF;
    IF cfg.revocation_scope = 'grant' THEN
        not_taken := owed;
        owed := 0;
    END IF;
    INSERT INTO billing.token_reversals (user_id, project_id, purchase_id, grant_id, kind, tokens, taken, debt,
                                         not_taken, spend_id, reason, event_id, take_key)
    VALUES (who, balance_project, purchase, from_grant, reversal_kind, tokens, taken, owed, not_taken, spend,
            left(reason, 500), event_id, take_key)
    RETURNING * INTO rev;
    IF owed > 0 THEN
        INSERT INTO billing.token_debts (user_id, project_id, reversal_id, tokens)
        VALUES (who, balance_project, rev.id, owed)
        RETURNING * INTO debt;
        IF cfg.debt_policy = 'write_off' THEN
            INSERT INTO billing.token_debt_settlements (debt_id, user_id, kind, tokens)
            VALUES (debt.id, who, 'written_off', owed);
        END IF;
    END IF;
    RETURN rev;
END
$$;
COMMENT ON FUNCTION billing._book_take(uuid, uuid, text, bigint, text, bigint, bigint[], bigint[], text, text, text) IS 'Internal: records taking tokens back (a revocation of a grant, or a downgrade''s take-back): one revocation spend of the chosen grants, the reversal row, and a debt for the rest (written off with debt_policy write_off), or with revocation_scope grant the rest as not taken.';

-- Takes tokens back: from the grant first (even expired, worthless, tokens count), then from the
-- user's other spendable tokens of the same balance, soonest-expiring first; what was already
-- spent becomes a debt. With revocation_scope grant only the grant and the spendable grants that
-- restored it give, and the rest is recorded as not taken: no debt, so neither this month's
-- allowance nor the next pays for a refund of last month's invoice. The rows are locked in spend
-- order, like a spend locks them, so a revocation and spends never deadlock.
CREATE OR REPLACE FUNCTION billing._revoke(g billing.token_grants, tokens bigint, reason text, event_id text)
RETURNS billing.token_reversals
LANGUAGE plpgsql
AS $$
DECLARE
    cfg billing.config := billing._settings();
    ids bigint[] := '{}';
    takes bigint[] := '{}';
    left_to_take bigint := tokens;
    take bigint;
    o record;
BEGIN
    FOR o IN
        SELECT t.id, t.remaining FROM billing.token_grants t
        WHERE t.id = g.id
           OR (t.user_id = g.user_id
               AND coalesce(t.project_id, billing._no_project()) = coalesce(g.project_id, billing._no_project())
               AND t.remaining > 0 AND coalesce(t.expires_at, 'infinity'::timestamptz) > now())
        ORDER BY coalesce(t.expires_at, 'infinity'::timestamptz), t.created_at, t.id
        FOR UPDATE
    LOOP
        -- The grant itself gives first, wherever it sorts.
        IF o.id = g.id THEN
            take := least(o.remaining, left_to_take);
            IF take > 0 THEN
                ids := o.id || ids;
                takes := take || takes;
                left_to_take := left_to_take - take;
            END IF;
        END IF;
    END LOOP;
    FOR o IN
        SELECT t.id, t.remaining FROM billing.token_grants t
        WHERE t.id <> g.id AND t.user_id = g.user_id
          AND coalesce(t.project_id, billing._no_project()) = coalesce(g.project_id, billing._no_project())
          AND t.remaining > 0 AND coalesce(t.expires_at, 'infinity'::timestamptz) > now()
          AND (cfg.revocation_scope = 'balance'
               OR t.id IN (SELECT r.restored_grant_id FROM billing.token_reversals r
                           WHERE r.grant_id = g.id AND r.kind = 'restore'))
        ORDER BY coalesce(t.expires_at, 'infinity'::timestamptz), t.created_at, t.id
    LOOP
        EXIT WHEN left_to_take = 0;
        take := least(o.remaining, left_to_take);
        ids := ids || o.id;
        takes := takes || take;
        left_to_take := left_to_take - take;
    END LOOP;
    RETURN billing._book_take(g.user_id, g.project_id, g.purchase_id, g.id, 'revoke', tokens, ids, takes, reason,
                              event_id, NULL);
END
$$;
COMMENT ON FUNCTION billing._revoke(billing.token_grants, bigint, text, text) IS 'Internal: takes tokens back for a grant (the grant first, then the balance); records a debt for what was already spent (written off at once with debt_policy write_off), or with revocation_scope grant takes only from the grant (and its restorations) and records the rest as not taken.';

-- Gives tokens back: first by cancelling what revocations of this grant did not take
-- (revocation_scope grant: there is nothing to give back for it), then by forgiving what is still
-- owed for this grant, then by a new grant (source restored) for the rest: what the revocation
-- took and what later grants repaid of its debt. Cancelling the not-taken tokens first keeps
-- them at most the net revocation, so by the time everything is restored they are all cancelled
-- and what was given back is exactly what was taken (or repaid). The money came back now, so the tokens must be spendable now: the new grant expires when
-- the original does, but no sooner than the renewal grace from now.
CREATE OR REPLACE FUNCTION billing._restore(g billing.token_grants, tokens bigint, reason text, event_id text)
RETURNS billing.token_reversals
LANGUAGE plpgsql
AS $$
DECLARE
    -- (greatest() skips NULL, which here means never.)
    expires timestamptz := CASE WHEN g.expires_at IS NOT NULL THEN
        greatest(g.expires_at, now() + make_interval(secs => (billing._settings()).renewal_grace_seconds)) END;
    forgive bigint := 0;
    d record;
    c bigint;
    -- A row, not a record: it must read as NULL when everything given back was debt forgiven
    -- and no grant was made (an unassigned record cannot be read at all: 55000).
    fresh billing.token_grants;
    rev billing.token_reversals;
    pending_forgiveness jsonb := '[]';
    cancel bigint;
BEGIN
    -- Not taken, net: what revocations did not take less what restorations cancelled of it (the
    -- caller holds the purchase's row lock, so settlements of the grant never interleave).
    SELECT least(_restore.tokens, greatest(coalesce(sum(CASE r.kind WHEN 'revoke' THEN r.not_taken ELSE -r.not_taken END), 0), 0))
    INTO cancel FROM billing.token_reversals r WHERE r.grant_id = g.id;
    forgive := cancel;
    FOR d IN SELECT debt.id, debt.remaining FROM billing.token_debts debt
             JOIN billing.token_reversals r ON r.id = debt.reversal_id
             WHERE r.grant_id = g.id AND debt.remaining > 0
             ORDER BY debt.id DESC FOR UPDATE OF debt LOOP
        EXIT WHEN forgive = tokens;
        c := least(d.remaining, tokens - forgive);
        forgive := forgive + c;
        pending_forgiveness := pending_forgiveness || jsonb_build_object('debt_id', d.id, 'tokens', c);
    END LOOP;
    IF tokens > forgive THEN
        fresh := (SELECT i.g FROM billing._insert_grant(g.user_id, tokens - forgive, 'restored', expires,
            g.project_id, format('restore:%s:%s', g.id, (SELECT count(*) + 1 FROM billing.token_reversals r
                                                          WHERE r.grant_id = g.id AND r.kind = 'restore')),
            jsonb_build_object('restores_grant', g.id, 'reason', left(reason, 500)), g.purchase_id,
            collect_debts => false) i);
    END IF;
    INSERT INTO billing.token_reversals (user_id, project_id, purchase_id, grant_id, kind, tokens, debt_forgiven,
                                         not_taken, restored_grant_id, reason, event_id)
    VALUES (g.user_id, g.project_id, g.purchase_id, g.id, 'restore', tokens, forgive - cancel, cancel, fresh.id,
            left(reason, 500), event_id)
    RETURNING * INTO rev;
    INSERT INTO billing.token_debt_settlements (debt_id, user_id, kind, tokens, reversal_id)
    SELECT (f ->> 'debt_id')::bigint, g.user_id, 'forgiven', (f ->> 'tokens')::bigint, rev.id
    FROM jsonb_array_elements(pending_forgiveness) f;
    -- Only now, with this grant's own debt forgiven, may the new grant pay other debts.
    IF fresh.id IS NOT NULL AND (billing._settings()).debt_policy = 'collect' THEN
        PERFORM billing._collect_debts(fresh);
    END IF;
    RETURN rev;
END
$$;
COMMENT ON FUNCTION billing._restore(billing.token_grants, bigint, text, text) IS 'Internal: gives revoked tokens back (a dispute won, a refund failed, a credit note voided): cancels what revocations of the grant did not take (revocation_scope grant), forgives the grant''s outstanding debt, then grants the rest (source restored, the original expiry but at least the renewal grace from now).';

CREATE OR REPLACE FUNCTION billing._settle_purchase(purchase_id text, reason text, event_id text) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    p billing.purchases;
    reversed bigint;
    g billing.token_grants;
    target bigint;
    current bigint;
    rev billing.token_reversals;
    revoked bigint := 0;
    taken bigint := 0;
    owed bigint := 0;
    restored bigint := 0;
BEGIN
    -- One settlement of a purchase at a time.
    SELECT * INTO p FROM billing.purchases x WHERE x.id = _settle_purchase.purchase_id FOR UPDATE;
    IF NOT FOUND OR p.amount_paid = 0 THEN
        RETURN;  -- not ours (yet), or nothing was paid
    END IF;
    -- The common case, every new purchase: no money went back and nothing was revoked.
    IF NOT billing._purchase_has_reports(p.id) THEN
        RETURN;
    END IF;
    PERFORM billing._request_credit_note_refunds(p);
    reversed := billing._purchase_reversed(p);
    FOR g IN SELECT * FROM billing.token_grants t
             WHERE t.purchase_id = p.id AND t.source <> 'restored' ORDER BY t.id LOOP
        target := CASE WHEN reversed >= p.amount_paid THEN g.tokens
                       ELSE round(g.tokens::numeric * reversed / p.amount_paid)::bigint END;
        current := billing._net_revoked(g.id);
        IF target > current THEN
            rev := billing._revoke(g, target - current, reason, event_id);
            revoked := revoked + rev.tokens;
            taken := taken + rev.taken;
            owed := owed + rev.debt;
        ELSIF target < current THEN
            rev := billing._restore(g, current - target, reason, event_id);
            restored := restored + rev.tokens;
        END IF;
    END LOOP;
    IF revoked > 0 THEN
        PERFORM billing._notify(p.user_id, 'tokens_revoked', event_id,
            jsonb_build_object('purchase_id', p.id, 'tokens', revoked, 'taken', taken, 'debt', owed, 'reason', reason,
                               'balance', billing._live_balance(p.user_id, p.project_id), 'project_id', p.project_id));
    END IF;
    IF owed > 0 THEN
        PERFORM billing._notify(p.user_id, 'debt_created', event_id,
            jsonb_build_object('purchase_id', p.id, 'tokens', owed, 'reason', reason, 'project_id', p.project_id,
                               'written_off', (billing._settings()).debt_policy = 'write_off'));
    END IF;
    IF restored > 0 THEN
        PERFORM billing._notify(p.user_id, 'tokens_restored', event_id,
            jsonb_build_object('purchase_id', p.id, 'tokens', restored, 'reason', reason,
                               'balance', billing._live_balance(p.user_id, p.project_id), 'project_id', p.project_id));
    END IF;
END
$$;
COMMENT ON FUNCTION billing._settle_purchase(text, text, text) IS 'Internal: brings every grant of a purchase to its reversed share (revoking or restoring the difference) and notifies the user; idempotent and independent of the order of the reports.';

CREATE OR REPLACE FUNCTION billing._settle_payment(charge text, payment_intent text, reason text, event_id text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    purchase text;
BEGIN
    FOR purchase IN SELECT * FROM billing._purchases_of(charge, payment_intent) ORDER BY 1 LOOP
        PERFORM billing._settle_purchase(purchase, reason, event_id);
    END LOOP;
END
$$;
COMMENT ON FUNCTION billing._settle_payment(text, text, text, text) IS 'Internal: settles every purchase a charge or PaymentIntent paid.';

-- Debts are paid from later grants first: a new grant of the user's balance pays the oldest
-- debts of that balance as far as it goes (debt_policy collect).
CREATE OR REPLACE FUNCTION billing._collect_debts(g billing.token_grants) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    d record;
    owed bigint;
    pay bigint;
    spend bigint;
    left_to_pay bigint;
    c bigint;
BEGIN
    IF g.remaining = 0 OR coalesce(g.expires_at, 'infinity'::timestamptz) <= now() THEN
        RETURN 0;
    END IF;
    SELECT coalesce(sum(x.remaining), 0) INTO owed FROM billing.token_debts x
    WHERE x.user_id = g.user_id AND coalesce(x.project_id, billing._no_project()) = coalesce(g.project_id, billing._no_project())
      AND x.remaining > 0;
    IF owed = 0 THEN
        RETURN 0;
    END IF;
    pay := least(owed, g.remaining);
    INSERT INTO billing.token_spends (user_id, project_id, amount, reason, kind)
    VALUES (g.user_id, g.project_id, pay, format('repays %s owed token(s) from grant %s', pay, g.id), 'debt_repayment')
    RETURNING id INTO spend;
    INSERT INTO billing.token_spend_allocations (spend_id, grant_id, user_id, tokens) VALUES (spend, g.id, g.user_id, pay);
    left_to_pay := pay;
    FOR d IN SELECT x.id, x.remaining FROM billing.token_debts x
             WHERE x.user_id = g.user_id
               AND coalesce(x.project_id, billing._no_project()) = coalesce(g.project_id, billing._no_project())
               AND x.remaining > 0
             ORDER BY x.id FOR UPDATE LOOP
        EXIT WHEN left_to_pay = 0;
        c := least(d.remaining, left_to_pay);
        INSERT INTO billing.token_debt_settlements (debt_id, user_id, kind, tokens, spend_id)
        VALUES (d.id, g.user_id, 'repaid', c, spend);
        left_to_pay := left_to_pay - c;
    END LOOP;
    RETURN pay;
END
$$;
COMMENT ON FUNCTION billing._collect_debts(billing.token_grants) IS 'Internal: a new grant pays the oldest outstanding debts of its balance (a spend of kind debt_repayment); returns the tokens it paid.';

CREATE OR REPLACE FUNCTION billing.token_debt(user_id uuid DEFAULT NULL, project_id uuid DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    who uuid := coalesce(user_id, billing.current_user_id());
    total bigint;
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL when the caller is not signed in'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF who IS DISTINCT FROM billing.current_user_id() AND NOT billing._is_privileged() THEN
        RAISE EXCEPTION 'permission denied: you can only read your own debt'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT coalesce(sum(d.remaining), 0) INTO total FROM billing.token_debts d
    WHERE d.user_id = who AND coalesce(d.project_id, billing._no_project()) = coalesce(token_debt.project_id, billing._no_project())
      AND d.remaining > 0;
    RETURN total;
END
$$;
COMMENT ON FUNCTION billing.token_debt(uuid, uuid) IS 'Tokens a user (default: the caller) still owes for revocations of tokens already spent, for their own balance (project_id NULL) or one project. Later grants pay it off first.';

-- The debts' bookkeeping triggers (sql/payments/triggers.sql).

CREATE OR REPLACE FUNCTION billing._settle_debt() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- remaining >= 0 (a CHECK) makes a settlement beyond what is owed fail.
    UPDATE billing.token_debts d SET remaining = d.remaining - NEW.tokens
    WHERE d.id = NEW.debt_id AND d.user_id = NEW.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'settlement names debt % of another user', NEW.debt_id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION billing._settle_debt() IS 'Internal (trigger): a settlement takes its tokens from its debt, the only way a debt''s remaining changes.';
