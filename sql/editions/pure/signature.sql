-- The pure-SQL edition's twins of extension/src/signature.rs (DESIGN.md, "Signatures" and "Two
-- editions"): the same five signatures, defaults, volatility and strictness that pgrx generates
-- for the Rust functions, the same SQLSTATEs, messages and hints, and the same rules as
-- core/src/signature.rs. HMAC-SHA256 is pgcrypto's hmac(), which Supabase installs in schema
-- extensions. Their comments are the extension's (sql/security/finalize.sql runs after this file
-- in both editions); tests/tests/editions.rs holds the two editions to the same answers.

-- Rust's str::trim: Unicode White_Space at both ends (not the locale's idea of a space).
CREATE OR REPLACE FUNCTION billing._signature_trim(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.btrim(value, E'\t\n\x0B\f\r \u0085\u00A0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200A\u2028\u2029\u202F\u205F\u3000');
COMMENT ON FUNCTION billing._signature_trim(text) IS 'Internal (pure-SQL edition): trims Unicode white space from both ends, as the extension''s header parser does.';

-- The Unix second of a timestamp, as the extension computes it: NULL is the wall clock, and the
-- infinities are the extremes of Postgres' microsecond counter.
CREATE OR REPLACE FUNCTION billing._signature_unix_seconds(at timestamptz) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE
    WHEN at IS NULL THEN pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()))::bigint
    WHEN pg_catalog.isfinite(at) THEN pg_catalog.floor(EXTRACT(epoch FROM at))::bigint
    WHEN at > 'epoch'::timestamptz THEN 9224318721654
    ELSE -9222425352055
END;
COMMENT ON FUNCTION billing._signature_unix_seconds(timestamptz) IS 'Internal (pure-SQL edition): Unix seconds of at (NULL: the wall clock), rounded down, as the extension reads timestamps.';

