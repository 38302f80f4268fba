-- The books of reversals and debts are kept like the grants' (sql/ledger/triggers.sql): a debt
-- starts at its full amount, only a settlement takes from it, and nothing is edited afterwards.

CREATE TRIGGER token_debts_start_full BEFORE INSERT ON billing.token_debts
    FOR EACH ROW EXECUTE FUNCTION billing._starts_full();
CREATE TRIGGER token_debts_books BEFORE UPDATE OF remaining, tokens, user_id, project_id, reversal_id ON billing.token_debts
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION billing._refuse_ledger_edit();
CREATE TRIGGER token_debt_settlements_take AFTER INSERT ON billing.token_debt_settlements
    FOR EACH ROW EXECUTE FUNCTION billing._settle_debt();
CREATE TRIGGER token_debt_settlements_books BEFORE UPDATE OR DELETE ON billing.token_debt_settlements
    FOR EACH ROW EXECUTE FUNCTION billing._refuse_ledger_edit();
CREATE TRIGGER token_reversals_books BEFORE UPDATE OR DELETE ON billing.token_reversals
    FOR EACH ROW EXECUTE FUNCTION billing._refuse_ledger_edit();
