-- Settings: one optional row of operator configuration. NULL (or no row) means the documented
-- default, which lives in one place: billing._settings().

CREATE TABLE billing.config (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    checkout_success_url text CHECK (checkout_success_url ~ '^https?://'),
    checkout_cancel_url text CHECK (checkout_cancel_url ~ '^https?://'),
    portal_return_url text CHECK (portal_return_url ~ '^https?://'),
    webhook_tolerance_seconds integer CHECK (webhook_tolerance_seconds >= 0),
    request_max_attempts integer CHECK (request_max_attempts BETWEEN 1 AND 100),
    renewal_grace_seconds integer CHECK (renewal_grace_seconds >= 0),
    free_invoice_tokens text CHECK (free_invoice_tokens IN ('plan', 'none')),
    collect_tax_ids boolean,
    save_payment_method boolean,
    redirect_origins text[] CHECK (cardinality(redirect_origins) = 0
        OR (' ' || array_to_string(redirect_origins, ' ')) ~ '^( https?://[a-z0-9.-]+(:[0-9]{1,5})?)+$'),
    max_pending_requests integer CHECK (max_pending_requests BETWEEN 1 AND 1000),
    request_retention_days integer CHECK (request_retention_days >= 1),
    event_retention_days integer CHECK (event_retention_days >= 31),
    debt_policy text CHECK (debt_policy IN ('collect', 'write_off')),
    revocation_scope text CHECK (revocation_scope IN ('grant', 'balance')),
    -- Entitlements (issue 23, item 3).
    past_due_grace_seconds integer CHECK (past_due_grace_seconds >= 0),
    -- alerts (sql/alerts/): low-balance alerts and expiry warnings.
    low_balance_threshold bigint CHECK (low_balance_threshold BETWEEN 0 AND 1000000000000),
    expiry_warning_days integer CHECK (expiry_warning_days BETWEEN 0 AND 365),
    -- Seats (issue 23, item 2): how a seat change is billed.
    seat_proration_behavior text CHECK (seat_proration_behavior IN ('create_prorations', 'always_invoice', 'none'))
);
COMMENT ON TABLE billing.config IS 'Optional single-row settings: default Checkout/Portal URLs, webhook tolerance, request retry limit, token rules. Without a row (or with NULLs) the documented defaults apply. Privileged roles only.';
COMMENT ON COLUMN billing.config.id IS 'Always true: keeps the table to one row.';
COMMENT ON COLUMN billing.config.checkout_success_url IS 'Default success_url for billing.request_checkout when the caller passes none.';
COMMENT ON COLUMN billing.config.checkout_cancel_url IS 'Default cancel_url for billing.request_checkout when the caller passes none.';
COMMENT ON COLUMN billing.config.portal_return_url IS 'Default return_url for billing.request_portal when the caller passes none.';
COMMENT ON COLUMN billing.config.webhook_tolerance_seconds IS 'Maximum age (either direction) of a webhook signature timestamp; 0 disables the check; NULL = 300.';
COMMENT ON COLUMN billing.config.request_max_attempts IS 'How many times the worker tries an outbound Stripe request before failing it; NULL = 5.';
COMMENT ON COLUMN billing.config.renewal_grace_seconds IS 'How long a plan period''s tokens stay spendable after the period ends, so a renewal paid a little late (Stripe charges about an hour after the period starts) leaves no gap; NULL = 86400 (one day).';
COMMENT ON COLUMN billing.config.free_invoice_tokens IS 'What a paid invoice whose total is 0 (a trial, a 100%-off coupon) grants: plan = the plan''s allowance as if paid, none = nothing; NULL = plan. An invoice the customer''s credit balance paid (amount_paid 0, total above 0) is paid, not free; a downgrade''s take-back happens either way.';
COMMENT ON COLUMN billing.config.collect_tax_ids IS 'Whether Checkout collects business tax IDs (tax_id_collection, with customer_update[name] and [address] = auto as Stripe requires for an existing customer); NULL = true.';
COMMENT ON COLUMN billing.config.redirect_origins IS 'Origins (scheme://host[:port], lower case) that success, cancel and return URLs passed by callers may point to, besides the origins of the default URLs above; anything else is refused (BL013). NULL = only the defaults'' origins.';
COMMENT ON COLUMN billing.config.max_pending_requests IS 'How many checkout and portal requests one user may have queued or running at once (BL011 beyond); NULL = 5.';
COMMENT ON COLUMN billing.config.request_retention_days IS 'billing.prune() deletes finished requests older than this; NULL = 30.';
COMMENT ON COLUMN billing.config.event_retention_days IS 'billing.prune() deletes applied events older than this (at least 31: Stripe redelivers for 3 days and lists events for 30); NULL = 90.';
COMMENT ON COLUMN billing.config.debt_policy IS 'What happens to tokens a refund, dispute, credit note or downgrade takes back after they were spent: collect = recorded as a debt that later grants pay off first, write_off = recorded and written off at once; NULL = collect.';
COMMENT ON COLUMN billing.config.revocation_scope IS 'Where a refund, dispute or credit note takes tokens back from: grant = only the refunded grant (even expired) and what was restored for it, the rest is recorded as not taken (no debt), so refunding last month''s invoice leaves this month''s allowance alone; balance = the grant, then the balance''s other live grants, then a debt (debt_policy). NULL = balance: money that goes back takes its tokens back wherever they are, so buying, spending and refunding cannot keep what was used. A downgrade''s take-back likewise takes, with grant, only from the subscription''s live grants (the rest not taken), and with balance from them and then the rest of the balance.';
COMMENT ON COLUMN billing.config.past_due_grace_seconds IS 'How long a past_due subscription keeps its plan''s features (billing.has_feature, billing.feature_limit) after it became past due (billing.subscriptions.status_since), while Stripe retries the payment; 0 = features stop at once; NULL = 604800 (7 days). billing.subscription_status still reports past_due as active until Stripe gives up.';
COMMENT ON COLUMN billing.config.save_payment_method IS 'Whether a token pack''s card is saved to the customer for the next purchase (payment_intent_data[setup_future_usage] = on_session); NULL = true.';

COMMENT ON COLUMN billing.config.low_balance_threshold IS 'Default low-balance threshold of every balance without one of its own (billing.balance_alerts): a spend that takes a balance from above it to at or below it writes one low_balance notification; NULL = no alerts by default.';
COMMENT ON COLUMN billing.config.expiry_warning_days IS 'billing.warn_expiring_grants() (the worker, with billing.prune()) writes one tokens_expiring notification for each unspent grant expiring within this many days (1 to 365; 0: never); NULL = 0, so warnings are off until the operator sets a window.';
COMMENT ON COLUMN billing.config.seat_proration_behavior IS 'How Stripe bills a seat change (billing.request_seat_change), sent as proration_behavior: create_prorations = the added or removed seats'' share of the period goes on the next renewal invoice; always_invoice = invoiced (or credited) at once; none = no proration, the new quantity is billed from the next period. The tokens follow what the invoices charge. NULL = create_prorations, Stripe''s default.';

SELECT pg_catalog.pg_extension_config_dump('billing.config', '');