-- verify() of core/src/signature.rs without raising: the 1-based position in secrets of the
-- first secret whose signature the header carries, or the failure (a kind and its message).
CREATE OR REPLACE FUNCTION billing._signature_check(payload text, header text, secrets text[],
    tolerance_seconds integer, now_seconds bigint, OUT matched integer, OUT failure text, OUT message text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    item text;
    key text;
    value text;
    t bigint;
    t_value numeric;
    tags bytea[] := '{}';
    tag bytea;
    has_v1 boolean := false;
    secret text;
    n integer := 0;
    expected bytea;
    found boolean;
    age numeric;
BEGIN
    -- A negative tolerance is a mistake, not a way to turn the time check off.
    IF tolerance_seconds < 0 THEN
        failure := 'negative_tolerance';
        message := pg_catalog.format('the tolerance must be 0 or more seconds (0 or NULL turn the time check off), got %s', tolerance_seconds);
        RETURN;
    END IF;
    -- Loops over arrays below, not queries: each query a PL/pgSQL function runs costs more than
    -- the HMAC of a typical payload.
    found := false;
    FOREACH secret IN ARRAY coalesce(secrets, '{}') LOOP
        found := found OR coalesce(secret <> '', false);
    END LOOP;
    IF NOT found THEN
        failure := 'no_secret';
        message := 'no webhook signing secret is configured';
        RETURN;
    END IF;
    IF header IS NULL OR billing._signature_trim(header) = '' THEN
        failure := 'no_header';
        message := 'no Stripe-Signature header was provided';
        RETURN;
    END IF;
    IF pg_catalog.octet_length(header) > 8 * 1024 THEN
        failure := 'malformed';
        message := 'the Stripe-Signature header is malformed: it is longer than 8 KiB';
        RETURN;
    END IF;
    FOREACH item IN ARRAY pg_catalog.string_to_array(header, ',') LOOP
        item := billing._signature_trim(item);
        CONTINUE WHEN item = '' OR pg_catalog.strpos(item, '=') = 0;
        key := billing._signature_trim(pg_catalog.split_part(item, '=', 1));
        value := billing._signature_trim(pg_catalog.substr(item, pg_catalog.strpos(item, '=') + 1));
        IF key = 't' THEN
            IF value !~ '^-?[0-9]+$' THEN
                failure := 'malformed';
                message := 'the Stripe-Signature header is malformed: its t= timestamp is not an integer';
                RETURN;
            END IF;
            t_value := value::numeric;
            IF t_value NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
                failure := 'malformed';
                message := 'the Stripe-Signature header is malformed: its t= timestamp is out of range';
                RETURN;
            END IF;
            IF t IS NOT NULL AND t <> t_value THEN
                failure := 'malformed';
                message := 'the Stripe-Signature header is malformed: it has two different t= timestamps';
                RETURN;
            END IF;
            t := t_value;
        ELSIF key = 'v1' THEN
            has_v1 := true;
            -- Anything but 64 hex digits is kept as a signature that never matches.
            tags := tags || CASE WHEN value ~ '^[0-9A-Fa-f]{64}$' THEN pg_catalog.decode(value, 'hex') END;
        END IF;
    END LOOP;
    IF t IS NULL THEN
        failure := 'malformed';
        message := 'the Stripe-Signature header is malformed: it has no t= timestamp';
        RETURN;
    END IF;
    IF NOT has_v1 THEN
        failure := 'no_v1';
        message := 'the Stripe-Signature header has no v1 signatures';
        RETURN;
    END IF;
    FOREACH secret IN ARRAY secrets LOOP
        n := n + 1;
        CONTINUE WHEN secret IS NULL OR secret = '';
        expected := pg_catalog.sha256(extensions.hmac(t::text || '.' || coalesce(payload, ''), secret, 'sha256'));
        -- SQL has no constant-time comparison: comparing digests of the tags means the time a
        -- comparison takes says nothing about how much of a forged tag was right. Every tag is
        -- compared, so the time does not say which one matched either.
        found := false;
        FOREACH tag IN ARRAY tags LOOP
            found := found OR coalesce(pg_catalog.sha256(tag) = expected, false);
        END LOOP;
        IF found THEN
            matched := n;
            EXIT;
        END IF;
    END LOOP;
    IF matched IS NULL THEN
        failure := 'no_match';
        message := 'no signature in the Stripe-Signature header matches the payload';
        RETURN;
    END IF;
    -- The signature is checked first, so that a stale forgery is reported as a forgery.
    IF tolerance_seconds IS NOT NULL AND tolerance_seconds <> 0 THEN
        age := now_seconds::numeric - t;
        IF pg_catalog.abs(age) > tolerance_seconds THEN
            matched := NULL;
            failure := 'outside_tolerance';
            message := pg_catalog.format('the Stripe-Signature timestamp is outside the tolerance zone (%s seconds from now, tolerance %s seconds)',
                                         age, tolerance_seconds);
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION billing._signature_check(text, text, text[], integer, bigint) IS 'Internal (pure-SQL edition): checks a Stripe-Signature header against secrets like the extension''s verify(); returns the position of the matching secret, or the failure and its message.';

-- Raises a failure of billing._signature_check with the extension's SQLSTATE and hint.
CREATE OR REPLACE FUNCTION billing._signature_raise(failure text, message text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    CASE failure
        WHEN 'no_header' THEN
            RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'invalid_authorization_specification',
                HINT = 'Pass the raw value of the request''s Stripe-Signature header.';
        WHEN 'malformed' THEN
            RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'invalid_text_representation',
                HINT = 'Expected t=<unix time>,v1=<hex signature>[,v1=...]; pass the header value unchanged.';
        WHEN 'no_v1' THEN
            RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'invalid_parameter_value',
                HINT = 'Stripe signs with the v1 scheme; make sure the request really comes from Stripe.';
        WHEN 'no_match' THEN
            RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'invalid_password',
                HINT = 'Check that the payload is the exact raw request body and that the signing secret belongs to this webhook endpoint.';
        WHEN 'outside_tolerance' THEN
            RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'datetime_field_overflow',
                HINT = 'The event was signed too long ago or in the future: check the server clock, or raise the tolerance.';
        WHEN 'no_secret' THEN
            RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'Pass the endpoint''s signing secret (whsec_...).';
        WHEN 'negative_tolerance' THEN
            RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'invalid_parameter_value',
                HINT = 'Pass a tolerance in seconds (300 is Stripe''s default), or 0 to skip the time check.';
    END CASE;
END
$$;
COMMENT ON FUNCTION billing._signature_raise(text, text) IS 'Internal (pure-SQL edition): raises a signature failure with the SQLSTATE and hint the extension uses for it.';

CREATE OR REPLACE FUNCTION billing.stripe_signature_is_valid(payload text, header text, secret text,
    tolerance_seconds integer DEFAULT 300, at timestamptz DEFAULT now()) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN payload IS NOT NULL
   AND (billing._signature_check(payload, header, ARRAY[secret], tolerance_seconds,
                                 billing._signature_unix_seconds(at))).failure IS NULL;

CREATE OR REPLACE FUNCTION billing.construct_event(payload text, header text, secret text,
    tolerance_seconds integer DEFAULT 300, at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    checked record;
BEGIN
    IF payload IS NULL THEN
        RAISE EXCEPTION 'the webhook payload is NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the exact raw request body as text.';
    END IF;
    checked := billing._signature_check(payload, header, ARRAY[secret], tolerance_seconds,
                                        billing._signature_unix_seconds(at));
    IF checked.failure IS NOT NULL THEN
        PERFORM billing._signature_raise(checked.failure, checked.message);
    END IF;
    BEGIN
        RETURN payload::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'the webhook payload is not valid JSON'
            USING ERRCODE = 'invalid_json_text', DETAIL = SQLERRM, HINT = 'Pass the raw request body unchanged.';
    END;
END
$$;

CREATE OR REPLACE FUNCTION billing.stripe_signature_header(payload text, secret text, t bigint) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    IF secret = '' THEN
        PERFORM billing._signature_raise('no_secret', 'no webhook signing secret is configured');
    END IF;
    RETURN 't=' || t || ',v1=' || pg_catalog.encode(extensions.hmac(t::text || '.' || payload, secret, 'sha256'), 'hex');
END
$$;

CREATE OR REPLACE FUNCTION billing._verify_webhook_signature(payload text, header text, secrets text[],
    tolerance_seconds integer DEFAULT 300) RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    checked record;
BEGIN
    checked := billing._signature_check(payload, header, secrets, tolerance_seconds,
                                        billing._signature_unix_seconds(NULL));
    -- With no usable secret the extension never looks at the tolerance either. Asked only here,
    -- off the path of every delivery: a query costs more than the HMAC of a typical payload.
    IF checked.failure = 'negative_tolerance'
       AND NOT EXISTS (SELECT FROM pg_catalog.unnest(secrets) s WHERE s <> '') THEN
        PERFORM billing._signature_raise('no_secret', 'no webhook signing secret is configured');
    END IF;
    IF checked.failure IS NOT NULL THEN
        PERFORM billing._signature_raise(checked.failure, checked.message);
    END IF;
    RETURN checked.matched;
END
$$;
