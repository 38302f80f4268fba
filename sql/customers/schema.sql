-- Customers: the one-to-one link between an app user and their Stripe customer.

CREATE TABLE billing.customers (
    user_id uuid PRIMARY KEY,
    stripe_customer_id text NOT NULL UNIQUE CHECK (stripe_customer_id ~ '^cus_[A-Za-z0-9]+$'),
    email text,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.customers IS 'One Stripe customer per user and one user per Stripe customer.';
COMMENT ON COLUMN billing.customers.user_id IS 'The app user (Supabase auth.users.id).';
COMMENT ON COLUMN billing.customers.stripe_customer_id IS 'The Stripe customer (cus_...).';
COMMENT ON COLUMN billing.customers.email IS 'Email the customer was created with, if known.';
COMMENT ON COLUMN billing.customers.created_at IS 'When the link was stored.';

CREATE TABLE billing.deleted_customers (
    stripe_customer_id text PRIMARY KEY CHECK (stripe_customer_id ~ '^cus_[A-Za-z0-9]+$'),
    user_id uuid,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.deleted_customers IS 'Stripe customers deleted in Stripe (customer.deleted, or Stripe answering that it has no such customer): their link is gone and they are never linked again, whatever order events arrive in. Privileged roles only.';
COMMENT ON COLUMN billing.deleted_customers.stripe_customer_id IS 'The deleted Stripe customer (cus_...).';
COMMENT ON COLUMN billing.deleted_customers.user_id IS 'The user it was linked to, if any.';
COMMENT ON COLUMN billing.deleted_customers.deleted_at IS 'When the deletion was recorded.';

SELECT pg_catalog.pg_extension_config_dump('billing.customers', '');
SELECT pg_catalog.pg_extension_config_dump('billing.deleted_customers', '');
