-- Auto top-up: a user's standing order to buy a token pack with the card saved at checkout when
-- a spend takes their balance to the threshold or below (docs/tokens.md, "Auto top-up").

CREATE TABLE billing.auto_top_ups (
    user_id uuid PRIMARY KEY,
    plan_id text NOT NULL REFERENCES billing.plans (id) ON UPDATE CASCADE,
    threshold bigint NOT NULL CHECK (threshold BETWEEN 0 AND 1000000000000),
    monthly_count_limit integer NOT NULL CHECK (monthly_count_limit BETWEEN 1 AND 100),
    monthly_amount_limit bigint NOT NULL CHECK (monthly_amount_limit BETWEEN 1 AND 100000000),
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text CHECK (length(disabled_reason) <= 2000),
    period_start date,
    period_count integer NOT NULL DEFAULT 0 CHECK (period_count >= 0),
    period_amount bigint NOT NULL DEFAULT 0 CHECK (period_amount >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Off always says why, so the app can tell the user what to do.
    CONSTRAINT auto_top_ups_reason_when_off CHECK (enabled = (disabled_reason IS NULL))
);
CREATE INDEX auto_top_ups_plan_idx ON billing.auto_top_ups (plan_id);
COMMENT ON TABLE billing.auto_top_ups IS 'Auto top-up settings, one row per account (a user''s personal one, or a team''s): when a spend takes the account''s own balance (no project) from above threshold to threshold or below, one top_up request charges the card saved at the account''s checkout for the pack plan_id, within the monthly limits. Users and team members read their accounts'' rows; owners and admins change them only through billing.set_my_auto_top_up / billing.disable_my_auto_top_up; privileged roles through billing.set_auto_top_up.';
COMMENT ON COLUMN billing.auto_top_ups.user_id IS 'The account: a user''s id, or a team''s (billing.accounts.id).';
COMMENT ON COLUMN billing.auto_top_ups.plan_id IS 'The token pack to buy (billing.plans, kind token_pack).';
COMMENT ON COLUMN billing.auto_top_ups.threshold IS 'Top up when a spend leaves the balance at or below this many tokens (having been above it).';
COMMENT ON COLUMN billing.auto_top_ups.monthly_count_limit IS 'At most this many top-ups per calendar month (UTC); past it the user is told once (notification top_up_limit_reached).';
COMMENT ON COLUMN billing.auto_top_ups.monthly_amount_limit IS 'At most this much money per calendar month (UTC), in the smallest unit of the pack price''s currency (cents).';
COMMENT ON COLUMN billing.auto_top_ups.enabled IS 'false after a charge was declined or needed the user''s authentication, or when the user turned it off; setting it again turns it on.';
COMMENT ON COLUMN billing.auto_top_ups.disabled_reason IS 'Why it is off (Stripe''s decline code and message, or "turned off by the user"); NULL while on.';
COMMENT ON COLUMN billing.auto_top_ups.period_start IS 'The month (its first day, UTC) that period_count and period_amount count; a top-up in a later month starts them again.';
COMMENT ON COLUMN billing.auto_top_ups.period_count IS 'Top-ups queued in the month of period_start (a declined charge counts: it was attempted).';
COMMENT ON COLUMN billing.auto_top_ups.period_amount IS 'Their amount, in the smallest currency unit.';
COMMENT ON COLUMN billing.auto_top_ups.updated_at IS 'When the settings last changed.';
COMMENT ON COLUMN billing.auto_top_ups.created_at IS 'When the user first set it.';

SELECT pg_catalog.pg_extension_config_dump('billing.auto_top_ups', '');
