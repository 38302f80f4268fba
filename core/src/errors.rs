//! The one table of error codes. The extension raises these SQLSTATEs (with the meaning given
//! here), the worker maps them to HTTP statuses from here, and docs/errors.md's table is
//! rendered from here (a test keeps the three in step, and another checks that the SQL raises no
//! code missing from this table).

/// Who is at fault when a webhook delivery fails with a code, which decides the answer Stripe
/// gets from the webhook endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFault {
    /// The delivery itself is bad (signature, header, body): 400, Stripe should not retry.
    Sender,
    /// The operator has not configured what the endpoint needs: 503, Stripe retries later.
    Configuration,
    /// Not expected from a webhook delivery: 500, and the worker logs it as an error.
    Unexpected,
}

/// One SQLSTATE the product raises on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    /// The five-character SQLSTATE.
    pub sqlstate: &'static str,
    /// The PL/pgSQL condition name for standard codes, or our short name for `BL…` codes.
    pub name: &'static str,
    /// What it means, for docs/errors.md and for people reading logs.
    pub meaning: &'static str,
    /// The HTTP status an API caller (the worker's checkout and portal endpoints) gets.
    pub http_status: u16,
    /// How the webhook endpoint answers it.
    pub webhook: WebhookFault,
}

use WebhookFault::{Configuration, Sender, Unexpected};

const fn code(
    sqlstate: &'static str,
    name: &'static str,
    meaning: &'static str,
    http_status: u16,
    webhook: WebhookFault,
) -> Code {
    Code {
        sqlstate,
        name,
        meaning,
        http_status,
        webhook,
    }
}

/// Every code, ours (`BL…`) first, then the standard ones we raise deliberately.
pub const CODES: &[Code] = &[
    code("BL001", "insufficient_tokens", "insufficient tokens (nothing was spent)", 402, Unexpected),
    code("BL002", "no_billing_account", "no billing account yet, make a purchase first", 400, Unexpected),
    code("BL003", "billing_not_configured", "billing is not configured: no webhook signing secret", 503, Configuration),
    code("BL004", "key_reused", "an idempotency or grant key was reused for something different", 409, Unexpected),
    code("BL005", "already_subscribed", "the user already has a subscription (use the portal)", 409, Unexpected),
    code("BL006", "unknown_price", "unknown price (webhooks: stored, re-apply with reprocess_events)", 400, Unexpected),
    code("BL007", "customer_not_linked", "an event's customer is not linked to a user yet (applied once it is)", 500, Unexpected),
    code("BL008", "already_linked", "the user or the Stripe customer is already linked to another", 409, Unexpected),
    code("BL009", "livemode_mismatch", "a webhook's livemode differs from the mode of the secret that signed it", 400, Sender),
    code("BL010", "waiting_for_stripe", "an event waits for data the worker fetches from Stripe (applied when it arrives)", 500, Unexpected),
    code("BL011", "too_many_requests", "too many checkout or portal requests in progress for this user", 429, Unexpected),
    code("BL012", "coupon_not_offered", "the coupon is not in billing.coupons", 400, Unexpected),
    code("BL013", "redirect_not_allowed", "a redirect URL points outside the allowed origins", 400, Unexpected),
    code("BL014", "install_refused", "the pure-SQL migration does not fit this database (stripe_billing is there already, a foreign schema billing, pgcrypto elsewhere, not UTF8)", 500, Unexpected),
    code("BL020", "member_spend_limit", "a team member's monthly spend limit would be exceeded (nothing was spent)", 402, Unexpected),
    code("BL021", "last_owner", "a team would be left without an owner", 409, Unexpected),
    code("BL022", "no_free_seat", "a team's members fill its seats (its subscription's quantity); nothing was changed", 409, Unexpected),
    code("BL023", "seats_below_members", "fewer seats were asked for than the team has members", 409, Unexpected),
    code("BL024", "seat_change_in_progress", "a seat change of the team is still in progress", 409, Unexpected),
    code("22004", "null_value_not_allowed", "a required argument is NULL", 400, Sender),
    code("22008", "datetime_field_overflow", "the Stripe-Signature timestamp is outside the tolerance", 400, Sender),
    code("22023", "invalid_parameter_value", "an argument is invalid (or: the header has no v1 signature, the body is not a Stripe event)", 400, Sender),
    code("22032", "invalid_json_text", "the webhook body is not valid JSON", 400, Sender),
    code("22P02", "invalid_text_representation", "unparsable input (a malformed Stripe-Signature header, a JWT sub that is not a uuid)", 400, Sender),
    code("23001", "restrict_violation", "the token ledger is append-only: a grant's tokens and remaining, a spend's amount and allocations cannot be edited", 409, Unexpected),
    code("25000", "invalid_transaction_state", "await_request needs READ COMMITTED", 500, Unexpected),
    code("28000", "invalid_authorization_specification", "not signed in (or: no Stripe-Signature header)", 401, Sender),
    code("28P01", "invalid_password", "no signature in the Stripe-Signature header matches the payload", 400, Sender),
    code("42501", "insufficient_privilege", "not allowed", 403, Unexpected),
    code("55000", "object_not_in_prerequisite_state", "no webhook signing secret was passed (construct_event), the schema is older than the installed library (run ALTER EXTENSION stripe_billing UPDATE), or an auto top-up's pack has no known price yet", 400, Sender),
    code("P0002", "no_data_found", "unknown price, plan, project, user, request or auto top-up", 404, Unexpected),
];

/// The code with this SQLSTATE, if the product raises it deliberately.
pub fn by_sqlstate(sqlstate: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.sqlstate == sqlstate)
}

/// The codes of stored events that wait for something that applies them by itself (their user
/// becoming known, data the worker fetches from Stripe), as opposed to failures that wait for
/// the operator. `billing.health()` counts the two apart ("held" and "failed").
pub const WAITING: &[&str] = &["BL007", "BL010"];

/// Whether an event that failed with `sqlstate` waits to be applied by itself.
pub fn waits(sqlstate: &str) -> bool {
    WAITING.contains(&sqlstate)
}

/// The code with this condition name (as written after `ERRCODE =` in PL/pgSQL).
pub fn by_name(name: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.name == name)
}

/// docs/errors.md's error table: `| SQLSTATE | name | meaning | HTTP |` rows.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| SQLSTATE | condition | meaning | HTTP (worker API) |\n|---|---|---|---|\n");
    for c in CODES {
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            c.sqlstate, c.name, c.meaning, c.http_status
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for c in CODES {
            assert_eq!(c.sqlstate.len(), 5, "{c:?}");
            assert!(c
                .sqlstate
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            assert!(seen.insert(c.sqlstate), "duplicate {}", c.sqlstate);
            assert!(seen.insert(c.name), "duplicate {}", c.name);
            assert!((400..600).contains(&c.http_status), "{c:?}");
        }
        assert_eq!(
            by_sqlstate("BL003").unwrap().webhook,
            WebhookFault::Configuration
        );
        assert_eq!(by_name("invalid_password").unwrap().sqlstate, "28P01");
        assert!(by_sqlstate("42P01").is_none());
        for code in WAITING {
            assert!(by_sqlstate(code).is_some(), "{code}");
        }
        assert!(waits("BL007") && waits("BL010") && !waits("BL006") && !waits(""));
    }

    #[test]
    fn the_table_renders_every_code() {
        let table = markdown_table();
        assert_eq!(table.lines().count(), CODES.len() + 2);
        assert!(table.contains("| `BL001` | `insufficient_tokens` |"));
    }
}
