-- The ledger's books are kept by the database: a grant's remaining is its tokens less what the
-- allocations took, and only an allocation changes it. Allocations, and what a grant or spend
-- amounts to, never change afterwards.

CREATE TRIGGER token_grants_start_full BEFORE INSERT ON billing.token_grants
    FOR EACH ROW EXECUTE FUNCTION billing._starts_full();
CREATE TRIGGER token_grants_books BEFORE UPDATE OF remaining, tokens, user_id, project_id, purchase_id ON billing.token_grants
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION billing._refuse_ledger_edit();
CREATE TRIGGER token_spends_books BEFORE UPDATE OF amount, user_id, project_id, kind ON billing.token_spends
    FOR EACH ROW EXECUTE FUNCTION billing._refuse_ledger_edit();
CREATE TRIGGER token_spend_allocations_take AFTER INSERT ON billing.token_spend_allocations
    FOR EACH ROW EXECUTE FUNCTION billing._take_from_grant();
CREATE TRIGGER token_spend_allocations_books BEFORE UPDATE OR DELETE ON billing.token_spend_allocations
    FOR EACH ROW EXECUTE FUNCTION billing._refuse_ledger_edit();
