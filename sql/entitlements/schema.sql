-- Entitlements: what each plan lets its subscribers do (issue 23, item 3). billing.has_feature
-- and billing.feature_limit (sql/entitlements/functions.sql) read it with the subscription's
-- state, once per statement inside an app's RLS policies.

CREATE TABLE billing.plan_features (
    plan_id text NOT NULL REFERENCES billing.plans (id) ON UPDATE CASCADE ON DELETE CASCADE,
    feature text NOT NULL CHECK (feature ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    limit_value bigint CHECK (limit_value >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- A token pack's features last this many days after each paid purchase (billing.pack_passes);
    -- a subscription's last as long as the subscription. The trigger plan_features_days_fit_kind
    -- (sql/entitlements/triggers.sql) holds the rule, which needs billing.plans.kind.
    days integer CHECK (days BETWEEN 1 AND 3650),
    -- (plan_id, feature) is the key has_feature's join probes: one index lookup per subscription.
    PRIMARY KEY (plan_id, feature)
);
COMMENT ON TABLE billing.plan_features IS 'The features each plan grants: a subscription plan to its subscribers (while the subscription is active, trialing, or past_due within past_due_grace_seconds), a token pack to its buyers for days after each paid purchase (billing.pack_passes); with an optional limit: what billing.has_feature and billing.feature_limit answer from. Privileged roles only.';
COMMENT ON COLUMN billing.plan_features.plan_id IS 'The plan (billing.plans.id) that grants the feature.';
COMMENT ON COLUMN billing.plan_features.feature IS 'The feature''s key, your own short identifier: lower-case letter first, then up to 62 of a-z, 0-9, _, . and -, e.g. export or seats.max.';
COMMENT ON COLUMN billing.plan_features.limit_value IS 'How much of the feature the plan allows (a count of projects, exports a month, ...), for the app to enforce; NULL = no limit. billing.feature_limit returns the largest over the user''s qualifying plans.';
COMMENT ON COLUMN billing.plan_features.created_at IS 'When the row was added.';
COMMENT ON COLUMN billing.plan_features.days IS 'For a token pack''s feature (required there): how many days each paid purchase of the pack grants it, from Stripe''s time of payment (billing.pack_passes), 1 to 3650; several purchases overlap, they do not add up. NULL for a subscription plan''s feature (refused otherwise, 22023), which lasts as long as the subscription qualifies.';

SELECT pg_catalog.pg_extension_config_dump('billing.plan_features', '');

-- Each paid purchase of a token pack: the time its features (plan_features.days) count from.
-- One row per purchase and pack, whatever the quantity (five packs in one session do not last
-- five times as long) and however often Stripe delivers the purchase's events.
CREATE TABLE billing.pack_passes (
    purchase_id text NOT NULL REFERENCES billing.purchases (id),
    plan_id text NOT NULL REFERENCES billing.plans (id) ON UPDATE CASCADE ON DELETE CASCADE,
    user_id uuid NOT NULL,
    bought_at timestamptz NOT NULL,
    ended_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (purchase_id, plan_id)
);
-- has_feature's pack branch: an account's passes, newest first.
CREATE INDEX pack_passes_user_idx ON billing.pack_passes (user_id, bought_at);
COMMENT ON TABLE billing.pack_passes IS 'Each paid purchase of a token pack (a Checkout Session line, an auto top-up): the pack''s features (billing.plan_features rows with days) are the account''s for that many days from bought_at, unless the whole purchase went back. Recorded for every pack purchase, with or without features, so features added to a pack later count for purchases already made. Users read their accounts'' rows.';
COMMENT ON COLUMN billing.pack_passes.purchase_id IS 'The purchase (billing.purchases.id: the Checkout Session cs_... or the auto top-up''s PaymentIntent pi_...).';
COMMENT ON COLUMN billing.pack_passes.plan_id IS 'The token pack bought (billing.plans.id).';
COMMENT ON COLUMN billing.pack_passes.user_id IS 'The account that bought it (a user''s own id or a team''s billing.accounts.id), as billing.purchases.user_id.';
COMMENT ON COLUMN billing.pack_passes.bought_at IS 'Stripe''s time of payment: the created time of the earliest delivered event that granted the purchase (never later than the truth in any delivery order). The features last plan_features.days from it.';
COMMENT ON COLUMN billing.pack_passes.ended_at IS 'When the whole purchase was found refunded or disputed (billing._settle_purchase: everything paid went back), which ends its features early; NULL while it stands, and again if that money comes back (a dispute won, a refund failed).';
COMMENT ON COLUMN billing.pack_passes.created_at IS 'When the row was added.';

SELECT pg_catalog.pg_extension_config_dump('billing.pack_passes', '');
