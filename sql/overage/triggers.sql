-- A meter_event request's outcome is its overage's reported status.

CREATE TRIGGER stripe_requests_meter_outcome AFTER UPDATE OF status ON billing.stripe_requests
    FOR EACH ROW WHEN (NEW.kind = 'meter_event' AND NEW.status IN ('succeeded', 'failed')
                       AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION billing._record_meter_outcome();
