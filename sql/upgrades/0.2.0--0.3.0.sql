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

-- @replay
