-- Entitlements: what each plan lets its subscribers do (issue 23, item 3). billing.has_feature
-- and billing.feature_limit (sql/entitlements/functions.sql) read it with the subscription's
-- state, once per statement inside an app's RLS policies.

CREATE TABLE billing.plan_features (
    plan_id text NOT NULL REFERENCES billing.plans (id) ON UPDATE CASCADE ON DELETE CASCADE,
    feature text NOT NULL CHECK (feature ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    limit_value bigint CHECK (limit_value >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- (plan_id, feature) is the key has_feature's join probes: one index lookup per subscription.
    PRIMARY KEY (plan_id, feature)
);
COMMENT ON TABLE billing.plan_features IS 'The features each plan grants its subscribers (while the subscription is active, trialing, or past_due within past_due_grace_seconds), with an optional limit: what billing.has_feature and billing.feature_limit answer from. Privileged roles only.';
COMMENT ON COLUMN billing.plan_features.plan_id IS 'The plan (billing.plans.id) that grants the feature.';
COMMENT ON COLUMN billing.plan_features.feature IS 'The feature''s key, your own short identifier: lower-case letter first, then up to 62 of a-z, 0-9, _, . and -, e.g. export or seats.max.';
COMMENT ON COLUMN billing.plan_features.limit_value IS 'How much of the feature the plan allows (a count of projects, exports a month, ...), for the app to enforce; NULL = no limit. billing.feature_limit returns the largest over the user''s qualifying plans.';
COMMENT ON COLUMN billing.plan_features.created_at IS 'When the row was added.';

SELECT pg_catalog.pg_extension_config_dump('billing.plan_features', '');
