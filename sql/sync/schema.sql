-- Catching up with Stripe: where the worker's reading of Stripe's events API got to.

CREATE TABLE billing.event_sync (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    checked_until timestamptz,
    last_run_at timestamptz,
    last_run_listed integer CHECK (last_run_listed >= 0),
    last_run_new integer CHECK (last_run_new >= 0)
);
COMMENT ON TABLE billing.event_sync IS 'One row: how far the worker has read Stripe''s events API (GET /v1/events). The next catch-up starts there, less a margin. Privileged roles only.';
COMMENT ON COLUMN billing.event_sync.id IS 'Always true: keeps the table to one row.';
COMMENT ON COLUMN billing.event_sync.checked_until IS 'Every event Stripe created before this instant has been listed and ingested.';
COMMENT ON COLUMN billing.event_sync.last_run_at IS 'When the last catch-up finished.';
COMMENT ON COLUMN billing.event_sync.last_run_listed IS 'Events the last catch-up listed.';
COMMENT ON COLUMN billing.event_sync.last_run_new IS 'Of those, events the database did not have yet (missed deliveries).';

SELECT pg_catalog.pg_extension_config_dump('billing.event_sync', '');
