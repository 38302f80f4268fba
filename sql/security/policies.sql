-- Access control, part 1: row-level security on every table. Users see their own rows;
-- privileged roles see and change everything (DESIGN.md, "Security").

SELECT billing._protect_table(t::regclass, own_rows => true)
FROM unnest(ARRAY['billing.customers', 'billing.subscriptions', 'billing.token_grants', 'billing.token_spends',
                  'billing.token_spend_allocations', 'billing.stripe_requests', 'billing.projects',
                  'billing.notifications', 'billing.purchases', 'billing.token_reversals', 'billing.token_debts',
                  'billing.token_debt_settlements', 'billing.token_overages',
                  'billing.balance_alerts', 'billing.expiry_warnings',
                  'billing.auto_top_ups', 'billing.pack_passes']) AS t;
SELECT billing._protect_table(t::regclass, own_rows => false)
FROM unnest(ARRAY['billing.config', 'billing.webhook_secrets', 'billing.stripe_events', 'billing.plans',
                  'billing.plan_prices', 'billing.deleted_customers', 'billing.checkout_line_items', 'billing.coupons',
                  'billing.purchase_payments', 'billing.stripe_charges', 'billing.stripe_refunds', 'billing.stripe_disputes',
                  'billing.stripe_credit_notes', 'billing.event_sync', 'billing.invoice_lines',
                  'billing.payment_lookups', 'billing.prices', 'billing.plan_features']) AS t;
-- Members read their teams and their teams' members, as every owned row (billing._visible_accounts).
SELECT billing._protect_table(t::regclass, own_rows => false)
FROM unnest(ARRAY['billing.accounts', 'billing.account_members']) AS t;
CREATE POLICY member_rows ON billing.accounts FOR SELECT USING (id = ANY ((SELECT billing._visible_accounts())::uuid[]));
CREATE POLICY member_rows ON billing.account_members FOR SELECT
    USING (account_id = ANY ((SELECT billing._visible_accounts())::uuid[]));
-- The catalog is public to signed-in users.
CREATE POLICY catalog_readable ON billing.plans FOR SELECT USING (true);

-- Functions added to billing later are private from the start (see billing._new_functions_private).
CREATE EVENT TRIGGER billing_new_functions_private ON ddl_command_end
    WHEN TAG IN ('CREATE FUNCTION', 'CREATE PROCEDURE')
    EXECUTE FUNCTION billing._new_functions_private();
