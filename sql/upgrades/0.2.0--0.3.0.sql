-- The hand-written part of the 0.2.0 -> 0.3.0 upgrade: changes to state (tables, types, indexes,
-- triggers, policies) and to function signatures. The code files of sql/manifest.txt are
-- replayed where the @replay line stands, so everything they define is up to date after it.

-- Event normalisation is one SQL implementation in both editions (sql/events/normalize.sql).
-- The extension's billing._normalize_event was Rust; the replay replaces it with the SQL one.
-- The pure-SQL edition's PL/pgSQL twin had helpers of its own, which go (IF EXISTS: the
-- extension never had them). Functions whose bodies use others go first, as SQL functions with
-- a RETURN body depend on what they call.
DROP FUNCTION IF EXISTS billing._normalize_money(text, jsonb);
DROP FUNCTION IF EXISTS billing._normalize_checkout_session(jsonb);
DROP FUNCTION IF EXISTS billing._normalize_customer(jsonb);
DROP FUNCTION IF EXISTS billing._normalize_subscription(jsonb);
DROP FUNCTION IF EXISTS billing._normalize_invoice(jsonb);
DROP FUNCTION IF EXISTS billing._credit_note_refunds(jsonb);
DROP FUNCTION IF EXISTS billing._readable_items(jsonb, text[]);
DROP FUNCTION IF EXISTS billing._readable_object(jsonb, text[]);
DROP FUNCTION IF EXISTS billing._reference_readable(jsonb);
DROP FUNCTION IF EXISTS billing._reference(jsonb);
DROP FUNCTION IF EXISTS billing._lenient_text(jsonb);
DROP FUNCTION IF EXISTS billing._lenient_int(jsonb);
DROP FUNCTION IF EXISTS billing._lenient_bool(jsonb);
DROP FUNCTION IF EXISTS billing._lenient_map(jsonb);

-- Every line of a subscription invoice with more lines than its events carry (issue 20).
CREATE TABLE billing.invoice_lines (
    invoice_id text NOT NULL CHECK (invoice_id ~ '^in_[A-Za-z0-9_]+$'),
    position integer NOT NULL CHECK (position >= 0),
    price_id text,
    amount bigint,
    quantity bigint,
    proration boolean NOT NULL,
    unit_amount numeric,
    period_start timestamptz,
    period_end timestamptz,
    retrieved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_id, position)
);
COMMENT ON TABLE billing.invoice_lines IS 'Every line of a subscription invoice with more lines than its events carry (Stripe embeds one page), retrieved from Stripe and read instead of the embedded page. Privileged roles only.';
COMMENT ON COLUMN billing.invoice_lines.invoice_id IS 'The invoice (in_...).';
COMMENT ON COLUMN billing.invoice_lines.position IS 'Order of the line within the invoice, as Stripe lists them, from 0.';
COMMENT ON COLUMN billing.invoice_lines.price_id IS 'The Stripe price of the line.';
COMMENT ON COLUMN billing.invoice_lines.amount IS 'What the line charges (negative: a credit), in the smallest currency unit.';
COMMENT ON COLUMN billing.invoice_lines.quantity IS 'The line''s quantity.';
COMMENT ON COLUMN billing.invoice_lines.unit_amount IS 'The unit amount of the line''s price (a decimal, in the smallest currency unit), of which a proration line''s amount is a share; NULL when Stripe gives none (tiered prices).';
COMMENT ON COLUMN billing.invoice_lines.proration IS 'Whether the line is a proration (a plan change''s charge or credit) rather than a period.';
COMMENT ON COLUMN billing.invoice_lines.period_start IS 'Start of the period the line bills.';
COMMENT ON COLUMN billing.invoice_lines.period_end IS 'End of the period the line bills.';
COMMENT ON COLUMN billing.invoice_lines.retrieved_at IS 'When the worker retrieved it from Stripe.';
SELECT pg_catalog.pg_extension_config_dump('billing.invoice_lines', '');
COMMENT ON COLUMN billing.stripe_requests.kind IS 'checkout or portal (a user''s session), refresh (retrieve a subscription whose same-second events disagree, an invoice''s payments, or the invoices a PaymentIntent paid when a refund or dispute needs them) or line_items (retrieve what a Checkout Session sold, or every line of an invoice).';
-- A grant's lines may now wait for the worker (BL010), which needs the user.
DROP FUNCTION billing._invoice_grants(jsonb);

