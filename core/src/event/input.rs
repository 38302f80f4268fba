//! What is read from a Stripe event: lenient, typed views of the payload. Only the fields used
//! are materialised; everything else is skipped without allocating, and a field of an
//! unexpected JSON type reads as absent instead of making the event unreadable (Stripe's
//! payloads carry fields no schema lists, and shapes change between API versions).
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// An expandable reference: an id string, or an expanded object of which only `id` is kept.
#[derive(Debug, Default)]
pub struct Expandable(pub Option<String>);

impl<'de> Deserialize<'de> for Expandable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Expandable;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an id or an object with an id")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Expandable, E> {
                Ok(Expandable((!s.is_empty()).then(|| s.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expandable, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "id" {
                        id = map.next_value::<Option<String>>()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Expandable(id))
            }
            // Anything else (numbers, arrays) is not a reference.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Expandable, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Expandable(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Keeps a value only when it has the expected JSON type.
#[derive(Debug, Default)]
pub struct Lenient<T>(pub Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        Ok(Lenient(serde_json::from_str(raw.get()).ok()))
    }
}

pub type Text<'a> = Lenient<Cow<'a, str>>;

impl Text<'_> {
    pub fn owned(&self) -> Option<String> {
        self.0.as_deref().map(str::to_owned)
    }
}

/// A metadata map; anything else reads as empty.
pub fn metadata(m: Lenient<Map<String, Value>>) -> Map<String, Value> {
    m.0.unwrap_or_default()
}

#[derive(Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow, default)]
    pub object: Text<'a>,
    #[serde(borrow, default)]
    pub id: Text<'a>,
    #[serde(rename = "type", borrow, default)]
    pub event_type: Text<'a>,
    #[serde(default)]
    pub created: Lenient<i64>,
    #[serde(default)]
    pub livemode: Lenient<bool>,
    #[serde(borrow, default)]
    pub api_version: Text<'a>,
    #[serde(borrow, default)]
    pub data: Option<EventData<'a>>,
}

#[derive(Deserialize)]
pub struct EventData<'a> {
    #[serde(borrow)]
    pub object: Option<&'a RawValue>,
}

/// Just enough of `data.object` to pick its type.
#[derive(Deserialize)]
pub struct Kind<'a> {
    #[serde(borrow, default)]
    pub object: Text<'a>,
    #[serde(borrow, default)]
    pub id: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct List<T> {
    pub data: Lenient<Vec<T>>,
}

impl<T> List<T> {
    pub fn items(list: Lenient<List<T>>) -> Vec<T> {
        list.0.and_then(|l| l.data.0).unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Session<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow)]
    pub mode: Text<'a>,
    #[serde(borrow)]
    pub status: Text<'a>,
    #[serde(borrow)]
    pub payment_status: Text<'a>,
    #[serde(borrow)]
    pub client_reference_id: Text<'a>,
    pub customer: Expandable,
    pub subscription: Expandable,
    pub invoice: Expandable,
    pub payment_intent: Expandable,
    pub amount_total: Lenient<i64>,
    #[serde(borrow)]
    pub currency: Text<'a>,
    pub metadata: Lenient<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Item {
    pub price: Expandable,
    pub plan: Expandable,
    pub quantity: Lenient<i64>,
    pub current_period_start: Lenient<i64>,
    pub current_period_end: Lenient<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Pause<'a> {
    #[serde(borrow)]
    pub behavior: Text<'a>,
    pub resumes_at: Lenient<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Subscription<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow)]
    pub status: Text<'a>,
    pub customer: Expandable,
    pub plan: Expandable,
    pub quantity: Lenient<i64>,
    pub items: Lenient<List<Item>>,
    pub current_period_start: Lenient<i64>,
    pub current_period_end: Lenient<i64>,
    pub cancel_at_period_end: Lenient<bool>,
    pub cancel_at: Lenient<i64>,
    pub canceled_at: Lenient<i64>,
    pub ended_at: Lenient<i64>,
    pub trial_start: Lenient<i64>,
    pub trial_end: Lenient<i64>,
    #[serde(borrow)]
    pub pause_collection: Lenient<Pause<'a>>,
    pub metadata: Lenient<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SubscriptionDetails {
    pub subscription: Expandable,
    pub metadata: Lenient<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InvoiceParent {
    pub subscription_details: Lenient<SubscriptionDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Invoice<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow)]
    pub status: Text<'a>,
    #[serde(borrow)]
    pub billing_reason: Text<'a>,
    pub amount_paid: Lenient<i64>,
    pub amount_due: Lenient<i64>,
    pub total: Lenient<i64>,
    #[serde(borrow)]
    pub currency: Text<'a>,
    #[serde(borrow)]
    pub hosted_invoice_url: Text<'a>,
    pub customer: Expandable,
    pub subscription: Expandable,
    pub subscription_details: Lenient<SubscriptionDetails>,
    pub parent: Lenient<InvoiceParent>,
    pub payment_intent: Expandable,
    pub charge: Expandable,
    #[serde(borrow)]
    pub payments: Lenient<List<InvoicePaymentIn<'a>>>,
    pub lines: Lenient<List<Line>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PriceDetails {
    pub price: Expandable,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Pricing {
    pub price_details: Lenient<PriceDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ItemDetails {
    pub proration: Lenient<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LineParent {
    pub subscription_item_details: Lenient<ItemDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LinePeriod {
    pub start: Lenient<i64>,
    pub end: Lenient<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Line {
    pub amount: Lenient<i64>,
    pub quantity: Lenient<i64>,
    pub proration: Lenient<bool>,
    pub price: Expandable,
    pub plan: Expandable,
    pub pricing: Lenient<Pricing>,
    pub parent: Lenient<LineParent>,
    pub period: Lenient<LinePeriod>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Customer<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    pub deleted: Lenient<bool>,
    #[serde(borrow)]
    pub email: Text<'a>,
    pub metadata: Lenient<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChargeIn<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    pub customer: Expandable,
    pub payment_intent: Expandable,
    pub invoice: Expandable,
    pub amount: Lenient<i64>,
    pub amount_refunded: Lenient<i64>,
    #[serde(borrow)]
    pub currency: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RefundIn<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    pub customer: Expandable,
    pub charge: Expandable,
    pub payment_intent: Expandable,
    pub amount: Lenient<i64>,
    #[serde(borrow)]
    pub currency: Text<'a>,
    #[serde(borrow)]
    pub status: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DisputeIn<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    pub charge: Expandable,
    pub payment_intent: Expandable,
    pub amount: Lenient<i64>,
    #[serde(borrow)]
    pub currency: Text<'a>,
    #[serde(borrow)]
    pub status: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreditNoteRefundIn {
    pub refund: Expandable,
    pub amount_refunded: Lenient<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreditNoteIn<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    pub customer: Expandable,
    pub invoice: Expandable,
    #[serde(borrow)]
    pub status: Text<'a>,
    #[serde(rename = "type", borrow)]
    pub note_type: Text<'a>,
    pub total: Lenient<i64>,
    pub out_of_band_amount: Lenient<i64>,
    #[serde(borrow)]
    pub currency: Text<'a>,
    pub refund: Expandable,
    pub refunds: Lenient<Vec<CreditNoteRefundIn>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PaymentRef {
    pub payment_intent: Expandable,
    pub charge: Expandable,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InvoicePaymentIn<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    pub invoice: Expandable,
    #[serde(borrow)]
    pub status: Text<'a>,
    pub amount_paid: Lenient<i64>,
    pub payment: Lenient<PaymentRef>,
}
