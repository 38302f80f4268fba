-- Effects of invoice.* events: tokens for paid subscription invoices, and notifications when a
-- payment fails or needs the customer. Subscription status is not taken from invoices: the
-- customer.subscription.* events Stripe sends with them report it (DESIGN.md, "Ordering").

-- What a paid subscription invoice grants (docs/events-and-refunds.md, "What events do"). Only invoices Stripe makes
-- for subscriptions count (billing_reason subscription_create, subscription_cycle or
-- subscription_update); manual and threshold invoices grant nothing.
--   Lines: all of them. Stripe embeds one page (lines.has_more: there are more, and a renewal
--   after many plan changes lists its prorations first, so the period line may be past it);
--   then the worker retrieves every line into billing.invoice_lines and the event waits (BL010).
--   Period: every line that is not a proration, charges something (amount > 0; 0 too on a free
--   invoice, below) and whose price the catalog sells as a subscription: the plan's
--   monthly_tokens x quantity. That is a first period, a renewal, or a full new period a plan
--   change started (an interval change, a billing_cycle_anchor reset, a trial ended early). A
--   line that credits is never a period. Prices the catalog does not know (add-ons) are
--   ignored; an invoice with no known price at all fails with BL006 until the catalog has it.
--   Plan changes (issue 20): a proration line is worth the share of its plan its money is,
--   fraction = |amount| / (unit amount x quantity), at most 1, so its tokens are
--   monthly_tokens x quantity x fraction, exact (numeric, no rounding per line). Tokens, like
--   Stripe's money, then follow what was really paid for: upgrading late in a period and going
--   back down cannot gain anything. The unit amount is the catalog's for the line's price
--   (billing.prices, synced from price events and retrievals), else the line's expanded Price
--   (before basil, price.unit_amount(_decimal)); basil's proration lines carry
--   pricing.unit_amount_decimal null, so with neither the invoice waits (BL010) while the
--   worker retrieves the price. A price without a unit amount (tiered: Stripe's Price has
--   unit_amount null): the line's period is its share of the period of a non-proration line of
--   the same price on the same invoice (only a renewal under create_prorations has one);
--   failing that the line is worth nothing, since no order-independent length of its plan
--   period is known from the invoice alone. Net = charging lines' tokens - crediting lines' tokens:
--   above 0, floor(net) is granted (source plan_upgrade, key <invoice>:upgrade); below 0,
--   ceil(-net) is returned as a row of negative tokens (key <invoice>:downgrade) that the
--   caller takes back from the balance (_take_back_downgrade). Floor one way, ceiling the
--   other: an up-and-down cycle never gains a token. Prorations come with the invoice that
--   bills them: at once with proration_behavior=always_invoice, with the next renewal (beside
--   its period line) under Stripe's default create_prorations.
--   Free: an invoice whose total is 0 (a trial, whose lines are 0; a 100%-off coupon), or below
--   (credits above the charges), grants as if paid, unless billing.config.free_invoice_tokens is none. A renewal the customer's
--   credit balance paid (amount_paid 0, total > 0) is paid, not free. A downgrade's take-back
--   happens on any invoice (one with always_invoice has a negative total Stripe credits to
--   the customer's balance).
--   Expiry: the end of the latest period the invoice pays for plus renewal_grace_seconds, and
--   never before the moment of granting plus the grace (an invoice applied late still gives
--   usable tokens); never for a plan that rolls over.
CREATE OR REPLACE FUNCTION billing._invoice_grants(inv jsonb, uid uuid)
RETURNS TABLE (grant_key text, tokens bigint, source text, plan_id text, expires_at timestamptz)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    cfg billing.config := billing._settings();
    -- Nothing to pay: a total of 0 (or a credit above the charges). amount_paid 0 alone is not
    -- free: the customer's credit balance may have paid.
    free boolean := coalesce((inv ->> 'total')::bigint, (inv ->> 'amount_paid')::bigint, 0) <= 0;
    grants_nothing boolean;
    lines jsonb := coalesce(inv -> 'lines', '[]');
    line jsonb;
    plan billing.plans;
    first_plan billing.plans;
    quantity bigint;
    amount bigint;
    unit numeric;
    price_known boolean;
    fraction numeric;
    full_period numeric;
    period_tokens bigint := 0;
    net numeric := 0;
    unknown_price text;
    latest_end timestamptz;
    expiry timestamptz;
BEGIN
    IF coalesce(inv ->> 'billing_reason', '') NOT IN ('subscription_create', 'subscription_cycle', 'subscription_update') THEN
        RETURN;
    END IF;
    grants_nothing := free AND cfg.free_invoice_tokens = 'none';
    IF coalesce((inv ->> 'lines_has_more')::boolean, false) THEN
        SELECT jsonb_agg(jsonb_build_object('price_id', l.price_id, 'amount', l.amount, 'quantity', l.quantity,
                                            'proration', l.proration, 'unit_amount', l.unit_amount,
                                            'period_start', extract(epoch FROM l.period_start),
                                            'period_end', extract(epoch FROM l.period_end))
                         ORDER BY l.position)
        INTO lines FROM billing.invoice_lines l WHERE l.invoice_id = inv ->> 'id';
        IF lines IS NULL THEN
            RAISE EXCEPTION 'waiting for the lines of % from Stripe', inv ->> 'id'
                USING ERRCODE = 'BL010',
                      DETAIL = jsonb_build_object('kind', 'line_items', 'object_id', inv ->> 'id', 'user_id', uid)::text,
                      HINT = 'Its events carry one page of lines; the worker retrieves them all and the event is applied when they arrive.';
        END IF;
    END IF;
    FOR line IN SELECT value FROM jsonb_array_elements(lines) LOOP
        latest_end := greatest(latest_end, billing._unix_time(line -> 'period_end'));
        CONTINUE WHEN line ->> 'price_id' IS NULL;
        plan := billing._plan_of_price(line ->> 'price_id');
        IF plan.id IS NULL OR plan.kind <> 'subscription' THEN
            unknown_price := coalesce(unknown_price, line ->> 'price_id');
            CONTINUE;
        END IF;
        IF first_plan.id IS NULL THEN
            first_plan := plan;
        END IF;
        quantity := greatest(coalesce((line ->> 'quantity')::bigint, 1), 1);
        amount := coalesce((line ->> 'amount')::bigint, 0);
        IF NOT coalesce((line ->> 'proration')::boolean, false) THEN
            IF amount > 0 OR (amount = 0 AND free) THEN
                period_tokens := period_tokens + plan.monthly_tokens * quantity;
            END IF;
            CONTINUE;
        END IF;
        CONTINUE WHEN amount = 0;
        -- The price's unit amount: the catalog's, synced from Stripe; else the line's expanded
        -- Price (before basil). Basil's proration lines carry none, so an amount the catalog
        -- lacks is retrieved (GET /v1/prices/{id}) and the invoice waits for it.
        SELECT true, pr.unit_amount INTO price_known, unit FROM billing.prices pr
        WHERE pr.stripe_price_id = line ->> 'price_id';
        IF NOT coalesce(price_known, false) THEN
            unit := (line ->> 'unit_amount')::numeric;
            IF unit IS NULL THEN
                RAISE EXCEPTION 'waiting for the price % from Stripe', line ->> 'price_id'
                    USING ERRCODE = 'BL010',
                          DETAIL = jsonb_build_object('kind', 'refresh', 'object_id', line ->> 'price_id', 'user_id', uid)::text,
                          HINT = 'A proration line is valued against its price''s amount, which the catalog (billing.prices) does not have yet; the worker retrieves the price and the event is applied when it arrives.';
            END IF;
        END IF;
        unit := abs(unit);
        IF unit > 0 THEN
            fraction := least(abs(amount) / (unit * quantity), 1);
        ELSE
            -- No unit amount: the line's period against a full period of the same price billed
            -- on this invoice, if there is one.
            SELECT max((p.value ->> 'period_end')::numeric - (p.value ->> 'period_start')::numeric) INTO full_period
            FROM jsonb_array_elements(lines) p
            WHERE p.value ->> 'price_id' = line ->> 'price_id' AND NOT coalesce((p.value ->> 'proration')::boolean, false);
            fraction := CASE WHEN full_period > 0 THEN
                least(greatest((line ->> 'period_end')::numeric - (line ->> 'period_start')::numeric, 0) / full_period, 1)
                ELSE 0 END;
        END IF;
        net := net + sign(amount) * plan.monthly_tokens * quantity * coalesce(fraction, 0);
    END LOOP;
    IF first_plan.id IS NULL THEN
        IF unknown_price IS NOT NULL THEN
            PERFORM billing._plan_for_price(unknown_price);  -- raises BL006
        END IF;
        RETURN;
    END IF;
    IF NOT first_plan.rollover THEN
        expiry := greatest(latest_end, now()) + make_interval(secs => cfg.renewal_grace_seconds);
    END IF;
    IF period_tokens > 0 AND NOT grants_nothing THEN
        RETURN QUERY SELECT inv ->> 'id', period_tokens,
            CASE inv ->> 'billing_reason' WHEN 'subscription_create' THEN 'subscription_start' ELSE 'plan' END,
            first_plan.id, expiry;
    END IF;
    IF floor(net) >= 1 AND NOT grants_nothing THEN
        RETURN QUERY SELECT (inv ->> 'id') || ':upgrade', floor(net)::bigint, 'plan_upgrade', first_plan.id, expiry;
    ELSIF net < 0 THEN
        RETURN QUERY SELECT (inv ->> 'id') || ':downgrade', -ceil(-net)::bigint, 'plan_downgrade', first_plan.id,
            NULL::timestamptz;
    END IF;
END
$$;
COMMENT ON FUNCTION billing._invoice_grants(jsonb, uuid) IS 'Internal: the grants a paid subscription invoice of a user makes (key, tokens, source, plan, expiry), from all its lines (BL010 while the worker retrieves those its events do not carry), and, as a row of negative tokens, what a downgrade''s prorations take back; the documented token rules for subscriptions live here.';

-- A downgrade's take-back (see _invoice_grants): once per invoice (take_key, unique), from the
-- user's own balance like a revocation, the subscription's grants first, then the soonest-
-- expiring others; never below zero, and what was already spent becomes a debt (debt_policy
-- collect or write_off). With revocation_scope grant only the subscription's live grants give
-- and the rest is recorded as not taken: the allowance of the period the proration covers is
-- what the plan change shrank. It is no purchase reversal: nothing was refunded, and settling
-- a purchase never sees it (it names no purchase or grant). Rows are locked in spend order, so
-- it never deadlocks with spends.
CREATE OR REPLACE FUNCTION billing._take_back_downgrade(uid uuid, sub_id text, invoice_id text, tokens bigint,
                                                        reason text, event_id text) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    cfg billing.config := billing._settings();
    key text := invoice_id || ':downgrade';
    ids bigint[] := '{}';
    takes bigint[] := '{}';
    left_to_take bigint := tokens;
    take bigint;
    o record;
    rev billing.token_reversals;
BEGIN
    IF tokens <= 0 OR EXISTS (SELECT FROM billing.token_reversals r WHERE r.take_key = key) THEN
        RETURN;
    END IF;
    FOR o IN
        SELECT t.id, t.remaining FROM billing.token_grants t
        WHERE t.user_id = uid AND t.project_id IS NULL
          AND t.remaining > 0 AND coalesce(t.expires_at, 'infinity'::timestamptz) > now()
        ORDER BY coalesce(t.expires_at, 'infinity'::timestamptz), t.created_at, t.id
        FOR UPDATE
    LOOP
        NULL;  -- locks only
    END LOOP;
    FOR o IN
        SELECT t.id, t.remaining FROM billing.token_grants t
        WHERE t.user_id = uid AND t.project_id IS NULL
          AND t.remaining > 0 AND coalesce(t.expires_at, 'infinity'::timestamptz) > now()
          AND (cfg.revocation_scope = 'balance' OR t.metadata ->> 'subscription_id' = sub_id)
        ORDER BY (t.metadata ->> 'subscription_id' IS NOT DISTINCT FROM sub_id) DESC,
                 coalesce(t.expires_at, 'infinity'::timestamptz), t.created_at, t.id
    LOOP
        EXIT WHEN left_to_take = 0;
        take := least(o.remaining, left_to_take);
        ids := ids || o.id;
        takes := takes || take;
        left_to_take := left_to_take - take;
    END LOOP;
    rev := billing._book_take(uid, NULL, NULL, NULL, 'downgrade', tokens, ids, takes, reason, event_id, key);
    PERFORM billing._notify(uid, 'tokens_revoked', event_id,
        jsonb_build_object('invoice_id', invoice_id, 'subscription_id', sub_id, 'tokens', tokens, 'taken', rev.taken,
                           'debt', rev.debt, 'reason', reason, 'balance', billing._live_balance(uid, NULL),
                           'project_id', NULL));
    IF rev.debt > 0 THEN
        PERFORM billing._notify(uid, 'debt_created', event_id,
            jsonb_build_object('invoice_id', invoice_id, 'tokens', rev.debt, 'reason', reason, 'project_id', NULL,
                               'written_off', cfg.debt_policy = 'write_off'));
    END IF;
END
$$;
COMMENT ON FUNCTION billing._take_back_downgrade(uuid, text, text, bigint, text, text) IS 'Internal: takes back, once per invoice, the tokens a downgrade''s prorations credit (the subscription''s grants first, then the balance; the spent part a debt, or not taken with revocation_scope grant) and notifies the user (tokens_revoked, debt_created).';

CREATE OR REPLACE FUNCTION billing._apply_invoice(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    inv jsonb := ev -> 'data';
    sub_id text := inv ->> 'subscription';
    uid uuid;
    g record;
    recorded boolean := false;
BEGIN
    IF sub_id IS NULL THEN
        RETURN;  -- a one-off invoice: nothing of ours
    END IF;
    -- Our checkouts put the user id in the subscription's metadata; only without it look further.
    uid := coalesce(billing._uuid_or_null(inv -> 'subscription_metadata' ->> 'user_id'),
                    billing._resolve_user(NULL, ev ->> 'customer', sub_id));
    PERFORM billing._upsert_subscription_link(sub_id, uid, ev ->> 'customer');
    IF ev ->> 'type' IN ('invoice.payment_failed', 'invoice.payment_action_required') THEN
        -- The app tells the user; hosted_invoice_url is where they pay or confirm (3-D Secure).
        PERFORM billing._notify(uid, replace(ev ->> 'type', 'invoice.', ''), ev ->> 'id',
            jsonb_build_object('invoice_id', inv ->> 'id', 'subscription_id', sub_id,
                               'hosted_invoice_url', inv ->> 'hosted_invoice_url',
                               'amount_due', inv -> 'amount_due', 'currency', inv -> 'currency'));
        RETURN;
    END IF;
    FOR g IN SELECT * FROM billing._invoice_grants(inv, uid) LOOP
        IF g.tokens < 0 THEN
            -- Rows come grants first, so a renewal's own period grant is there to take from.
            PERFORM billing._take_back_downgrade(uid, sub_id, inv ->> 'id', -g.tokens,
                format('plan downgrade on invoice %s', inv ->> 'id'), ev ->> 'id');
            CONTINUE;
        END IF;
        IF NOT recorded THEN
            PERFORM billing._lock_payment(inv ->> 'id');  -- beside its credit notes
            PERFORM billing._record_purchase(inv ->> 'id', uid, NULL, ev ->> 'customer', (inv ->> 'amount_paid')::bigint,
                                             inv ->> 'currency');
            recorded := true;
        END IF;
        PERFORM billing._insert_grant(uid, g.tokens, g.source, g.expires_at, NULL, g.grant_key,
            jsonb_strip_nulls(jsonb_build_object('invoice_id', inv ->> 'id', 'subscription_id', sub_id,
                'billing_reason', inv ->> 'billing_reason', 'amount_paid', inv -> 'amount_paid',
                'currency', inv -> 'currency', 'plan_id', g.plan_id, 'payment_intent', inv -> 'payment_intent',
                'event_id', ev ->> 'id')), inv ->> 'id');
    END LOOP;
    IF recorded THEN
        -- Which payment paid the invoice: before basil the invoice says; from basil on only its
        -- payments do, which invoice events do not carry. Then invoice_payment.paid says, or, when
        -- a refund or dispute needs it, the worker asks (_ask_payment_lookup): no Stripe call per
        -- renewal.
        PERFORM billing._link_payments(inv ->> 'id', inv ->> 'payment_intent', inv ->> 'charge');
        PERFORM billing._settle_purchase(inv ->> 'id', format('payment of invoice %s', inv ->> 'id'), ev ->> 'id');
    END IF;
END
$$;
COMMENT ON FUNCTION billing._apply_invoice(jsonb) IS 'Internal: invoice.paid grants the invoice''s tokens once (keyed by the invoice id) and takes back once what a downgrade''s prorations credit; invoice.payment_failed and payment_action_required notify the user.';