-- Money that comes back gives tokens back (issue 20). A charge's amount_refunded is now its newest
-- report's (a snapshot), and a refund records when it failed or was canceled, so that a charge
-- report made before then no longer counts it. Rows of 0.2.0 keep their largest total as the
-- report of their last change, and a refund already failed ended at its report.
ALTER TABLE billing.stripe_charges ADD COLUMN reported_at timestamptz NOT NULL DEFAULT '-infinity';
UPDATE billing.stripe_charges SET reported_at = updated_at;
COMMENT ON TABLE billing.stripe_charges IS 'Charges as charge.* events reported them; amount_refunded is the newest report''s (a snapshot: a refund that failed since no longer counts). Privileged roles only.';
COMMENT ON COLUMN billing.stripe_charges.amount_refunded IS 'Total refunded as of reported_at (of two reports of the same second, the larger).';
COMMENT ON COLUMN billing.stripe_charges.reported_at IS 'Stripe''s time of the report amount_refunded comes from.';
ALTER TABLE billing.stripe_refunds ADD COLUMN ended_at timestamptz;
UPDATE billing.stripe_refunds SET ended_at = reported_at WHERE status IN ('failed', 'canceled');
COMMENT ON TABLE billing.stripe_refunds IS 'Refunds as refund.* and charge.refund.updated events reported them. A failed or canceled refund moves no money: it counts neither by itself nor in its charge''s reports made before it ended. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_refunds.ended_at IS 'Stripe''s time of the first report of it failed or canceled; NULL while it is not.';

-- Where a revocation takes tokens from is an operator setting (issue 20): with revocation_scope
-- grant, what the refunded grant no longer holds is recorded as not taken instead of being taken
-- from the balance or owed, and a restoration cancels it before giving anything back.
ALTER TABLE billing.config ADD COLUMN revocation_scope text CHECK (revocation_scope IN ('grant', 'balance'));
COMMENT ON COLUMN billing.config.revocation_scope IS 'Where a refund, dispute or credit note takes tokens back from: grant = only the refunded grant (even expired) and what was restored for it, the rest is recorded as not taken (no debt), so refunding last month''s invoice leaves this month''s allowance alone; balance = the grant, then the balance''s other live grants, then a debt (debt_policy). NULL = balance: money that goes back takes its tokens back wherever they are, so buying, spending and refunding cannot keep what was used. A downgrade''s take-back likewise takes, with grant, only from the subscription''s live grants (the rest not taken), and with balance from them and then the rest of the balance.';
ALTER TABLE billing.token_reversals ADD COLUMN not_taken bigint NOT NULL DEFAULT 0 CHECK (not_taken >= 0);
ALTER TABLE billing.token_reversals DROP CONSTRAINT token_reversals_adds_up;
ALTER TABLE billing.token_reversals ADD CONSTRAINT token_reversals_adds_up CHECK (CASE kind
    WHEN 'revoke' THEN taken + debt + not_taken = tokens AND debt_forgiven = 0 AND restored_grant_id IS NULL
                       AND (spend_id IS NOT NULL) = (taken > 0)
    ELSE taken = 0 AND debt = 0 AND spend_id IS NULL
         AND (restored_grant_id IS NOT NULL) = (tokens > debt_forgiven + not_taken)
         AND debt_forgiven + not_taken <= tokens END);
COMMENT ON COLUMN billing.token_reversals.not_taken IS 'revoke: tokens neither taken nor owed, because the grant no longer held them and revocation_scope grant forbids taking them from the rest of the balance; restore: tokens of such revocations, cancelled without giving anything back (nothing was taken for them).';
COMMENT ON COLUMN billing.token_reversals.taken IS 'revoke: tokens taken from the balance (the grant first, then, with revocation_scope balance, the soonest-expiring others).';

