-- A pack's feature lasts a number of days after each purchase; a subscription's lasts as long as
-- the subscription. Which one a row is depends on its plan's kind, another table: a trigger.

CREATE TRIGGER plan_features_days_fit_kind BEFORE INSERT OR UPDATE OF plan_id, days ON billing.plan_features
    FOR EACH ROW EXECUTE FUNCTION billing._check_feature_days();
