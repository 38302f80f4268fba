-- Alerts: a user hears before running out of tokens (low-balance alerts) and before tokens
-- expire (expiry warnings). Both write billing.notifications (DESIGN.md, "Alerts").

CREATE TABLE billing.balance_alerts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    threshold bigint CHECK (threshold BETWEEN 0 AND 1000000000000),
    enabled boolean NOT NULL DEFAULT true,
    armed boolean NOT NULL DEFAULT true,
    generation bigint NOT NULL DEFAULT 0 CHECK (generation >= 0),
    fired_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- One row per balance, found by the spend with the same key as the live-grant index.
CREATE UNIQUE INDEX balance_alerts_balance_key ON billing.balance_alerts
    (user_id, coalesce(project_id, billing._no_project()));
COMMENT ON TABLE billing.balance_alerts IS 'Low-balance alert of one balance (a user''s own, or one project''s): its threshold and whether it may fire. A balance without a row follows billing.config.low_balance_threshold; a row is written when a user or operator sets one, or when the default first fires. Users read their own rows.';
COMMENT ON COLUMN billing.balance_alerts.id IS 'Surrogate key; part of the low_balance notification''s key.';
COMMENT ON COLUMN billing.balance_alerts.user_id IS 'Whose balance: a user''s id, or a team''s (billing.accounts.id; its owners and admins set it, its members read it and its notifications).';
COMMENT ON COLUMN billing.balance_alerts.project_id IS 'The project whose balance it watches, or NULL for the user''s own balance.';
COMMENT ON COLUMN billing.balance_alerts.threshold IS 'A spend that takes the balance from above this to at or below it notifies (0 to 1000000000000); NULL = the operator''s billing.config.low_balance_threshold.';
COMMENT ON COLUMN billing.balance_alerts.enabled IS 'false: no alerts for this balance, whatever the default.';
COMMENT ON COLUMN billing.balance_alerts.armed IS 'Whether the next crossing notifies: false after an alert, true again once a grant lifts the balance above the threshold (or the threshold is set again).';
COMMENT ON COLUMN billing.balance_alerts.generation IS 'How many alerts fired; the notification''s key is low_balance:<id>:<generation>, so one crossing notifies once.';
COMMENT ON COLUMN billing.balance_alerts.fired_at IS 'When the last alert fired.';
COMMENT ON COLUMN billing.balance_alerts.updated_at IS 'When the threshold or enabled was last set.';

-- Grants already warned of their expiry: a table of its own, because the ledger's grants are
-- append-only in what matters and a sweep must not rewrite them; the key makes a warning once.
CREATE TABLE billing.expiry_warnings (
    grant_id bigint PRIMARY KEY REFERENCES billing.token_grants (id),
    user_id uuid NOT NULL,
    warned_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.expiry_warnings IS 'Grants whose coming expiry billing.warn_expiring_grants() has notified (tokens_expiring), one row per grant so a grant is warned once. Users read their own rows.';
COMMENT ON COLUMN billing.expiry_warnings.grant_id IS 'The grant warned about.';
COMMENT ON COLUMN billing.expiry_warnings.user_id IS 'Its owner (kept for row-level security).';
COMMENT ON COLUMN billing.expiry_warnings.warned_at IS 'When the warning was written.';

-- The sweep's index: live grants by expiry. Spent-out grants leave it and expired ones sit
-- before now(), so a sweep reads only the grants expiring within the window, however long the
-- history grows.
CREATE INDEX token_grants_expiring_idx ON billing.token_grants (expires_at)
    WHERE remaining > 0 AND expires_at IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('billing.balance_alerts', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.balance_alerts', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('billing.expiry_warnings', '');
