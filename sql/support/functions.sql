-- Small helpers every concept uses: argument checks and Stripe's value formats.
--
-- Internal functions (their names start with _) are executable by privileged roles only, qualify
-- every name, and have no SET clause: they run inside the SECURITY DEFINER entry points and
-- inherit their pinned search_path, and without a SET clause the small SQL ones are inlined
-- and the others skip a settings switch per call, which matters on the webhook hot path.

CREATE OR REPLACE FUNCTION billing._check_not_null(value anyelement, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', name USING ERRCODE = 'null_value_not_allowed';
    END IF;
END
$$;
COMMENT ON FUNCTION billing._check_not_null(anyelement, text) IS 'Internal: raises 22004 "<name> must not be NULL" when value is NULL.';

CREATE OR REPLACE FUNCTION billing._unix_time(value jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN jsonb_typeof(value) = 'number' THEN to_timestamp(value::text::double precision) END
$$;
COMMENT ON FUNCTION billing._unix_time(jsonb) IS 'Internal: a Stripe Unix timestamp (JSON number) as timestamptz; NULL for anything else.';

CREATE OR REPLACE FUNCTION billing._uuid_or_null(value text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN value ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN value::uuid END
$$;
COMMENT ON FUNCTION billing._uuid_or_null(text) IS 'Internal: value as uuid when it is one, else NULL.';
