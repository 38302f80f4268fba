-- Customers: linking users to Stripe customers, and finding the user an event concerns.

CREATE OR REPLACE FUNCTION billing.link_customer(user_id uuid, stripe_customer_id text, email text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    existing billing.customers;
    held record;
BEGIN
    PERFORM billing._check_not_null(user_id, 'user_id');
    PERFORM billing._check_not_null(stripe_customer_id, 'stripe_customer_id');
    IF stripe_customer_id !~ '^cus_[A-Za-z0-9]+$' THEN
        RAISE EXCEPTION 'stripe_customer_id must be a Stripe customer id (cus_...), got %', quote_literal(left(stripe_customer_id, 60))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO billing.customers AS c (user_id, stripe_customer_id, email)
    VALUES (link_customer.user_id, link_customer.stripe_customer_id, link_customer.email)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        -- Events that arrived before this link could not be attributed; apply them now.
        FOR held IN SELECT e.id FROM billing.stripe_events e
                    WHERE e.stripe_customer_id = link_customer.stripe_customer_id AND e.processed_at IS NULL
                      AND NOT billing._is_being_applied(e.id)
                    ORDER BY e.created, e.id LOOP
            PERFORM billing._apply_stored_event(held.id);
        END LOOP;
        RETURN stripe_customer_id;
    END IF;
    SELECT * INTO existing FROM billing.customers c
    WHERE c.user_id = link_customer.user_id OR c.stripe_customer_id = link_customer.stripe_customer_id
    ORDER BY c.user_id = link_customer.user_id DESC LIMIT 1;
    IF existing.user_id = user_id AND existing.stripe_customer_id = stripe_customer_id THEN
        RETURN stripe_customer_id;
    END IF;
    IF existing.user_id = user_id THEN
        RAISE EXCEPTION 'user % already has Stripe customer %', user_id, existing.stripe_customer_id
            USING ERRCODE = 'BL008', DETAIL = format('refusing to link %s as well', stripe_customer_id);
    END IF;
    RAISE EXCEPTION 'Stripe customer % already belongs to another user', stripe_customer_id
        USING ERRCODE = 'BL008';
END
$$;
COMMENT ON FUNCTION billing.link_customer(uuid, text, text) IS 'Privileged (worker, webhooks): links a user to their Stripe customer, one to one; idempotent. A new link applies events held back because their customer was unknown.';

-- Which app user an event concerns: an explicit user id set by our Checkout requests
-- (client_reference_id or metadata.user_id), else the user linked to the Stripe customer, else
-- the owner of the subscription row.
CREATE OR REPLACE FUNCTION billing._resolve_user(explicit_user text, customer text, subscription_id text) RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    uid uuid := billing._uuid_or_null(explicit_user);
BEGIN
    IF uid IS NULL AND customer IS NOT NULL THEN
        SELECT c.user_id INTO uid FROM billing.customers c WHERE c.stripe_customer_id = customer;
    END IF;
    IF uid IS NULL AND subscription_id IS NOT NULL THEN
        SELECT s.user_id INTO uid FROM billing.subscriptions s WHERE s.stripe_subscription_id = subscription_id;
    END IF;
    IF uid IS NULL THEN
        RAISE EXCEPTION 'cannot tell which user customer % belongs to', coalesce(customer, '(none)')
            USING ERRCODE = 'BL007',
                  HINT = 'The event is kept; it is applied automatically once checkout links the customer to a user, or by billing.reprocess_events().';
    END IF;
    RETURN uid;
END
$$;
COMMENT ON FUNCTION billing._resolve_user(text, text, text) IS 'Internal: the user an event concerns, or error BL007 when nothing links it to one yet.';
