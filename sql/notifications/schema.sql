-- Notifications: what the app should tell a user (a failed payment, a payment that needs the
-- user's action, tokens taken back), one row per event, readable by the user it concerns.

CREATE TABLE billing.notifications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,39}$'),
    payload jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    event_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_once_per_event UNIQUE (event_id, kind)
);
CREATE INDEX notifications_user_idx ON billing.notifications (user_id, created_at);
COMMENT ON TABLE billing.notifications IS 'Things the app should tell a user, written by webhook effects; each insert NOTIFYs channel billing_notifications with the row id only. Users read their own rows.';
COMMENT ON COLUMN billing.notifications.id IS 'Notification id; the payload of the billing_notifications NOTIFY.';
COMMENT ON COLUMN billing.notifications.user_id IS 'The user to tell.';
COMMENT ON COLUMN billing.notifications.kind IS 'payment_failed, payment_action_required, ...';
COMMENT ON COLUMN billing.notifications.payload IS 'Details for the app, e.g. the invoice and its hosted_invoice_url.';
COMMENT ON COLUMN billing.notifications.event_id IS 'The Stripe event that caused it, or a key of ours for what no event causes (top_up:<request id>, top_up_limit:<user>:<month>): one notification of a kind per key.';
COMMENT ON COLUMN billing.notifications.created_at IS 'When it was written.';

SELECT pg_catalog.pg_extension_config_dump('billing.notifications', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.notifications', 'id')::regclass, '');
