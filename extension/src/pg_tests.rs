//! Tier 2 (`cargo pgrx test`): Rust <-> SQL glue for the signature functions: argument passing, defaults, NULLs and the
//! error raised for each failure. Behaviour in depth is covered by the core unit tests and the
//! SQL-level integration tests.
use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const BODY: &str = r#"{"id":"evt_1","object":"event"}"#;
    const SECRET: &str = "whsec_test_secret";
    const TAG: &str = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";

    fn bool_query(sql: &str) -> Option<bool> {
        Spi::get_one::<bool>(sql).expect("query runs")
    }

    #[pg_test]
    fn header_function_signs_like_stripe() {
        let header = Spi::get_one::<String>(&format!(
            "SELECT billing.stripe_signature_header('{BODY}', '{SECRET}', 1700000000)"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(header, format!("t=1700000000,v1={TAG}"));
    }

    #[pg_test]
    fn is_valid_uses_the_at_argument_and_default_tolerance() {
        let base = format!(
            "billing.stripe_signature_is_valid('{BODY}', 't=1700000000,v1={TAG}', '{SECRET}'"
        );
        assert_eq!(
            bool_query(&format!("SELECT {base}, at => to_timestamp(1700000299))")),
            Some(true)
        );
        assert_eq!(
            bool_query(&format!("SELECT {base}, at => to_timestamp(1700000301))")),
            Some(false)
        );
        assert_eq!(
            bool_query(&format!("SELECT {base}, 0, to_timestamp(0))")),
            Some(true)
        );
        assert_eq!(
            bool_query(&format!("SELECT {base}, NULL, now())")),
            Some(true)
        );
        // Against the real clock the 2023 timestamp is stale.
        assert_eq!(bool_query(&format!("SELECT {base})")), Some(false));
    }

    #[pg_test]
    fn is_valid_never_raises_for_null_or_garbage() {
        for args in [
            format!("NULL, 't=1,v1={TAG}', '{SECRET}'"),
            format!("'{BODY}', NULL, '{SECRET}'"),
            format!("'{BODY}', 't=1,v1={TAG}', NULL"),
            format!("'{BODY}', 'garbage', '{SECRET}'"),
            format!("'{BODY}', repeat('t=1,', 100000), '{SECRET}'"),
            format!("'{BODY}', 't=99999999999999999999,v1=zz', '{SECRET}'"),
        ] {
            assert_eq!(
                bool_query(&format!("SELECT billing.stripe_signature_is_valid({args})")),
                Some(false),
                "{args}"
            );
        }
    }

    #[pg_test]
    fn construct_event_returns_the_parsed_body() {
        let event = Spi::get_one::<pgrx::JsonB>(&format!(
            "SELECT billing.construct_event('{BODY}', 't=1700000000,v1={TAG}', '{SECRET}', 0)"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(event.0["id"], "evt_1");
    }

    #[pg_test(error = "no signature in the Stripe-Signature header matches the payload")]
    fn construct_event_rejects_a_wrong_secret() {
        Spi::run(&format!(
            "SELECT billing.construct_event('{BODY}', 't=1700000000,v1={TAG}', 'whsec_other', 0)"
        ))
        .unwrap();
    }

    #[pg_test(error = "no Stripe-Signature header was provided")]
    fn construct_event_rejects_a_null_header() {
        Spi::run(&format!(
            "SELECT billing.construct_event('{BODY}', NULL, '{SECRET}')"
        ))
        .unwrap();
    }

    #[pg_test(error = "no webhook signing secret is configured")]
    fn construct_event_rejects_a_null_secret() {
        Spi::run(&format!(
            "SELECT billing.construct_event('{BODY}', 't=1,v1={TAG}', NULL)"
        ))
        .unwrap();
    }

    #[pg_test(error = "the webhook payload is not valid JSON")]
    fn construct_event_rejects_a_signed_non_json_body() {
        Spi::run(&format!(
            "SELECT billing.construct_event('not json', billing.stripe_signature_header('not json', '{SECRET}', 5), '{SECRET}', 0)"
        ))
        .unwrap();
    }

    #[pg_test(error = "the Stripe-Signature header is malformed: it has no t= timestamp")]
    fn construct_event_rejects_a_header_without_timestamp() {
        Spi::run(&format!(
            "SELECT billing.construct_event('{BODY}', 'v1={TAG}', '{SECRET}')"
        ))
        .unwrap();
    }

    #[pg_test]
    fn verify_webhook_signature_reports_which_rotated_secret_matched() {
        let position = Spi::get_one::<i32>(&format!(
            "SELECT billing._verify_webhook_signature('{BODY}', 't=1700000000,v1={TAG}', ARRAY['whsec_old', NULL, '{SECRET}'], 0)"
        ))
        .unwrap();
        assert_eq!(position, Some(3));
    }

    /// The pgrx test cluster has none of Supabase's roles: the extension must install cleanly
    /// there, and `apply_grants` must pick the roles up once they are created.
    #[pg_test]
    fn installs_without_client_roles_and_grants_when_they_appear() {
        let count = |sql: &str| Spi::get_one::<i64>(sql).unwrap().unwrap();
        assert_eq!(
            count("SELECT count(*) FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role')"),
            0
        );
        assert_eq!(count("SELECT count(*) FROM billing.security_report()"), 0);
        let before = Spi::get_one::<String>("SELECT billing.apply_grants()")
            .unwrap()
            .unwrap();
        assert!(before.contains("no client roles"), "{before}");

        Spi::run("CREATE ROLE authenticated NOLOGIN; CREATE ROLE anon NOLOGIN").unwrap();
        let after = Spi::get_one::<String>("SELECT billing.apply_grants()")
            .unwrap()
            .unwrap();
        assert_eq!(after, "granted to: anon, authenticated");
        assert_eq!(count("SELECT count(*) FROM billing.security_report()"), 0);
        let can = |role: &str, function: &str| {
            Spi::get_one::<bool>(&format!(
                "SELECT has_function_privilege('{role}', '{function}', 'EXECUTE')"
            ))
            .unwrap()
            .unwrap()
        };
        assert!(can("authenticated", "billing.token_balance(uuid,uuid)"));
        assert!(!can(
            "authenticated",
            "billing.grant_tokens(uuid,bigint,text,timestamptz,uuid,text,jsonb)"
        ));
        assert!(can("anon", "billing.stripe_webhook(json)"));
        assert!(!can("anon", "billing.token_balance(uuid,uuid)"));
    }
}