-- Plan downgrades take back what their prorations credited (issue 20, item 1): a reversal of
-- kind downgrade, keyed once per invoice, of no purchase or grant (nothing was refunded, so
-- settling a purchase never sees or undoes it).
ALTER TABLE billing.token_reversals ALTER COLUMN purchase_id DROP NOT NULL;
ALTER TABLE billing.token_reversals ALTER COLUMN grant_id DROP NOT NULL;
ALTER TABLE billing.token_reversals DROP CONSTRAINT token_reversals_kind_check;
ALTER TABLE billing.token_reversals ADD CONSTRAINT token_reversals_kind_check
    CHECK (kind IN ('revoke', 'restore', 'downgrade'));
ALTER TABLE billing.token_reversals ADD COLUMN take_key text UNIQUE;
ALTER TABLE billing.token_reversals DROP CONSTRAINT token_reversals_adds_up;
ALTER TABLE billing.token_reversals ADD CONSTRAINT token_reversals_adds_up CHECK (CASE kind
    WHEN 'restore' THEN taken = 0 AND debt = 0 AND spend_id IS NULL
         AND (restored_grant_id IS NOT NULL) = (tokens > debt_forgiven + not_taken)
         AND debt_forgiven + not_taken <= tokens
    ELSE taken + debt + not_taken = tokens AND debt_forgiven = 0 AND restored_grant_id IS NULL
         AND (spend_id IS NOT NULL) = (taken > 0) END);
ALTER TABLE billing.token_reversals ADD CONSTRAINT token_reversals_owner CHECK (CASE kind
    WHEN 'downgrade' THEN take_key IS NOT NULL AND purchase_id IS NULL AND grant_id IS NULL
    ELSE take_key IS NULL AND purchase_id IS NOT NULL AND grant_id IS NOT NULL END);

COMMENT ON TABLE billing.token_reversals IS 'Tokens taken back from a grant because its purchase was refunded, disputed or credited (revoke), given back when a dispute is won or a credit note voided (restore), and taken back from the balance once per invoice whose plan-change prorations credit more than they charge (downgrade). A grant''s net revoked tokens are always its purchase''s reversed share of it. Append-only; users read their own rows.';
COMMENT ON COLUMN billing.token_reversals.purchase_id IS 'The purchase whose money moved (NULL for a downgrade).';
COMMENT ON COLUMN billing.token_reversals.grant_id IS 'The grant the tokens came from (NULL for a downgrade, which takes from the balance: its spend''s allocations say from which grants).';
COMMENT ON COLUMN billing.token_reversals.kind IS 'revoke, restore, or downgrade (a plan change''s prorations credited more plan than they charged: the difference in tokens taken back, docs/events-and-refunds.md "What events do").';
COMMENT ON COLUMN billing.token_reversals.take_key IS 'downgrade: <invoice id>:downgrade, so an invoice takes back once whatever its events'' delivery; NULL otherwise.';
COMMENT ON COLUMN billing.token_reversals.taken IS 'revoke and downgrade: tokens taken from the balance (the grant first, then, with revocation_scope balance, the soonest-expiring others).';
COMMENT ON COLUMN billing.token_reversals.debt IS 'revoke and downgrade: tokens already spent, recorded as a debt in billing.token_debts.';
COMMENT ON COLUMN billing.token_reversals.spend_id IS 'revoke and downgrade: the spend (kind revocation) that took the tokens.';

-- An invoice is free when its total is 0, not when nothing was charged (issue 20, item 10).
COMMENT ON COLUMN billing.config.free_invoice_tokens IS 'What a paid invoice whose total is 0 (a trial, a 100%-off coupon) grants: plan = the plan''s allowance as if paid, none = nothing; NULL = plan. An invoice the customer''s credit balance paid (amount_paid 0, total above 0) is paid, not free; a downgrade''s take-back happens either way.';
COMMENT ON COLUMN billing.config.debt_policy IS 'What happens to tokens a refund, dispute, credit note or downgrade takes back after they were spent: collect = recorded as a debt that later grants pay off first, write_off = recorded and written off at once; NULL = collect.';

