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

-- @replay
