-- Accounts (issue 23, item 1): who owns a wallet, a customer, subscriptions, purchases and grants.
-- A personal account is implicit: its id IS the user's id, so every 0.2.0 row (keyed by user_id)
-- already belongs to the right account and the upgrade rewrites nothing. A team is an explicit
-- row here with its own uuid, which then stands in the same user_id columns of the ledger, the
-- customers, subscriptions, purchases, requests and notifications (DESIGN.md, "Accounts").

CREATE TABLE billing.accounts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.accounts IS 'Team accounts (billing.create_team). A personal account has no row: its id is the user''s id. Members read their teams (row-level security).';
COMMENT ON COLUMN billing.accounts.id IS 'The team''s account id: what the user_id columns of customers, subscriptions, grants, spends, purchases and notifications hold for the team''s rows.';
COMMENT ON COLUMN billing.accounts.name IS 'Display name, 1 to 200 characters.';
COMMENT ON COLUMN billing.accounts.created_by IS 'The user who created the team (its first owner).';
COMMENT ON COLUMN billing.accounts.created_at IS 'When the team was created.';

CREATE TABLE billing.account_members (
    account_id uuid NOT NULL REFERENCES billing.accounts (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    spend_limit bigint CHECK (spend_limit BETWEEN 0 AND 1000000000000),
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, user_id),
    -- A team's id is never a user's own id, so personal and team rows cannot be confused.
    CONSTRAINT account_members_not_self CHECK (user_id <> account_id)
);
-- billing._visible_accounts() looks a user's teams up by user: one index probe per statement.
CREATE INDEX account_members_user_idx ON billing.account_members (user_id);
COMMENT ON TABLE billing.account_members IS 'Who belongs to each team and with which role: owners and admins buy, open the portal and manage members; every member spends from the team wallet (billing.spend_account_tokens). Removing a row ends the member''s access and spending at once.';
COMMENT ON COLUMN billing.account_members.account_id IS 'The team (billing.accounts.id).';
COMMENT ON COLUMN billing.account_members.user_id IS 'The member''s user id.';
COMMENT ON COLUMN billing.account_members.role IS 'owner (everything, at least one per team), admin (buys, opens the portal, manages members other than owners) or member (spends, reads).';
COMMENT ON COLUMN billing.account_members.spend_limit IS 'Most tokens the member may spend from the team wallet per calendar month (UTC); NULL = no limit of their own.';
COMMENT ON COLUMN billing.account_members.added_at IS 'When the member was added.';

-- Which member spent a team's tokens; NULL for a personal account's spends and server spends.
ALTER TABLE billing.token_spends ADD COLUMN spent_by uuid;
COMMENT ON COLUMN billing.token_spends.spent_by IS 'For a team''s spend through billing.spend_account_tokens: the member who spent (their monthly spend_limit counts these). NULL otherwise.';
-- A member's spends of one team this month, summed under their member row's lock.
CREATE INDEX token_spends_member_idx ON billing.token_spends (user_id, spent_by, created_at)
    WHERE spent_by IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('billing.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('billing.account_members', '');