-- From 2025-05-28.basil a credit note can be mixed (issue 20): only its post_payment_amount gives
-- money back, its pre_payment_amount lowered what was due.
ALTER TABLE billing.stripe_credit_notes ADD COLUMN post_payment_amount bigint;
COMMENT ON COLUMN billing.stripe_credit_notes.post_payment_amount IS 'The part that was refunded, credited to the customer''s balance or credited outside Stripe (from 2025-05-28.basil; NULL before, when a post_payment credit note''s total is all post-payment).';
COMMENT ON COLUMN billing.stripe_credit_notes.note_type IS 'pre_payment (lowers what is due; nothing was paid for it), post_payment, or mixed (from 2025-05-28.basil: part of each; only post_payment_amount gives money back).';
COMMENT ON TABLE billing.stripe_credit_notes IS 'Credit notes as credit_note.* events reported them. An issued credit note gives back its post-payment part (a post_payment note''s total, a mixed note''s post_payment_amount); the part it refunded is already counted with the charge''s refunds. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_requests.kind IS 'checkout or portal (a user''s session), refresh (retrieve a subscription whose same-second events disagree, an invoice''s payments, a credit note''s refund no event reported, the invoices a PaymentIntent paid when a refund or dispute needs them, or a price whose amount the catalog lacks) or line_items (retrieve what a Checkout Session sold, or every line of an invoice).';

-- One payment may pay several invoices (basil), each its own part of it, and a payment's
-- invoices are looked up only when a refund or dispute needs them (issue 20).
ALTER TABLE billing.purchase_payments DROP CONSTRAINT purchase_payments_pkey;
ALTER TABLE billing.purchase_payments ADD COLUMN amount bigint CHECK (amount >= 0);
ALTER TABLE billing.purchase_payments ADD PRIMARY KEY (payment, purchase_id);
COMMENT ON TABLE billing.purchase_payments IS 'Which PaymentIntent or charge paid which purchase (one payment may pay several invoices), learned from sessions, invoices (before basil), charges, invoice payments (basil and later), retrieved invoices and payment lookups. A payment may be known before its purchase is. Privileged roles only.';
COMMENT ON COLUMN billing.purchase_payments.amount IS 'The part of the payment that paid this purchase (an invoice payment''s amount_paid), in the payment''s currency; NULL when the source did not say (then the payment paid the purchase alone).';
DROP FUNCTION billing._link_payment(text, text);
CREATE TABLE billing.payment_lookups (
    payment text PRIMARY KEY CHECK (payment ~ '^pi_[A-Za-z0-9_]+$'),
    invoices integer NOT NULL CHECK (invoices >= 0),
    looked_up_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.payment_lookups IS 'PaymentIntents whose invoice payments the worker listed (GET /v1/invoice_payments), so that a payment is looked up once, whatever its refunds and disputes. Privileged roles only.';
COMMENT ON COLUMN billing.payment_lookups.payment IS 'The PaymentIntent looked up.';
COMMENT ON COLUMN billing.payment_lookups.invoices IS 'How many paid invoices Stripe listed for it.';
COMMENT ON COLUMN billing.payment_lookups.looked_up_at IS 'When the answer was stored.';
SELECT pg_catalog.pg_extension_config_dump('billing.payment_lookups', '');

-- Each price's amount, synced from Stripe (proration lines are valued against it; the public
-- catalog shows it).
CREATE TABLE billing.prices (
    stripe_price_id text PRIMARY KEY CHECK (length(stripe_price_id) BETWEEN 1 AND 255),
    unit_amount numeric CHECK (unit_amount >= 0),
    currency text CHECK (currency ~ '^[a-z]{3}$'),
    recurring_interval text CHECK (recurring_interval IN ('day', 'week', 'month', 'year')),
    interval_count integer CHECK (interval_count > 0),
    active boolean,
    synced_at timestamptz NOT NULL
);
COMMENT ON TABLE billing.prices IS 'Stripe''s public fields of each price, synced from its price.created and price.updated events and from the worker''s retrieval (GET /v1/prices/{id}) when an invoice needs an amount the table lacks. Privileged roles only; billing.public_catalog shows the catalog''s prices to anyone.';
COMMENT ON COLUMN billing.prices.stripe_price_id IS 'The Stripe price (price_...).';
COMMENT ON COLUMN billing.prices.unit_amount IS 'The price in the currency''s smallest unit (cents), from Stripe''s unit_amount_decimal (fractions of a cent kept); NULL for a price without one (tiered, customer-chosen amounts).';
COMMENT ON COLUMN billing.prices.currency IS 'Three-letter ISO currency code, lower case, as Stripe sends it.';
COMMENT ON COLUMN billing.prices.recurring_interval IS 'recurring.interval: day, week, month or year; NULL for a one-time price.';
COMMENT ON COLUMN billing.prices.interval_count IS 'recurring.interval_count: how many intervals one billing period is; NULL for a one-time price.';
COMMENT ON COLUMN billing.prices.active IS 'Whether Stripe lets the price be used for new purchases.';
COMMENT ON COLUMN billing.prices.synced_at IS 'As of when Stripe said so: the event''s created time, or the retrieval''s answer time; an older report never overwrites a newer one.';

