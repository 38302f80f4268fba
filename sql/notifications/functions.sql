-- Notifications: written by effects, announced by NOTIFY.

CREATE OR REPLACE FUNCTION billing._notify(user_id uuid, kind text, event_id text, payload jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO billing.notifications (user_id, kind, payload, event_id)
    VALUES (_notify.user_id, _notify.kind, coalesce(_notify.payload, '{}'), _notify.event_id)
    ON CONFLICT ON CONSTRAINT notifications_once_per_event DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NOT NULL THEN
        -- Only the id: any role that may LISTEN would see a payload, so it carries no user id;
        -- the app reads the row with its own rights.
        PERFORM pg_notify('billing_notifications', new_id::text);
    END IF;
END
$$;
COMMENT ON FUNCTION billing._notify(uuid, text, text, jsonb) IS 'Internal: records a notification for a user (once per event and kind) and NOTIFYs billing_notifications with its id.';
