-- The hand-written part of the 0.1.0 -> 0.2.0 upgrade: changes to state (tables, types, indexes,
-- triggers, policies) and to function signatures. The code files of sql/manifest.txt are
-- replayed where the @replay line stands, so everything they define is up to date after it.

-- Internal functions now start with an underscore. Renaming keeps the objects that depend on
-- them (policies, the live-grant index, the trigger) pointing at them; the replayed code below
-- then gives each its current body.
ALTER FUNCTION billing.no_project() RENAME TO _no_project;
COMMENT ON FUNCTION billing._no_project() IS 'Internal: stands for "no project" in the live-grant index, so one index serves user and project balances.';
ALTER FUNCTION billing.is_privileged() RENAME TO _is_privileged;
ALTER FUNCTION billing.require_user() RENAME TO _require_user;
ALTER FUNCTION billing.check_not_null(anyelement, text) RENAME TO _check_not_null;
ALTER FUNCTION billing.check_user_exists(uuid) RENAME TO _check_user_exists;
ALTER FUNCTION billing.check_project(uuid, uuid) RENAME TO _check_project;
ALTER FUNCTION billing.settings() RENAME TO _settings;
ALTER FUNCTION billing.check_url(text, text) RENAME TO _check_url;
ALTER FUNCTION billing.request_json(billing.stripe_requests) RENAME TO _request_json;
ALTER FUNCTION billing.notify_stripe_request() RENAME TO _notify_stripe_request;
ALTER FUNCTION billing.grant_json(billing.token_grants, boolean) RENAME TO _grant_json;
ALTER FUNCTION billing.insert_grant(uuid, bigint, text, timestamptz, uuid, text, jsonb) RENAME TO _insert_grant;
ALTER FUNCTION billing.spend(uuid, bigint, uuid, text, text) RENAME TO _spend;
ALTER FUNCTION billing.live_balance(uuid, uuid) RENAME TO _live_balance;
ALTER FUNCTION billing.unix_time(jsonb) RENAME TO _unix_time;
ALTER FUNCTION billing.uuid_or_null(text) RENAME TO _uuid_or_null;
ALTER FUNCTION billing.event_version(jsonb, smallint) RENAME TO _event_version;
ALTER FUNCTION billing.is_newer(billing.event_version, billing.event_version) RENAME TO _is_newer;
ALTER FUNCTION billing.plan_for_price(text) RENAME TO _plan_for_price;
ALTER FUNCTION billing.resolve_user(text, text, text) RENAME TO _resolve_user;
ALTER FUNCTION billing.is_being_applied(text) RENAME TO _is_being_applied;
ALTER FUNCTION billing.upsert_subscription_link(text, uuid, text) RENAME TO _upsert_subscription_link;
ALTER FUNCTION billing.apply_checkout_session(jsonb) RENAME TO _apply_checkout_session;
ALTER FUNCTION billing.apply_subscription(jsonb) RENAME TO _apply_subscription;
ALTER FUNCTION billing.invoice_grant(jsonb) RENAME TO _invoice_grant;
ALTER FUNCTION billing.update_subscription_from_invoice(text, billing.event_version, timestamptz, timestamptz, text) RENAME TO _update_subscription_from_invoice;
ALTER FUNCTION billing.apply_invoice(jsonb) RENAME TO _apply_invoice;
ALTER FUNCTION billing.apply_in_subtransaction(jsonb) RENAME TO _apply_in_subtransaction;
ALTER FUNCTION billing.apply_stored_event(text) RENAME TO _apply_stored_event;
ALTER FUNCTION billing.normalize_event(text) RENAME TO _normalize_event;
ALTER FUNCTION billing.verify_webhook_signature(text, text, text[], integer) RENAME TO _verify_webhook_signature;

-- The policies name the renamed function; re-stating them gives their expressions the column
-- name a fresh install has.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'subscriptions', 'token_grants', 'token_spends', 'token_spend_allocations',
                             'stripe_requests', 'projects', 'config', 'webhook_secrets', 'stripe_events', 'plans'] LOOP
        EXECUTE format($p$ALTER POLICY privileged ON billing.%I
                          USING ((SELECT billing._is_privileged())) WITH CHECK ((SELECT billing._is_privileged()))$p$, t);
    END LOOP;
END
$$;

-- @replay