SELECT pg_catalog.pg_extension_config_dump('billing.prices', '');

-- Entitlements (issue 23, item 3): features per plan, and when each subscription's status began,
-- from which a past_due subscription's grace counts. 0.2.0 did not record it: a row gets the time
-- of its newest report (else its last change), which is never earlier than the truth, so an
-- upgrade never ends a grace early.
-- @include sql/entitlements/schema.sql
ALTER TABLE billing.subscriptions ADD COLUMN status_since timestamptz;
ALTER TABLE billing.subscriptions ADD COLUMN previous_status_at timestamptz;
-- previous_status_at = status_since: a late report older than the upgrade moves neither earlier.
UPDATE billing.subscriptions SET status_since = coalesce((version).created, updated_at),
                                 previous_status_at = coalesce((version).created, updated_at)
WHERE status IS NOT NULL;
COMMENT ON COLUMN billing.subscriptions.status_since IS 'Stripe''s time of the first report of the current status (the event''s created time, or the time of the retrieval''s answer), whatever order the reports arrived in (never earlier than the truth): how long a past_due subscription has been past due, which billing.has_feature compares with past_due_grace_seconds. NULL until a report sets a status.';
COMMENT ON COLUMN billing.subscriptions.previous_status_at IS 'Stripe''s time of the newest known report of a status other than the current one: the current status began after it. With it, a report older than the row''s state corrects status_since in any delivery order. NULL when none is known.';
ALTER TABLE billing.config ADD COLUMN past_due_grace_seconds integer CHECK (past_due_grace_seconds >= 0);
COMMENT ON COLUMN billing.config.past_due_grace_seconds IS 'How long a past_due subscription keeps its plan''s features (billing.has_feature, billing.feature_limit) after it became past due (billing.subscriptions.status_since), while Stripe retries the payment; 0 = features stop at once; NULL = 604800 (7 days). billing.subscription_status still reports past_due as active until Stripe gives up.';
-- Metered overage (issue 22, item 4): a subscription plan may allow spending beyond the balance
-- up to overage_limit per period, reported to Stripe as Billing Meter events (kind meter_event).
ALTER TABLE billing.plans ADD COLUMN overage_limit bigint CHECK (overage_limit > 0 AND overage_limit <= 1000000000000);
ALTER TABLE billing.plans ADD COLUMN meter_event_name text CHECK (length(meter_event_name) BETWEEN 1 AND 100);
ALTER TABLE billing.plans ADD CONSTRAINT plans_overage_fits_kind CHECK ((overage_limit IS NULL) = (meter_event_name IS NULL)
                                              AND (overage_limit IS NULL OR kind = 'subscription'));
