-- Every price a plan sells is remembered, so a plan's price can change without losing the
-- subscribers of the old one.

CREATE TRIGGER plans_record_price AFTER INSERT OR UPDATE OF stripe_price_id ON billing.plans
    FOR EACH ROW EXECUTE FUNCTION billing._record_plan_price();
