-- Customers: linking users to Stripe customers, and finding the user an event concerns.

CREATE OR REPLACE FUNCTION billing._lock_customer(customer text) RETURNS void
LANGUAGE sql
AS $$
    -- Serialises everything about one customer (applying its events, linking it) until commit,
    -- so a link made in one session cannot miss an event another session is applying.
    SELECT pg_advisory_xact_lock(hashtextextended('billing.customer:' || customer, 0))
    WHERE customer IS NOT NULL
$$;
COMMENT ON FUNCTION billing._lock_customer(text) IS 'Internal: the transaction-long lock that serialises ingestion and linking for one Stripe customer.';

CREATE OR REPLACE FUNCTION billing._link_customer(user_id uuid, stripe_customer_id text, email text DEFAULT NULL,
                                                  strict boolean DEFAULT true) RETURNS boolean
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    existing billing.customers;
BEGIN
    PERFORM billing._check_not_null(user_id, 'user_id');
    PERFORM billing._check_not_null(stripe_customer_id, 'stripe_customer_id');
    IF stripe_customer_id !~ '^cus_[A-Za-z0-9]+$' THEN
        RAISE EXCEPTION 'stripe_customer_id must be a Stripe customer id (cus_...), got %', quote_literal(left(stripe_customer_id, 60))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT FROM billing.deleted_customers d WHERE d.stripe_customer_id = _link_customer.stripe_customer_id) THEN
        IF strict THEN
            RAISE EXCEPTION 'Stripe customer % was deleted', stripe_customer_id
                USING ERRCODE = 'BL008', HINT = 'A deleted customer is never linked again; the next checkout creates a new one.';
        END IF;
        RETURN false;
    END IF;
    INSERT INTO billing.customers AS c (user_id, stripe_customer_id, email)
    VALUES (_link_customer.user_id, _link_customer.stripe_customer_id, _link_customer.email)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN true;
    END IF;
    SELECT * INTO existing FROM billing.customers c
    WHERE c.user_id = _link_customer.user_id OR c.stripe_customer_id = _link_customer.stripe_customer_id
    ORDER BY c.user_id = _link_customer.user_id DESC LIMIT 1;
    IF existing.user_id = user_id AND existing.stripe_customer_id = stripe_customer_id OR NOT strict THEN
        RETURN false;
    END IF;
    IF existing.user_id = user_id THEN
        RAISE EXCEPTION 'user % already has Stripe customer %', user_id, existing.stripe_customer_id
            USING ERRCODE = 'BL008', DETAIL = format('refusing to link %s as well', stripe_customer_id);
    END IF;
    RAISE EXCEPTION 'Stripe customer % already belongs to another user', stripe_customer_id
        USING ERRCODE = 'BL008';
END
$$;
COMMENT ON FUNCTION billing._link_customer(uuid, text, text, boolean) IS 'Internal: links a user to a Stripe customer, one to one; true when the link is new. When either side is linked to another, or the customer was deleted, raises BL008 (strict) or returns false.';

CREATE OR REPLACE FUNCTION billing._forget_customer(stripe_customer_id text) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    owner uuid;
BEGIN
    DELETE FROM billing.customers c WHERE c.stripe_customer_id = _forget_customer.stripe_customer_id
    RETURNING c.user_id INTO owner;
    INSERT INTO billing.deleted_customers (stripe_customer_id, user_id) VALUES (stripe_customer_id, owner)
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION billing._forget_customer(text) IS 'Internal: a customer deleted in Stripe: its link goes (the user gets a new customer at the next checkout) and it is never linked again.';

CREATE OR REPLACE FUNCTION billing.link_customer(user_id uuid, stripe_customer_id text, email text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM billing._lock_customer(stripe_customer_id);
    IF billing._link_customer(user_id, stripe_customer_id, email) THEN
        -- Events that could not be attributed before this link are applied now.
        PERFORM billing._apply_waiting(stripe_customer_id, NULL);
    END IF;
    RETURN stripe_customer_id;
END
$$;
COMMENT ON FUNCTION billing.link_customer(uuid, text, text) IS 'Privileged (the worker): links a user to their Stripe customer, one to one; idempotent. A new link applies the events that waited for it.';

-- Which app user an event concerns: an explicit user id (client_reference_id or metadata.user_id,
-- which only the account's own keys can set), else the user linked to the Stripe customer, else
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
                  HINT = 'The event is kept and applied as soon as anything makes its user known: a checkout linking the customer, a subscription or customer naming the user in its metadata.';
    END IF;
    RETURN uid;
END
$$;
COMMENT ON FUNCTION billing._resolve_user(text, text, text) IS 'Internal: the user an event concerns, or error BL007 when nothing links it to one yet.';