COMMENT ON COLUMN billing.plans.overage_limit IS 'Subscription plans: how many tokens a subscriber may spend beyond their balance per billing period, billed by Stripe through the meter named by meter_event_name (docs/tokens.md, "Metered overage"); NULL = no overage, a spend beyond the balance fails with BL001.';
COMMENT ON COLUMN billing.plans.meter_event_name IS 'The event_name of the Stripe Billing Meter that bills this plan''s overage (its subscription must include a metered price on that meter); set together with overage_limit.';
ALTER TABLE billing.stripe_requests DROP CONSTRAINT stripe_requests_kind_check;
ALTER TABLE billing.stripe_requests ADD CONSTRAINT stripe_requests_kind_check
    CHECK (kind IN ('checkout', 'portal', 'refresh', 'line_items', 'meter_event'));
COMMENT ON COLUMN billing.stripe_requests.kind IS 'checkout or portal (a user''s session), refresh (retrieve a subscription whose same-second events disagree, an invoice''s payments, a credit note''s refund no event reported, the invoices a PaymentIntent paid when a refund or dispute needs them, or a price whose amount the catalog lacks) or line_items (retrieve what a Checkout Session sold, or every line of an invoice), or meter_event (report a spend''s metered overage to Stripe, POST /v1/billing/meter_events).';
COMMENT ON TABLE billing.token_spend_allocations IS 'Which grants each spend drew from: sum(tokens) per spend equals its amount less its metered overage (billing.token_overages), and per grant equals tokens - remaining.';
-- @include sql/overage/schema.sql
-- alerts: low-balance alerts and expiry warnings (issue 22, items 1 and 3): two operator
-- defaults at the end of billing.config, and the alerts' own tables and the sweep's index.
ALTER TABLE billing.config ADD COLUMN low_balance_threshold bigint
    CHECK (low_balance_threshold BETWEEN 0 AND 1000000000000);
ALTER TABLE billing.config ADD COLUMN expiry_warning_days integer CHECK (expiry_warning_days BETWEEN 0 AND 365);
COMMENT ON COLUMN billing.config.low_balance_threshold IS 'Default low-balance threshold of every balance without one of its own (billing.balance_alerts): a spend that takes a balance from above it to at or below it writes one low_balance notification; NULL = no alerts by default.';
COMMENT ON COLUMN billing.config.expiry_warning_days IS 'billing.warn_expiring_grants() (the worker, with billing.prune()) writes one tokens_expiring notification for each unspent grant expiring within this many days (1 to 365; 0: never); NULL = 0, so warnings are off until the operator sets a window.';
-- @include sql/alerts/schema.sql
-- Auto top-up (issue 22, item 2): the settings, the top_up request kind (one in flight per user),
-- and an auto top-up's PaymentIntent as a purchase, so refunds and disputes take its tokens back.
-- @include sql/topups/schema.sql
ALTER TABLE billing.stripe_requests DROP CONSTRAINT stripe_requests_kind_check;
ALTER TABLE billing.stripe_requests ADD CONSTRAINT stripe_requests_kind_check
    CHECK (kind IN ('checkout', 'portal', 'refresh', 'line_items', 'meter_event', 'top_up'));
CREATE UNIQUE INDEX stripe_requests_one_top_up_idx ON billing.stripe_requests (user_id)
    WHERE kind = 'top_up' AND status IN ('pending', 'running');
COMMENT ON COLUMN billing.stripe_requests.kind IS 'checkout or portal (a user''s session), refresh (retrieve a subscription whose same-second events disagree, an invoice''s payments, a credit note''s refund no event reported, the invoices a PaymentIntent paid when a refund or dispute needs them, or a price whose amount the catalog lacks) or line_items (retrieve what a Checkout Session sold, or every line of an invoice), or meter_event (report a spend''s metered overage to Stripe, POST /v1/billing/meter_events), or top_up (charge the card saved at checkout for an auto top-up''s pack, off-session).';
ALTER TABLE billing.purchases DROP CONSTRAINT purchases_id_check;
ALTER TABLE billing.purchases ADD CONSTRAINT purchases_id_check CHECK (id ~ '^(cs|in|pi)_[A-Za-z0-9_]+$');
ALTER TABLE billing.purchase_payments DROP CONSTRAINT purchase_payments_purchase_id_check;
ALTER TABLE billing.purchase_payments ADD CONSTRAINT purchase_payments_purchase_id_check
    CHECK (purchase_id ~ '^(cs|in|pi)_[A-Za-z0-9_]+$');
