-- Effects of customer.* events: deletions end a link for good; a customer whose metadata names
-- a user (as the worker creates them) is linked to that user.

CREATE OR REPLACE FUNCTION billing._apply_customer(ev jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    c jsonb := ev -> 'data';
    uid uuid := billing._uuid_or_null(c -> 'metadata' ->> 'user_id');
BEGIN
    IF ev ->> 'type' = 'customer.deleted' OR (c ->> 'deleted')::boolean THEN
        PERFORM billing._forget_customer(c ->> 'id');
    ELSIF uid IS NOT NULL THEN
        PERFORM billing._link_customer(uid, c ->> 'id', c ->> 'email', strict => false);
    END IF;
END
$$;
COMMENT ON FUNCTION billing._apply_customer(jsonb) IS 'Internal: customer.deleted forgets the customer (its user gets a new one at the next checkout); customer.created/updated with metadata.user_id links it when neither side is linked yet.';
