-- The money behind tokens: each purchase that funded grants, the Stripe payments that paid it,
-- what Stripe reports about those payments since (refunds, disputes, credit notes), and the
-- ledger entries that follow the money back: reversals of grants, and the debts left when
-- the tokens to take back were already spent (DESIGN.md, "Refunds and disputes").

CREATE TABLE billing.purchases (
    id text PRIMARY KEY CHECK (id ~ '^(cs|in|pi)_[A-Za-z0-9_]+$'),
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    stripe_customer_id text,
    amount_paid bigint NOT NULL CHECK (amount_paid >= 0),
    currency text CHECK (currency ~ '^[a-z]{3}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purchases_user_idx ON billing.purchases (user_id, created_at);
COMMENT ON TABLE billing.purchases IS 'What funded paid grants: a paid Checkout Session (a token pack), a paid subscription invoice, or an auto top-up''s PaymentIntent. Refunds, disputes and credit notes of its payments take back the same share of its grants. Users read their own rows.';
COMMENT ON COLUMN billing.purchases.id IS 'The Checkout Session (cs_...), invoice (in_...) or auto top-up PaymentIntent (pi_...) id.';
COMMENT ON COLUMN billing.purchases.user_id IS 'The buyer.';
COMMENT ON COLUMN billing.purchases.project_id IS 'The project its tokens went to, or NULL.';
COMMENT ON COLUMN billing.purchases.stripe_customer_id IS 'The Stripe customer who paid.';
COMMENT ON COLUMN billing.purchases.amount_paid IS 'What was paid, in the currency''s smallest unit (the session''s amount_total, the invoice''s amount_paid); reversals are shares of it.';
COMMENT ON COLUMN billing.purchases.currency IS 'Three-letter ISO code, lower case.';
COMMENT ON COLUMN billing.purchases.created_at IS 'When the purchase was recorded.';

CREATE TABLE billing.purchase_payments (
    payment text NOT NULL CHECK (payment ~ '^(pi|ch|py)_[A-Za-z0-9_]+$'),
    purchase_id text NOT NULL CHECK (purchase_id ~ '^(cs|in|pi)_[A-Za-z0-9_]+$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- From basil one PaymentIntent may pay several invoices, each its own part of it.
    amount bigint CHECK (amount >= 0),
    PRIMARY KEY (payment, purchase_id)
);
CREATE INDEX purchase_payments_purchase_idx ON billing.purchase_payments (purchase_id);
COMMENT ON TABLE billing.purchase_payments IS 'Which PaymentIntent or charge paid which purchase (one payment may pay several invoices), learned from sessions, invoices (before basil), charges, invoice payments (basil and later), retrieved invoices and payment lookups. A payment may be known before its purchase is. Privileged roles only.';
COMMENT ON COLUMN billing.purchase_payments.payment IS 'PaymentIntent (pi_...) or charge (ch_..., py_...) id.';
COMMENT ON COLUMN billing.purchase_payments.purchase_id IS 'The Checkout Session, invoice or auto top-up PaymentIntent it paid (not a foreign key: the purchase may arrive later).';
COMMENT ON COLUMN billing.purchase_payments.created_at IS 'When the link was learned.';
COMMENT ON COLUMN billing.purchase_payments.amount IS 'The part of the payment that paid this purchase (an invoice payment''s amount_paid), in the payment''s currency; NULL when the source did not say (then the payment paid the purchase alone).';

-- Which invoices a PaymentIntent paid, asked of Stripe only when a refund or dispute names a
-- payment that no purchase is linked to (basil invoice events name no payment).
CREATE TABLE billing.payment_lookups (
    payment text PRIMARY KEY CHECK (payment ~ '^pi_[A-Za-z0-9_]+$'),
    invoices integer NOT NULL CHECK (invoices >= 0),
    looked_up_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.payment_lookups IS 'PaymentIntents whose invoice payments the worker listed (GET /v1/invoice_payments), so that a payment is looked up once, whatever its refunds and disputes. Privileged roles only.';
COMMENT ON COLUMN billing.payment_lookups.payment IS 'The PaymentIntent looked up.';
COMMENT ON COLUMN billing.payment_lookups.invoices IS 'How many paid invoices Stripe listed for it.';
COMMENT ON COLUMN billing.payment_lookups.looked_up_at IS 'When the answer was stored.';

-- What Stripe reported about payments, one row per object. A report of a further status (a final
-- one above all) replaces the row whatever the order of arrival; among reports of equal rank the
-- newest wins (DESIGN.md, "Ordering").
CREATE TABLE billing.stripe_charges (
    id text PRIMARY KEY CHECK (id ~ '^(ch|py)_[A-Za-z0-9_]+$'),
    payment_intent text,
    invoice text,
    amount bigint CHECK (amount >= 0),
    amount_refunded bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    currency text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    reported_at timestamptz NOT NULL DEFAULT '-infinity'
);
CREATE INDEX stripe_charges_payment_intent_idx ON billing.stripe_charges (payment_intent);
COMMENT ON TABLE billing.stripe_charges IS 'Charges as charge.* events reported them; amount_refunded is the newest report''s (a snapshot: a refund that failed since no longer counts). Privileged roles only.';
COMMENT ON COLUMN billing.stripe_charges.id IS 'Charge id.';
COMMENT ON COLUMN billing.stripe_charges.payment_intent IS 'Its PaymentIntent.';
COMMENT ON COLUMN billing.stripe_charges.invoice IS 'Its invoice (API versions before basil report it).';
COMMENT ON COLUMN billing.stripe_charges.amount IS 'Amount charged.';
COMMENT ON COLUMN billing.stripe_charges.amount_refunded IS 'Total refunded as of reported_at (of two reports of the same second, the larger).';
COMMENT ON COLUMN billing.stripe_charges.currency IS 'Currency.';
COMMENT ON COLUMN billing.stripe_charges.updated_at IS 'When a report last changed the row.';
COMMENT ON COLUMN billing.stripe_charges.reported_at IS 'Stripe''s time of the report amount_refunded comes from.';

CREATE TABLE billing.stripe_refunds (
    id text PRIMARY KEY CHECK (id ~ '^(re|pyr)_[A-Za-z0-9_]+$'),
    charge text,
    payment_intent text,
    amount bigint NOT NULL CHECK (amount >= 0),
    status text NOT NULL,
    status_rank smallint NOT NULL,
    reported_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz
);
CREATE INDEX stripe_refunds_charge_idx ON billing.stripe_refunds (charge);
CREATE INDEX stripe_refunds_payment_intent_idx ON billing.stripe_refunds (payment_intent);
COMMENT ON TABLE billing.stripe_refunds IS 'Refunds as refund.* and charge.refund.updated events reported them. A failed or canceled refund moves no money: it counts neither by itself nor in its charge''s reports made before it ended. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_refunds.id IS 'Refund id.';
COMMENT ON COLUMN billing.stripe_refunds.charge IS 'The refunded charge.';
COMMENT ON COLUMN billing.stripe_refunds.payment_intent IS 'The refunded PaymentIntent.';
COMMENT ON COLUMN billing.stripe_refunds.amount IS 'Amount refunded.';
COMMENT ON COLUMN billing.stripe_refunds.status IS 'pending, requires_action, succeeded, failed or canceled.';
COMMENT ON COLUMN billing.stripe_refunds.status_rank IS 'How far along the status is; a report of a further status wins whenever it arrives, among equals the newest.';
COMMENT ON COLUMN billing.stripe_refunds.reported_at IS 'Stripe''s time of the report that set the row.';
COMMENT ON COLUMN billing.stripe_refunds.updated_at IS 'When a report last changed the row.';
COMMENT ON COLUMN billing.stripe_refunds.ended_at IS 'Stripe''s time of the first report of it failed or canceled; NULL while it is not.';

CREATE TABLE billing.stripe_disputes (
    id text PRIMARY KEY CHECK (id ~ '^(du|dp)_[A-Za-z0-9_]+$'),
    charge text,
    payment_intent text,
    amount bigint NOT NULL CHECK (amount >= 0),
    status text NOT NULL,
    status_rank smallint NOT NULL,
    reported_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_disputes_charge_idx ON billing.stripe_disputes (charge);
CREATE INDEX stripe_disputes_payment_intent_idx ON billing.stripe_disputes (payment_intent);
COMMENT ON TABLE billing.stripe_disputes IS 'Disputes as charge.dispute.* events reported them. The disputed amount is taken back while the funds are withdrawn (needs_response, under_review) and for good when lost; won gives it back; inquiries (warning_*) take nothing. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_disputes.id IS 'Dispute id.';
COMMENT ON COLUMN billing.stripe_disputes.charge IS 'The disputed charge.';
COMMENT ON COLUMN billing.stripe_disputes.payment_intent IS 'The disputed PaymentIntent.';
COMMENT ON COLUMN billing.stripe_disputes.amount IS 'Disputed amount.';
COMMENT ON COLUMN billing.stripe_disputes.status IS 'Stripe''s dispute status.';
COMMENT ON COLUMN billing.stripe_disputes.status_rank IS 'How far along the status is; a report of a further status wins whenever it arrives, among equals the newest.';
COMMENT ON COLUMN billing.stripe_disputes.reported_at IS 'Stripe''s time of the report that set the row.';
COMMENT ON COLUMN billing.stripe_disputes.updated_at IS 'When a report last changed the row.';

CREATE TABLE billing.stripe_credit_notes (
    id text PRIMARY KEY CHECK (id ~ '^cn_[A-Za-z0-9_]+$'),
    invoice text NOT NULL,
    note_type text,
    status text NOT NULL,
    total bigint NOT NULL,
    out_of_band_amount bigint,
    refunds jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(refunds) = 'array'),
    status_rank smallint NOT NULL,
    reported_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    post_payment_amount bigint
);
CREATE INDEX stripe_credit_notes_invoice_idx ON billing.stripe_credit_notes (invoice);
COMMENT ON TABLE billing.stripe_credit_notes IS 'Credit notes as credit_note.* events reported them. An issued credit note gives back its post-payment part (a post_payment note''s total, a mixed note''s post_payment_amount); the part it refunded is already counted with the charge''s refunds. Privileged roles only.';
COMMENT ON COLUMN billing.stripe_credit_notes.id IS 'Credit note id.';
COMMENT ON COLUMN billing.stripe_credit_notes.invoice IS 'The credited invoice.';
COMMENT ON COLUMN billing.stripe_credit_notes.note_type IS 'pre_payment (lowers what is due; nothing was paid for it), post_payment, or mixed (from 2025-05-28.basil: part of each; only post_payment_amount gives money back).';
COMMENT ON COLUMN billing.stripe_credit_notes.status IS 'issued or void.';
COMMENT ON COLUMN billing.stripe_credit_notes.total IS 'Amount credited.';
COMMENT ON COLUMN billing.stripe_credit_notes.out_of_band_amount IS 'The part credited outside Stripe.';
COMMENT ON COLUMN billing.stripe_credit_notes.post_payment_amount IS 'The part that was refunded, credited to the customer''s balance or credited outside Stripe (from 2025-05-28.basil; NULL before, when a post_payment credit note''s total is all post-payment).';
COMMENT ON COLUMN billing.stripe_credit_notes.refunds IS 'The refunds it made: [{refund, amount_refunded}] (amount_refunded is NULL before basil).';
COMMENT ON COLUMN billing.stripe_credit_notes.status_rank IS 'How far along the status is; a report of a further status wins whenever it arrives, among equals the newest.';
COMMENT ON COLUMN billing.stripe_credit_notes.reported_at IS 'Stripe''s time of the report that set the row.';
COMMENT ON COLUMN billing.stripe_credit_notes.updated_at IS 'When a report last changed the row.';

-- Grants know what funded them.
ALTER TABLE billing.token_grants ADD COLUMN purchase_id text REFERENCES billing.purchases (id);
CREATE INDEX token_grants_purchase_idx ON billing.token_grants (purchase_id) WHERE purchase_id IS NOT NULL;
COMMENT ON COLUMN billing.token_grants.purchase_id IS 'The purchase that paid for the grant (NULL for manual grants); its refunds, disputes and credit notes take back a share of the grant.';

-- Spends are what users do, or what the ledger does on the money's account.
ALTER TABLE billing.token_spends ADD COLUMN kind text NOT NULL DEFAULT 'spend'
    CHECK (kind IN ('spend', 'revocation', 'debt_repayment'));
COMMENT ON COLUMN billing.token_spends.kind IS 'spend (billing.spend_tokens, spend_my_tokens), revocation (tokens taken back for a refund, dispute or credit note) or debt_repayment (a new grant paying off a debt).';

CREATE TABLE billing.token_reversals (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    purchase_id text REFERENCES billing.purchases (id),
    grant_id bigint REFERENCES billing.token_grants (id),
    kind text NOT NULL CHECK (kind IN ('revoke', 'restore', 'downgrade')),
    tokens bigint NOT NULL CHECK (tokens > 0),
    taken bigint NOT NULL DEFAULT 0 CHECK (taken >= 0),
    debt bigint NOT NULL DEFAULT 0 CHECK (debt >= 0),
    debt_forgiven bigint NOT NULL DEFAULT 0 CHECK (debt_forgiven >= 0),
    spend_id bigint REFERENCES billing.token_spends (id),
    restored_grant_id bigint REFERENCES billing.token_grants (id),
    reason text NOT NULL CHECK (length(reason) <= 500),
    event_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    not_taken bigint NOT NULL DEFAULT 0 CHECK (not_taken >= 0),
    take_key text UNIQUE,
    -- A revocation (or a downgrade's take-back) is what it took plus what it could not (the debt,
    -- or not taken at all with revocation_scope grant); a restoration is what was not taken, debt
    -- forgiven, and tokens given back by a new grant.
    CONSTRAINT token_reversals_adds_up CHECK (CASE kind
        WHEN 'restore' THEN taken = 0 AND debt = 0 AND spend_id IS NULL
             AND (restored_grant_id IS NOT NULL) = (tokens > debt_forgiven + not_taken)
             AND debt_forgiven + not_taken <= tokens
        ELSE taken + debt + not_taken = tokens AND debt_forgiven = 0 AND restored_grant_id IS NULL
             AND (spend_id IS NOT NULL) = (taken > 0) END),
    -- A purchase's reversals belong to one of its grants; a downgrade's take-back to no purchase
    -- (nothing was refunded, so settling a purchase never sees or undoes it) and is keyed once
    -- per invoice.
    CONSTRAINT token_reversals_owner CHECK (CASE kind
        WHEN 'downgrade' THEN take_key IS NOT NULL AND purchase_id IS NULL AND grant_id IS NULL
        ELSE take_key IS NULL AND purchase_id IS NOT NULL AND grant_id IS NOT NULL END)
);
CREATE INDEX token_reversals_grant_idx ON billing.token_reversals (grant_id);
CREATE INDEX token_reversals_user_idx ON billing.token_reversals (user_id, created_at);
CREATE INDEX token_reversals_purchase_idx ON billing.token_reversals (purchase_id);
COMMENT ON TABLE billing.token_reversals IS 'Tokens taken back from a grant because its purchase was refunded, disputed or credited (revoke), given back when a dispute is won or a credit note voided (restore), and taken back from the balance once per invoice whose plan-change prorations credit more than they charge (downgrade). A grant''s net revoked tokens are always its purchase''s reversed share of it. Append-only; users read their own rows.';
COMMENT ON COLUMN billing.token_reversals.id IS 'Surrogate key.';
COMMENT ON COLUMN billing.token_reversals.user_id IS 'Owner of the grant.';
COMMENT ON COLUMN billing.token_reversals.project_id IS 'The grant''s project, or NULL.';
COMMENT ON COLUMN billing.token_reversals.purchase_id IS 'The purchase whose money moved (NULL for a downgrade).';
COMMENT ON COLUMN billing.token_reversals.grant_id IS 'The grant the tokens came from (NULL for a downgrade, which takes from the balance: its spend''s allocations say from which grants).';
COMMENT ON COLUMN billing.token_reversals.kind IS 'revoke, restore, or downgrade (a plan change''s prorations credited more plan than they charged: the difference in tokens taken back, docs/events-and-refunds.md "What events do").';
COMMENT ON COLUMN billing.token_reversals.tokens IS 'Tokens revoked or restored.';
COMMENT ON COLUMN billing.token_reversals.take_key IS 'downgrade: <invoice id>:downgrade, so an invoice takes back once whatever its events'' delivery; NULL otherwise.';
COMMENT ON COLUMN billing.token_reversals.taken IS 'revoke and downgrade: tokens taken from the balance (the grant first, then, with revocation_scope balance, the soonest-expiring others).';
COMMENT ON COLUMN billing.token_reversals.debt IS 'revoke and downgrade: tokens already spent, recorded as a debt in billing.token_debts.';
COMMENT ON COLUMN billing.token_reversals.debt_forgiven IS 'restore: outstanding debt of this grant cancelled instead of giving tokens back.';
COMMENT ON COLUMN billing.token_reversals.not_taken IS 'revoke: tokens neither taken nor owed, because the grant no longer held them and revocation_scope grant forbids taking them from the rest of the balance; restore: tokens of such revocations, cancelled without giving anything back (nothing was taken for them).';
COMMENT ON COLUMN billing.token_reversals.spend_id IS 'revoke and downgrade: the spend (kind revocation) that took the tokens.';
COMMENT ON COLUMN billing.token_reversals.restored_grant_id IS 'restore: the grant (source restored) that gave tokens back.';
COMMENT ON COLUMN billing.token_reversals.reason IS 'What moved the money, e.g. "refund re_... of charge ch_..." or "dispute du_... won".';
COMMENT ON COLUMN billing.token_reversals.event_id IS 'The Stripe event that caused it.';
COMMENT ON COLUMN billing.token_reversals.created_at IS 'When it happened.';

CREATE TABLE billing.token_debts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    reversal_id bigint NOT NULL UNIQUE REFERENCES billing.token_reversals (id),
    tokens bigint NOT NULL CHECK (tokens > 0),
    remaining bigint NOT NULL CHECK (remaining >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_debts_remaining_le_tokens CHECK (remaining <= tokens)
);
CREATE INDEX token_debts_open_idx ON billing.token_debts
    (user_id, coalesce(project_id, billing._no_project()), id) WHERE remaining > 0;
COMMENT ON TABLE billing.token_debts IS 'Tokens a revocation could not take because they were already spent. Later grants to the same user and project pay them off first (billing.config.debt_policy = collect, the default), or they are written off at once (write_off). remaining changes only through billing.token_debt_settlements. Users read their own rows.';
COMMENT ON COLUMN billing.token_debts.id IS 'Surrogate key; also the order in which debts are paid off.';
COMMENT ON COLUMN billing.token_debts.user_id IS 'Who owes the tokens.';
COMMENT ON COLUMN billing.token_debts.project_id IS 'The project balance that owes them, or NULL.';
COMMENT ON COLUMN billing.token_debts.reversal_id IS 'The revocation that left it.';
COMMENT ON COLUMN billing.token_debts.tokens IS 'Tokens owed at first.';
COMMENT ON COLUMN billing.token_debts.remaining IS 'Tokens still owed.';
COMMENT ON COLUMN billing.token_debts.created_at IS 'When it arose.';

CREATE TABLE billing.token_debt_settlements (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    debt_id bigint NOT NULL REFERENCES billing.token_debts (id),
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('repaid', 'forgiven', 'written_off')),
    tokens bigint NOT NULL CHECK (tokens > 0),
    spend_id bigint REFERENCES billing.token_spends (id),
    reversal_id bigint REFERENCES billing.token_reversals (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_debt_settlements_source CHECK (CASE kind
        WHEN 'repaid' THEN spend_id IS NOT NULL AND reversal_id IS NULL
        WHEN 'forgiven' THEN reversal_id IS NOT NULL AND spend_id IS NULL
        ELSE spend_id IS NULL AND reversal_id IS NULL END)
);
CREATE INDEX token_debt_settlements_debt_idx ON billing.token_debt_settlements (debt_id);
COMMENT ON TABLE billing.token_debt_settlements IS 'How debts were settled: repaid from a later grant (a spend of kind debt_repayment), forgiven when the money came back (a restore), or written off by policy. Each takes from its debt''s remaining. Append-only; users read their own rows.';
COMMENT ON COLUMN billing.token_debt_settlements.id IS 'Surrogate key.';
COMMENT ON COLUMN billing.token_debt_settlements.debt_id IS 'The debt.';
COMMENT ON COLUMN billing.token_debt_settlements.user_id IS 'Who owed it.';
COMMENT ON COLUMN billing.token_debt_settlements.kind IS 'repaid, forgiven or written_off.';
COMMENT ON COLUMN billing.token_debt_settlements.tokens IS 'Tokens of the debt settled.';
COMMENT ON COLUMN billing.token_debt_settlements.spend_id IS 'repaid: the spend that paid.';
COMMENT ON COLUMN billing.token_debt_settlements.reversal_id IS 'forgiven: the restoration that forgave it.';
COMMENT ON COLUMN billing.token_debt_settlements.created_at IS 'When.';

-- One call per statement: each call rewrites the extension's catalog row.
SELECT pg_catalog.pg_extension_config_dump('billing.purchases', '');
SELECT pg_catalog.pg_extension_config_dump('billing.purchase_payments', '');
SELECT pg_catalog.pg_extension_config_dump('billing.payment_lookups', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_charges', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_refunds', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_disputes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.stripe_credit_notes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_reversals', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_debts', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_debt_settlements', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_reversals', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_debts', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_debt_settlements', 'id')::regclass, '');
