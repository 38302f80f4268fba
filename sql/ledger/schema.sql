-- The token ledger: grants, spends and the allocation of each spend to the grants it drew from.
-- Balance = sum(remaining) over unexpired grants (DESIGN.md, "The ledger").

-- Part of the live-grant index's definition, so it is state, never replaced.
CREATE FUNCTION billing._no_project() RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '00000000-0000-0000-0000-000000000000'::uuid $$;
COMMENT ON FUNCTION billing._no_project() IS 'Internal: stands for "no project" in the live-grant index, so one index serves user and project balances.';

CREATE TABLE billing.projects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    name text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_user_id_idx ON billing.projects (user_id);
COMMENT ON TABLE billing.projects IS 'Optional scopes for tokens: a grant or spend with a project_id draws from that project''s own balance.';
COMMENT ON COLUMN billing.projects.id IS 'Project id (use your app''s own project ids if it has them).';
COMMENT ON COLUMN billing.projects.user_id IS 'The user who owns the project and its tokens.';
COMMENT ON COLUMN billing.projects.name IS 'Display name.';
COMMENT ON COLUMN billing.projects.created_at IS 'When the row was added.';

CREATE TABLE billing.token_grants (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    source text NOT NULL CHECK (source ~ '^[a-z][a-z0-9_]{0,39}$'),
    tokens bigint NOT NULL CHECK (tokens > 0 AND tokens <= 1000000000000),
    remaining bigint NOT NULL CHECK (remaining >= 0),
    expires_at timestamptz,
    grant_key text UNIQUE CHECK (length(grant_key) BETWEEN 1 AND 255),
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_grants_remaining_le_tokens CHECK (remaining <= tokens)
);
-- The live set only: spent-out grants leave this index, and expired ones sit before now() in
-- it, so one range scan (expiry > now(), never-expiring sorted last as infinity) reads only
-- spendable grants, in spend order: balances and spends cost the same however long the
-- history grows.
CREATE INDEX token_grants_live_idx ON billing.token_grants
    (user_id, coalesce(project_id, billing._no_project()), coalesce(expires_at, 'infinity'::timestamptz))
    WHERE remaining > 0;
CREATE INDEX token_grants_user_idx ON billing.token_grants (user_id, created_at);
COMMENT ON TABLE billing.token_grants IS 'Tokens given to a user (optionally per project): plan periods, token pack purchases, manual grants. remaining is what spends have not taken yet.';
COMMENT ON COLUMN billing.token_grants.id IS 'Surrogate key; also the tie-breaker of the spend order.';
COMMENT ON COLUMN billing.token_grants.user_id IS 'The user who may spend the tokens.';
COMMENT ON COLUMN billing.token_grants.project_id IS 'NULL for the user''s own balance, or the project whose balance this grant belongs to.';
COMMENT ON COLUMN billing.token_grants.source IS 'Why: subscription_start, plan, plan_upgrade, payg_purchase, manual, ...';
COMMENT ON COLUMN billing.token_grants.tokens IS 'Tokens granted.';
COMMENT ON COLUMN billing.token_grants.remaining IS 'Tokens not yet spent. Balance = sum(remaining) of unexpired grants.';
COMMENT ON COLUMN billing.token_grants.expires_at IS 'From this instant the remainder no longer counts; NULL never expires.';
COMMENT ON COLUMN billing.token_grants.grant_key IS 'Idempotency key (Stripe invoice or checkout session id, or your own): a second grant with the same key is impossible.';
COMMENT ON COLUMN billing.token_grants.metadata IS 'Context for the grant (session id, amount paid, invoice, ...).';
COMMENT ON COLUMN billing.token_grants.created_at IS 'When the grant was made.';

CREATE TABLE billing.token_spends (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    project_id uuid REFERENCES billing.projects (id),
    amount bigint NOT NULL CHECK (amount > 0),
    reason text CHECK (length(reason) <= 500),
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    created_at timestamptz NOT NULL DEFAULT now(),
    key_scope text NOT NULL DEFAULT 'server' CHECK (key_scope IN ('server', 'user')),
    CONSTRAINT token_spends_idempotency_key UNIQUE (user_id, key_scope, idempotency_key)
);
CREATE INDEX token_spends_user_idx ON billing.token_spends (user_id, created_at);
COMMENT ON TABLE billing.token_spends IS 'Tokens spent. Each spend is allocated to one or more grants in billing.token_spend_allocations.';
COMMENT ON COLUMN billing.token_spends.id IS 'Surrogate key.';
COMMENT ON COLUMN billing.token_spends.user_id IS 'Whose tokens were spent.';
COMMENT ON COLUMN billing.token_spends.project_id IS 'The project balance spent from, or NULL for the user''s own balance.';
COMMENT ON COLUMN billing.token_spends.amount IS 'Tokens spent.';
COMMENT ON COLUMN billing.token_spends.reason IS 'Free text for the user''s history, e.g. "image generation".';
COMMENT ON COLUMN billing.token_spends.idempotency_key IS 'Repeating a spend with the same key (per user and key_scope) returns the first result instead of spending again.';
COMMENT ON COLUMN billing.token_spends.created_at IS 'When the spend happened.';
COMMENT ON COLUMN billing.token_spends.key_scope IS 'Whose idempotency key it is: server (billing.spend_tokens) or user (billing.spend_my_tokens); a user can never claim a key your back end will use.';

CREATE TABLE billing.token_spend_allocations (
    spend_id bigint NOT NULL REFERENCES billing.token_spends (id),
    grant_id bigint NOT NULL REFERENCES billing.token_grants (id),
    user_id uuid NOT NULL,
    tokens bigint NOT NULL CHECK (tokens > 0),
    PRIMARY KEY (spend_id, grant_id)
);
CREATE INDEX token_spend_allocations_grant_idx ON billing.token_spend_allocations (grant_id);
COMMENT ON TABLE billing.token_spend_allocations IS 'Which grants each spend drew from: sum(tokens) per spend equals its amount less its metered overage (billing.token_overages), and per grant equals tokens - remaining.';
COMMENT ON COLUMN billing.token_spend_allocations.spend_id IS 'The spend.';
COMMENT ON COLUMN billing.token_spend_allocations.grant_id IS 'The grant drawn from.';
COMMENT ON COLUMN billing.token_spend_allocations.user_id IS 'Owner of spend and grant (kept for row-level security).';
COMMENT ON COLUMN billing.token_spend_allocations.tokens IS 'Tokens taken from this grant.';

SELECT pg_catalog.pg_extension_config_dump('billing.projects', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_grants', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_spends', '');
SELECT pg_catalog.pg_extension_config_dump('billing.token_spend_allocations', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_grants', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('billing.token_spends', 'id')::regclass, '');
