//! `expand[]`: replacing an id by its object, and the includable properties (a session's
//! `line_items`, a charge's `refunds`, from basil an invoice's `payments`), per object type
//! and API shape, at most 4 levels deep.

use serde_json::Value;

use super::error::ApiError;
use super::render::{Renderer, Shape};

impl Renderer<'_> {
    /// Applies `expand[]` paths like `subscription` or `subscription.latest_invoice`; on a
    /// list, `data.customer` expands each item's.
    pub fn expand(&self, obj: &mut Value, paths: &[String]) -> Result<(), ApiError> {
        for path in paths {
            if path.split('.').count() > 4 {
                return Err(ApiError::invalid(
                    "expand",
                    "You cannot expand more than 4 levels of a property.",
                ));
            }
            self.expand_one(obj, path, path, "")?;
        }
        Ok(())
    }

    /// The expandable (or includable) properties of an object of type `kind`, in this shape.
    fn expandable(&self, kind: &str) -> &'static [&'static str] {
        match (kind, self.shape) {
            ("checkout.session", _) => &[
                "customer",
                "subscription",
                "invoice",
                "line_items",
                "payment_intent",
            ],
            ("subscription", _) => &["customer", "latest_invoice"],
            ("invoice", Shape::V2023) => &["customer", "subscription", "charge", "payment_intent"],
            ("invoice", Shape::Basil) => &["customer", "payments"],
            ("invoice_payment", _) => &["invoice"],
            ("invoice_payment.payment", _) => &["payment_intent", "charge"],
            ("charge", Shape::V2023) => &["customer", "payment_intent", "invoice", "refunds"],
            ("charge", Shape::Basil) => &["customer", "payment_intent", "refunds"],
            ("payment_intent", Shape::V2023) => &["customer", "latest_charge", "invoice"],
            ("payment_intent", Shape::Basil) => &["customer", "latest_charge"],
            ("refund" | "dispute", _) => &["charge", "payment_intent"],
            ("credit_note", _) => &["customer", "invoice"],
            _ => &[],
        }
    }

    /// Expands `path` in `obj`. A property that is not expandable but holds an object or a
    /// list is walked through (`payments.data.payment.payment_intent`); `parent` names the
    /// sub-hash being walked when it has no `object` of its own.
    fn expand_one(
        &self,
        obj: &mut Value,
        path: &str,
        full: &str,
        parent: &str,
    ) -> Result<(), ApiError> {
        if let Value::Array(items) = obj {
            for item in items {
                self.expand_one(item, path, full, parent)?;
            }
            return Ok(());
        }
        let (head, rest) = path
            .split_once('.')
            .map_or((path, None), |(h, r)| (h, Some(r)));
        let kind = obj["object"].as_str().unwrap_or(parent).to_string();
        let cannot = || {
            ApiError::invalid(
                "expand",
                format!("This property cannot be expanded ({full})."),
            )
        };
        if self.expandable(&kind).contains(&head) {
            let own = obj["id"].as_str().map(str::to_string).unwrap_or_default();
            match (kind.as_str(), head) {
                ("checkout.session", "line_items") => {
                    if let Some(s) = self.store.sessions.get(&own) {
                        obj["line_items"] = self.session_line_items(s);
                    }
                }
                ("invoice", "payments") => {
                    if let Some(inv) = self.store.invoices.get(&own) {
                        obj["payments"] = self.invoice_payments(inv);
                    }
                }
                ("charge", "refunds") => {
                    if let Some(c) = self.store.charges.get(&own) {
                        obj["refunds"] = self.charge_refunds(c);
                    }
                }
                _ => {
                    if let Some(expanded) = obj[head].as_str().and_then(|id| self.by_id(id)) {
                        obj[head] = expanded;
                    }
                }
            }
        } else if rest.is_none() || !(obj[head].is_object() || obj[head].is_array()) {
            return Err(cannot());
        }
        match rest {
            Some(rest) if obj[head].is_object() || obj[head].is_array() => {
                let context = format!("{kind}.{head}");
                self.expand_one(&mut obj[head], rest, full, &context)
            }
            _ => Ok(()),
        }
    }
}
