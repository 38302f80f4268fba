-- Settings: the defaults behind billing.config.

CREATE OR REPLACE FUNCTION billing._settings() RETURNS billing.config
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    c billing.config;
BEGIN
    -- PL/pgSQL rather than SQL: its plan is cached, and this runs on every webhook.
    SELECT * INTO c FROM billing.config;
    -- The one place the defaults live: NULL (or no row) means the default.
    c.id := true;
    c.webhook_tolerance_seconds := coalesce(c.webhook_tolerance_seconds, 300);
    c.request_max_attempts := coalesce(c.request_max_attempts, 5);
    c.renewal_grace_seconds := coalesce(c.renewal_grace_seconds, 86400);
    c.free_invoice_tokens := coalesce(c.free_invoice_tokens, 'plan');
    c.collect_tax_ids := coalesce(c.collect_tax_ids, true);
    c.save_payment_method := coalesce(c.save_payment_method, true);
    c.redirect_origins := coalesce(c.redirect_origins, '{}');
    c.max_pending_requests := coalesce(c.max_pending_requests, 5);
    c.request_retention_days := coalesce(c.request_retention_days, 30);
    c.event_retention_days := coalesce(c.event_retention_days, 90);
    c.debt_policy := coalesce(c.debt_policy, 'collect');
    c.revocation_scope := coalesce(c.revocation_scope, 'balance');
    c.past_due_grace_seconds := coalesce(c.past_due_grace_seconds, 604800);
    -- Off unless the operator sets a window: a new kind of notification must not start reaching
    -- users of an install just because it was upgraded, and a fresh install behaves the same
    -- (like low_balance_threshold).
    c.expiry_warning_days := coalesce(c.expiry_warning_days, 0);
    RETURN c;
END
$$;
COMMENT ON FUNCTION billing._settings() IS 'Internal: the billing.config row, or defaults when none was inserted.';
