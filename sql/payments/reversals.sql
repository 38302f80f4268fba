-- Bringing every grant to its purchase's reversed share (the rule: sql/payments/functions.sql,
-- DESIGN.md, "Refunds and disputes"): taking tokens back, one bookkeeping for revocations and
-- downgrades; giving them back; settling a purchase or a payment; and the debts left by tokens
-- already spent, which later grants pay off first.

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
    -- A pack's features go with the whole purchase only: a partial refund leaves them.
    PERFORM billing._settle_pack_passes(p.id, reversed >= p.amount_paid);
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
COMMENT ON FUNCTION billing._settle_purchase(text, text, text) IS 'Internal: brings every grant of a purchase to its reversed share (revoking or restoring the difference), ends its pack passes while all of it has gone back (reopens them otherwise), and notifies the user; idempotent and independent of the order of the reports.';

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