COMMENT ON TABLE billing.purchases IS 'What funded paid grants: a paid Checkout Session (a token pack), a paid subscription invoice, or an auto top-up''s PaymentIntent. Refunds, disputes and credit notes of its payments take back the same share of its grants. Users read their own rows.';
COMMENT ON COLUMN billing.purchases.id IS 'The Checkout Session (cs_...), invoice (in_...) or auto top-up PaymentIntent (pi_...) id.';
COMMENT ON COLUMN billing.purchase_payments.purchase_id IS 'The Checkout Session, invoice or auto top-up PaymentIntent it paid (not a foreign key: the purchase may arrive later).';
COMMENT ON COLUMN billing.notifications.event_id IS 'The Stripe event that caused it, or a key of ours for what no event causes (top_up:<request id>, top_up_limit:<user>:<month>): one notification of a kind per key.';

-- Accounts and teams (issue 23, item 1; DESIGN.md, "Accounts"). A personal account's id is its
-- user's id, so every 0.2.0 row already belongs to its personal account: nothing is rewritten.
-- request_checkout and request_portal gain account_id (a new signature: the old one goes).
-- @include sql/accounts/schema.sql
DROP FUNCTION billing.request_checkout(text, text, text, text, uuid, text, boolean, integer);
DROP FUNCTION billing.request_portal(text);
-- The owner test of the policies becomes "one of the caller's accounts": recreated below
-- (billing._protect_table).
DROP POLICY own_rows ON billing.customers;
DROP POLICY own_rows ON billing.subscriptions;
DROP POLICY own_rows ON billing.token_grants;
DROP POLICY own_rows ON billing.token_spends;
DROP POLICY own_rows ON billing.token_spend_allocations;
DROP POLICY own_rows ON billing.stripe_requests;
DROP POLICY own_rows ON billing.projects;
DROP POLICY own_rows ON billing.notifications;
DROP POLICY own_rows ON billing.purchases;
DROP POLICY own_rows ON billing.token_reversals;
DROP POLICY own_rows ON billing.token_debts;
DROP POLICY own_rows ON billing.token_debt_settlements;
-- Seats (issue 23, item 2): a team's subscription's quantity is its seats. 0.2.0 did not record
-- it; the newest stored report of each subscription fills it after the replay (below), else it
-- stays NULL (unknown: no seat limit) until the next report.
ALTER TABLE billing.subscriptions ADD COLUMN quantity bigint CHECK (quantity >= 0);
COMMENT ON COLUMN billing.subscriptions.quantity IS 'The quantity of the plan''s subscription item (else the first item''s) as last reported by Stripe: for a team''s subscription, its seats (billing._team_seats). NULL until a report carries it (0.2.0 rows until their next report).';
-- Seat changes through the queue: the item a change updates, the operator's proration
-- behaviour, the seats request kind (one in flight per team).
ALTER TABLE billing.subscriptions ADD COLUMN stripe_item_id text CHECK (stripe_item_id ~ '^si_[A-Za-z0-9_]+$');
COMMENT ON COLUMN billing.subscriptions.stripe_item_id IS 'The subscription item (si_...) whose quantity is recorded: the one a seat change updates (billing.request_seat_change). NULL until a report carries it (0.2.0 rows until their next report).';
ALTER TABLE billing.config ADD COLUMN seat_proration_behavior text
    CHECK (seat_proration_behavior IN ('create_prorations', 'always_invoice', 'none'));
COMMENT ON COLUMN billing.config.seat_proration_behavior IS 'How Stripe bills a seat change (billing.request_seat_change), sent as proration_behavior: create_prorations = the added or removed seats'' share of the period goes on the next renewal invoice; always_invoice = invoiced (or credited) at once; none = no proration, the new quantity is billed from the next period. The tokens follow what the invoices charge. NULL = create_prorations, Stripe''s default.';
ALTER TABLE billing.stripe_requests DROP CONSTRAINT stripe_requests_kind_check;
ALTER TABLE billing.stripe_requests ADD CONSTRAINT stripe_requests_kind_check
    CHECK (kind IN ('checkout', 'portal', 'refresh', 'line_items', 'meter_event', 'top_up', 'seats'));
