-- Effects of invoice.* events: tokens for paid subscription invoices, and notifications when a
-- payment fails or needs the customer. Subscription status is not taken from invoices: the
-- customer.subscription.* events Stripe sends with them report it (DESIGN.md, "Ordering").

-- What a paid subscription invoice grants (README, "Tokens for subscriptions"). Only invoices
-- Stripe makes for subscriptions count (billing_reason subscription_create, subscription_cycle or
-- subscription_update); manual and threshold invoices grant nothing.
--   Lines: all of them. Stripe embeds one page (lines.has_more: there are more, and a renewal
--   after many plan changes lists its prorations first, so the period line may be past it);
--   then the worker retrieves every line into billing.invoice_lines and the event waits (BL010).
--   Period: every line that is not a proration, charges something (amount > 0; 0 too on an
--   invoice of amount 0, below) and whose price the catalog sells as a subscription: the plan's
--   monthly_tokens x quantity. That is a first period, a renewal, or a full new period a plan
--   change started (an interval change, a billing_cycle_anchor reset, a trial ended early). A
--   line that credits is never a period. Prices the catalog does not know (add-ons) are
--   ignored; an invoice with no known price at all fails with BL006 until the catalog has it.
--   Upgrade: proration lines after a plan change charge the new price (amount > 0) and credit
--   the old (amount < 0); the new plans' tokens less the old plans', when more than zero, are
--   granted (source plan_upgrade). Downgrades grant and take nothing. Upgrade tokens come with
--   the invoice that charges the proration: at once with proration_behavior=always_invoice, at
--   the next renewal with Stripe's default create_prorations.
--   Amount 0 (a trial, whose lines are 0; a 100%-off coupon): as if paid, unless
--   billing.config.free_invoice_tokens is none.
--   Expiry: the end of the latest period the invoice pays for plus renewal_grace_seconds, and
--   never before the moment of granting plus the grace (an invoice applied late still gives
--   usable tokens); never for a plan that rolls over.
CREATE OR REPLACE FUNCTION billing._invoice_grants(inv jsonb, uid uuid)
RETURNS TABLE (grant_key text, tokens bigint, source text, plan_id text, expires_at timestamptz)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    cfg billing.config := billing._settings();
    free boolean := coalesce((inv ->> 'amount_paid')::bigint, 0) = 0;
    lines jsonb := coalesce(inv -> 'lines', '[]');
    line jsonb;
    plan billing.plans;
    first_plan billing.plans;
    quantity bigint;
    amount bigint;
    period_tokens bigint := 0;
    new_tokens bigint := 0;
    old_tokens bigint := 0;
    unknown_price text;
    latest_end timestamptz;
    expiry timestamptz;
BEGIN
    IF coalesce(inv ->> 'billing_reason', '') NOT IN ('subscription_create', 'subscription_cycle', 'subscription_update')
       OR (free AND cfg.free_invoice_tokens = 'none') THEN
        RETURN;
    END IF;
    IF coalesce((inv ->> 'lines_has_more')::boolean, false) THEN
        SELECT jsonb_agg(jsonb_build_object('price_id', l.price_id, 'amount', l.amount, 'quantity', l.quantity,
                                            'proration', l.proration, 'period_end', extract(epoch FROM l.period_end))
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
        ELSIF amount > 0 THEN
            new_tokens := new_tokens + plan.monthly_tokens * quantity;
        ELSIF amount < 0 THEN
            old_tokens := old_tokens + plan.monthly_tokens * quantity;
        END IF;
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
    IF period_tokens > 0 THEN
        RETURN QUERY SELECT inv ->> 'id', period_tokens,
            CASE inv ->> 'billing_reason' WHEN 'subscription_create' THEN 'subscription_start' ELSE 'plan' END,
            first_plan.id, expiry;
    END IF;
    IF new_tokens > old_tokens THEN
        RETURN QUERY SELECT (inv ->> 'id') || ':upgrade', new_tokens - old_tokens, 'plan_upgrade', first_plan.id, expiry;
    END IF;
END
$$;
COMMENT ON FUNCTION billing._invoice_grants(jsonb, uuid) IS 'Internal: the grants a paid subscription invoice of a user makes (key, tokens, source, plan, expiry), from all its lines (BL010 while the worker retrieves those its events do not carry); the documented token rules for subscriptions live here.';

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
        -- a refund or dispute needs it, the worker asks (_await_payment_lookup): no Stripe call per
        -- renewal.
        PERFORM billing._link_payments(inv ->> 'id', inv ->> 'payment_intent', inv ->> 'charge');
        PERFORM billing._settle_purchase(inv ->> 'id', format('payment of invoice %s', inv ->> 'id'), ev ->> 'id');
    END IF;
END
$$;
COMMENT ON FUNCTION billing._apply_invoice(jsonb) IS 'Internal: invoice.paid grants the invoice''s tokens once (keyed by the invoice id); invoice.payment_failed and payment_action_required notify the user.';
