-- The queue's wake-up: every new request NOTIFYs the worker.

CREATE TRIGGER stripe_requests_notify AFTER INSERT ON billing.stripe_requests
    FOR EACH ROW EXECUTE FUNCTION billing._notify_stripe_request();