CREATE UNIQUE INDEX stripe_requests_one_seat_change_idx ON billing.stripe_requests (user_id)
    WHERE kind = 'seats' AND status IN ('pending', 'running');
COMMENT ON COLUMN billing.stripe_requests.kind IS 'checkout or portal (a user''s session), refresh (retrieve a subscription whose same-second events disagree, an invoice''s payments, a credit note''s refund no event reported, the invoices a PaymentIntent paid when a refund or dispute needs them, or a price whose amount the catalog lacks) or line_items (retrieve what a Checkout Session sold, or every line of an invoice), or meter_event (report a spend''s metered overage to Stripe, POST /v1/billing/meter_events), or top_up (charge the card saved at checkout for an auto top-up''s pack, off-session), or seats (change a team subscription''s quantity, POST /v1/subscriptions/{id}; billing.request_seat_change).';

-- @replay

SELECT billing._protect_table('billing.invoice_lines'::regclass, own_rows => false);
SELECT billing._protect_table('billing.payment_lookups'::regclass, own_rows => false);
SELECT billing._protect_table('billing.prices'::regclass, own_rows => false);
SELECT billing._protect_table('billing.plan_features'::regclass, own_rows => false);
-- @include sql/entitlements/triggers.sql
SELECT billing._protect_table('billing.pack_passes'::regclass, own_rows => true);
SELECT billing._protect_table(t::regclass, own_rows => true)
FROM unnest(ARRAY['billing.customers', 'billing.subscriptions', 'billing.token_grants', 'billing.token_spends',
                  'billing.token_spend_allocations', 'billing.stripe_requests', 'billing.projects',
                  'billing.notifications', 'billing.purchases', 'billing.token_reversals', 'billing.token_debts',
                  'billing.token_debt_settlements']) AS t;
SELECT billing._protect_table(t::regclass, own_rows => false)
FROM unnest(ARRAY['billing.accounts', 'billing.account_members']) AS t;
CREATE POLICY member_rows ON billing.accounts FOR SELECT USING (id = ANY ((SELECT billing._visible_accounts())::uuid[]));
CREATE POLICY member_rows ON billing.account_members FOR SELECT
    USING (account_id = ANY ((SELECT billing._visible_accounts())::uuid[]));
SELECT billing._protect_table('billing.token_overages'::regclass, own_rows => true);
-- @include sql/overage/triggers.sql
SELECT billing._protect_table('billing.balance_alerts'::regclass, own_rows => true);
SELECT billing._protect_table('billing.expiry_warnings'::regclass, own_rows => true);
SELECT billing._protect_table('billing.auto_top_ups'::regclass, own_rows => true);
-- Seats: each subscription's quantity and item from its newest stored report (an object retrieved
-- from Stripe outranks an event of the same second), the item of its recorded price, normalised
-- the way billing._apply_subscription reads both API shapes. Pruned payloads leave them NULL.
UPDATE billing.subscriptions s SET (quantity, stripe_item_id) = (
    SELECT (i ->> 'quantity')::bigint, CASE WHEN i ->> 'item_id' ~ '^si_[A-Za-z0-9_]+$' THEN i ->> 'item_id' END
    FROM jsonb_array_elements(billing._normalize_subscription_items(r.payload::jsonb #> '{data,object}')) i
    ORDER BY (i ->> 'price_id') IS NOT DISTINCT FROM s.stripe_price_id DESC
    LIMIT 1)
FROM (SELECT DISTINCT ON (e.object_id) e.object_id, e.payload
      FROM billing.stripe_events e
      WHERE e.object_id LIKE 'sub\_%' AND e.processed_at IS NOT NULL
        AND e.payload::jsonb #>> '{data,object,object}' = 'subscription'
      ORDER BY e.object_id, e.created DESC, e.source = 'retrieved' DESC) r
WHERE r.object_id = s.stripe_subscription_id AND s.quantity IS NULL;
