-- Effects of invoice.* events.

-- How many tokens a paid subscription invoice grants, and why (README "Proration"):
--   subscription_create / subscription_cycle: the plan's monthly_tokens x quantity for the period;
--   subscription_update (a proration invoice after a plan change): the difference between the new
--   and the old plan's monthly_tokens when it is an upgrade that was charged (amount_paid > 0),
--   nothing for downgrades; the new allowance starts in full at the next renewal;
--   any other billing_reason (manual, threshold, ...): nothing.
CREATE OR REPLACE FUNCTION billing._invoice_grant(inv jsonb, OUT tokens bigint, OUT source text, OUT plan billing.plans,
                                      OUT period_end timestamptz)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    line jsonb;
    old_tokens bigint;
BEGIN
    -- main_line, upgrade_line and replaced_price_id come from billing._normalize_event.
    IF inv ->> 'billing_reason' IN ('subscription_create', 'subscription_cycle') THEN
        line := inv -> 'main_line';
        plan := billing._plan_for_price(line ->> 'price_id');
        tokens := plan.monthly_tokens * greatest(coalesce((line ->> 'quantity')::bigint, 1), 1);
        source := CASE inv ->> 'billing_reason' WHEN 'subscription_create' THEN 'subscription_start' ELSE 'plan' END;
    ELSIF inv ->> 'billing_reason' = 'subscription_update' AND coalesce((inv ->> 'amount_paid')::bigint, 0) > 0 THEN
        line := inv -> 'upgrade_line';
        plan := billing._plan_for_price(line ->> 'price_id');
        SELECT p.monthly_tokens INTO old_tokens FROM billing.plans p WHERE p.stripe_price_id = inv ->> 'replaced_price_id';
        tokens := greatest(plan.monthly_tokens - coalesce(old_tokens, plan.monthly_tokens), 0);
        source := 'plan_upgrade';
    END IF;
    IF tokens IS NOT NULL AND NOT plan.rollover THEN
        period_end := billing._unix_time(line -> 'period_end');
    END IF;
END
$$;
COMMENT ON FUNCTION billing._invoice_grant(jsonb) IS 'Internal: tokens, source, plan and expiry a paid subscription invoice grants (the documented proration rule lives here).';

CREATE OR REPLACE FUNCTION billing._apply_invoice(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    inv jsonb := ev -> 'data';
    sub_id text := inv ->> 'subscription';
    uid uuid;
    g record;
    v billing.event_version := billing._event_version(ev, 0::smallint);
    period_start timestamptz;
    period_end timestamptz;
BEGIN
    IF sub_id IS NULL THEN
        RETURN;  -- a one-off invoice: nothing of ours
    END IF;
    -- Our checkouts put the user id in the subscription's metadata; only without it look further.
    uid := coalesce(billing._uuid_or_null(inv -> 'subscription_metadata' ->> 'user_id'),
                    billing._resolve_user(NULL, ev ->> 'customer', sub_id));
    IF ev ->> 'type' = 'invoice.payment_failed' THEN
        PERFORM billing._upsert_subscription_link(sub_id, uid, ev ->> 'customer');
        -- A failed first invoice leaves the subscription incomplete (Stripe reports that itself).
        IF inv ->> 'billing_reason' IS DISTINCT FROM 'subscription_create' THEN
            UPDATE billing.subscriptions s SET status = 'past_due', status_version = v, updated_at = now()
            WHERE s.stripe_subscription_id = sub_id AND billing._is_newer(v, s.status_version);
        END IF;
        PERFORM pg_notify('billing_payment_failed', uid::text);
        RETURN;
    END IF;

    -- invoice.paid: the period it paid for is current, and the subscription is active.
    period_start := billing._unix_time(inv -> 'main_line' -> 'period_start');
    period_end := billing._unix_time(inv -> 'main_line' -> 'period_end');
    -- Usually the row exists and this event changes nothing (the subscription event of the same
    -- second outranks it): then nothing is written.
    IF NOT billing._update_subscription_from_invoice(sub_id, v, period_start, period_end, ev ->> 'customer')
       AND NOT EXISTS (SELECT FROM billing.subscriptions s WHERE s.stripe_subscription_id = sub_id) THEN
        INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, stripe_customer_id, status,
            status_version, current_period_start, current_period_end, period_version)
        VALUES (sub_id, uid, ev ->> 'customer', 'active', v, period_start, period_end,
                CASE WHEN period_end IS NOT NULL THEN v END)
        ON CONFLICT (stripe_subscription_id) DO NOTHING;
        IF NOT FOUND THEN
            -- A concurrent event created the row first; it is visible now.
            PERFORM billing._update_subscription_from_invoice(sub_id, v, period_start, period_end, ev ->> 'customer');
        END IF;
    END IF;

    SELECT * INTO g FROM billing._invoice_grant(inv);
    IF coalesce(g.tokens, 0) > 0 THEN
        PERFORM billing._insert_grant(uid, g.tokens, g.source, g.period_end, NULL, inv ->> 'id',
            jsonb_build_object('invoice_id', inv ->> 'id', 'subscription_id', sub_id,
                               'billing_reason', inv ->> 'billing_reason', 'amount_paid', inv -> 'amount_paid',
                               'currency', inv -> 'currency', 'plan_id', (g.plan).id, 'event_id', ev ->> 'id'));
    END IF;
END
$$;
COMMENT ON FUNCTION billing._apply_invoice(jsonb) IS 'Internal: invoice.paid grants the period''s tokens once per invoice (keyed by its id) and updates the period; invoice.payment_failed marks the subscription past_due and NOTIFYs billing_payment_failed with the user id.';
