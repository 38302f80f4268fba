-- Runs last, after the functions written in Rust exist: their comments, then the grants.

-- The functions written in Rust (extension/src) are created by pgrx; their comments live here.
COMMENT ON FUNCTION billing.stripe_signature_is_valid(text, text, text, integer, timestamptz) IS 'True when header is a valid Stripe-Signature for the exact raw payload with secret, within tolerance_seconds (default 300, 0 or NULL: no time check) of at (default now()). Never raises; NULLs give false.';
COMMENT ON FUNCTION billing.construct_event(text, text, text, integer, timestamptz) IS 'Verifies like stripe_signature_is_valid and returns the payload as jsonb; raises 28000 (no header), 22P02 (malformed header), 22023 (no v1), 28P01 (no match), 22008 (outside tolerance), 55000 (no secret), 22004 (NULL payload) or 22032 (not JSON).';
COMMENT ON FUNCTION billing.stripe_signature_header(text, text, bigint) IS 'The Stripe-Signature header Stripe would send for payload signed with secret at Unix time t. For tests and local tooling.';
COMMENT ON FUNCTION billing._verify_webhook_signature(text, text, text[], integer) IS 'Internal: verifies against several secrets (rotation) and returns the 1-based position of the first that matches; raises like construct_event otherwise.';

SELECT billing.apply_grants();
